//! Runs fepha::fuzzing::site_config (docs/fuzzing.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fepha::fuzzing::site_config(data));
