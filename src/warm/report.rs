//! What a warming pass did: per-request [`Outcome`]s tallied into a [`WarmReport`], rendered
//! for people or as JSON, and a [`ProgressGate`] deciding when to print a progress line.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cache::status::CacheOutcome;

/// How many failures the text summary lists (the JSON has them all).
const LISTED_FAILURES: usize = 20;

/// The result of one warming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The origin was called (`MISS`, `UNCACHEABLE`, `REVALIDATED`, `BYPASS`, no `X-Cache`).
    Fetched,
    /// Served from the cache (`HIT-L1`, `HIT-L2`, `STALE`).
    AlreadyWarm,
    /// A status outside 2xx/3xx, a timeout or a transport error.
    Failed(String),
}

impl Outcome {
    /// Classifies a response by status and `X-Cache` (read as a [`CacheOutcome`]; an unknown
    /// or missing value counts as fetched).
    pub fn classify(status: u16, x_cache: Option<&str>) -> Outcome {
        if !(200..400).contains(&status) {
            return Outcome::Failed(format!("status {status}"));
        }
        match x_cache.and_then(CacheOutcome::from_x_cache) {
            Some(CacheOutcome::HitL1 | CacheOutcome::HitL2 | CacheOutcome::Stale) => {
                Outcome::AlreadyWarm
            }
            _ => Outcome::Fetched,
        }
    }
}

/// Totals of a warming pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarmReport {
    /// The origin was called to answer (the cache was cold for this URL).
    pub fetched: usize,
    /// Already in L1 or L2.
    pub already_warm: usize,
    /// Failed requests.
    pub failed: usize,
    /// `(url, reason)` for each failure, in completion order.
    pub failures: Vec<(String, String)>,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl WarmReport {
    /// Adds one request's outcome.
    pub fn record(&mut self, url: &str, outcome: Outcome) {
        match outcome {
            Outcome::Fetched => self.fetched += 1,
            Outcome::AlreadyWarm => self.already_warm += 1,
            Outcome::Failed(reason) => {
                self.failed += 1;
                self.failures.push((url.to_owned(), reason));
            }
        }
    }

    /// Requests finished so far.
    pub fn done(&self) -> usize {
        self.fetched + self.already_warm + self.failed
    }

    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0)
    }

    /// One progress line: `warm: 120/500 fetched 100, already warm 15, failed 5`.
    pub fn progress_line(&self, total: usize) -> String {
        format!(
            "warm: {}/{total} fetched {}, already warm {}, failed {}",
            self.done(),
            self.fetched,
            self.already_warm,
            self.failed
        )
    }

    /// The human summary printed at the end of `sidecache warm`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "warmed {} URL(s) in {:.1}s: fetched {}, already warm {}, failed {}\n",
            self.done(),
            self.elapsed.as_secs_f64(),
            self.fetched,
            self.already_warm,
            self.failed
        );
        for (url, reason) in self.failures.iter().take(LISTED_FAILURES) {
            let _ = writeln!(s, "  FAILED {url}: {reason}");
        }
        if self.failures.len() > LISTED_FAILURES {
            let _ = writeln!(
                s,
                "  ... and {} more",
                self.failures.len() - LISTED_FAILURES
            );
        }
        s
    }

    /// The machine-readable summary (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "total": self.done(),
            "fetched": self.fetched,
            "already_warm": self.already_warm,
            "failed": self.failed,
            "elapsed_ms": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "failures": self.failures.iter().map(|(url, reason)| json!({
                "url": url,
                "reason": reason,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Decides when to print progress: every `every` finished requests or once `interval` has
/// passed since the last line, whichever comes first.
#[derive(Debug)]
pub struct ProgressGate {
    every: usize,
    interval: Duration,
    last_done: usize,
    last_at: Instant,
}

impl ProgressGate {
    /// A gate starting now.
    pub fn new(every: usize, interval: Duration, now: Instant) -> Self {
        Self {
            every: every.max(1),
            interval,
            last_done: 0,
            last_at: now,
        }
    }

    /// Whether to print a line now that `done` requests have finished; records it if so.
    pub fn should_print(&mut self, done: usize, now: Instant) -> bool {
        let due = done >= self.last_done + self.every
            || (done > self.last_done && now.duration_since(self.last_at) >= self.interval);
        if due {
            self.last_done = done;
            self.last_at = now;
        }
        due
    }
}
