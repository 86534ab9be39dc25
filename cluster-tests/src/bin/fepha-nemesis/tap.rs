//! A TCP proxy in front of the Modbus device that records every request it carries: when it
//! passed, from which source IP, its function, address and, for writes, the values. Nodes
//! open field connections from their own IP, so the record tells who talked to the device
//! when; every byte to the device passes here, so it is also the device's record of what it
//! executed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One Modbus request as it went to the device.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub time_ms: u64,
    pub src: IpAddr,
    pub function: u8,
    pub address: u16,
    /// Registers or bits read; for writes, how many were written.
    pub count: u16,
    /// The values of a write (function 5, 6, 15, 16); empty otherwise.
    pub values: Vec<u16>,
    /// When the device's answer passed back, if it did: what a read returned, the device held
    /// at some moment between `time_ms` and this.
    pub answered_ms: Option<u64>,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(self.function, 5 | 6 | 15 | 16)
    }
}

pub struct Tap {
    log: Arc<Mutex<Vec<Request>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Tap {
    /// Listens on `listen` and forwards to `target`. The sockets live in the network namespace
    /// of the calling thread; the runtime's threads are made here, so they do too.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Tap> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tap")
            .enable_all()
            .build()?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)?
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        rt.spawn(accept_loop(listener, target, Arc::clone(&log)));
        Ok(Tap { log, rt: Some(rt) })
    }

    /// Every request so far, in the order they passed.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.log).clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock(log: &Mutex<Vec<Request>>) -> MutexGuard<'_, Vec<Request>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, log: Arc<Mutex<Vec<Request>>>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(carry(client, peer.ip(), target, Arc::clone(&log)));
    }
}

/// Carries one connection; the requests are parsed frame by frame on their way.
async fn carry(client: TcpStream, src: IpAddr, target: SocketAddr, log: Arc<Mutex<Vec<Request>>>) {
    let Ok(Ok(upstream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut c_read, mut c_write) = client.into_split();
    let (mut u_read, mut u_write) = upstream.into_split();
    // The requests of this connection still waiting for an answer, by their place in the log.
    let unanswered: Mutex<std::collections::VecDeque<usize>> = Mutex::default();
    let to_device = async {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match c_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // Recorded before the bytes go on, so a request is never logged after its answer.
            while let Some((frame_len, request)) = parse(&pending, src) {
                if let Some(r) = request {
                    let mut log = lock(&log);
                    log.push(r);
                    let at = log.len() - 1;
                    drop(log);
                    unanswered
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(at);
                }
                pending.drain(..frame_len);
            }
            if u_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = u_write.shutdown().await;
    };
    let to_client = async {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match u_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // fepha has one request at a time on a connection: each answer is the oldest's.
            while let Some((frame_len, _)) = parse(&pending, src) {
                let oldest = unanswered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                if let Some(at) = oldest
                    && let Some(req) = lock(&log).get_mut(at)
                {
                    req.answered_ms = Some(crate::history::now_ms());
                }
                pending.drain(..frame_len);
            }
            if c_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = c_write.shutdown().await;
    };
    tokio::join!(to_device, to_client);
}

/// One MBAP frame from the front of `bytes`: its length and the request it holds (None for a
/// frame too short to be a request). None if the frame is not complete yet.
fn parse(bytes: &[u8], src: IpAddr) -> Option<(usize, Option<Request>)> {
    if bytes.len() < 7 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    let total = 6 + len;
    if bytes.len() < total {
        return None;
    }
    let pdu = &bytes[7..total];
    let word =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*pdu.get(i)?, *pdu.get(i + 1)?])) };
    let request = (|| {
        let function = *pdu.first()?;
        let address = word(1)?;
        let (count, values) = match function {
            5 | 6 => (1, vec![word(3)?]),
            16 => {
                let n = word(3)?;
                let values = (0..usize::from(n))
                    .map(|k| word(6 + 2 * k))
                    .collect::<Option<Vec<u16>>>()?;
                (n, values)
            }
            _ => (word(3)?, Vec::new()),
        };
        Some(Request {
            time_ms: crate::history::now_ms(),
            src,
            function,
            address,
            count,
            values,
            answered_ms: None,
        })
    })();
    Some((total, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reads_and_writes_and_waits_for_whole_frames() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 10, 0, 4];
        assert!(parse(&read[..8], ip).is_none());
        let (n, r) = parse(&read, ip).expect("a whole frame");
        let r = r.expect("a request");
        assert_eq!((n, r.function, r.address, r.count), (12, 3, 10, 4));
        let write = [0, 2, 0, 0, 0, 6, 1, 6, 0, 50, 0x01, 0x02];
        let r = parse(&write, ip).and_then(|(_, r)| r).expect("a write");
        assert_eq!((r.function, r.address, r.values), (6, 50, vec![0x0102]));
    }
}
