//! The datanode's TCP front: one reader and one writer task per connection, any number
//! of requests in flight, responses in completion order. Appends are checked and queued
//! by the reader itself, in arrival order; everything else runs in its own task.
//! A frame that breaks the protocol gets a refusal and its connection is closed; other
//! connections are not affected.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::auth::{datanode_allows, server_handshake, Keyring, HANDSHAKE_TIMEOUT};
use proto::frame::{read_body, read_header, write_frames_within, FrameError, OutFrame, Outgoing};
use proto::msg::{decode_append_fixed, encode_response, APPEND_FIXED_BYTES};
use proto::{ExtentError, NodeId, NodeStat, Opcode, Request, Response, READ_BYTES_MAX};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::align::{align_up, BufPool, PooledBuf, IO_UNIT_BYTES};
use crate::extent::{Append, ExtentStore, Payload};
use crate::limits::{
    ACCEPT_ERROR_BACKOFF, ALIGNED_PAYLOAD_BYTES_MIN, ANSWER_STALL_TIMEOUT, BUDGET_UNIT_BYTES, CONNECTIONS_MAX,
    CONNECTION_IN_FLIGHT_BYTES_MAX, CONNECTION_IN_FLIGHT_MAX, READ_BUFFER_BYTES, SERVER_IN_FLIGHT_BYTES_MAX,
    UNPROVEN_MAX, UNPROVEN_PER_ADDRESS_MAX,
};

pub struct Server {
    store: Arc<ExtentStore>,
    node: NodeId,
    /// Receive buffers for large appends, reused between requests.
    recv_pool: Arc<parking_lot::Mutex<BufPool>>,
    /// Paces rebuilds (repair) on this datanode.
    rebuilds: crate::pace::Pacer,
    /// When clients last appended here (rebuilds slow down meanwhile).
    activity: Arc<crate::pace::Activity>,
    /// The cluster secrets peers must prove they hold; `None`: anyone may connect
    /// (only allowed on loopback).
    keyring: Option<Arc<Keyring>>,
    /// Request and answer bytes in flight on all connections together.
    in_flight_bytes: Arc<Semaphore>,
    /// Connections open at once (past their handshake).
    connections: Arc<Semaphore>,
    /// Connections still in their handshake, per peer address.
    unproven: Arc<Handshaking>,
    /// Set: every connection runs in a TLS session.
    tls: Option<proto::tls::tokio_rustls::TlsAcceptor>,
}

