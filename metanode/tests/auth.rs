//! Hostile callers of a metanode group with cluster secrets: unsigned, wrongly keyed,
//! tampered, replayed, stale and wrong-role requests are refused on every endpoint and
//! change nothing, while signed ones keep being served. Services without secrets refuse
//! to listen beyond loopback.

use proto::auth::{sign_http, sign_http_at, unix_now, Credential, Keyring, Role};
use proto::meta::{MetaError, Policy};
use proto::NodeId;
use testkit::{fake_datanode, Cluster};

/// Every route, with a body that would change something if it were obeyed.
fn endpoints() -> Vec<(&'static str, &'static str, String)> {
    let j = |v: serde_json::Value| v.to_string();
    let node = serde_json::to_value(fake_datanode(NodeId(5), "z")).unwrap();
    vec![
        ("GET", "/v1/status", String::new()),
        ("GET", "/v1/nodes", String::new()),
        ("POST", "/v1/nodes/register", node.to_string()),
        ("POST", "/v1/nodes/heartbeat", j(serde_json::json!({"id": 1, "devices": []}))),
        ("GET", "/v1/streams", String::new()),
        ("POST", "/v1/streams", j(serde_json::json!({"policy": "replica:1"}))),
        ("GET", "/v1/streams/1", String::new()),
        ("DELETE", "/v1/streams/1", String::new()),
        ("POST", "/v1/streams/1/open", j(serde_json::json!({"writer": "evil"}))),
        ("POST", "/v1/streams/1/extents", j(serde_json::json!({"epoch": 1, "after": null}))),
        ("POST", "/v1/extents/delete", j(serde_json::json!({"extents": [1]}))),
        ("GET", "/v1/extents/1", String::new()),
        ("POST", "/v1/extents/1/seal", j(serde_json::json!({"epoch": 1, "length": 0}))),
        ("POST", "/v1/extents/1/bad", j(serde_json::json!({"node": 1, "why": "evil"}))),
        ("GET", "/v1/tombstones", String::new()),
        ("GET", "/v1/repairs", String::new()),
        ("POST", "/v1/tombstones/1/gone", j(serde_json::json!({"nodes": [1]}))),
        ("POST", "/v1/admin/members", j(serde_json::json!({"id": 9, "addr": "127.0.0.1:1"}))),
        ("DELETE", "/v1/admin/members/2", String::new()),
        ("POST", "/v1/admin/nodes/1/state", j(serde_json::json!({"state": "draining"}))),
        ("DELETE", "/v1/admin/nodes/2", String::new()),
        ("POST", "/v1/admin/rebalance", j(serde_json::json!({"paused": true}))),
        ("GET", "/v1/admin/usage", String::new()),
        ("POST", "/raft/vote", "{}".into()),
        ("POST", "/raft/append", "{}".into()),
        ("POST", "/raft/snapshot", "{}".into()),
    ]
}

fn allowed(role: Role, path: &str) -> bool {
    if path.starts_with("/raft/") {
        role == Role::Member
    } else if role == Role::Member {
        false
    } else if path.starts_with("/v1/admin/") {
        role == Role::Admin
    } else if path.starts_with("/v1/nodes/") {
        role != Role::Client
    } else {
        true
    }
}

