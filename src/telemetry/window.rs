//! Windowed request figures for the stats API and the status page: per route, a ring of
//! one-second slots covering the last [`WINDOW_SECONDS`], each counting requests by cache
//! outcome, 5xx responses, and latencies in the buckets of `/metrics`
//! ([`LATENCY_BUCKETS`]).
//!
//! Recording ([`RouteWindow::record`]) is a few relaxed atomic adds into the slot of the
//! current second, with no lock and no allocation; the first record of a new second claims
//! the slot (compare-and-swap on its second) and clears it. A record racing that clear by a
//! few nanoseconds can be lost: the windowed figures are a view, the since-start figures
//! come from the Prometheus counters. Reading ([`RouteWindow::sum`]) adds the slots whose
//! second lies in the window.
//!
//! One ring per route label, shared by every config snapshot that has the label (a reload
//! keeps the window), and dropped when no snapshot has it any more: rings are bounded by the
//! routes of the live configs, like the `route` label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::outcome::CacheOutcome;

/// How far back the rings reach, in seconds (one slot per second).
pub const WINDOW_SECONDS: u64 = 300;

const SLOTS: usize = WINDOW_SECONDS as usize;
const OUTCOMES: usize = CacheOutcome::ALL.len();
/// The finite latency buckets and `+Inf`.
/// Histogram buckets in seconds, 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Latency buckets of a window: [`LATENCY_BUCKETS`] and `+Inf`.
pub const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// The outcomes that are cache lookups served from cache (the hit-ratio numerator, as in
/// `deploy/prometheus/alerts.yml`).
pub const HITS: [CacheOutcome; 4] = [
    CacheOutcome::HitL1,
    CacheOutcome::HitL2,
    CacheOutcome::Stale,
    CacheOutcome::Revalidated,
];

/// Cache lookups: the hits and the misses (bypass, uncacheable and local are not lookups).
pub const LOOKUPS: [CacheOutcome; 5] = [
    CacheOutcome::HitL1,
    CacheOutcome::HitL2,
    CacheOutcome::Stale,
    CacheOutcome::Revalidated,
    CacheOutcome::Miss,
];

/// The process's second counter: whole seconds since the first call.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The current second of the rings' clock.
pub fn now_second() -> u64 {
    EPOCH.elapsed().as_secs()
}

/// One second of one route.
#[derive(Default)]
struct Slot {
    /// The second this slot holds, plus one (0: never used).
    tag: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES],
    server_errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Slot {
    fn clear(&self) {
        for c in self.outcomes.iter().chain(&self.latency) {
            c.store(0, Ordering::Relaxed);
        }
        self.server_errors.store(0, Ordering::Relaxed);
    }
}

/// The last [`WINDOW_SECONDS`] of one route label.
pub struct RouteWindow {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for RouteWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteWindow").finish_non_exhaustive()
    }
}

impl Default for RouteWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// The index of the latency bucket `elapsed` falls in (`le` semantics; the last is `+Inf`).
pub fn bucket_index(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    LATENCY_BUCKETS
        .iter()
        .position(|&le| secs <= le)
        .unwrap_or(LATENCY_BUCKETS.len())
}

impl RouteWindow {
    /// An empty ring.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    /// Count one finished request at second `now` (see [`now_second`]).
    pub fn record(&self, now: u64, outcome: CacheOutcome, status: u16, elapsed: Duration) {
        let tag = now + 1;
        let Some(slot) = self.slots.get((now % WINDOW_SECONDS) as usize) else {
            return;
        };
        let seen = slot.tag.load(Ordering::Acquire);
        if seen != tag {
            if seen > tag {
                // Recorded more than a whole window late: that second is gone.
                return;
            }
            if slot
                .tag
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.clear();
            }
        }
        slot.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_index(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of the last `seconds` seconds up to and including `now` (at most
    /// [`WINDOW_SECONDS`]).
    pub fn sum(&self, now: u64, seconds: u64) -> WindowSum {
        let seconds = seconds.min(WINDOW_SECONDS);
        let mut sum = WindowSum::default();
        let oldest = (now + 1).saturating_sub(seconds);
        for slot in self.slots.iter() {
            let tag = slot.tag.load(Ordering::Acquire);
            if tag == 0 || tag - 1 < oldest || tag - 1 > now {
                continue;
            }
            sum.add_slot(slot);
        }
        sum
    }
}

/// Counts over a window: by outcome, 5xx, and latency buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSum {
    /// Requests by outcome, in [`CacheOutcome::ALL`] order.
    pub outcomes: [u64; OUTCOMES],
    /// Responses with a 5xx status.
    pub server_errors: u64,
    /// Request latencies per bucket of [`LATENCY_BUCKETS`] (not cumulative), `+Inf` last.
    pub latency: [u64; BUCKETS],
}

impl WindowSum {
    fn add_slot(&mut self, slot: &Slot) {
        for (sum, c) in self.outcomes.iter_mut().zip(&slot.outcomes) {
            *sum += c.load(Ordering::Relaxed);
        }
        self.server_errors += slot.server_errors.load(Ordering::Relaxed);
        for (sum, c) in self.latency.iter_mut().zip(&slot.latency) {
            *sum += c.load(Ordering::Relaxed);
        }
    }