/// Connections that have not yet proved who they are: a few per peer address, so that
/// whoever can reach the port cannot crowd out the cluster's own peers.
#[derive(Default)]
struct Handshaking {
    by_ip: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl Handshaking {
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Unproven> {
        let mut m = self.by_ip.lock();
        let total: usize = m.values().sum();
        let n = m.entry(ip).or_default();
        if *n >= UNPROVEN_PER_ADDRESS_MAX || total >= UNPROVEN_MAX {
            return None;
        }
        *n += 1;
        Some(Unproven { gate: self.clone(), ip })
    }
}

/// A connection in its handshake; counted until dropped.
struct Unproven {
    gate: Arc<Handshaking>,
    ip: std::net::IpAddr,
}

impl Drop for Unproven {
    fn drop(&mut self) {
        let mut m = self.gate.by_ip.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// An answer on its way to the peer, holding its request's budget until written.
struct Answer {
    frame: Outgoing,
    _held: Vec<Held>,
}

impl OutFrame for Answer {
    fn head(&self) -> &[u8] {
        self.frame.head()
    }
    fn tail(&self) -> Option<&[u8]> {
        self.frame.tail()
    }
}

type Held = OwnedSemaphorePermit;

/// The byte budgets a request's bytes count against: its connection's, then the server's.
struct Budget {
    connection: Arc<Semaphore>,
    server: Arc<Semaphore>,
}

impl Budget {
    /// Waits until `bytes` fit both budgets, and adds what it took to `held`; `None`
    /// once they are closed.
    async fn take(&self, bytes: usize, held: &mut Vec<Held>) -> Option<()> {
        let units = bytes.div_ceil(BUDGET_UNIT_BYTES) as u32;
        held.push(self.connection.clone().acquire_many_owned(units).await.ok()?);
        held.push(self.server.clone().acquire_many_owned(units).await.ok()?);
        Some(())
    }
}

impl Server {
    pub fn new(store: Arc<ExtentStore>, node: NodeId) -> Server {
        Server {
            store,
            node,
            recv_pool: Arc::default(),
            rebuilds: crate::pace::Pacer::new(crate::limits::REBUILD_RATE_DEFAULT),
            activity: Arc::default(),
            keyring: None,
            in_flight_bytes: Arc::new(Semaphore::new(SERVER_IN_FLIGHT_BYTES_MAX / BUDGET_UNIT_BYTES)),
            connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
            unproven: Arc::default(),
            tls: None,
        }
    }

    /// Serves every connection in a TLS session with `certs` (`None`: plain TCP).
    pub fn with_tls(mut self, certs: Option<&Arc<proto::tls::Certs>>) -> Server {
        self.tls = certs.map(|c| c.acceptor_alpn(&[]));
        self
    }

    /// Requires every connection to authenticate with one of `keyring`'s secrets.
    pub fn with_keyring(mut self, keyring: Option<Keyring>) -> Server {
        self.keyring = keyring.map(Arc::new);
        self
    }

    /// Rebuilds write at most `rate` bytes per second together, and `busy_rate` while
    /// clients append here (0: no limit).
    pub fn with_rebuild_rate(mut self, rate: u64, busy_rate: u64) -> Server {
        self.rebuilds = crate::pace::Pacer::yielding(rate, busy_rate, self.activity.clone());
        self
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((sock, peer)) => {
                        let Some(unproven) = self.unproven.admit(peer.ip()) else {
                            tracing::warn!("{peer}: refused: too many connections from it are still in their handshake");
                            continue;
                        };
                        let me = self.clone();
                        tokio::spawn(async move { me.connection(sock, peer, unproven).await });
                    }
                    Err(e) => {
                        // Out of descriptors (or memory): wait for some to close rather
                        // than spin on the error.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, sock: TcpStream, peer: SocketAddr, unproven: Unproven) {
        let _ = sock.set_nodelay(true);
        // The first byte tells a TLS client (a handshake record) from a plain one.
        let mut first = [0u8; 1];
        let tls_client = match tokio::time::timeout(HANDSHAKE_TIMEOUT, sock.peek(&mut first)).await {
            Ok(Ok(1)) => first[0] == proto::tls::TLS_HANDSHAKE_BYTE,
            Ok(_) => return,
            Err(_) => {
                tracing::warn!("{peer}: no handshake within {HANDSHAKE_TIMEOUT:?}; closing the connection");
                return;
            }
        };
        let Some(acceptor) = self.tls.clone() else {
            if tls_client {
                tracing::warn!("{peer}: refused: a TLS client, and this datanode serves plain TCP (no --tls-cert)");
                return;
            }
            return self.session(sock, peer, unproven).await;
        };
        if !tls_client {
            // A peer without TLS: tell it why, in the frames it reads.
            tracing::warn!("{peer}: refused: a plain connection, and this datanode serves TLS only");
            let e = ExtentError::Forbidden(format!(
                "this datanode serves TLS only: give the client the cluster's CA bundle ({})",
                proto::tls::CA_ENV
            ));
            let mut sock = sock;
            let _ = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tokio::io::AsyncWriteExt::write_all(&mut sock, encode_response(0, 0, &Err(e)).head()),
            )
            .await;
            return;
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
            Ok(Ok(tls)) => self.session(tls, peer, unproven).await,
            Ok(Err(e)) => tracing::warn!("{peer}: TLS handshake: {e}"),
            Err(_) => tracing::warn!("{peer}: no TLS handshake within {HANDSHAKE_TIMEOUT:?}; closing the connection"),
        }
    }

    /// Serves one connection (plain or TLS): the cluster handshake, then requests.
    async fn session<S: proto::tls::Halves>(self: Arc<Self>, mut sock: S, peer: SocketAddr, unproven: Unproven) {
        let role =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_handshake(&mut sock, self.keyring.as_deref())).await {
                Ok(Ok(role)) => role,
                Ok(Err(e)) => {
                    tracing::warn!("{peer}: handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!("{peer}: no handshake within {HANDSHAKE_TIMEOUT:?}; closing the connection");
                    return;
                }
            };
        drop(unproven);
        // Only peers that proved who they are take one of the connection slots.
        let Ok(_open) = self.connections.clone().try_acquire_owned() else {
            tracing::warn!("{peer}: refused: {CONNECTIONS_MAX} connections are open");
            return;
        };
        let (rd, wr) = sock.halves();
        // Small frames arrive many to a syscall; large payloads bypass the buffer.
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let (tx, rx) = mpsc::unbounded_channel::<Answer>();
        let writer = tokio::spawn(write_frames_within(wr, rx, Some(ANSWER_STALL_TIMEOUT)));
        let in_flight = Arc::new(Semaphore::new(CONNECTION_IN_FLIGHT_MAX));
        let heavy = Arc::new(Semaphore::new(1));
        let budget = Budget {
            connection: Arc::new(Semaphore::new(CONNECTION_IN_FLIGHT_BYTES_MAX / BUDGET_UNIT_BYTES)),
            server: self.in_flight_bytes.clone(),
        };
        loop {
            let permit = match in_flight.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            // A writer that gave up on the peer (it stopped reading) ends the connection.
            let next = tokio::select! {
                h = read_header(&mut rd) => h,
                _ = tx.closed() => {
                    tracing::warn!("{peer}: took no answer for {ANSWER_STALL_TIMEOUT:?}; closing the connection");
                    break;
                }
            };
            let header = match next {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(FrameError::Io(e)) => {
                    tracing::debug!("{peer}: {e}");
                    break;
                }
                Err(FrameError::Protocol { request_id, error }) => {
                    tracing::warn!("{peer}: {error}; closing the connection");
                    let _ = tx.send(Answer { frame: encode_response(0, request_id, &Err(error)), _held: Vec::new() });
                    break;
                }
            };
            // Hold the body's bytes against the budgets until its answer is written.
            let mut held = Vec::with_capacity(3);
            let Some(()) = budget.take(header.body_len as usize, &mut held).await else { break };
            let (opcode, id) = (header.opcode, header.request_id);
            let tx = tx.clone();
            let reply = move |r: Result<Response, ExtentError>, held: Vec<Held>| {
                let _ = tx.send(Answer { frame: encode_response(opcode, id, &r), _held: held });
                drop(permit);
            };
            let body_len = header.body_len as usize;
            let large_append =
                opcode == Opcode::Append as u8 && body_len >= APPEND_FIXED_BYTES + ALIGNED_PAYLOAD_BYTES_MIN;
            let append = if large_append {
                match self.read_aligned_append(&mut rd, body_len).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("{peer}: {e}");
                        break;
                    }
                }
            } else {
                let body = match read_body(&mut rd, body_len).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!("{peer}: {e}");
                        break;
                    }
                };
                match Request::decode(opcode, body) {
                    Ok(Request::Append { extent, expected_offset, epoch, crc32c, payload }) => {
                        Append { extent, expected_offset, epoch, crc: crc32c, payload: Payload::Bytes(payload) }
                    }
                    Ok(req) if !datanode_allows(role, req.opcode()) => {
                        let who = role.map_or("anonymous", |r| r.name());
                        let e = ExtentError::Forbidden(format!("a {who} peer may not send {:?}", req.opcode()));
                        reply(Err(e), held);
                        continue;
                    }
                    Ok(req) => {
                        // A read's answer is held against the budgets too, so that a
                        // peer that asks and never reads cannot pile answers up here.
                        // Answers of unbounded size (lists) go one at a time per connection.
                        match req {
                            Request::Read { len, .. } => {
                                let Some(()) = budget.take(len.min(READ_BYTES_MAX) as usize, &mut held).await else {
                                    break;
                                };
                            }
                            Request::List | Request::Records { .. } | Request::NodeStat => {
                                let Ok(one) = heavy.clone().acquire_owned().await else { break };
                                held.push(one);
                            }
                            _ => {}
                        }
                        let me = self.clone();
                        tokio::spawn(async move { reply(me.handle(req).await, held) });
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!("{peer}: {error}; closing the connection");
                        reply(Err(error), held);
                        break;
                    }
                }
            };
            // Appends are queued here, in arrival order. The acknowledgement runs wherever
            // the append is decided (usually the device's flusher) and goes straight to
            // this connection's writer.
            self.activity.touch();
            let ack =
                Box::new(move |r: Result<u64, ExtentError>| reply(r.map(|length| Response::Appended { length }), held));
            self.store.submit_append(append, ack);
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Reads a large append's body: the fixed part, then the payload straight into an
    /// io-aligned buffer that the device writes as it is.
    async fn read_aligned_append(&self, rd: &mut (impl AsyncRead + Unpin), body_len: usize) -> std::io::Result<Append> {
        let mut fixed = [0u8; APPEND_FIXED_BYTES];
        rd.read_exact(&mut fixed).await?;
        let (extent, expected_offset, epoch, crc) = decode_append_fixed(&fixed);
        let len = body_len - APPEND_FIXED_BYTES;
        let mut buf = PooledBuf::take(&self.recv_pool, align_up(len as u64, IO_UNIT_BYTES) as usize);
        rd.read_exact(&mut buf[..len]).await?;
        buf[len..].fill(0);
        Ok(Append { extent, expected_offset, epoch, crc, payload: Payload::Aligned { buf, len } })
    }

