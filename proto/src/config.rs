//! One configuration style for every binary: command-line flags win, then `STRATA_*`
//! environment variables, then a TOML file named by `--config FILE`, then defaults.
//!
//! The file's keys are the flag names (`s3_addr = "0.0.0.0:9000"`, or `s3-addr`); a
//! list is a TOML array; a switch is `true`/`false`. The variable of a flag is its name
//! in capitals after `STRATA_` (`--s3-addr` is `STRATA_S3_ADDR`, `--meta` is
//! `STRATA_META`, comma-separated where the flag takes a list); `--help` shows each.
//! Only the server commands a binary names take them (`ogw serve`, not `ogw
//! key-create`), and a flag can be left out (the gateway's S3 certificate must not come
//! from the variable that names a datanode's link certificate).
//!
//! A key the command does not know, a table, or a value of the wrong kind is an error
//! that names the file and the key. The datanode keeps its own richer file (devices as
//! tables, see `datanode/src/config.rs`) and takes the variables only.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, Command};

/// Prefix of every variable.
pub const ENV_PREFIX: &str = "STRATA_";

/// Which commands take variables and a file, and which flags do not.
#[derive(Clone, Copy, Debug)]
pub struct Style<'a> {
    /// Subcommands (the last of the chain chosen) that take them; empty: the binary's
    /// top-level command does.
    pub commands: &'a [&'a str],
    /// Flags (long names) left to the command line and the file.
    pub no_env: &'a [&'a str],
    /// Whether `--config FILE` is read here (the datanode reads its own).
    pub file: bool,
}

/// The variable of a flag: `s3-addr` -> `STRATA_S3_ADDR`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the process' arguments in this style; prints the error and exits on one.
pub fn parse<C: clap::Parser>(style: Style<'_>) -> C {
    parse_from(std::env::args_os(), style).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first) in this style.
pub fn parse_from<C, I, T>(args: I, style: Style<'_>) -> Result<C, clap::Error>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = with_env(C::command(), style);
    // Built, subcommands hold the global flags too (`--secrets`), which a file may set.
    cmd.build();
    // A lenient pass finds the subcommand chosen and its --config (flags it requires
    // may come from the file).
    let m = cmd.clone().ignore_errors(true).try_get_matches_from(&args)?;
    let (mut sub, mut sm, mut name) = (&cmd, &m, None);
    while let Some((n, next)) = sm.subcommand() {
        match sub.find_subcommand(n) {
            Some(s) => sub = s,
            None => break,
        }
        sm = next;
        name = Some(n);
    }
    let takes = match name {
        None => style.commands.is_empty(),
        Some(n) => style.commands.contains(&n),
    };
    if takes && style.file {
        let file = sm.try_get_raw("config").ok().flatten().and_then(|mut v| v.next()).map(|p| p.to_owned());
        if let Some(path) = file {
            args.extend(file_args(Path::new(&path), sub, sm)?);
        }
    }
    let m = cmd.try_get_matches_from(&args)?;
    C::from_arg_matches(&m)
}

/// `cmd` with each flag of the commands that take them bound to its variable.
fn with_env(cmd: Command, style: Style<'_>) -> Command {
    let bind = |c: Command| {
        c.mut_args(|a| match a.get_long() {
            Some(l) if !matches!(l, "help" | "version" | "config") && !style.no_env.contains(&l) => {
                // clap holds names as `&'static str` without its `string` feature: one
                // small string per flag, once per process.
                let env: &'static str = Box::leak(env_name(l).into_boxed_str());
                a.env(env)
            }
            _ => a,
        })
    };
    if style.commands.is_empty() {
        return bind(cmd);
    }
    // Global flags (`--secrets`) are the root's, reaching every subcommand.
    let mut cmd = cmd.mut_args(|a| match a.get_long() {
        Some(l) if a.is_global_set() && !style.no_env.contains(&l) => {
            let env: &'static str = Box::leak(env_name(l).into_boxed_str());
            a.env(env)
        }
        _ => a,
    });
    for name in style.commands {
        if cmd.find_subcommand(name).is_some() {
            cmd = cmd.mut_subcommand(name, bind);
        }
    }
    cmd
}

