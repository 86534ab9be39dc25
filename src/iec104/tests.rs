//! Hand-checked frames, laid out as lib60870 and Wireshark's iec104 dissector read them.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("test hex"))
        .collect()
}

fn decode_whole(bytes: &[u8]) -> Apdu {
    let (apdu, used) = decode_apdu(bytes)
        .expect("valid APDU")
        .expect("complete APDU");
    assert_eq!(used, bytes.len());
    apdu
}

fn encode_apdu(apdu: &Apdu) -> Vec<u8> {
    let mut out = Vec::new();
    apdu.encode(&mut out).expect("encodable");
    out
}

fn encode_asdu(asdu: &Asdu) -> Vec<u8> {
    let mut out = Vec::new();
    asdu.encode(&mut out).expect("encodable");
    out
}

/// 2024-03-15T13:45:30.250Z. Octets: ms 30*1000 + 250 = 30250 = 0x762A, LE `2A 76`;
/// minute 45 = 0x2D; hour 13 = 0x0D; day 15 with day of week 5 (a Friday):
/// 5 << 5 | 15 = 0xA0 | 0x0F = 0xAF; month 3 = 0x03; year 24 = 0x18.
/// Unix: 2024-01-01 is day 19723, + 31 + 29 + 14 = 19797; 19797 * 86400 + 13 * 3600
/// + 45 * 60 + 30 = 1710510330 s.
const TIME_BYTES: &str = "2A 76 2D 0D AF 03 18";
const TIME_UNIX_MS: i64 = 1_710_510_330_250;

fn time() -> Cp56Time2a {
    Cp56Time2a::from_unix_ms(TIME_UNIX_MS).expect("in range")
}

#[test]
fn u_frames() {
    for (text, function) in [
        ("68 04 07 00 00 00", UFunction::StartDtAct),
        ("68 04 0B 00 00 00", UFunction::StartDtCon),
        ("68 04 13 00 00 00", UFunction::StopDtAct),
        ("68 04 23 00 00 00", UFunction::StopDtCon),
        ("68 04 43 00 00 00", UFunction::TestFrAct),
        ("68 04 83 00 00 00", UFunction::TestFrCon),
    ] {
        let bytes = hex(text);
        assert_eq!(decode_whole(&bytes), Apdu::U(function), "{text}");
        assert_eq!(encode_apdu(&Apdu::U(function)), bytes, "{text}");
    }
}

#[test]
fn u_frame_needs_exactly_one_function() {
    for control in [0x03, 0x0F, 0xC3, 0xFF] {
        let bytes = [0x68, 0x04, control, 0, 0, 0];
        assert_eq!(
            decode_apdu(&bytes),
            Err(ApciError::BadUFunction(control)),
            "{control:#04x}"
        );
    }
}

#[test]
fn s_frame() {
    let bytes = hex("68 04 01 00 0A 00");
    let apdu = Apdu::S {
        recv_seq: SeqNo::new(5).expect("in range"),
    };
    assert_eq!(decode_whole(&bytes), apdu);
    assert_eq!(encode_apdu(&apdu), bytes);
}

#[test]
fn i_frame_with_general_interrogation() {
    let bytes = hex("68 0E 02 00 04 00 64 01 06 00 01 00 00 00 00 14");
    let Apdu::I(frame) = decode_whole(&bytes) else {
        panic!("not an I-frame");
    };
    assert_eq!(frame.send_seq.value(), 1);
    assert_eq!(frame.recv_seq.value(), 2);
    let asdu = frame.decode_asdu().expect("valid ASDU");
    let expected = Asdu::single(
        Cause::ACTIVATION,
        1,
        0,
        Element::Interrogation { qoi: QOI_STATION },
    );
    assert_eq!(asdu, expected);
    assert_eq!(asdu.type_id, TypeId::CIcNa1);

    let apdu = Apdu::i_frame(frame.send_seq, frame.recv_seq, &expected).expect("encodable");
    assert_eq!(encode_apdu(&apdu), bytes);
}

