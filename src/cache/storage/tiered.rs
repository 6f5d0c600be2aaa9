//! [`TieredCache`]: the pingora-cache `Storage` of sidecache, plus its hit and miss handlers.
//!
//! Lookup: L1, then (on an L1 miss) L2 under the read timeout; an L2 hit is promoted into L1
//! with its remaining lifetime. The request plan probes L1 before pingora-cache runs
//! ([`TieredCache::probe_l1`]) and leaves the result in the key, so the lookup that follows
//! does not probe again. Miss: the body is buffered (up to `max_object_bytes`), on `finish`
//! the entry goes into L1 synchronously and into L2 by a spawned task (never awaited there:
//! `finish` runs before the last chunk reaches the client).
//!
//! **Purges win.** The probe also notes when the request's work began ([`WorkStart`]): this
//! process's purge generation ([`super::purge_log`]) and Redis's as last seen, which the
//! lookup's L2 read (GET and generation in one round trip) refreshes. Everything the request
//! stores is checked against the purges after that: an L2 hit that a later (or still running)
//! purge matches is neither promoted nor served (a miss), the miss handler's L1 insert is
//! refused the same way, and its L2 store is refused by Redis itself (see [`super::l2`]); a
//! revalidated entry (`update_meta`) too. A key without a probe (a caller that does not
//! probe) starts its work when the miss handler is created, asking Redis for its generation
//! then. The refusals count as `sidecache_stores_refused_total{tier,reason}`.
//!
//! This module only stores: purges are orchestrated by [`crate::purge`], which calls the
//! per-tier operations here and in [`super::l2`].

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};

use super::atomic_duration::AtomicDuration;
use super::codec;
use super::entry::StoredEntry;
use super::events::{CorruptEntry, StoreRefused};
use super::fill_lock::{self, FillLock, FillOutcome, FillSlot, RefreshOutcome};
use super::l1::{EntryKey, L1Entry, L1Store};
use super::l2::{EntryWrite, L2Store, PurgeDone, StoreOutcome};
use super::purge_log::{Provenance, PurgeLog, PurgeTicket, Refusal};
use super::{EntryContext, PurgeKind, Tier};
use crate::config::CacheConfig;
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::{metrics, preset_pairs, L2Result};

/// The two-tier cache storage handed to `session.cache.enable(..)` (as a `&'static`).
pub struct TieredCache {
    l1: L1Store,
    l2: Option<L2Store>,
    purges: PurgeLog,
    max_object_bytes: AtomicU64,
    /// `cache.l2.fill_lock` (live).
    fill_lock: AtomicBool,
    /// `cache.lock_timeout`: how long a fill lock lives and its waiters wait.
    lock_timeout: Duration,
    /// `cache.soft_purge_grace` (live).
    soft_purge_grace: AtomicDuration,
}

/// When one request's cache work began, in each tier's purge generation: what everything it
/// stores is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkStart {
    /// This process's purge generation.
    pub l1: u64,
    /// Redis's purge generation, if known (without it the work stores nothing in L2).
    pub l2: Option<u64>,
}

/// What one L1 probe found under one key. [`L1Probe::remember_in`] leaves it in that key's
/// extensions for the storage lookup that follows, which uses it instead of probing again:
/// only the first lookup of exactly that key does (a later one, after waiting on the cache
/// lock whose holder has stored the entry meanwhile, and the lookup of a Vary variant probe
/// L1 themselves).
///
/// The probe also carries when the request's work began ([`L1Probe::started`]), for every
/// storage call of the request (lookups, miss handler, revalidation).
pub struct L1Probe {
    key: EntryKey,
    found: Option<Arc<L1Entry>>,
    used: AtomicBool,
    /// This process's purge generation when the request's current work began: taken before
    /// L1 was probed, and again by every storage lookup that goes on to L2 (what the request
    /// fetches after a lookup began after it; a waiter that fetches again after the writer's
    /// fill was refused by a purge is new work, not work from before that purge).
    since_l1: AtomicU64,
    /// Redis's purge generation (0: unknown), refreshed by the lookup's L2 read.
    since_l2: AtomicU64,
    /// The cross-instance fill lock this request took, if any (shared by the copies).
    fill: FillSlot,
    /// Whether the request's last storage lookup (of whichever key) missed: the cache lock
    /// re-checks L1 only for a miss (see [`super::coalescing_lock`]).
    last_lookup_missed: AtomicBool,
}

