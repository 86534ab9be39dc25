//! Property tests: encode/decode round trips over every supported type, and decoders that
//! survive arbitrary bytes.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;

/// 2000-01-01 and 2100-01-01 in Unix ms.
const FIRST_MS: i64 = 946_684_800_000;
const END_MS: i64 = 4_102_444_800_000;

fn time() -> impl Strategy<Value = Cp56Time2a> {
    (FIRST_MS..END_MS, any::<bool>(), any::<bool>(), 0u8..=7).prop_map(
        |(ms, invalid, summer, day_of_week)| {
            Cp56Time2a::from_unix_ms(ms)
                .and_then(|t| t.with_day_of_week(day_of_week))
                .expect("generated in range")
                .with_invalid(invalid)
                .with_summer_time(summer)
        },
    )
}

fn quality(with_overflow: bool) -> impl Strategy<Value = Quality> {
    (any::<[bool; 5]>()).prop_map(move |[iv, nt, sb, bl, ov]| Quality {
        invalid: iv,
        not_topical: nt,
        substituted: sb,
        blocked: bl,
        overflow: ov && with_overflow,
    })
}

/// Every float but NaN, which is not equal to itself (its bits round-trip all the same).
fn float() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as f;
    f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE
}

fn command_qualifier() -> impl Strategy<Value = CommandQualifier> {
    (0u8..=31, any::<bool>()).prop_map(|(qualifier, select)| CommandQualifier { qualifier, select })
}

fn setpoint_qualifier() -> impl Strategy<Value = SetpointQualifier> {
    (0u8..=127, any::<bool>()).prop_map(|(ql, select)| SetpointQualifier { ql, select })
}

fn two_bits<T: Copy + std::fmt::Debug + 'static>(values: [T; 4]) -> impl Strategy<Value = T> {
    (0usize..4).prop_map(move |i| values[i])
}

