//! The `strata` CLI refuses bad input with a clear message and a failing exit code
//! before it contacts anything. (Its cluster paths are tested in `metanode/tests/`,
//! which run this binary; this package's integration test is also what makes
//! `cargo nextest run --workspace` build it.)

use std::process::Command;

fn strata(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_is_refused_before_anything_is_contacted() {
    // Port 1 on loopback: nothing listens; these must fail on their input first.
    let meta = ["--meta", "127.0.0.1:1"];
    let (ok, err) = strata(&[&meta[..], &["stream", "put", "1", "--chunk", "0"]].concat());
    assert!(!ok && err.contains("--chunk must be"), "{err}");
    let (ok, err) = strata(&[&meta[..], &["stream", "put", "1", "--chunk", "99999999"]].concat());
    assert!(!ok && err.contains("--chunk must be"), "{err}");
    let (ok, err) = strata(&[&meta[..], &["stream", "create", "--policy", "raid:5"]].concat());
    assert!(!ok && err.contains("bad redundancy policy"), "{err}");
    let (ok, err) = strata(&["stream", "get", "1", "2"]);
    assert!(!ok && err.contains("required"), "{err}");
}
