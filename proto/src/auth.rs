//! Cluster authentication: who may talk to a datanode or a metanode, and how each side
//! proves it.
//!
//! Every hop is authenticated with HMAC-SHA256 over shared secrets, one set per role
//! ([`Role`]): clients (gateways, GC, the `strata` CLI), nodes (datanodes, and
//! metanodes reaching them), administrators, and members (metanodes' Raft). A process holds the secrets of the roles it checks
//! (a [`Keyring`]) and presents one of them ([`Credential`]). Secrets never travel:
//! - a datanode connection starts with a mutual challenge-response handshake
//!   ([`client_handshake`], [`server_handshake`]): each side sends a fresh nonce and
//!   proves it holds the role's secret by an HMAC over both nonces, so neither a
//!   replayed handshake nor a server without the secret passes (the proof is of the
//!   role's secret, not of a particular datanode: one holder of the client secret can
//!   pose as a datanode to another; the client checks the datanode's id after);
//! - a metanode request carries an `Authorization` header ([`sign_http`]) with an
//!   HMAC over the method, path, time, a nonce and the body's SHA-256; each metanode
//!   refuses stale times and nonces it has seen since it started ([`ReplayGuard`]; a
//!   request captured on its way to one member can still be sent to another within
//!   the time window).
//!
//! Why HMAC rather than mTLS: the data path stays free of per-byte crypto (appends are
//! CRC-protected end to end and run at device speed), there is no CA to run, and a
//! secret file is easy to rotate. Links that cross an untrusted network also need
//! confidentiality and protection against an on-path attacker, which is TLS's job.
//!
//! A secret has an id (the first 8 bytes of its SHA-256), sent in the clear so the
//! checking side knows which of the role's secrets to use: a keyring may hold several
//! per role, which is how secrets rotate without downtime (see `README.md`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::frame::{read_body, read_header, FrameHeader, HEADER_BYTES, RESPONSE_BIT};
use crate::msg::{decode_response, encode_response, Opcode};
use crate::ExtentError;

type HmacSha256 = Hmac<Sha256>;