fn element(type_id: TypeId) -> BoxedStrategy<Element> {
    use TypeId::*;
    let time = if type_id.has_time() {
        time().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    };
    match type_id {
        MSpNa1 | MSpTb1 => (any::<bool>(), quality(false), time)
            .prop_map(|(value, quality, time)| Element::SinglePoint {
                value,
                quality,
                time,
            })
            .boxed(),
        MDpNa1 | MDpTb1 => (
            two_bits([
                DoublePointValue::Intermediate,
                DoublePointValue::Off,
                DoublePointValue::On,
                DoublePointValue::Indeterminate,
            ]),
            quality(false),
            time,
        )
            .prop_map(|(value, quality, time)| Element::DoublePoint {
                value,
                quality,
                time,
            })
            .boxed(),
        MStNa1 | MStTb1 => (-64i8..=63, any::<bool>(), quality(true), time)
            .prop_map(|(value, transient, quality, time)| Element::StepPosition {
                value,
                transient,
                quality,
                time,
            })
            .boxed(),
        MBoNa1 | MBoTb1 => (any::<u32>(), quality(true), time)
            .prop_map(|(value, quality, time)| Element::Bitstring {
                value,
                quality,
                time,
            })
            .boxed(),
        MMeNa1 | MMeTd1 => (any::<i16>(), quality(true), time)
            .prop_map(|(value, quality, time)| Element::Normalized {
                value,
                quality,
                time,
            })
            .boxed(),
        MMeNb1 | MMeTe1 => (any::<i16>(), quality(true), time)
            .prop_map(|(value, quality, time)| Element::Scaled {
                value,
                quality,
                time,
            })
            .boxed(),
        MMeNc1 | MMeTf1 => (float(), quality(true), time)
            .prop_map(|(value, quality, time)| Element::Float {
                value,
                quality,
                time,
            })
            .boxed(),
        MItNa1 | MItTb1 => (any::<i32>(), 0u8..=31, any::<[bool; 3]>(), time)
            .prop_map(|(value, sequence, [carry, adjusted, invalid], time)| {
                Element::IntegratedTotal {
                    value,
                    quality: CounterQuality {
                        sequence,
                        carry,
                        adjusted,
                        invalid,
                    },
                    time,
                }
            })
            .boxed(),
        CScNa1 | CScTa1 => (any::<bool>(), command_qualifier(), time)
            .prop_map(|(on, qualifier, time)| Element::SingleCommand {
                on,
                qualifier,
                time,
            })
            .boxed(),
        CDcNa1 | CDcTa1 => (
            two_bits([
                DoubleCommandState::NotPermitted0,
                DoubleCommandState::Off,
                DoubleCommandState::On,
                DoubleCommandState::NotPermitted3,
            ]),
            command_qualifier(),
            time,
        )
            .prop_map(|(state, qualifier, time)| Element::DoubleCommand {
                state,
                qualifier,
                time,
            })
            .boxed(),
        CRcNa1 | CRcTa1 => (
            two_bits([
                StepDirection::NotPermitted0,
                StepDirection::Lower,
                StepDirection::Higher,
                StepDirection::NotPermitted3,
            ]),
            command_qualifier(),
            time,
        )
            .prop_map(|(step, qualifier, time)| Element::RegulatingStep {
                step,
                qualifier,
                time,
            })
            .boxed(),
        CSeNa1 | CSeTa1 => (any::<i16>(), setpoint_qualifier(), time)
            .prop_map(|(value, qualifier, time)| Element::SetpointNormalized {
                value,
                qualifier,
                time,
            })
            .boxed(),
        CSeNb1 | CSeTb1 => (any::<i16>(), setpoint_qualifier(), time)
            .prop_map(|(value, qualifier, time)| Element::SetpointScaled {
                value,
                qualifier,
                time,
            })
            .boxed(),
        CSeNc1 | CSeTc1 => (float(), setpoint_qualifier(), time)
            .prop_map(|(value, qualifier, time)| Element::SetpointFloat {
                value,
                qualifier,
                time,
            })
            .boxed(),
        MEiNa1 => (0u8..=127, any::<bool>())
            .prop_map(|(cause, after_parameter_change)| {
                Element::EndOfInit(InitCause {
                    cause,
                    after_parameter_change,
                })
            })
            .boxed(),
        CIcNa1 => any::<u8>()
            .prop_map(|qoi| Element::Interrogation { qoi })
            .boxed(),
        CCiNa1 => (
            0u8..=63,
            two_bits([
                FreezeMode::Read,
                FreezeMode::FreezeWithoutReset,
                FreezeMode::FreezeWithReset,
                FreezeMode::Reset,
            ]),
        )
            .prop_map(|(request, freeze)| {
                Element::CounterInterrogation(CounterQualifier { request, freeze })
            })
            .boxed(),
        CCsNa1 => self::time().prop_map(Element::ClockSync).boxed(),
    }
}

fn asdu() -> impl Strategy<Value = Asdu> {
    let types = (0..TypeId::ALL.len()).prop_map(|i| TypeId::ALL[i]);
    (types, any::<bool>())
        .prop_flat_map(|(type_id, sq)| {
            let count = 1..=max_objects(type_id, sq);
            (Just(type_id), Just(sq), vec(element(type_id), count))
        })
        .prop_flat_map(|(type_id, sq, elements)| {
            let n = elements.len() as u32;
            let ioas = if sq {
                (0..=MAX_IOA + 1 - n)
                    .prop_map(move |first| (first..first + n).collect::<Vec<_>>())
                    .boxed()
            } else {
                vec(0..=MAX_IOA, elements.len()).boxed()
            };
            (
                Just(type_id),
                Just(sq),
                Just(elements),
                ioas,
                0u8..=Cause::MAX,
                any::<(bool, bool, u8, u16)>(),
            )
        })
        .prop_map(
            |(type_id, sq, elements, ioas, cause, (negative, test, originator, common_address))| {
                Asdu {
                    type_id,
                    sq,
                    cause: Cause::new(cause).expect("generated in range"),
                    negative,
                    test,
                    originator,
                    common_address,
                    objects: ioas
                        .into_iter()
                        .zip(elements)
                        .map(|(ioa, element)| InfoObject { ioa, element })
                        .collect(),
                }
            },
        )
}