    /// Adds another sum into this one.
    pub fn add(&mut self, other: &WindowSum) {
        for (a, b) in self.outcomes.iter_mut().zip(&other.outcomes) {
            *a += b;
        }
        self.server_errors += other.server_errors;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// Requests of `outcome`.
    pub fn count(&self, outcome: CacheOutcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// Every request.
    pub fn requests(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Cache lookups (see [`LOOKUPS`]).
    pub fn lookups(&self) -> u64 {
        LOOKUPS.iter().map(|&o| self.count(o)).sum()
    }

    /// Hits over lookups; `None` without lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(HITS.iter().map(|&o| self.count(o)).sum(), self.lookups())
    }

    /// The share of lookups `outcome` served; `None` without lookups.
    pub fn share(&self, outcome: CacheOutcome) -> Option<f64> {
        ratio(self.count(outcome), self.lookups())
    }

    /// The quantile `q` (0 to 1) of the latencies in seconds, estimated as Prometheus's
    /// `histogram_quantile` does (linear within the bucket; the highest finite bound for
    /// the `+Inf` bucket). `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.latency, q)
    }
}

/// `part / whole`, `None` for an empty whole.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The quantile `q` of per-bucket (not cumulative) `counts` over [`LATENCY_BUCKETS`] and
/// `+Inf`, as Prometheus's `histogram_quantile` computes it. `None` without observations.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                return LATENCY_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let into = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * into);
        }
        below += n;
    }
    LATENCY_BUCKETS.last().copied()
}

