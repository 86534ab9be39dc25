//! gRPC from the tests straight to a node, for what the CLI is too slow or too polite for.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use fepha::admin::client::Credentials;
use fepha::proto::admin::admin_client::AdminClient;
use fepha::proto::admin::{ConfigApplyRequest, StatusRequest};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::status::{Applied, Status};

/// Every admin client the tests make comes from here, over mutual TLS with `credentials`
/// (see [`crate::Cluster::credentials`]).
pub async fn admin_client(
    credentials: &Credentials,
    addr: &str,
) -> Result<AdminClient<Channel>, String> {
    fepha::admin::client::dial(addr, Duration::from_secs(2), credentials)
        .await
        .map_err(|e| e.to_string())
}

/// A channel to any of a node's gRPC ports, for sending it things no client would.
pub async fn raw_channel(credentials: &Credentials, addr: &str) -> Result<Channel, String> {
    fepha::tls::endpoint(
        addr,
        credentials.identity.as_ref(),
        credentials.trust.clone(),
    )
    .map_err(|e| e.to_string())?
    .connect_timeout(Duration::from_secs(2))
    .timeout(Duration::from_secs(10))
    .connect()
    .await
    .map_err(|e| format!("cannot reach {addr}: {e:?}"))
}

/// `config apply` through `client`, retried while the cluster has no leader (UNAVAILABLE)
/// until `deadline`. Each call is bounded, so a stopped node cannot hang the caller.
pub async fn apply_rpc(
    client: &mut AdminClient<Channel>,
    text: &str,
    deadline: Instant,
) -> Result<Applied, tonic::Status> {
    loop {
        let call = client.config_apply(ConfigApplyRequest {
            text: text.to_owned(),
            forwarded: false,
            dry_run: false,
        });
        let result = match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "config_apply took over 10s",
            )),
        };
        match result {
            Ok(reply) => {
                let r = reply.into_inner();
                return Ok(Applied {
                    version: r.version,
                    log_index: r.log_index,
                    sha256: r.sha256,
                });
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// The node's own view (no probing of the others), bounded by `limit`.
pub async fn rpc_status(
    client: &mut AdminClient<Channel>,
    limit: Duration,
) -> Result<Status, String> {
    let call = client.status(StatusRequest { local_only: true });
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner().into()),
        Ok(Err(s)) => Err(format!("status: {s}")),
        Err(_) => Err(format!("status took over {limit:?}")),
    }
}

/// One unary gRPC call with `body` as the message bytes, whatever they are.
pub async fn raw_unary(
    credentials: &Credentials,
    addr: &str,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = raw_channel(credentials, addr)
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply = grpc
        .unary(
            Request::new(Bytes::from(body)),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
    Ok(reply.into_inner().to_vec())
}

/// Passes message bytes through untouched.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Writes `bytes` on a plain TCP connection, half-closes, and reads whatever comes back until
/// the node closes the connection or goes quiet. The node may reset the connection; that is
/// an answer too.
pub fn send_bytes(addr: &str, bytes: &[u8]) {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().expect("node address");
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}
