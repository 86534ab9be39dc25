//! A simulated IEC 60870-5-104 controlled station (outstation), to test and demonstrate
//! fepha's 104 acquisition against (`fepha sim iec104 --listen ADDR --profile FILE [--log
//! FILE]`).
//!
//! It serves the points of a [`Profile`] (see [`profile`] for the format, and
//! `examples/sim-iec104-profile.toml`), changes some on a schedule, answers interrogations,
//! clock syncs and commands as the profile says, and logs every frame it sends and every
//! acknowledgement it gets, so that tests can prove what reached which master when. It is
//! built on the crate's own codec and link state machine ([`crate::iec104::link::Link`], as
//! the controlled station); there is no second codec here.
//!
//! # Behaviour
//!
//! - **One redundancy group**, as a real outstation configured that way: any number of
//!   masters may connect, at most one connection is active (started). A STARTDT on another
//!   connection makes that one active; the old one stays open but gets no more I frames,
//!   and what its master sends in I frames is logged and not answered.
//! - **Events.** Every spontaneous change (COT 3; sent with the time-tagged type when the
//!   point's type has a time tag, e.g. M_SP_TB_1) gets the next change number (1, 2, 3, ...)
//!   and stays queued until a master acknowledges the I frame that carried it. The next
//!   STARTDT, on the same connection or another, sends every unacknowledged change again,
//!   oldest first, before new ones (with its original time tag). While nobody is started,
//!   changes just queue; beyond the profile's `queue` the oldest is dropped.
//! - **Interrogation.** C_IC_NA_1 act with QOI 20: ACTCON, every point but the counters
//!   with COT 20 and without time tag (M_SP_NA_1 for an M_SP_TB_1 point), ACTTERM. QOI
//!   21..=36 (groups): ACTCON and ACTTERM, no point is in a group. C_CI_NA_1 (general
//!   request, read): ACTCON, every counter with COT 37, ACTTERM. C_CS_NA_1: ACTCON (the
//!   clock is not set). The broadcast address 65535 is accepted for these three.
//! - **Commands** per `[[command]]`: a select (S/E = 1) gets an ACTCON, an execute an ACTCON
//!   and, `term_delay_ms` later, its feedback change (if `feedback_ioa`) and an ACTTERM; a
//!   direct execute needs no select. `answer = "negative"` confirms negatively, `"silent"`
//!   never answers. A deactivation gets its DEACTCON. Refusals mirror the ASDU with P/N set:
//!   COT 47 for an IOA without a `[[command]]`, COT 44 for a type the IOA does not take or
//!   the codec does not know (mirrored raw), COT 45 for a cause other than act/deact, COT 46
//!   for another common address, and ACTCON negative for a state the standard does not
//!   permit (DCS/RCS 0 or 3).
//! - Nothing a master sends panics the sim: bytes that are no APDU, an ASDU that does not
//!   decode, or a protocol error close that connection, with a `closed` log line.
//!
//! # The log
//!
//! With `--log FILE`, one JSON object per line, appended; each line about a frame is written
//! before the frame goes to the socket. Every line has `time_ms` (Unix ms) and `event`:
//!
//! | `event`    | fields |
//! |------------|--------|
//! | `accepted` | `conn` (1, 2, ... per sim), `peer` (ip:port) |
//! | `closed`   | `conn`, `peer`, `reason` |
//! | `u`        | `conn`, `function`: a U frame received (`STARTDT_ACT`, `STOPDT_ACT`, `TESTFR_ACT`, `TESTFR_CON`, ...) |
//! | `started`  | `conn` (now active), `previous` (the other connection that was still started and gets no more data, or null), `resent` (unacknowledged changes sent again first) |
//! | `stopped`  | `conn`: STOPDT confirmed |
//! | `sent`     | `conn`, `ns`, `type` (mnemonic), `cause`, `negative`, `objects`: [{`ioa`, `value`, `change` (if a spontaneous change), `time_ms` (if time-tagged)}] |
//! | `ack`      | `conn`, `frames` (newly acknowledged I frames), `changes` (the change numbers they carried), `queued` (changes still unacknowledged) |
//! | `received` | `conn`, `type`, `cause`, `ca`, `ioa`, `value`, `select` (S/E of a command, else null), `answer`: `positive`, `negative`, `silent`, `deactivated`, `not_permitted`, `unknown_ioa`, `unknown_type`, `unknown_cause`, `unknown_ca` |
//! | `inactive` | `conn`, `frame` (`I`, `S` or `U`), `detail` (the I frame's type or the U function): any frame received on a connection that is not the active one |
//! | `change`   | `change`, `ioa`, `value`, `source` (`schedule` or `command`) |
//! | `dropped`  | `change`, `ioa`, `dropped_total`: the queue was full |
//!
//! Values: a bool for single points and commands, 0..=3 for double points and double/step
//! commands, a number otherwise (a normalized value as a fraction); the QOI or QCC for
//! interrogations and the time in Unix ms for a clock sync.
//!
//! # In-process
//!
//! Used in-process too (by `fepha demo`):
//! ```text
//! let sim = sim::iec104::bind(([127, 0, 0, 1], 0).into(), &profile, None).await?;
//! let addr = sim.local_addr();
//! tokio::spawn(sim.serve(std::future::pending::<()>()));
//! ```

