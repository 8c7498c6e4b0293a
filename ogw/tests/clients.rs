//! Real S3 clients against real gateways: boto3 (latest, default checksums), aws cli v2
//! (Debian's `awscli`) and aws cli v1 (PyPI), run against `ogw standalone` and against
//! a cluster of separate processes (3 metanodes, 4 datanodes, 2 gateways sharing one
//! metadata database). The suites are in `tests/clients/`; `scripts/setup.sh` installs
//! the clients (`STRATA_PYTHON`, `STRATA_AWSCLI1` point at them).

mod harness;
mod sqlservers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;
use testkit::{spawn_listening, Cluster, DataNode};

/// Runs the boto3 suite.
fn run_boto3(endpoint: &str, key: (&str, &str), other: (&str, &str), log: &Path) {
    run_python_suite("boto3_suite.py", &[endpoint, key.0, key.1, other.0, other.1], "boto3 suite passed", log);
}

fn run_awscli(aws: &Path, endpoint: &str, key: (&str, &str)) {
    run_awscli_env(aws, endpoint, key, &[])
}

fn run_awscli_env(aws: &Path, endpoint: &str, key: (&str, &str), env: &[(&str, &str)]) {
    assert!(aws.exists(), "{} is missing (run scripts/setup.sh)", aws.display());
    let out = Command::new("bash")
        .arg(suite("awscli_suite.sh"))
        .arg(aws)
        .arg(endpoint)
        .envs(env.iter().copied())
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "aws cli suite ({}) failed:\n{text}", aws.display());
    assert!(text.contains("aws cli suite passed"), "{text}");
}

#[test]
fn standalone_serves_boto3() {
    let s = Standalone::start();
    let other = other_tenant(&s.db_args(), "other");
    run_boto3(&s.endpoint, (&s.access, &s.secret), (&other.0, &other.1), &s.dir.path().join("ogw.log"));
}

