//! One signal that every long-running task of a node listens to.

use tokio::sync::watch;

/// Cloned into every task; `wait()` returns once shutdown has been asked for.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Held by whoever decides when the node stops.
pub(crate) struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub(crate) fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub(crate) fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means the node is stopping.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// One part of a node: its tasks, and the signal that asks them to stop. The node stops its
/// parts one after another, so a part can count on the parts below it until it has stopped.
pub(crate) struct Part {
    name: &'static str,
    trigger: ShutdownTrigger,
    signal: Shutdown,
    tasks: tokio::task::JoinSet<()>,
}

impl Part {
    pub(crate) fn new(name: &'static str) -> Part {
        let (trigger, signal) = channel();
        Part {
            name,
            trigger,
            signal,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// What this part's tasks listen to.
    pub(crate) fn signal(&self) -> Shutdown {
        self.signal.clone()
    }

    pub(crate) fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Asks the part's tasks to stop and waits up to `patience` for them; the ones still
    /// running then are aborted.
    pub(crate) async fn stop(mut self, patience: std::time::Duration) {
        self.trigger.trigger();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(patience, all).await.is_err() {
            tracing::warn!(part = self.name, "tasks did not stop in time; aborted");
            self.tasks.shutdown().await;
        }
    }
}
