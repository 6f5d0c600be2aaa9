//! Purges: one service for every way a cached entry is invalidated.
//!
//! A [`PurgeRequest`] says what to purge ([`PurgeKind`] and target) and where the purge came
//! from ([`PurgeSource`]): the admin API (`POST /admin/purge`, also what `sidecache purge`
//! calls), a write (a route's `invalidate_on`, and RFC 9111 §4.4 unsafe-method
//! invalidation: see [`writes`]), or another instance (its broadcast, or the finished-purge
//! log). [`PurgeService::apply`] runs each the same way:
//!
//! 1. **Record** it in this process's purge log
//!    ([`purge_log`](crate::cache::storage::purge_log)) with the next generation: from then
//!    on nothing it matches is stored by work that began before it (an origin fetch, an L2
//!    read), and, until its Redis part below has run, nothing it matches is served from L2 on
//!    this instance (a miss instead), so the old copy cannot come back from Redis.
//! 2. **L1**: this instance is right at once.
//! 3. **Redis** (local purges only), in bounded batches: the first records a tombstone, so a
//!    store of any instance whose work began before the purge is refused by Redis itself,
//!    however late it lands. When this fails (Redis slow or down) the purge waits in the
//!    [`backlog`] and is retried until it lands; meanwhile step 1 keeps this instance right.
//! 4. **Log and broadcast** (local purges only): the finished purge is logged in Redis under
//!    the generation Redis gave it, then published. Other instances apply it to their L1 when
//!    its broadcast arrives, or when they read the log ([`catch_up`]), whichever comes first,
//!    and once only ([`applied`]). A received purge touches L1 only and is never passed on.
//!
//! A write's invalidation ([`writes`]) runs steps 1 and 2 at once on the request path and
//! queues 3 and 4 in the backlog. The storage tiers only store and remove; the order, the
//! retries and the broadcast live here.

pub mod applied;
pub mod backlog;
pub mod broadcast;
pub mod catch_up;
mod command;
mod events;
pub mod writes;

pub use command::{command, PurgeCommand};

use serde::{Deserialize, Serialize};

use std::time::SystemTime;

use crate::cache::storage::breaker::Admits;
use crate::cache::storage::l2::{PurgeDone, SoftPurge};
pub use crate::cache::storage::PurgeKind;
use crate::cache::storage::TieredCache;
use crate::config::CacheConfig;
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::{metrics, preset_pairs, L2Result};
use applied::AppliedPurges;
use backlog::{Backlog, Ended, Job, Next, Pace, Pushed};
use broadcast::{ChannelKey, PurgeMessage};
use events::{PurgeApplied, PurgeBroadcast, PurgeDeferred};

crate::labels::label_enum! {
    /// Where a purge came from (the `source` label of `sidecache_purges_total`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum PurgeSource {
        /// `POST /admin/purge` by an operator or a script.
        Admin => "admin",
        /// `sidecache purge` (which calls the admin API and says so).
        Cli => "cli",
        /// A successful write: `invalidate_on` or unsafe-method invalidation.
        Write => "write",
        /// Another instance's purge (its broadcast, or the finished-purge log), applied to L1
        /// only.
        Remote => "remote",
    }
    /// The metric label value.
    fn label;
}

/// One purge: what it targets and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeRequest {
    pub kind: PurgeKind,
    /// The url (path and query), url prefix or tag.
    pub target: String,
    pub source: PurgeSource,
    /// The instance a received purge came from (`None`: this one).
    pub origin: Option<String>,
    /// `Some(at)`: a soft purge made at `at`. What it names is marked stale from `at` and
    /// served stale for `cache.soft_purge_grace` after it while one background fetch per key,
    /// fleet-wide, refreshes it; what may not be served stale is removed. `None`: hard.
    pub soft_at: Option<SystemTime>,
}

impl PurgeRequest {
    /// A purge of `kind`/`target` from `source`.
    pub fn new(kind: PurgeKind, target: impl Into<String>, source: PurgeSource) -> Self {
        Self {
            kind,
            target: target.into(),
            source,
            origin: None,
            soft_at: None,
        }
    }

    /// This purge made soft, at `at`.
    pub fn soft(mut self, at: SystemTime) -> Self {
        self.soft_at = Some(at);
        self
    }

    /// `soft` or `hard`, for logs and the status page.
    pub fn mode(&self) -> &'static str {
        match self.soft_at {
            Some(_) => "soft",
            None => "hard",
        }
    }
}

/// What one purge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries removed from L1 (a soft purge: marked stale, or removed).
    pub l1_removed: u64,
    /// Entries removed from L2 (0 without L2, and for received purges; a soft purge: marked
    /// stale, or removed).
    pub l2_removed: u64,
    /// False when L2 is configured but the purge could not reach it (error, timeout, breaker
    /// open). True without L2, and for received purges.
    pub l2_ok: bool,
    /// True when the purge was published to the other instances (false without L2, and for
    /// received purges).
    pub broadcast: bool,
    /// True when its Redis part failed and waits in the backlog, retried until it lands.
    pub retrying: bool,
}

