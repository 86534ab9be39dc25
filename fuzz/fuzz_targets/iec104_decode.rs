//! Feeds arbitrary bytes to the IEC 104 stream decoder, frame after frame as a connection
//! would, and to the ASDU decoder. Besides "no panic", it checks that whatever decodes
//! encodes again to the same length, so a decoder that accepts what the encoder would
//! refuse shows up as a crash too.

#![no_main]

use fepha::iec104::{Apdu, Asdu, decode_apdu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
        apdu.encode(&mut again).expect("a decoded APDU encodes");
        assert_eq!(again.len(), used);
        rest = &rest[used..];
    }

    if let Ok(asdu) = Asdu::decode(data) {
        let mut again = Vec::new();
        asdu.encode(&mut again).expect("a decoded ASDU encodes");
        assert_eq!(again.len(), data.len());
    }
});
