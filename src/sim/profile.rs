//! The simulated device's profile: which unit ids it answers, how big its four Modbus tables
//! are and what they hold at start, and which values change on their own over time.
//!
//! ```toml
//! unit_ids = [1]
//! seed = 7                       # optional; seeds every random_walk (default 0)
//!
//! [coils]                        # also [discrete_inputs]
//! count = 16
//! values = [true, false]         # optional; from address 0, the rest start false
//!
//! [input_registers]              # also [holding_registers]
//! count = 16
//! values = [500]                 # optional; from address 0, the rest start 0
//!
//! [[schedule]]
//! kind = "toggle"                # toggle | ramp | random_walk
//! table = "discrete_inputs"      # toggle: coils | discrete_inputs; the others: *_registers
//! address = 0
//! every_ms = 2000
//! # ramp and random_walk also take: min, max, step (and random_walk an optional seed)
//! ```
//!
//! Parsing is strict (`deny_unknown_fields`), and every check names the key it refused, so a
//! typo in a test profile fails loudly instead of silently serving zeros.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Modbus addresses are 16 bits wide, so a table has at most 65536 entries.
pub(crate) const MAX_TABLE_SIZE: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("cannot read the profile {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("profile {}: `{key}`: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// A validated profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    /// The unit ids (slave ids) this device answers; any other gets exception 0x0B.
    pub unit_ids: Vec<u8>,
    /// The default seed of every `random_walk` schedule (each one mixes in its own index).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub coils: Bits,
    #[serde(default)]
    pub discrete_inputs: Bits,
    #[serde(default)]
    pub holding_registers: Registers,
    #[serde(default)]
    pub input_registers: Registers,
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<Schedule>,
    /// How long the device takes to confirm a write, as a breaker confirms once it has
    /// moved; 0 (the default) confirms at once.
    #[serde(default)]
    pub write_delay_ms: u64,
}

/// A table of bits (coils or discrete inputs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bits {
    /// How many addresses exist (0..count); others answer exception 2.
    pub count: u32,
    /// Initial values from address 0; the rest start false.
    #[serde(default)]
    pub values: Vec<bool>,
}

/// A table of 16-bit registers (holding or input).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registers {
    pub count: u32,
    /// Initial values from address 0; the rest start 0.
    #[serde(default)]
    pub values: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::DiscreteInputs => "discrete_inputs",
            Table::HoldingRegisters => "holding_registers",
            Table::InputRegisters => "input_registers",
        }
    }

    fn is_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A bit flips every `every_ms`.
    Toggle,
    /// A register goes up by `step` every `every_ms`; past `max` it starts again at `min`.
    Ramp,
    /// A register moves by +step or -step every `every_ms`, staying within min..=max.
    RandomWalk,
}

