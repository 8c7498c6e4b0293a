//! Hostile S3 clients against a real `ogw standalone`: idle connections by the
//! thousand (slowloris), and an anonymous form POST of a gigabyte.

mod harness;

use std::time::{Duration, Instant};

use harness::Standalone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lets this process (and the gateway it starts) hold a few thousand sockets.
fn raise_fd_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = r.rlim_max.min(16_384);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
    assert!(r.rlim_cur >= 2200, "need 2,200 file descriptors, the hard limit is {}", r.rlim_max);
}

fn sdk(s: &Standalone) -> aws_sdk_s3::Client {
    s.sdk()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_neither_starve_a_signed_get_nor_stay_open() {
    raise_fd_limit();
    let idle = Duration::from_secs(3);
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--idle-timeout", "3s"]);
    let c = sdk(&s);
    c.create_bucket().bucket("hostile").send().await.unwrap();
    c.put_object().bucket("hostile").key("k").body(b"hello".to_vec().into()).send().await.unwrap();
    let addr = s.endpoint.trim_start_matches("http://").to_string();

    // 2,000 connections that never send a byte, and some that send half a request head.
    let mut idle_conns = Vec::new();
    for i in 0..2000 {
        let mut t = TcpStream::connect(&addr).await.unwrap();
        if i % 10 == 0 {
            t.write_all(b"GET /hostile/k HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        idle_conns.push((Instant::now(), t));
    }
    // A signed GET is answered within a second meanwhile.
    let t = Instant::now();
    let got = c.get_object().bucket("hostile").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"hello");
    assert!(t.elapsed() < Duration::from_secs(1), "a GET took {:?} beside 2,000 idle connections", t.elapsed());

    // The gateway closes every one of them after its idle timeout (and not before).
    let mut closed_after = Vec::new();
    for (i, (opened, mut t)) in idle_conns.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        let deadline = opened + idle * 4;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, t.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue, // a 408 or 400 before the close
                Err(_) => panic!("idle connection {i} was still open {:?} after it opened", opened.elapsed()),
            }
        }
        closed_after.push(opened.elapsed());
    }
    let first = closed_after.iter().min().unwrap();
    assert!(*first >= idle - Duration::from_millis(500), "closed after {first:?}, before the idle timeout");
    // And it still serves.
    c.head_object().bucket("hostile").key("k").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_gigabyte_form_post_is_refused_without_being_held_in_memory() {
    let s = Standalone::start();
    let c = sdk(&s);
    c.create_bucket().bucket("hostile").send().await.unwrap();
    let pid = s.child.id();
    let before = rss_bytes(pid);
    let addr = s.endpoint.trim_start_matches("http://").to_string();

    const FILE_BYTES: u64 = 1 << 30;
    let boundary = "----strata-hostile";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nbig\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = head.len() as u64 + FILE_BYTES + tail.len() as u64;
    let t = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = t.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let request = format!(
        "POST /hostile HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {len}\r\n\r\n{head}"
    );
    wr.write_all(request.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0u64;
    let mut peak = before;
    while sent < FILE_BYTES {
        if wr.write_all(&chunk).await.is_err() {
            break; // the gateway refused and closed
        }
        sent += chunk.len() as u64;
        if sent.is_multiple_of(64 << 20) {
            peak = peak.max(rss_bytes(pid));
        }
    }
    if sent == FILE_BYTES {
        let _ = wr.write_all(tail.as_bytes()).await;
    }
    let _ = wr.shutdown().await;
    let answer = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    peak = peak.max(rss_bytes(pid));
    eprintln!("sent {} MiB; rss {} -> peak {} MiB; answer: {answer}", sent >> 20, before >> 20, peak >> 20);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("EntityTooLarge"), "{answer}");
    assert!(peak - before < 128 << 20, "the gateway grew by {} MiB", (peak - before) >> 20);
    assert!(sent < FILE_BYTES, "the gateway read the whole gigabyte before refusing it");
    // Nothing was stored, and the gateway serves on.
    let listed = c.list_objects_v2().bucket("hostile").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0));

    // What standalone made on disk is its own: the data directory 0700, device files,
    // the database and the secrets 0600.
    use std::os::unix::fs::PermissionsExt;
    let data = s.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["datanode1.img", "ogw.db", "ogw.db-wal", "cluster.secrets", "master.key"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

/// A SigV4 request for `path_query`, signed at `time`: in headers, or as a presigned
/// URL valid for `expires` (signed as the SDKs do, by `aws-sigv4`).
fn sigv4(
    s: &Standalone,
    method: &str,
    path_query: &str,
    time: std::time::SystemTime,
    expires: Option<Duration>,
) -> reqwest::RequestBuilder {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
    let url = format!("{}{path_query}", s.endpoint);
    let mut settings = SigningSettings::default();
    match expires {
        Some(e) => {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(e);
        }
        None => settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256,
    }
    let identity = aws_credential_types::Credentials::new(&s.access, &s.secret, None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = url.split('/').nth(2).unwrap().to_string();
    let signable =
        SignableRequest::new(method, &url, [("host", host.as_str())].into_iter(), SignableBody::UnsignedPayload)
            .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut u = reqwest::Url::parse(&url).unwrap();
    for (k, v) in instructions.params() {
        u.query_pairs_mut().append_pair(k, v);
    }
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), u);
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    req
}