/// kill -9 of the whole standalone process while twelve clients PUT at once (small
/// objects, and multipart): after a restart on the same data, every acknowledged object
/// reads back identical, with the same credentials. The kill comes once SQLite group
/// commit (`ogw::db::Group`) has been seen holding several writes in one COMMIT, so
/// some of the writes it cuts are members of an open group.
#[test]
fn standalone_keeps_every_acknowledged_object_across_kill9() {
    let mut s = Standalone::start();
    let acked = s.dir.path().join("acked.txt");
    let mut writer = Command::new(python())
        .arg("-c")
        .arg(WRITER)
        .args([&s.endpoint, &s.access, &s.secret])
        .arg(&acked)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a good number of writes were acknowledged and commits were shared (not
    // after a fixed sleep).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (admin, token) = (s.admin.clone(), s.metrics_token());
    let grouped = || -> (f64, f64) {
        let text = rt.block_on(async {
            let r = reqwest::Client::new().get(format!("{admin}/metrics")).bearer_auth(&token).send().await;
            r.unwrap().text().await.unwrap()
        });
        let value = |name: &str| testkit::metric(&text, name, &[]).unwrap_or(0.0);
        (value("strata_sql_group_commits_total"), value("strata_sql_group_commit_writes_total"))
    };
    let t = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(&acked).map(|a| a.lines().count()).unwrap_or(0);
        let (commits, writes) = grouped();
        if n >= 200 && writes - commits >= 20.0 {
            println!("killing after {n} acknowledged objects; {writes} object writes in {commits} commits");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "{n} writes acknowledged and {writes} object writes in {commits} commits: no shared commits"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
    let _ = writer.wait();
    let before = (s.access.clone(), s.secret.clone());
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = Standalone::start_in(dir, &[]);
    assert_eq!((s.access.clone(), s.secret.clone()), before, "credentials survive a restart");
    let lines = std::fs::read_to_string(&acked).unwrap();
    let out = Command::new(python())
        .arg("-c")
        .arg(VERIFY)
        .args([&s.endpoint, &s.access, &s.secret])
        .arg(&acked)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    println!("{} acknowledged objects verified after kill -9: {text}", lines.lines().count());
}

/// Twelve threads PUT objects forever (small ones, and from one thread multipart ones),
/// appending `key md5` for each acknowledged one.
const WRITER: &str = r#"
import sys, os, io, hashlib, threading, boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
e, a, s, path = sys.argv[1:5]
c = boto3.client("s3", endpoint_url=e, aws_access_key_id=a, aws_secret_access_key=s, region_name="us-east-1",
                 config=Config(max_pool_connections=32, retries={"max_attempts": 1}))
c.create_bucket(Bucket="crash")
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
lock = threading.Lock()
log = open(path, "a")
def writer(w):
    i = 0
    while True:
        key = f"obj-{w}-{i}"
        if w == 0:
            size = 12 * 1024 * 1024 if i % 3 == 0 else 1000 + (i * 7919) % 300000
        else:
            size = 100 + (i * 7919 + w * 131) % 8000
        body = os.urandom(size)
        if size > 5 * 1024 * 1024:
            c.upload_fileobj(io.BytesIO(body), "crash", key, Config=cfg)
        else:
            c.put_object(Bucket="crash", Key=key, Body=body)
        with lock:
            log.write(f"{key} {hashlib.md5(body).hexdigest()}\n")
            log.flush()
        i += 1
threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

const VERIFY: &str = r#"
import sys, hashlib, boto3
e, a, s, path = sys.argv[1:5]
c = boto3.client("s3", endpoint_url=e, aws_access_key_id=a, aws_secret_access_key=s, region_name="us-east-1")
n = 0
for line in open(path):
    key, md5 = line.split()
    got = hashlib.md5(c.get_object(Bucket="crash", Key=key)["Body"].read()).hexdigest()
    assert got == md5, (key, got, md5)
    n += 1
print(f"{n} objects intact")
"#;

/// The whole boto3 suite with the metadata in PostgreSQL, then in MariaDB.
#[test]
fn standalone_on_postgres_and_mariadb_serves_boto3() {
    for server in [sqlservers::postgres(), sqlservers::mariadb()] {
        let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--db", &server.url]);
        let db = vec![
            "--db".to_string(),
            server.url.clone(),
            "--master-key".into(),
            s.dir.path().join("data/master.key").display().to_string(),
        ];
        let other = other_tenant(&db, "other");
        run_boto3(&s.endpoint, (&s.access, &s.secret), (&other.0, &other.1), &s.dir.path().join("ogw.log"));
    }
}

/// Issue 22: a second tenant's key, made by the admin command, through every kind of
/// request (six clients at once, many rounds), on each SQL backend: refusals are exactly
/// AccessDenied, ListBuckets and its own bucket work, and a refused request whose body
/// was never sent (botocore's `Expect: 100-continue`) closes its connection instead of
/// letting the next request be misread as that body (the SignatureDoesNotMatch seen in
/// CI).
#[test]
fn a_second_tenant_is_refused_exactly_and_served_on_every_backend() {
    let servers = [None, Some(sqlservers::postgres()), Some(sqlservers::mariadb())];
    for server in &servers {
        let extra: Vec<&str> = server.iter().flat_map(|sv| ["--db", sv.url.as_str()]).collect();
        let s = Standalone::start_in(tempfile::tempdir().unwrap(), &extra);
        let db = match server {
            None => s.db_args(),
            Some(sv) => vec![
                "--db".to_string(),
                sv.url.clone(),
                "--master-key".into(),
                s.dir.path().join("data/master.key").display().to_string(),
            ],
        };
        let (oa, os) = other_tenant(&db, "other");
        let args = [s.endpoint.as_str(), &s.access, &s.secret, &oa, &os, "6", "25"];
        run_python_suite("tenants.py", &args, "tenants suite passed", &s.dir.path().join("ogw.log"));
    }
}

/// Malformed XML, bad payload hashes, clock skew, oversized headers and bodies, bad
/// names: the S3 error, nothing stored, the server keeps serving. Also virtual-host
/// style addressing, and aws-chunked bodies with signed chunks (one bad chunk
/// signature refuses the upload).
#[test]
fn standalone_answers_bad_input_with_s3_errors() {
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--domain", "s3.strata.test"]);
    let out = Command::new(python())
        .arg(suite("bad_input.py"))
        .args([&s.endpoint, &s.access, &s.secret, "s3.strata.test"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("bad input suite passed"), "{text}");
    let out = Command::new(python())
        .arg(suite("signed_chunks.py"))
        .args([&s.endpoint, &s.access, &s.secret])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("signed chunks suite passed"), "{text}");
}

/// Issue 17's S3 features through boto3 (`s3_features.py`): tagging, CORS, ACLs
/// (anonymous and cross-tenant access only where granted), attributes, and the answers
/// the conformance suite found different from AWS's.
#[test]
fn standalone_serves_the_s3_features_to_boto3() {
    let s = Standalone::start();
    let other = other_tenant(&s.db_args(), "features-other");
    let args = [s.endpoint.as_str(), &s.access, &s.secret, &other.0, &other.1, "features-other"];
    run_python_suite("s3_features.py", &args, "s3 features suite passed", &s.dir.path().join("ogw.log"));
}

/// Versioning and Object Lock through boto3 (`versioning.py`): versions, delete
/// markers, the null version, suspending, listing in pages; retention, legal holds and
/// the bypass refusing and allowing deletes.
#[test]
fn standalone_keeps_versions_and_locks_for_boto3() {
    let s = Standalone::start();
    let other = other_tenant(&s.db_args(), "versioning-other");
    let args = [s.endpoint.as_str(), &s.access, &s.secret, &other.0, &other.1];
    run_python_suite("versioning.py", &args, "versioning suite passed", &s.dir.path().join("ogw.log"));
}

/// Lifecycle through boto3 (`lifecycle.py`) with a lifecycle day of 2 s (a shifted
/// clock): the rules' checks and round trip, `x-amz-expiration`, and GC's worker
/// expiring current and noncurrent versions, lone markers and old uploads by prefix,
/// tag and size, while Object Lock keeps a held version.
#[test]
fn standalone_applies_lifecycle_rules_for_boto3() {
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--lifecycle-day", "2s", "--gc-interval", "1s"]);
    let args = [s.endpoint.as_str(), &s.access, &s.secret, "2"];
    run_python_suite("lifecycle.py", &args, "lifecycle suite passed", &s.dir.path().join("ogw.log"));
}

/// Small objects kept in their catalog row (`inline.py`), at the default limit and at
/// `--inline-max 100`: read whole and by range, overwritten each way, copied (kept, and
/// rewritten to another class), copied into a part, appended to, versioned, encrypted
/// and deleted; the catalog keeps exactly the objects within the limit in their rows,
/// naming no extents, and `gc audit` finds the references right.
#[test]
fn small_objects_are_kept_in_their_rows_and_read_back_every_way() {
    for (extra, max) in [(&[][..], ogw::limits::INLINE_MAX_DEFAULT), (&["--inline-max", "100"][..], 100)] {
        let s = Standalone::start_in(tempfile::tempdir().unwrap(), extra);
        let db = s.dir.path().join("data/ogw.db");
        let args = [s.endpoint.as_str(), &s.access, &s.secret, db.to_str().unwrap(), &max.to_string()];
        run_python_suite("inline.py", &args, "inline suite passed", &s.dir.path().join("ogw.log"));
        let out = Command::new(gc_bin()).args(["audit", "--db", &s.db_args()[1]]).output().unwrap();
        assert!(out.status.success(), "gc audit: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Server-side encryption through boto3 (`encryption.py`): SSE-C, SSE-S3 and SSE-KMS
/// round trips, copies and multipart between them, refusals, a bucket's default, and
/// no encrypted object's plaintext on the devices.
#[test]
fn standalone_encrypts_at_rest_for_boto3() {
    let s = Standalone::start();
    let data = s.dir.path().display().to_string();
    let args = [s.endpoint.as_str(), &s.access, &s.secret, &data];
    run_python_suite("encryption.py", &args, "encryption suite passed", &s.dir.path().join("ogw.log"));
}

/// Random signed S3 requests over the whole path (`fuzz_s3.py`): no 5xx but 501, every
/// error an S3 XML body with the request's id, and a bucket the requests never name
/// unchanged. `STRATA_SEED` replays a run; `STRATA_FUZZ_REQUESTS` runs longer.
#[test]
fn standalone_answers_random_signed_s3_requests_without_a_server_error() {
    let seed: u64 = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with STRATA_SEED={seed})");
    let n = std::env::var("STRATA_FUZZ_REQUESTS").unwrap_or_else(|_| "3000".into());
    let s = Standalone::start();
    let args = [s.endpoint.as_str(), &s.access, &s.secret, &seed.to_string(), &n];
    run_python_suite("fuzz_s3.py", &args, "fuzz s3 passed", &s.dir.path().join("ogw.log"));
}

#[test]
fn standalone_serves_aws_cli_v2_and_v1() {
    let s = Standalone::start();
    run_awscli(Path::new("/usr/bin/aws"), &s.endpoint, (&s.access, &s.secret));
    run_awscli(&awscli_v1(), &s.endpoint, (&s.access, &s.secret));
}

/// HTTPS: boto3 (which sends aws-chunked bodies with trailing checksums over TLS only)
/// and both aws clis trust standalone's CA through `AWS_CA_BUNDLE`; without it they
/// refuse the endpoint; a certificate replaced on disk is served after SIGHUP.
#[test]
fn standalone_serves_boto3_and_aws_clis_over_https_and_reloads_its_certificate() {
    let s = Standalone::start_in(tempfile::tempdir().unwrap(), &["--tls"]);
    assert!(s.endpoint.starts_with("https://"), "{}", s.endpoint);
    let tls = s.dir.path().join("data/tls");
    let ca = tls.join("ca.pem").display().to_string();
    // boto3 and the clis read AWS_CA_BUNDLE; the suite's presigned requests go through `requests`.
    let env = [("AWS_CA_BUNDLE", ca.as_str()), ("REQUESTS_CA_BUNDLE", ca.as_str())];
    let log = s.dir.path().join("ogw.log");
    let other = other_tenant(&s.db_args(), "other");
    run_python_suite_env(
        "boto3_suite.py",
        &[&s.endpoint, &s.access, &s.secret, &other.0, &other.1],
        &env,
        "boto3 suite passed",
        &log,
    );
    run_awscli_env(Path::new("/usr/bin/aws"), &s.endpoint, (&s.access, &s.secret), &env);
    run_awscli_env(&awscli_v1(), &s.endpoint, (&s.access, &s.secret), &env);

    // Whether a TLS handshake with the endpoint verifies against `ca` (for its address).
    let port = s.endpoint.rsplit(':').next().unwrap().to_string();
    let verifies = |ca: &str| {
        let check = "import socket, ssl, sys\n\
                     ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                     with socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=5) as s:\n\
                     \x20   ctx.wrap_socket(s, server_hostname='127.0.0.1').close()\n";
        Command::new(python()).args(["-c", check, ca, &port]).output().unwrap().status.success()
    };
    assert!(verifies(&ca));
    // A client that does not trust the CA refuses the endpoint.
    let other_ca = tempfile::tempdir().unwrap();
    let (cert, key, new_ca) =
        ogw::tls::self_signed(other_ca.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
    assert!(!verifies(&new_ca.display().to_string()));
    // A new certificate in place of the old one, then SIGHUP: new connections get it.
    std::fs::copy(&cert, tls.join("cert.pem")).unwrap();
    std::fs::copy(&key, tls.join("key.pem")).unwrap();
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    let new_ca = new_ca.display().to_string();
    assert!(
        poll_until(Duration::from_secs(10), || verifies(&new_ca)),
        "the new certificate is not served after SIGHUP"
    );
    assert!(!verifies(&ca));
    // A broken file and SIGHUP: the certificate in use stays.
    std::fs::write(tls.join("cert.pem"), "garbage").unwrap();
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    assert!(poll_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("keeping the TLS certificate in use")));
    assert!(verifies(&new_ca));
}

/// Separate processes: 3 metanodes, 4 datanodes, and two stateless gateways on one
/// metadata database. Objects written through one gateway are read through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes_serves_clients_through_either_gateway() {
    let cl = Cluster::start(3, &[]);
    let _dns: Vec<DataNode> =
        (1..=4).map(|i| DataNode::start_sized(cl.dir.path(), proto::NodeId(i), &cl.addrs(), "1G", false)).collect();
    testkit::wait_datanodes_up(&cl.client(), 4).await;
    let db = sqlite_db(cl.dir.path());
    let (a1, s1) = other_tenant(&db, "tenant1");
    let (a2, s2) = other_tenant(&db, "tenant2");
    let gw = |name: &str| {
        let args: Vec<String> = [
            &["serve".to_string()][..],
            &db[..],
            &[
                "--meta".into(),
                cl.addrs().join(","),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--name".into(),
                name.into(),
            ],
        ]
        .concat();
        let (g, addr) = spawn_listening(&ogw_bin(), &args, &cl.dir.path().join(format!("{name}.log")));
        (testkit::KillOnDrop(g), addr)
    };
    let (mut g1, addr1) = gw("gw1");
    let (mut g2, addr2) = gw("gw2");
    let (e1, e2) = (format!("http://{addr1}"), format!("http://{addr2}"));
    run_boto3(&e1, (&a1, &s1), (&a2, &s2), &cl.dir.path().join("gw1.log"));
    run_awscli(Path::new("/usr/bin/aws"), &e2, (&a1, &s1));
    run_awscli(&awscli_v1(), &e1, (&a2, &s2));
    sdk_suite(&e2, &a2, &s2, "sdk-cluster").await;
    // Read-after-write and list-after-write across gateways.
    let out = Command::new(python()).arg("-c").arg(CROSS).args([&e1, &e2, &a1, &s1, &a2, &s2]).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = g1.kill();
    let _ = g2.kill();
    let _ = (g1.wait(), g2.wait());
}

const CROSS: &str = r#"
import sys, os, boto3
e1, e2, a, s, a2, s2 = sys.argv[1:7]
c1 = boto3.client("s3", endpoint_url=e1, aws_access_key_id=a, aws_secret_access_key=s, region_name="us-east-1")
c2 = boto3.client("s3", endpoint_url=e2, aws_access_key_id=a, aws_secret_access_key=s, region_name="us-east-1")
c1.create_bucket(Bucket="cross")
for i in range(20):
    body = os.urandom(1000 + i)
    c1.put_object(Bucket="cross", Key=f"k{i}", Body=body)
    assert c2.get_object(Bucket="cross", Key=f"k{i}")["Body"].read() == body, i
    keys = [o["Key"] for o in c2.list_objects_v2(Bucket="cross")["Contents"]]
    assert f"k{i}" in keys, (i, keys)
    c2.delete_object(Bucket="cross", Key=f"k{i}")
    try:
        c1.head_object(Bucket="cross", Key=f"k{i}")
        raise SystemExit(f"k{i} still visible after delete")
    except c1.exceptions.ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
# The bucket deleted through gw2 and made again there by another tenant, at once: a PUT
# by the first owner through gw1 (which read the old bucket row for its last PUT, under
# a second ago) is refused and lands nowhere; the new owner's object is untouched.
other = boto3.client("s3", endpoint_url=e2, aws_access_key_id=a2, aws_secret_access_key=s2, region_name="us-east-1")
other.list_buckets()  # its connection made before the clock starts
c1.put_object(Bucket="cross", Key="warm", Body=b"w")
c2.delete_object(Bucket="cross", Key="warm")
c2.delete_bucket(Bucket="cross")
other.create_bucket(Bucket="cross")
other.put_object(Bucket="cross", Key="theirs", Body=b"theirs")
try:
    c1.put_object(Bucket="cross", Key="theirs", Body=b"mine")
    raise SystemExit("a PUT landed in a bucket its owner had deleted and another tenant made again")
except c1.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("NoSuchBucket", "AccessDenied"), e.response
assert other.get_object(Bucket="cross", Key="theirs")["Body"].read() == b"theirs"
assert [o["Key"] for o in other.list_objects_v2(Bucket="cross")["Contents"]] == ["theirs"]
other.delete_object(Bucket="cross", Key="theirs")
other.delete_bucket(Bucket="cross")
print("cross-gateway consistency ok")
"#;

/// The Rust AWS SDK (aws-sdk-s3, default checksum behaviour: CRC32 in an aws-chunked
/// trailer) against standalone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_the_rust_aws_sdk() {
    let s = Standalone::start();
    sdk_suite(&s.endpoint, &s.access, &s.secret, "sdk").await;
}

async fn sdk_suite(endpoint: &str, access: &str, secret: &str, bucket: &str) {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::presigning::PresigningConfig;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

    let c = sdk_at(endpoint, access, secret);
    c.create_bucket().bucket(bucket).send().await.unwrap();
    let body: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let put = c.put_object().bucket(bucket).key("k/one").body(ByteStream::from(body.clone())).send().await.unwrap();
    assert!(put.checksum_crc32().is_some(), "the SDK's default CRC32 was verified and returned");
    let got = c.get_object().bucket(bucket).key("k/one").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), &body[..]);
    let part = c.get_object().bucket(bucket).key("k/one").range("bytes=4194300-4194400").send().await.unwrap();
    assert_eq!(part.body.collect().await.unwrap().into_bytes().as_ref(), &body[4_194_300..=4_194_400]);
    let again =
        c.put_object().bucket(bucket).key("k/one").if_none_match("*").body(ByteStream::from_static(b"x")).send().await;
    let again = again.unwrap_err();
    assert_eq!(again.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert_eq!(again.as_service_error().and_then(|e| e.code()), Some("PreconditionFailed"));

    // Multipart: three parts (5 MiB, 5 MiB, the rest).
    let up = c.create_multipart_upload().bucket(bucket).key("k/mp").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, chunk) in body.chunks(5 << 20).enumerate() {
        let n = n as i32 + 1;
        let p = c
            .upload_part()
            .bucket(bucket)
            .key("k/mp")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(p.e_tag().unwrap()).build());
    }
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let fin = c
        .complete_multipart_upload()
        .bucket(bucket)
        .key("k/mp")
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    assert!(fin.e_tag().unwrap().ends_with("-3\""), "{:?}", fin.e_tag());
    let got = c.get_object().bucket(bucket).key("k/mp").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), &body[..]);

    // Listing, paginated by the SDK.
    for i in 0..12 {
        c.put_object()
            .bucket(bucket)
            .key(format!("list/{i:02}"))
            .body(ByteStream::from_static(b"v"))
            .send()
            .await
            .unwrap();
    }
    let mut pages = c.list_objects_v2().bucket(bucket).prefix("list/").max_keys(5).into_paginator().send();
    let mut keys = Vec::new();
    while let Some(p) = pages.next().await {
        keys.extend(p.unwrap().contents().iter().map(|o| o.key().unwrap().to_string()));
    }
    assert_eq!(keys, (0..12).map(|i| format!("list/{i:02}")).collect::<Vec<_>>());

    // A presigned GET, fetched by a plain HTTP client.
    let pre = c
        .get_object()
        .bucket(bucket)
        .key("k/one")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let fetched = reqwest::get(pre.uri()).await.unwrap().bytes().await.unwrap();
    assert_eq!(fetched.as_ref(), &body[..]);

    let del = aws_sdk_s3::types::Delete::builder()
        .set_objects(Some(
            keys.iter().map(|k| aws_sdk_s3::types::ObjectIdentifier::builder().key(k).build().unwrap()).collect(),
        ))
        .build()
        .unwrap();
    let r = c.delete_objects().bucket(bucket).delete(del).send().await.unwrap();
    assert_eq!(r.deleted().len(), 12);
}

