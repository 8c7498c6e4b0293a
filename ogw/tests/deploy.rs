//! The deployment files under deploy/: the systemd units (`systemd-analyze verify` and
//! `security` on them, their hardening, their paths against deploy/config's examples)
//! and deploy/compose.yaml (its shape, and every flag and STRATA_* variable it gives a
//! binary checked against that binary's `--help`, so that it cannot drift from them).
//! No container engine runs here: the compose file and the Containerfile are not run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// Each unit, the binary it runs and the command line after it.
const UNITS: &[(&str, &str, &str)] = &[
    ("strata-metanode.service", "metanode", "serve --config /etc/strata/metanode.toml"),
    ("strata-datanode.service", "datanode", "--config /etc/strata/datanode.toml"),
    ("strata-ogw.service", "ogw", "serve --config /etc/strata/ogw.toml"),
    ("strata-gc.service", "gc", "run --config /etc/strata/gc.toml"),
];

/// The highest `systemd-analyze security` exposure a unit may have (0 to 10; measured
/// 1.1 for the metanode, gateway and GC, 1.5 for the datanode, which sees devices).
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn systemd_analyze() -> &'static str {
    assert!(
        Path::new(SYSTEMD_ANALYZE).exists(),
        "{SYSTEMD_ANALYZE} is missing: run scripts/setup.sh (Debian's `systemd` package)"
    );
    SYSTEMD_ANALYZE
}

/// The units copied into `dir`, each running the binary built for these tests instead
/// of /usr/local/bin's (`verify` checks that the executable exists), after `edit`.
fn units_in(dir: &Path, edit: impl Fn(&str, String) -> String) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|(name, bin, _)| {
            let text = read(&format!("deploy/systemd/{name}"));
            let from = format!("/usr/local/bin/{bin} ");
            assert!(text.contains(&from), "{name} does not run {from}");
            let built = testkit::sibling_bin(bin);
            let text = edit(name, text.replace(&from, &format!("{} ", built.display())));
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

/// Runs `systemd-analyze verify` on `units`: whether it exited 0, and the lines of its
/// output about them (others, about units of this host, are left out).
fn verify(units: &[PathBuf]) -> (bool, Vec<String>, String) {
    let out = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .args(units)
        .output()
        .expect("run systemd-analyze verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let dir = units[0].parent().unwrap().display().to_string();
    let ours: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&dir) || UNITS.iter().any(|(name, _, _)| l.contains(name)))
        .map(str::to_owned)
        .collect();
    (out.status.success(), ours, text)
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = units_in(dir.path(), |_, t| t);
    let (ok, ours, all) = verify(&units);
    println!("systemd-analyze verify --man=no {} units: exit ok {ok}, output:\n{all}", units.len());
    assert!(ok, "systemd-analyze verify failed:\n{all}");
    assert!(ours.is_empty(), "systemd-analyze verify complains about the units:\n{}", ours.join("\n"));

    // The same check catches a misspelled directive (which systemd only warns about,
    // exiting 0) and a bad value.
    let bad = tempfile::tempdir().unwrap();
    let units = units_in(bad.path(), |name, t| match name {
        "strata-ogw.service" => t.replace("\nProtectSystem=strict\n", "\nProtectSytem=strict\n"),
        "strata-gc.service" => t.replace("\nRestart=on-failure\n", "\nRestart=on-failur\n"),
        _ => t,
    });
    let (_, ours, all) = verify(&units);
    println!("with two mistakes:\n{all}");
    assert!(ours.iter().any(|l| l.contains("strata-ogw.service") && l.contains("ProtectSytem")), "{all}");
    assert!(ours.iter().any(|l| l.contains("strata-gc.service") && l.contains("on-failur")), "{all}");
}

/// A unit's `[Service]` settings: every value of each key, in order.
fn service_section(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        out.entry(k.trim().to_owned()).or_default().push(v.trim().to_owned());
    }
    out
}

