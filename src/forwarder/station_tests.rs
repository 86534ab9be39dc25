use super::*;
use crate::iec104::{
    CommandQualifier, CounterQualifier, CounterQuality, DoublePointValue, FreezeMode, InfoObject,
    Quality, SetpointQualifier,
};
use crate::state::points;

/// One RTU with one point of each kind, every one mapped, common address 47.
const SITE: &str = r#"
[site]
name = "station test"
[[rtu]]
id = "r"
protocol = "modbus"
  [[rtu.channel]]
  name = "lan"
  endpoints = ["127.0.0.1:1"]
[[point]]
id = "r.sp"
rtu = "r"
kind = "single"
table = "discrete_input"
address = 0
[[point]]
id = "r.dp"
rtu = "r"
kind = "double"
table = "discrete_input"
address = 4
[[point]]
id = "r.me"
rtu = "r"
kind = "measured"
table = "input"
address = 0
[[point]]
id = "r.it"
rtu = "r"
kind = "counter"
table = "input"
address = 2
format = "u32"
[[point]]
id = "r.sc"
rtu = "r"
kind = "single_command"
table = "coil"
address = 0
[[point]]
id = "r.dc"
rtu = "r"
kind = "double_command"
table = "coil"
address = 1
[[point]]
id = "r.se"
rtu = "r"
kind = "setpoint"
table = "holding"
address = 0
format = "i16"
[[forwarder]]
name = "scada"
port = 2404
common_address = 47
  [[forwarder.map]]
  point = "r.sp"
  ioa = 1001
  [[forwarder.map]]
  point = "r.dp"
  ioa = 1002
  [[forwarder.map]]
  point = "r.me"
  ioa = 2001
  [[forwarder.map]]
  point = "r.it"
  ioa = 3001
  [[forwarder.map]]
  point = "r.sc"
  ioa = 5001
  [[forwarder.map]]
  point = "r.dc"
  ioa = 5002
  [[forwarder.map]]
  point = "r.se"
  ioa = 5003
"#;

const CA: u16 = 47;
const SP: u32 = 1001;
const DP: u32 = 1002;
const ME: u32 = 2001;
const IT: u32 = 3001;
const SC: u32 = 5001;
const DC: u32 = 5002;
const SE: u32 = 5003;
const UNMAPPED: u32 = 9999;

/// 2026-11-18, well inside the century CP56Time2a can carry.
const NOW_MS: i64 = 1_795_000_000_123;
const TIMEOUT: Duration = Duration::from_secs(10);

fn image() -> Image {
    let site = crate::site::parse(SITE).unwrap_or_else(|e| panic!("{e:?}"));
    Image::new(&site, &site.forwarders[0])
}

fn state(value: Value) -> PointState {
    PointState {
        value,
        quality: points::Quality::GOOD,
        time_ms: 1_795_000_000_000,
        epoch: 1,
        source: 1,
    }
}

/// Every point read but the double, which was never read.
fn states() -> BTreeMap<String, PointState> {
    BTreeMap::from([
        ("r.sp".to_string(), state(Value::Single(true))),
        ("r.me".to_string(), state(Value::Measured(42.5))),
        ("r.it".to_string(), state(Value::Counter(70_000))),
    ])
}

/// For ASDUs whose answer must not look at the point states.
fn no_states() -> BTreeMap<String, PointState> {
    panic!("the point states were read for an ASDU that is no interrogation")
}

/// One forwarder's image and selects, at a fixed instant.
struct Station {
    image: Image,
    selects: Selects,
    now: Instant,
}

impl Station {
    fn new() -> Station {
        Station {
            image: image(),
            selects: Selects::default(),
            now: Instant::now(),
        }
    }

    fn react_with(
        &mut self,
        asdu: &Asdu,
        conn: u64,
        now: Instant,
        now_ms: i64,
        states: impl FnOnce() -> BTreeMap<String, PointState>,
    ) -> Reaction {
        let cx = Context {
            image: &self.image,
            conn,
            now,
            now_ms,
            select_timeout: TIMEOUT,
            selects: &mut self.selects,
        };
        react(asdu, cx, states)
    }

