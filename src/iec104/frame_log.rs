//! Frames as text, for decode logging in the field (in the manner of the decode levels of
//! stepfunc's dnp3): the APCI only, the APCI and the ASDU's data unit identifier, or every
//! information object too. Fed the bytes of one direction of a connection in any chunking;
//! no I/O, the caller logs the lines.

use std::fmt::Write as _;

use super::{Apdu, Asdu, decode_apdu};

/// How much of each frame is described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    Apci,
    Header,
    Objects,
}

/// One direction of one connection.
#[derive(Debug)]
pub(crate) struct FrameLog {
    depth: Depth,
    /// The start of a frame whose end has not come yet.
    partial: Vec<u8>,
    /// Set once the bytes stop making frames; the link closes on that anyway.
    lost: bool,
}

impl FrameLog {
    pub(crate) fn new(depth: Depth) -> FrameLog {
        FrameLog {
            depth,
            partial: Vec::new(),
            lost: false,
        }
    }

    /// One line per whole frame in `bytes` (with what came before).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        if self.lost {
            return Vec::new();
        }
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut used = 0;
        loop {
            match decode_apdu(self.partial.get(used..).unwrap_or_default()) {
                Ok(Some((apdu, len))) => {
                    used += len;
                    lines.push(self.describe(&apdu));
                }
                Ok(None) => break,
                Err(e) => {
                    lines.push(format!("unframeable bytes: {e}"));
                    self.lost = true;
                    self.partial.clear();
                    return lines;
                }
            }
        }
        self.partial.drain(..used.min(self.partial.len()));
        lines
    }

    fn describe(&self, apdu: &Apdu) -> String {
        let frame = match apdu {
            Apdu::U(f) => return format!("U {f:?}"),
            Apdu::S { recv_seq } => return format!("S N(R)={}", recv_seq.value()),
            Apdu::I(frame) => frame,
        };
        let mut line = format!(
            "I N(S)={} N(R)={}",
            frame.send_seq.value(),
            frame.recv_seq.value()
        );
        if self.depth == Depth::Apci {
            return line;
        }
        let asdu = match Asdu::decode(&frame.asdu) {
            Ok(a) => a,
            Err(e) => {
                let _ = write!(line, " undecodable ASDU: {e}");
                return line;
            }
        };
        let _ = write!(
            line,
            " {} cause {}{}{} CA {} OA {} objects {}{}",
            asdu.type_id.mnemonic(),
            asdu.cause,
            if asdu.negative { " negative" } else { "" },
            if asdu.test { " test" } else { "" },
            asdu.common_address,
            asdu.originator,
            asdu.objects.len(),
            if asdu.sq { " (SQ)" } else { "" },
        );
        if self.depth == Depth::Objects {
            for o in &asdu.objects {
                let _ = write!(line, "; IOA {} {:?}", o.ioa, o.element);
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iec104::{Cause, Element, IFrame, Quality, SeqNo, UFunction};

    fn i_frame() -> Vec<u8> {
        let asdu = Asdu::single(
            Cause::SPONTANEOUS,
            5,
            102,
            Element::SinglePoint {
                value: true,
                quality: Quality::GOOD,
                time: None,
            },
        );
        let mut bytes = Vec::new();
        asdu.encode(&mut bytes).expect("encodes");
        let mut out = Vec::new();
        Apdu::I(IFrame {
            send_seq: SeqNo::wrapping(3),
            recv_seq: SeqNo::wrapping(1),
            asdu: bytes,
        })
        .encode(&mut out)
        .expect("encodes");
        out
    }

    #[test]
    fn frames_split_across_chunks_are_described_once_whole_at_each_depth() {
        let mut bytes = i_frame();
        Apdu::U(UFunction::TestFrAct)
            .encode(&mut bytes)
            .expect("encodes");
        let (a, b) = bytes.split_at(5);
        let mut log = FrameLog::new(Depth::Objects);
        assert!(log.feed(a).is_empty());
        let lines = log.feed(b);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("I N(S)=3 N(R)=1 M_SP_NA_1"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("IOA 102"), "{}", lines[0]);
        assert_eq!(lines[1], "U TestFrAct");
        let mut apci = FrameLog::new(Depth::Apci);
        assert_eq!(apci.feed(&i_frame()), ["I N(S)=3 N(R)=1"]);
        let mut header = FrameLog::new(Depth::Header);
        let line = &header.feed(&i_frame())[0];
        assert!(line.contains("CA 5") && !line.contains("IOA"), "{line}");
    }

    #[test]
    fn garbage_is_said_once() {
        let mut log = FrameLog::new(Depth::Apci);
        assert_eq!(log.feed(&[0x00, 0x01]).len(), 1);
        assert!(log.feed(&i_frame()).is_empty());
    }
}