fn toml_of(rel: &str) -> toml::Table {
    toml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whether `path` is `dir` or below it.
fn under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

#[test]
fn systemd_units_are_hardened_and_match_the_example_configs() {
    for (name, bin, args) in UNITS {
        let s = service_section(&read(&format!("deploy/systemd/{name}")));
        let one = |k: &str| -> &str {
            let v = s.get(k).unwrap_or_else(|| panic!("{name}: no {k}="));
            assert_eq!(v.len(), 1, "{name}: {k}= given {} times", v.len());
            &v[0]
        };
        let svc = name.trim_start_matches("strata-").trim_end_matches(".service");
        assert_eq!(one("ExecStart"), format!("/usr/local/bin/{bin} {args}"), "{name}");
        assert!(args.ends_with(&format!("--config /etc/strata/{svc}.toml")), "{name}");
        assert_eq!(one("Type"), "simple", "{name}: the binaries do not speak sd_notify");
        assert_eq!(one("Restart"), "on-failure", "{name}");
        assert_eq!(one("User"), "strata", "{name}");
        assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536, "{name}");
        assert_eq!(one("UMask"), "0077", "{name}");
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("RestrictNamespaces", "yes"),
            ("LockPersonality", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("RestrictRealtime", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("SystemCallArchitectures", "native"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(one(k), v, "{name}: {k}=");
        }
        let filters = s.get("SystemCallFilter").unwrap_or_else(|| panic!("{name}: no SystemCallFilter="));
        assert_eq!(filters[0], "@system-service", "{name}: the allow list comes first");
        let rw = s.get("ReadWritePaths").unwrap_or_else(|| panic!("{name}: no ReadWritePaths="));
        let rw: Vec<&str> = rw.iter().flat_map(|v| v.split_whitespace()).map(|p| p.trim_start_matches('-')).collect();
        let state: Vec<String> = s
            .get("StateDirectory")
            .map(|v| v.iter().flat_map(|d| d.split_whitespace()).map(|d| format!("/var/lib/{d}")).collect())
            .unwrap_or_default();
        let writable = |p: &str| rw.iter().any(|d| under(p, d)) && state.iter().any(|d| under(p, d));

        // The secrets file: what the example config names, and the unit's default.
        let config = toml_of(&format!("deploy/config/{svc}.toml"));
        let secrets = config["secrets"].as_str().unwrap();
        assert!(under(secrets, "/etc/strata"), "{svc}.toml: secrets = {secrets}");
        assert!(
            s["Environment"].iter().any(|e| e == &format!("STRATA_SECRETS_FILE={secrets}")),
            "{name}: Environment=STRATA_SECRETS_FILE={secrets}"
        );

        match *bin {
            "metanode" => {
                let data = config["data"].as_str().unwrap();
                assert!(writable(data), "{name}: metanode.toml's data = {data} is not a writable state dir");
            }
            "datanode" => {
                // Not PrivateDevices=yes (it would hide the raw devices): only the
                // devices the config names, through the device cgroup.
                assert_eq!(one("PrivateDevices"), "no", "{name}");
                assert_eq!(one("DevicePolicy"), "closed", "{name}");
                let allowed = &s["DeviceAllow"];
                // Every device path of the example, also the commented-out file one.
                let text = read("deploy/config/datanode.toml");
                let paths: Vec<&str> = text
                    .lines()
                    .map(|l| l.trim_start_matches(['#', ' ']))
                    .filter_map(|l| l.strip_prefix("path = \""))
                    .filter_map(|l| l.split('"').next())
                    .collect();
                assert!(paths.len() >= 2, "{paths:?}");
                for p in paths {
                    if p.starts_with("/dev/") {
                        assert!(
                            allowed.iter().any(|a| a.split_whitespace().next() == Some(p)),
                            "{name}: DeviceAllow= lacks {p}"
                        );
                    } else {
                        assert!(writable(p), "{name}: device file {p} is not in a writable state dir");
                    }
                }
            }
            "ogw" => {
                assert_eq!(one("PrivateDevices"), "yes", "{name}");
                let key = config["master_key"].as_str().unwrap();
                assert!(under(key, "/etc/strata"), "ogw.toml: master_key = {key}");
                // A SQLite catalog's directory.
                assert!(writable("/var/lib/strata/ogw/ogw.db"), "{name}");
            }
            _ => assert_eq!(one("PrivateDevices"), "yes", "{name}"),
        }
    }
}

/// `systemd-analyze security --offline=yes` on a unit file: its exposure (0 to 10).
fn exposure(unit: &Path) -> (f64, String) {
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{text}{}", unit.display(), String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no exposure level:\n{text}"))
        .to_owned();
    let figure = line.rsplit(": ").next().unwrap().split_whitespace().next().unwrap();
    (figure.parse().unwrap_or_else(|_| panic!("{line}")), line)
}

