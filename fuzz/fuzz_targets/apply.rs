//! cargo-fuzz target: `arbor_shared::fuzz::apply` (scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Running out of bytes is not a finding: the input was too short.
    let _ = arbor_shared::fuzz::apply(&mut arbitrary::Unstructured::new(data));
});
