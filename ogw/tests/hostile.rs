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
    use aws_sdk_s3::config::{Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .endpoint_url(&s.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(&s.access, &s.secret, None, None, "test"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
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
        idle_conns.push(t);
    }
    let opened = Instant::now();
    // A signed GET is answered within a second meanwhile.
    let t = Instant::now();
    let got = c.get_object().bucket("hostile").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"hello");
    assert!(t.elapsed() < Duration::from_secs(1), "a GET took {:?} beside 2,000 idle connections", t.elapsed());

    // The gateway closes every one of them after its idle timeout (and not before).
    let mut closed_after = Vec::new();
    for (i, mut t) in idle_conns.into_iter().enumerate() {
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
        if sent % (64 << 20) == 0 {
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
}