/// A copy carries the state of the original (used or not, Redis generation).
impl Clone for L1Probe {
    fn clone(&self) -> Self {
        L1Probe {
            key: self.key,
            found: self.found.clone(),
            used: AtomicBool::new(self.used.load(Ordering::Relaxed)),
            since_l1: AtomicU64::new(self.since_l1.load(Ordering::Relaxed)),
            since_l2: AtomicU64::new(self.since_l2.load(Ordering::Relaxed)),
            fill: self.fill.clone(),
            last_lookup_missed: AtomicBool::new(self.last_lookup_missed()),
        }
    }
}

impl L1Probe {
    /// When the request's work began.
    pub fn started(&self) -> WorkStart {
        WorkStart {
            l1: self.since_l1.load(Ordering::Relaxed),
            l2: Some(self.since_l2.load(Ordering::Relaxed)).filter(|g| *g > 0),
        }
    }

    /// The live entry the probe found, if any.
    pub fn found(&self) -> Option<&Arc<L1Entry>> {
        self.found.as_ref()
    }

    /// The request's answer cannot be stored: a fill lock it holds is given up, so the
    /// other instances' waiters go to the origin at once (see [`super::fill_lock`]).
    pub fn answer_not_storable(&self) {
        fill_lock::give_up(&self.fill);
    }

    /// Whether the request's last storage lookup missed.
    pub fn last_lookup_missed(&self) -> bool {
        self.last_lookup_missed.load(Ordering::Relaxed)
    }

    /// Leave this result in `key` for the next storage lookup of it.
    pub fn remember_in(self, key: &mut CacheKey) {
        key.extensions.insert(self);
    }

    /// The result for `key`, once.
    fn take_for(&self, key: &EntryKey) -> Option<Option<Arc<L1Entry>>> {
        (self.key == *key && !self.used.swap(true, Ordering::Relaxed)).then(|| self.found.clone())
    }
}

/// Spawn a background task on the current runtime; silently skipped outside a runtime.
fn spawn_bg<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(fut);
    }
}

impl TieredCache {
    /// Build from config; L2 present iff `cfg.l2.is_some()`. No I/O: Redis is connected lazily
    /// by the runtime that first uses it. `l1.max_bytes == 0` disables L1.
    pub fn new(cfg: &CacheConfig) -> TieredCache {
        let tiers = [Tier::L1.label(), Tier::L2.label()];
        let m = metrics();
        for t in tiers {
            m.corrupt_entries.with_label_values(&[t]);
        }
        preset_pairs(&m.stores_refused, &tiers, &Refusal::ALL.map(Refusal::label));
        TieredCache {
            l1: L1Store::new(cfg.l1.max_bytes),
            l2: cfg.l2.as_ref().map(L2Store::new),
            purges: PurgeLog::new(),
            max_object_bytes: AtomicU64::new(cfg.l1.max_object_bytes),
            fill_lock: AtomicBool::new(cfg.l2.as_ref().is_some_and(|l2| l2.fill_lock)),
            lock_timeout: cfg.lock_timeout,
            soft_purge_grace: AtomicDuration::new(cfg.soft_purge_grace),
        }
    }

    /// Live-adjust L2 timeouts/breaker, the object size limit and the L1 budget (a different
    /// budget rebuilds L1 empty). Adding or removing L2 is a restart-only change, refused by
    /// the reload before it gets here.
    pub fn reconfigure(&self, cfg: &CacheConfig) {
        self.max_object_bytes
            .store(cfg.l1.max_object_bytes, Ordering::Relaxed);
        self.l1.reconfigure(cfg.l1.max_bytes);
        self.soft_purge_grace.set(cfg.soft_purge_grace);
        if let (Some(l2), Some(c)) = (&self.l2, &cfg.l2) {
            l2.reconfigure(c);
            self.fill_lock.store(c.fill_lock, Ordering::Relaxed);
        }
    }

    /// Probe L1 (never L2) for `key`, noting first when the request's work begins.
    pub fn probe_l1(&self, key: &CacheKey) -> L1Probe {
        let started = self.work_start();
        let k = super::storage_key(key);
        L1Probe {
            key: k,
            found: self.l1.get(&k),
            used: AtomicBool::new(false),
            since_l1: AtomicU64::new(started.l1),
            since_l2: AtomicU64::new(started.l2.unwrap_or(0)),
            fill: FillSlot::default(),
            last_lookup_missed: AtomicBool::new(false),
        }
    }

