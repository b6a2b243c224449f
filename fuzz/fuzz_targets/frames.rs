//! cargo-fuzz target: `arbor_shared::fuzz::frames` (scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Running out of bytes is not a finding: the input was too short.
    let _ = arbor_shared::fuzz::frames(&mut arbitrary::Unstructured::new(data));
});
