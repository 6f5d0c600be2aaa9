//! [`Backlog`]: purges whose Redis part (the batched delete with its tombstone, then the
//! log entry and the broadcast) is waiting, coalesced per target and retried until it lands.
//!
//! A purge lands here when its Redis part could not run at once: every write's invalidation
//! (its L1 part is done on the request path, which never waits on Redis), and an admin purge
//! whose Redis part failed. Until a job has landed its purge record stays **unsettled**
//! ([`crate::cache::storage::PurgeTicket`]): this instance serves nothing it matches from
//! Redis and stores nothing that work begun before it fetched, so nothing stale is served
//! here however long Redis takes. Other instances learn of it when it lands (see
//! [`super::catch_up`]).
//!
//! One worker task keeps up to [`WORKERS`] jobs running, starting the next as each ends,
//! oldest first within two lanes, the first ahead of the second (which keeps a quarter of
//! the places, so it cannot starve): **known** purges (of something this instance held, or
//! not a write's: an admin purge whose Redis part failed) and **speculative** ones (a
//! write's purge of a target this instance held nothing of, such as the url every write to
//! a default origin-mode path purges). So a flood of anonymous writes to paths nothing
//! cached, however deep it makes the backlog, does not delay the purge of an entry this
//! instance held, nor its broadcast to the others. The known lane is bounded by what was
//! cached: its jobs each removed an entry, and an entry comes back only through an origin
//! fetch. A speculative purge of an entry only another instance held still waits its turn
//! (see `docs/design.md`).
//!
//! The worker is paced by the purge breaker ([`Pace`]): while it is open the worker starts
//! nothing and waits out its cooldown; when the cooldown ends and the jobs already out are
//! back, it sends one job alone, the breaker's probe, and fills the pool again once that
//! closes it. So a Redis outage costs the backlog no skipped attempts and no wait longer
//! than the breaker's own, and the worker drains at full speed the moment Redis is back. A
//! job that fails goes back to the front of its lane and starts a backoff ([`RETRY_MIN`]
//! doubling to [`RETRY_MAX`]; the jobs of one outage, failing together, count once; it
//! overlaps the breaker's wait, not added to it); a job that lands resets it.
//!
//! A purge of a target that is already waiting takes its place (its newer record replaces
//! the older one), so a flood of writes to one target costs Redis one purge, and the
//! backlog holds at most one job per target. Nothing ever widens a purge: the backlog is
//! bounded by `cache.l2.purge_backlog`, and when it is full the writes that would add to it
//! are refused before they reach the origin (see [`super::PurgeService::accepts_writes`]),
//! never merged into a bigger purge.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{PurgeKind, PurgeRequest, PurgeSource};
use crate::cache::storage::breaker::Admits;
use crate::cache::storage::PurgeTicket;
use crate::sync::lock;
use crate::telemetry::metrics::metrics;

/// Jobs the worker runs at a time. They share one multiplexed connection, so Redis gets
/// them pipelined: a flood of writes to distinct targets drains at Redis's pace, not at one
/// round trip per purge. The pool is rolling (a job that ends makes room for the next), so
/// a job stuck until its write timeout holds only its own place, not a round of others.
pub const WORKERS: usize = 256;

/// The worker starts jobs in batches of at least this many (or when none runs), so every
/// take keeps the speculative lane's quarter.
pub const REFILL: usize = WORKERS / 4;

/// First backoff after a failed job.
pub const RETRY_MIN: Duration = Duration::from_millis(100);

/// Longest backoff between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Longest the worker sleeps while a half-open breaker's probe (sent by anyone) is out: it
/// looks again this soon, since the probe's success closes the breaker at once.
pub const PROBE_POLL: Duration = Duration::from_millis(25);

/// What the worker does next ([`Pace::next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Start up to this many more jobs (fewer when the pool has less room).
    Take(usize),
    /// Start nothing for (at most) this long: the breaker is open or its probe is out, a
    /// backoff runs, or the probe waits for the jobs still running. Jobs already running go
    /// on.
    Wait(Duration),
}

/// How one job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Its Redis part landed.
    Landed,
    /// An error or a timeout: it goes back to the backlog.
    Failed,
    /// The breaker was open when it was sent: it goes back, and the breaker paces the rest.
    Skipped,
}