/// Environment variable naming the secrets file.
pub const SECRETS_FILE_ENV: &str = "STRATA_SECRETS_FILE";
/// Shortest secret accepted, in bytes (`openssl rand -hex 16` prints 32).
pub const SECRET_BYTES_MIN: usize = 32;
/// How far a signed HTTP request's time may be from the checker's clock.
pub const HTTP_TIME_SKEW_MAX: Duration = Duration::from_secs(300);
/// Nonces a [`ReplayGuard`] remembers at most (about 1,000 requests a second over twice
/// the skew window); past it, requests are refused until old ones expire.
pub const REPLAY_NONCES_MAX: usize = 1 << 20;
/// How long a datanode waits for a connection's handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Gateways, GC and the `strata` CLI: the data plane.
    Client = 1,
    /// Datanodes, and metanodes when they reach datanodes: registration, heartbeats,
    /// rebuilds.
    Node = 2,
    /// Operators: membership, node states, drain, rebalance.
    Admin = 3,
    /// Metanodes among themselves: Raft. Apart from `Node`, so that a datanode's
    /// secret cannot forge Raft messages.
    Member = 4,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Node, Role::Admin, Role::Member];

    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn env(self) -> &'static str {
        match self {
            Role::Client => "STRATA_CLIENT_SECRET",
            Role::Node => "STRATA_NODE_SECRET",
            Role::Admin => "STRATA_ADMIN_SECRET",
            Role::Member => "STRATA_MEMBER_SECRET",
        }
    }

    fn from_u8(v: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| *r as u8 == v)
    }

    fn index(self) -> usize {
        self as usize - 1
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            AuthError::Config(format!("unknown role {s:?}: the roles are client, node, admin and member"))
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secrets could not be read or are unusable.
    #[error("cluster secrets: {0}")]
    Config(String),
    /// The peer did not prove who it is.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The peer is who it says, but its role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// One secret of one role.
#[derive(Clone)]
pub struct Key {
    secret: Arc<[u8]>,
    id: [u8; 8],
}

impl Key {
    pub fn new(secret: &[u8]) -> Result<Key, AuthError> {
        if secret.len() < SECRET_BYTES_MIN {
            return Err(AuthError::Config(format!(
                "a secret of {} bytes is too short: at least {SECRET_BYTES_MIN} (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        let digest = Sha256::digest(secret);
        Ok(Key { secret: secret.into(), id: digest[..8].try_into().expect("8 bytes") })
    }

    /// A fresh random secret (64 hex digits).
    pub fn generate() -> Key {
        let bytes: [u8; 32] = rand::random();
        Key::new(hex(&bytes).as_bytes()).expect("64 bytes")
    }

    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", hex(&self.id))
    }
}

/// What a process presents: a role and the secret it signs with.
#[derive(Debug, Clone)]
pub struct Credential {
    pub role: Role,
    key: Key,
}

impl Credential {
    pub fn new(role: Role, key: Key) -> Credential {
        Credential { role, key }
    }
}

/// The secrets a process holds, per role; the first of a role signs, all of them check.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: [Vec<Key>; 4],
}

impl Keyring {
    /// One fresh secret per role.
    pub fn generate() -> Keyring {
        let mut k = Keyring::default();
        for r in Role::ALL {
            k.keys[r.index()].push(Key::generate());
        }
        k
    }

    pub fn add(&mut self, role: Role, key: Key) {
        self.keys[role.index()].push(key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.iter().all(Vec::is_empty)
    }

    pub fn has(&self, role: Role) -> bool {
        !self.keys[role.index()].is_empty()
    }

    /// The credential to present as `role`, if this keyring holds its secret.
    pub fn credential(&self, role: Role) -> Option<Credential> {
        self.keys[role.index()].first().map(|k| Credential::new(role, k.clone()))
    }

    /// The first of `roles` this keyring can present.
    pub fn credential_of(&self, roles: &[Role]) -> Option<Credential> {
        roles.iter().find_map(|r| self.credential(*r))
    }

    fn find(&self, role: Role, id: &[u8; 8]) -> Result<&Key, AuthError> {
        if self.keys[role.index()].is_empty() {
            return Err(AuthError::Unauthorized(format!(
                "this server accepts no {role} peers (it has no {role} secret)"
            )));
        }
        self.keys[role.index()].iter().find(|k| k.id == *id).ok_or_else(|| {
            AuthError::Unauthorized(format!("unknown {role} secret {} (not one of this server's)", hex(id)))
        })
    }

    /// Parses a secrets file: lines `ROLE = SECRET` (quotes optional), `#` comments.
    /// A role may have several lines: the first signs, every one is accepted.
    pub fn parse(text: &str) -> Result<Keyring, AuthError> {
        let mut k = Keyring::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| AuthError::Config(format!("line {}: {m}", n + 1));
            let (role, secret) = line.split_once('=').ok_or_else(|| at("expected `ROLE = SECRET`".into()))?;
            let role: Role = role.trim().parse().map_err(|e: AuthError| at(e.to_string()))?;
            let secret = secret.trim().trim_matches('"');
            k.add(role, Key::new(secret.as_bytes()).map_err(|e| at(e.to_string()))?);
        }
        if k.is_empty() {
            return Err(AuthError::Config("no secrets in the file".into()));
        }
        k.check_distinct()?;
        Ok(k)
    }

    /// One secret serving two roles would merge them: refused.
    fn check_distinct(&self) -> Result<(), AuthError> {
        for (i, a) in self.keys.iter().enumerate() {
            for b in &self.keys[i + 1..] {
                if a.iter().any(|x| b.iter().any(|y| x.id == y.id)) {
                    return Err(AuthError::Config("the same secret is given to two roles: each needs its own".into()));
                }
            }
        }
        Ok(())
    }

    /// The file form of this keyring (what [`Keyring::parse`] reads).
    pub fn to_text(&self) -> String {
        let mut out = String::from("# Strata cluster secrets: keep this file private (mode 0600).\n");
        for r in Role::ALL {
            for key in &self.keys[r.index()] {
                out.push_str(&format!("{} = \"{}\"\n", r.name(), String::from_utf8_lossy(&key.secret)));
            }
        }
        out
    }

    /// Reads a secrets file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<Keyring, AuthError> {
        let cfg = |m: String| AuthError::Config(format!("{}: {m}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| cfg(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(cfg(format!("mode {mode:o} lets others read it: chmod 600 it")));
            }
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            if meta.uid() != uid {
                return Err(cfg(format!("owned by uid {}, not by this process's uid {uid}", meta.uid())));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| cfg(e.to_string()))?;
        Keyring::parse(&text).map_err(|e| cfg(e.to_string()))
    }

    /// Writes the keyring to a new file of mode 0600 (failing if it exists).
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(path)?;
        f.write_all(self.to_text().as_bytes())?;
        f.sync_all()
    }

    /// The process's secrets: the file `path` if given, else the file named by
    /// `STRATA_SECRETS_FILE`, else `STRATA_CLIENT_SECRET`, `STRATA_NODE_SECRET` and
    /// `STRATA_ADMIN_SECRET`. `None` when none of these is set.
    pub fn from_env_or(path: Option<&Path>) -> Result<Option<Keyring>, AuthError> {
        if let Some(p) = path {
            return Keyring::load(p).map(Some);
        }
        if let Some(p) = std::env::var_os(SECRETS_FILE_ENV).filter(|p| !p.is_empty()) {
            return Keyring::load(Path::new(&p)).map(Some);
        }
        let mut k = Keyring::default();
        for r in Role::ALL {
            if let Ok(s) = std::env::var(r.env()) {
                k.add(r, Key::new(s.as_bytes()).map_err(|e| AuthError::Config(format!("{}: {e}", r.env())))?);
            }
        }
        k.check_distinct()?;
        Ok((!k.is_empty()).then_some(k))
    }
}

/// Whether a server bound to `addr` can be reached from this machine only.
pub fn loopback_only(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The message of a service that refuses to listen beyond loopback without secrets.
pub fn no_secrets_refusal(service: &str, addr: &SocketAddr) -> String {
    format!(
        "{service}: no cluster secrets, so it would accept anyone on {addr}; set {SECRETS_FILE_ENV} to a secrets \
         file (`metanode secrets FILE` makes one) or listen on a loopback address only"
    )
}

// The process's credential.

fn default_slot() -> &'static RwLock<Option<Credential>> {
    static SLOT: OnceLock<RwLock<Option<Credential>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

/// Sets the credential this process presents to datanodes and metanodes (what a
/// binary does once at start; `None`: present none).
pub fn set_default(c: Option<Credential>) {
    *default_slot().write() = c;
}

/// The credential set by [`set_default`].
pub fn default_credential() -> Option<Credential> {
    default_slot().read().clone()
}

// The datanode handshake.

/// Opcodes of the handshake frames (outside [`Opcode`]'s range: they are not requests).
pub const HELLO_OPCODE: u8 = 0x40;
pub const PROOF_OPCODE: u8 = 0x41;
const NONCE_BYTES: usize = 32;
const PROOF_BYTES: usize = 32;
const HELLO_BODY_BYTES: usize = 1 + 8 + NONCE_BYTES;
const CHALLENGE_BODY_BYTES: usize = 1 + 1 + NONCE_BYTES + PROOF_BYTES;
/// Largest frame body read during the handshake (a refusal with its message).
const HANDSHAKE_BODY_BYTES_MAX: u32 = 4096;

fn proof(key: &Key, label: &[u8], role: Role, client_nonce: &[u8], server_nonce: &[u8]) -> HmacSha256 {
    let mut m = key.mac();
    m.update(label);
    m.update(&[role as u8]);
    m.update(client_nonce);
    m.update(server_nonce);
    m
}

const SERVER_LABEL: &[u8] = b"strata datanode server proof v1";
const CLIENT_LABEL: &[u8] = b"strata datanode client proof v1";

async fn send<W: AsyncWrite + Unpin>(w: &mut W, opcode: u8, body: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    FrameHeader { opcode, request_id: 0, body_len: body.len() as u32 }.encode(&mut out);
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, opcode: u8, e: ExtentError) -> ExtentError {
    let (head, _) = encode_response(opcode, 0, &Err(e.clone()));
    let _ = w.write_all(&head).await;
    let _ = w.flush().await;
    e
}

/// Reads one handshake frame of `opcode` and returns its body (a refusal as its error).
async fn expect<R: AsyncRead + Unpin>(r: &mut R, opcode: u8) -> Result<bytes::Bytes, ExtentError> {
    let h = match read_header(r).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(ExtentError::Unauthorized("the peer closed the connection during the handshake".into()))
        }
        Err(crate::FrameError::Io(e)) => return Err(ExtentError::Io(format!("handshake: {e}"))),
        Err(crate::FrameError::Protocol { error, .. }) => return Err(error),
    };
    // Nothing large is read from a peer that has not proved who it is.
    if h.body_len > HANDSHAKE_BODY_BYTES_MAX {
        return Err(ExtentError::Malformed(format!("a handshake frame of {} bytes", h.body_len)));
    }
    let body = read_body(r, h.body_len as usize).await.map_err(|e| ExtentError::Io(format!("handshake: {e}")))?;
    if h.opcode & RESPONSE_BIT != 0 && body.first() == Some(&1) {
        // A refusal (of the handshake, or of a request an older peer did not expect).
        return match decode_response(h.opcode & !RESPONSE_BIT, body) {
            Ok(Err(e)) => Err(e),
            _ => Err(ExtentError::Malformed("undecodable refusal during the handshake".into())),
        };
    }
    if h.opcode != opcode {
        return Err(ExtentError::Malformed(format!("expected handshake frame {opcode:#x}, got {:#x}", h.opcode)));
    }
    Ok(body)
}

/// The client side of a datanode connection's handshake. With a credential, the
/// datanode must prove it holds the same role's secret; without one, it must be a
/// datanode that runs without authentication.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cred: Option<&Credential>,
) -> Result<(), ExtentError> {
    let client_nonce: [u8; NONCE_BYTES] = rand::random();
    let mut hello = BytesMut::with_capacity(HELLO_BODY_BYTES);
    hello.put_u8(cred.map_or(0, |c| c.role as u8));
    hello.put_slice(&cred.map_or([0; 8], |c| c.key.id));
    hello.put_slice(&client_nonce);
    send(s, HELLO_OPCODE, &hello).await.map_err(|e| ExtentError::Io(format!("handshake: {e}")))?;
    let body = expect(s, HELLO_OPCODE | RESPONSE_BIT).await?;
    if body.len() != CHALLENGE_BODY_BYTES || body[0] != 0 {
        return Err(ExtentError::Malformed(format!("bad handshake challenge of {} bytes", body.len())));
    }
    let authenticated = body[1] != 0;
    let server_nonce = &body[2..2 + NONCE_BYTES];
    let server_proof = &body[2 + NONCE_BYTES..];
    let Some(cred) = cred else {
        if authenticated {
            return Err(ExtentError::Unauthorized(format!(
                "the datanode requires cluster authentication and this process has no secret (set {SECRETS_FILE_ENV})"
            )));
        }
        return Ok(());
    };
    if !authenticated {
        return Err(ExtentError::Unauthorized(
            "the datanode runs without cluster authentication, so it cannot prove it is one of this cluster's".into(),
        ));
    }
    proof(&cred.key, SERVER_LABEL, cred.role, &client_nonce, server_nonce).verify_slice(server_proof).map_err(
        |_| {
            ExtentError::Unauthorized(format!(
                "the datanode did not prove it holds this cluster's {} secret",
                cred.role
            ))
        },
    )?;
    let mine = proof(&cred.key, CLIENT_LABEL, cred.role, &client_nonce, server_nonce).finalize().into_bytes();
    send(s, PROOF_OPCODE, &mine).await.map_err(|e| ExtentError::Io(format!("handshake: {e}")))?;
    let welcome = expect(s, PROOF_OPCODE | RESPONSE_BIT).await?;
    if welcome.as_ref() != [0] {
        return Err(ExtentError::Malformed("bad handshake welcome".into()));
    }
    Ok(())
}

