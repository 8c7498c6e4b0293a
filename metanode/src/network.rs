//! Raft RPCs between metanodes: JSON over HTTP (`POST /raft/{append,vote,snapshot}`),
//! one pooled HTTP client for all peers.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use proto::meta::MemberId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::limits::{PEER_CONNECT_TIMEOUT, PEER_POOL_IDLE};
use crate::TypeConfig;

#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
}

impl Network {
    /// `token`: the cluster token to send to peers, if the group uses one.
    pub fn new(token: Option<String>) -> Network {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).expect("token is header-safe");
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(PEER_POOL_IDLE)
            .default_headers(headers)
            .build()
            .expect("a plain HTTP client builds");
        Network { http }
    }
}

pub struct Peer {
    http: reqwest::Client,
    target: MemberId,
    node: BasicNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Peer {
        Peer { http: self.http.clone(), target, node: node.clone() }
    }
}

impl Peer {
    async fn post<Req, Resp, E>(
        &self,
        what: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{what}", self.node.addr);
        let r = self.http.post(url).json(req).timeout(option.hard_ttl()).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let body: Result<Resp, RaftError<MemberId, E>> =
            r.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>> {
        self.post("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, BasicNode, RaftError<MemberId, InstallSnapshotError>>,
    > {
        self.post("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, BasicNode, RaftError<MemberId>>> {
        self.post("vote", &rpc, &option).await
    }
}