    /// A command (or other non-interrogation) from `conn` at `now`.
    fn at(&mut self, asdu: &Asdu, conn: u64, now: Instant) -> Reaction {
        self.react_with(asdu, conn, now, NOW_MS, no_states)
    }

    fn command(&mut self, asdu: &Asdu, conn: u64) -> Reaction {
        let now = self.now;
        self.at(asdu, conn, now)
    }

    /// The ASDUs answered to an interrogation-like request.
    fn sent(&mut self, asdu: &Asdu) -> Vec<Asdu> {
        let now = self.now;
        sent(self.react_with(asdu, 1, now, NOW_MS, states))
    }
}

fn sent(reaction: Reaction) -> Vec<Asdu> {
    match reaction {
        Reaction::Send(asdus) => asdus,
        Reaction::Execute(e) => panic!("expected ASDUs to send, got an execute: {e:?}"),
    }
}

fn executed(reaction: Reaction) -> Execute {
    match reaction {
        Reaction::Execute(e) => e,
        Reaction::Send(asdus) => panic!("expected an execute, got {asdus:?}"),
    }
}

/// The request mirrored once, with `cause` and P/N=1.
#[track_caller]
fn assert_refused(reaction: Reaction, request: &Asdu, cause: Cause) {
    let out = sent(reaction);
    assert_eq!(
        out,
        vec![request.reply(cause, true)],
        "refusal of {request:?}"
    );
    assert!(out[0].negative);
    assert_eq!(out[0].cause, cause);
}

/// The request mirrored once, with `cause` and P/N=0.
#[track_caller]
fn assert_confirmed(reaction: Reaction, request: &Asdu, cause: Cause) {
    let out = sent(reaction);
    assert_eq!(
        out,
        vec![request.reply(cause, false)],
        "confirmation of {request:?}"
    );
}

fn gi(common_address: u16, cause: Cause, ioa: u32, qoi: u8) -> Asdu {
    Asdu::single(cause, common_address, ioa, Element::Interrogation { qoi })
}

fn station_gi() -> Asdu {
    gi(CA, Cause::ACTIVATION, 0, QOI_STATION)
}

fn counter_interrogation(request: u8) -> Asdu {
    Asdu::single(
        Cause::ACTIVATION,
        CA,
        0,
        Element::CounterInterrogation(CounterQualifier {
            request,
            freeze: FreezeMode::Read,
        }),
    )
}

fn qoc(select: bool) -> CommandQualifier {
    CommandQualifier {
        qualifier: 0,
        select,
    }
}

fn qos(select: bool) -> SetpointQualifier {
    SetpointQualifier { ql: 0, select }
}

fn single_command(ioa: u32, on: bool, select: bool) -> Asdu {
    Asdu::single(
        Cause::ACTIVATION,
        CA,
        ioa,
        Element::SingleCommand {
            on,
            qualifier: qoc(select),
            time: None,
        },
    )
}

fn double_command(ioa: u32, state: DoubleCommandState, select: bool) -> Asdu {
    Asdu::single(
        Cause::ACTIVATION,
        CA,
        ioa,
        Element::DoubleCommand {
            state,
            qualifier: qoc(select),
            time: None,
        },
    )
}

fn setpoint_float(ioa: u32, value: f32, select: bool) -> Asdu {
    Asdu::single(
        Cause::ACTIVATION,
        CA,
        ioa,
        Element::SetpointFloat {
            value,
            qualifier: qos(select),
            time: None,
        },
    )
}

fn deactivation(asdu: &Asdu) -> Asdu {
    Asdu {
        cause: Cause::DEACTIVATION,
        ..asdu.clone()
    }
}

fn invalid_not_topical() -> Quality {
    Quality {
        invalid: true,
        not_topical: true,
        ..Quality::default()
    }
}

// ---------------------------------------------------------------- interrogations

