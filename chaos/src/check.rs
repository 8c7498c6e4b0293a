//! The history checker: is what the clients saw of each key explainable by one order of
//! the operations that respects real time (linearizability)?
//!
//! Every key is an independent register (linearizability is local: a history is
//! linearizable exactly when each key's sub-history is), whose value is the id of the
//! write whose bytes it holds (`None`: no object). Bodies carry their write id and are
//! checked byte for byte before a read enters the history, so a read that returned
//! bytes never written for its key is reported as corrupt by the workload, not here.
//!
//! The search is Wing and Gong's, with Lowe's memo of (operations linearized, state)
//! pairs, as in Knossos and Porcupine. An operation whose outcome the client never
//! learned (a timeout, a 5xx, a dropped connection) may have taken effect at any time
//! after its call, or never: it has no return event, and the search succeeds once every
//! operation with a known outcome is placed.

use std::collections::HashSet;

/// What a client asked of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Get,
    /// An unconditional PUT (or a copy, or a completed multipart upload) of write `w`.
    Put(u64),
    /// A PUT with `If-None-Match: *`.
    Create(u64),
    /// A PUT with `If-Match` the ETag of write `expect`.
    Cas {
        expect: u64,
        w: u64,
    },
    Delete,
}

/// What the client learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// The write took effect (2xx).
    Ok,
    /// The write was refused and changed nothing (412 for a failed condition, 404 for
    /// `If-Match` on no object).
    Refused,
    /// Unknown: it may or may not have taken effect.
    Unknown,
    /// A read's answer: the write whose bytes came back, or no object (404).
    Read(Option<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub call: Call,
    pub ret: Ret,
    /// Nanoseconds since the run began: when the request was sent and when its answer
    /// (or failure) came back.
    pub start: u64,
    pub end: u64,
}

type State = Option<u64>;

/// The register: whether `op` may take effect in `s` with the outcome it had, and the
/// state after it.
fn step(s: State, op: &Op) -> Option<State> {
    let unknown = op.ret == Ret::Unknown;
    match (op.call, op.ret) {
        (Call::Get, Ret::Read(v)) => (v == s).then_some(s),
        (Call::Put(w), _) => Some(Some(w)),
        (Call::Delete, _) => Some(None),
        (Call::Create(w), Ret::Ok) => s.is_none().then_some(Some(w)),
        (Call::Create(_), Ret::Refused) => s.is_some().then_some(s),
        (Call::Create(w), _) if unknown => s.is_none().then_some(Some(w)),
        (Call::Cas { expect, w }, Ret::Ok) => (s == Some(expect)).then_some(Some(w)),
        (Call::Cas { expect, .. }, Ret::Refused) => (s != Some(expect)).then_some(s),
        (Call::Cas { expect, w }, _) if unknown => (s == Some(expect)).then_some(Some(w)),
        _ => None,
    }
}

/// Why a key's history is not linearizable: the operations with known outcomes that
/// could not all be placed, around the furthest point the search reached.
#[derive(Debug)]
pub struct Violation {
    /// The operation whose return the search could not get past, and the states the
    /// register could be in just before it.
    pub stuck_at: Op,
    pub states: Vec<State>,
}

#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    /// The search gave up after `budget` steps (neither proven nor refuted).
    Undecided,
}

/// Drops what cannot matter and what has no effect: refused and failed plain writes,
/// and writes of unknown outcome whose value no read ever returned. The last is sound
/// only when every key was read after the run (the workload's final sweep): a write
/// that took effect is then seen by some read, directly or through a compare-and-swap
/// (which reads first), unless an unconditional write or a delete replaced it, and
/// those do not look at the state.
pub fn prune(ops: &[Op]) -> Vec<Op> {
    let seen: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match (o.call, o.ret) {
            (Call::Get, Ret::Read(Some(w))) => Some(w),
            (Call::Cas { expect, .. }, _) => Some(expect),
            _ => None,
        })
        .collect();
    ops.iter()
        .filter(|o| match (o.call, o.ret) {
            (Call::Put(_) | Call::Delete, Ret::Refused) => false,
            (Call::Put(w) | Call::Create(w) | Call::Cas { w, .. }, Ret::Unknown) => seen.contains(&w),
            _ => true,
        })
        .copied()
        .collect()
}