    /// Serves calls from this process to `addr` directly (`proto::local`) until
    /// `proto::local::unregister` with the registration returned: a client in this
    /// process that connects to `addr` then passes requests and answers as values, with
    /// no copies through socket buffers.
    pub fn serve_locally(self: &Arc<Self>, addr: &str) -> u64 {
        proto::local::register(addr, Arc::new(Local(self.clone())))
    }

    /// The payload of an append called in this process, as the connection reader would
    /// have received it: a large one copied into an io-aligned buffer (so it is written
    /// as it is and laid out as over TCP), a small one as it is.
    fn local_payload(&self, payload: bytes::Bytes) -> Payload {
        // One too large is refused by `submit_append`: not worth a copy.
        if payload.len() < ALIGNED_PAYLOAD_BYTES_MIN || payload.len() > proto::APPEND_BYTES_MAX as usize {
            return Payload::Bytes(payload);
        }
        let len = payload.len();
        let mut buf = PooledBuf::take(&self.recv_pool, align_up(len as u64, IO_UNIT_BYTES) as usize);
        buf[..len].copy_from_slice(&payload);
        buf[len..].fill(0);
        Payload::Aligned { buf, len }
    }

    async fn handle(&self, req: Request) -> Result<Response, ExtentError> {
        let s = &self.store;
        match req {
            Request::Create { extent, epoch, device } => s.create(extent, epoch, device).await.map(|_| Response::Done),
            Request::Read { extent, offset, len } => s.read(extent, offset, len).await.map(Response::Data),
            Request::Seal { extent, length } => s.seal(extent, length).await.map(|_| Response::Done),
            Request::Delete { extent } => s.delete(extent).await.map(|_| Response::Done),
            Request::Stat { extent } => s.stat(extent).map(Response::Stat),
            Request::Fence { extent, epoch } => s.fence(extent, epoch).await.map(Response::Stat),
            Request::List => Ok(Response::List(s.list())),
            Request::NodeStat => Ok(Response::NodeStat(NodeStat { node: self.node, devices: s.device_stats() })),
            Request::Records { extent } => s.records(extent).map(Response::Records),
            Request::Rebuild(r) => crate::rebuild::rebuild(s, r, &self.rebuilds).await.map(Response::Stat),
            Request::Append { .. } => unreachable!("appends are handled by the reader"),
        }
    }
}

/// A datanode called from its own process (`Server::serve_locally`). It starts each
/// request as a connection's reader does: an append is checked and queued to the
/// device at once, in call order; anything else runs on its own task. A read's answer
/// is held against the server's byte budget, as over TCP; an append's payload is
/// already in the caller's memory, bounded by the caller's own windows.
struct Local(Arc<Server>);

impl proto::local::LocalDatanode for Local {
    fn dispatch(&self, req: Request, reply: proto::local::Reply) {
        match req {
            Request::Append { extent, expected_offset, epoch, crc32c, payload } => {
                self.0.activity.touch();
                let payload = self.0.local_payload(payload);
                let append = Append { extent, expected_offset, epoch, crc: crc32c, payload };
                let ack =
                    Box::new(move |r: Result<u64, ExtentError>| reply(r.map(|length| Response::Appended { length })));
                self.0.store.submit_append(append, ack);
            }
            req => {
                let me = self.0.clone();
                tokio::spawn(async move {
                    let _held = match req {
                        Request::Read { len, .. } => {
                            let units = (len.min(READ_BYTES_MAX) as usize).div_ceil(BUDGET_UNIT_BYTES) as u32;
                            me.in_flight_bytes.clone().acquire_many_owned(units).await.ok()
                        }
                        _ => None,
                    };
                    reply(me.handle(req).await)
                });
            }
        }
    }
}
