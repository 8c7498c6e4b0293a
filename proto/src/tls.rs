//! TLS with rustls (and ring), for the S3 endpoint and for the cluster's own links.
//!
//! Servers ([`Certs`]) serve a certificate chain and key from PEM files, read again on
//! SIGHUP (a renewed certificate takes effect for new connections without a restart; a
//! file that does not parse leaves the old one in place, with an error in the log).
//! `ogw standalone --tls` makes its own CA and certificate ([`self_signed`]).
//!
//! Links (metanode HTTP, datanode frames) run over TLS cluster-wide or not at all: a
//! process given a CA bundle ([`CA_ENV`], or [`set_client_ca`] before its first link)
//! reaches every metanode by `https://` and every datanode through a TLS session, and
//! checks that the peer's certificate names the host it dialled. Datanodes and
//! metanodes serve TLS when given `--tls-cert` and `--tls-key`. The cluster's HMAC
//! authentication ([`crate::auth`]) runs inside the session as it does without one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
pub use {rustls, tokio_rustls};

/// The CA bundle (PEM) a process trusts for its links to metanodes and datanodes;
/// set, the process speaks TLS on every link.
pub const CA_ENV: &str = "STRATA_TLS_CA";
/// A datanode's or metanode's certificate chain (PEM) when `--tls-cert` is not given.
pub const CERT_ENV: &str = "STRATA_TLS_CERT";
/// Its private key (PEM) when `--tls-key` is not given.
pub const KEY_ENV: &str = "STRATA_TLS_KEY";
/// The first byte of every TLS connection (a handshake record).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider (if none is yet), which HTTP
/// clients built without explicit TLS settings (reqwest's) need.
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The certificate served, and the files it came from.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    /// Reads the PEM chain (leaf first) and private key.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Certs>> {
        let current = RwLock::new(Arc::new(read(cert, key)?));
        Ok(Arc::new(Certs { cert: cert.into(), key: key.into(), current }))
    }

    /// Reads the files again; keeps the certificate in use if they do not parse.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read(&self.cert, &self.key)?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// A TLS acceptor serving these certificates (HTTP/1.1 and h2 by ALPN).
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        self.acceptor_alpn(&[b"h2", b"http/1.1"])
    }

    /// A TLS acceptor offering `alpn` (none: the peer's choice does not matter).
    pub fn acceptor_alpn(self: &Arc<Self>, alpn: &[&[u8]]) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }

    /// The certificate and key named by the flags, else by [`CERT_ENV`] and
    /// [`KEY_ENV`]; `None` when neither is named. The caller starts
    /// [`Certs::reload_on_sighup`] once its runtime runs.
    pub fn from_flags_or_env(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<Arc<Certs>>> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cert = cert.map(PathBuf::from).or_else(|| env(CERT_ENV));
        let key = key.map(PathBuf::from).or_else(|| env(KEY_ENV));
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Certs::load(&c, &k).map(Some),
            (Some(_), None) => bail!("a TLS certificate needs its key (--tls-key or {KEY_ENV})"),
            (None, Some(_)) => bail!("a TLS key needs its certificate (--tls-cert or {CERT_ENV})"),
        }
    }

    /// Reloads on every SIGHUP, for as long as the process runs.
    pub fn reload_on_sighup(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let me = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match me.reload() {
                    Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate {}", me.cert.display()),
                    Err(e) => tracing::error!("SIGHUP: keeping the TLS certificate in use: {e:#}"),
                }
            }
        });
        Ok(())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate in it", cert.display());
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .with_context(|| format!("{}: a key type rustls cannot sign with", key.display()))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(ck)
}

/// Makes a CA and a certificate it signs for `names` (host names and IP addresses)
/// under `dir`, unless they are there: `ca.pem` (the bundle clients trust),
/// `cert.pem` and `key.pem` (mode 0600). Returns (cert, key, ca).
pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let (cert, key, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    if cert.exists() && key.exists() && ca.exists() {
        return Ok((cert, key, ca));
    }
    std::fs::create_dir_all(dir)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Strata standalone CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut leaf_params = rcgen::CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "Strata standalone");
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    write_private(&key, leaf_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca_cert.pem()))?;
    std::fs::write(&ca, ca_cert.pem())?;
    Ok((cert, key, ca))
}

/// A connection split into a reader and a writer task's halves: a TCP stream's own
/// halves (no lock between them), a TLS session's through a lock (it is one state).
pub trait Halves: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    type Read: tokio::io::AsyncRead + Unpin + Send + 'static;
    type Write: tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn halves(self) -> (Self::Read, Self::Write);
}

impl Halves for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Halves for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl Halves for tokio_rustls::client::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// The CA bundle of this process's links: set by [`set_client_ca`], else read from
/// [`CA_ENV`] at first use.
static CLIENT: OnceLock<Result<Option<Arc<rustls::ClientConfig>>, String>> = OnceLock::new();

/// Makes this process's links trust `ca` (`None`: run them in clear), unless a link was
/// made already or it was set before (then: an error).
pub fn set_client_ca(ca: Option<&Path>) -> anyhow::Result<()> {
    let config = match ca {
        Some(ca) => Some(client_config(ca)?),
        None => None,
    };
    CLIENT.set(Ok(config)).map_err(|_| anyhow::anyhow!("the links' TLS settings were fixed already"))
}

/// The TLS client settings of this process's links (`None`: in clear), or why the CA
/// bundle named by [`CA_ENV`] cannot be used.
pub fn client() -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    CLIENT
        .get_or_init(|| match std::env::var_os(CA_ENV).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(ca) => client_config(Path::new(&ca)).map(Some).map_err(|e| format!("{CA_ENV}: {e:#}")),
        })
        .clone()
}

/// `https` when this process's links run over TLS, else `http`.
pub fn scheme() -> &'static str {
    match client() {
        Ok(Some(_)) => "https",
        _ => "http",
    }
}

/// Client settings trusting the CA certificates in the PEM file `ca` (and nothing else).
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the CA bundle {}", ca.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate bundle", ca.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", ca.display());
    }
    for c in certs {
        roots.add(c).with_context(|| format!("{}: a certificate rustls cannot use as a root", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a TLS session over `sock` to `addr` (`host:port`, the name the server's
/// certificate must carry), with `config`.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: &str,
    sock: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    TlsConnector::from(config).connect(name, sock).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e} (does it serve TLS, with a certificate for {host} from the trusted CA?)"))
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_loads_and_a_mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _ca) = self_signed(&dir.path().join("a"), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let certs = Certs::load(&cert, &key).unwrap();
        certs.reload().unwrap();
        let (_, other_key, _) = self_signed(&dir.path().join("b"), &["localhost".into()]).unwrap();
        let e = Certs::load(&cert, &other_key).unwrap_err();
        assert!(format!("{e:#}").contains("is not the key of"), "{e:#}");
        std::fs::write(&cert, "not pem").unwrap();
        assert!(certs.reload().is_err(), "garbage does not replace the certificate in use");
    }
}
