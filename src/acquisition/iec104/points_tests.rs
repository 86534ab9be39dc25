use super::*;
use crate::iec104::Cp56Time2a;

const SITE: &str = r#"
[site]
name = "104 points"
[[rtu]]
id = "bay"
protocol = "iec104"
  [rtu.iec104]
  common_address = 5
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:2404"]
[[point]]
id = "bay.trip"
rtu = "bay"
kind = "single"
type = "M_SP_TB_1"
ioa = 102
[[point]]
id = "bay.voltage"
rtu = "bay"
kind = "measured"
type = "M_ME_NA_1"
ioa = 202
scale = 24.0
[[point]]
id = "bay.other-ca"
rtu = "bay"
kind = "double"
type = "M_DP_NA_1"
ioa = 102
common_address = 6
[[point]]
id = "bay.energy"
rtu = "bay"
kind = "counter"
type = "M_IT_NA_1"
ioa = 301
[[point]]
id = "bay.cmd"
rtu = "bay"
kind = "double_command"
type = "C_DC_NA_1"
ioa = 501
[[point]]
id = "bay.set"
rtu = "bay"
kind = "setpoint"
type = "C_SE_NB_1"
ioa = 502
scale = 0.1
"#;

fn map() -> PointMap {
    let site = crate::site::parse(SITE).unwrap_or_else(|e| panic!("{e:?}"));
    PointMap::new(5, &site.points)
}

fn asdu(cause: Cause, ca: u16, objects: Vec<InfoObject>) -> Asdu {
    let mut a = Asdu::new(cause, ca, objects).expect("valid");
    a.cause = cause;
    a
}

#[test]
fn the_plain_and_the_time_tagged_twin_are_the_same_point_and_the_time_tag_is_kept() {
    let m = map();
    let time = Cp56Time2a::from_unix_ms(1_795_000_000_123).expect("time");
    let quality = Quality {
        blocked: true,
        substituted: true,
        ..Quality::GOOD
    };
    let timed = InfoObject {
        ioa: 102,
        element: Element::SinglePoint {
            value: true,
            quality,
            time: Some(time),
        },
    };
    let (readings, unmapped) = m.read(&asdu(Cause::SPONTANEOUS, 5, vec![timed]));
    assert!(unmapped.is_empty());
    assert_eq!(
        readings,
        [Reading {
            point: "bay.trip".into(),
            value: Value::Single(true),
            quality: points::Quality {
                blocked: true,
                substituted: true,
                ..points::Quality::GOOD
            },
            device_time_ms: Some(1_795_000_000_123),
            spontaneous: true,
        }]
    );
    let plain = InfoObject {
        ioa: 102,
        element: Element::SinglePoint {
            value: false,
            quality: Quality::GOOD,
            time: None,
        },
    };
    let (readings, _) = m.read(&asdu(Cause::INTERROGATED_BY_STATION, 5, vec![plain]));
    assert_eq!(readings[0].point, "bay.trip");
    assert_eq!(readings[0].device_time_ms, None);
    assert!(!readings[0].spontaneous);
}

#[test]
fn common_address_type_and_ioa_together_name_a_point() {
    let m = map();
    let double = InfoObject {
        ioa: 102,
        element: Element::DoublePoint {
            value: DoublePointValue::On,
            quality: Quality::GOOD,
            time: None,
        },
    };
    let (readings, _) = m.read(&asdu(Cause::SPONTANEOUS, 6, vec![double]));
    assert_eq!(readings[0].point, "bay.other-ca");
    assert_eq!(readings[0].value, Value::Double(2));
    // The same IOA and type at the RTU's own common address is nobody.
    let (readings, unmapped) = m.read(&asdu(Cause::SPONTANEOUS, 5, vec![double]));
    assert!(readings.is_empty());
    assert_eq!(
        unmapped,
        [Unmapped::Unknown {
            type_id: TypeId::MDpNa1,
            ca: 5,
            ioa: 102
        }]
    );
    assert_eq!(m.common_addresses().collect::<Vec<_>>(), [5, 6]);
}

#[test]
fn measured_values_are_scaled_and_counters_keep_their_invalid_bit() {
    let m = map();
    let voltage = InfoObject {
        ioa: 202,
        element: Element::Normalized {
            value: 16384,
            quality: Quality {
                overflow: true,
                ..Quality::GOOD
            },
            time: None,
        },
    };
    let energy = InfoObject {
        ioa: 301,
        element: Element::IntegratedTotal {
            value: 70_000,
            quality: CounterQuality {
                invalid: true,
                ..CounterQuality::default()
            },
            time: None,
        },
    };
    let (r, _) = m.read(&asdu(Cause::PERIODIC, 5, vec![voltage]));
    assert_eq!(r[0].value, Value::Measured(12.0));
    assert!(r[0].quality.overflow);
    let (r, _) = m.read(&asdu(Cause::REQUESTED_BY_GENERAL_COUNTER, 5, vec![energy]));
    assert_eq!(r[0].value, Value::Counter(70_000));
    assert!(r[0].quality.invalid);
}

#[test]
fn commands_are_addressed_as_the_device_names_them_and_unscaled() {
    let m = map();
    let cmd = m.command("bay.cmd").expect("mapped");
    let select = cmd.asdu(&Value::Double(2), true, 3).expect("encodes");
    assert_eq!(select.type_id, TypeId::CDcNa1);
    assert_eq!((select.common_address, select.originator), (5, 3));
    assert!(matches!(
        select.objects[0].element,
        Element::DoubleCommand {
            state: DoubleCommandState::On,
            qualifier: CommandQualifier { select: true, .. },
            ..
        }
    ));
    assert!(cmd.answered_by(&select.reply(Cause::ACTIVATION_CON, false)));
    assert!(cmd.asdu(&Value::Double(0), false, 0).is_err());
    let set = m.command("bay.set").expect("mapped");
    let asdu = set.asdu(&Value::Measured(12.3), false, 0).expect("encodes");
    assert!(matches!(
        asdu.objects[0].element,
        Element::SetpointScaled { value: 123, .. }
    ));
    assert!(set.asdu(&Value::Measured(1e9), false, 0).is_err());
    assert!(m.command("bay.trip").is_none());
}