    /// The purge generations now, Redis's as last seen: for work that begins now.
    pub fn work_start(&self) -> WorkStart {
        WorkStart {
            l1: self.purges.generation(),
            l2: self.l2.as_ref().and_then(L2Store::seen_generation),
        }
    }

    /// When the work on `key` began: as its probe noted it, or now for a key without one
    /// (asking Redis for its generation, under the read timeout).
    async fn started(&self, key: &CacheKey) -> WorkStart {
        if let Some(probe) = key.extensions.get::<L1Probe>() {
            return probe.started();
        }
        let l1 = self.purges.generation();
        let l2 = match &self.l2 {
            Some(l2) => l2.generation().await.ok(),
            None => None,
        };
        WorkStart { l1, l2 }
    }

    /// This process's record of recent purges.
    pub fn purge_log(&self) -> &PurgeLog {
        &self.purges
    }

    /// The L1 tier.
    pub fn l1(&self) -> &L1Store {
        &self.l1
    }

    /// The L2 tier, if configured.
    pub fn l2(&self) -> Option<&L2Store> {
        self.l2.as_ref()
    }

    /// Is Redis usable now (breaker closed)? `None` when no L2 is configured.
    pub fn l2_healthy(&self) -> Option<bool> {
        self.l2.as_ref().map(|l2| l2.breaker().is_closed())
    }

    /// Active PING under the read timeout, for readiness. `Ok(())` without L2.
    pub async fn l2_ping(&self) -> Result<(), String> {
        match &self.l2 {
            Some(l2) => l2.ping().await,
            None => Ok(()),
        }
    }