/// One value that changes on its own.
///
/// One flat struct rather than an enum tagged by `kind`: serde's tagged enums buffer the
/// table before deserializing it, which loses the line and key in toml's error messages.
/// The fields that only some kinds use are checked in [`Profile::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Schedule {
    pub kind: Kind,
    pub table: Table,
    pub address: u16,
    pub every_ms: u64,
    pub min: Option<u16>,
    pub max: Option<u16>,
    pub step: Option<u16>,
    /// random_walk only: overrides the profile's seed for this schedule.
    pub seed: Option<u64>,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    /// Parses and validates; `path` is only used in error messages.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        profile
            .validate()
            .map_err(|(key, reason)| ProfileError::BadValue {
                path: path.to_owned(),
                key,
                reason,
            })?;
        Ok(profile)
    }

    /// The size of a table.
    pub(crate) fn count(&self, table: Table) -> u32 {
        match table {
            Table::Coils => self.coils.count,
            Table::DiscreteInputs => self.discrete_inputs.count,
            Table::HoldingRegisters => self.holding_registers.count,
            Table::InputRegisters => self.input_registers.count,
        }
    }

    /// The seed a random_walk schedule at `index` uses.
    pub(crate) fn seed_of(&self, index: usize, schedule: &Schedule) -> u64 {
        schedule
            .seed
            .unwrap_or_else(|| self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((key.to_owned(), reason));
        if self.unit_ids.is_empty() {
            return bad("unit_ids", "must name at least one unit id".into());
        }
        for (name, count, values) in [
            ("coils", self.coils.count, self.coils.values.len()),
            (
                "discrete_inputs",
                self.discrete_inputs.count,
                self.discrete_inputs.values.len(),
            ),
            (
                "holding_registers",
                self.holding_registers.count,
                self.holding_registers.values.len(),
            ),
            (
                "input_registers",
                self.input_registers.count,
                self.input_registers.values.len(),
            ),
        ] {
            if count > MAX_TABLE_SIZE {
                return bad(
                    &format!("{name}.count"),
                    format!("{count} is more than the {MAX_TABLE_SIZE} addresses Modbus has"),
                );
            }
            if values > count as usize {
                return bad(
                    &format!("{name}.values"),
                    format!("{values} values for a table of {count}"),
                );
            }
        }
        for (i, s) in self.schedules.iter().enumerate() {
            let key = |field: &str| format!("schedule[{i}].{field}");
            if s.every_ms == 0 {
                return bad(&key("every_ms"), "must be at least 1".into());
            }
            let count = self.count(s.table);
            if u32::from(s.address) >= count {
                return bad(
                    &key("address"),
                    format!(
                        "{} is outside {} (count {count})",
                        s.address,
                        s.table.name()
                    ),
                );
            }
            match s.kind {
                Kind::Toggle => {
                    if !s.table.is_bits() {
                        return bad(
                            &key("table"),
                            "a toggle needs coils or discrete_inputs".into(),
                        );
                    }
                    for (field, present) in [
                        ("min", s.min.is_some()),
                        ("max", s.max.is_some()),
                        ("step", s.step.is_some()),
                        ("seed", s.seed.is_some()),
                    ] {
                        if present {
                            return bad(&key(field), "a toggle takes no such key".into());
                        }
                    }
                }
                Kind::Ramp | Kind::RandomWalk => {
                    if s.table.is_bits() {
                        return bad(
                            &key("table"),
                            "ramp and random_walk need holding_registers or input_registers".into(),
                        );
                    }
                    let (Some(min), Some(max), Some(step)) = (s.min, s.max, s.step) else {
                        let missing = [("min", s.min), ("max", s.max), ("step", s.step)]
                            .into_iter()
                            .find(|(_, v)| v.is_none())
                            .map_or("min", |(f, _)| f);
                        return bad(
                            &key(missing),
                            "missing; ramp and random_walk need min, max and step".into(),
                        );
                    };
                    if max < min {
                        return bad(&key("max"), format!("{max} is below min ({min})"));
                    }
                    if step == 0 {
                        return bad(&key("step"), "must be at least 1".into());
                    }
                    if s.kind == Kind::Ramp && s.seed.is_some() {
                        return bad(&key("seed"), "a ramp takes no such key".into());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn example_profile_is_valid() {
        let p = parse(include_str!("../../examples/sim-profile.toml")).expect("example parses");
        assert_eq!(p.unit_ids, [1]);
        assert_eq!(p.coils.count, 16);
        assert_eq!(p.discrete_inputs.count, 8);
        assert_eq!(p.input_registers.count, 16);
        assert_eq!(p.holding_registers.count, 32);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("unit_ids = [1]\ncolis = 3", "colis"),
            ("unit_ids = []", "unit_ids"),
            ("unit_ids = [300]", "unit_ids"),
            (
                "unit_ids = [1]\n[coils]\ncount = 2\nvalues = [true, true, true]",
                "coils.values",
            ),
            ("unit_ids = [1]\n[coils]\ncount = 70000", "coils.count"),
            (
                "unit_ids = [1]\n[input_registers]\ncount = 2\n[[schedule]]\nkind = \"ramp\"\ntable = \"input_registers\"\naddress = 0\nevery_ms = 10\nmin = 0\nstep = 1",
                "schedule[0].max",
            ),
            (
                "unit_ids = [1]\n[input_registers]\ncount = 2\n[[schedule]]\nkind = \"ramp\"\ntable = \"input_registers\"\naddress = 2\nevery_ms = 10\nmin = 0\nmax = 1\nstep = 1",
                "schedule[0].address",
            ),
            (
                "unit_ids = [1]\n[coils]\ncount = 2\n[[schedule]]\nkind = \"toggle\"\ntable = \"coils\"\naddress = 0\nevery_ms = 10\nperiod = 3",
                "period",
            ),
            (
                "unit_ids = [1]\n[coils]\ncount = 2\n[[schedule]]\nkind = \"blink\"\ntable = \"coils\"\naddress = 0\nevery_ms = 10",
                "kind",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(key), "{text:?}: {e:?} does not name {key}");
        }
    }
}