#[test]
fn float_measurand_spontaneous() {
    // 23.5 = 1.46875 * 2^4: sign 0, exponent 127 + 4 = 0x83, fraction .01111b, so
    // 0 10000011 0111100... = 0x41BC0000, LE `00 00 BC 41`. IOA 16385 = 0x004001.
    let bytes = hex("0D 01 03 00 01 00 01 40 00 00 00 BC 41 00");
    let asdu = Asdu::decode(&bytes).expect("valid");
    let expected = Asdu::single(
        Cause::SPONTANEOUS,
        1,
        16385,
        Element::Float {
            value: 23.5,
            quality: Quality::GOOD,
            time: None,
        },
    );
    assert_eq!(asdu, expected);
    assert_eq!(encode_asdu(&expected), bytes);
}

#[test]
fn single_point_with_time() {
    let bytes = hex(&format!("1E 01 03 00 01 00 64 00 00 01 {TIME_BYTES}"));
    let expected = Asdu::single(
        Cause::SPONTANEOUS,
        1,
        100,
        Element::SinglePoint {
            value: true,
            quality: Quality::GOOD,
            time: Some(time()),
        },
    );
    assert_eq!(expected.type_id, TypeId::MSpTb1);
    assert_eq!(encode_asdu(&expected), bytes);
    let asdu = Asdu::decode(&bytes).expect("valid");
    assert_eq!(asdu, expected);
    let decoded_time = asdu.objects[0].element.time().expect("time tagged");
    assert_eq!(decoded_time.to_unix_ms(), TIME_UNIX_MS);
}

