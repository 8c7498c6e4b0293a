//! Axum's router on hyper, with what `axum::serve` lacks against whoever reaches the
//! port: at most `CONNECTIONS_MAX` connections, each closed when it sends no request
//! head within its idle timeout (new, between requests, or half sent), and a pause
//! instead of a spin when accept fails (out of descriptors). HTTPS when given an
//! acceptor. The metanode's API and every service's admin listener run on it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Connections open at once; more are closed as they arrive.
pub const CONNECTIONS_MAX: usize = 4096;
/// Pause after a failed accept (out of file descriptors), instead of spinning.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` resolves.
/// `tls`: serve HTTPS only.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    idle: Duration,
    tls: Option<proto::tls::tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            tracing::warn!("{peer}: refused: {CONNECTIONS_MAX} connections are open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut conn = hyper::server::conn::http1::Builder::new();
            conn.timer(TokioTimer::new()).header_read_timeout(idle);
            let served = match tls {
                None => conn.serve_connection(TokioIo::new(stream), svc).await,
                Some(acceptor) => match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => conn.serve_connection(TokioIo::new(s), svc).await,
                    Ok(Err(e)) => return tracing::debug!("{peer}: TLS handshake: {e}"),
                    Err(_) => return tracing::debug!("{peer}: no TLS handshake within {idle:?}"),
                },
            };
            if let Err(e) = served {
                tracing::debug!("{peer}: {e}");
            }
            drop(slot);
        });
    }
}