/// The rings by route label; weak, so a label no snapshot uses any more is dropped.
static RINGS: LazyLock<Mutex<HashMap<String, Weak<RouteWindow>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The ring of route label `route`, shared with every other holder of the label. Called when
/// a snapshot's metric handles are built, never per request.
pub fn for_route(route: &str) -> Arc<RouteWindow> {
    let Ok(mut rings) = RINGS.lock() else {
        // A panic while holding the map: the new holder gets a ring of its own.
        return Arc::new(RouteWindow::new());
    };
    rings.retain(|_, w| w.strong_count() > 0);
    if let Some(ring) = rings.get(route).and_then(Weak::upgrade) {
        return ring;
    }
    let ring = Arc::new(RouteWindow::new());
    rings.insert(route.to_owned(), Arc::downgrade(&ring));
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_window_adds_the_seconds_inside_it_only() {
        let w = RouteWindow::new();
        w.record(10, CacheOutcome::HitL1, 200, MS);
        w.record(10, CacheOutcome::Miss, 200, MS);
        w.record(50, CacheOutcome::HitL1, 503, MS);
        w.record(69, CacheOutcome::HitL2, 200, MS);
        let last_minute = w.sum(70, 60);
        assert_eq!(last_minute.requests(), 2, "second 10 is outside 11..=70");
        assert_eq!(last_minute.server_errors, 1);
        assert_eq!(w.sum(69, 60).requests(), 4, "10..=69");
        assert_eq!(w.sum(69, 300).requests(), 4);
        assert_eq!(w.sum(69, 1).requests(), 1);
        // Seconds after `now` (another thread's clock ran ahead) are not counted.
        assert_eq!(w.sum(49, 60).requests(), 2);
    }

    #[test]
    fn a_slot_is_cleared_when_its_second_comes_round_again() {
        let w = RouteWindow::new();
        for _ in 0..5 {
            w.record(7, CacheOutcome::HitL1, 200, MS);
        }
        w.record(7 + WINDOW_SECONDS, CacheOutcome::Miss, 200, MS);
        let sum = w.sum(7 + WINDOW_SECONDS, WINDOW_SECONDS);
        assert_eq!(sum.requests(), 1);
        assert_eq!(sum.count(CacheOutcome::Miss), 1);
        // A record for a second a whole window older than the slot's is dropped.
        w.record(7, CacheOutcome::HitL1, 200, MS);
        assert_eq!(w.sum(7 + WINDOW_SECONDS, WINDOW_SECONDS).requests(), 1);
    }

    #[test]
    fn hit_ratio_counts_lookups_only() {
        let w = RouteWindow::new();
        for outcome in [
            CacheOutcome::HitL1,
            CacheOutcome::HitL1,
            CacheOutcome::HitL2,
            CacheOutcome::Miss,
            CacheOutcome::Bypass,
            CacheOutcome::Local,
        ] {
            w.record(1, outcome, 200, MS);
        }
        let sum = w.sum(1, 60);
        assert_eq!(sum.requests(), 6);
        assert_eq!(sum.lookups(), 4);
        assert_eq!(sum.hit_ratio(), Some(0.75));
        assert_eq!(sum.share(CacheOutcome::HitL1), Some(0.5));
        assert_eq!(sum.share(CacheOutcome::HitL2), Some(0.25));
        assert_eq!(RouteWindow::new().sum(1, 60).hit_ratio(), None);
    }

    #[test]
    fn quantiles_interpolate_within_buckets_like_histogram_quantile() {
        assert_eq!(bucket_index(Duration::from_micros(100)), 0);
        assert_eq!(bucket_index(Duration::from_micros(101)), 1);
        assert_eq!(bucket_index(Duration::from_secs(11)), LATENCY_BUCKETS.len());
        let w = RouteWindow::new();
        // 100 requests: 90 in (1 ms, 2.5 ms], 10 in (50 ms, 100 ms].
        for _ in 0..90 {
            w.record(3, CacheOutcome::HitL1, 200, Duration::from_millis(2));
        }
        for _ in 0..10 {
            w.record(3, CacheOutcome::Miss, 200, Duration::from_millis(80));
        }
        let sum = w.sum(3, 60);
        let p50 = sum.quantile(0.5).unwrap();
        // rank 50 of 90 in (0.001, 0.0025]: 0.001 + 0.0015 * 50/90
        assert!(
            (p50 - (0.001 + 0.0015 * 50.0 / 90.0)).abs() < 1e-12,
            "{p50}"
        );
        let p95 = sum.quantile(0.95).unwrap();
        assert!((p95 - 0.075).abs() < 1e-12, "{p95}");
        let p99 = sum.quantile(0.99).unwrap();
        assert!(p99 > 0.05 && p99 <= 0.1, "{p99}");
        assert_eq!(RouteWindow::new().sum(3, 60).quantile(0.5), None);
        // Everything above the last bound: the last bound.
        let slow = RouteWindow::new();
        slow.record(0, CacheOutcome::Miss, 200, Duration::from_secs(20));
        assert_eq!(slow.sum(0, 60).quantile(0.99), Some(10.0));
    }

    #[test]
    fn sums_add_up() {
        let a = RouteWindow::new();
        let b = RouteWindow::new();
        a.record(0, CacheOutcome::HitL1, 200, MS);
        b.record(0, CacheOutcome::Miss, 500, MS);
        let mut total = a.sum(0, 60);
        total.add(&b.sum(0, 60));
        assert_eq!(total.requests(), 2);
        assert_eq!(total.server_errors, 1);
        assert_eq!(total.latency.iter().sum::<u64>(), 2);
    }

    #[test]
    fn a_route_label_shares_its_ring_while_held() {
        let first = for_route("window_test_route");
        let again = for_route("window_test_route");
        assert!(Arc::ptr_eq(&first, &again));
        let other = for_route("window_test_other");
        assert!(!Arc::ptr_eq(&first, &other));
        drop((first, again));
        // No holder left: the next one starts empty.
        let fresh = for_route("window_test_route");
        fresh.record(0, CacheOutcome::HitL1, 200, MS);
        assert_eq!(fresh.sum(0, 60).requests(), 1);
    }

    #[test]
    fn concurrent_records_in_one_second_all_count() {
        let w = Arc::new(RouteWindow::new());
        // Claim the second first: only a record racing the claim's clear can be lost.
        w.record(42, CacheOutcome::HitL1, 200, MS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        w.record(42, CacheOutcome::HitL1, 200, MS);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.sum(42, 1).requests(), 4001);
    }
}
