//! A simulated Modbus TCP field device, to test and demonstrate fepha against
//! (`fepha sim modbus --listen ADDR --profile FILE [--log FILE]`).
//!
//! It serves the four Modbus tables of a [`Profile`] to any number of clients, changes some
//! values on a schedule, and logs every request with its client's address, so that tests can
//! prove which node polled the device when. Built on tokio-modbus's TCP server.
//!
//! Used in-process too (by `fepha demo`):
//! ```text
//! let sim = sim::bind(([127, 0, 0, 1], 0).into(), &profile, None).await?;
//! let addr = sim.local_addr();
//! tokio::spawn(sim.serve(std::future::pending::<()>()));
//! ```

mod device;
mod guard;
pub(crate) mod iec104;
pub(crate) mod log;
pub(crate) mod profile;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::tcp::Server;

pub(crate) use device::Device;
pub(crate) use log::{LogError, RequestLog};
pub(crate) use profile::{Profile, ProfileError};

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

/// A device bound to its port, not yet serving.
#[derive(Debug)]
pub(crate) struct Sim {
    listener: TcpListener,
    local_addr: SocketAddr,
    device: Device,
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
    let log = log.map(RequestLog::open).transpose()?;
    let bind_err = |source| SimError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    Ok(Sim {
        listener,
        local_addr,
        device: Device::new(profile, log),
        profile: profile.clone(),
    })
}

impl Sim {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves clients and runs the schedules until `shutdown` resolves, then returns its
    /// output; open connections are closed. Nothing else ends it: a failed accept (e.g. out of
    /// file descriptors) is retried.
    pub(crate) async fn serve<F: Future>(self, shutdown: F) -> F::Output {
        let Sim {
            listener,
            local_addr,
            device,
            profile,
        } = self;
        let schedules = device.clone().run_schedules(&profile);
        let server = Server::new(listener);
        let on_connected = |stream: TcpStream, peer: SocketAddr| {
            let device = device.clone();
            async move {
                // Requests and answers are small and strictly alternate; don't let Nagle add
                // latency to the latency benchmark.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("{peer}: cannot set TCP_NODELAY: {e}");
                }
                tracing::info!("{peer} connected to the simulated device on {local_addr}");
                Ok(Some((
                    device::Connection { device, peer },
                    guard::Guarded::new(stream),
                )))
            }
        };
        let on_process_error = |e: std::io::Error| tracing::info!("a connection ended: {e}");
        let accept = forever(async {
            loop {
                // tokio-modbus's `serve` returns on the first failed accept, and closes every
                // connection it served when it returns: a transient failure (EMFILE,
                // ECONNABORTED) must not end the device, so start it again after a pause.
                // The clients see a device restart and reconnect.
                match server.serve(&on_connected, on_process_error).await {
                    Ok(()) => tracing::warn!("the Modbus server stopped; restarting it"),
                    Err(e) => tracing::warn!("cannot accept a connection: {e}; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        tokio::select! {
            out = shutdown => out,
            never = accept => match never {},
            never = schedules => match never {},
        }
    }
}

/// Types a future that never ends as such, so that `select!` needs no `unreachable!`.
fn forever<F: Future<Output = Infallible>>(f: F) -> F {
    f
}

/// `fepha sim modbus`: serves until SIGTERM or SIGINT.
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
        "simulated Modbus device on {} serving unit ids {:?}{}",
        sim.local_addr(),
        profile.unit_ids,
        log.map(|l| format!(", logging requests to {}", l.display()))
            .unwrap_or_default()
    );
    let name = sim.serve(signal).await.context("cannot wait for signals")?;
    tracing::info!("{name} received: stopping the simulated device");
    Ok(())
}