/// The datanode side of the handshake: who the peer is (`None`: a server without a
/// keyring, which lets anyone in). A refusal has been sent to the peer when this fails.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    keyring: Option<&Keyring>,
) -> Result<Option<Role>, ExtentError> {
    let hello = match expect(s, HELLO_OPCODE).await {
        Ok(b) => b,
        Err(e @ ExtentError::Malformed(_)) => {
            let e = ExtentError::Unauthorized(format!("a connection must start with a handshake ({e})"));
            return Err(refuse(s, 0, e).await);
        }
        Err(e) => return Err(e),
    };
    if hello.len() != HELLO_BODY_BYTES {
        let e = ExtentError::Malformed(format!("handshake hello of {} bytes", hello.len()));
        return Err(refuse(s, HELLO_OPCODE, e).await);
    }
    let role = Role::from_u8(hello[0]);
    let key_id: [u8; 8] = hello[1..9].try_into().expect("8 bytes");
    let client_nonce = &hello[9..];
    let server_nonce: [u8; NONCE_BYTES] = rand::random();
    let mut challenge = BytesMut::with_capacity(CHALLENGE_BODY_BYTES);
    challenge.put_u8(0);
    let Some(keyring) = keyring else {
        challenge.put_u8(0);
        challenge.put_slice(&server_nonce);
        challenge.put_slice(&[0; PROOF_BYTES]);
        send(s, HELLO_OPCODE | RESPONSE_BIT, &challenge).await.map_err(|e| ExtentError::Io(e.to_string()))?;
        return Ok(None);
    };
    let key = match role {
        None => Err(AuthError::Unauthorized(format!(
            "this datanode requires cluster authentication and the client presented no secret (set {SECRETS_FILE_ENV})"
        ))),
        Some(r) => keyring.find(r, &key_id),
    };
    let (role, key) = match (role, key) {
        (Some(r), Ok(k)) => (r, k),
        (_, Err(e)) => return Err(refuse(s, HELLO_OPCODE, ExtentError::Unauthorized(e.to_string())).await),
        (None, Ok(_)) => unreachable!("no key is found without a role"),
    };
    challenge.put_u8(1);
    challenge.put_slice(&server_nonce);
    challenge.put_slice(&proof(key, SERVER_LABEL, role, client_nonce, &server_nonce).finalize().into_bytes());
    send(s, HELLO_OPCODE | RESPONSE_BIT, &challenge).await.map_err(|e| ExtentError::Io(e.to_string()))?;
    let theirs = expect(s, PROOF_OPCODE).await?;
    if proof(key, CLIENT_LABEL, role, client_nonce, &server_nonce).verify_slice(&theirs).is_err() {
        let e = ExtentError::Unauthorized(format!("wrong proof of the {role} secret"));
        return Err(refuse(s, PROOF_OPCODE, e).await);
    }
    send(s, PROOF_OPCODE | RESPONSE_BIT, &[0]).await.map_err(|e| ExtentError::Io(e.to_string()))?;
    Ok(Some(role))
}

