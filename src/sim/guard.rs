//! A transport wrapper that hands tokio-modbus only whole Modbus TCP frames it can decode
//! without panicking.
//!
//! tokio-modbus 0.17's request decoder panics on two malformed requests a client can send:
//! - Write Multiple Coils (0x0F) whose quantity needs more bytes than the byte count gives
//!   (it indexes past the packed coils);
//! - Write Multiple Registers (0x10) or Read/Write Multiple Registers (0x17) with a quantity
//!   of 0x8000 or more (`quantity * 2` overflows a u16; a panic in debug builds).
//!
//! The panic would only end that connection's task, but the device must not panic on any
//! request, so such a frame ends the connection here instead, exactly as tokio-modbus does
//! for every other frame it cannot decode. Frames longer than Modbus allows are refused the
//! same way, which also bounds what one client can make us buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// MBAP header: transaction id (2), protocol id (2), length (2), unit id (1).
const HEADER_LEN: usize = 7;
/// The length field counts the unit id and the PDU, which is at most 253 bytes.
const MAX_LENGTH_FIELD: usize = 1 + 253;

#[derive(Debug)]
pub(crate) struct Guarded<T> {
    inner: T,
    /// Bytes read from `inner` and not yet handed on; always starts at a frame boundary
    /// (after the first `ready` bytes, which are checked frames).
    pending: Vec<u8>,
    /// How many bytes at the front of `pending` are checked and may be handed on.
    ready: usize,
}

impl<T> Guarded<T> {
    pub(crate) fn new(inner: T) -> Self {
        Guarded {
            inner,
            pending: Vec::new(),
            ready: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Not a whole frame yet.
    Partial,
    /// The first this many bytes are a frame tokio-modbus can safely decode.
    Frame(usize),
    Refused(&'static str),
}

fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// Looks at the frame at the start of `buf`.
fn check(buf: &[u8]) -> Check {
    let Some(&[_, _, _, _, len_hi, len_lo, _unit]) = buf.get(..HEADER_LEN) else {
        return Check::Partial;
    };
    let length = usize::from(be16(len_hi, len_lo));
    if length == 0 || length > MAX_LENGTH_FIELD {
        return Check::Refused("frame length out of range");
    }
    let total = 6 + length;
    let Some(pdu) = buf.get(HEADER_LEN..total) else {
        return Check::Partial;
    };
    match *pdu {
        [0x0F, _, _, q_hi, q_lo, byte_count, ..]
            if usize::from(be16(q_hi, q_lo)) > usize::from(byte_count) * 8 =>
        {
            Check::Refused("write multiple coils: quantity exceeds the byte count")
        }
        [0x10, _, _, q_hi, q_lo, ..] if be16(q_hi, q_lo) >= 0x8000 => {
            Check::Refused("write multiple registers: quantity out of range")
        }
        [0x17, _, _, _, _, _, _, q_hi, q_lo, ..] if be16(q_hi, q_lo) >= 0x8000 => {
            Check::Refused("read/write multiple registers: quantity out of range")
        }
        _ => Check::Frame(total),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(this.pending.get(..n).unwrap_or_default());
                this.pending.drain(..n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match check(&this.pending) {
                Check::Frame(len) => {
                    this.ready = len;
                    continue;
                }
                Check::Refused(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Check::Partial => {}
            }
            let mut chunk = [0u8; 512];
            let mut chunk = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // End of stream; an unfinished frame is dropped, as the decoder would.
                return Poll::Ready(Ok(()));
            }
            this.pending.extend_from_slice(chunk.filled());
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(pdu: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 1, 0, 0];
        f.extend_from_slice(
            &u16::try_from(pdu.len() + 1)
                .expect("short pdu")
                .to_be_bytes(),
        );
        f.push(1);
        f.extend_from_slice(pdu);
        f
    }

    #[test]
    fn checks() {
        let read = frame(&[0x03, 0, 0, 0, 2]);
        assert_eq!(check(&read[..5]), Check::Partial);
        assert_eq!(check(&read[..read.len() - 1]), Check::Partial);
        assert_eq!(check(&read), Check::Frame(read.len()));
        let mut two = read.clone();
        two.extend_from_slice(&read);
        assert_eq!(check(&two), Check::Frame(read.len()));
        // 16 coils in one byte.
        assert!(matches!(
            check(&frame(&[0x0F, 0, 0, 0, 16, 1, 0xFF])),
            Check::Refused(_)
        ));
        assert!(matches!(
            check(&frame(&[0x0F, 0, 0, 0, 8, 1, 0xFF])),
            Check::Frame(_)
        ));
        assert!(matches!(
            check(&frame(&[0x10, 0, 0, 0x80, 0, 0])),
            Check::Refused(_)
        ));
        assert!(matches!(
            check(&frame(&[0x17, 0, 0, 0, 1, 0, 0, 0x80, 0, 0])),
            Check::Refused(_)
        ));
        assert!(matches!(check(&[0, 1, 0, 0, 0, 0, 1]), Check::Refused(_)));
        assert!(matches!(
            check(&[0, 1, 0, 0, 0x10, 0, 1]),
            Check::Refused(_)
        ));
    }

    #[tokio::test]
    async fn passes_frames_split_anyhow() {
        let mut wire = frame(&[0x03, 0, 0, 0, 2]);
        wire.extend_from_slice(&frame(&[0x06, 0, 1, 0, 7]));
        let expected = wire.clone();
        let (mut tx, rx) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in wire {
                tx.write_all(&[b]).await.expect("write");
            }
        });
        let mut got = Vec::new();
        Guarded::new(rx).read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(got, expected);
    }
}