/// A job whose Redis part did not land, with why, for the backlog.
struct Deferred {
    job: Job,
    result: L2Result,
}

/// `job`, whose Redis part just failed with `result`, counted and logged, for the backlog.
fn deferred(mut job: Job, result: L2Result) -> Deferred {
    job.attempts += 1;
    PurgeDeferred {
        kind: job.request.kind,
        attempt: job.attempts,
        result,
    }
    .emit();
    Deferred { job, result }
}

/// Applies purges to both tiers and broadcasts them to the other instances.
pub struct PurgeService {
    cache: &'static TieredCache,
    /// This process's id in broadcasts; messages carrying it are skipped on receipt.
    instance_id: String,
    /// The pub/sub channel (`cache.l2.channel`); `None` without L2.
    channel: Option<String>,
    /// Signs and checks broadcasts (`cache.l2.channel_secret`); `None`: unsigned.
    channel_key: Option<ChannelKey>,
    /// Purges whose Redis part is waiting.
    backlog: Backlog,
    /// The generations of the purges applied here (made, received or read from the log).
    applied: AppliedPurges,
}

impl PurgeService {
    /// The purge service of `cache` (whose L2, if any, carries the broadcasts).
    pub fn new(cache: &'static TieredCache, config: &CacheConfig) -> Self {
        let (kinds, sources) = (
            PurgeKind::ALL.map(PurgeKind::label),
            PurgeSource::ALL.map(PurgeSource::label),
        );
        preset_pairs(&metrics().purges, &kinds, &sources);
        preset_pairs(&metrics().soft_purges, &kinds, &sources);
        let l2 = config.l2.as_ref();
        PurgeService {
            cache,
            instance_id: broadcast::new_instance_id(),
            channel: l2.map(|l2| l2.channel.clone()),
            channel_key: l2
                .and_then(|l2| l2.channel_secret.as_ref())
                .map(|secret| ChannelKey::new(secret.expose())),
            backlog: Backlog::default(),
            applied: AppliedPurges::new(),
        }
    }

    /// The key that signs and checks broadcasts, if a secret is configured.
    pub fn channel_key(&self) -> Option<&ChannelKey> {
        self.channel_key.as_ref()
    }