/// Whether a datanode peer of `role` may send `op` (`None`: an unauthenticated
/// server, which lets anyone do anything). Rebuilds make the datanode connect to
/// addresses the request names, so only nodes (the metanode's repair) and admins
/// may ask for them.
pub fn datanode_allows(role: Option<Role>, op: Opcode) -> bool {
    match (role, op) {
        (None, _) => true,
        (Some(Role::Client), Opcode::Rebuild) | (Some(Role::Member), _) => false,
        (Some(_), _) => true,
    }
}

// Signed HTTP requests (the metanode API).

/// The `Authorization` scheme of signed metanode requests.
pub const HTTP_SCHEME: &str = "Strata-HMAC-SHA256";

fn http_mac(key: &Key, role: Role, method: &str, path: &str, time: u64, nonce: &[u8], body: &[u8]) -> HmacSha256 {
    let mut m = key.mac();
    let head = format!("strata http v1\n{}\n{method}\n{path}\n{time}\n{}\n", role.name(), hex(nonce));
    m.update(head.as_bytes());
    m.update(hex(&Sha256::digest(body)).as_bytes());
    m
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `Authorization` header value for a request (`path` with its query).
pub fn sign_http(cred: &Credential, method: &str, path: &str, body: &[u8]) -> String {
    sign_http_at(cred, method, path, body, unix_now())
}

pub fn sign_http_at(cred: &Credential, method: &str, path: &str, body: &[u8], time: u64) -> String {
    let nonce: [u8; 16] = rand::random();
    let sig = http_mac(&cred.key, cred.role, method, path, time, &nonce, body).finalize().into_bytes();
    format!(
        "{HTTP_SCHEME} Role={},Key={},Time={time},Nonce={},Signature={}",
        cred.role.name(),
        hex(&cred.key.id),
        hex(&nonce),
        hex(&sig)
    )
}

/// A parsed `Authorization` header of a signed request, checked in two steps: what can
/// be checked before the body is read ([`HttpAuth::precheck`]), then the signature.
#[derive(Debug, Clone)]
pub struct HttpAuth {
    pub role: Role,
    key_id: [u8; 8],
    time: u64,
    nonce: [u8; 16],
    signature: [u8; 32],
}

impl HttpAuth {
    pub fn parse(header: &str) -> Result<HttpAuth, AuthError> {
        let bad = |m: &str| AuthError::Unauthorized(format!("malformed {HTTP_SCHEME} authorization: {m}"));
        let rest = header
            .strip_prefix(HTTP_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| AuthError::Unauthorized(format!("expected a {HTTP_SCHEME} authorization")))?;
        let (mut role, mut key, mut time, mut nonce, mut sig) = (None, None, None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(|| bad("expected KEY=VALUE pairs"))?;
            match k {
                "Role" => role = Some(v.parse::<Role>().map_err(|_| bad("unknown role"))?),
                "Key" => key = Some(unhex::<8>(v).ok_or_else(|| bad("Key is not 16 hex digits"))?),
                "Time" => time = Some(v.parse::<u64>().map_err(|_| bad("Time is not a number"))?),
                "Nonce" => nonce = Some(unhex::<16>(v).ok_or_else(|| bad("Nonce is not 32 hex digits"))?),
                "Signature" => sig = Some(unhex::<32>(v).ok_or_else(|| bad("Signature is not 64 hex digits"))?),
                _ => return Err(bad(&format!("unknown field {k}"))),
            }
        }
        Ok(HttpAuth {
            role: role.ok_or_else(|| bad("no Role"))?,
            key_id: key.ok_or_else(|| bad("no Key"))?,
            time: time.ok_or_else(|| bad("no Time"))?,
            nonce: nonce.ok_or_else(|| bad("no Nonce"))?,
            signature: sig.ok_or_else(|| bad("no Signature"))?,
        })
    }

    /// The checks that need no body: the role's secret is known and the time is fresh.
    pub fn precheck(&self, keyring: &Keyring, now: u64) -> Result<(), AuthError> {
        keyring.find(self.role, &self.key_id)?;
        if now.abs_diff(self.time) > HTTP_TIME_SKEW_MAX.as_secs() {
            return Err(AuthError::Unauthorized(format!(
                "request time {} is {} s from this server's clock (at most {} s allowed)",
                self.time,
                now.abs_diff(self.time),
                HTTP_TIME_SKEW_MAX.as_secs()
            )));
        }
        Ok(())
    }

    /// Checks the signature over the request, then that its nonce was not seen before.
    pub fn verify(
        &self,
        keyring: &Keyring,
        guard: &ReplayGuard,
        method: &str,
        path: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Role, AuthError> {
        self.precheck(keyring, now)?;
        let key = keyring.find(self.role, &self.key_id)?;
        http_mac(key, self.role, method, path, self.time, &self.nonce, body)
            .verify_slice(&self.signature)
            .map_err(|_| AuthError::Unauthorized("signature does not match".into()))?;
        guard.admit(self.nonce, self.time, now)?;
        Ok(self.role)
    }
}

/// The nonces of signed requests seen within the time window, so that a captured
/// request cannot be sent again.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<std::collections::HashMap<[u8; 16], u64>>,
}

impl ReplayGuard {
    fn admit(&self, nonce: [u8; 16], time: u64, now: u64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock();
        if seen.len() >= REPLAY_NONCES_MAX / 2 {
            let window = HTTP_TIME_SKEW_MAX.as_secs();
            seen.retain(|_, t| now.abs_diff(*t) <= window);
            if seen.len() >= REPLAY_NONCES_MAX {
                return Err(AuthError::Unauthorized("too many signed requests in the time window".into()));
            }
        }
        if seen.insert(nonce, time).is_some() {
            return Err(AuthError::Unauthorized("this signed request was already received (a replay)".into()));
        }
        Ok(())
    }
}

/// Which metanode API paths a role may call (`method` upper case, `path` without the
/// query). Raft RPCs are for members (nodes) only; registration and heartbeats for
/// datanodes (and admins, who may register one by hand); `/v1/admin` for admins;
/// the data plane and status for everyone authenticated.
pub fn metanode_allows(role: Role, method: &str, path: &str) -> bool {
    let _ = method;
    if path.starts_with("/raft/") {
        return role == Role::Member;
    }
    if role == Role::Member {
        return false;
    }
    if path.starts_with("/v1/admin/") || path == "/v1/admin" {
        return role == Role::Admin;
    }
    if path == "/v1/nodes/register" || path == "/v1/nodes/heartbeat" {
        return role != Role::Client;
    }
    true
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::generate()
    }

    #[test]
    fn secrets_files_parse_and_round_trip() {
        let k = ring();
        let back = Keyring::parse(&k.to_text()).unwrap();
        for r in Role::ALL {
            assert_eq!(back.credential(r).unwrap().key.id, k.credential(r).unwrap().key.id);
        }
        let text = "# c\nclient = \"0123456789abcdef0123456789abcdef\"\n\nclient = 0123456789abcdef0123456789abcdeX\n";
        let two = Keyring::parse(text).unwrap();
        assert_eq!(two.keys[0].len(), 2);
        assert!(!two.has(Role::Admin));
        for (bad, says) in [
            ("client = short", "too short"),
            ("root = 0123456789abcdef0123456789abcdef", "unknown role"),
            ("client 0123456789abcdef0123456789abcdef", "expected `ROLE = SECRET`"),
            ("# nothing\n", "no secrets"),
            ("client = 0123456789abcdef0123456789abcdef\nadmin = 0123456789abcdef0123456789abcdef", "two roles"),
        ] {
            let e = Keyring::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_signed_request_verifies_once_and_only_unchanged() {
        let k = ring();
        let g = ReplayGuard::default();
        let c = k.credential(Role::Client).unwrap();
        let now = unix_now();
        let h = sign_http_at(&c, "POST", "/v1/streams", b"{}", now);
        let a = HttpAuth::parse(&h).unwrap();
        assert_eq!(a.verify(&k, &g, "POST", "/v1/streams", b"{}", now).unwrap(), Role::Client);
        let again = a.verify(&k, &g, "POST", "/v1/streams", b"{}", now).unwrap_err();
        assert!(again.to_string().contains("replay"), "{again}");
        // Any change to what was signed fails, and consumes no nonce.
        let h = sign_http_at(&c, "POST", "/v1/streams", b"{}", now);
        let a = HttpAuth::parse(&h).unwrap();
        for (m, p, b) in
            [("GET", "/v1/streams", &b"{}"[..]), ("POST", "/v1/streams/1", b"{}"), ("POST", "/v1/streams", b"{ }")]
        {
            assert!(a.verify(&k, &g, m, p, b, now).is_err(), "{m} {p}");
        }
        a.verify(&k, &g, "POST", "/v1/streams", b"{}", now).unwrap();
        // Another role's claim with this key, another cluster's keys, a stale time.
        let forged = h.replace("Role=client", "Role=admin");
        assert!(HttpAuth::parse(&forged).unwrap().verify(&k, &g, "POST", "/v1/streams", b"{}", now).is_err());
        let other = ring();
        let h = sign_http_at(&other.credential(Role::Client).unwrap(), "GET", "/v1/status", b"", now);
        let e = HttpAuth::parse(&h).unwrap().verify(&k, &g, "GET", "/v1/status", b"", now).unwrap_err();
        assert!(e.to_string().contains("unknown client secret"), "{e}");
        let old = now - HTTP_TIME_SKEW_MAX.as_secs() - 1;
        let h = sign_http_at(&c, "GET", "/v1/status", b"", old);
        let e = HttpAuth::parse(&h).unwrap().verify(&k, &g, "GET", "/v1/status", b"", now).unwrap_err();
        assert!(e.to_string().contains("from this server's clock"), "{e}");
    }

    #[test]
    fn roles_reach_only_their_endpoints() {
        assert!(metanode_allows(Role::Member, "POST", "/raft/append"));
        assert!(!metanode_allows(Role::Node, "POST", "/raft/append"));
        assert!(!metanode_allows(Role::Member, "POST", "/v1/streams"));
        assert!(!metanode_allows(Role::Admin, "POST", "/raft/vote"));
        assert!(!metanode_allows(Role::Client, "POST", "/raft/vote"));
        assert!(!metanode_allows(Role::Client, "POST", "/v1/nodes/register"));
        assert!(!metanode_allows(Role::Node, "POST", "/v1/admin/members"));
        assert!(metanode_allows(Role::Admin, "DELETE", "/v1/admin/nodes/3"));
        assert!(metanode_allows(Role::Client, "POST", "/v1/streams"));
        assert!(!datanode_allows(Some(Role::Client), Opcode::Rebuild));
        assert!(datanode_allows(Some(Role::Node), Opcode::Rebuild));
        assert!(datanode_allows(Some(Role::Client), Opcode::Append));
    }

    async fn pair(
        server: Option<Keyring>,
        client: Option<Credential>,
    ) -> (Result<Option<Role>, ExtentError>, Result<(), ExtentError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let s = tokio::spawn(async move { server_handshake(&mut a, server.as_ref()).await });
        let c = client_handshake(&mut b, client.as_ref()).await;
        drop(b);
        (s.await.unwrap(), c)
    }

    #[tokio::test]
    async fn the_handshake_admits_only_holders_of_the_secret_both_ways() {
        let k = ring();
        let (s, c) = pair(Some(k.clone()), k.credential(Role::Client)).await;
        assert_eq!(s.unwrap(), Some(Role::Client));
        c.unwrap();
        // Another cluster's client: refused on both sides, with the reason.
        let other = ring();
        let (s, c) = pair(Some(k.clone()), other.credential(Role::Node)).await;
        assert!(matches!(s, Err(ExtentError::Unauthorized(_))), "{s:?}");
        assert!(matches!(&c, Err(ExtentError::Unauthorized(m)) if m.contains("unknown node secret")), "{c:?}");
        // No credential against an authenticating server.
        let (s, c) = pair(Some(k.clone()), None).await;
        assert!(s.is_err());
        assert!(matches!(&c, Err(ExtentError::Unauthorized(m)) if m.contains("presented no secret")), "{c:?}");
        // An open server cannot pass for one of this cluster's.
        let (s, c) = pair(None, k.credential(Role::Admin)).await;
        assert_eq!(s.unwrap(), None);
        assert!(matches!(&c, Err(ExtentError::Unauthorized(m)) if m.contains("cannot prove")), "{c:?}");
        let (s, c) = pair(None, None).await;
        assert_eq!(s.unwrap(), None);
        c.unwrap();
        // A server holding a key with the client's id but not its secret (a forged
        // keyring) fails the client's check of the server's proof.
        let cred = k.credential(Role::Client).unwrap();
        let mut fake = Keyring::default();
        fake.add(Role::Client, Key { secret: Arc::from(&b"x".repeat(40)[..]), id: cred.key.id });
        let (_, c) = pair(Some(fake), Some(cred)).await;
        assert!(matches!(&c, Err(ExtentError::Unauthorized(m)) if m.contains("did not prove")), "{c:?}");
    }

    #[tokio::test]
    async fn a_client_with_a_known_key_id_but_a_wrong_proof_is_refused() {
        // Key ids travel in the clear: a peer that learned one must still fail.
        let k = ring();
        let cred = k.credential(Role::Node).unwrap();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { server_handshake(&mut a, Some(&k)).await });
        let mut hello = BytesMut::new();
        hello.put_u8(Role::Node as u8);
        hello.put_slice(&cred.key.id);
        hello.put_slice(&[7; NONCE_BYTES]);
        send(&mut b, HELLO_OPCODE, &hello).await.unwrap();
        let challenge = expect(&mut b, HELLO_OPCODE | RESPONSE_BIT).await.unwrap();
        assert_eq!(challenge[1], 1, "the server authenticates");
        // The server's own proof sent back, and a made-up one.
        send(&mut b, PROOF_OPCODE, &challenge[2 + NONCE_BYTES..]).await.unwrap();
        let refusal = expect(&mut b, PROOF_OPCODE | RESPONSE_BIT).await;
        assert!(matches!(&refusal, Err(ExtentError::Unauthorized(m)) if m.contains("wrong proof")), "{refusal:?}");
        assert!(matches!(server.await.unwrap(), Err(ExtentError::Unauthorized(_))));
    }
}