fn seq_no() -> impl Strategy<Value = SeqNo> {
    (0..SeqNo::MODULUS).prop_map(SeqNo::wrapping)
}

fn apdu() -> impl Strategy<Value = Apdu> {
    prop_oneof![
        (seq_no(), seq_no(), vec(any::<u8>(), 1..=MAX_ASDU_LEN)).prop_map(
            |(send_seq, recv_seq, asdu)| Apdu::I(IFrame {
                send_seq,
                recv_seq,
                asdu,
            })
        ),
        seq_no().prop_map(|recv_seq| Apdu::S { recv_seq }),
        (0..UFunction::ALL.len()).prop_map(|i| Apdu::U(UFunction::ALL[i])),
    ]
}

/// Bytes that get past the first checks more often than uniformly random ones: an APCI
/// header with a plausible length, or a supported type id with a small count.
fn plausible_apdu_bytes() -> impl Strategy<Value = Vec<u8>> {
    (4u8..=253, vec(any::<u8>(), 0..=300)).prop_map(|(length, mut rest)| {
        rest.splice(0..0, [apci::START, length]);
        rest
    })
}

fn plausible_asdu_bytes() -> impl Strategy<Value = Vec<u8>> {
    (0..TypeId::ALL.len(), any::<bool>(), 1u8..=20, -2isize..=2)
        .prop_flat_map(|(t, sq, count, delta)| {
            let type_id = TypeId::ALL[t];
            let n = usize::from(count);
            let objects = if sq {
                3 + n * type_id.element_len()
            } else {
                n * (3 + type_id.element_len())
            };
            // Mostly the exact length the header declares, sometimes a little off.
            let len = (objects + 4).saturating_add_signed(delta);
            let vsq = count | if sq { 0x80 } else { 0 };
            (Just([type_id.code(), vsq]), vec(any::<u8>(), len))
        })
        .prop_map(|(head, mut rest)| {
            rest.splice(0..0, head);
            rest
        })
}

fn encoded(asdu: &Asdu) -> Vec<u8> {
    let mut out = Vec::new();
    asdu.encode(&mut out).expect("generated within limits");
    out
}