    /// Largest body that is stored.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes.load(Ordering::Relaxed)
    }

    /// Record a purge of `kind`/`target` before anything is removed: from now on nothing
    /// it matches that work begun earlier found is stored, and with `l2_part` (a local purge
    /// whose Redis part is still to run) nothing it matches is served from L2 until the
    /// ticket is dropped.
    pub fn record_purge(&self, kind: PurgeKind, target: &str, l2_part: bool) -> PurgeTicket<'_> {
        self.purges.record(kind, target, l2_part)
    }

    /// Remove the entries `kind`/`target` names from L1 only; returns how many.
    pub async fn purge_l1(&self, kind: PurgeKind, target: &str) -> u64 {
        match kind {
            PurgeKind::Url => self.l1.purge_url(target).await,
            PurgeKind::Prefix => self.l1.purge_prefix(target).await,
            PurgeKind::Tag => self.l1.purge_tag(target).await,
        }
    }

    /// How long a soft-purged entry stays servable stale (`cache.soft_purge_grace`).
    pub fn soft_purge_grace(&self) -> Duration {
        self.soft_purge_grace.get()
    }

    /// Purge the entries `kind`/`target` names from L1 softly at `at` (see
    /// [`L1Store::soften`]); returns how many were softened or removed.
    pub async fn purge_l1_soft(&self, kind: PurgeKind, target: &str, at: SystemTime) -> u64 {
        let grace = self.soft_purge_grace();
        self.l1.purge_soft(kind, target, at, grace).await
    }

    /// [`Self::purge_l1`] at once, without yielding (see [`L1Store::purge_now`]).
    pub fn purge_l1_now(&self, kind: PurgeKind, target: &str) -> u64 {
        self.l1.purge_now(kind, target)
    }

    /// Remove the entries `kind`/`target` names from L2 in bounded batches (`None` without
    /// L2); returns the purge's generation and how many were removed.
    pub async fn purge_l2(
        &self,
        kind: PurgeKind,
        target: &str,
    ) -> Option<Result<PurgeDone, L2Result>> {
        Some(self.l2.as_ref()?.purge(kind, target).await)
    }

    /// Drop everything from L1 only (used after a pub/sub gap), refusing what work begun
    /// before would store.
    pub fn clear_l1(&self) {
        self.purges.forget_all();
        self.l1.clear();
    }

    /// Store `entry` under `key` in L1 now and in L2 in the background, each unless a purge
    /// since `started` matches it.
    /// A fill lock the work holds is released once the L2 write is done.
    fn store(
        &'static self,
        key: EntryKey,
        entry: StoredEntry,
        started: WorkStart,
        fill: Option<FillLock>,
    ) {
        match self
            .purges
            .admit(started.l1, &entry.ctx, Provenance::Origin)
        {
            Ok(_admitted) => {
                self.l1.insert(key, entry.clone());
            }
            Err(reason) => StoreRefused {
                tier: Tier::L1,
                reason,
                url: &entry.ctx.url,
            }
            .emit(),
        }
        self.spawn_l2_write(key, entry, started.l2, fill);
    }

    /// Write `entry` to L2 in a spawned task under the write timeout, unless a purge after
    /// Redis generation `since` matches it (no `since`: refused).
    fn spawn_l2_write(
        &'static self,
        key: EntryKey,
        entry: StoredEntry,
        since: Option<u64>,
        fill: Option<FillLock>,
    ) {
        let Some(l2) = &self.l2 else { return };
        let Some(ttl) = entry.remaining(SystemTime::now()) else {
            return;
        };
        let Some(since) = since else {
            StoreRefused {
                tier: Tier::L2,
                reason: Refusal::Unknown,
                url: &entry.ctx.url,
            }
            .emit();
            return;
        };
        spawn_bg(async move {
            let value = codec::encode_compressed(&entry, l2.compress_above());
            let write = EntryWrite {
                key: &key,
                value: &value,
                ttl,
                url: &entry.ctx.url,
                tags: &entry.ctx.tags,
                since,
            };
            let stored = l2.set_entry(&write).await;
            drop(fill);
            if let Ok(StoreOutcome::Refused(reason)) = stored {
                StoreRefused {
                    tier: Tier::L2,
                    reason,
                    url: &entry.ctx.url,
                }
                .emit();
            }
        });
    }

    /// L2 lookup: GET + decode, and the purge generation read with it (`None` when the read
    /// failed); corrupt values count, get deleted in the background, and miss.
    async fn l2_lookup(&'static self, key: &EntryKey) -> (Option<StoredEntry>, Option<u64>) {
        let Some(l2) = self.l2.as_ref() else {
            return (None, None);
        };
        let Ok(read) = l2.get_entry(key).await else {
            return (None, None);
        };
        (
            decode_l2(l2, key, read.value, self.max_object_bytes()),
            Some(read.generation),
        )
    }

    /// After an L1 and L2 miss with Redis reachable: the cross-instance fill lock (see
    /// [`super::fill_lock`]), when on. `Some`: another instance filled the entry meanwhile.
    async fn fill(&'static self, probe: Option<&L1Probe>, key: &EntryKey, refetch: bool) -> Filled {
        let fetch_now = Filled::Fetch { waited: false };
        let (Some(l2), Some(p)) = (self.l2.as_ref(), probe) else {
            return fetch_now;
        };
        // the request took the lock in an earlier lookup (it then waited on pingora's lock
        // behind another writer, whose fill stored nothing): it fetches, it never waits on
        // itself
        if !self.fill_lock.load(Ordering::Relaxed) || fill_lock::holds(&p.fill) {
            return fetch_now;
        }
        match fill_lock::take_or_wait(l2, key, &p.fill, self.lock_timeout, refetch).await {
            FillOutcome::Fetch { waited } => Filled::Fetch { waited },
            FillOutcome::Filled(raw) => {
                match decode_l2(l2, key, Some(raw), self.max_object_bytes()) {
                    Some(e) => Filled::Entry(Box::new(e)),
                    None => Filled::Fetch { waited: true },
                }
            }
        }
    }

    /// A lookup found nothing: the request's origin fetch begins now. What it stores is
    /// checked against the purges from now on, not from when its lookup began (a waiter
    /// behind a fill that a purge refused fetches anew, after that purge). After a wait on
    /// the fill lock, Redis's generation is read again for its store.
    async fn fetch_begins(
        &'static self,
        probe: Option<&L1Probe>,
        waited: bool,
    ) -> Option<(CacheMeta, HitHandler)> {
        let p = probe?;
        p.since_l1
            .store(self.purges.generation(), Ordering::Relaxed);
        if waited {
            let now = match &self.l2 {
                Some(l2) => l2.generation().await.unwrap_or(0),
                None => 0,
            };
            p.since_l2.store(now, Ordering::Relaxed);
        }
        None
    }

    /// An L1 entry past its stale window is about to be fetched again, and every instance
    /// holding a copy would do so at about the same moment: with the fill lock on, the
    /// refetch is one per fleet like a miss's. Redis is read first (another instance may have
    /// refreshed the entry already: its copy is promoted and served); else the fill lock is
    /// taken, or waited on for the holder's entry. `None`: this request fetches (holding the
    /// lock if it took it), from the stale entry as before, so a revalidation or
    /// stale-if-error still applies to it.
    async fn refreshed_elsewhere(
        &'static self,
        probe: Option<&L1Probe>,
        k: &EntryKey,
    ) -> Option<(CacheMeta, HitHandler)> {
        let p = probe?;
        if self.l2.is_none() || !self.fill_lock.load(Ordering::Relaxed) || fill_lock::holds(&p.fill)
        {
            return None;
        }
        let since = self.purges.generation();
        p.since_l1.store(since, Ordering::Relaxed);
        let (entry, generation) = self.l2_lookup(k).await;
        if let Some(g) = generation {
            p.since_l2.store(g, Ordering::Relaxed);
        }
        let now = SystemTime::now();
        let entry = match (entry, generation) {
            (Some(e), _) if e.fresh_until > now => e,
            (_, Some(_)) => match self.fill(probe, k, true).await {
                Filled::Entry(e) if e.fresh_until > now => *e,
                Filled::Entry(_) => return None,
                Filled::Fetch { waited } => return self.fetch_begins(probe, waited).await,
            },
            (_, None) => return None,
        };
        self.promote(since, *k, entry)
    }

    /// Serve `entry`, read from Redis by work that began at purge generation `since`, as an
    /// L2 hit and keep it in L1, unless a purge recorded since then matches it (then it is
    /// refused, counted, and the lookup misses).
    fn promote(
        &self,
        since: u64,
        k: EntryKey,
        entry: StoredEntry,
    ) -> Option<(CacheMeta, HitHandler)> {
        match self.purges.admit(since, &entry.ctx, Provenance::Redis) {
            Ok(_admitted) => {
                let h = hit(&entry, Tier::L2);
                self.l1.insert(k, entry);
                Some(h)
            }
            Err(reason) => {
                StoreRefused {
                    tier: Tier::L1,
                    reason,
                    url: &entry.ctx.url,
                }
                .emit();
                None
            }
        }
    }

    /// The lookup itself: L1 (the probe's result, once), then L2, then the fill lock.
    async fn lookup_tiers(&'static self, key: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
        let k = super::storage_key(key);
        let probe = key.extensions.get::<L1Probe>();
        let probed = probe.and_then(|p| p.take_for(&k));
        if let Some(e) = probed.unwrap_or_else(|| self.l1.get(&k)) {
            if past_stale_window(&e.entry, SystemTime::now()) {
                if let Some(fresh) = self.refreshed_elsewhere(probe, &k).await {
                    return Some(fresh);
                }
            }
            return Some(hit(&e.entry, Tier::L1));
        }
        // the work this lookup starts (an L2 read to promote, then maybe an origin fetch)
        // begins now
        let since = self.purges.generation();
        if let Some(p) = probe {
            p.since_l1.store(since, Ordering::Relaxed);
        }
        let (entry, generation) = self.l2_lookup(&k).await;
        if let (Some(p), Some(g)) = (probe, generation) {
            p.since_l2.store(g, Ordering::Relaxed);
        }
        let entry = match (entry, generation) {
            (Some(e), _) => e,
            (None, Some(_)) => match self.fill(probe, &k, false).await {
                Filled::Entry(e) => *e,
                Filled::Fetch { waited } => return self.fetch_begins(probe, waited).await,
            },
            (None, None) => return self.fetch_begins(probe, false).await,
        };
        self.promote(since, k, entry)
    }
}