async fn send(
    http: &reqwest::Client,
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    auth: Option<String>,
) -> (u16, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = http.request(m, format!("http://{addr}{path}")).header("content-type", "application/json");
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.body(body.to_owned()).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What the hostile requests could change.
async fn state(c: &client::MetaClient) -> String {
    let s = c.status().await.unwrap();
    let r = c.repairs().await.unwrap();
    format!(
        "{:?} {:?} {:?} {:?} {:?} {}",
        (s.voters, s.learners),
        c.nodes().await.unwrap(),
        c.streams().await.unwrap(),
        c.tombstones().await.unwrap(),
        (s.streams, s.extents),
        r.rebalance.paused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_what_is_not_signed_by_an_allowed_role_and_nothing_changes() {
    let cl = Cluster::start(3, &["--node-grace-ms", "600000"]);
    let c = cl.client();
    c.register_node(&fake_datanode(NodeId(1), "z")).await.unwrap();
    c.register_node(&fake_datanode(NodeId(2), "y")).await.unwrap();
    let stream = c.create_stream(Policy::Replica { n: 1 }).await.unwrap();
    let leader = cl.leader().await;
    let addr = cl.members.iter().find(|m| m.id == leader).unwrap().addr.clone();
    let keys = Keyring::load(testkit::secrets()).unwrap();
    let other = Keyring::generate();
    let cred = |r: Role| keys.credential(r).unwrap();
    let before = state(&c).await;
    let http = reqwest::Client::new();
    let mut refused = 0;
    for (method, path, body) in endpoints() {
        // Tampering is tried with the secret of a role the endpoint admits.
        let ok = if path.starts_with("/raft/") { Role::Member } else { Role::Admin };
        let hostile: Vec<(String, Option<String>, u16)> = vec![
            ("unsigned".into(), None, 401),
            ("bearer".into(), Some("Bearer s3cret".into()), 401),
            (
                "another cluster's admin".into(),
                Some(sign_http(&other.credential(Role::Admin).unwrap(), method, path, body.as_bytes())),
                401,
            ),
            ("tampered body".into(), Some(sign_http(&cred(ok), method, path, b"{\"x\":1}")), 401),
            (
                "signed for another path".into(),
                Some(sign_http(
                    &cred(ok),
                    method,
                    if path == "/v1/status" { "/v1/nodes" } else { "/v1/status" },
                    body.as_bytes(),
                )),
                401,
            ),
            ("another method".into(), Some(sign_http(&cred(ok), "PUT", path, body.as_bytes())), 401),
            (
                "ten minutes old".into(),
                Some(sign_http_at(&cred(ok), method, path, body.as_bytes(), unix_now() - 600)),
                401,
            ),
            (
                "a client claiming to be an admin".into(),
                Some(
                    sign_http(&cred(Role::Client), method, path, body.as_bytes()).replace("Role=client", "Role=admin"),
                ),
                401,
            ),
        ];
        let roles = Role::ALL.into_iter().filter(|r| !allowed(*r, path));
        let wrong_role =
            roles.map(|r| (format!("role {r}"), Some(sign_http(&cred(r), method, path, body.as_bytes())), 403));
        for (what, auth, status) in hostile.into_iter().chain(wrong_role) {
            let (got, text) = send(&http, &addr, method, path, &body, auth).await;
            assert_eq!(got, status, "{what}: {method} {path}: {text}");
            let e: MetaError = serde_json::from_str(&text).unwrap();
            assert!(matches!(e, MetaError::Unauthorized { .. } | MetaError::Forbidden { .. }), "{e:?}");
            refused += 1;
        }
        // Signed requests are served meanwhile.
        c.stream(stream.id).await.unwrap();
    }
    assert!(refused > 26 * 8, "{refused}");
    assert_eq!(state(&c).await, before, "a refused request changed something");

    // A signed request once, and its replay refused.
    let auth = sign_http(&cred(Role::Client), "POST", "/v1/streams", br#"{"policy":"replica:1"}"#);
    let body = r#"{"policy":"replica:1"}"#;
    let (ok, text) = send(&http, &addr, "POST", "/v1/streams", body, Some(auth.clone())).await;
    assert_eq!(ok, 200, "{text}");
    let (again, text) = send(&http, &addr, "POST", "/v1/streams", body, Some(auth)).await;
    assert_eq!(again, 401, "{text}");
    assert!(text.contains("replay"), "{text}");
    assert_eq!(c.streams().await.unwrap().len(), 2);
    // Each role reaches what it may: a client the data plane, a node registration.
    let client =
        client::MetaClient::with_credential(cl.addrs(), client::meta::META_DEADLINE_DEFAULT, Some(cred(Role::Client)));
    client.create_stream(Policy::Replica { n: 1 }).await.unwrap();
    let r = client.set_rebalance(true).await;
    assert!(matches!(r, Err(MetaError::Forbidden { .. })), "{r:?}");
    let node =
        client::MetaClient::with_credential(cl.addrs(), client::meta::META_DEADLINE_DEFAULT, Some(cred(Role::Node)));
    node.register_node(&fake_datanode(NodeId(3), "x")).await.unwrap();
    // A client without secrets gets a clear refusal.
    let anonymous =
        client::MetaClient::with_credential(cl.addrs(), client::meta::META_DEADLINE_DEFAULT, None::<Credential>);
    let r = anonymous.streams().await;
    assert!(matches!(&r, Err(MetaError::Unauthorized { msg }) if msg.contains("STRATA_SECRETS_FILE")), "{r:?}");
}

#[test]
fn services_without_secrets_refuse_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // Each must exit at once; one that started serving instead is killed after 10 s.
    let run = |bin: std::path::PathBuf, args: &[&str]| {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .env_remove(proto::auth::SECRETS_FILE_ENV)
            .env_remove("STRATA_NODE_SECRET")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{args:?} did not refuse to start");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let data = dir.path().join("m").display().to_string();
    let (code, err) = run(testkit::metanode_bin(), &["serve", "--id", "1", "--listen", "0.0.0.0:0", "--data", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no cluster secrets") && err.contains("STRATA_SECRETS_FILE"), "{err}");
    let dev = format!("{}:16M", dir.path().join("d.img").display());
    let (code, err) = run(testkit::datanode_bin(), &["--listen", "0.0.0.0:0", "--device", &dev]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no cluster secrets"), "{err}");
    // A secrets file others may read is refused too.
    let loose = dir.path().join("loose.secrets");
    std::fs::write(&loose, Keyring::generate().to_text()).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, err) = run(
        testkit::metanode_bin(),
        &["--secrets", loose.to_str().unwrap(), "serve", "--id", "1", "--listen", "127.0.0.1:0", "--data", &data],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_and_do_not_stop_signed_requests() {
    let cl = Cluster::start(1, &["--node-grace-ms", "600000", "--idle-timeout-ms", "1500"]);
    let c = cl.client();
    c.status().await.unwrap();
    let addr = cl.members[0].addr.clone();
    let mut conns = Vec::new();
    for i in 0..500 {
        let mut t = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            tokio::io::AsyncWriteExt::write_all(&mut t, b"POST /v1/streams HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        conns.push((std::time::Instant::now(), t));
    }
    // Served meanwhile.
    let t = std::time::Instant::now();
    c.streams().await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
    // Every one is closed by the metanode, none before its timeout.
    for (opened, mut t) in conns {
        let mut b = [0u8; 512];
        loop {
            let left =
                (opened + std::time::Duration::from_secs(10)).saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, tokio::io::AsyncReadExt::read(&mut t, &mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a connection was still open 10 s after it opened"),
            }
        }
        assert!(opened.elapsed() >= std::time::Duration::from_millis(1000), "closed after {:?}", opened.elapsed());
    }
    c.status().await.unwrap();
}

/// Rotation as README describes it: a second client secret is added where it is
/// checked (metanode, datanode) and both work; then the old one is removed and only the
/// new one works. The services are restarted on the changed file each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_rotates_without_refusing_the_new_or_keeping_the_old() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.secrets");
    let secret = || proto::auth::hex(&rand::random::<[u8; 32]>());
    let (old, new, node, admin, member) = (secret(), secret(), secret(), secret(), secret());
    let write = |clients: &[&str]| {
        let mut text = format!("node = {node}\nadmin = {admin}\nmember = {member}\n");
        for c in clients {
            text.push_str(&format!("client = {c}\n"));
        }
        let _ = std::fs::remove_file(&file);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    };
    write(&[&old]);
    let path = file.display().to_string();
    let mut cl = Cluster::start_env(1, &["--node-grace-ms", "600000"], &[(proto::auth::SECRETS_FILE_ENV, &path)]);
    let admin_cred = Keyring::parse(&format!("admin = {admin}\n")).unwrap().credential(Role::Admin);
    let as_admin = client::MetaClient::with_credential(cl.addrs(), client::meta::META_DEADLINE_DEFAULT, admin_cred);
    let mut dn =
        testkit::DataNode::start_with(cl.dir.path(), NodeId(1), &cl.addrs(), "32M", false, 100, &["--secrets", &path]);
    testkit::wait_datanodes_up(&as_admin, 1).await;
    let addrs = cl.addrs();
    assert_eq!(works(&addrs, &dn.addr, &old).await, (true, true));
    assert_eq!(works(&addrs, &dn.addr, &new).await, (false, false));

    // Step 1: the new secret as a second line where it is checked.
    write(&[&old, &new]);
    restart(&mut cl, &mut dn, &as_admin).await;
    assert_eq!(works(&addrs, &dn.addr, &old).await, (true, true), "the old secret works during the rotation");
    assert_eq!(works(&addrs, &dn.addr, &new).await, (true, true), "the new secret works during the rotation");

    // Step 3: the old secret removed.
    write(&[&new]);
    restart(&mut cl, &mut dn, &as_admin).await;
    assert_eq!(works(&addrs, &dn.addr, &new).await, (true, true));
    assert_eq!(works(&addrs, &dn.addr, &old).await, (false, false), "the old secret is refused once removed");
}

fn client_cred(secret: &str) -> Credential {
    Keyring::parse(&format!("client = {secret}\n")).unwrap().credential(Role::Client).unwrap()
}

/// Whether a client presenting `secret` is served by the metanode and by the datanode.
async fn works(addrs: &[String], datanode: &str, secret: &str) -> (bool, bool) {
    let m = client::MetaClient::with_credential(
        addrs.to_vec(),
        std::time::Duration::from_secs(3),
        Some(client_cred(secret)),
    );
    let meta = m.streams().await.is_ok();
    let data = match client::DataNodeClient::connect_as(datanode, Some(&client_cred(secret))).await {
        Ok(c) => c.node_stat().await.is_ok(),
        Err(_) => false,
    };
    (meta, data)
}

/// Restarts the metanode and the datanode (on the secrets file as it is now) and waits
/// for the metanode to answer.
async fn restart(cl: &mut Cluster, dn: &mut testkit::DataNode, admin: &client::MetaClient) {
    cl.member_mut(1).kill9();
    cl.member_mut(1).start();
    dn.kill9();
    dn.spawn();
    testkit::wait_for("the leader", std::time::Duration::from_secs(30), || async { admin.streams().await.ok() }).await;
}
