//! Dialling a node's admin API, for the CLI and for nodes that forward to the leader.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::admin::admin_client::AdminClient;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{addr:?} is not an admin address: {message}")]
    BadAddress { addr: String, message: String },
    #[error("cannot reach the node at {addr}: {message}")]
    Unreachable { addr: String, message: String },
}

/// Connects now, so that a dead node is reported as such rather than as a failed call.
pub async fn dial(addr: &str, timeout: Duration) -> Result<AdminClient<Channel>, DialError> {
    let channel = endpoint(addr, timeout)?
        .connect()
        .await
        .map_err(|e| DialError::Unreachable {
            addr: addr.to_owned(),
            message: source_chain(&e),
        })?;
    Ok(AdminClient::new(channel))
}

/// Every admin connection's settings. No call takes longer than a join's catch-up.
fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, DialError> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| DialError::BadAddress {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .timeout(Duration::from_secs(180))
        .tcp_nodelay(true))
}

/// tonic's transport error says only "transport error"; the cause is further down.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Admin channels to other nodes, kept open between calls: forwarding each write to the
/// leader over a fresh connection would add a TCP and HTTP/2 handshake to every write.
#[derive(Default)]
pub struct Pool {
    channels: std::sync::Mutex<std::collections::HashMap<String, Channel>>,
}

impl Pool {
    /// A client for `addr`. The channel connects lazily and reconnects by itself; a dead node
    /// shows up as an UNAVAILABLE call.
    pub fn get(&self, addr: &str) -> Result<AdminClient<Channel>, DialError> {
        // A poisoned lock only means another caller panicked; the map is still usable.
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(AdminClient::new(channel.clone()));
        }
        let channel = endpoint(addr, Duration::from_secs(1))?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(AdminClient::new(channel))
    }
}
