//! Strata's client library. For now: [`DataNodeClient`], one multiplexed connection to
//! a datanode speaking `proto`'s frame protocol, and [`MetaClient`], the metanode's
//! HTTP API with leader discovery. LogStreams with fan-out replication
//! (issue 4) are built on it.

pub mod conn;
pub mod ec;
pub mod limits;
pub mod meta;
pub mod progress;
pub mod status;
pub mod stream;
mod stripe;

pub use conn::{ClientError, DataNodeClient};
pub use meta::MetaClient;
pub use stream::{floor_of, Floor, Slice, StreamClient, StreamConfig, StreamError, StreamWriter};

/// Runs the futures concurrently on the current task and returns their outputs in
/// order (fan-out to replicas without spawning).
pub async fn join_all<F: std::future::Future>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// Resolves on Ctrl-C or SIGTERM: how every Strata server is asked to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `builder` with this process's link TLS settings ([`proto::tls::client`]): the
/// cluster's CA bundle and nothing else when the links run over TLS.
pub fn link_http(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    proto::tls::install_provider();
    match proto::tls::client() {
        Ok(Some(config)) => builder.use_preconfigured_tls((*config).clone()),
        _ => builder,
    }
}

/// What a client process (gateway, GC) does at start: presents the client secret of
/// the cluster secrets (`path`, else `STRATA_SECRETS_FILE`, else `STRATA_CLIENT_SECRET`)
/// to metanodes and datanodes. Without secrets it presents none, which only a cluster
/// without secrets (on loopback) accepts. A CA bundle in `STRATA_TLS_CA` that
/// cannot be used is an error here too.
pub fn present_client_secret(program: &str, path: Option<&std::path::Path>) -> Result<(), proto::auth::AuthError> {
    use proto::auth::{AuthError, Keyring, Role};
    proto::tls::client().map_err(AuthError::Config)?;
    match Keyring::from_env_or(path)? {
        Some(k) => {
            let c = k.credential(Role::Client).ok_or_else(|| {
                AuthError::Config(format!("the cluster secrets hold no client secret, which {program} presents"))
            })?;
            proto::auth::set_default(Some(c));
        }
        None => eprintln!(
            "{program}: warning: no cluster secrets ({}): talking to the cluster unauthenticated",
            proto::auth::SECRETS_FILE_ENV
        ),
    }
    Ok(())
}