#[test]
fn systemd_units_have_a_low_exposure() {
    let help = Command::new(systemd_analyze()).arg("--help").output().unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--offline") {
        println!("skipped: this systemd-analyze has no `security --offline` (systemd < 250)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in units_in(dir.path(), |_, t| t) {
        let (e, line) = exposure(&unit);
        println!("{line}");
        assert!(e <= MAX_EXPOSURE, "{line}: above {MAX_EXPOSURE}");
    }
    // A unit without the hardening is far above it.
    let bare = dir.path().join("bare.service");
    let gc = testkit::sibling_bin("gc");
    std::fs::write(&bare, format!("[Service]\nExecStart={} run\nUser=strata\n", gc.display())).unwrap();
    let (e, line) = exposure(&bare);
    println!("{line}");
    assert!(e > MAX_EXPOSURE * 2.0, "{line}");
}

// ---- deploy/compose.yaml

/// Reads YAML on stdin and prints it as JSON, with each shell command a service runs
/// (`sh -c SCRIPT`, healthchecks) split into words per line: `{"compose": ...,
/// "argv": {SERVICE: {"command": [[word, ...], ...], "healthcheck": [...]}}}`.
const YAML_TO_JSON: &str = r#"
import json, shlex, sys, yaml
doc = yaml.safe_load(sys.stdin)
def lines(cmd):
    if cmd is None:
        return []
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    if cmd and cmd[0] == "CMD":
        cmd = cmd[1:]
    elif cmd and cmd[0] == "CMD-SHELL":
        cmd = ["sh", "-c", " ".join(cmd[1:])]
    if len(cmd) >= 3 and cmd[0] in ("sh", "bash") and cmd[1] == "-c":
        out = []
        for line in cmd[2].splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            out.append(list(lex))
        return out
    return [list(cmd)]
argv = {}
for name, s in (doc.get("services") or {}).items():
    argv[name] = {"command": lines(s.get("command")),
                  "healthcheck": lines((s.get("healthcheck") or {}).get("test"))}
json.dump({"compose": doc, "argv": argv}, sys.stdout)
"#;

/// A Python with PyYAML (scripts/setup.sh installs Debian's python3-yaml).
fn python_with_yaml() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        if Command::new(py).args(["-c", "import yaml"]).output().is_ok_and(|o| o.status.success()) {
            return py.to_owned();
        }
    }
    panic!("no python3 with PyYAML: run scripts/setup.sh (Debian's python3-yaml)")
}

fn compose_json(yaml: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python_with_yaml())
        .args(["-c", YAML_TO_JSON])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "compose.yaml does not parse:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const BINARIES: &[&str] = &["metanode", "datanode", "ogw", "gc", "strata"];

/// Shell words after which a word is a command.
const COMMAND_POSITION: &[&str] = &[";", "&&", "||", "|", "(", "if", "then", "else", "elif", "do", "!", "exec"];

/// One run of a Strata binary found in a command: the binary, its flags given before
/// the subcommand, the subcommand (if the binary has them) and the flags after it.
#[derive(Debug)]
struct Run {
    bin: String,
    top_flags: Vec<String>,
    sub: Option<String>,
    flags: Vec<String>,
}

/// `--help` outputs of the built binaries, each asked once.
#[derive(Default)]
struct Helps(BTreeMap<Vec<String>, Result<String, String>>);

