//! The load that never stops while the nemesis works: the Modbus device's sequence registers
//! change one after another, commands go to the setpoint through the master at random, and
//! site configurations are applied through random members. Each records what it did, for
//! the checkers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fepha_cluster_tests::master::LinkState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::history::{History, now_ms};
use crate::world::{SEQ_POINTS, SETPOINT_IOA, World};

/// One sequence register changes every this often, so each holds its value for
/// `SEQ_POINTS` times as long: 8 polls of 100 ms.
pub const TOGGLE_MS: u64 = 200;

/// A value written into sequence register `point`: the write began at `begun_ms` and was
/// done at `at_ms`, so the device holds it from `at_ms` until the next write of the register
/// begins.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Toggle {
    pub point: u16,
    pub value: u16,
    pub begun_ms: u64,
    pub at_ms: u64,
}

/// A command the master sent: the setpoint's value (unique per command) and whether every
/// confirmation was positive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    pub value: u16,
    pub confirmed: bool,
}

#[derive(Default)]
pub struct Record {
    pub toggles: Mutex<Vec<Toggle>>,
    pub commands: Mutex<Vec<Sent>>,
    pub config_failures: Mutex<u64>,
}

fn push<T>(m: &Mutex<Vec<T>>, t: T) {
    m.lock().unwrap_or_else(|e| e.into_inner()).push(t);
}

pub fn toggler(w: &World, rec: &Record, stop: &AtomicBool) {
    let mut n: u16 = 0;
    while !stop.load(Ordering::SeqCst) {
        n = n.wrapping_add(1).max(1);
        let point = n % SEQ_POINTS;
        let begun_ms = now_ms();
        match w.device.try_set("holding", point, &[n]) {
            Ok(()) => push(
                &rec.toggles,
                Toggle {
                    point,
                    value: n,
                    begun_ms,
                    at_ms: now_ms(),
                },
            ),
            Err(e) => eprintln!("the toggler cannot set the device: {e}"),
        }
        std::thread::sleep(Duration::from_millis(TOGGLE_MS));
    }
}

/// A command now and then on a link the master has started; each with a value never sent
/// before, so the device's record shows exactly how often each ran.
pub fn commander(w: &World, rec: &Record, stop: &AtomicBool, seed: u64, h: &History) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0de);
    let mut value: u16 = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
        let open =
            (0..w.master.conn_count()).find(|&i| matches!(w.master.state(i), Ok(LinkState::Open)));
        let Some(conn) = open else { continue };
        // Set points are i16 on the wire: past 32 767 values would repeat, and a repeat
        // would look like a command run twice. At one command a second that is 9 hours.
        if value == i16::MAX as u16 {
            return;
        }
        value += 1;
        let confirmed = w
            .master
            .command(conn, SETPOINT_IOA, "C_SE_NB_1", value, false)
            .unwrap_or(false);
        h.record(
            "commands",
            "sent",
            json!({"value": value, "conn": conn, "confirmed": confirmed}),
        );
        push(&rec.commands, Sent { value, confirmed });
    }
}

/// A new site version every few seconds through a random member; what `config apply` says
/// it committed is recorded in the world.
pub fn configs(w: &World, rec: &Record, stop: &AtomicBool, seed: u64, h: &History) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0f1);
    let mut n = 1;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.random_range(3000..10_000)));
        let members = w.members();
        let via = members[rng.random_range(0..members.len())];
        // A stopped node would hold the call for its whole timeout; that is fine here.
        match w.c.apply(via, &w.site(n), "5s") {
            Ok(a) => {
                h.record(
                    "config",
                    "committed",
                    json!({"version": a.version, "sha256": a.sha256, "via": w.c.name(via)}),
                );
                w.committed_push(a.version, a.sha256);
            }
            Err(e) => {
                h.record(
                    "config",
                    "failed",
                    json!({"via": w.c.name(via), "error": e}),
                );
                *rec.config_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) += 1;
            }
        }
        n += 1;
    }
}
