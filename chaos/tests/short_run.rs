//! CI's chaos run: one fixed seed for two minutes (`scripts/chaos.sh` runs longer ones).
//! It needs root for its network namespaces; elsewhere it is skipped, unless
//! STRATA_REQUIRE_NETNS is set (CI sets it, so that it cannot skip there).

use std::process::Command;

#[test]
fn a_short_seeded_chaos_run_loses_nothing() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        assert!(std::env::var_os("STRATA_REQUIRE_NETNS").is_none(), "STRATA_REQUIRE_NETNS is set but this is not root");
        eprintln!("skipped: the chaos run needs root (network namespaces)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--seed", "20261203", "--minutes", "2"])
        .output()
        .expect("the chaos binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // "chaos: seed S, F faults, A acknowledged operations, 0 lost, 0 corrupt, 0 linearizability violations"
    let num = |after: &str| -> u64 {
        let i = last.find(after).unwrap_or_else(|| panic!("no '{after}' in {last:?}"));
        last[..i].rsplit([' ', ',']).find(|w| !w.is_empty()).unwrap().parse().unwrap()
    };
    assert_eq!(num(" lost"), 0, "{last}");
    assert_eq!(num(" corrupt"), 0, "{last}");
    assert_eq!(num(" linearizability violations"), 0, "{last}");
    assert!(num(" faults") >= 10, "too few faults applied: {last}\n{stderr}");
    assert!(num(" acknowledged operations") >= 500, "too little work done: {last}\n{stderr}");
    assert!(stderr.contains("full redundancy"), "{stderr}");
}