impl Helps {
    fn get(&mut self, bin: &str, sub: Option<&str>) -> Result<String, String> {
        let key: Vec<String> = std::iter::once(bin).chain(sub).map(str::to_owned).collect();
        self.0
            .entry(key)
            .or_insert_with(|| {
                let out = Command::new(testkit::sibling_bin(bin)).args(sub).arg("--help").output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() {
                    Ok(text)
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            })
            .clone()
    }
}

/// Whether `help` names `word` (`--meta`, `STRATA_META`) as a whole word.
fn names(help: &str, word: &str) -> bool {
    help.match_indices(word).any(|(i, _)| {
        let before = help[..i].chars().next_back();
        let after = help[i + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        !part(before) && !part(after)
    })
}

/// Whether the option `flag` of this help text takes a value (`--meta <META>`).
fn takes_value(help: &str, flag: &str) -> bool {
    let with_value = format!("{flag} <");
    help.lines().any(|l| l.trim_start().split(", ").any(|p| p.starts_with(&with_value)))
}

/// The runs of Strata binaries in the words of one shell line (or one argv).
fn runs_in(words: &[String], helps: &mut Helps) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut i = 0;
    let mut at_command = true;
    while i < words.len() {
        let w = words[i].as_str();
        let base = w.rsplit('/').next().unwrap();
        if at_command && BINARIES.contains(&base) {
            let top = helps.get(base, None).expect("top-level help");
            let has_subs = top.contains("\nCommands:");
            let mut run = Run { bin: base.to_owned(), top_flags: vec![], sub: None, flags: vec![] };
            i += 1;
            while i < words.len() && !COMMAND_POSITION.contains(&words[i].as_str()) {
                let a = words[i].as_str();
                if let Some(flag) = a.strip_prefix("--").map(|f| format!("--{}", f.split('=').next().unwrap())) {
                    let value_next = !a.contains('=');
                    if has_subs && run.sub.is_none() {
                        if value_next && takes_value(&top, &flag) {
                            i += 1;
                        }
                        run.top_flags.push(flag);
                    } else {
                        run.flags.push(flag);
                    }
                } else if has_subs && run.sub.is_none() && !a.starts_with('-') {
                    run.sub = Some(a.to_owned());
                }
                i += 1;
            }
            runs.push(run);
            at_command = true;
            continue;
        }
        // A variable assignment before a command leaves the next word a command.
        let assignment = w
            .split_once('=')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        at_command = COMMAND_POSITION.contains(&w) || (at_command && assignment);
        i += 1;
    }
    runs
}

/// Everything wrong between the compose file and the binaries: a binary, subcommand,
/// flag or STRATA_* variable a binary does not take.
fn drift(doc: &serde_json::Value, helps: &mut Helps) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, argv) in doc["argv"].as_object().unwrap() {
        let service = &doc["compose"]["services"][name];
        let mut command_helps = Vec::new();
        for (what, lines) in argv.as_object().unwrap() {
            for words in lines.as_array().unwrap() {
                let words: Vec<String> =
                    words.as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect();
                // Variables named in the script itself (`STRATA_SECRET_KEY=... ogw ...`).
                let script_vars: BTreeSet<String> = words
                    .iter()
                    .flat_map(|w| w.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
                    .filter(|w| w.starts_with("STRATA_"))
                    .map(str::to_owned)
                    .collect();
                let mut line_helps = Vec::new();
                for run in runs_in(&words, helps) {
                    let top = helps.get(&run.bin, None).unwrap();
                    for f in &run.top_flags {
                        if !names(&top, f) {
                            problems.push(format!("{name} ({what}): `{}` takes no {f}", run.bin));
                        }
                    }
                    let cmd = format!("{} {}", run.bin, run.sub.as_deref().unwrap_or("")).trim().to_owned();
                    let help = match helps.get(&run.bin, run.sub.as_deref()) {
                        Ok(h) => h,
                        Err(e) => {
                            problems.push(format!("{name} ({what}): `{cmd} --help` fails: {}", e.trim()));
                            continue;
                        }
                    };
                    for f in &run.flags {
                        if !names(&help, f) {
                            problems.push(format!("{name} ({what}): `{cmd}` takes no {f}"));
                        }
                    }
                    line_helps.push(format!("{top}\n{help}"));
                }
                for v in &script_vars {
                    if !line_helps.iter().any(|h| names(h, v)) {
                        problems.push(format!("{name} ({what}): no command of `{}` reads {v}", words.join(" ")));
                    }
                }
                if what == "command" {
                    command_helps.extend(line_helps);
                }
            }
        }
        // The service's variables are for what its command runs.
        if let Some(env) = service["environment"].as_object() {
            for var in env.keys().filter(|k| k.starts_with("STRATA_")) {
                if command_helps.is_empty() {
                    problems.push(format!("{name}: sets {var} but runs no Strata binary"));
                } else if !command_helps.iter().any(|h| names(h, var)) {
                    problems.push(format!("{name}: what it runs does not read {var}"));
                }
            }
        }
    }
    problems
}

