//! The replicated point image as one forwarder shows it to its masters: which IOA each point
//! has, which 104 type carries it, and the ASDUs for a general or counter interrogation and
//! for a spontaneous event. No I/O; every node builds the same ASDUs from the same state.

use std::collections::{BTreeMap, HashMap};

use crate::iec104::{
    Asdu, Cause, CounterQuality, Cp56Time2a, DoublePointValue, Element, EncodeError, InfoObject,
    MAX_IOA, Quality, TypeId, max_objects,
};
use crate::site::{Forwarder, PointKind, Site};
use crate::state::points::{self, Event, PointState, Value};

/// How a mapped point travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// M_SP (also link-status points).
    Single,
    /// M_DP.
    Double,
    /// M_ME_NC / M_ME_TF: short floating point, the engineering value as it is.
    Float,
    /// M_ST.
    Step,
    /// M_BO.
    Bitstring,
    /// M_IT: sent on counter interrogation only.
    Counter,
    /// A command point: never sent, only commanded.
    Command(PointKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    pub ioa: u32,
    pub point: String,
    pub carrier: Carrier,
}

/// One forwarder's IOA map, in IOA order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Image {
    pub common_address: u16,
    mapped: Vec<Mapped>,
    by_point: HashMap<String, usize>,
    by_ioa: HashMap<u32, usize>,
}

impl Image {
    /// The map of `forwarder`; points the site does not have are link-status points (the
    /// site check lets only those through).
    pub(crate) fn new(site: &Site, forwarder: &Forwarder) -> Image {
        let kinds: HashMap<&str, PointKind> = site
            .points
            .iter()
            .map(|p| (p.id.get_ref().as_str(), *p.kind.get_ref()))
            .collect();
        let mut mapped: Vec<Mapped> = forwarder
            .maps
            .iter()
            .map(|m| {
                let point = m.point.get_ref().clone();
                let carrier = match kinds.get(point.as_str()) {
                    None | Some(PointKind::Single) => Carrier::Single,
                    Some(PointKind::Double) => Carrier::Double,
                    Some(PointKind::Measured) => Carrier::Float,
                    Some(PointKind::Counter) => Carrier::Counter,
                    Some(PointKind::Step) => Carrier::Step,
                    Some(PointKind::Bitstring) => Carrier::Bitstring,
                    Some(
                        k @ (PointKind::SingleCommand
                        | PointKind::DoubleCommand
                        | PointKind::Setpoint),
                    ) => Carrier::Command(*k),
                };
                Mapped {
                    ioa: *m.ioa.get_ref(),
                    point,
                    carrier,
                }
            })
            .collect();
        mapped.sort_by_key(|m| m.ioa);
        let by_point = mapped
            .iter()
            .enumerate()
            .map(|(i, m)| (m.point.clone(), i))
            .collect();
        let by_ioa = mapped.iter().enumerate().map(|(i, m)| (m.ioa, i)).collect();
        Image {
            common_address: *forwarder.common_address.get_ref(),
            mapped,
            by_point,
            by_ioa,
        }
    }

    pub(crate) fn by_ioa(&self, ioa: u32) -> Option<&Mapped> {
        self.by_ioa.get(&ioa).and_then(|i| self.mapped.get(*i))
    }

    /// The answer to a station interrogation (COT 20): every monitored point but counters,
    /// grouped by type and packed. A point never read goes out invalid, so that the master
    /// learns of every configured point.
    pub(crate) fn interrogation(
        &self,
        states: &BTreeMap<String, PointState>,
    ) -> Result<Vec<Asdu>, EncodeError> {
        self.pack(Cause::INTERROGATED_BY_STATION, states, |c| {
            !matches!(c, Carrier::Counter | Carrier::Command(_))
        })
    }

    /// The answer to a general counter interrogation (COT 37).
    pub(crate) fn counters(
        &self,
        states: &BTreeMap<String, PointState>,
    ) -> Result<Vec<Asdu>, EncodeError> {
        self.pack(Cause::REQUESTED_BY_GENERAL_COUNTER, states, |c| {
            c == Carrier::Counter
        })
    }

    fn pack(
        &self,
        cause: Cause,
        states: &BTreeMap<String, PointState>,
        wanted: impl Fn(Carrier) -> bool,
    ) -> Result<Vec<Asdu>, EncodeError> {
        let objects: Vec<InfoObject> = self
            .mapped
            .iter()
            .filter(|m| wanted(m.carrier))
            .filter_map(|m| {
                let element = match states.get(&m.point) {
                    Some(s) => element(m.carrier, s.value, s.quality, None),
                    None => element(m.carrier, never_read(m.carrier), NEVER_READ, None),
                }?;
                Some(InfoObject {
                    ioa: m.ioa,
                    element,
                })
            })
            .collect();
        Asdu::pack(cause, self.common_address, &objects)
    }

