//! The bodies of the cargo-fuzz targets under `fuzz/` (docs/fuzzing.md), here rather than in
//! the fuzz crate so that they reach the crate's internal APIs without widening them, and so
//! that `tests/fuzz_corpus.rs` replays every corpus file through the same code on the stable
//! toolchain.
//!
//! Each body takes the fuzzer's input and panics when an invariant fails; anything else it
//! returns is fine. They are not part of fepha's API.

mod iec104_decode;
mod iec104_link;
mod modbus_decode;
mod site_config;

pub use iec104_decode::iec104_decode;
pub use iec104_link::iec104_link;
pub use modbus_decode::modbus_decode;
pub use site_config::site_config;

/// A target's body: the fuzzer's input in, a panic if an invariant fails.
pub type Body = fn(&[u8]);

/// Every target, by the name of its fuzz binary and corpus folder.
pub const TARGETS: [(&str, Body); 4] = [
    ("iec104_decode", iec104_decode),
    ("iec104_link", iec104_link),
    ("site_config", site_config),
    ("modbus_decode", modbus_decode),
];

/// Reads a fuzz input front to back; every read past the end yields `None`, which ends the
/// script being decoded.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn u64(&mut self) -> Option<u64> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_le_bytes(*bytes))
    }

    /// The next `n` bytes, or what is left if fewer (`None` only when nothing is).
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first modbus_decode crash: a u64 read with fewer than 8 bytes left panicked in
    /// the harness instead of ending the script.
    #[test]
    fn short_reads_end_the_input() {
        let mut input = Input::new(&[1, 2, 3]);
        assert_eq!(input.u64(), None);
        assert_eq!(input.u16(), Some(0x0201));
        assert_eq!(input.bytes(5), Some(&[3][..]));
        assert_eq!(input.u8(), None);
        assert_eq!(input.bytes(1), None);
    }
}