fn services(doc: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    doc["compose"]["services"].as_object().expect("services")
}

fn env<'a>(s: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    s["environment"][k].as_str()
}

/// The services whose command is `bin [sub]`.
fn running<'a>(doc: &'a serde_json::Value, argv: &[&str]) -> Vec<(&'a String, &'a serde_json::Value)> {
    services(doc)
        .iter()
        .filter(|(_, s)| {
            s["command"].as_array().is_some_and(|c| c.iter().map(|v| v.as_str().unwrap_or("")).eq(argv.iter().copied()))
        })
        .collect()
}

#[test]
fn compose_file_has_the_cluster_and_matches_the_binaries() {
    let yaml = read("deploy/compose.yaml");
    let doc = compose_json(&yaml);
    let svcs = services(&doc);

    let metas = running(&doc, &["metanode", "serve"]);
    let dns = running(&doc, &["datanode"]);
    let gws = running(&doc, &["ogw", "serve"]);
    let gcs = running(&doc, &["gc", "run"]);
    assert_eq!((metas.len(), dns.len(), gws.len(), gcs.len()), (3, 6, 2, 1), "metanodes, datanodes, gateways, GC");
    let pg: Vec<_> = svcs
        .iter()
        .filter(|(_, s)| {
            s["image"].as_str().is_some_and(|i| i.trim_start_matches("docker.io/library/").starts_with("postgres:15"))
        })
        .collect();
    assert_eq!(pg.len(), 1, "one postgres:15 service");
    let (pg_name, pg) = pg[0];

    // What services name exists: dependencies and volumes.
    let volumes = doc["compose"]["volumes"].as_object().cloned().unwrap_or_default();
    for (name, s) in svcs {
        if let Some(deps) = s["depends_on"].as_object() {
            for d in deps.keys() {
                assert!(svcs.contains_key(d), "{name} depends on {d}, which is no service");
            }
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if !src.starts_with(['.', '/', '~']) {
                assert!(volumes.contains_key(src), "{name} mounts volume {src}, which is not declared");
            }
        }
    }

    // Metanodes: distinct ids, each listed in the founding set as ID=its advertised
    // address (the metanode refuses to start otherwise), which is its service's name.
    let mut ids = BTreeSet::new();
    for (name, s) in &metas {
        let id = env(s, "STRATA_ID").expect("STRATA_ID");
        assert!(ids.insert(id), "metanode id {id} twice");
        let adv = env(s, "STRATA_ADVERTISE").expect("STRATA_ADVERTISE");
        assert_eq!(adv.split(':').next(), Some(name.as_str()), "{name} advertises {adv}");
        let init = env(s, "STRATA_INIT").expect("STRATA_INIT");
        let members: BTreeSet<&str> = init.split(',').collect();
        assert!(members.contains(format!("{id}={adv}").as_str()), "{name}: {init} lacks {id}={adv}");
        assert_eq!(members.len(), 3, "{name}: {init}");
    }
    let meta_addrs: BTreeSet<String> =
        metas.iter().map(|(_, s)| env(s, "STRATA_ADVERTISE").unwrap().to_owned()).collect();
    let check_meta = |name: &str, s: &serde_json::Value| {
        let m: BTreeSet<String> = env(s, "STRATA_META")
            .unwrap_or_else(|| panic!("{name}: STRATA_META"))
            .split(',')
            .map(str::to_owned)
            .collect();
        assert_eq!(m, meta_addrs, "{name}: STRATA_META");
    };

    // Datanodes: distinct ids, reachable at their service name, in several zones.
    let mut ids = BTreeSet::new();
    let mut zones = BTreeSet::new();
    for (name, s) in &dns {
        assert!(ids.insert(env(s, "STRATA_NODE_ID").expect("STRATA_NODE_ID")), "{name}: node id twice");
        let adv = env(s, "STRATA_ADVERTISE").expect("STRATA_ADVERTISE");
        assert_eq!(adv.split(':').next(), Some(name.as_str()), "{name} advertises {adv}");
        zones.insert(env(s, "STRATA_ZONE").expect("STRATA_ZONE"));
        check_meta(name, s);
    }
    assert!(zones.len() >= 3, "{zones:?}");

    // Gateways and GC: one catalog, the PostgreSQL service's; distinct gateway names.
    let user = env(pg, "POSTGRES_USER").unwrap();
    let db = env(pg, "POSTGRES_DB").unwrap();
    let mut gw_names = BTreeSet::new();
    for (name, s) in gws.iter().chain(&gcs) {
        let url = env(s, "STRATA_DB").unwrap_or_else(|| panic!("{name}: STRATA_DB"));
        assert!(url.starts_with(&format!("postgres://{user}:")), "{name}: {url}");
        assert!(url.ends_with(&format!("@{pg_name}:5432/{db}")), "{name}: {url}");
        check_meta(name, s);
        assert!(env(s, "STRATA_SECRETS").is_some(), "{name}: STRATA_SECRETS");
    }
    for (name, s) in &gws {
        assert!(gw_names.insert(env(s, "STRATA_NAME").expect("STRATA_NAME")), "{name}: gateway name twice");
        assert!(env(s, "STRATA_MASTER_KEY").is_some(), "{name}: STRATA_MASTER_KEY");
    }

    // Every binary, subcommand, flag and variable is one the built binaries take.
    let mut helps = Helps::default();
    let problems = drift(&doc, &mut helps);
    assert!(problems.is_empty(), "compose.yaml and the binaries differ:\n{}", problems.join("\n"));
    let checked: Vec<String> = helps.0.keys().map(|k| k.join(" ")).collect();
    println!("compose.yaml checked against the --help of: {}", checked.join(", "));
    for want in
        ["metanode serve", "datanode", "ogw serve", "gc run", "ogw key-create", "metanode status", "strata node"]
    {
        assert!(checked.iter().any(|c| c == want), "{want} was not checked: {checked:?}");
    }

    // ... and the same check finds a renamed variable, flag and subcommand.
    let drifted = yaml
        .replacen("STRATA_ADVERTISE: dn1:7200", "STRATA_ADVERTISE_ADDR: dn1:7200", 1)
        .replacen("\"metanode\", \"status\", \"--meta\"", "\"metanode\", \"status\", \"--metas\"", 1)
        .replacen("ogw tenant-create admin", "ogw tenant-add admin", 1)
        .replacen("STRATA_SECRET_KEY=", "STRATA_SECRET=", 1);
    assert_ne!(drifted, yaml);
    let problems = drift(&compose_json(&drifted), &mut helps);
    println!("with four mistakes:\n{}", problems.join("\n"));
    let found = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(found("dn1: what it runs does not read STRATA_ADVERTISE_ADDR"), "{problems:#?}");
    assert!(found("`metanode status` takes no --metas"), "{problems:#?}");
    assert!(found("`ogw tenant-add --help` fails"), "{problems:#?}");
    assert!(found("reads STRATA_SECRET"), "{problems:#?}");
    // Nothing else (the healthcheck's flag is in the three metanodes' common part).
    let markers = ["STRATA_ADVERTISE_ADDR", "--metas", "tenant-add", "reads STRATA_SECRET"];
    assert!(problems.iter().all(|p| markers.iter().any(|m| p.contains(m))), "{problems:#?}");
}
