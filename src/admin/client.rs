//! Dialling a node's admin API over mutual TLS, for the CLI and for nodes that forward to the
//! leader.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::admin::admin_client::AdminClient;
use crate::tls::{Identity, TrustStore};

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    BadAddress(#[from] crate::tls::BadEndpoint),
    #[error("cannot reach the node at {addr}: {message}")]
    Unreachable { addr: String, message: String },
}

/// Who we are (None: no certificate, which only lets a node ask to join) and which servers
/// we believe.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub identity: Option<Identity>,
    pub trust: Arc<dyn TrustStore>,
}

/// Connects now, so that a dead node or a refused certificate is reported as such rather
/// than as a failed call.
pub async fn dial(
    addr: &str,
    timeout: Duration,
    credentials: &Credentials,
) -> Result<AdminClient<Channel>, DialError> {
    let channel = endpoint(addr, timeout, credentials)?
        .connect()
        .await
        .map_err(|e| DialError::Unreachable {
            addr: addr.to_owned(),
            message: source_chain(&e),
        })?;
    Ok(limited(channel))
}

/// A client that sends what a node accepts and takes the largest reply one gives.
fn limited(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_encoding_message_size(super::MAX_REQUEST_BYTES)
        .max_decoding_message_size(super::MAX_REPLY_BYTES)
}

/// No admin call takes longer than a join's catch-up.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Every admin connection's settings.
fn endpoint(
    addr: &str,
    connect_timeout: Duration,
    credentials: &Credentials,
) -> Result<Endpoint, DialError> {
    let endpoint = crate::tls::endpoint(
        addr,
        credentials.identity.as_ref(),
        credentials.trust.clone(),
    )?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true))
}

/// tonic's transport error says only "transport error"; the cause (a refused certificate,
/// a refused connection) is further down.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    with_causes(e.to_string(), e.source())
}

/// `first`, then each cause below it that does not repeat what is already said.
pub fn with_causes(first: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut text = first;
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Admin channels to other nodes, for forwarding operators' writes to the leader and for
/// status probes.
#[derive(Debug)]
pub struct Pool {
    credentials: Credentials,
    channels: crate::tls::Channels,
}

impl Pool {
    pub fn new(identity: Option<Identity>, trust: Arc<dyn TrustStore>) -> Pool {
        Pool {
            channels: crate::tls::Channels::new(identity.clone(), trust.clone(), CALL_TIMEOUT),
            credentials: Credentials { identity, trust },
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Drops the channels to addresses not in `keep` (nodes that left or were revoked), which
    /// closes their connections.
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) {
        self.channels.retain(keep);
    }

    /// A client for `addr`; a dead node shows up as an UNAVAILABLE call.
    pub fn get(&self, addr: &str) -> Result<AdminClient<Channel>, DialError> {
        Ok(limited(self.channels.get(addr)?))
    }
}