/// The worker's pace: how many jobs it may start now, from the purge breaker, the jobs
/// running and its backoff (see the module docs).
#[derive(Debug)]
pub(super) struct Pace {
    /// The next backoff.
    backoff: Duration,
    /// No job starts before this (the end of the backoff running now).
    not_before: Option<Instant>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            backoff: RETRY_MIN,
            not_before: None,
        }
    }
}

impl Pace {
    /// What to do now, with the breaker letting `admits` through and `running` jobs out.
    pub fn next(&self, admits: Admits, running: usize) -> Next {
        let backoff = self
            .not_before
            .and_then(|at| at.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero());
        match (backoff, admits) {
            (Some(left), Admits::NoneFor(wait)) => Next::Wait(left.max(wait)),
            (Some(left), _) => Next::Wait(left),
            (None, Admits::All) => Next::Take(WORKERS),
            // the probe goes alone, once the jobs sent before the breaker opened are back
            (None, Admits::Probe) if running == 0 => Next::Take(1),
            (None, Admits::Probe | Admits::ProbeOut) => Next::Wait(PROBE_POLL),
            (None, Admits::NoneFor(wait)) => Next::Wait(wait),
        }
    }

    /// Note how a job ended: one that landed resets the backoff; one that failed starts the
    /// next backoff unless one runs (the jobs of one outage fail together, and count once);
    /// a skip leaves the pace to the breaker.
    pub fn ended(&mut self, ended: Ended) {
        match ended {
            Ended::Landed => {
                self.backoff = RETRY_MIN;
                self.not_before = None;
            }
            Ended::Failed => {
                let now = Instant::now();
                if self.not_before.is_none_or(|at| at <= now) {
                    self.not_before = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(RETRY_MAX);
                }
            }
            Ended::Skipped => {}
        }
    }
}

/// One purge whose L1 part is done and whose Redis part is waiting.
pub(super) struct Job {
    pub request: PurgeRequest,
    /// Its unsettled record: dropped (settled) once the Redis part has run.
    pub ticket: PurgeTicket<'static>,
    /// Entries its L1 part removed.
    pub l1_removed: u64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What coalesces: a soft and a hard purge of one target stay apart (the hard one must
/// delete what the soft one would keep).
type Target = (PurgeKind, String, bool);

fn target(job: &Job) -> Target {
    (
        job.request.kind,
        job.request.target.clone(),
        job.request.soft_at.is_some(),
    )
}

/// The lane of `job`: [`KNOWN`] or [`SPECULATIVE`] (see the module docs).
fn lane(job: &Job) -> usize {
    if job.l1_removed > 0 || job.request.source != PurgeSource::Write {
        KNOWN
    } else {
        SPECULATIVE
    }
}

/// The lane taken first: purges of what this instance held, and those not from writes.
const KNOWN: usize = 0;

/// The lane with a quarter of the slots (all when the other is empty): writes' purges of
/// what this instance did not hold.
const SPECULATIVE: usize = 1;

/// What became of a pushed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// It waits in the backlog.
    Queued,
    /// A purge of the same target was waiting: this one took its place.
    Coalesced,
}

#[derive(Default)]
struct Waiting {
    jobs: HashMap<Target, Job>,
    /// Targets oldest first, per lane. A target may also stand in the speculative lane after
    /// a coalesced job moved it to the known one; taking skips targets with no job waiting.
    order: [VecDeque<Target>; 2],
    /// Jobs taken by the worker and not yet landed or put back.
    running: usize,
}

/// The waiting jobs and the worker that drains them (see the module docs).
#[derive(Default)]
pub(super) struct Backlog {
    waiting: Mutex<Waiting>,
    /// Wakes the worker for new jobs.
    wake: Notify,
    /// The worker task, started by the first job (and again if its runtime went away).
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Waiting {
    /// Purges whose Redis part has not landed: waiting or running.
    fn len(&self) -> usize {
        self.jobs.len() + self.running
    }

    fn publish_len(&self) {
        metrics()
            .purge_backlog
            .set(i64::try_from(self.len()).unwrap_or(i64::MAX));
    }

    /// Put `job` in, behind the others of its lane (`front`: ahead of them). A job already
    /// waiting for the same target keeps its place and takes the newer record; if the two
    /// together are known, the target also joins the known lane.
    fn put(&mut self, job: Job, front: bool) -> Pushed {
        let t = target(&job);
        let pushed = match self.jobs.remove(&t) {
            Some(waiting) => {
                let stood = lane(&waiting);
                let (newer, older) = if front {
                    (waiting, job)
                } else {
                    (job, waiting)
                };
                let merged = Job {
                    l1_removed: newer.l1_removed + older.l1_removed,
                    attempts: older.attempts,
                    ..newer
                };
                if lane(&merged) == KNOWN && stood == SPECULATIVE {
                    self.order[KNOWN].push_back(t.clone());
                }
                self.jobs.insert(t, merged);
                // the older record settles as it drops; the newer one covers the target
                Pushed::Coalesced
            }
            None => {
                let order = &mut self.order[lane(&job)];
                if front {
                    order.push_front(t.clone());
                } else {
                    order.push_back(t.clone());
                }
                self.jobs.insert(t, job);
                Pushed::Queued
            }
        };
        self.publish_len();
        pushed
    }

    /// Up to `n` jobs: the known lane's first, but with a quarter of the slots kept for the
    /// speculative lane while it has jobs, so neither lane can starve the other.
    fn take(&mut self, n: usize) -> Vec<Job> {
        let mut taken = Vec::new();
        self.take_from(KNOWN, n - n / 4, &mut taken);
        self.take_from(SPECULATIVE, n, &mut taken);
        self.take_from(KNOWN, n, &mut taken);
        self.running += taken.len();
        self.publish_len();
        taken
    }

    /// Jobs of `lane`, oldest first, into `taken` until it holds `up_to`.
    fn take_from(&mut self, lane: usize, up_to: usize, taken: &mut Vec<Job>) {
        while taken.len() < up_to {
            let Some(t) = self.order[lane].pop_front() else {
                break;
            };
            if let Some(job) = self.jobs.remove(&t) {
                taken.push(job);
            }
        }
    }
}

impl Backlog {
    /// Purges whose Redis part has not landed: waiting, or taken by the worker.
    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Add a job (see [`Waiting::put`]) and wake the worker.
    pub fn push(&self, job: Job) -> Pushed {
        let pushed = lock(&self.waiting).put(job, false);
        self.wake.notify_one();
        pushed
    }