#[test]
fn general_interrogation_confirms_sends_every_monitored_point_and_terminates() {
    let request = station_gi();
    let out = Station::new().sent(&request);
    assert!(out.len() >= 3, "ACTCON, data, ACTTERM: {out:?}");

    let first = out.first().expect("ACTCON");
    assert_eq!(*first, request.reply(Cause::ACTIVATION_CON, false));
    let last = out.last().expect("ACTTERM");
    assert_eq!(*last, request.reply(Cause::ACTIVATION_TERMINATION, false));

    let data = &out[1..out.len() - 1];
    let mut objects: Vec<(u32, TypeId, Element)> = data
        .iter()
        .flat_map(|a| {
            assert_eq!(a.cause, Cause::INTERROGATED_BY_STATION, "{a:?}");
            assert_eq!(a.common_address, CA);
            assert!(!a.negative && !a.test);
            a.objects.iter().map(move |o| (o.ioa, a.type_id, o.element))
        })
        .collect();
    objects.sort_by_key(|o| o.0);
    assert_eq!(
        objects,
        [
            (
                SP,
                TypeId::MSpNa1,
                Element::SinglePoint {
                    value: true,
                    quality: Quality::GOOD,
                    time: None,
                },
            ),
            (
                DP,
                TypeId::MDpNa1,
                Element::DoublePoint {
                    value: DoublePointValue::Intermediate,
                    quality: invalid_not_topical(),
                    time: None,
                },
            ),
            (
                ME,
                TypeId::MMeNc1,
                Element::Float {
                    value: 42.5,
                    quality: Quality::GOOD,
                    time: None,
                },
            ),
        ],
        "no counter ({IT}) and no command ({SC}, {DC}, {SE}) in a GI"
    );
}

#[test]
fn general_interrogation_sends_a_read_double_with_its_value() {
    let mut s = Station::new();
    let mut st = states();
    st.insert("r.dp".to_string(), state(Value::Double(1)));
    let now = s.now;
    let out = sent(s.react_with(&station_gi(), 1, now, NOW_MS, move || st));
    let double = out
        .iter()
        .flat_map(|a| a.objects.iter())
        .find(|o| o.ioa == DP)
        .expect("the double is sent");
    assert_eq!(
        double.element,
        Element::DoublePoint {
            value: DoublePointValue::Off,
            quality: Quality::GOOD,
            time: None,
        }
    );
}

#[test]
fn a_broadcast_general_interrogation_is_answered_with_the_stations_own_address() {
    let request = gi(BROADCAST, Cause::ACTIVATION, 0, QOI_STATION);
    let out = Station::new().sent(&request);
    assert!(out.len() >= 3, "{out:?}");
    for a in &out {
        assert_eq!(a.common_address, CA, "{a:?}");
        assert!(!a.negative);
    }
    assert_eq!(
        (out[0].type_id, out[0].cause),
        (TypeId::CIcNa1, Cause::ACTIVATION_CON)
    );
    assert_eq!(
        out[0].objects,
        [InfoObject {
            ioa: 0,
            element: Element::Interrogation { qoi: QOI_STATION },
        }]
    );
    let last = out.last().expect("ACTTERM");
    assert_eq!(
        (last.type_id, last.cause),
        (TypeId::CIcNa1, Cause::ACTIVATION_TERMINATION)
    );
    // Same data as addressed to 47.
    assert_eq!(out, Station::new().sent(&station_gi()));
}

#[test]
fn a_group_interrogation_is_confirmed_and_terminated_without_data() {
    let request = gi(CA, Cause::ACTIVATION, 0, 21);
    assert_eq!(
        Station::new().sent(&request),
        [
            request.reply(Cause::ACTIVATION_CON, false),
            request.reply(Cause::ACTIVATION_TERMINATION, false),
        ]
    );
}

#[test]
fn an_interrogation_with_an_unknown_qualifier_is_refused() {
    let request = gi(CA, Cause::ACTIVATION, 0, 0);
    let mut s = Station::new();
    let now = s.now;
    assert_refused(
        s.react_with(&request, 1, now, NOW_MS, states),
        &request,
        Cause::ACTIVATION_CON,
    );
}

#[test]
fn counter_interrogation_confirms_sends_the_counters_and_terminates() {
    let request = counter_interrogation(5);
    let out = Station::new().sent(&request);
    assert_eq!(
        out,
        [
            request.reply(Cause::ACTIVATION_CON, false),
            Asdu::single(
                Cause::REQUESTED_BY_GENERAL_COUNTER,
                CA,
                IT,
                Element::IntegratedTotal {
                    value: 70_000,
                    quality: CounterQuality::default(),
                    time: None,
                },
            ),
            request.reply(Cause::ACTIVATION_TERMINATION, false),
        ]
    );
    assert_eq!(out[0].type_id, TypeId::CCiNa1);
    assert_eq!(out[1].type_id, TypeId::MItNa1);
}

