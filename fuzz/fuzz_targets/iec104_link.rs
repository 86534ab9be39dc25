//! Runs fepha::fuzzing::iec104_link (docs/fuzzing.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fepha::fuzzing::iec104_link(data));