impl TieredCache {
    /// The background refresh of a soft-purged entry under `key` is about to fetch: whether
    /// it should. One instance of the fleet refreshes each key: the refresh takes the key's
    /// fill lock (one attempt, see [`fill_lock::take_for_refresh`]), whatever
    /// `cache.l2.fill_lock` says, and keeps it until its store. When another instance holds
    /// it, this one does not fetch (its clients are served the stale copy meanwhile); when
    /// another instance has already refreshed the entry, its copy is promoted into L1 (unless
    /// a purge since the request began matches it) and nothing is fetched. Without L2, or
    /// without the request's probe, the refresh fetches.
    pub async fn refresh_soft(&'static self, key: &CacheKey) -> bool {
        let (Some(l2), Some(probe)) = (self.l2.as_ref(), key.extensions.get::<L1Probe>()) else {
            return true;
        };
        let k = super::storage_key(key);
        match fill_lock::take_for_refresh(l2, &k, &probe.fill, self.lock_timeout).await {
            RefreshOutcome::Fetch => {
                // the fetch begins now, after the soft purge: its store is checked against
                // the purges from here on (an instance that only heard of the purge may not
                // have seen Redis's generation move past it)
                probe
                    .since_l1
                    .store(self.purges.generation(), Ordering::Relaxed);
                let now = l2.generation().await.unwrap_or(0);
                probe.since_l2.store(now, Ordering::Relaxed);
                true
            }
            RefreshOutcome::Busy => false,
            RefreshOutcome::Refreshed(raw) => {
                if let Some(entry) = decode_l2(l2, &k, Some(raw), self.max_object_bytes()) {
                    let since = probe.started().l1;
                    match self.purges.admit(since, &entry.ctx, Provenance::Redis) {
                        Ok(_admitted) => {
                            self.l1.insert(k, entry);
                        }
                        Err(reason) => StoreRefused {
                            tier: Tier::L1,
                            reason,
                            url: &entry.ctx.url,
                        }
                        .emit(),
                    }
                }
                false
            }
        }
    }
}

