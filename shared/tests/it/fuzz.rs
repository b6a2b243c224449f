//! Structure-aware fuzzing on stable, with a fixed budget: the targets of
//! `arbor_shared::fuzz` (frame decoders, snapshot decoder, token verifier,
//! CRDT apply path; the cargo-fuzz targets in `fuzz/` run the same ones)
//! get seeded random bytes. Never a panic; always a typed error; a
//! corrupted snapshot or token is refused; a refused batch changes nothing.
//! `ARBOR_FUZZ_ITERS` raises the budget; the seed is printed.

use arbitrary::Unstructured;
use arbor_shared::fuzz;
use arbor_shared::sim::splitmix;

use crate::util::seed;

/// Runs `target` on `default` (or `ARBOR_FUZZ_ITERS`) inputs of seeded
/// random bytes, each 64..`max_len` long.
fn run(
    name: &str,
    default: usize,
    max_len: u64,
    target: fn(&mut Unstructured<'_>) -> arbitrary::Result<()>,
) {
    let iters = std::env::var("ARBOR_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let mut state = seed(name);
    for _ in 0..iters {
        let len = 64 + splitmix(&mut state) % max_len;
        let bytes: Vec<u8> = (0..len).map(|_| splitmix(&mut state) as u8).collect();
        // Running out of bytes is not a finding: the input was too short.
        let _ = target(&mut Unstructured::new(&bytes));
    }
}

#[test]
fn frame_decoders_never_panic() {
    run("frame_decoders_never_panic", 20_000, 512, fuzz::frames);
}

#[test]
fn the_snapshot_decoder_never_panics_and_refuses_every_corruption() {
    run(
        "the_snapshot_decoder_never_panics",
        5_000,
        512,
        fuzz::snapshot,
    );
}

#[test]
fn the_token_verifier_never_panics_and_refuses_every_mutation() {
    run("the_token_verifier_never_panics", 20_000, 256, fuzz::token);
}

#[test]
fn apply_never_panics_and_a_refused_batch_changes_nothing() {
    run("apply_never_panics", 2_000, 4_096, fuzz::apply);
}
