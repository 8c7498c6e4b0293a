//! [`MetaClient`]: the metanode's HTTP API from the client side. It finds the leader by
//! itself: it follows `NotLeader` hints, tries the other addresses it knows when a
//! metanode is unreachable, and retries until its deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use proto::auth::Credential;
use proto::meta::{
    AllocateExtent, CopiesGone, CreateStream, DeleteExtents, ExtentInfo, Heartbeat, Member, MemberId, MetaError,
    NodeInfo, NodeState, OpenStream, Policy, RegisterNode, ReportBad, SealExtent, SetNodeState, Status, StreamId,
    StreamInfo, StreamView, Tombstone,
};
use proto::{Epoch, ExtentId, NodeId};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::limits::META_DEADLINE_DEFAULT;
use crate::limits::{
    META_ATTEMPT_TIMEOUT, META_BACKOFF_MAX, META_BACKOFF_MIN, META_CONNECT_TIMEOUT, META_POOL_IDLE, META_STATUS_TIMEOUT,
};

#[derive(Clone)]
pub struct MetaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    addrs: Mutex<Vec<String>>,
    /// Index into `addrs` of the member believed to lead.
    leader: AtomicUsize,
    deadline: Duration,
    /// The credential requests are signed with; `None`: the process's at the time.
    cred: Option<Option<Credential>>,
}

impl MetaClient {
    /// A client for the metanode group reachable at any of `addrs` (`host:port`).
    pub fn new(addrs: impl IntoIterator<Item = impl Into<String>>) -> MetaClient {
        MetaClient::with_deadline(addrs, META_DEADLINE_DEFAULT)
    }

    /// Signs its requests with the process's credential
    /// ([`proto::auth::default_credential`]) as it is now.
    pub fn with_deadline(addrs: impl IntoIterator<Item = impl Into<String>>, deadline: Duration) -> MetaClient {
        MetaClient::build(addrs, deadline, None)
    }

    /// A client that signs its requests with `cred` (`None`: sends them unsigned, which
    /// only a metanode without cluster secrets accepts).
    pub fn with_credential(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        deadline: Duration,
        cred: Option<Credential>,
    ) -> MetaClient {
        MetaClient::build(addrs, deadline, Some(cred))
    }