proptest! {
    // Failures are kept beside this file, inside the codec's own directory.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn asdu_round_trips(asdu in asdu()) {
        let bytes = encoded(&asdu);
        prop_assert_eq!(bytes.len(), asdu.encoded_len());
        prop_assert!(bytes.len() <= MAX_ASDU_LEN);
        prop_assert_eq!(Asdu::decode(&bytes), Ok(asdu));
    }

    #[test]
    fn asdu_round_trips_through_an_i_frame(asdu in asdu(), send in seq_no(), recv in seq_no()) {
        let apdu = Apdu::i_frame(send, recv, &asdu).expect("generated within limits");
        let mut bytes = Vec::new();
        apdu.encode(&mut bytes).expect("encodable");
        let (decoded, used) = decode_apdu(&bytes).expect("valid").expect("complete");
        prop_assert_eq!(used, bytes.len());
        let Apdu::I(frame) = decoded else {
            return Err(TestCaseError::fail("not an I-frame"));
        };
        prop_assert_eq!((frame.send_seq, frame.recv_seq), (send, recv));
        prop_assert_eq!(frame.decode_asdu(), Ok(asdu));
    }

    #[test]
    fn packed_objects_come_back_in_order(asdu in asdu()) {
        let packed = Asdu::pack(asdu.cause, asdu.common_address, &asdu.objects)
            .expect("valid IOAs");
        let mut objects = Vec::new();
        for part in &packed {
            objects.extend(Asdu::decode(&encoded(part)).expect("valid").objects);
        }
        prop_assert_eq!(objects, asdu.objects);
    }

    #[test]
    fn step_positions_encode_exactly_within_i7(
        value in any::<i8>(),
        transient in any::<bool>(),
        quality in quality(true),
    ) {
        let asdu = Asdu::single(
            Cause::SPONTANEOUS,
            1,
            1,
            Element::StepPosition { value, transient, quality, time: None },
        );
        let mut out = Vec::new();
        let result = asdu.encode(&mut out);
        if (-64..=63).contains(&value) {
            prop_assert!(result.is_ok());
            prop_assert_eq!(Asdu::decode(&out), Ok(asdu));
        } else {
            let is_out_of_range = matches!(result, Err(EncodeError::FieldOutOfRange { .. }));
            prop_assert!(is_out_of_range, "{:?}", result);
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn apdu_stream_round_trips(apdus in vec(apdu(), 1..5)) {
        let mut stream = Vec::new();
        for apdu in &apdus {
            apdu.encode(&mut stream).expect("generated within limits");
        }
        let mut rest = &stream[..];
        let mut decoded = Vec::new();
        while let Some((apdu, used)) = decode_apdu(rest).expect("valid") {
            decoded.push(apdu);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, apdus);
    }

    #[test]
    fn unix_time_round_trips(ms in FIRST_MS..END_MS) {
        let time = Cp56Time2a::from_unix_ms(ms).expect("in range");
        prop_assert_eq!(time.to_unix_ms(), ms);
        prop_assert_eq!(Cp56Time2a::decode(time.encode()), Ok(time));
    }

    #[test]
    fn decoded_times_name_real_instants(bytes in any::<[u8; 7]>()) {
        if let Ok(time) = Cp56Time2a::decode(bytes) {
            let again = Cp56Time2a::from_unix_ms(time.to_unix_ms()).expect("in range");
            prop_assert_eq!(
                (again.year(), again.month(), again.day(), again.hour(), again.minute()),
                (time.year(), time.month(), time.day(), time.hour(), time.minute())
            );
            prop_assert_eq!(again.ms_of_minute(), time.ms_of_minute());
        }
    }

    #[test]
    fn decode_apdu_never_panics(bytes in vec(any::<u8>(), 0..=300)) {
        check_apdu_bytes(&bytes)?;
    }

    #[test]
    fn decode_apdu_never_panics_past_the_header(bytes in plausible_apdu_bytes()) {
        check_apdu_bytes(&bytes)?;
    }

    #[test]
    fn asdu_decode_never_panics(bytes in vec(any::<u8>(), 0..=300)) {
        check_asdu_bytes(&bytes)?;
    }

    #[test]
    fn asdu_decode_never_panics_past_the_header(bytes in plausible_asdu_bytes()) {
        check_asdu_bytes(&bytes)?;
    }
}

/// Whatever decodes must say it used no more than it was given, and must encode again.
fn check_apdu_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((apdu, used))) = decode_apdu(bytes) {
        prop_assert!(used <= bytes.len() && used <= MAX_APDU_LEN);
        let mut again = Vec::new();
        prop_assert!(apdu.encode(&mut again).is_ok());
        prop_assert_eq!(again.len(), used);
    }
    Ok(())
}

/// Whatever decodes must encode to the same length and decode to the same bytes again
/// (reserved bits are dropped, so the first encoding may differ from the input).
fn check_asdu_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(asdu) = Asdu::decode(bytes) {
        let once = encoded(&asdu);
        prop_assert_eq!(once.len(), bytes.len());
        let twice = encoded(&Asdu::decode(&once).expect("own encoding decodes"));
        prop_assert_eq!(once, twice);
    }
    Ok(())
}
