//! The fault schedule: a list of (when, what, for how long) that follows from the seed
//! alone, so a run replays its faults (not their timing relative to the workload).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// kill -9 a process; restarted when the fault ends.
    Kill(String),
    /// SIGSTOP, then SIGCONT when the fault ends.
    Pause(String),
    /// Cut the metanode leader (whichever it is then) off from every other node.
    IsolateLeader,
    /// Cut these datanodes off from every other node but each other.
    SplitDatanodes(Vec<String>),
    /// Cut a gateway off from the SQL server.
    CutSql(String),
    /// Drop this share (%) of a node's packets.
    Loss(String, u32),
    /// A slow link on a node.
    Slow(String),
    /// Restart a gateway with its clock this many seconds off, and back when it ends.
    Skew(String, i64),
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
    pub for_ms: u64,
}

/// The names of the processes a schedule picks from.
pub struct Names {
    pub metas: usize,
    pub datanodes: usize,
    pub gateways: usize,
}

pub fn schedule(seed: u64, run_ms: u64, n: &Names) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut at = 3_000u64;
    let pick = |rng: &mut StdRng, prefix: &str, n: usize| format!("{prefix}{}", rng.gen_range(1..=n));
    let any = |rng: &mut StdRng| -> String {
        match rng.gen_range(0..10) {
            0..=3 => pick(rng, "d", n.datanodes),
            4..=5 => pick(rng, "m", n.metas),
            6..=7 => pick(rng, "g", n.gateways),
            8 => "gc".into(),
            _ => "sql".into(),
        }
    };
    // Leave the end of the run free of new faults: the last ones heal before it.
    while at + 20_000 < run_ms {
        let fault = match rng.gen_range(0..100) {
            0..=44 => Fault::Kill(any(&mut rng)),
            45..=54 => Fault::Pause(any(&mut rng)),
            55..=62 => Fault::IsolateLeader,
            63..=70 => {
                let k = rng.gen_range(1..=2);
                let mut ds: Vec<String> = (1..=n.datanodes).map(|i| format!("d{i}")).collect();
                let mut side = Vec::new();
                for _ in 0..k {
                    side.push(ds.remove(rng.gen_range(0..ds.len())));
                }
                Fault::SplitDatanodes(side)
            }
            71..=78 => Fault::CutSql(pick(&mut rng, "g", n.gateways)),
            79..=86 => Fault::Loss(any(&mut rng), [5, 20, 50][rng.gen_range(0..3)]),
            87..=93 => Fault::Slow(any(&mut rng)),
            _ => {
                let secs = rng.gen_range(30..300) * if rng.gen_bool(0.5) { 1 } else { -1 };
                Fault::Skew(pick(&mut rng, "g", n.gateways), secs)
            }
        };
        let for_ms = match fault {
            Fault::Kill(_) => rng.gen_range(200..8_000),
            Fault::Skew(..) => rng.gen_range(5_000..20_000),
            _ => rng.gen_range(1_000..12_000),
        };
        out.push(Planned { at_ms: at, fault, for_ms });
        at += rng.gen_range(1_500..6_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule() {
        let n = Names { metas: 3, datanodes: 6, gateways: 2 };
        let a = schedule(7, 600_000, &n);
        let b = schedule(7, 600_000, &n);
        let c = schedule(8, 600_000, &n);
        let key = |s: &[Planned]| s.iter().map(|p| (p.at_ms, format!("{:?}", p.fault), p.for_ms)).collect::<Vec<_>>();
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert!(a.len() > 100, "{} faults in 10 minutes", a.len());
        assert!(a.iter().all(|p| p.at_ms + 20_000 < 600_000));
        // Every kind of fault comes up.
        for kind in ["Kill", "Pause", "IsolateLeader", "SplitDatanodes", "CutSql", "Loss", "Slow", "Skew"] {
            assert!(a.iter().any(|p| format!("{:?}", p.fault).starts_with(kind)), "{kind}");
        }
    }
}