/// Sixteen large PUTs at once through the Rust SDK, so that the gateway's MD5 thread
/// hashes them side by side (`md5lanes`): every ETag is the MD5 of its body, bodies of
/// odd lengths and under 1 MiB included; a right Content-MD5 is taken and a wrong one
/// refused with BadDigest, leaving no object. Where the CPU has AVX-512, the metrics
/// show 16-lane passes that held several bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_puts_get_the_md5_of_their_own_bytes() {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::primitives::ByteStream;
    use base64::Engine;
    use md5::Digest;

    let s = Standalone::start();
    let c = s.sdk();
    c.create_bucket().bucket("lanes").send().await.unwrap();
    let body = |i: u32| -> Vec<u8> {
        let len = [(6 << 20) + 13, 3 << 20, (1 << 20) - 1, 1 << 20, (8 << 20) + 63][i as usize % 5];
        (0..len as u32).map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(97)) >> 13) as u8).collect()
    };
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let puts: Vec<_> = (0..16u32)
        .map(|i| {
            let (c, data) = (c.clone(), body(i));
            tokio::spawn(async move {
                let md5 = md5::Md5::digest(&data);
                let mut put = c.put_object().bucket("lanes").key(format!("k{i}"));
                if i % 4 == 1 {
                    put = put.content_md5(b64(&md5));
                }
                let etag = put.body(ByteStream::from(data)).send().await.unwrap().e_tag().unwrap().to_string();
                (i, etag, hex::encode(md5))
            })
        })
        .collect();
    for p in puts {
        let (i, etag, want) = p.await.unwrap();
        assert_eq!(etag.trim_matches('"'), want, "object k{i}");
        let head = c.head_object().bucket("lanes").key(format!("k{i}")).send().await.unwrap();
        assert_eq!(head.e_tag().unwrap().trim_matches('"'), want, "HEAD k{i}");
    }
    let wrong = c
        .put_object()
        .bucket("lanes")
        .key("wrong")
        .content_md5(b64(&md5::Md5::digest(b"other bytes")))
        .body(ByteStream::from(body(0)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(wrong.as_service_error().and_then(|e| e.code()), Some("BadDigest"));
    let gone = c.head_object().bucket("lanes").key("wrong").send().await.unwrap_err();
    assert_eq!(gone.raw_response().map(|r| r.status().as_u16()), Some(404));

    let text = reqwest::Client::new()
        .get(format!("{}/metrics", s.admin))
        .bearer_auth(s.metrics_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| testkit::metric(&text, name, &[]).unwrap_or(0.0);
    let (passes, bodies) = (value("strata_md5_lane_passes_total"), value("strata_md5_lane_pass_bodies_total"));
    println!("{passes} 16-lane passes advanced {bodies} bodies");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert!(passes > 0.0 && bodies >= 3.0 * passes, "{passes} passes for {bodies} bodies");
    }
}

/// Storage classes on a cluster of processes (a metanode, 7 datanodes, a gateway with
/// `--ec-policy ec:4+2`): boto3 writes STANDARD_IA, ONEZONE_IA, GLACIER_IR (erasure-
/// coded) and STANDARD objects, multipart and class-changing copies; then three
/// datanodes holding shards of one EC extent are killed with -9, one at a time. With
/// two dead every object reads back byte-identical; with three some reads fail (never
/// with wrong bytes); once they are back, everything reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_classes_are_erasure_coded_and_survive_m_dead_datanodes() {
    use client::{StreamClient, StreamConfig};
    use proto::meta::Policy;

    let cl = Cluster::start(1, &["--node-grace-ms", "1000"]);
    let mut dns: Vec<DataNode> =
        (1..=7).map(|i| DataNode::start_sized(cl.dir.path(), proto::NodeId(i), &cl.addrs(), "512M", false)).collect();
    testkit::wait_datanodes_up(&cl.client(), 7).await;
    let db = sqlite_db(cl.dir.path());
    let (a, s) = other_tenant(&db, "tenant1");
    let args: Vec<String> = [
        &["serve".to_string()][..],
        &db[..],
        &["--meta", &cl.addrs().join(","), "--listen", "127.0.0.1:0", "--name", "gw", "--streams", "2"]
            .map(String::from)[..],
        &["--ec-policy".into(), "ec:4+2".into()],
    ]
    .concat();
    let (gw, addr) = spawn_listening(&ogw_bin(), &args, &cl.dir.path().join("gw.log"));
    let mut gw = testkit::KillOnDrop(gw);
    let endpoint = format!("http://{addr}");
    let state = cl.dir.path().join("objects.json");
    let phase = |p: &str| {
        let out = Command::new(python())
            .arg(suite("storage_class.py"))
            .args([endpoint.as_str(), &a, &s, &state.display().to_string(), p])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "storage_class.py {p} failed:\n{text}");
        println!("{text}");
        text
    };
    phase("write");

    // The gateway made erasure-coded streams; their first extents hold object bytes.
    let sc = StreamClient::new(cl.client(), StreamConfig::default());
    let mut ec_extent = None;
    for st in sc.list_streams().await.unwrap() {
        if st.policy == (Policy::Ec { k: 4, m: 2 }) && !st.extents.is_empty() {
            ec_extent = Some(sc.meta.extent(st.extents[0]).await.unwrap());
        }
    }
    let e = ec_extent.expect("an ec:4+2 stream with data");
    assert_eq!(e.replicas.len(), 6);
    let victims: Vec<u64> = e.replicas[..3].iter().map(|r| r.node.0).collect();

    for &v in &victims[..2] {
        dns[v as usize - 1].kill9();
    }
    phase("verify");
    dns[victims[2] as usize - 1].kill9();
    let text = phase("degraded");
    let failed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("degraded: "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|f| f.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the degraded phase reports its counts");
    assert!(failed > 0, "objects on extent {} have three of six shards dead:\n{text}", e.id);
    for &v in &victims {
        dns[v as usize - 1].spawn();
    }
    testkit::wait_datanodes_up(&cl.client(), 7).await;
    phase("verify");
    let _ = gw.kill();
    let _ = gw.wait();
}
