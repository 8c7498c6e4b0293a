//! The metanode's HTTP API (axum): the Raft RPCs between members under `/raft`, and
//! the JSON API for clients, datanodes and admins under `/v1` (see `API.md`).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use proto::auth::{metanode_allows, unix_now, AuthError, HttpAuth, SECRETS_FILE_ENV};
use proto::meta::{
    AllocateExtent, CopiesGone, CreateStream, DeleteExtents, ExtentInfo, Heartbeat, Member, MemberId, MetaError,
    NodeInfo, OpenStream, RegisterNode, RepairStatus, ReportBad, SealExtent, SetNodeState, Status, StreamId,
    StreamInfo, StreamView, Tombstone,
};
use proto::{ExtentId, NodeId};

use crate::limits::{API_BODY_BYTES_MAX, RAFT_BODY_BYTES_MAX, UNVERIFIED_BODY_TIMEOUT};
use crate::node::MetaNode;
use crate::TypeConfig;

type App = State<Arc<MetaNode>>;

/// A refusal as an HTTP response: the status of its kind and the error as JSON.
pub struct ApiError(MetaError);

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A path parameter whose rejection (`/v1/streams/abc`) is an `Invalid` error.
pub struct Id<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id<T>, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Id(v)),
            Err(r) => Err(ApiError(MetaError::invalid(r.body_text()))),
        }
    }
}

/// A JSON body whose rejection (bad JSON, wrong shape, bad policy, missing
/// content type) is an `Invalid` error in the API's own format, naming what is wrong.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(ApiError(MetaError::invalid(r.body_text()))),
        }
    }
}

/// Refuses requests that are not signed with one of the cluster's secrets, or whose
/// role may not call the endpoint, when the metanode has secrets (see `proto::auth`).
/// What can be checked without the body is checked before any of it is read.
async fn authenticate(State(n): App, req: Request, next: Next) -> Response {
    let Some(keyring) = n.keyring() else { return next.run(req).await };
    let refuse = |e: AuthError| {
        let e = match e {
            AuthError::Forbidden(msg) => MetaError::Forbidden { msg },
            AuthError::Unauthorized(msg) => MetaError::Unauthorized { msg },
            other => MetaError::Unauthorized { msg: other.to_string() },
        };
        ApiError(e).into_response()
    };
    let Some(header) = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return refuse(AuthError::Unauthorized(format!(
            "this metanode requires signed requests: give the client the cluster secrets ({SECRETS_FILE_ENV})"
        )));
    };
    let auth = match HttpAuth::parse(header) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let (method, path) = (req.method().as_str().to_owned(), req.uri().path().to_owned());
    let now = unix_now();
    if let Err(e) = auth.precheck(keyring, now) {
        return refuse(e);
    }
    if !metanode_allows(auth.role, &method, &path) {
        return refuse(AuthError::Forbidden(format!("a {} may not call {method} {path}", auth.role)));
    }
    let signed = req.uri().path_and_query().map_or(path.clone(), |p| p.as_str().to_owned());
    let limit = if path.starts_with("/raft/") { RAFT_BODY_BYTES_MAX } else { API_BODY_BYTES_MAX };
    // Bodies are read before their signature can be checked (it covers their hash):
    // what all such reads may hold together is bounded, and each must arrive in time.
    let announced = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let units = announced.unwrap_or(limit).min(limit).div_ceil(1024).max(1) as u32;
    let Ok(_held) = n.unverified_bodies().clone().try_acquire_many_owned(units) else {
        let e = MetaError::unavailable("too many request bodies are being read: try again");
        return ApiError(e).into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(UNVERIFIED_BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return ApiError(MetaError::invalid(format!("request body: {e} (at most {limit} bytes)"))).into_response()
        }
        Err(_) => {
            let e = MetaError::invalid(format!("request body not received within {UNVERIFIED_BODY_TIMEOUT:?}"));
            return ApiError(e).into_response();
        }
    };
    if let Err(e) = auth.verify(keyring, n.replay_guard(), &method, &signed, &bytes, now) {
        return refuse(e);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

pub fn router(node: Arc<MetaNode>) -> Router {
    Router::new()
        .route("/raft/append", post(raft_append).layer(DefaultBodyLimit::max(RAFT_BODY_BYTES_MAX)))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot).layer(DefaultBodyLimit::max(RAFT_BODY_BYTES_MAX)))
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/register", post(register))
        .route("/v1/nodes/heartbeat", post(heartbeat))
        .route("/v1/streams", get(streams).post(create_stream))
        .route("/v1/streams/{id}", get(stream).delete(delete_stream))
        .route("/v1/streams/{id}/open", post(open_stream))
        .route("/v1/streams/{id}/extents", post(allocate))
        .route("/v1/extents/delete", post(delete_extents))
        .route("/v1/extents/counts", get(extent_counts))
        .route("/v1/extents/{id}", get(extent))
        .route("/v1/extents/{id}/seal", post(seal))
        .route("/v1/extents/{id}/bad", post(report_bad))
        .route("/v1/tombstones", get(tombstones))
        .route("/v1/repairs", get(repairs))
        .route("/v1/tombstones/{id}/gone", post(copies_gone))
        .route("/v1/admin/members", post(add_member))
        .route("/v1/admin/members/{id}", delete(remove_member))
        .route("/v1/admin/nodes/{id}/state", post(set_node_state))
        .route("/v1/admin/nodes/{id}", delete(remove_node))
        .route("/v1/admin/rebalance", post(set_rebalance))
        .route("/v1/admin/usage", get(usage))
        .fallback(|| async { ApiError(MetaError::invalid("no such endpoint")) })
        .layer(middleware::from_fn_with_state(node.clone(), authenticate))
        .with_state(node)
}

