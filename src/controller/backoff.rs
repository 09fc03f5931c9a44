//! Per-object retry delays after failed reconciles.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Retry delay after failed reconciles of one object: 1s, doubled on each
/// further failure up to 300s; forgotten after a success.
pub struct Backoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

impl<K: Eq + Hash> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            failures: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash> Backoff<K> {
    pub fn succeeded(&self, key: &K) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Counts a failure; returns how many in a row and the delay to wait.
    pub fn failed(&self, key: K) -> (u32, Duration) {
        let failures = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        let delay = RETRY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(RETRY_MAX);
        (failures, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..11).map(|_| b.failed("a").1.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.failed("b"), (1, RETRY), "per object");
        b.succeeded(&"a");
        assert_eq!(b.failed("a"), (1, RETRY));
    }
}
