//! The web console on the gateway's admin listener (`/console`): the cluster's health,
//! metanodes, datanodes and their capacity, extents, repair, rebalance and GC, tenants
//! and buckets with their objects and bytes, and plots of the last hour (capacity,
//! requests, throughput, latency). Read-only. Everything it draws comes from
//! `/console/api/*` as JSON; the page and its script are compiled in, with no other
//! origin (it works offline; the CSP says `'self'` only).
//!
//! **Access**: the admin token (the one `/metrics` asks for: `STRATA_METRICS_TOKEN`; a
//! standalone's `DATA/metrics-token`). The login form trades it for a session cookie
//! (random, `HttpOnly`, `SameSite=Lax`, 12 h, kept in memory: a restart logs
//! everyone out); scripts may send `Authorization: Bearer TOKEN` instead. Without a
//! token configured the console is off (503 saying why), never open.

pub mod history;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use client::MetaClient;
use parking_lot::Mutex;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};

use crate::catalog::{BucketUsage, Catalog};
use history::History;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const SESSIONS_MAX: usize = 1024;
/// How long per-bucket usage (a scan of the catalog's rows) is reused; a stale one is
/// served while a new one is read in the background.
const USAGE_TTL: Duration = Duration::from_secs(30);
/// How long the cluster's status is reused: however many pages poll, the metanodes are
/// asked once per period.
const REPORT_TTL: Duration = Duration::from_secs(3);
/// How long the status may take before the page is told the metanodes do not answer.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A wrong token costs this, one at a time across all clients: guessing is slow, and
/// the log gets one warning a second at most.
const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);
const COOKIE: &str = "strata_console";

const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

pub struct Console {
    token: Option<String>,
    sessions: Mutex<HashMap<String, Instant>>,
    history: Arc<History>,
    catalog: Catalog,
    meta: Vec<String>,
    /// The status report (or why there is none) as JSON, and when it was made; locked
    /// while it is made, so concurrent pages wait for one answer.
    report: tokio::sync::Mutex<Option<(Instant, serde_json::Value)>>,
    usage: Mutex<Option<(Instant, Vec<BucketUsage>)>>,
    usage_refreshing: std::sync::atomic::AtomicBool,
    login_failures: tokio::sync::Mutex<()>,
}

impl Console {
    /// The console of a gateway whose metrics are `metrics`, asking for `token`;
    /// starts sampling the plots' figures (until the console is dropped).
    pub fn start(
        token: Option<String>,
        metrics: Arc<telemetry::Metrics>,
        catalog: Catalog,
        meta: Vec<String>,
    ) -> Arc<Console> {
        let history = Arc::new(History::default());
        // Nothing to sample for when the console is off.
        if token.is_some() {
            tokio::spawn(history::sample(Arc::downgrade(&history), metrics, MetaClient::new(meta.clone())));
        }
        Arc::new(Console {
            token,
            sessions: Mutex::default(),
            history,
            catalog,
            meta,
            report: tokio::sync::Mutex::new(None),
            usage: Mutex::new(None),
            usage_refreshing: Default::default(),
            login_failures: Default::default(),
        })
    }

    /// Whether the request carries the token or a live session.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        if telemetry::bearer_matches(headers, token) {
            return true;
        }
        let Some(id) = session_cookie(headers) else { return false };
        let mut sessions = self.sessions.lock();
        match sessions.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                sessions.remove(id);
                false
            }
            None => false,
        }
    }

    /// Per-bucket usage: read now the first time; then the last reading, read again in
    /// the background once it is `USAGE_TTL` old (a scan of a large catalog never holds
    /// up the page).
    async fn bucket_usage(self: &Arc<Self>) -> Result<Vec<BucketUsage>, String> {
        use std::sync::atomic::Ordering;
        let cached = self.usage.lock().clone();
        match cached {
            Some((at, u)) => {
                if at.elapsed() >= USAGE_TTL && !self.usage_refreshing.swap(true, Ordering::AcqRel) {
                    let c = self.clone();
                    tokio::spawn(async move {
                        match c.catalog.bucket_usage().await {
                            Ok(u) => *c.usage.lock() = Some((Instant::now(), u)),
                            Err(e) => tracing::warn!("console: reading bucket usage: {e}"),
                        }
                        c.usage_refreshing.store(false, Ordering::Release);
                    });
                }
                Ok(u)
            }
            None => {
                let u = self.catalog.bucket_usage().await.map_err(|e| format!("catalog: {e}"))?;
                *self.usage.lock() = Some((Instant::now(), u.clone()));
                Ok(u)
            }
        }
    }

    fn new_session(&self) -> String {
        let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 40);
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, until| *until > now);
        while sessions.len() >= SESSIONS_MAX {
            let oldest = sessions.iter().min_by_key(|(_, until)| **until).map(|(k, _)| k.clone());
            sessions.remove(&oldest.expect("not empty"));
        }
        sessions.insert(id.clone(), now + SESSION_TTL);
        id
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