/// A SigV4 header-signed GET of `path` that carries its time in `Date` only (no
/// `x-amz-date`), signed by hand as AWS's documentation describes.
fn sigv4_with_date_header(s: &Standalone, path: &str, t: std::time::SystemTime) -> reqwest::RequestBuilder {
    use hmac::{KeyInit, Mac};
    use sha2::Digest;
    let t = time::OffsetDateTime::from(t);
    let amz = t.format(&time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap();
    let day = &amz[..8];
    let date = http_date(t.into());
    let host = s.endpoint.split('/').nth(2).unwrap().to_string();
    let canonical = format!(
        "GET\n{path}\n\ndate:{date}\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n\n\
         date;host;x-amz-content-sha256\nUNSIGNED-PAYLOAD"
    );
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", hex::encode(sha2::Sha256::digest(canonical.as_bytes())));
    let mac = |k: &[u8], m: &str| {
        let mut h = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(k).unwrap();
        h.update(m.as_bytes());
        h.finalize().into_bytes().to_vec()
    };
    let key = ["us-east-1", "s3", "aws4_request"]
        .iter()
        .fold(mac(format!("AWS4{}", s.secret).as_bytes(), day), |k, m| mac(&k, m));
    let sig = hex::encode(mac(&key, &to_sign));
    reqwest::Client::new()
        .get(format!("{}{path}", s.endpoint))
        .header("date", date)
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=date;host;x-amz-content-sha256, Signature={sig}",
                s.access
            ),
        )
}

/// A SigV2 header-signed GET of `path` with `date` as its Date header.
fn sigv2(s: &Standalone, path: &str, date: &str) -> reqwest::RequestBuilder {
    use hmac::{KeyInit, Mac};
    let to_sign = format!("GET\n\n\n{date}\n{path}");
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(s.secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.finalize().into_bytes());
    reqwest::Client::new()
        .get(format!("{}{path}", s.endpoint))
        .header("date", date)
        .header("authorization", format!("AWS {}:{sig}", s.access))
}

fn http_date(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap()
}

/// Status, S3 error code, and whether the body's RequestId is the header's.
async fn refusal(r: reqwest::RequestBuilder) -> (u16, String, bool) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r.headers().get("x-amz-request-id").map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    let tag = |t: &str| {
        body.split(&format!("<{t}>")).nth(1).and_then(|x| x.split(&format!("</{t}>")).next()).map(str::to_string)
    };
    let same = id.is_some() && tag("RequestId") == id;
    (status, tag("Code").unwrap_or_else(|| body.clone()), same)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_replayed_and_over_long_signatures_are_refused_with_aws_codes() {
    let s = Standalone::start();
    let c = sdk(&s);
    c.create_bucket().bucket("signed").send().await.unwrap();
    c.put_object().bucket("signed").key("k").body(b"hello".to_vec().into()).send().await.unwrap();
    let now = std::time::SystemTime::now();
    let min = |m: u64| Duration::from_secs(60 * m);

    // Well-signed requests of each kind are served (so the refusals below are about time).
    let ok = sigv4(&s, "GET", "/signed/k", now, None).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200, "{}", ok.text().await.unwrap());
    let ok = sigv4(&s, "GET", "/signed/k", now, Some(min(10))).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let ok = sigv2(&s, "/signed/k", &http_date(now)).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200, "{}", ok.text().await.unwrap());
    let ok = sigv4_with_date_header(&s, "/signed/k", now).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200, "SigV4 with only a Date header: {}", ok.text().await.unwrap());
    let week = Duration::from_secs(7 * 24 * 3600);
    let ok = sigv4(&s, "GET", "/signed/k", now, Some(week)).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    for (what, req, status, code) in [
        (
            "presigned for a week and a second",
            sigv4(&s, "GET", "/signed/k", now, Some(week + Duration::from_secs(1))),
            400,
            "AuthorizationQueryParametersError",
        ),
        (
            "presigned for 136 years",
            sigv4(&s, "GET", "/signed/k", now, Some(Duration::from_secs(u32::MAX as u64))),
            400,
            "AuthorizationQueryParametersError",
        ),
        (
            "presigned 20 minutes ago for 10",
            sigv4(&s, "GET", "/signed/k", now - min(20), Some(min(10))),
            403,
            "AccessDenied",
        ),
        (
            "SigV4 headers from 20 minutes ago",
            sigv4(&s, "GET", "/signed/k", now - min(20), None),
            403,
            "RequestTimeTooSkewed",
        ),
        (
            "SigV4 headers from 20 minutes ahead",
            sigv4(&s, "GET", "/signed/k", now + min(20), None),
            403,
            "RequestTimeTooSkewed",
        ),
        (
            "SigV2 replayed 20 minutes later",
            sigv2(&s, "/signed/k", &http_date(now - min(20))),
            403,
            "RequestTimeTooSkewed",
        ),
        ("SigV2 dated an hour ahead", sigv2(&s, "/signed/k", &http_date(now + min(60))), 403, "RequestTimeTooSkewed"),
        ("SigV2 without a date", sigv2(&s, "/signed/k", "").header("date", "not a date"), 403, "AccessDenied"),
        ("a missing key", sigv4(&s, "GET", "/signed/nope", now, None), 404, "NoSuchKey"),
        (
            "SigV4 with a Date header 20 minutes old",
            sigv4_with_date_header(&s, "/signed/k", now - min(20)),
            403,
            "RequestTimeTooSkewed",
        ),
    ] {
        let (got, got_code, same_id) = refusal(req).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{what}");
        assert!(same_id, "{what}: the error body's RequestId is the x-amz-request-id header");
    }
}