    /// `cred`: `None` for the process's credential at each request.
    fn build(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        deadline: Duration,
        cred: Option<Option<Credential>>,
    ) -> MetaClient {
        let http = crate::link_http(reqwest::Client::builder())
            .connect_timeout(META_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Shorter than the metanode's idle timeout: this side closes idle
            // connections first, so a request never goes out on one being closed.
            .pool_idle_timeout(META_POOL_IDLE)
            .build()
            .expect("an HTTP client builds");
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        assert!(!addrs.is_empty(), "a metanode client needs at least one address");
        let inner = Inner { http, addrs: Mutex::new(addrs), leader: AtomicUsize::new(0), deadline, cred };
        MetaClient { inner: Arc::new(inner) }
    }

    /// A request to `addr`, signed when this client has a credential.
    fn request(&self, method: Method, addr: &str, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut req = self.inner.http.request(method.clone(), format!("{}://{addr}{path}", proto::tls::scheme()));
        let cred = match &self.inner.cred {
            Some(c) => c.clone(),
            None => proto::auth::default_credential(),
        };
        if let Some(c) = &cred {
            req = req.header(reqwest::header::AUTHORIZATION, proto::auth::sign_http(c, method.as_str(), path, &body));
        }
        if !body.is_empty() {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        req
    }

    /// The address currently believed to be the leader's.
    pub fn leader_addr(&self) -> String {
        let addrs = self.inner.addrs.lock();
        addrs[self.inner.leader.load(Ordering::Relaxed) % addrs.len()].clone()
    }

    fn follow(&self, hint: Option<&Member>, tried: usize) {
        let mut addrs = self.inner.addrs.lock();
        let i = match hint {
            Some(m) => match addrs.iter().position(|a| *a == m.addr) {
                Some(i) => i,
                None => {
                    addrs.push(m.addr.clone());
                    addrs.len() - 1
                }
            },
            None => (tried + 1) % addrs.len(),
        };
        let _ = self.inner.leader.compare_exchange(tried, i, Ordering::Relaxed, Ordering::Relaxed);
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, MetaError> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| MetaError::invalid(format!("request body: {e}")))?,
            None => Vec::new(),
        };
        let start = Instant::now();
        let mut backoff = META_BACKOFF_MIN;
        loop {
            let i = self.inner.leader.load(Ordering::Relaxed);
            let addr = {
                let addrs = self.inner.addrs.lock();
                addrs[i % addrs.len()].clone()
            };
            let req = self.request(method.clone(), &addr, path, body.clone());
            // A member that hangs (cut off, overloaded) costs one attempt, not the deadline.
            let attempt = META_ATTEMPT_TIMEOUT.min(self.inner.deadline);
            let retry = match req.timeout(attempt).send().await {
                Ok(r) if r.status().is_success() => {
                    return r.json().await.map_err(|e| MetaError::unavailable(format!("bad answer from {addr}: {e}")));
                }
                Ok(r) => {
                    let status = r.status();
                    match r.json::<MetaError>().await {
                        Ok(MetaError::NotLeader { leader }) => {
                            self.follow(leader.as_ref(), i);
                            format!("{addr} is not the leader")
                        }
                        // An election, or a member cut off from the majority: ask another.
                        Ok(MetaError::NoQuorum { msg }) => {
                            self.follow(None, i);
                            msg
                        }
                        Ok(e) => return Err(e),
                        Err(e) => return Err(MetaError::unavailable(format!("{addr} answered {status}: {e}"))),
                    }
                }
                Err(e) => {
                    self.follow(None, i);
                    format!("{addr}: {e}")
                }
            };
            if start.elapsed() >= self.inner.deadline {
                return Err(MetaError::unavailable(format!(
                    "no metanode leader answered within {:?} (last: {retry})",
                    self.inner.deadline
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(META_BACKOFF_MAX);
        }
    }

    /// This metanode's own view (no leader needed): `GET /v1/status` of one address.
    pub async fn status_of(&self, addr: &str) -> Result<Status, MetaError> {
        let r = self
            .request(Method::GET, addr, "/v1/status", Vec::new())
            .timeout(META_STATUS_TIMEOUT)
            .send()
            .await
            .map_err(|e| MetaError::unavailable(format!("{addr}: {e}")))?;
        if !r.status().is_success() {
            return Err(r.json().await.unwrap_or_else(|e| MetaError::unavailable(format!("{addr}: {e}"))));
        }
        r.json().await.map_err(|e| MetaError::unavailable(format!("{addr}: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, MetaError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, MetaError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn status(&self) -> Result<Status, MetaError> {
        self.get("/v1/status").await
    }

    pub async fn register_node(&self, r: &RegisterNode) -> Result<NodeInfo, MetaError> {
        self.post("/v1/nodes/register", r).await
    }

    pub async fn heartbeat(&self, h: &Heartbeat) -> Result<(), MetaError> {
        self.post("/v1/nodes/heartbeat", h).await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, MetaError> {
        self.get("/v1/nodes").await
    }

    /// Pauses rebalancing (`paused`), or lets it run again.
    pub async fn set_rebalance(&self, paused: bool) -> Result<(), MetaError> {
        self.post("/v1/admin/rebalance", &proto::meta::SetRebalance { paused }).await
    }

    pub async fn set_node_state(&self, id: NodeId, state: NodeState) -> Result<NodeInfo, MetaError> {
        self.post(&format!("/v1/admin/nodes/{id}/state"), &SetNodeState { state }).await
    }

    /// Creates a stream. The request carries a token of its own, so that the retries
    /// this client makes after a lost answer create one stream, not several.
    pub async fn create_stream(&self, policy: Policy) -> Result<StreamInfo, MetaError> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        self.create_stream_once(policy, h.finish()).await
    }

    /// Creates a stream, or answers the one an earlier call with `token` made.
    pub async fn create_stream_once(&self, policy: Policy, token: u64) -> Result<StreamInfo, MetaError> {
        self.post("/v1/streams", &CreateStream { policy, token: Some(token) }).await
    }

    pub async fn streams(&self) -> Result<Vec<StreamInfo>, MetaError> {
        self.get("/v1/streams").await
    }

    pub async fn stream(&self, id: StreamId) -> Result<StreamView, MetaError> {
        self.get(&format!("/v1/streams/{id}")).await
    }

    pub async fn delete_stream(&self, id: StreamId) -> Result<(), MetaError> {
        self.call::<(), ()>(Method::DELETE, &format!("/v1/streams/{id}"), None).await
    }

    /// Opens `id` for writing: a new epoch, and the previous writer's extent sealed.
    pub async fn open_stream(&self, id: StreamId, writer: &str) -> Result<StreamView, MetaError> {
        self.post(&format!("/v1/streams/{id}/open"), &OpenStream { writer: writer.into() }).await
    }

    /// Allocates the extent that follows `after` (idempotent under retries).
    pub async fn allocate_extent(
        &self,
        stream: StreamId,
        epoch: Epoch,
        after: Option<ExtentId>,
    ) -> Result<ExtentInfo, MetaError> {
        self.post(&format!("/v1/streams/{stream}/extents"), &AllocateExtent { epoch, after }).await
    }

    pub async fn seal_extent(&self, extent: ExtentId, epoch: Epoch, length: u64) -> Result<ExtentInfo, MetaError> {
        self.post(&format!("/v1/extents/{extent}/seal"), &SealExtent { epoch, length }).await
    }

    /// Tells the metanode that `node`'s copy of `extent` is bad.
    pub async fn report_bad(&self, extent: ExtentId, node: NodeId, why: &str) -> Result<ExtentInfo, MetaError> {
        self.post(&format!("/v1/extents/{extent}/bad"), &ReportBad { node, why: why.to_string() }).await
    }

    pub async fn extent(&self, id: ExtentId) -> Result<ExtentInfo, MetaError> {
        self.get(&format!("/v1/extents/{id}")).await
    }

    /// Deletes the sealed extents of `ids` (open ones are skipped) and answers those this call deleted; idempotent. Their copies stay on
    /// the datanodes until each is deleted there and reported with `copies_gone`.
    pub async fn delete_extents(&self, ids: &[ExtentId]) -> Result<Vec<ExtentId>, MetaError> {
        self.post("/v1/extents/delete", &DeleteExtents { extents: ids.to_vec() }).await
    }

    /// What repair sees and does (the leader's view).
    pub async fn repairs(&self) -> Result<proto::meta::RepairStatus, MetaError> {
        self.get("/v1/repairs").await
    }

    /// Extents by policy and state.
    pub async fn extent_counts(&self) -> Result<Vec<proto::meta::ExtentCounts>, MetaError> {
        self.get("/v1/extents/counts").await
    }

    /// Deleted extents whose copies are not all confirmed gone.
    pub async fn tombstones(&self) -> Result<Vec<Tombstone>, MetaError> {
        self.get("/v1/tombstones").await
    }

    /// Tells the metanode that `nodes` deleted their copy of the deleted `extent`
    /// (idempotent); the tombstone goes with its last copy.
    pub async fn copies_gone(&self, extent: ExtentId, nodes: &[NodeId]) -> Result<(), MetaError> {
        self.post(&format!("/v1/tombstones/{extent}/gone"), &CopiesGone { nodes: nodes.to_vec() }).await
    }

    pub async fn add_member(&self, id: MemberId, addr: &str) -> Result<(), MetaError> {
        self.post("/v1/admin/members", &Member { id, addr: addr.into() }).await
    }

    pub async fn remove_member(&self, id: MemberId) -> Result<(), MetaError> {
        self.call::<(), ()>(Method::DELETE, &format!("/v1/admin/members/{id}"), None).await
    }

    /// Forgets a datanode that holds no copy any more (drained, or lost and repaired).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MetaError> {
        self.call::<(), ()>(Method::DELETE, &format!("/v1/admin/nodes/{id}"), None).await
    }
}
