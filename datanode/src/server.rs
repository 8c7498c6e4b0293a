//! The datanode's TCP front: one reader and one writer task per connection, any number
//! of requests in flight, responses in completion order. Appends are checked and queued
//! by the reader itself, in arrival order; everything else runs in its own task.
//! A frame that breaks the protocol gets a refusal and its connection is closed; other
//! connections are not affected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proto::frame::{read_frame, FrameError};
use proto::msg::encode_response;
use proto::{ExtentError, NodeId, NodeStat, Request, Response};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::extent::ExtentStore;

/// Requests one connection may have in flight before the server stops reading from it.
pub const CONNECTION_IN_FLIGHT_MAX: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 64 << 10;
const READ_BUFFER_BYTES: usize = 64 << 10;

type Outgoing = (BytesMut, Option<Bytes>);

pub struct Server {
    pub store: Arc<ExtentStore>,
    pub node: NodeId,
}

impl Server {
    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((sock, peer)) => {
                        let me = self.clone();
                        tokio::spawn(async move { me.connection(sock, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
        let (rd, wr) = sock.into_split();
        // Small frames arrive many to a syscall; large payloads bypass the buffer.
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer = tokio::spawn(write_loop(wr, rx));
        let in_flight = Arc::new(Semaphore::new(CONNECTION_IN_FLIGHT_MAX));
        loop {
            let permit = match in_flight.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            let (header, body) = match read_frame(&mut rd).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(FrameError::Io(e)) => {
                    tracing::debug!("{peer}: {e}");
                    break;
                }
                Err(FrameError::Protocol { request_id, error }) => {
                    tracing::warn!("{peer}: {error}; closing the connection");
                    let _ = tx.send(encode_response(0, request_id, &Err(error)));
                    break;
                }
            };
            let (opcode, id) = (header.opcode, header.request_id);
            let req = match Request::decode(opcode, body) {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!("{peer}: {error}; closing the connection");
                    let _ = tx.send(encode_response(opcode, id, &Err(error)));
                    break;
                }
            };
            let tx = tx.clone();
            let reply = move |r: Result<Response, ExtentError>| {
                let _ = tx.send(encode_response(opcode, id, &r));
                drop(permit);
            };
            if let Request::Append { extent, expected_offset, epoch, crc32c, payload } = req {
                // The acknowledgement runs wherever the append is decided (usually the
                // device's flusher) and goes straight to this connection's writer.
                let ack = Box::new(move |r: Result<u64, ExtentError>| reply(r.map(|length| Response::Appended { length })));
                self.store.submit_append(extent, expected_offset, epoch, crc32c, payload, ack);
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move { reply(me.handle(req).await) });
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn handle(&self, req: Request) -> Result<Response, ExtentError> {
        let s = &self.store;
        match req {
            Request::Create { extent, epoch, device } => s.create(extent, epoch, device).await.map(|_| Response::Done),
            Request::Read { extent, offset, len } => s.read(extent, offset, len).await.map(Response::Data),
            Request::Seal { extent, length } => s.seal(extent, length).await.map(|_| Response::Done),
            Request::Delete { extent } => s.delete(extent).await.map(|_| Response::Done),
            Request::Stat { extent } => s.stat(extent).map(Response::Stat),
            Request::List => Ok(Response::List(s.list())),
            Request::NodeStat => Ok(Response::NodeStat(NodeStat { node: self.node, devices: s.device_stats() })),
            Request::Append { .. } => unreachable!("appends are handled by the reader"),
        }
    }
}

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, wr);
    while let Some((head, tail)) = rx.recv().await {
        if w.write_all(&head).await.is_err() {
            return;
        }
        if let Some(t) = tail {
            if w.write_all(&t).await.is_err() {
                return;
            }
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
