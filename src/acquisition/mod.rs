//! Field I/O: one task per RTU of the applied site configuration (see `rtu`), the Modbus
//! links they use, and the batcher that carries their changes into the log. Witnesses do
//! none of it.

pub mod batch;
pub mod command;
pub mod decode;
pub mod link;
pub mod reads;
pub mod rtu;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Role;
use crate::node::Node;
use crate::proto::admin::{LinkState, RtuLinks, RtuReach};
use crate::shutdown::Shutdown;
use crate::site::{Point, Rtu};
use crate::state::ownership::{Link, Reach};

/// What this node says about one RTU in its session renewals.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub reach: Option<Reach>,
    pub links: Vec<Link>,
}

/// Every RTU task's latest report; a change wakes the session loop for an early renewal, so
/// that a failed owner is replaced without waiting for the next regular one.
#[derive(Debug, Default)]
pub struct Reports {
    by_rtu: Mutex<BTreeMap<String, Report>>,
    pub changed: Notify,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Report>> {
        self.by_rtu.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, rtu: &str, report: Report) {
        let old = self.lock().insert(rtu.to_owned(), report.clone());
        if old.is_none_or(|o| o.reach != report.reach) {
            self.changed.notify_one();
        }
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|rtu, _| keep(rtu));
    }

    /// For a renewal.
    pub fn renewal(&self) -> (Vec<RtuReach>, Vec<RtuLinks>) {
        let by_rtu = self.lock();
        let reach = by_rtu
            .iter()
            .filter_map(|(rtu, r)| {
                r.reach.map(|reach| RtuReach {
                    rtu: rtu.clone(),
                    reachable: reach == Reach::Reachable,
                })
            })
            .collect();
        let links = by_rtu
            .iter()
            .map(|(rtu, r)| RtuLinks {
                rtu: rtu.clone(),
                links: r
                    .links
                    .iter()
                    .map(|l| LinkState {
                        channel: l.channel.clone(),
                        endpoint: l.endpoint.clone(),
                        up: l.up,
                        index: l.index,
                    })
                    .collect(),
            })
            .collect();
        (reach, links)
    }
}

/// An RTU task and what it was started with: a task whose RTU and points did not change in
/// a new configuration keeps running, with its connections.
struct Running {
    spec: (Rtu, Vec<Point>),
    task: JoinHandle<()>,
}

/// Starts and stops RTU tasks as the applied configuration changes.
pub async fn run(node: Arc<Node>, shutdown: Shutdown) {
    if node.config.role == Role::Witness {
        return;
    }
    let batcher = batch::start(node.clone(), shutdown.clone());
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let Some(current) = node.site() else {
            continue;
        };
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
        running.retain(|id, r| {
            let keep = wanted.get(id) == Some(&r.spec);
            if !keep {
                r.task.abort();
            }
            keep
        });
        node.acquisition.retain(|rtu| wanted.contains_key(rtu));
        for (id, spec) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let task = rtu::RtuTask::new(
                node.clone(),
                spec.0.clone(),
                spec.1.clone(),
                batcher.clone(),
                node.acquisition.clone(),
            );
            tracing::info!(rtu = %id, "acquisition task started");
            running.insert(
                id,
                Running {
                    spec,
                    task: tokio::spawn(task.run()),
                },
            );
        }
        metrics::gauge!("fepha_acquisition_rtus").set(running.len() as f64);
    }
    for r in running.values() {
        r.task.abort();
    }
}