#[test]
fn single_points_in_sequence() {
    // IOAs 10, 11, 12: on; off; on + IV. Interrogated by station.
    let bytes = hex("01 83 14 00 01 00 0A 00 00 01 00 81");
    let asdu = Asdu::decode(&bytes).expect("valid");
    assert!(asdu.sq);
    let seen: Vec<_> = asdu
        .objects
        .iter()
        .map(|o| match o.element {
            Element::SinglePoint { value, quality, .. } => (o.ioa, value, quality.invalid),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [(10, true, false), (11, false, false), (12, true, true)]
    );
    assert_eq!(encode_asdu(&asdu), bytes);

    let packed = Asdu::pack(Cause::INTERROGATED_BY_STATION, 1, &asdu.objects).expect("valid");
    assert_eq!(packed, [asdu]);
}

#[test]
fn step_position_with_time() {
    // M_ST_TB_1 = 32 = 0x20, spontaneous, IOA 3000 = 0x000BB8. VTI: I7 -3 is 0b111_1101
    // (0x7D) with T in bit 8, 0xFD; QDS: IV, 0x80.
    let bytes = hex(&format!("20 01 03 00 01 00 B8 0B 00 FD 80 {TIME_BYTES}"));
    let expected = Asdu::single(
        Cause::SPONTANEOUS,
        1,
        3000,
        Element::StepPosition {
            value: -3,
            transient: true,
            quality: Quality {
                invalid: true,
                ..Quality::GOOD
            },
            time: Some(time()),
        },
    );
    assert_eq!(expected.type_id, TypeId::MStTb1);
    assert_eq!(encode_asdu(&expected), bytes);
    let asdu = Asdu::decode(&bytes).expect("valid");
    assert_eq!(asdu, expected);
    let decoded_time = asdu.objects[0].element.time().expect("time tagged");
    assert_eq!(decoded_time.to_unix_ms(), TIME_UNIX_MS);
}

#[test]
fn step_position_without_time() {
    // M_ST_NA_1 = 5, interrogated by station, IOA 7. VTI 63 without T = 0x3F; QDS OV + NT.
    let bytes = hex("05 01 14 00 01 00 07 00 00 3F 41");
    let expected = Asdu::single(
        Cause::INTERROGATED_BY_STATION,
        1,
        7,
        Element::StepPosition {
            value: 63,
            transient: false,
            quality: Quality {
                overflow: true,
                not_topical: true,
                ..Quality::GOOD
            },
            time: None,
        },
    );
    assert_eq!(expected.type_id, TypeId::MStNa1);
    assert_eq!(Asdu::decode(&bytes).expect("valid"), expected);
    assert_eq!(encode_asdu(&expected), bytes);

    // I7 -64 is 0x40; a missing QDS octet is a length mismatch.
    let lowest = Asdu::decode(&hex("05 01 14 00 01 00 07 00 00 40 00")).expect("valid");
    assert!(matches!(
        lowest.objects[0].element,
        Element::StepPosition {
            value: -64,
            transient: false,
            ..
        }
    ));
    assert!(matches!(
        Asdu::decode(&hex("05 01 14 00 01 00 07 00 00 40")),
        Err(AsduError::LengthMismatch { expected: 11, .. })
    ));
}

#[test]
fn bitstrings_in_sequence() {
    // M_BO_NA_1 = 7, SQ=1 x3 (0x83), interrogated by station, IOAs 256, 257, 258 (first
    // 0x000100). BSI little endian then QDS: 0x12345678 good; all ones with OV; the top
    // bit only, with IV and BL.
    let bytes = hex("07 83 14 00 01 00 00 01 00 \
         78 56 34 12 00 \
         FF FF FF FF 01 \
         00 00 00 80 90");
    let asdu = Asdu::decode(&bytes).expect("valid");
    assert_eq!(asdu.type_id, TypeId::MBoNa1);
    assert!(asdu.sq);
    let seen: Vec<_> = asdu
        .objects
        .iter()
        .map(|o| match o.element {
            Element::Bitstring {
                value,
                quality,
                time: None,
            } => (o.ioa, value, quality),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            (256, 0x1234_5678, Quality::GOOD),
            (
                257,
                u32::MAX,
                Quality {
                    overflow: true,
                    ..Quality::GOOD
                }
            ),
            (
                258,
                0x8000_0000,
                Quality {
                    invalid: true,
                    blocked: true,
                    ..Quality::GOOD
                }
            ),
        ]
    );
    assert_eq!(encode_asdu(&asdu), bytes);

    let packed = Asdu::pack(Cause::INTERROGATED_BY_STATION, 1, &asdu.objects).expect("valid");
    assert_eq!(packed, [asdu]);
}

#[test]
fn bitstring_with_time() {
    // M_BO_TB_1 = 33 = 0x21, spontaneous, IOA 0x010203.
    let bytes = hex(&format!(
        "21 01 03 00 01 00 03 02 01 78 56 34 12 00 {TIME_BYTES}"
    ));
    let expected = Asdu::single(
        Cause::SPONTANEOUS,
        1,
        0x01_0203,
        Element::Bitstring {
            value: 0x1234_5678,
            quality: Quality::GOOD,
            time: Some(time()),
        },
    );
    assert_eq!(expected.type_id, TypeId::MBoTb1);
    assert_eq!(encode_asdu(&expected), bytes);
    assert_eq!(Asdu::decode(&bytes).expect("valid"), expected);
}

#[test]
fn single_command_select_then_execute() {
    // IOA 5000 = 0x001388. SCO: S/E (bit 7) | QU 0 | SCS on (bit 0).
    let select = hex("2D 01 06 00 01 00 88 13 00 81");
    let execute = hex("2D 01 06 00 01 00 88 13 00 01");
    for (bytes, is_select) in [(select, true), (execute, false)] {
        let asdu = Asdu::decode(&bytes).expect("valid");
        assert_eq!(asdu.cause, Cause::ACTIVATION);
        assert_eq!(asdu.objects.len(), 1);
        assert_eq!(asdu.objects[0].ioa, 5000);
        assert_eq!(
            asdu.objects[0].element,
            Element::SingleCommand {
                on: true,
                qualifier: CommandQualifier {
                    qualifier: 0,
                    select: is_select,
                },
                time: None,
            }
        );
        // The confirmation mirrors the command with COT 7.
        let mut con = bytes.clone();
        con[2] = 0x07;
        assert_eq!(encode_asdu(&asdu.reply(Cause::ACTIVATION_CON, false)), con);
    }
}

#[test]
fn clock_sync() {
    let bytes = hex(&format!("67 01 06 00 01 00 00 00 00 {TIME_BYTES}"));
    let asdu = Asdu::decode(&bytes).expect("valid");
    assert_eq!(asdu.type_id, TypeId::CCsNa1);
    assert_eq!(asdu.objects[0].element, Element::ClockSync(time()));
    assert_eq!(encode_asdu(&asdu), bytes);
}

#[test]
fn commands_with_time_and_counters() {
    let cases = [
        // C_DC_TA_1: DCO execute off, QU 2 (long pulse): 2 << 2 | 1 = 0x09.
        (
            format!("3B 01 06 00 01 00 01 00 00 09 {TIME_BYTES}"),
            TypeId::CDcTa1,
        ),
        // C_RC_TA_1: RCO select higher: 0x80 | 2 = 0x82.
        (
            format!("3C 01 06 00 01 00 01 00 00 82 {TIME_BYTES}"),
            TypeId::CRcTa1,
        ),
        // C_SE_TC_1: 1.0f32 = 0x3F800000, QOS select.
        (
            format!("3F 01 06 00 01 00 01 00 00 00 00 80 3F 80 {TIME_BYTES}"),
            TypeId::CSeTc1,
        ),
        // M_IT_TB_1: -2, SQ 3 + CY.
        (
            format!("25 01 25 00 01 00 01 00 00 FE FF FF FF 23 {TIME_BYTES}"),
            TypeId::MItTb1,
        ),
        // C_CI_NA_1: RQT 5 (general), FRZ 1 (freeze without reset).
        ("65 01 06 00 01 00 00 00 00 45".to_owned(), TypeId::CCiNa1),
        // M_EI_NA_1: COI 2 (remote reset) with BI.
        ("46 01 04 00 01 00 00 00 00 82".to_owned(), TypeId::MEiNa1),
    ];
    for (text, type_id) in cases {
        let bytes = hex(&text);
        let asdu = Asdu::decode(&bytes).expect("valid");
        assert_eq!(asdu.type_id, type_id);
        assert_eq!(encode_asdu(&asdu), bytes, "{type_id}");
    }
    let qcc = Asdu::decode(&hex("65 01 06 00 01 00 00 00 00 45")).expect("valid");
    assert_eq!(
        qcc.objects[0].element,
        Element::CounterInterrogation(CounterQualifier {
            request: 5,
            freeze: FreezeMode::FreezeWithoutReset,
        })
    );
    let it = Asdu::decode(&hex(&format!(
        "25 01 25 00 01 00 01 00 00 FE FF FF FF 23 {TIME_BYTES}"
    )))
    .expect("valid");
    assert_eq!(
        it.objects[0].element,
        Element::IntegratedTotal {
            value: -2,
            quality: CounterQuality {
                sequence: 3,
                carry: true,
                adjusted: false,
                invalid: false,
            },
            time: Some(time()),
        }
    );
}

#[test]
fn stream_decoder_needs_more_then_takes_frames_in_turn() {
    let mut stream = hex("68 04 43 00 00 00");
    stream.extend(hex("68 0E 02 00 04 00 64 01 06 00 01 00 00 00 00 14"));
    for cut in 0..6 {
        assert_eq!(decode_apdu(&stream[..cut]), Ok(None), "prefix {cut}");
    }
    let (first, used) = decode_apdu(&stream).expect("valid").expect("complete");
    assert_eq!((first, used), (Apdu::U(UFunction::TestFrAct), 6));
    let rest = &stream[used..];
    for cut in 0..rest.len() {
        assert_eq!(decode_apdu(&rest[..cut]), Ok(None), "prefix {cut}");
    }
    let (second, used) = decode_apdu(rest).expect("valid").expect("complete");
    assert!(matches!(second, Apdu::I(_)));
    assert_eq!(used, rest.len());
}

#[test]
fn framing_errors() {
    assert_eq!(decode_apdu(&[0x10]), Err(ApciError::BadStart(0x10)));
    assert_eq!(decode_apdu(&[0x68, 3]), Err(ApciError::BadLength(3)));
    assert_eq!(decode_apdu(&[0x68, 254]), Err(ApciError::BadLength(254)));
    assert_eq!(
        decode_apdu(&hex("68 04 00 00 00 00")),
        Err(ApciError::EmptyIFrame)
    );
    assert_eq!(
        decode_apdu(&hex("68 05 01 00 00 00 00")),
        Err(ApciError::UnexpectedAsdu {
            kind: 'S',
            length: 5
        })
    );
    assert_eq!(
        decode_apdu(&hex("68 05 07 00 00 00 00")),
        Err(ApciError::UnexpectedAsdu {
            kind: 'U',
            length: 5
        })
    );
    let too_long = Apdu::I(IFrame {
        send_seq: SeqNo::ZERO,
        recv_seq: SeqNo::ZERO,
        asdu: vec![0; 250],
    });
    let mut out = vec![1, 2];
    assert_eq!(too_long.encode(&mut out), Err(EncodeError::AsduLength(250)));
    assert_eq!(out, [1, 2]);
}

#[test]
fn longest_apdu() {
    let mut bytes = vec![0x68, 253, 0, 0, 0, 0];
    bytes.extend(std::iter::repeat_n(0xAA, 249));
    let Apdu::I(frame) = decode_whole(&bytes) else {
        panic!("not an I-frame");
    };
    assert_eq!(frame.asdu.len(), MAX_ASDU_LEN);
    assert_eq!(bytes.len(), MAX_APDU_LEN);
}

#[test]
fn unknown_type_keeps_what_an_answer_needs() {
    // Type 200, SQ=0 x1, COT 6 with T, originator 7, CA 0x0105, IOA 0x030201.
    let bytes = hex("C8 01 86 07 05 01 01 02 03 FF");
    let Err(AsduError::UnknownType(unknown)) = Asdu::decode(&bytes) else {
        panic!("expected UnknownType");
    };
    assert_eq!(unknown.type_id, 200);
    assert_eq!(unknown.header.cause, Cause::ACTIVATION);
    assert!(unknown.header.test);
    assert_eq!(unknown.header.originator, 7);
    assert_eq!(unknown.header.common_address, 0x0105);
    assert_eq!(unknown.ioa, Some(0x030201));

    let answer = mirror_raw(&bytes, Cause::UNKNOWN_TYPE, true).expect("ASDU-sized");
    assert_eq!(answer, hex("C8 01 EC 07 05 01 01 02 03 FF"));

    let Err(AsduError::UnknownType(short)) = Asdu::decode(&hex("C8 01 06 00 05 01 01")) else {
        panic!("expected UnknownType");
    };
    assert_eq!(short.ioa, None);
}

#[test]
fn asdu_length_must_match_the_declared_count() {
    let good = hex("01 83 14 00 01 00 0A 00 00 01 00 81");
    let truncated = &good[..good.len() - 1];
    let mut overlong = good.clone();
    overlong.push(0);
    for bad in [truncated, &overlong[..]] {
        assert!(
            matches!(
                Asdu::decode(bad),
                Err(AsduError::LengthMismatch { expected: 12, .. })
            ),
            "{bad:02x?}"
        );
    }
    assert_eq!(
        Asdu::decode(&good[..5]),
        Err(AsduError::Truncated { len: 5 })
    );
    assert_eq!(
        Asdu::decode(&hex("01 00 14 00 01 00")),
        Err(AsduError::NoObjects {
            type_id: TypeId::MSpNa1
        })
    );
    // SQ=1 of two objects from IOA 0xFFFFFF runs past the last address.
    assert!(matches!(
        Asdu::decode(&hex("01 82 14 00 01 00 FF FF FF 00 00")),
        Err(AsduError::IoaOverflow { .. })
    ));
}

#[test]
fn invalid_time_is_reported_with_its_ioa() {
    // Month 13.
    let bytes = hex("1E 01 03 00 01 00 64 00 00 01 2A 76 2D 0D AF 0D 18");
    assert!(matches!(
        Asdu::decode(&bytes),
        Err(AsduError::InvalidTime { ioa: 100, .. })
    ));
}

#[test]
fn encode_errors_leave_the_buffer_alone() {
    let point = |ioa, time| InfoObject {
        ioa,
        element: Element::SinglePoint {
            value: true,
            quality: Quality::GOOD,
            time,
        },
    };
    let mut asdu =
        Asdu::new(Cause::SPONTANEOUS, 1, vec![point(1, None), point(5, None)]).expect("valid");
    let mut out = vec![9];

    asdu.objects.push(point(6, Some(time())));
    assert!(matches!(
        asdu.encode(&mut out),
        Err(EncodeError::MixedTypes { ioa: 6, .. })
    ));
    asdu.objects.pop();

    asdu.sq = true;
    assert_eq!(
        asdu.encode(&mut out),
        Err(EncodeError::NotSequential {
            expected: 2,
            found: 5
        })
    );
    asdu.sq = false;

    asdu.objects[0].ioa = MAX_IOA + 1;
    assert_eq!(
        asdu.encode(&mut out),
        Err(EncodeError::IoaOutOfRange(MAX_IOA + 1))
    );
    asdu.objects[0].ioa = 1;

    asdu.objects = (0..30).map(|i| point(i * 2, None)).collect();
    // 6 + 30 * 4 = 126 fits; 6 + 62 * 4 = 254 does not.
    assert!(asdu.encode(&mut Vec::new()).is_ok());
    asdu.objects = (0..62).map(|i| point(i * 2, None)).collect();
    assert_eq!(asdu.encode(&mut out), Err(EncodeError::TooLong(254)));

    asdu.objects.clear();
    assert_eq!(asdu.encode(&mut out), Err(EncodeError::NoObjects));
    assert_eq!(out, [9]);
}

#[test]
fn pack_fills_asdus_and_splits_by_type() {
    let single = |ioa| InfoObject {
        ioa,
        element: Element::SinglePoint {
            value: ioa % 2 == 0,
            quality: Quality::GOOD,
            time: None,
        },
    };
    let float = |ioa| InfoObject {
        ioa,
        element: Element::Float {
            value: ioa as f32,
            quality: Quality::GOOD,
            time: Some(time()),
        },
    };
    let mut objects: Vec<_> = (1000..1300).map(single).collect();
    // Not consecutive, so SQ=0: 16 of (3 + 12) octets fit after the header.
    objects.extend((0..40).map(|i| float(5000 + 2 * i)));
    objects.push(single(7));

    let asdus = Asdu::pack(Cause::INTERROGATED_BY_STATION, 3, &objects).expect("valid");
    let shape: Vec<_> = asdus
        .iter()
        .map(|a| (a.type_id, a.sq, a.objects.len()))
        .collect();
    assert_eq!(
        shape,
        [
            (TypeId::MSpNa1, true, 127),
            (TypeId::MSpNa1, true, 127),
            (TypeId::MSpNa1, true, 46),
            (TypeId::MMeTf1, false, 16),
            (TypeId::MMeTf1, false, 16),
            (TypeId::MMeTf1, false, 8),
            (TypeId::MSpNa1, false, 1),
        ]
    );
    let mut unpacked = Vec::new();
    for asdu in &asdus {
        let bytes = encode_asdu(asdu);
        assert!(bytes.len() <= MAX_ASDU_LEN);
        unpacked.extend(Asdu::decode(&bytes).expect("valid").objects);
    }
    assert_eq!(unpacked, objects);
    assert_eq!(max_objects(TypeId::MMeTf1, false), 16);
    assert_eq!(max_objects(TypeId::MMeTf1, true), 20);
}
