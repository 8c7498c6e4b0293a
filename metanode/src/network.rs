//! Raft RPCs between metanodes: JSON over HTTP (`POST /raft/{append,vote,snapshot}`),
//! one pooled HTTP client for all peers.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use proto::auth::Credential;
use proto::meta::MemberId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::limits::{PEER_CONNECT_TIMEOUT, PEER_POOL_IDLE};
use crate::TypeConfig;

#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    cred: Option<Credential>,
}

impl Network {
    /// `cred`: the node credential RPCs are signed with (`None`: unsigned).
    pub fn new(cred: Option<Credential>) -> Network {
        let http = client::link_http(reqwest::Client::builder())
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(PEER_POOL_IDLE)
            .build()
            .expect("an HTTP client builds");
        Network { http, cred }
    }
}

pub struct Peer {
    http: reqwest::Client,
    cred: Option<Credential>,
    target: MemberId,
    node: BasicNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Peer {
        Peer { http: self.http.clone(), cred: self.cred.clone(), target, node: node.clone() }
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
        let path = format!("/raft/{what}");
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut r = self.http.post(format!("{}://{}{path}", proto::tls::scheme(), self.node.addr));
        if let Some(c) = &self.cred {
            r = r.header(reqwest::header::AUTHORIZATION, proto::auth::sign_http(c, "POST", &path, &body));
        }
        let r = r
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(option.hard_ttl())
            .send()
            .await
            .map_err(|e| {
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