pub fn routes(c: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/console/api/overview", get(overview))
        .route("/console/api/series", get(series))
        .with_state(c)
        .layer(axum::middleware::map_response(guard_headers))
}

/// Every console answer: not cached, not framed, no other origin.
async fn guard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn off() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the console is off: it needs an admin token (set STRATA_METRICS_TOKEN; a standalone makes one)\n",
    )
        .into_response()
}

fn see(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

async fn page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.token.is_none() {
        return off();
    }
    if !c.allows(&headers) {
        return see("/console/login");
    }
    html(PAGE.to_string())
}

async fn login_page(State(c): State<Arc<Console>>) -> Response {
    if c.token.is_none() {
        return off();
    }
    html(LOGIN.replace("{error}", ""))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(c): State<Arc<Console>>, Form(f): Form<Login>) -> Response {
    let Some(token) = &c.token else { return off() };
    if !telemetry::same_secret(f.token.trim(), token) {
        let _one_at_a_time = c.login_failures.lock().await;
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        tracing::warn!("console: a login with a wrong token");
        let page = LOGIN.replace("{error}", r#"<p class="error" id="error">That is not the admin token.</p>"#);
        return (StatusCode::UNAUTHORIZED, html(page)).into_response();
    }
    let id = c.new_session();
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={}", SESSION_TTL.as_secs());
    let mut r = see("/console");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    r
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        c.sessions.lock().remove(id);
    }
    let mut r = see("/console/login");
    let gone = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Lax; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&gone).expect("ASCII"));
    r
}

fn refused(c: &Console) -> Response {
    if c.token.is_none() {
        return off();
    }
    (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": "log in first" }))).into_response()
}

#[derive(Serialize)]
struct Overview {
    /// The cluster's status as `strata status` reports it (null, and `error` says
    /// why, when no metanode answered).
    report: serde_json::Value,
    error: Option<String>,
    /// The last GC pass, as `gc status` prints it.
    gc: Option<gc::Status>,
    buckets: Vec<BucketUsage>,
    /// This gateway's figures over the last sample period.
    s3: Option<history::Point>,
    sample_period_seconds: f64,
}

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !c.allows(&headers) {
        return refused(&c);
    }
    let report = {
        let mut cached = c.report.lock().await;
        match &*cached {
            Some((at, r)) if at.elapsed() < REPORT_TTL => r.clone(),
            _ => {
                let target = client::status::Target { meta: c.meta.clone(), admin: Vec::new(), metrics_token: None };
                let r = match tokio::time::timeout(REPORT_TIMEOUT, client::status::report(&target)).await {
                    Ok(Ok(r)) => serde_json::json!({ "report": r }),
                    Ok(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
                    Err(_) => serde_json::json!({ "error": format!("no metanode answered within {REPORT_TIMEOUT:?}") }),
                };
                *cached = Some((Instant::now(), r.clone()));
                r
            }
        }
    };
    let mut error = report["error"].as_str().map(String::from);
    let gc = c.catalog.gc_status().await.ok().flatten();
    let buckets = match c.bucket_usage().await {
        Ok(u) => u,
        Err(e) => {
            error.get_or_insert(e);
            Vec::new()
        }
    };
    Json(Overview {
        report: report["report"].clone(),
        error,
        gc,
        buckets,
        s3: c.history.last(),
        sample_period_seconds: history::SAMPLE_PERIOD.as_secs_f64(),
    })
    .into_response()
}

async fn series(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !c.allows(&headers) {
        return refused(&c);
    }
    Json(serde_json::json!({
        "sample_period_seconds": history::SAMPLE_PERIOD.as_secs_f64(),
        "points": c.history.points(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; strata_console=abc; b=2"));
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("strata_consolex=abc"));
        assert_eq!(session_cookie(&h), None, "another cookie's name");
    }
}