    /// This process's id in purge broadcasts.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The cache this service purges.
    pub fn cache(&self) -> &'static TieredCache {
        self.cache
    }

    /// The generations of the purges applied here.
    pub fn applied(&self) -> &AppliedPurges {
        &self.applied
    }

    /// Purges whose Redis part is waiting now.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Whether a write's purges may join the backlog: false while it holds
    /// `cache.l2.purge_backlog` purges. A write refused for it never reaches the origin,
    /// since the shared cache could not be told about it (see [`backlog`]).
    pub fn accepts_writes(&self) -> bool {
        self.cache
            .l2()
            .is_none_or(|l2| self.backlog.len() < l2.purge_backlog())
    }

    /// Apply one purge (see the module docs for the order) and report what it did. A local
    /// purge whose Redis part fails is reported with `retrying` and left to the backlog.
    pub async fn apply(&'static self, request: &PurgeRequest) -> PurgeReport {
        let l2_part = request.source != PurgeSource::Remote && self.cache.l2().is_some();
        let ticket = self
            .cache
            .record_purge(request.kind, &request.target, l2_part);
        let l1_removed = match request.soft_at {
            Some(at) => {
                self.cache
                    .purge_l1_soft(request.kind, &request.target, at)
                    .await
            }
            None => self.cache.purge_l1(request.kind, &request.target).await,
        };
        if !l2_part {
            drop(ticket);
            return self.applied_l1_only(request, l1_removed);
        }
        let job = Job {
            request: request.clone(),
            ticket,
            l1_removed,
            attempts: 0,
        };
        match self.redis_part(job).await {
            Ok(report) => report,
            Err(Deferred { job, .. }) => {
                let report = PurgeReport {
                    l1_removed,
                    l2_ok: false,
                    retrying: true,
                    ..PurgeReport::default()
                };
                self.queue(job);
                report
            }
        }
    }

    /// The event and report of a purge with no Redis part (a received one, or no L2).
    fn applied_l1_only(&self, request: &PurgeRequest, l1_removed: u64) -> PurgeReport {
        let report = PurgeReport {
            l1_removed,
            l2_ok: true,
            ..PurgeReport::default()
        };
        PurgeApplied {
            request,
            report: &report,
            instance: request.origin.as_deref().unwrap_or(&self.instance_id),
        }
        .emit();
        report
    }

    /// The Redis part of a purge whose L1 part is done: the batched delete (settling its
    /// record), the log entry, the broadcast, then the event. `Err` gives the job back when
    /// Redis did not take it.
    async fn redis_part(&self, job: Job) -> Result<PurgeReport, Deferred> {
        let (kind, target) = (job.request.kind, job.request.target.as_str());
        let Some(l2) = self.cache.l2() else {
            drop(job.ticket);
            return Ok(self.applied_l1_only(&job.request, job.l1_removed));
        };
        let soft = job.request.soft_at.map(|at| SoftPurge {
            at,
            grace: self.cache.soft_purge_grace(),
        });
        let done = match l2.purge_with(kind, target, soft).await {
            Ok(done) => done,
            Err(result) => return Err(deferred(job, result)),
        };
        let PurgeDone {
            generation,
            deleted,
        } = done;
        // never applied again when the log or a broadcast brings it back
        let _ = self.applied.note(generation);
        let mut message = PurgeMessage::new(&self.instance_id, kind, target, generation);
        message.soft = soft.is_some();
        let Ok(payload) = self.seal(&message) else {
            // cannot happen (serializing plain fields, HMAC takes any key); the delete is done
            drop(job.ticket);
            return Ok(PurgeReport {
                l1_removed: job.l1_removed,
                l2_removed: deleted,
                l2_ok: true,
                ..PurgeReport::default()
            });
        };
        if let Err(result) = l2.log_finished(&payload).await {
            // without the log entry the others would learn of it by the broadcast only: run
            // the whole part again (a new generation, the same effect)
            return Err(deferred(job, result));
        }
        drop(job.ticket);
        let broadcast = self.broadcast(kind, payload).await;
        let report = PurgeReport {
            l1_removed: job.l1_removed,
            l2_removed: deleted,
            l2_ok: true,
            broadcast,
            retrying: false,
        };
        PurgeApplied {
            request: &job.request,
            report: &report,
            instance: &self.instance_id,
        }
        .emit();
        Ok(report)
    }

    /// Hand `job` to the backlog, starting its worker if none runs. Returns whether it took
    /// the place of a waiting purge of the same target.
    fn queue(&'static self, job: Job) -> Pushed {
        let pushed = self.backlog.push(job);
        self.backlog.ensure_worker(|| self.drain_backlog());
        pushed
    }

    /// The backlog's worker: keeps up to [`backlog::WORKERS`] Redis parts running, paced by
    /// the purge breaker and backing off while they fail (see [`backlog`]).
    async fn drain_backlog(&'static self) {
        let mut pace = Pace::default();
        let mut running = tokio::task::JoinSet::new();
        loop {
            let admits = self
                .cache
                .l2()
                .map_or(Admits::All, |l2| l2.purge_breaker().admits());
            // refilled in batches, so each take keeps the speculative lane's quarter
            let batch_fits = |running: usize| running + backlog::REFILL <= backlog::WORKERS;
            let wait = match pace.next(admits, running.len()) {
                Next::Take(n) => {
                    if batch_fits(running.len()) || running.is_empty() {
                        let room = backlog::WORKERS - running.len();
                        for job in self.backlog.take(n.min(room)) {
                            running.spawn(async move { self.redis_part(job).await });
                        }
                    }
                    None
                }
                Next::Wait(wait) => Some(wait),
            };
            let may_take = wait.is_none() && batch_fits(running.len());
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    pace.ended(self.job_ended(done));
                }
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
                () = self.backlog.pushed(), if may_take => {}
            }
        }
    }

    /// Account for a job the worker ran: landed, or back to the backlog.
    fn job_ended(
        &self,
        done: Result<Result<PurgeReport, Deferred>, tokio::task::JoinError>,
    ) -> Ended {
        match done {
            Ok(Err(Deferred { job, result })) => {
                self.backlog.retry(job);
                if result == L2Result::Skipped {
                    Ended::Skipped
                } else {
                    Ended::Failed
                }
            }
            // landed, or (cannot happen: nothing in it panics) its task died
            Ok(Ok(_)) | Err(_) => {
                self.backlog.landed();
                Ended::Landed
            }
        }
    }

    /// `message` as published and logged: its JSON, signed with the channel secret if any.
    fn seal(&self, message: &PurgeMessage) -> Result<String, broadcast::MessageError> {
        let text = message.encode()?;
        match &self.channel_key {
            Some(key) => key.sign(&text),
            None => Ok(text),
        }
    }

    /// Publish a purge of `kind` (its sealed message, `payload`) to the other instances; true
    /// when Redis accepted it.
    async fn broadcast(&self, kind: PurgeKind, payload: String) -> bool {
        let (Some(l2), Some(channel)) = (self.cache.l2(), &self.channel) else {
            return false;
        };
        let ok = l2.publish(channel, payload).await.is_ok();
        PurgeBroadcast { kind, ok }.emit();
        ok
    }

    /// Receive other instances' purges until `shutdown` flips: their broadcasts (see
    /// [`broadcast`]) and the finished-purge log (see [`catch_up`]). Returns at once without
    /// L2. Run it once per process, inside a runtime that lives as long as the process
    /// (sidecache runs it as a pingora background service).
    pub async fn run_subscriber(&'static self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(channel) = &self.channel else { return };
        tokio::join!(
            broadcast::run(self, channel, shutdown.clone()),
            catch_up::run(self, shutdown),
        );
    }
}