    /// Spontaneous ASDUs for `events` (oldest first), at most `room` of them: consecutive
    /// events of one type share an ASDU, so that a burst of changes needs few frames of the
    /// k window. Each comes with the sequence number of the last event it accounts for
    /// (events this forwarder does not send included); also returned is the last event
    /// accounted for in all. Later events are left for the next burst.
    pub(crate) fn burst(&self, events: &[Event], room: usize) -> (Vec<(Asdu, u64)>, u64) {
        let mut out: Vec<(Asdu, u64)> = Vec::new();
        let mut open: Vec<InfoObject> = Vec::new();
        let mut through = 0;
        if room == 0 {
            return (out, through);
        }
        for event in events {
            let Some(object) = self.spontaneous_object(event) else {
                through = event.seq;
                continue;
            };
            let type_id = object.element.type_id();
            let fits = open.first().is_some_and(|o| {
                o.element.type_id() == type_id && open.len() < max_objects(type_id, false)
            });
            if !fits && !open.is_empty() {
                if out.len() + 1 >= room {
                    // The next ASDU would be one too many: stop before this event.
                    break;
                }
                out.push((self.spontaneous_asdu(std::mem::take(&mut open)), through));
            }
            open.push(object);
            through = event.seq;
        }
        if !open.is_empty() && out.len() < room {
            out.push((self.spontaneous_asdu(open), through));
        }
        (out, through)
    }

    fn spontaneous_asdu(&self, objects: Vec<InfoObject>) -> Asdu {
        let type_id = objects
            .first()
            .map_or(TypeId::MSpTb1, |o| o.element.type_id());
        Asdu {
            type_id,
            sq: false,
            cause: Cause::SPONTANEOUS,
            negative: false,
            test: false,
            originator: 0,
            common_address: self.common_address,
            objects,
        }
    }

    /// The event as a time-tagged information object, if its point is mapped and sent
    /// spontaneously (counters and commands are not).
    fn spontaneous_object(&self, event: &Event) -> Option<InfoObject> {
        let m = self.mapped.get(*self.by_point.get(&event.point)?)?;
        if matches!(m.carrier, Carrier::Counter | Carrier::Command(_)) {
            return None;
        }
        // An event is never dropped for its time: one CP56Time2a cannot carry (a clock set
        // before 2000 or after 2099) goes out as the nearest end of the century, marked
        // invalid.
        let ms = i64::try_from(event.time_ms).unwrap_or(i64::MAX);
        let time = match Cp56Time2a::from_unix_ms(ms) {
            Ok(t) => t,
            Err(_) => {
                let edge = if ms < UNIX_MS_AT_2000 {
                    UNIX_MS_AT_2000
                } else {
                    UNIX_MS_AT_2100 - 1
                };
                Cp56Time2a::from_unix_ms(edge).ok()?.with_invalid(true)
            }
        };
        let element = element(m.carrier, event.value, event.quality, Some(time))?;
        (m.ioa <= MAX_IOA).then_some(InfoObject {
            ioa: m.ioa,
            element,
        })
    }
}

const UNIX_MS_AT_2000: i64 = 946_684_800_000;
const UNIX_MS_AT_2100: i64 = 4_102_444_800_000;

const NEVER_READ: points::Quality = points::Quality::LINK_DOWN;

fn never_read(carrier: Carrier) -> Value {
    match carrier {
        Carrier::Double => Value::Double(0),
        Carrier::Float => Value::Measured(0.0),
        Carrier::Counter => Value::Counter(0),
        Carrier::Step => Value::Step {
            value: 0,
            transient: false,
        },
        Carrier::Bitstring => Value::Bits(0),
        Carrier::Single | Carrier::Command(_) => Value::Single(false),
    }
}

fn quality(q: points::Quality) -> Quality {
    Quality {
        invalid: q.invalid,
        not_topical: q.not_topical,
        substituted: q.substituted,
        blocked: q.blocked,
        overflow: q.overflow,
    }
}