mod connection;
mod log;
mod points;
pub(crate) mod profile;
mod queue;
mod station;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::iec104::LinkParams;
use log::{EventLog, LogError};
pub(crate) use profile::{Profile, ProfileError};
use station::{Shared, Station, lock};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A station bound to its port, not yet serving.
#[derive(Debug)]
pub(crate) struct Sim {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Shared,
    profile: Profile,
}

/// Opens the log (if any) and binds `listen` (port 0 picks a free port; see
/// [`Sim::local_addr`]). Connections are accepted by the kernel from here on and served
/// once [`Sim::serve`] runs.
pub(crate) async fn bind(
    listen: SocketAddr,
    profile: &Profile,
    log: Option<&Path>,
) -> Result<Sim, SimError> {
    let log = log.map(EventLog::open).transpose()?;
    let bind_err = |source| SimError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    Ok(Sim {
        listener,
        local_addr,
        shared: Arc::new(Mutex::new(Station::new(profile, log))),
        profile: profile.clone(),
    })
}

impl Sim {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves masters and runs the schedules until `shutdown` resolves, then returns its
    /// output; open connections are closed. Nothing else ends it: a failed accept (e.g. out
    /// of file descriptors) is retried.
    pub(crate) async fn serve<F: Future>(self, shutdown: F) -> F::Output {
        let Sim {
            listener,
            local_addr,
            shared,
            profile,
        } = self;
        let runner = station::run(shared.clone(), profile.schedules.clone());
        let accept = accept(listener, local_addr, shared, profile.params);
        tokio::select! {
            out = shutdown => out,
            never = accept => match never {},
            never = runner => match never {},
        }
    }
}

/// Accepts connections forever; each runs as a task of the returned future, so dropping it
/// closes them all.
async fn accept(
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Shared,
    params: LinkParams,
) -> Infallible {
    let mut tasks = JoinSet::new();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("cannot accept a connection on {local_addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let conn = lock(&shared).accept(peer);
        tracing::info!(
            "{peer} connected to the simulated 104 station on {local_addr} (connection {conn})"
        );
        let shared = shared.clone();
        tasks.spawn(async move {
            let why = connection::run(shared.clone(), socket, conn, params).await;
            tracing::info!("connection {conn} from {peer} closed: {why}");
            lock(&shared).close(conn, peer, &why);
        });
    }
}

/// `fepha sim iec104`: serves until SIGTERM or SIGINT.
pub(crate) async fn run_cli(
    listen: SocketAddr,
    profile: &Path,
    log: Option<&Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let profile = Profile::load(profile)?;
    // Install the signal handlers (on the future's first poll) before the port is bound:
    // a test that sees the port open may send SIGTERM at once, and must not find the default
    // action still in place.
    let mut signal = Box::pin(crate::shutdown::signal());
    if let std::task::Poll::Ready(early) = futures::poll!(&mut signal) {
        let name = early.context("cannot install the signal handlers")?;
        tracing::info!("{name} received before starting; not serving");
        return Ok(());
    }
    let sim = bind(listen, &profile, log).await?;
    tracing::info!(
        "simulated IEC 104 station on {}, common address {}, {} points{}",
        sim.local_addr(),
        profile.common_address,
        profile.points.len(),
        log.map(|l| format!(", logging to {}", l.display()))
            .unwrap_or_default()
    );
    let name = sim.serve(signal).await.context("cannot wait for signals")?;
    tracing::info!("{name} received: stopping the simulated station");
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const STARTDT_ACT: [u8; 6] = [0x68, 4, 0x07, 0, 0, 0];
    const STARTDT_CON: [u8; 6] = [0x68, 4, 0x0b, 0, 0, 0];

    /// Reads until `want` bytes came or the peer closed; what came.
    async fn read_some(s: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < want {
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
                _ => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn starts_and_closes_a_connection_on_garbage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log.jsonl");
        let profile = Profile::parse(
            Path::new("p.toml"),
            "common_address = 1\n[[point]]\nioa = 1\ntype = \"M_SP_NA_1\"\n",
        )
        .expect("profile");
        let sim = bind(([127, 0, 0, 1], 0).into(), &profile, Some(&log))
            .await
            .expect("bind");
        let addr = sim.local_addr();
        let serving = tokio::spawn(sim.serve(std::future::pending::<()>()));

        let mut good = TcpStream::connect(addr).await.expect("connect");
        good.write_all(&STARTDT_ACT).await.expect("write");
        assert_eq!(read_some(&mut good, 6).await, STARTDT_CON);

        let mut bad = TcpStream::connect(addr).await.expect("connect");
        bad.write_all(&[0x68, 0xff, 1, 2, 3]).await.expect("write");
        assert!(
            read_some(&mut bad, 1).await.is_empty(),
            "closed without a word"
        );

        // The first connection still works.
        good.write_all(&[0x68, 4, 0x43, 0, 0, 0])
            .await
            .expect("write");
        assert_eq!(read_some(&mut good, 6).await, [0x68, 4, 0x83, 0, 0, 0]);
        serving.abort();

        let text = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
        assert_eq!(
            events,
            [
                "accepted", "inactive", "u", "started", "accepted", "closed", "u"
            ],
            "{text}"
        );
        assert!(
            lines[5]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("garbage")),
            "{text}"
        );
        assert_eq!(lines[6]["function"], "TESTFR_ACT");
    }
}
