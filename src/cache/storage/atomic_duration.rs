//! [`AtomicDuration`]: a duration a reload can change while requests read it, without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A `Duration` stored as nanoseconds in an `AtomicU64` (saturating at about 584 years).
#[derive(Debug)]
pub struct AtomicDuration(AtomicU64);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl AtomicDuration {
    /// Holding `d`.
    pub fn new(d: Duration) -> Self {
        Self(AtomicU64::new(nanos(d)))
    }

    /// The current value.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Replace the value.
    pub fn set(&self, d: Duration) {
        self.0.store(nanos(d), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_replaces_a_duration() {
        let d = AtomicDuration::new(Duration::from_millis(50));
        assert_eq!(d.get(), Duration::from_millis(50));
        d.set(Duration::from_secs(2));
        assert_eq!(d.get(), Duration::from_secs(2));
        assert_eq!(
            AtomicDuration::new(Duration::MAX).get(),
            Duration::from_nanos(u64::MAX)
        );
    }
}