/// Links over TLS (issue 16): three metanodes (Raft over HTTPS), four datanodes and a
/// gateway, every link in a TLS session checked against the test CA. Objects written
/// through the gateway read back before and after a datanode is lost for good (its
/// copies rebuilt datanode to datanode, over TLS); a plain peer, and a TLS peer that
/// trusts another CA, are refused by both kinds of server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_link_runs_over_tls_and_plain_or_untrusting_peers_are_refused() {
    use harness::{ogw_bin, other_tenant, sqlite_db};
    use proto::NodeId;
    use testkit::{spawn_listening, Cluster, DataNode};

    let files = testkit::tls_links();
    let cl = Cluster::start(3, &["--node-grace-ms", "1000", "--repair-delay-ms", "1000"]);
    let mut dns: Vec<DataNode> =
        (1..=4).map(|i| DataNode::start_sized(cl.dir.path(), NodeId(i), &cl.addrs(), "128M", false)).collect();
    let meta = cl.client();
    testkit::wait_datanodes_up(&meta, 4).await;
    let db = sqlite_db(cl.dir.path());
    let (access, secret) = other_tenant(&db, "t1");
    let args: Vec<String> = [
        &["serve".to_string()][..],
        &db[..],
        &["--meta", &cl.addrs().join(","), "--listen", "127.0.0.1:0", "--name", "gw"].map(String::from)[..],
        &["--extent-size", "8M", "--idle-seal", "1s", "--policy", "replica:3"].map(String::from)[..],
    ]
    .concat();
    let (gw, addr) = spawn_listening(&ogw_bin(), &args, &cl.dir.path().join("gw.log"));
    let _gw = testkit::KillOnDrop(gw);
    let s3 = {
        use aws_sdk_s3::config::{Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .endpoint_url(format!("http://{addr}"))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(&access, &secret, None, None, "test"))
            .force_path_style(true)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    };
    s3.create_bucket().bucket("tls").send().await.unwrap();
    let objects: Vec<(String, Vec<u8>)> = (0..6u8)
        .map(|i| (format!("k{i}"), (0..(1 << 20) + i as usize * 4099).map(|j| (j as u8) ^ i).collect()))
        .collect();
    for (k, v) in &objects {
        s3.put_object().bucket("tls").key(k).body(v.clone().into()).send().await.unwrap();
    }
    let read_all = || async {
        for (k, v) in &objects {
            let got = s3.get_object().bucket("tls").key(k).send().await.unwrap().body.collect().await.unwrap();
            assert!(got.into_bytes() == v[..], "{k} read back other bytes");
        }
    };
    read_all().await;

    // A plain HTTP request to a metanode gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://{}/v1/status", cl.members[0].addr)).send().await;
    assert!(plain.is_err(), "a metanode answered plain HTTP: {:?}", plain.map(|r| r.status()));
    // A plain datanode client is told why it is refused.
    let dn = dns[0].addr.clone();
    let mut sock = tokio::net::TcpStream::connect(&dn).await.unwrap();
    let cred = proto::auth::default_credential();
    let e = proto::auth::client_handshake(&mut sock, cred.as_ref()).await.unwrap_err();
    assert!(e.to_string().contains("serves TLS only"), "{e}");
    // A TLS client that trusts another CA refuses both servers' certificates.
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_ca) = proto::tls::self_signed(other.path(), &["127.0.0.1".into()]).unwrap();
    let untrusting = proto::tls::client_config(&other_ca).unwrap();
    for peer in [&dn, &cl.members[1].addr] {
        let sock = tokio::net::TcpStream::connect(peer).await.unwrap();
        let e = proto::tls::connect(untrusting.clone(), peer, sock).await.unwrap_err();
        assert!(e.to_string().contains("TLS handshake"), "{peer}: {e}");
    }
    // The test CA is trusted: the same handshake to a datanode succeeds.
    let trusting = proto::tls::client_config(&files.ca).unwrap();
    proto::tls::connect(trusting, &dn, tokio::net::TcpStream::connect(&dn).await.unwrap()).await.unwrap();

    // A datanode holding copies is lost for good: its copies are rebuilt over TLS.
    let victim = harness::holders_once_sealed(&meta, Duration::from_secs(60)).await[0];
    dns[victim.0 as usize - 1].kill9();
    std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img"))).unwrap();
    harness::wait_repaired(&meta, victim, &[victim]).await;
    read_all().await;
}
