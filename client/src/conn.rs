//! One TCP connection to a datanode with any number of requests in flight. Requests go
//! out in the order they are submitted; responses are matched by request id. A datanode
//! this process serves itself (`proto::local`) is called directly instead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::frame::{read_frame, write_frames, FrameError, Outgoing, RESPONSE_BIT};
use proto::msg::decode_response;
use proto::{Epoch, ExtentError, ExtentId, ExtentStat, NodeId, NodeStat, Request, Response};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::limits::CONN_READ_BUFFER_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The datanode refused or failed the request.
    #[error(transparent)]
    Extent(#[from] ExtentError),
    /// The connection is gone; the request's outcome is unknown.
    #[error("connection to datanode lost: {0}")]
    Connection(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
}

type Reply = oneshot::Sender<Result<Response, ClientError>>;

struct Shared {
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

struct Pending {
    waiting: HashMap<u64, (u8, Reply)>,
    /// Set once the connection is dead; new requests fail at once.
    closed: Option<ClientError>,
}

impl Shared {
    fn close(&self, why: ClientError) {
        let waiting = {
            let mut p = self.pending.lock();
            p.closed.get_or_insert(why.clone());
            std::mem::take(&mut p.waiting)
        };
        for (_, (_, reply)) in waiting {
            let _ = reply.send(Err(why.clone()));
        }
    }
}

#[derive(Clone)]
pub struct DataNodeClient {
    link: Link,
}

#[derive(Clone)]
enum Link {
    Socket {
        shared: Arc<Shared>,
        tx: mpsc::UnboundedSender<Outgoing>,
    },
    /// A datanode in this process: requests and answers pass as values.
    Local(Arc<dyn proto::local::LocalDatanode>),
}

impl DataNodeClient {
    /// Connects to `addr` and checks that datanode `node` answers there: an address
    /// can be taken over by another datanode (a restart on another port, a process of
    /// another cluster), whose extents of the same ids are not this one's.
    pub async fn connect_node(addr: &str, node: NodeId) -> Result<DataNodeClient, ClientError> {
        let c = DataNodeClient::connect(addr).await?;
        let there = c.node_stat().await?.node;
        if there != node {
            return Err(ClientError::Connection(format!("{addr} is datanode {there} now, not datanode {node}")));
        }
        Ok(c)
    }

    /// Connects to `addr` and authenticates with the process's credential
    /// ([`proto::auth::default_credential`]); a datanode this process serves at `addr`
    /// is called directly, with no connection.
    pub async fn connect(addr: impl std::fmt::Display) -> Result<DataNodeClient, ClientError> {
        let addr = addr.to_string();
        if let Some(node) = proto::local::get(&addr) {
            // Said once per address: repair, GC and the metanode connect per operation.
            static TOLD: Mutex<Option<std::collections::HashSet<String>>> = Mutex::new(None);
            if TOLD.lock().get_or_insert_with(Default::default).insert(addr.clone()) {
                tracing::info!("datanode at {addr}: served in this process, called directly");
            }
            return Ok(DataNodeClient { link: Link::Local(node) });
        }
        DataNodeClient::connect_as(addr, proto::auth::default_credential().as_ref()).await
    }

    /// Connects to `addr` and authenticates with `cred` (`None`: as nobody, which only
    /// a datanode without cluster secrets accepts).
    pub async fn connect_as(
        addr: impl std::fmt::Display,
        cred: Option<&proto::auth::Credential>,
    ) -> Result<DataNodeClient, ClientError> {
        let addr = addr.to_string();
        let tls = proto::tls::client().map_err(ClientError::Connection)?;
        let sock = TcpStream::connect(&addr).await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let _ = sock.set_nodelay(true);
        match tls {
            None => DataNodeClient::over(sock, cred).await,
            Some(config) => {
                let sock = proto::tls::connect(config, &addr, sock)
                    .await
                    .map_err(|e| ClientError::Connection(e.to_string()))?;
                DataNodeClient::over(sock, cred).await
            }
        }
    }

    /// Runs the cluster handshake over `sock` (TCP, or a TLS session), then serves
    /// requests on it.
    async fn over<S>(mut sock: S, cred: Option<&proto::auth::Credential>) -> Result<DataNodeClient, ClientError>
    where
        S: proto::tls::Halves,
    {
        proto::auth::client_handshake(&mut sock, cred).await?;
        let (rd, wr) = sock.halves();
        let mut rd = tokio::io::BufReader::with_capacity(CONN_READ_BUFFER_BYTES, rd);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending { waiting: HashMap::new(), closed: None }),
            next_id: AtomicU64::new(1),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(wr, rx));
        let s = shared.clone();
        tokio::spawn(async move {
            let why = loop {
                let (h, body) = match read_frame(&mut rd).await {
                    Ok(Some(f)) => f,
                    Ok(None) => break ClientError::Connection("closed by the datanode".into()),
                    Err(FrameError::Io(e)) => break ClientError::Connection(e.to_string()),
                    Err(FrameError::Protocol { error, .. }) => break ClientError::Protocol(error.to_string()),
                };
                let op = h.opcode & !RESPONSE_BIT;
                if h.opcode & RESPONSE_BIT == 0 {
                    break ClientError::Protocol(format!("frame without the response bit: {:#x}", h.opcode));
                }
                let Some((sent_op, reply)) = s.pending.lock().waiting.remove(&h.request_id) else {
                    // A refusal of the connection itself (opcode 0) or of an unknown request.
                    match decode_response(op, body) {
                        Ok(Err(e)) => break ClientError::Extent(e),
                        _ => break ClientError::Protocol(format!("response to unknown request {}", h.request_id)),
                    }
                };
                if sent_op != op {
                    let _ = reply.send(Err(ClientError::Protocol(format!("opcode {op} answers opcode {sent_op}"))));
                    continue;
                }
                let r = match decode_response(op, body) {
                    Ok(r) => r.map_err(ClientError::Extent),
                    Err(e) => Err(ClientError::Protocol(e.to_string())),
                };
                let _ = reply.send(r);
            };
            s.close(why);
        });
        Ok(DataNodeClient { link: Link::Socket { shared, tx } })
    }

    /// Queues `req` now (so requests submitted one after another leave in that order)
    /// and returns the future of its response.
    pub fn submit(&self, req: Request) -> impl Future<Output = Result<Response, ClientError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = match &self.link {
            Link::Local(node) => {
                node.dispatch(req, Box::new(move |r| drop(reply.send(r.map_err(ClientError::Extent)))));
                Ok(())
            }
            Link::Socket { shared, tx } => {
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let mut p = shared.pending.lock();
                match &p.closed {
                    Some(e) => Err(e.clone()),
                    None => {
                        p.waiting.insert(id, (req.opcode() as u8, reply));
                        tx.send(req.encode(id)).map_err(|_| ClientError::Connection("writer stopped".into()))
                    }
                }
            }
        };
        async move {
            queued?;
            rx.await.map_err(|_| ClientError::Connection("dropped".into()))?
        }
    }

    /// The connection has failed or was closed; a new one is needed.
    pub fn is_closed(&self) -> bool {
        match &self.link {
            Link::Socket { shared, .. } => shared.pending.lock().closed.is_some(),
            Link::Local(_) => false,
        }
    }

    pub async fn call(&self, req: Request) -> Result<Response, ClientError> {
        self.submit(req).await
    }

    pub async fn create(&self, extent: ExtentId, epoch: Epoch, device: u32) -> Result<(), ClientError> {
        expect_done(self.call(Request::Create { extent, epoch, device }).await?)
    }

    /// Builds an append request (CRC32C computed here) for [`DataNodeClient::submit`].
    pub fn append_request(extent: ExtentId, expected_offset: u64, epoch: Epoch, payload: Bytes) -> Request {
        Request::Append { extent, expected_offset, epoch, crc32c: proto::crc32c(&payload), payload }
    }

    /// Appends at `expected_offset`; returns the extent's length after the append.
    pub async fn append(
        &self,
        extent: ExtentId,
        expected_offset: u64,
        epoch: Epoch,
        payload: Bytes,
    ) -> Result<u64, ClientError> {
        appended(self.call(Self::append_request(extent, expected_offset, epoch, payload)).await?)
    }

    pub async fn read(&self, extent: ExtentId, offset: u64, len: u32) -> Result<Bytes, ClientError> {
        match self.call(Request::Read { extent, offset, len }).await? {
            Response::Data(d) if d.len() == len as usize => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    pub async fn seal(&self, extent: ExtentId, length: u64) -> Result<(), ClientError> {
        expect_done(self.call(Request::Seal { extent, length }).await?)
    }

    /// Fence `extent` at `epoch` and learn the length every earlier append reached.
    pub async fn fence(&self, extent: ExtentId, epoch: Epoch) -> Result<ExtentStat, ClientError> {
        match self.call(Request::Fence { extent, epoch }).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, extent: ExtentId) -> Result<(), ClientError> {
        expect_done(self.call(Request::Delete { extent }).await?)
    }

    pub async fn stat(&self, extent: ExtentId) -> Result<ExtentStat, ClientError> {
        match self.call(Request::Stat { extent }).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The records of `extent`, in order, with their CRC32Cs.
    pub async fn records(&self, extent: ExtentId) -> Result<Vec<proto::RecordStat>, ClientError> {
        match self.call(Request::Records { extent }).await? {
            Response::Records(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Asks this datanode to make its copy of a sealed extent from the others (repair).
    pub async fn rebuild(&self, r: proto::Rebuild) -> Result<ExtentStat, ClientError> {
        match self.call(Request::Rebuild(r)).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list(&self) -> Result<Vec<ExtentStat>, ClientError> {
        match self.call(Request::List).await? {
            Response::List(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn node_stat(&self) -> Result<NodeStat, ClientError> {
        match self.call(Request::NodeStat).await? {
            Response::NodeStat(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

/// The length an append response reports.
pub fn appended(r: Response) -> Result<u64, ClientError> {
    match r {
        Response::Appended { length } => Ok(length),
        other => Err(unexpected(other)),
    }
}

fn expect_done(r: Response) -> Result<(), ClientError> {
    match r {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("{r:?}"))
}
