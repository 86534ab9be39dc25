//! A bounds-checked reader over a byte slice.
//!
//! Every read fails with [`Short`] instead of indexing past the end, so a length check that
//! is wrong somewhere above can only turn into a decode error, never into a panic.

/// The input ended before the value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Short;

#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(Short)?;
        self.rest = tail;
        Ok(*head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Short> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16_le(&mut self) -> Result<u16, Short> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn i16_le(&mut self) -> Result<i16, Short> {
        self.array().map(i16::from_le_bytes)
    }

    pub(super) fn i32_le(&mut self) -> Result<i32, Short> {
        self.array().map(i32::from_le_bytes)
    }

    pub(super) fn f32_le(&mut self) -> Result<f32, Short> {
        self.array().map(f32::from_le_bytes)
    }

    /// Information object addresses are three octets on IEC 104.
    pub(super) fn u24_le(&mut self) -> Result<u32, Short> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }
}