    /// Put a taken job that failed back at the front.
    pub fn retry(&self, job: Job) {
        let mut waiting = lock(&self.waiting);
        waiting.running = waiting.running.saturating_sub(1);
        waiting.put(job, true);
    }

    /// A taken job landed.
    pub fn landed(&self) {
        let mut waiting = lock(&self.waiting);
        waiting.running = waiting.running.saturating_sub(1);
        waiting.publish_len();
    }

    /// Up to `n` jobs (see [`Waiting::take`]); each must come back through [`Backlog::retry`] or
    /// [`Backlog::landed`].
    pub fn take(&self, n: usize) -> Vec<Job> {
        lock(&self.waiting).take(n)
    }

    /// Wait until a job may have been pushed.
    pub async fn pushed(&self) {
        self.wake.notified().await;
    }

    /// Start `worker` on the current runtime unless one runs; false outside a runtime.
    pub fn ensure_worker<F>(&self, worker: impl FnOnce() -> F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut running = lock(&self.worker);
        if running.as_ref().is_some_and(|h| !h.is_finished()) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        *running = Some(runtime.spawn(worker()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::storage::purge_log::PurgeLog;

    fn job(source: PurgeSource, target: &str, l1_removed: u64) -> Job {
        let log: &'static PurgeLog = Box::leak(Box::new(PurgeLog::new()));
        Job {
            request: PurgeRequest::new(PurgeKind::Url, target.to_owned(), source),
            ticket: log.record(PurgeKind::Url, target, true),
            l1_removed,
            attempts: 0,
        }
    }

    fn targets(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.request.target.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_takes_what_the_breaker_lets_through() {
        let pace = Pace::default();
        assert_eq!(pace.next(Admits::All, 10), Next::Take(WORKERS));
        // the probe goes alone, so no other job is sent to be skipped
        assert_eq!(pace.next(Admits::Probe, 0), Next::Take(1));
        assert_eq!(pace.next(Admits::Probe, 3), Next::Wait(PROBE_POLL));
        let cooldown = Duration::from_millis(300);
        assert_eq!(
            pace.next(Admits::NoneFor(cooldown), 0),
            Next::Wait(cooldown)
        );
        assert_eq!(pace.next(Admits::ProbeOut, 0), Next::Wait(PROBE_POLL));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_once_per_outage_and_a_landed_job_resets_the_backoff() {
        let mut pace = Pace::default();
        // 64 jobs of one outage fail together: one backoff, not 64 doublings
        for _ in 0..64 {
            pace.ended(Ended::Failed);
        }
        assert_eq!(pace.next(Admits::All, 0), Next::Wait(RETRY_MIN));
        tokio::time::advance(RETRY_MIN).await;
        assert_eq!(pace.next(Admits::All, 0), Next::Take(WORKERS));
        pace.ended(Ended::Failed);
        assert_eq!(pace.next(Admits::All, 0), Next::Wait(RETRY_MIN * 2));
        for _ in 0..10 {
            tokio::time::advance(RETRY_MAX).await;
            pace.ended(Ended::Failed);
        }
        assert_eq!(pace.next(Admits::All, 0), Next::Wait(RETRY_MAX));
        // one job that landed is enough: Redis takes work again
        pace.ended(Ended::Landed);
        assert_eq!(pace.next(Admits::All, 0), Next::Take(WORKERS));
        pace.ended(Ended::Failed);
        assert_eq!(pace.next(Admits::All, 0), Next::Wait(RETRY_MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_overlaps_the_breakers_wait_and_skips_leave_the_pace_to_the_breaker() {
        let mut pace = Pace::default();
        pace.ended(Ended::Failed);
        let cooldown = Duration::from_millis(300);
        assert_eq!(
            pace.next(Admits::NoneFor(cooldown), 0),
            Next::Wait(cooldown)
        );
        tokio::time::advance(RETRY_MIN).await;
        assert_eq!(pace.next(Admits::Probe, 0), Next::Take(1));

        let mut pace = Pace::default();
        for _ in 0..64 {
            pace.ended(Ended::Skipped);
        }
        assert_eq!(pace.next(Admits::All, 0), Next::Take(WORKERS));
    }

    #[test]
    fn a_purge_of_what_was_held_goes_ahead_of_a_flood_of_speculative_ones() {
        let mut w = Waiting::default();
        for i in 0..1_000 {
            w.put(job(PurgeSource::Write, &format!("/other/{i}"), 0), false);
        }
        w.put(job(PurgeSource::Write, "/held", 1), false);
        w.put(job(PurgeSource::Admin, "/admin", 0), false);
        let first = w.take(4);
        assert_eq!(targets(&first), ["/held", "/admin", "/other/0", "/other/1"]);
        // the four taken still count until they land
        assert_eq!(w.len(), 1_002);
    }

    #[test]
    fn the_speculative_lane_keeps_a_quarter_of_the_slots() {
        let mut w = Waiting::default();
        for i in 0..100 {
            w.put(job(PurgeSource::Write, &format!("/held/{i}"), 1), false);
            w.put(job(PurgeSource::Write, &format!("/other/{i}"), 0), false);
        }
        let taken = w.take(64);
        let speculative = targets(&taken)
            .iter()
            .filter(|t| t.starts_with("/other/"))
            .count();
        assert_eq!(speculative, 16);
    }

    #[test]
    fn a_held_purge_coalesced_into_a_speculative_one_moves_it_ahead() {
        let mut w = Waiting::default();
        w.put(job(PurgeSource::Write, "/a", 0), false);
        w.put(job(PurgeSource::Write, "/b", 0), false);
        assert_eq!(
            w.put(job(PurgeSource::Write, "/b", 2), false),
            Pushed::Coalesced
        );
        let taken = w.take(1);
        assert_eq!(targets(&taken), ["/b"]);
        assert_eq!(taken[0].l1_removed, 2);
        // its old place in the speculative lane is skipped, not taken twice
        let rest = w.take(8);
        assert_eq!(targets(&rest), ["/a"]);
        // both are running (taken, not landed), nothing waits
        assert_eq!(w.len(), 2);
        assert!(w.jobs.is_empty());
    }
}