/// What the fill lock decided for a lookup that missed both tiers.
enum Filled {
    /// Another instance filled the entry meanwhile (boxed: the rare case of a rare path).
    Entry(Box<StoredEntry>),
    /// Fetch from the origin; `waited`: after waiting on another holder.
    Fetch { waited: bool },
}

/// Decode a value read from L2 (`None`: absent, expired or corrupt, which includes a body
/// claiming more than `max_body` bytes).
fn decode_l2(
    l2: &'static L2Store,
    key: &EntryKey,
    raw: Option<Vec<u8>>,
    max_body: u64,
) -> Option<StoredEntry> {
    {
        let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        match codec::decode(Bytes::from(raw?), max_body) {
            Ok(e) => {
                e.remaining(SystemTime::now())?;
                Some(e)
            }
            Err(err) => {
                CorruptEntry {
                    tier: Tier::L2,
                    key: &l2.entry_key(key),
                    error: &err,
                }
                .emit();
                let key = *key;
                spawn_bg(async move {
                    let _ = l2.del_entry(&key).await;
                });
                None
            }
        }
    }
}

/// Whether `entry` is expired and past its stale-while-revalidate window at `now`: a
/// request for it waits on a fetch (within the window, pingora serves it stale and refreshes
/// in the background, and nobody waits).
fn past_stale_window(entry: &StoredEntry, now: SystemTime) -> bool {
    entry.fresh_until + Duration::from_secs(u64::from(entry.swr)) <= now
}

fn hit(entry: &StoredEntry, tier: Tier) -> (CacheMeta, HitHandler) {
    let len = entry.body.len();
    (
        entry.to_meta(),
        Box::new(TieredHit {
            body: entry.body.clone(),
            start: 0,
            end: len,
            done: false,
            tier,
            soft_purged: entry.soft_purged,
        }),
    )
}

