//! A byte-rate pacer for the datanode's background work.

use std::time::{Duration, Instant};

/// Paces background work (rebuilds together, scrub) at `rate` bytes per second:
/// each span waits for its turn.
pub struct Pacer {
    rate: u64,
    next: parking_lot::Mutex<Instant>,
}

impl Pacer {
    /// `rate` bytes per second; 0 for no limit.
    pub fn new(rate: u64) -> Pacer {
        Pacer { rate, next: parking_lot::Mutex::new(Instant::now()) }
    }

    /// Waits until `bytes` more may be moved.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let start = {
            let mut next = self.next.lock();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}
