//! IEC 104 acquisition: the RTU is a controlled station and its owner the controlling
//! station, on the same leases as Modbus. `points` maps the device's addresses to fepha
//! points (no I/O), `task` runs one RTU (ownership, rounds over the endpoints, standby
//! probes, a lost link), `session` one started connection (interrogations, acknowledge after
//! commit, commands), `interrogated` the events an interrogation showed, held for the
//! device's own.

mod interrogated;
pub(crate) mod points;
mod session;
pub(crate) mod task;
