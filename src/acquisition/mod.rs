//! Field I/O: one task per RTU of the applied site configuration (`rtu` for Modbus,
//! `iec104` for IEC 104 devices), the Modbus links they use, the probes of standbys, the batcher that carries their changes into the log, and `point write`'s
//! checks (`control`). Witnesses do none of it.

pub(crate) mod batch;
pub(crate) mod command;
pub(crate) mod control;
pub(crate) mod decode;
pub(crate) mod iec104;
pub(crate) mod link;
pub(crate) mod probe;
pub(crate) mod reach;
pub(crate) mod reads;
pub(crate) mod rtu;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Reports};
use crate::lease::clock::OwnLease;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::site::{Point, Protocol, Rtu};

/// What the RTU tasks use.
pub(crate) struct Field {
    pub cluster: Cluster,
    /// This node's own lease clock: no field I/O once it has run out.
    pub own: Arc<OwnLease>,
    /// Where the tasks say what they reach, for the session renewals.
    pub reports: Arc<Reports>,
    /// The local address field connections are made from, if set.
    pub source_ip: Option<IpAddr>,
}

/// How long a stopping RTU task may take to finish the command it is executing and write
/// its outcome, and the batcher to write what it holds.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// An RTU task and what it was started with: a task whose RTU and points did not change in
/// a new configuration keeps running, with its connections.
struct Running {
    /// The digest of what the task was started with ([`digest`]): the task itself holds the
    /// only copy, which at 100 000 points is tens of megabytes.
    spec: [u8; 32],
    stop: ShutdownTrigger,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks the task to stop and waits for it: a command it has started is finished through
    /// the log first.
    async fn stop(self, rtu: &str) {
        self.stop.trigger();
        let mut task = self.task;
        if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
            tracing::warn!(rtu, "acquisition task did not stop in time; aborted");
            task.abort();
        }
    }
}

/// What an RTU task is started with, as a SHA-256 of its JSON: two specs with the same
/// digest are the same RTU and points (spans in the document do not count).
fn digest(spec: &(Rtu, Vec<Point>)) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    // Writing to a hasher cannot fail, and every field of a parsed site serialises.
    let _ = serde_json::to_writer(HashWriter(&mut hasher), spec);
    hasher.finalize().into()
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts and stops RTU tasks as the applied configuration changes, until shutdown; then
/// stops them, and the batcher after them.
pub(crate) async fn run(field: Arc<Field>, shutdown: Shutdown) {
    let (give_up, batcher_stop) = shutdown::channel();
    let (batcher, mut writer) = batch::start(field.cluster.clone(), batcher_stop);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // The site the running tasks were last compared with. `Cluster::site` hands out the same
    // `Arc` until the configuration changes, and comparing means a copy of every RTU and
    // point: at 100 000 points, tens of megabytes every 200 ms for nothing.
    let mut compared: Option<Arc<crate::site::Site>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let Some(current) = field.cluster.site() else {
            continue;
        };
        if compared.as_ref().is_some_and(|c| Arc::ptr_eq(c, &current)) {
            continue;
        }
        compared = Some(current.clone());
        let mut wanted: BTreeMap<String, (Rtu, Vec<Point>)> = current
            .rtus
            .iter()
            .map(|r| (r.id.get_ref().clone(), (r.clone(), Vec::new())))
            .collect();
        for p in &current.points {
            if let Some((_, points)) = wanted.get_mut(p.rtu.get_ref()) {
                points.push(p.clone());
            }
        }
        let changed: Vec<String> = running
            .iter()
            .filter(|(id, r)| wanted.get(*id).map(digest) != Some(r.spec))
            .map(|(id, _)| id.clone())
            .collect();
        for id in changed {
            if let Some(r) = running.remove(&id) {
                r.stop(&id).await;
            }
        }
        field.reports.retain(|rtu| wanted.contains_key(rtu));
        for (id, spec) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (trigger, own_stop) = shutdown::channel();
            let started_with = digest(&spec);
            let (rtu, points) = spec;
            let task = match rtu.protocol {
                Protocol::Modbus => tokio::spawn(
                    rtu::RtuTask::new(field.clone(), rtu, points, batcher.clone()).run(own_stop),
                ),
                Protocol::Iec104 => {
                    match iec104::task::Task::new(field.clone(), rtu, points, batcher.clone()) {
                        Ok(task) => tokio::spawn(task.run(own_stop)),
                        Err(e) => {
                            // The site check refuses such an RTU; nothing to run.
                            tracing::error!(rtu = %id, "cannot run the 104 RTU: {e}");
                            continue;
                        }
                    }
                }
            };
            tracing::info!(rtu = %id, "acquisition task started");
            running.insert(
                id,
                Running {
                    spec: started_with,
                    stop: trigger,
                    task,
                },
            );
        }
        metrics::gauge!("fepha_acquisition_rtus").set(running.len() as f64);
    }
    let stopping = running
        .into_iter()
        .map(|(id, r)| async move { r.stop(&id).await });
    futures::future::join_all(stopping).await;
    // The tasks are gone, and with them every sender: the batcher writes what it holds and
    // ends, unless the cluster cannot take it in time.
    drop(batcher);
    if tokio::time::timeout(STOP_WAIT, &mut writer).await.is_err() {
        tracing::warn!("point changes still unwritten at shutdown");
        give_up.trigger();
        let _ = writer.await;
    }
    metrics::gauge!("fepha_acquisition_rtus").set(0.0);
}