/// Checks one key's history, starting from no object, within `budget` search steps.
pub fn check(ops: &[Op], budget: u64) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: (time, is_return, op). Calls sort before returns at the same time, which
    // treats touching operations as concurrent (the permissive reading of a tie).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    let mut known = 0usize;
    for (i, o) in ops.iter().enumerate() {
        events.push((o.start, false, i));
        if o.ret != Ret::Unknown {
            events.push((o.end.max(o.start), true, i));
            known += 1;
        }
    }
    events.sort();
    // A doubly linked list over `events` (index len = head sentinel).
    let m = events.len();
    let head = m;
    let mut next: Vec<usize> = (1..=m).chain([0]).collect(); // next[m] = 0 (head -> first)
    let mut prev: Vec<usize> = std::iter::once(head).chain(0..m - 1).chain([usize::MAX]).collect();
    next[m - 1] = usize::MAX;
    next[head] = 0;
    let mut ret_of = vec![usize::MAX; n];
    for (e, &(_, is_ret, i)) in events.iter().enumerate() {
        if is_ret {
            ret_of[i] = e;
        }
    }
    let unlink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != usize::MAX {
            prev[nx] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut memo: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new(); // (call event, state before)
    let mut state: State = None;
    let mut placed_known = 0usize;
    let mut entry = next[head];
    let mut steps = 0u64;
    // The furthest return the search got stuck at, with the states seen there.
    let mut furthest: Option<(usize, Vec<State>)> = None;
    while placed_known < known {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided;
        }
        assert!(entry != usize::MAX, "the list ran out before every known operation was placed");
        let (_, is_ret, i) = events[entry];
        if !is_ret {
            let lifted = step(state, &ops[i]).and_then(|s2| {
                done[i / 64] |= 1 << (i % 64);
                if memo.insert((done.clone(), s2)) {
                    Some(s2)
                } else {
                    done[i / 64] &= !(1 << (i % 64));
                    None
                }
            });
            match lifted {
                Some(s2) => {
                    stack.push((entry, state));
                    state = s2;
                    unlink(entry, &mut next, &mut prev);
                    if ret_of[i] != usize::MAX {
                        unlink(ret_of[i], &mut next, &mut prev);
                        placed_known += 1;
                    }
                    entry = next[head];
                }
                None => entry = next[entry],
            }
        } else {
            // The return of an operation not yet placed: everything placed so far
            // leaves no room for it. Undo the last placement and try the next one.
            let pos = ops[i].end;
            match &mut furthest {
                Some((e, states)) if ops[events[*e].2].end == pos => states.push(state),
                Some((e, _)) if ops[events[*e].2].end > pos => {}
                _ => furthest = Some((entry, vec![state])),
            }
            let Some((call, before)) = stack.pop() else {
                let (e, mut states) = furthest.unwrap();
                states.sort();
                states.dedup();
                return Verdict::Violation(Violation { stuck_at: ops[events[e].2], states });
            };
            let j = events[call].2;
            done[j / 64] &= !(1 << (j % 64));
            state = before;
            if ret_of[j] != usize::MAX {
                relink(ret_of[j], &mut next, &mut prev);
                placed_known -= 1;
            }
            relink(call, &mut next, &mut prev);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

/// Checks a listing against the keys' histories (S3 lists are strongly consistent): a
/// key must be listed when a write of it was acknowledged before the listing began and
/// no delete of it could have taken effect before the listing ended; and must not be
/// listed when a delete was acknowledged before the listing began and no write could
/// have taken effect before it ended. What is wrong, as one line per key.
pub fn check_list(start: u64, end: u64, listed: &HashSet<&str>, keys: &[(&str, &[Op])]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (key, ops) in keys {
        let may_after = |o: &Op, t: u64| o.start < end && (o.ret == Ret::Unknown || o.end > t);
        let acked_before = |o: &Op| o.ret == Ret::Ok && o.end < start;
        let is_delete = |o: &Op| o.call == Call::Delete && o.ret != Ret::Refused;
        let is_write = |o: &Op| !matches!(o.call, Call::Get | Call::Delete) && o.ret != Ret::Refused;
        let present = ops
            .iter()
            .filter(|w| is_write(w) && acked_before(w))
            .any(|w| !ops.iter().any(|d| is_delete(d) && may_after(d, w.start)));
        let absent = ops
            .iter()
            .filter(|d| is_delete(d) && acked_before(d))
            .any(|d| !ops.iter().any(|w| is_write(w) && may_after(w, d.start)));
        if present && !listed.contains(key) {
            wrong.push(format!("{key} not listed, though written before the listing and not deleted"));
        }
        if absent && listed.contains(key) {
            wrong.push(format!("{key} listed, though deleted before the listing and not written again"));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn op(call: Call, ret: Ret, start: u64, end: u64) -> Op {
        Op { call, ret, start, end }
    }

    fn ok(ops: &[Op]) -> bool {
        match check(&prune(ops), 10_000_000) {
            Verdict::Linearizable => true,
            Verdict::Violation(_) => false,
            Verdict::Undecided => panic!("undecided"),
        }
    }

    #[test]
    fn listings_show_what_was_written_and_not_what_was_deleted() {
        let a = [op(Call::Put(1), Ret::Ok, 0, 1)];
        let b = [op(Call::Put(2), Ret::Ok, 0, 1), op(Call::Delete, Ret::Ok, 2, 3)];
        // Written, then deleted with the delete's outcome unknown: either is right.
        let c = [op(Call::Put(3), Ret::Ok, 0, 1), op(Call::Delete, Ret::Unknown, 2, 3)];
        // Written while the listing ran: either is right.
        let d = [op(Call::Put(4), Ret::Ok, 5, 20)];
        let keys: Vec<(&str, &[Op])> = vec![("a", &a), ("b", &b), ("c", &c), ("d", &d)];
        let list = |ks: &[&'static str]| check_list(10, 11, &ks.iter().copied().collect(), &keys);
        assert!(list(&["a"]).is_empty());
        assert!(list(&["a", "c", "d"]).is_empty());
        assert_eq!(list(&[]).len(), 1, "a missing");
        assert_eq!(list(&["a", "b"]).len(), 1, "b resurrected");
    }

    #[test]
    fn sequential_register() {
        let h = [
            op(Call::Get, Ret::Read(None), 0, 1),
            op(Call::Put(1), Ret::Ok, 2, 3),
            op(Call::Get, Ret::Read(Some(1)), 4, 5),
            op(Call::Delete, Ret::Ok, 6, 7),
            op(Call::Get, Ret::Read(None), 8, 9),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn a_lost_write_is_found() {
        // Put 2 acknowledged, then a read returns the older 1: lost (or stale).
        let h =
            [op(Call::Put(1), Ret::Ok, 0, 1), op(Call::Put(2), Ret::Ok, 2, 3), op(Call::Get, Ret::Read(Some(1)), 4, 5)];
        assert!(!ok(&h));
        // Acknowledged then gone.
        let h = [op(Call::Put(1), Ret::Ok, 0, 1), op(Call::Get, Ret::Read(None), 2, 3)];
        assert!(!ok(&h));
    }

    #[test]
    fn concurrent_writes_may_land_in_either_order() {
        let h = [
            op(Call::Put(1), Ret::Ok, 0, 10),
            op(Call::Put(2), Ret::Ok, 1, 9),
            op(Call::Get, Ret::Read(Some(1)), 11, 12),
        ];
        assert!(ok(&h));
        // But once a read saw 1 then 2, no later read may see 1 again.
        let h = [
            op(Call::Put(1), Ret::Ok, 0, 10),
            op(Call::Put(2), Ret::Ok, 1, 9),
            op(Call::Get, Ret::Read(Some(2)), 11, 12),
            op(Call::Get, Ret::Read(Some(1)), 13, 14),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn an_unknown_write_may_or_may_not_take_effect() {
        let took = [
            op(Call::Put(1), Ret::Ok, 0, 1),
            op(Call::Put(2), Ret::Unknown, 2, 3),
            op(Call::Get, Ret::Read(Some(2)), 100, 101),
        ];
        assert!(ok(&took));
        let not = [
            op(Call::Put(1), Ret::Ok, 0, 1),
            op(Call::Put(2), Ret::Unknown, 2, 3),
            op(Call::Get, Ret::Read(Some(1)), 100, 101),
        ];
        assert!(ok(&not));
        // It cannot be seen before it was sent, nor undone once seen.
        let early = [op(Call::Get, Ret::Read(Some(2)), 0, 1), op(Call::Put(2), Ret::Unknown, 2, 3)];
        assert!(!ok(&early));
        let flicker = [
            op(Call::Put(1), Ret::Ok, 0, 1),
            op(Call::Put(2), Ret::Unknown, 2, 3),
            op(Call::Get, Ret::Read(Some(2)), 4, 5),
            op(Call::Get, Ret::Read(Some(1)), 6, 7),
        ];
        assert!(!ok(&flicker));
    }

    #[test]
    fn if_none_match_races_have_one_winner() {
        let one = [
            op(Call::Create(1), Ret::Ok, 0, 10),
            op(Call::Create(2), Ret::Refused, 0, 10),
            op(Call::Create(3), Ret::Refused, 0, 10),
            op(Call::Get, Ret::Read(Some(1)), 11, 12),
        ];
        assert!(ok(&one));
        let two = [
            op(Call::Create(1), Ret::Ok, 0, 10),
            op(Call::Create(2), Ret::Ok, 0, 10),
            op(Call::Get, Ret::Read(Some(2)), 11, 12),
        ];
        assert!(!ok(&two));
        // A refusal with no object there and no write that could have made one.
        let bogus = [op(Call::Create(1), Ret::Refused, 0, 1), op(Call::Get, Ret::Read(None), 2, 3)];
        assert!(!ok(&bogus));
    }

    #[test]
    fn compare_and_swap_counters() {
        let good = [
            op(Call::Put(1), Ret::Ok, 0, 1),
            op(Call::Cas { expect: 1, w: 2 }, Ret::Ok, 2, 10),
            op(Call::Cas { expect: 1, w: 3 }, Ret::Refused, 3, 9),
            op(Call::Get, Ret::Read(Some(2)), 11, 12),
        ];
        assert!(ok(&good));
        // Two swaps from the same value both succeeding: a lost update.
        let lost_update = [
            op(Call::Put(1), Ret::Ok, 0, 1),
            op(Call::Cas { expect: 1, w: 2 }, Ret::Ok, 2, 10),
            op(Call::Cas { expect: 1, w: 3 }, Ret::Ok, 3, 9),
            op(Call::Get, Ret::Read(Some(3)), 11, 12),
        ];
        assert!(!ok(&lost_update));
    }

    /// Random histories made by running a real register in some order (so linearizable
    /// by construction) pass; the same with one read's answer changed to a value the
    /// register never held at any moment the read overlapped are refused.
    #[test]
    fn random_linearizable_histories_pass_and_corrupted_ones_fail() {
        let mut refuted = 0;
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let clients = rng.gen_range(1..6);
            let mut clock = 0u64;
            let mut state: State = None;
            let mut ops = Vec::new();
            let mut pending: Vec<Option<(Call, u64)>> = vec![None; clients];
            let mut next_w = 1u64;
            let mut history_states: Vec<(u64, State)> = vec![(0, None)];
            for _ in 0..rng.gen_range(5..60) {
                clock += 1;
                let c = rng.gen_range(0..clients);
                match pending[c].take() {
                    None => {
                        let call = match rng.gen_range(0..5) {
                            0 | 1 => Call::Get,
                            2 => {
                                next_w += 1;
                                Call::Put(next_w)
                            }
                            3 => Call::Delete,
                            _ => {
                                next_w += 1;
                                Call::Cas { expect: rng.gen_range(1..next_w), w: next_w }
                            }
                        };
                        pending[c] = Some((call, clock));
                    }
                    Some((call, start)) => {
                        // It takes effect now (between its call and its return).
                        clock += 1;
                        let t = clock;
                        clock += 1;
                        let mut o = Op { call, ret: Ret::Ok, start, end: clock };
                        match call {
                            Call::Get => o.ret = Ret::Read(state),
                            Call::Put(w) => state = Some(w),
                            Call::Delete => state = None,
                            Call::Cas { expect, w } => {
                                if state == Some(expect) {
                                    state = Some(w)
                                } else {
                                    o.ret = Ret::Refused
                                }
                            }
                            Call::Create(_) => unreachable!(),
                        }
                        if rng.gen_bool(0.1) && !matches!(call, Call::Get) {
                            o.ret = Ret::Unknown;
                        }
                        history_states.push((t, state));
                        ops.push(o);
                    }
                }
            }
            // The final sweep prune relies on.
            clock += 1;
            ops.push(op(Call::Get, Ret::Read(state), clock, clock + 1));
            assert!(ok(&ops), "seed {seed}: {ops:?}");
            // Corrupt one read: a value the register never held while it ran.
            let reads: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].call == Call::Get).collect();
            let r = reads[rng.gen_range(0..reads.len())];
            let held: Vec<State> = history_states
                .iter()
                .enumerate()
                .filter(|(k, (t, _))| {
                    let until = history_states.get(k + 1).map_or(u64::MAX, |x| x.0);
                    *t <= ops[r].end && until >= ops[r].start
                })
                .map(|(_, (_, s))| *s)
                .collect();
            // Not a write of unknown outcome either: the search may place one anywhere
            // after its call, so its value could be explained.
            let unknown: Vec<State> = ops
                .iter()
                .filter(|o| o.ret == Ret::Unknown)
                .filter_map(|o| match o.call {
                    Call::Put(w) | Call::Cas { w, .. } => Some(Some(w)),
                    Call::Delete => Some(None),
                    _ => None,
                })
                .collect();
            let Some(bad) =
                (1..=next_w + 1).map(Some).chain([None]).find(|v| !held.contains(v) && !unknown.contains(v))
            else {
                continue;
            };
            let mut corrupted = ops.clone();
            corrupted[r].ret = Ret::Read(bad);
            assert!(!ok(&corrupted), "seed {seed}: read {r} of {bad:?} accepted: {corrupted:?}");
            refuted += 1;
        }
        assert!(refuted > 250, "only {refuted} corrupted histories were tried");
    }
}
