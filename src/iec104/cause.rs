//! Cause of transmission (COT), the six low bits of the COT octet.

use std::fmt;

/// A cause of transmission, 0..=63. The standard values are associated constants; other
/// values (0, the reserved 13..=19, 42..=43, 48..=63) decode too, because what to do
/// with them is the application's business (usually COT 45, unknown cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cause(u8);

impl Cause {
    pub const PERIODIC: Cause = Cause(1);
    pub const BACKGROUND: Cause = Cause(2);
    pub const SPONTANEOUS: Cause = Cause(3);
    pub const INITIALIZED: Cause = Cause(4);
    pub const REQUEST: Cause = Cause(5);
    pub const ACTIVATION: Cause = Cause(6);
    pub const ACTIVATION_CON: Cause = Cause(7);
    pub const DEACTIVATION: Cause = Cause(8);
    pub const DEACTIVATION_CON: Cause = Cause(9);
    pub const ACTIVATION_TERMINATION: Cause = Cause(10);
    pub const RETURN_INFO_REMOTE: Cause = Cause(11);
    pub const RETURN_INFO_LOCAL: Cause = Cause(12);
    pub const INTERROGATED_BY_STATION: Cause = Cause(20);
    /// Interrogated by group 1; groups 2..=16 follow (see [`Cause::interrogated_by_group`]).
    pub const INTERROGATED_BY_GROUP_1: Cause = Cause(21);
    pub const REQUESTED_BY_GENERAL_COUNTER: Cause = Cause(37);
    /// Counter group 1; groups 2..=4 follow (see [`Cause::requested_by_counter_group`]).
    pub const REQUESTED_BY_COUNTER_GROUP_1: Cause = Cause(38);
    pub const UNKNOWN_TYPE: Cause = Cause(44);
    pub const UNKNOWN_CAUSE: Cause = Cause(45);
    pub const UNKNOWN_COMMON_ADDRESS: Cause = Cause(46);
    pub const UNKNOWN_IOA: Cause = Cause(47);

    pub const MAX: u8 = 63;

    /// `None` above 63, which does not fit the six bits.
    pub const fn new(value: u8) -> Option<Cause> {
        if value <= Self::MAX {
            Some(Cause(value))
        } else {
            None
        }
    }

    pub(super) const fn from_bits(bits: u8) -> Cause {
        Cause(bits & Self::MAX)
    }

    pub const fn value(self) -> u8 {
        self.0
    }

    /// The answer cause for group interrogation `group` (1..=16), as QOI 21..=36 asks.
    pub const fn interrogated_by_group(group: u8) -> Option<Cause> {
        if matches!(group, 1..=16) {
            Some(Cause(20 + group))
        } else {
            None
        }
    }

    /// The answer cause for counter interrogation of `group` (1..=4).
    pub const fn requested_by_counter_group(group: u8) -> Option<Cause> {
        if matches!(group, 1..=4) {
            Some(Cause(37 + group))
        } else {
            None
        }
    }

    /// The standard's name for the cause, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "periodic",
            2 => "background scan",
            3 => "spontaneous",
            4 => "initialized",
            5 => "request",
            6 => "activation",
            7 => "activation confirmation",
            8 => "deactivation",
            9 => "deactivation confirmation",
            10 => "activation termination",
            11 => "return information caused by a remote command",
            12 => "return information caused by a local command",
            20 => "interrogated by station interrogation",
            21..=36 => "interrogated by group interrogation",
            37 => "requested by general counter request",
            38..=41 => "requested by group counter request",
            44 => "unknown type identification",
            45 => "unknown cause of transmission",
            46 => "unknown common address of ASDU",
            47 => "unknown information object address",
            _ => return None,
        })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}
