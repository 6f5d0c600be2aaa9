//! [`AppliedPurges`]: which purges (by the generation Redis gave them) this instance has
//! already applied, so each is applied once however it arrives (its broadcast, the
//! finished-purge log, or both), and a captured broadcast cannot be replayed.
//!
//! A purge's generation is its identity: Redis gives each purge a new one, from its own clock
//! in microseconds (see [`crate::cache::storage::l2`]), and the broadcast and the log both
//! carry it. The set remembers the generations of the last [`REPLAY_WINDOW`] (at most
//! [`KEPT`] of them). A broadcast whose generation is in the set is a duplicate or a replay;
//! one older than the window (or than the oldest generation the set had to forget) is a
//! replay too, since its purge was applied then or reached this instance's L1 through the log.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How far back broadcasts are accepted, against the newest Redis generation seen.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(600);

/// Generations remembered at most; forgetting older ones raises the floor below which every
/// broadcast is refused.
pub const KEPT: usize = 65_536;

/// Why a purge was not applied again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAgain {
    /// Its generation was applied already.
    Applied,
    /// Its generation is older than the replay window or than what the set remembers.
    TooOld,
}

#[derive(Debug, Default)]
struct Seen {
    /// Generations in the order they were applied.
    order: VecDeque<u64>,
    set: HashSet<u64>,
    /// Broadcasts at or below this generation are refused (the newest one forgotten).
    floor: u64,
}

/// The generations this instance applied (see the module docs).
#[derive(Debug, Default)]
pub struct AppliedPurges {
    seen: Mutex<Seen>,
}

impl AppliedPurges {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // plain data, consistent after every statement
        crate::sync::lock(&self.seen)
    }

    /// Note `generation` as applied; `Err` when it already was. For purges this instance
    /// made and purges read from the finished-purge log, whatever their age.
    pub fn note(&self, generation: u64) -> Result<(), NotAgain> {
        let mut seen = self.seen();
        if !seen.set.insert(generation) {
            return Err(NotAgain::Applied);
        }
        seen.order.push_back(generation);
        while seen.order.len() > KEPT {
            if let Some(old) = seen.order.pop_front() {
                seen.set.remove(&old);
                seen.floor = seen.floor.max(old);
            }
        }
        Ok(())
    }

    /// Note a broadcast purge of `generation` as applied, unless it was, or it is a replay:
    /// older than [`REPLAY_WINDOW`] before `now` (the newest Redis generation seen, if any)
    /// or than the oldest generation remembered.
    pub fn note_broadcast(&self, generation: u64, now: Option<u64>) -> Result<(), NotAgain> {
        let window = u64::try_from(REPLAY_WINDOW.as_micros()).unwrap_or(u64::MAX);
        let oldest = now.map_or(0, |now| now.saturating_sub(window));
        if generation < oldest || generation <= self.seen().floor {
            return Err(NotAgain::TooOld);
        }
        self.note(generation)
    }

    /// How many generations are remembered (for tests).
    pub fn len(&self) -> usize {
        self.seen().order.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_generation_is_applied_once() {
        let applied = AppliedPurges::new();
        assert_eq!(applied.note(10), Ok(()));
        assert_eq!(applied.note(10), Err(NotAgain::Applied));
        assert_eq!(applied.note_broadcast(10, None), Err(NotAgain::Applied));
        assert_eq!(applied.note_broadcast(11, None), Ok(()));
        assert_eq!(applied.note(11), Err(NotAgain::Applied));
    }

    #[test]
    fn broadcasts_older_than_the_window_are_replays() {
        let applied = AppliedPurges::new();
        let now = 2_000_000_000_000_000u64;
        let window = REPLAY_WINDOW.as_micros() as u64;
        assert_eq!(
            applied.note_broadcast(now - window - 1, Some(now)),
            Err(NotAgain::TooOld)
        );
        assert_eq!(applied.note_broadcast(now - window, Some(now)), Ok(()));
        // the log is authoritative: an old purge read from it still applies once
        assert_eq!(applied.note(now - window - 1), Ok(()));
    }

    #[test]
    fn forgetting_raises_the_floor() {
        let applied = AppliedPurges::new();
        for g in 1..=(KEPT as u64 + 3) {
            assert_eq!(applied.note(g), Ok(()));
        }
        assert_eq!(applied.len(), KEPT);
        // 1..=3 were forgotten: their replays are refused, not applied again
        assert_eq!(applied.note_broadcast(2, None), Err(NotAgain::TooOld));
        assert_eq!(applied.note_broadcast(3, None), Err(NotAgain::TooOld));
        assert_eq!(applied.note_broadcast(KEPT as u64 + 4, None), Ok(()));
    }
}
