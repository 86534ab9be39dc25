//! One TCP link to one endpoint of an RTU: a Modbus session for the owner, or a bare
//! connection that sends nothing, for a standby that only reports reachability.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::Slave;

use super::command::Write;
use super::reads::{Data, Read};
use crate::site::Table;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("endpoint {0:?} does not resolve")]
    Resolve(String),
    #[error("connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("modbus transport: {0}")]
    Transport(#[from] tokio_modbus::Error),
    #[error("the device answered with exception {0}")]
    Exception(tokio_modbus::ExceptionCode),
}

impl LinkError {
    /// The `kind` label of `fepha_poll_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            LinkError::Resolve(_) | LinkError::Connect { .. } => "connect",
            LinkError::Timeout(_) => "timeout",
            LinkError::Transport(_) => "io",
            LinkError::Exception(_) => "exception",
        }
    }
}

/// Resolves `host:port`; an IP address needs no lookup.
async fn resolve(endpoint: &str) -> Result<SocketAddr, LinkError> {
    if let Ok(addr) = endpoint.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(endpoint)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| LinkError::Resolve(endpoint.to_owned()))
}

/// A TCP connection from `source` (when the node config names one), within `timeout`.
pub(crate) async fn connect(
    endpoint: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, LinkError> {
    let connect = async {
        let addr = resolve(endpoint).await?;
        let io = |source| LinkError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io)?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
        }
        // A link is dropped when this node may no longer talk to the device (its lease ran
        // out, or the link timed out). An ordinary close would leave a request that was cut
        // off by a partition in the kernel's retransmit queue, and deliver it once the
        // partition heals, when another node owns the device. An abortive close (RST)
        // discards it with the socket.
        socket.set_zero_linger().map_err(io)?;
        let stream = socket.connect(addr).await.map_err(io)?;
        // Polls are small request/response exchanges: send each at once.
        stream.set_nodelay(true).map_err(io)?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| LinkError::Timeout("connect"))?
}

/// A Modbus TCP session with one endpoint.
pub(crate) struct Session {
    context: Context,
    timeout: Duration,
}

impl Session {
    pub(crate) async fn open(
        endpoint: &str,
        source: Option<IpAddr>,
        unit_id: u8,
        timeout: Duration,
    ) -> Result<Session, LinkError> {
        let stream = connect(endpoint, source, timeout).await?;
        Ok(Session {
            context: tokio_modbus::client::tcp::attach_slave(stream, Slave(unit_id)),
            timeout,
        })
    }

    pub(crate) async fn read(&mut self, read: Read) -> Result<Data, LinkError> {
        let ctx = &mut self.context;
        let (start, count) = (read.start, read.count);
        let answer = tokio::time::timeout(self.timeout, async {
            Ok::<_, tokio_modbus::Error>(match read.table {
                Table::Coil => ctx.read_coils(start, count).await?.map(Data::Bits),
                Table::DiscreteInput => ctx
                    .read_discrete_inputs(start, count)
                    .await?
                    .map(Data::Bits),
                Table::Holding => ctx
                    .read_holding_registers(start, count)
                    .await?
                    .map(Data::Registers),
                Table::Input => ctx
                    .read_input_registers(start, count)
                    .await?
                    .map(Data::Registers),
            })
        })
        .await
        .map_err(|_| LinkError::Timeout("read"))??;
        answer.map_err(LinkError::Exception)
    }

    pub(crate) async fn write(&mut self, write: &Write) -> Result<(), LinkError> {
        let ctx = &mut self.context;
        let answer = tokio::time::timeout(self.timeout, async {
            match write {
                Write::Coil { address, value } => ctx.write_single_coil(*address, *value).await,
                Write::Registers { address, values } => match values.as_slice() {
                    [one] => ctx.write_single_register(*address, *one).await,
                    many => ctx.write_multiple_registers(*address, many).await,
                },
            }
        })
        .await
        .map_err(|_| LinkError::Timeout("write"))??;
        answer.map_err(LinkError::Exception)
    }
}
