//! Every request type a node decodes, then validates: random bytes in, and no
//! panic out. The body is `node::limits::decode_and_validate`, which the unit
//! tests also run over the seeds and over `tests/fuzz/regressions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node::limits::decode_and_validate(data);
});
