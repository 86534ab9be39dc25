//! The 104 codec: arbitrary bytes to the stream decoder, frame after frame as a connection
//! would, and to the ASDU decoder. Besides "no panic", whatever decodes encodes again to
//! the same length, so a decoder that accepts what the encoder would refuse shows up too.

use crate::iec104::{Apdu, Asdu, decode_apdu};

pub fn iec104_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((apdu, used))) = decode_apdu(rest) {
        assert!(
            used > 0 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        if let Apdu::I(frame) = &apdu {
            let _ = frame.decode_asdu();
        }
        let mut again = Vec::new();
        if let Err(e) = apdu.encode(&mut again) {
            panic!("a decoded APDU does not encode: {e}: {apdu:?}");
        }
        assert_eq!(again.len(), used, "{apdu:?}");
        rest = rest.get(used..).unwrap_or_default();
    }

    if let Ok(asdu) = Asdu::decode(data) {
        let mut again = Vec::new();
        if let Err(e) = asdu.encode(&mut again) {
            panic!("a decoded ASDU does not encode: {e}: {asdu:?}");
        }
        assert_eq!(again.len(), data.len(), "{asdu:?}");
    }
}