/// The flags the file adds: one per key the command line and the variables left unset.
fn file_args(path: &Path, cmd: &Command, m: &clap::ArgMatches) -> Result<Vec<OsString>, clap::Error> {
    let fail = |msg: String| cmd.clone().error(clap::error::ErrorKind::ValueValidation, msg);
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| fail(format!("config file {}: {}", path.display(), e.message())))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()) && long != "config") else {
            let known: Vec<String> = cmd
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "help" | "version" | "config"))
                .map(|l| l.replace('-', "_"))
                .collect();
            return Err(fail(format!(
                "config file {}: `{key}` is not a setting of `{}` (it takes: {})",
                path.display(),
                cmd.get_name(),
                known.join(", ")
            )));
        };
        if matches!(m.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let bad = |what: &str| fail(format!("config file {}: `{key}` {what}", path.display()));
        let scalar = |v: &toml::Value| -> Result<String, clap::Error> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(bad("must be a string, a number or true/false")),
            }
        };
        match (arg.get_action(), &value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => out.push(format!("--{long}").into()),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("is a switch: true or false")),
            (ArgAction::Append, toml::Value::Array(items)) => {
                for v in items {
                    out.push(format!("--{long}={}", scalar(v)?).into());
                }
            }
            (_, toml::Value::Array(items)) => match arg.get_value_delimiter() {
                Some(d) => {
                    let parts: Vec<String> = items.iter().map(scalar).collect::<Result<_, _>>()?;
                    out.push(format!("--{long}={}", parts.join(&d.to_string())).into());
                }
                None => return Err(bad("takes one value, not a list")),
            },
            (ArgAction::Set | ArgAction::Append, v) => out.push(format!("--{long}={}", scalar(v)?).into()),
            _ => return Err(bad("cannot be set in a file")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::{Parser, Subcommand};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Serve {
            #[arg(long)]
            config: Option<std::path::PathBuf>,
            #[arg(long, default_value = "127.0.0.1:1")]
            listen: String,
            #[arg(long, value_delimiter = ',', required = true)]
            meta: Vec<String>,
            #[arg(long)]
            s3_addr: Option<String>,
            #[arg(long)]
            tls_cert: Option<String>,
            #[arg(long)]
            verbose: bool,
            #[arg(long)]
            domain: Vec<String>,
        },
        KeyCreate {
            #[arg(long)]
            access_key: Option<String>,
        },
    }

    const STYLE: Style = Style { commands: &["serve"], no_env: &["tls-cert"], file: true };

    fn serve(args: &[&str]) -> Result<Cmd, String> {
        let mut v = vec!["prog"];
        v.extend(args);
        parse_from::<Cli, _, _>(v, STYLE).map(|c| c.cmd).map_err(|e| e.to_string())
    }

    // The variables of this test process are shared by its tests: each test uses
    // names no other test does.
    #[test]
    fn flags_win_over_variables_which_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("serve.toml");
        std::fs::write(
            &f,
            "listen = \"10.0.0.1:9\"\nmeta = [\"a:1\", \"b:2\"]\ns3_addr = \"file:3\"\nverbose = true\n\
             domain = [\"x.example\", \"y.example\"]\ntls-cert = \"/file.pem\"\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        let Cmd::Serve { listen, meta, s3_addr, verbose, domain, tls_cert, .. } =
            serve(&["serve", "--config", path]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (listen.as_str(), meta, s3_addr.as_deref(), verbose, domain, tls_cert.as_deref()),
            (
                "10.0.0.1:9",
                vec!["a:1".to_string(), "b:2".into()],
                Some("file:3"),
                true,
                vec!["x.example".to_string(), "y.example".into()],
                Some("/file.pem")
            )
        );
        // A variable beats the file; a flag beats both.
        std::env::set_var("STRATA_S3_ADDR", "env:4");
        let Cmd::Serve { s3_addr, listen, .. } = serve(&["serve", "--config", path, "--listen", "flag:5"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((s3_addr.as_deref(), listen.as_str()), (Some("env:4"), "flag:5"));
        let Cmd::Serve { s3_addr, .. } = serve(&["serve", "--config", path, "--s3-addr", "flag:6"]).unwrap() else {
            panic!()
        };
        assert_eq!(s3_addr.as_deref(), Some("flag:6"));
        std::env::remove_var("STRATA_S3_ADDR");
        // A flag left out of the variables is not read from one.
        std::env::set_var("STRATA_TLS_CERT", "/env.pem");
        let Cmd::Serve { tls_cert, .. } = serve(&["serve", "--meta", "m:1"]).unwrap() else { panic!() };
        assert_eq!(tls_cert, None);
        std::env::remove_var("STRATA_TLS_CERT");
    }

    #[test]
    fn a_required_flag_may_come_from_a_variable_and_lists_split_on_commas() {
        assert!(serve(&["serve"]).unwrap_err().contains("--meta"), "still required");
        std::env::set_var("STRATA_META", "p:1,q:2");
        let r = serve(&["serve"]);
        std::env::remove_var("STRATA_META");
        let Cmd::Serve { meta, .. } = r.unwrap() else { panic!() };
        assert_eq!(meta, ["p:1", "q:2"]);
    }

    #[test]
    fn only_the_commands_named_take_variables() {
        std::env::set_var("STRATA_ACCESS_KEY", "from-env");
        let r = parse_from::<Cli, _, _>(["prog", "key-create"], STYLE).unwrap();
        std::env::remove_var("STRATA_ACCESS_KEY");
        assert!(matches!(r.cmd, Cmd::KeyCreate { access_key: None }), "{r:?}");
    }

    #[test]
    fn bad_files_are_refused_with_the_key_and_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let case = |text: &str| {
            let f = dir.path().join("bad.toml");
            std::fs::write(&f, text).unwrap();
            serve(&["serve", "--meta", "m:1", "--config", f.to_str().unwrap()]).unwrap_err()
        };
        let e = case("lisen = \"x\"\n");
        assert!(e.contains("`lisen` is not a setting of `serve`") && e.contains("listen, meta, s3_addr"), "{e}");
        assert!(case("verbose = \"yes\"\n").contains("`verbose` is a switch"));
        assert!(case("s3_addr = [\"a\", \"b\"]\n").contains("`s3_addr` takes one value, not a list"));
        assert!(case("[listen]\nx = 1\n").contains("`listen` must be a string"));
        assert!(case("listen = \n").contains("bad.toml"));
        let missing = serve(&["serve", "--meta", "m:1", "--config", "/nonexistent.toml"]).unwrap_err();
        assert!(missing.contains("cannot read config file /nonexistent.toml"), "{missing}");
    }
}