/// The element that carries `value` as `carrier` says; None for a value of another kind
/// (a configuration changed under a stored value).
fn element(
    carrier: Carrier,
    value: Value,
    q: points::Quality,
    time: Option<Cp56Time2a>,
) -> Option<Element> {
    Some(match (carrier, value) {
        (Carrier::Single, Value::Single(b)) => Element::SinglePoint {
            value: b,
            quality: quality(q),
            time,
        },
        (Carrier::Double, Value::Double(d)) => Element::DoublePoint {
            value: match d & 3 {
                0 => DoublePointValue::Intermediate,
                1 => DoublePointValue::Off,
                2 => DoublePointValue::On,
                _ => DoublePointValue::Indeterminate,
            },
            quality: quality(q),
            time,
        },
        (Carrier::Float, Value::Measured(v)) => {
            let value = v as f32;
            let mut quality = quality(q);
            // Too large for a short float: sent as the largest one, marked overflowed.
            quality.overflow |= !value.is_finite();
            Element::Float {
                value: if value.is_finite() {
                    value
                } else {
                    f32::MAX.copysign(value)
                },
                quality,
                time,
            }
        }
        (Carrier::Step, Value::Step { value, transient }) => Element::StepPosition {
            value,
            transient,
            quality: quality(q),
            time,
        },
        (Carrier::Bitstring, Value::Bits(value)) => Element::Bitstring {
            value,
            quality: quality(q),
            time,
        },
        (Carrier::Counter, Value::Counter(c)) => Element::IntegratedTotal {
            value: i32::try_from(c).unwrap_or(if c < 0 { i32::MIN } else { i32::MAX }),
            quality: CounterQuality {
                invalid: q.invalid,
                ..CounterQuality::default()
            },
            time,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iec104::TypeId;

    const SITE: &str = r#"
[site]
name = "image test"
[[rtu]]
id = "r"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]
[[point]]
id = "r.a"
rtu = "r"
kind = "single"
table = "discrete_input"
address = 0
[[point]]
id = "r.b"
rtu = "r"
kind = "double"
table = "discrete_input"
address = 1
[[point]]
id = "r.m"
rtu = "r"
kind = "measured"
table = "input"
address = 0
[[point]]
id = "r.c"
rtu = "r"
kind = "counter"
table = "input"
address = 1
[[point]]
id = "r.cmd"
rtu = "r"
kind = "single_command"
table = "coil"
address = 0
[[forwarder]]
name = "scada"
port = 2404
common_address = 7
  [[forwarder.map]]
  point = "r.m"
  ioa = 2001
  [[forwarder.map]]
  point = "r.a"
  ioa = 1001
  [[forwarder.map]]
  point = "r.b"
  ioa = 1002
  [[forwarder.map]]
  point = "r.c"
  ioa = 3001
  [[forwarder.map]]
  point = "r.cmd"
  ioa = 5001
  [[forwarder.map]]
  point = "r.link"
  ioa = 4001
"#;

    fn image() -> Image {
        let site = crate::site::parse(SITE).unwrap_or_else(|e| panic!("{e:?}"));
        Image::new(&site, &site.forwarders[0])
    }

    fn state(value: Value) -> PointState {
        PointState {
            value,
            quality: points::Quality::GOOD,
            time_ms: 1_795_000_000_123,
            epoch: 1,
            source: 1,
        }
    }

    #[test]
    fn interrogation_sends_every_monitored_point_and_marks_the_unread_invalid() {
        let img = image();
        let states = BTreeMap::from([
            ("r.a".to_string(), state(Value::Single(true))),
            ("r.m".to_string(), state(Value::Measured(42.5))),
            ("r.c".to_string(), state(Value::Counter(70_000))),
        ]);
        let asdus = img.interrogation(&states).expect("packs");
        let objects: Vec<(u32, TypeId, bool)> = asdus
            .iter()
            .flat_map(|a| {
                assert_eq!(a.cause, Cause::INTERROGATED_BY_STATION);
                assert_eq!(a.common_address, 7);
                a.objects.iter().map(move |o| {
                    let invalid = match o.element {
                        Element::SinglePoint { quality, .. }
                        | Element::DoublePoint { quality, .. }
                        | Element::Float { quality, .. } => quality.invalid,
                        _ => panic!("unexpected element {:?}", o.element),
                    };
                    (o.ioa, a.type_id, invalid)
                })
            })
            .collect();
        let mut sorted = objects.clone();
        sorted.sort_by_key(|o| o.0);
        assert_eq!(
            sorted,
            [
                (1001, TypeId::MSpNa1, false),
                (1002, TypeId::MDpNa1, true),
                (2001, TypeId::MMeNc1, false),
                (4001, TypeId::MSpNa1, true),
            ]
        );
        let counters = img.counters(&states).expect("packs");
        assert_eq!(counters.len(), 1);
        assert_eq!(counters[0].type_id, TypeId::MItNa1);
        assert_eq!(counters[0].objects[0].ioa, 3001);
    }

    #[test]
    fn an_event_goes_out_spontaneous_with_its_time_tag_and_commands_are_found_by_ioa() {
        let img = image();
        let event = Event {
            seq: 9,
            point: "r.b".into(),
            value: Value::Double(2),
            quality: points::Quality::LINK_DOWN,
            time_ms: 1_795_000_000_123,
        };
        let asdu = spontaneous(&img, &event).expect("mapped");
        assert_eq!(
            (asdu.type_id, asdu.cause),
            (TypeId::MDpTb1, Cause::SPONTANEOUS)
        );
        match &asdu.objects[0].element {
            Element::DoublePoint {
                value,
                quality,
                time: Some(t),
            } => {
                assert_eq!(*value, DoublePointValue::On);
                assert!(quality.invalid && quality.not_topical);
                assert_eq!(t.to_unix_ms(), 1_795_000_000_123);
            }
            other => panic!("unexpected {other:?}"),
        }
        let old_clock = Event {
            time_ms: 1000,
            ..event.clone()
        };
        match &spontaneous(&img, &old_clock).expect("still sent").objects[0].element {
            Element::DoublePoint { time: Some(t), .. } => assert!(t.invalid()),
            other => panic!("unexpected {other:?}"),
        }
        let unmapped = Event {
            point: "r.nothing".into(),
            ..event
        };
        assert!(spontaneous(&img, &unmapped).is_none());
        assert_eq!(
            img.by_ioa(5001).map(|m| m.carrier),
            Some(Carrier::Command(PointKind::SingleCommand))
        );
        assert!(img.by_ioa(5002).is_none());
    }

    /// The spontaneous ASDU (COT 3) of one event, if its point is mapped and sent.
    fn spontaneous(img: &Image, event: &Event) -> Option<Asdu> {
        let (asdus, _) = img.burst(std::slice::from_ref(event), 1);
        asdus.into_iter().next().map(|(asdu, _)| asdu)
    }

    fn ev(seq: u64, point: &str, value: Value) -> Event {
        Event {
            seq,
            point: point.into(),
            value,
            quality: points::Quality::GOOD,
            time_ms: 1_795_000_000_000 + seq,
        }
    }

    #[test]
    fn a_burst_shares_asdus_by_type_in_order_within_the_room() {
        let img = image();
        let events = vec![
            ev(1, "r.a", Value::Single(true)),
            ev(2, "r.nothing", Value::Single(true)),
            ev(3, "r.a", Value::Single(false)),
            ev(4, "r.b", Value::Double(1)),
            ev(5, "r.c", Value::Counter(5)),
            ev(6, "r.m", Value::Measured(1.5)),
            ev(7, "r.nothing", Value::Single(false)),
        ];
        let (asdus, through) = img.burst(&events, 12);
        let shape: Vec<(TypeId, Vec<u32>, u64)> = asdus
            .iter()
            .map(|(a, last)| (a.type_id, a.objects.iter().map(|o| o.ioa).collect(), *last))
            .collect();
        assert_eq!(
            shape,
            vec![
                (TypeId::MSpTb1, vec![1001, 1001], 3),
                (TypeId::MDpTb1, vec![1002], 5),
                (TypeId::MMeTf1, vec![2001], 7),
            ]
        );
        assert_eq!(through, 7);
        assert!(asdus.iter().all(|(a, _)| a.cause == Cause::SPONTANEOUS));
        // With room for two, the third type waits, and so do the events from it on.
        let (asdus, through) = img.burst(&events, 2);
        assert_eq!(asdus.len(), 2);
        assert_eq!((asdus[1].1, through), (5, 5));
        // Nothing to send still moves past what is not sent here.
        let (asdus, through) = img.burst(&events[4..5], 3);
        assert!(asdus.is_empty());
        assert_eq!(through, 5);
        assert_eq!(img.burst(&events, 0), (Vec::new(), 0));
    }

    #[test]
    fn a_long_burst_of_one_type_fills_each_asdu() {
        let img = image();
        let events: Vec<Event> = (1..=100)
            .map(|i| ev(i, "r.a", Value::Single(i % 2 == 0)))
            .collect();
        let (asdus, through) = img.burst(&events, 12);
        let per: Vec<usize> = asdus.iter().map(|(a, _)| a.objects.len()).collect();
        let max = max_objects(TypeId::MSpTb1, false);
        assert!(per.iter().all(|n| *n <= max), "{per:?}");
        assert_eq!(per.iter().sum::<usize>(), 100);
        assert_eq!(through, 100);
        for (a, _) in &asdus {
            let mut bytes = Vec::new();
            a.encode(&mut bytes).expect("fits an APDU");
        }
    }
}
