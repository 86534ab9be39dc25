//! Runs fepha::fuzzing::iec104_decode (docs/fuzzing.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fepha::fuzzing::iec104_decode(data));