async fn raft_append(State(n): App, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> impl IntoResponse {
    Json(n.raft.append_entries(req).await)
}

async fn raft_vote(State(n): App, Json(req): Json<VoteRequest<u64>>) -> impl IntoResponse {
    Json(n.raft.vote(req).await)
}

async fn raft_snapshot(State(n): App, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> impl IntoResponse {
    Json(n.raft.install_snapshot(req).await)
}

async fn status(State(n): App) -> Json<Status> {
    Json(n.status())
}

async fn nodes(State(n): App) -> ApiResult<Vec<NodeInfo>> {
    Ok(Json(n.nodes().await?))
}

async fn register(State(n): App, Body(r): Body<RegisterNode>) -> ApiResult<NodeInfo> {
    Ok(Json(n.register(r).await?))
}

async fn heartbeat(State(n): App, Body(h): Body<Heartbeat>) -> ApiResult<()> {
    Ok(Json(n.heartbeat(h).await?))
}

async fn streams(State(n): App) -> ApiResult<Vec<StreamInfo>> {
    Ok(Json(n.streams().await?))
}

async fn create_stream(State(n): App, Body(r): Body<CreateStream>) -> ApiResult<StreamInfo> {
    Ok(Json(n.create_stream(r.policy, r.token).await?))
}

async fn stream(State(n): App, Id(id): Id<StreamId>) -> ApiResult<StreamView> {
    Ok(Json(n.stream(id).await?))
}

async fn delete_stream(State(n): App, Id(id): Id<StreamId>) -> ApiResult<()> {
    Ok(Json(n.delete_stream(id).await?))
}

async fn open_stream(State(n): App, Id(id): Id<StreamId>, Body(r): Body<OpenStream>) -> ApiResult<StreamView> {
    Ok(Json(n.open(id, r).await?))
}

async fn allocate(State(n): App, Id(id): Id<StreamId>, Body(r): Body<AllocateExtent>) -> ApiResult<ExtentInfo> {
    Ok(Json(n.allocate(id, r).await?))
}

async fn extent(State(n): App, Id(id): Id<ExtentId>) -> ApiResult<ExtentInfo> {
    Ok(Json(n.extent(id).await?))
}

async fn seal(State(n): App, Id(id): Id<ExtentId>, Body(r): Body<SealExtent>) -> ApiResult<ExtentInfo> {
    Ok(Json(n.seal(id, r).await?))
}

async fn report_bad(State(n): App, Id(id): Id<ExtentId>, Body(r): Body<ReportBad>) -> ApiResult<ExtentInfo> {
    Ok(Json(n.report_bad(id, r).await?))
}

async fn delete_extents(State(n): App, Body(r): Body<DeleteExtents>) -> ApiResult<Vec<ExtentId>> {
    Ok(Json(n.delete_extents(r.extents).await?))
}

/// What repair sees and does; the leader's view (repair runs there).
async fn extent_counts(State(n): App) -> Json<Vec<proto::meta::ExtentCounts>> {
    Json(n.extent_counts())
}

async fn repairs(State(n): App) -> ApiResult<RepairStatus> {
    n.linearizable().await?;
    Ok(Json(n.repair_status()))
}

async fn tombstones(State(n): App) -> ApiResult<Vec<Tombstone>> {
    Ok(Json(n.tombstones().await?))
}

async fn copies_gone(State(n): App, Id(id): Id<ExtentId>, Body(r): Body<CopiesGone>) -> ApiResult<()> {
    Ok(Json(n.copies_gone(id, r.nodes).await?))
}

async fn add_member(State(n): App, Body(m): Body<Member>) -> ApiResult<()> {
    Ok(Json(n.add_member(m).await?))
}

async fn remove_member(State(n): App, Id(id): Id<MemberId>) -> ApiResult<()> {
    Ok(Json(n.remove_member(id).await?))
}

async fn remove_node(State(n): App, Id(id): Id<NodeId>) -> ApiResult<()> {
    Ok(Json(n.remove_node(id).await?))
}

async fn set_rebalance(State(n): App, Body(s): Body<proto::meta::SetRebalance>) -> ApiResult<()> {
    Ok(Json(n.set_rebalance(s.paused).await?))
}

async fn set_node_state(State(n): App, Id(id): Id<NodeId>, Body(s): Body<SetNodeState>) -> ApiResult<NodeInfo> {
    Ok(Json(n.set_node_state(id, s.state).await?))
}

/// Size of this member's state machine: RocksDB keys and values, and what they hold.
async fn usage(State(n): App) -> Json<serde_json::Value> {
    let s = n.status();
    let bytes = tokio::task::block_in_place(|| n.state_bytes());
    Json(serde_json::json!({
        "state_bytes": bytes,
        "nodes": s.nodes,
        "streams": s.streams,
        "extents": s.extents,
        "tombstones": s.tombstones,
    }))
}
