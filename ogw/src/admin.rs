//! The gateway's admin listener (`--admin-addr`; standalone: 127.0.0.1:9001): what an
//! operator and a load balancer ask the gateway, apart from S3.
//! - `GET /metrics`: Prometheus metrics (a bearer token when `STRATA_METRICS_TOKEN`
//!   is set);
//! - `GET /health`: 200 while the process answers (liveness);
//! - `GET /ready`: 200 when the gateway can reach its SQL database and a metanode,
//!   else 503 with the reason (readiness: send it S3 traffic or not);
//! - `/console`: the web console (`console`), behind the same token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use client::MetaClient;
use tokio::net::TcpListener;

use crate::catalog::Catalog;

/// How long `/ready` waits for the database and for a metanode.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin connections that send no request for this long are closed.
pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Probe {
    catalog: Catalog,
    meta: MetaClient,
}

/// The admin routes of a gateway whose metrics are `metrics`, asking for `token`
/// (console and `/metrics`), on the cluster of the metanodes at `metanodes`.
pub fn router(
    metrics: Arc<telemetry::Metrics>,
    token: Option<String>,
    catalog: Catalog,
    metanodes: Vec<String>,
) -> Router {
    let console = crate::console::Console::start(token.clone(), metrics.clone(), catalog.clone(), metanodes.clone());
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(Probe { catalog, meta: MetaClient::new(metanodes) })
        .merge(telemetry::routes(metrics, token))
        .merge(crate::console::routes(console))
}

async fn ready(State(p): State<Probe>) -> (StatusCode, String) {
    let db = tokio::time::timeout(READY_TIMEOUT, sqlx::query("SELECT 1").execute(&p.catalog.db.pool)).await;
    match db {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")),
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, format!("database: no answer within {READY_TIMEOUT:?}\n")),
    }
    match tokio::time::timeout(READY_TIMEOUT, p.meta.status()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("metanode: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("metanode: no answer within {READY_TIMEOUT:?}\n")),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl std::future::Future<Output = ()>) {
    telemetry::http::serve(listener, app, ADMIN_IDLE_TIMEOUT, None, shutdown).await
}