#[test]
fn a_counter_group_request_is_confirmed_and_terminated_without_data() {
    let request = counter_interrogation(1);
    assert_eq!(
        Station::new().sent(&request),
        [
            request.reply(Cause::ACTIVATION_CON, false),
            request.reply(Cause::ACTIVATION_TERMINATION, false),
        ]
    );
}

// ---------------------------------------------------------------- clock synchronisation

#[test]
fn clock_sync_is_confirmed_with_the_nodes_own_time() {
    let theirs = Cp56Time2a::new(2030, 1, 2, 3, 4, 5_000).expect("valid");
    let request = Asdu::single(Cause::ACTIVATION, CA, 0, Element::ClockSync(theirs));
    let mut s = Station::new();
    let now = s.now;
    let out = sent(s.react_with(&request, 1, now, NOW_MS, no_states));
    let ours = Cp56Time2a::from_unix_ms(NOW_MS).expect("in the century");
    assert_eq!(
        out,
        [Asdu::single(
            Cause::ACTIVATION_CON,
            CA,
            0,
            Element::ClockSync(ours)
        )]
    );
    assert!(!out[0].negative);
    assert_eq!(out[0].type_id, TypeId::CCsNa1);
    match out[0].objects[0].element {
        Element::ClockSync(t) => assert_eq!(t.to_unix_ms(), NOW_MS),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn clock_sync_with_a_node_clock_outside_the_century_answers_their_time_invalid() {
    let theirs = Cp56Time2a::new(2030, 1, 2, 3, 4, 5_000).expect("valid");
    let request = Asdu::single(Cause::ACTIVATION, CA, 0, Element::ClockSync(theirs));
    let mut s = Station::new();
    let now = s.now;
    let out = sent(s.react_with(&request, 1, now, 0, no_states));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cause, Cause::ACTIVATION_CON);
    assert_eq!(
        out[0].objects[0].element,
        Element::ClockSync(theirs.with_invalid(true))
    );
}

// ---------------------------------------------------------------- negative confirmations

#[test]
fn a_wrong_common_address_is_refused_with_cot_46() {
    let mut s = Station::new();
    for request in [
        gi(48, Cause::ACTIVATION, 0, QOI_STATION),
        Asdu {
            common_address: 48,
            ..counter_interrogation(5)
        },
        Asdu {
            common_address: 1,
            ..single_command(SC, true, false)
        },
        // The broadcast address is for station-wide commands only.
        Asdu {
            common_address: BROADCAST,
            ..single_command(SC, true, false)
        },
    ] {
        assert_refused(
            s.command(&request, 1),
            &request,
            Cause::UNKNOWN_COMMON_ADDRESS,
        );
    }
}

#[test]
fn an_interrogation_with_another_cause_than_activation_is_refused_with_cot_45() {
    let mut s = Station::new();
    for cause in [Cause::DEACTIVATION, Cause::SPONTANEOUS] {
        let request = gi(CA, cause, 0, QOI_STATION);
        assert_refused(s.command(&request, 1), &request, Cause::UNKNOWN_CAUSE);
    }
}

#[test]
fn an_interrogation_at_an_ioa_other_than_zero_is_refused_with_cot_47() {
    let request = gi(CA, Cause::ACTIVATION, 1, QOI_STATION);
    assert_refused(
        Station::new().command(&request, 1),
        &request,
        Cause::UNKNOWN_IOA,
    );
}

#[test]
fn a_monitor_direction_type_from_the_master_is_refused_with_cot_44() {
    let request = Asdu::single(
        Cause::ACTIVATION,
        CA,
        SP,
        Element::SinglePoint {
            value: true,
            quality: Quality::GOOD,
            time: None,
        },
    );
    assert_eq!(request.type_id, TypeId::MSpNa1);
    assert_refused(
        Station::new().command(&request, 1),
        &request,
        Cause::UNKNOWN_TYPE,
    );
}

#[test]
fn a_command_to_an_unknown_ioa_is_refused_with_cot_47() {
    let request = single_command(UNMAPPED, true, false);
    assert_refused(
        Station::new().command(&request, 1),
        &request,
        Cause::UNKNOWN_IOA,
    );
}

#[test]
fn a_command_to_a_monitored_points_ioa_is_refused_with_cot_47() {
    let mut s = Station::new();
    for ioa in [SP, DP, ME, IT] {
        let request = single_command(ioa, true, false);
        assert_refused(s.command(&request, 1), &request, Cause::UNKNOWN_IOA);
    }
}

#[test]
fn a_command_of_another_kind_than_the_points_is_refused_with_cot_47() {
    let mut s = Station::new();
    let requests = [
        single_command(DC, true, false),
        single_command(SE, true, false),
        double_command(SC, DoubleCommandState::On, false),
        setpoint_float(SC, 1.0, false),
        setpoint_float(DC, 1.0, false),
    ];
    for request in requests {
        assert_refused(s.command(&request, 1), &request, Cause::UNKNOWN_IOA);
    }
}

#[test]
fn a_double_command_in_a_not_permitted_state_is_refused_with_a_negative_actcon() {
    let mut s = Station::new();
    for state in [
        DoubleCommandState::NotPermitted0,
        DoubleCommandState::NotPermitted3,
    ] {
        for select in [false, true] {
            let request = double_command(DC, state, select);
            assert_refused(s.command(&request, 1), &request, Cause::ACTIVATION_CON);
        }
    }
}

#[test]
fn a_command_under_test_in_sequence_or_with_two_objects_is_refused() {
    let mut s = Station::new();
    let plain = single_command(SC, true, false);
    let test = Asdu {
        test: true,
        ..plain.clone()
    };
    let sq = Asdu {
        sq: true,
        ..plain.clone()
    };
    let mut two = plain.clone();
    two.objects.push(InfoObject {
        ioa: SC + 1,
        ..plain.objects[0]
    });
    for request in [test, sq, two] {
        assert_refused(s.command(&request, 1), &request, Cause::ACTIVATION_CON);
    }
    // None of them left a trace: the plain command still executes directly.
    executed(s.command(&plain, 1));
}

#[test]
fn a_command_with_another_cause_is_refused_with_cot_45() {
    let request = Asdu {
        cause: Cause::SPONTANEOUS,
        ..single_command(SC, true, false)
    };
    assert_refused(
        Station::new().command(&request, 1),
        &request,
        Cause::UNKNOWN_CAUSE,
    );
}

// ---------------------------------------------------------------- execute and select

#[test]
fn a_direct_execute_without_select_is_handed_back_to_execute() {
    let mut s = Station::new();
    let request = single_command(SC, true, false);
    assert_eq!(
        executed(s.command(&request, 1)),
        Execute {
            request: request.clone(),
            point: "r.sc".to_string(),
            value: Value::Single(true),
            selected: false,
        }
    );
    let off = single_command(SC, false, false);
    assert_eq!(executed(s.command(&off, 1)).value, Value::Single(false));

    for (state, value) in [(DoubleCommandState::On, 2), (DoubleCommandState::Off, 1)] {
        let request = double_command(DC, state, false);
        let e = executed(s.command(&request, 1));
        assert_eq!(e.point, "r.dc");
        assert_eq!(e.value, Value::Double(value));
        assert_eq!(e.request, request);
    }
}

#[test]
fn a_time_tagged_command_executes_as_its_plain_twin() {
    let time = Cp56Time2a::from_unix_ms(NOW_MS).expect("in the century");
    let request = Asdu::single(
        Cause::ACTIVATION,
        CA,
        SC,
        Element::SingleCommand {
            on: true,
            qualifier: qoc(false),
            time: Some(time),
        },
    );
    assert_eq!(request.type_id, TypeId::CScTa1);
    let e = executed(Station::new().command(&request, 1));
    assert_eq!((e.point.as_str(), e.value), ("r.sc", Value::Single(true)));
}

#[test]
fn select_is_confirmed_and_the_same_execute_from_the_same_connection_runs() {
    let mut s = Station::new();
    let select = single_command(SC, true, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);

    let execute = single_command(SC, true, false);
    assert_eq!(
        executed(s.command(&execute, 1)),
        Execute {
            request: execute.clone(),
            point: "r.sc".to_string(),
            value: Value::Single(true),
            selected: true,
        }
    );
}

#[test]
fn select_before_operate_of_a_double_command() {
    let mut s = Station::new();
    let select = double_command(DC, DoubleCommandState::On, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    let e = executed(s.command(&double_command(DC, DoubleCommandState::On, false), 1));
    assert_eq!((e.point.as_str(), e.value), ("r.dc", Value::Double(2)));
}

#[test]
fn an_execute_of_another_value_than_selected_is_refused() {
    let mut s = Station::new();
    let select = single_command(SC, true, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    let other = single_command(SC, false, false);
    assert_refused(s.command(&other, 1), &other, Cause::ACTIVATION_CON);

    let select = double_command(DC, DoubleCommandState::On, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    let other = double_command(DC, DoubleCommandState::Off, false);
    assert_refused(s.command(&other, 1), &other, Cause::ACTIVATION_CON);
}

#[test]
fn an_execute_after_the_select_timed_out_is_refused() {
    let mut s = Station::new();
    let t0 = s.now;
    let select = single_command(SC, true, true);
    assert_confirmed(s.at(&select, 1, t0), &select, Cause::ACTIVATION_CON);
    let execute = single_command(SC, true, false);
    assert_refused(
        s.at(&execute, 1, t0 + TIMEOUT),
        &execute,
        Cause::ACTIVATION_CON,
    );
}

#[test]
fn an_execute_just_before_the_select_times_out_runs() {
    let mut s = Station::new();
    let t0 = s.now;
    let select = single_command(SC, true, true);
    assert_confirmed(s.at(&select, 1, t0), &select, Cause::ACTIVATION_CON);
    let execute = single_command(SC, true, false);
    let at = t0 + TIMEOUT - Duration::from_millis(1);
    executed(s.at(&execute, 1, at));
}

#[test]
fn another_connection_may_neither_select_nor_execute_a_selected_point() {
    let mut s = Station::new();
    let select = single_command(SC, true, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);

    assert_refused(s.command(&select, 2), &select, Cause::ACTIVATION_CON);
    let execute = single_command(SC, true, false);
    assert_refused(s.command(&execute, 2), &execute, Cause::ACTIVATION_CON);

    // The holder's select is untouched by the foreign attempts.
    let e = executed(s.command(&execute, 1));
    assert_eq!(e.value, Value::Single(true));
}

#[test]
fn another_connection_may_select_once_the_select_has_timed_out() {
    let mut s = Station::new();
    let t0 = s.now;
    let select = single_command(SC, true, true);
    assert_confirmed(s.at(&select, 1, t0), &select, Cause::ACTIVATION_CON);
    assert_confirmed(
        s.at(&select, 2, t0 + TIMEOUT),
        &select,
        Cause::ACTIVATION_CON,
    );
}

#[test]
fn a_deactivation_of_ones_own_select_is_confirmed_and_of_nobodys_refused() {
    let mut s = Station::new();
    let select = single_command(SC, true, true);
    let deselect = deactivation(&select);

    // Nobody holds a select.
    assert_refused(s.command(&deselect, 1), &deselect, Cause::DEACTIVATION_CON);

    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    // Somebody else's.
    assert_refused(s.command(&deselect, 2), &deselect, Cause::DEACTIVATION_CON);
    // One's own.
    assert_confirmed(s.command(&deselect, 1), &deselect, Cause::DEACTIVATION_CON);
    assert_eq!(
        sent(s.command(&deselect, 1))[0].cause,
        Cause::DEACTIVATION_CON
    );
    // Gone: another connection may select now.
    assert_confirmed(s.command(&select, 2), &select, Cause::ACTIVATION_CON);
}

#[test]
fn forget_frees_a_closed_connections_selects() {
    let mut s = Station::new();
    let select = single_command(SC, true, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    assert_refused(s.command(&select, 2), &select, Cause::ACTIVATION_CON);

    s.selects.forget(1);
    assert_confirmed(s.command(&select, 2), &select, Cause::ACTIVATION_CON);
    let e = executed(s.command(&single_command(SC, true, false), 2));
    assert_eq!(e.point, "r.sc");
}

#[test]
fn selects_of_different_points_are_independent() {
    let mut s = Station::new();
    let sc = single_command(SC, true, true);
    let dc = double_command(DC, DoubleCommandState::Off, true);
    assert_confirmed(s.command(&sc, 1), &sc, Cause::ACTIVATION_CON);
    assert_confirmed(s.command(&dc, 2), &dc, Cause::ACTIVATION_CON);
    let e = executed(s.command(&double_command(DC, DoubleCommandState::Off, false), 2));
    assert_eq!(e.value, Value::Double(1));
    let e = executed(s.command(&single_command(SC, true, false), 1));
    assert_eq!(e.value, Value::Single(true));
}

// ---------------------------------------------------------------- the selects table itself

#[test]
fn the_selects_table_names_why_it_refuses() {
    let t0 = Instant::now();
    let mut selects = Selects::default();
    let on = Value::Single(true);
    let off = Value::Single(false);

    assert_eq!(selects.select(SC, 1, on, t0, TIMEOUT), Ok(()));
    assert_eq!(
        selects.select(SC, 2, on, t0, TIMEOUT),
        Err(SelectRefusal::Foreign)
    );
    assert_eq!(selects.execute(SC, 2, on, t0), Err(SelectRefusal::Foreign));
    assert_eq!(
        selects.execute(SC, 1, off, t0),
        Err(SelectRefusal::Different)
    );

    assert_eq!(selects.select(SC, 1, on, t0, TIMEOUT), Ok(()));
    assert_eq!(
        selects.execute(SC, 1, on, t0 + TIMEOUT),
        Err(SelectRefusal::Expired)
    );

    // Reselecting one's own point renews the select.
    assert_eq!(selects.select(SC, 1, on, t0, TIMEOUT), Ok(()));
    assert_eq!(selects.select(SC, 1, off, t0, TIMEOUT), Ok(()));
    assert_eq!(selects.execute(SC, 1, off, t0), Ok(()));

    // Without a select: direct execute.
    assert_eq!(selects.execute(SC, 2, on, t0), Ok(()));
    assert!(!selects.deselect(SC, 1, t0));
    // An expired select cannot be deactivated: it is already gone.
    assert_eq!(selects.select(SC, 1, on, t0, TIMEOUT), Ok(()));
    assert!(!selects.deselect(SC, 1, t0 + TIMEOUT));
    assert_eq!(selects.select(SC, 1, on, t0, TIMEOUT), Ok(()));
    assert!(selects.deselect(SC, 1, t0));
}

// ---------------------------------------------------------------- set points

#[test]
fn set_points_of_each_encoding_execute_as_measured_values() {
    let mut s = Station::new();
    let cases = [
        (
            Element::SetpointFloat {
                value: 12.5,
                qualifier: qos(false),
                time: None,
            },
            TypeId::CSeNc1,
            12.5,
        ),
        (
            Element::SetpointScaled {
                value: -300,
                qualifier: qos(false),
                time: None,
            },
            TypeId::CSeNb1,
            -300.0,
        ),
        (
            Element::SetpointNormalized {
                value: 16384,
                qualifier: qos(false),
                time: None,
            },
            TypeId::CSeNa1,
            0.5,
        ),
    ];
    for (element, type_id, expected) in cases {
        let request = Asdu::single(Cause::ACTIVATION, CA, SE, element);
        assert_eq!(request.type_id, type_id);
        assert_eq!(
            executed(s.command(&request, 1)),
            Execute {
                request: request.clone(),
                point: "r.se".to_string(),
                value: Value::Measured(expected),
                selected: false,
            },
            "{type_id:?}"
        );
    }
}

#[test]
fn a_set_point_selected_then_executed_with_the_same_value_runs() {
    let mut s = Station::new();
    let select = setpoint_float(SE, 7.25, true);
    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    let other = setpoint_float(SE, 7.5, false);
    assert_refused(s.command(&other, 1), &other, Cause::ACTIVATION_CON);

    assert_confirmed(s.command(&select, 1), &select, Cause::ACTIVATION_CON);
    let e = executed(s.command(&setpoint_float(SE, 7.25, false), 1));
    assert_eq!((e.point.as_str(), e.value), ("r.se", Value::Measured(7.25)));
}
