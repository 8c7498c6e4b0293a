//! HTTPS for the S3 endpoint: rustls (with ring) serving a certificate chain and key
//! from PEM files, read again on SIGHUP (a renewed certificate takes effect for new
//! connections without a restart; a file that does not parse leaves the old one in
//! place, with an error in the log). `ogw standalone --tls` makes its own CA and
//! certificate (`self_signed`) for tests and trials.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
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