#[async_trait]
impl Storage for TieredCache {
    /// Called by pingora after the cache key is known, first with the primary key, then (when
    /// the primary's meta has a different variance than the request) with the variance set.
    /// L1 first, then L2 (read timeout, fail open: errors are misses, never `Err`).
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let found = self.lookup_tiers(key).await;
        if let Some(p) = key.extensions.get::<L1Probe>() {
            p.last_lookup_missed
                .store(found.is_none(), Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Called after `response_cache_filter` made the response cacheable (and after the variance
    /// was set on `meta`). Captures the meta fields and the [`EntryContext`] from the meta's
    /// extensions; the returned handler buffers the body. `storage_key(key)` is where the
    /// entry will live (pingora already points it at the primary slot when appropriate).
    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let ctx = meta
            .extensions()
            .get::<EntryContext>()
            .cloned()
            .unwrap_or_default();
        Ok(Box::new(TieredMiss {
            cache: self,
            key: super::storage_key(key),
            template: StoredEntry::from_meta(meta, ctx, Bytes::new()),
            body: BytesMut::new(),
            limit: self.max_object_bytes(),
            too_large: false,
            started: self.started(key).await,
            fill: key
                .extensions
                .get::<L1Probe>()
                .and_then(|p| fill_lock::take(&p.fill)),
        }))
    }

    /// Called for purge requests (`is_purge`) and by an eviction manager (sidecache passes none).
    /// Removes the key from L1 and L2 (L2 awaited under the write timeout; failure is logged and
    /// the L1 result reported).
    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let k = super::storage_key(target.key());
        let mut removed = self.l1.remove(&k);
        if let Some(l2) = &self.l2 {
            if let Ok(n) = l2.del_entry(&k).await {
                removed |= n > 0;
            }
        }
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    /// Called after a 304 revalidation with the merged meta. Updates L1 in place (same body)
    /// and rewrites L2 in the background: from the L1 copy, or by GET + re-SET when the entry is
    /// only in L2; both unless a purge since the request began matches the entry. Returns
    /// whether an update was made or scheduled.
    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let k = super::storage_key(key);
        let started = self.started(key).await;
        // a soft-purged entry's refresh holds the fill lock until its L2 write is done
        let fill = key
            .extensions
            .get::<L1Probe>()
            .and_then(|p| fill_lock::take(&p.fill));
        if let Some(old) = self.l1.get(&k) {
            self.store(k, old.entry.with_meta(meta), started, fill);
            return Ok(true);
        }
        if self.l2.is_none() {
            return Ok(false);
        }
        let fresh = StoredEntry::from_meta(meta, EntryContext::default(), Bytes::new());
        spawn_bg(async move {
            if let (Some(old), _) = self.l2_lookup(&k).await {
                let mut updated = old.with_meta_fields(&fresh);
                updated.ctx = old.ctx.clone();
                self.spawn_l2_write(k, updated, started.l2, None);
            }
        });
        Ok(true)
    }

    /// Always false: readers wait for the whole body (non-streaming storage).
    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

impl StoredEntry {
    /// Body and context of `self`, meta fields (freshness, header, variance) of `fresh`.
    fn with_meta_fields(&self, fresh: &StoredEntry) -> StoredEntry {
        StoredEntry {
            body: self.body.clone(),
            ctx: self.ctx.clone(),
            variance: fresh.variance.or(self.variance),
            ..fresh.clone()
        }
    }
}

/// Hit handler: the whole body (or the sought range) as one `Bytes`, then `None`.
pub struct TieredHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    tier: Tier,
    soft_purged: bool,
}

impl TieredHit {
    /// Which tier served this hit.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Whether the entry was purged softly (and not refreshed since).
    pub fn soft_purged(&self) -> bool {
        self.soft_purged
    }
}

#[async_trait]
impl HandleHit for TieredHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    /// Serve `start..end` (end exclusive, clamped to the body) on the next `read_body`.
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len && !(start == 0 && len == 0) {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {len}"),
            );
        }
        let end = end.map_or(len, |e| e.min(len));
        if end < start {
            return Error::e_explain(ErrorType::InternalError, "seek end before start");
        }
        self.start = start;
        self.end = end;
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Miss handler: buffers the body; `finish` stores into L1 and spawns the L2 write, each
/// unless a purge since the request's work began matches the entry.
///
/// Bodies over `max_object_bytes` are not stored: buffering stops and `finish` returns an
/// error (pingora only logs a failed finish). `write_body` itself does not fail, because
/// pingora propagates a `write_body` error to the downstream response.
pub struct TieredMiss {
    cache: &'static TieredCache,
    key: EntryKey,
    template: StoredEntry,
    body: BytesMut,
    limit: u64,
    too_large: bool,
    started: WorkStart,
    /// The fill lock the request took, held until the L2 write is done.
    fill: Option<FillLock>,
}

#[async_trait]
impl HandleMiss for TieredMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large {
            return Ok(());
        }
        if (self.body.len() + data.len()) as u64 > self.limit {
            self.too_large = true;
            self.body = BytesMut::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.too_large {
            if let Some(lock) = self.fill.as_mut() {
                lock.give_up();
            }
            return Error::e_explain(
                ErrorType::InternalError,
                format!("body exceeds max_object_bytes {}", self.limit),
            );
        }
        let this = *self;
        let size = this.body.len();
        let mut entry = this.template;
        entry.body = this.body.freeze();
        this.cache.store(this.key, entry, this.started, this.fill);
        Ok(MissFinishType::Created(size))
    }
}
