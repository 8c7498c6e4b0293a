//! A byte-rate pacer for the datanode's background work, which yields to clients: while
//! clients append here (`Activity`), it holds the work to a lower rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recently a client must have appended for the datanode to count as busy.
pub const BUSY_WINDOW: Duration = Duration::from_millis(500);

/// When clients last appended here.
pub struct Activity {
    base: Instant,
    /// Milliseconds after `base` of the last client append, plus one (0: never).
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity { base: Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl Activity {
    /// A client appended just now.
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        if self.last_ms.load(Ordering::Relaxed) != ms {
            self.last_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Whether a client appended within `BUSY_WINDOW`.
    pub fn busy(&self) -> bool {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => false,
            at => self.base.elapsed().as_millis() as u64 + 1 - at <= BUSY_WINDOW.as_millis() as u64,
        }
    }
}

/// Paces background work (rebuilds together, scrub) at `rate` bytes per second, or
/// at `busy_rate` while clients append here: each span waits for its turn.
pub struct Pacer {
    rate: u64,
    busy: Option<(Arc<Activity>, u64)>,
    next: parking_lot::Mutex<Instant>,
}

impl Pacer {
    /// `rate` bytes per second; 0 for no limit.
    pub fn new(rate: u64) -> Pacer {
        Pacer { rate, busy: None, next: parking_lot::Mutex::new(Instant::now()) }
    }

    /// The same, held to `busy_rate` (0: no limit) while `activity` is busy.
    pub fn yielding(rate: u64, busy_rate: u64, activity: Arc<Activity>) -> Pacer {
        Pacer { busy: Some((activity, busy_rate)), ..Pacer::new(rate) }
    }

    /// The rate in force now.
    pub fn rate(&self) -> u64 {
        match &self.busy {
            Some((a, r)) if a.busy() => *r,
            _ => self.rate,
        }
    }

    /// Waits until `bytes` more may be moved.
    pub async fn take(&self, bytes: u64) {
        if let Some(start) = self.reserve(bytes) {
            tokio::time::sleep_until(start.into()).await;
        }
    }

    /// Books `bytes` at the rate in force: when they may start (`None`: no limit).
    fn reserve(&self, bytes: u64) -> Option<Instant> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let mut next = self.next.lock();
        let start = (*next).max(Instant::now());
        *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_drops_while_clients_append_and_comes_back_after() {
        let a = Arc::new(Activity::default());
        let p = Pacer::yielding(100 << 20, 10 << 20, a.clone());
        assert_eq!(p.rate(), 100 << 20, "no client yet");
        a.touch();
        assert!(a.busy());
        assert_eq!(p.rate(), 10 << 20, "a client appended");
        // The last append 2 s ago: idle again.
        let old = Arc::new(Activity { base: Instant::now() - Duration::from_secs(2), last_ms: AtomicU64::new(1) });
        assert!(!old.busy());
        assert_eq!(Pacer::yielding(100 << 20, 10 << 20, old.clone()).rate(), 100 << 20);
        old.touch();
        assert!(old.busy());
        assert_eq!(Pacer::yielding(0, 0, a).rate(), 0, "no limit stays no limit");
    }

    #[test]
    fn each_span_is_booked_after_the_last_at_the_rate_in_force() {
        let a = Arc::new(Activity::default());
        let p = Pacer::yielding(1 << 20, 1 << 18, a.clone());
        let t0 = p.reserve(1 << 20).unwrap(); // goes at once; the next 1 s later
        let t1 = p.reserve(1 << 20).unwrap();
        assert_eq!((t1 - t0).as_millis(), 1000);
        a.touch();
        let t2 = p.reserve(1 << 20).unwrap(); // booked at 2 s, at the busy rate: 4 s
        let t3 = p.reserve(1).unwrap();
        assert_eq!(((t2 - t0).as_millis(), (t3 - t0).as_millis()), (2000, 6000));
        assert_eq!(Pacer::new(0).reserve(1 << 30), None, "no limit");
    }
}
