//! [`L1Store`]: the in-process moka tier, bounded by bytes, plus the url/tag indexes used by
//! purges.
//!
//! Values are `Arc<StoredEntry>` (decoded meta fields + `Bytes` body), keyed by the entry's
//! [`super::storage_key`]. Each entry expires at its own deadline (fresh_until + max(swr, sie) + 5 s)
//! through moka's `Expiry`. The weigher counts header + body + context bytes (u32 per entry,
//! u64 total). `max_bytes == 0` disables L1 (every operation is a no-op / miss).
//!
//! The indexes (url -> keys in a `BTreeMap` for prefix ranges, tag -> keys) live behind a std
//! `Mutex` that is never held across an await. Index members carry the generation of the L1
//! insert that created them, so a late eviction notice for an old generation cannot unindex a
//! newer entry under the same key.
//!
//! **The index agrees with moka by construction.** An insert indexes its entry, then hands it
//! to moka; inserts of one key do both steps one at a time (a striped lock, [`INSERT_STRIPES`],
//! never held by the eviction listener), so moka keeps the value whose index member was
//! written last. Without it two inserts of one key could reach moka in the opposite order
//! from their index updates, and the `Replaced` notice of the value that lost would unindex
//! the one that stayed: url, prefix and tag purges would then miss it until its deadline.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use pingora_http::ResponseHeader;

use super::entry::StoredEntry;
use super::PurgeKind;
use crate::sync::lock;
use crate::telemetry::events::{InternalEvent, L1Eviction, L1Stored};
use crate::telemetry::metrics::{metrics, EvictionCause};

/// Removals between two `yield_now()` calls in a purge.
pub const YIELD_EVERY: usize = 512;

/// Urls taken from the index per lock in a prefix purge.
pub const URL_BATCH: usize = 256;

/// Stripes of the lock that makes the inserts of one key one at a time.
pub const INSERT_STRIPES: usize = 64;

/// Storage key: [`super::storage_key`] (primary hash + variance, placed by path).
pub type EntryKey = [u8; 16];

/// What L1 holds per key.
#[derive(Debug)]
pub struct L1Entry {
    pub entry: StoredEntry,
    /// The response header a fast-path hit sends (the stored header plus framing and cache
    /// status headers), built once by the first such hit and cloned by the next ones. Boxed:
    /// inline it would cost every entry 232 bytes, also those never hit.
    pub hit_header: std::sync::OnceLock<Box<pingora_http::ResponseHeader>>,
    generation: u64,
    weight: u32,
}

type Members = HashMap<EntryKey, u64>;

#[derive(Default)]
struct Index {
    urls: BTreeMap<String, Members>,
    tags: HashMap<String, Members>,
}

impl Index {
    fn add(&mut self, key: EntryKey, e: &L1Entry) {
        if !e.entry.ctx.url.is_empty() {
            self.urls
                .entry(e.entry.ctx.url.clone())
                .or_default()
                .insert(key, e.generation);
        }
        for t in &e.entry.ctx.tags {
            self.tags
                .entry(t.clone())
                .or_default()
                .insert(key, e.generation);
        }
    }

    fn remove(&mut self, key: &EntryKey, e: &L1Entry) {
        fn drop_member(map: &mut Members, key: &EntryKey, gen: u64) -> bool {
            if map.get(key) == Some(&gen) {
                map.remove(key);
            }
            map.is_empty()
        }
        if let Some(m) = self.urls.get_mut(e.entry.ctx.url.as_str()) {
            if drop_member(m, key, e.generation) {
                self.urls.remove(e.entry.ctx.url.as_str());
            }
        }
        for t in &e.entry.ctx.tags {
            if let Some(m) = self.tags.get_mut(t.as_str()) {
                if drop_member(m, key, e.generation) {
                    self.tags.remove(t.as_str());
                }
            }
        }
    }
}

struct EntryExpiry;

fn until_deadline(v: &L1Entry) -> Option<Duration> {
    Some(
        v.entry
            .remaining(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

impl Expiry<EntryKey, Arc<L1Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &EntryKey,
        value: &Arc<L1Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        until_deadline(value)
    }

    fn expire_after_update(
        &self,
        _key: &EntryKey,
        value: &Arc<L1Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        until_deadline(value)
    }
}

struct Inner {
    cache: Option<Cache<EntryKey, Arc<L1Entry>>>,
    index: Arc<Mutex<Index>>,
    max_bytes: u64,
}

/// The L1 tier. Cheap lookups (`get`), byte-bounded, with purge indexes.
pub struct L1Store {
    inner: ArcSwap<Inner>,
    generation: AtomicU64,
    /// Inserts of keys in one stripe index and store one at a time (see the module docs).
    inserting: [Mutex<()>; INSERT_STRIPES],
}

fn build(max_bytes: u64) -> Inner {
    let index = Arc::new(Mutex::new(Index::default()));
    metrics()
        .l1_capacity_bytes
        .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
    if max_bytes == 0 {
        return Inner {
            cache: None,
            index,
            max_bytes,
        };
    }
    let listener_index = index.clone();
    let cache = Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_k: &EntryKey, v: &Arc<L1Entry>| v.weight)
        .expire_after(EntryExpiry)
        .eviction_listener(
            move |k: Arc<EntryKey>, v: Arc<L1Entry>, cause: RemovalCause| {
                let c = match cause {
                    RemovalCause::Size => EvictionCause::Size,
                    RemovalCause::Expired => EvictionCause::Expired,
                    RemovalCause::Replaced => EvictionCause::Replaced,
                    RemovalCause::Explicit => EvictionCause::Explicit,
                };
                L1Eviction {
                    cause: c,
                    weight: v.weight,
                }
                .emit();
                lock(&listener_index).remove(&k, &v);
            },
        )
        .build();
    Inner {
        cache: Some(cache),
        index,
        max_bytes,
    }
}

/// Heap every entry costs whatever it holds: the `Arc<L1Entry>`, moka's node, key, deque
/// and timer links, and the url index's member (measured by `tests/l1_footprint.rs`).
const ENTRY_COST: u64 = 1024;

/// Bytes of one bucket of an `http::HeaderMap` (hash, links, name, value).
const MAP_BUCKET: u64 = 104;

/// Bytes of one index slot of an `http::HeaderMap`.
const MAP_SLOT: u64 = 4;

/// Heap each tag costs in the tag index beyond its bytes (a map member).
const TAG_COST: u64 = 64;

/// Lines the fast path's hit header may add to the stored header: framing,
/// `Accept-Ranges`, `X-Cache`, `Cache-Status`, and the placeholders of `Age` and the request
/// id.
pub const HIT_HEADER_LINES: usize = 6;

/// Heap of one cloned `HeaderMap` of `lines` lines: a power-of-two table of index slots and
/// one bucket per line (a clone keeps no spare buckets; stored and hit headers are clones).
fn map_cost(lines: usize) -> u64 {
    let slots = (lines + lines / 3).max(1).next_power_of_two() as u64;
    slots * MAP_SLOT + lines as u64 * MAP_BUCKET
}

/// Heap of the maps of a `ResponseHeader` with `lines` lines: the values and, when it keeps
/// the names' case, a second map of the same size.
fn header_maps_cost(header: &ResponseHeader, lines: usize) -> u64 {
    let maps = if header.has_case() { 2 } else { 1 };
    maps * map_cost(lines)
}

/// What `entry` costs L1's heap, in bytes: its moka weight, so `cache.l1.max_bytes` bounds
/// memory, not only bodies. A flood of small distinct entries is where an undercount shows:
/// with a 64-byte body an entry holds about 6 KiB, most of it the two header maps of its
/// stored header and of the hit header the first fast-path hit builds (counted always).
/// `tests/l1_footprint.rs` fails when L1 holds more than 1.1× its budget in heap.
pub fn heap_cost(entry: &StoredEntry) -> u64 {
    let lines = entry.header.headers.len();
    let maps = header_maps_cost(&entry.header, lines)
        + header_maps_cost(&entry.header, lines + HIT_HEADER_LINES);
    // Names and values (one buffer, shared by the hit header), plus the hit header's own.
    let header_bytes = entry.header_bytes as u64 + HIT_HEADER_LINES as u64 * 32;
    let ctx = &entry.ctx;
    // The url is held by the entry and again as the url index's key.
    let strings = 2 * ctx.url.len() + ctx.route.len();
    let tags: u64 = ctx.tags.iter().map(|t| 2 * t.len() as u64 + TAG_COST).sum();
    ENTRY_COST + maps + header_bytes + strings as u64 + tags + entry.body.len() as u64
}

impl L1Store {
    /// An L1 with a byte budget of `max_bytes` (0 = disabled).
    pub fn new(max_bytes: u64) -> Self {
        L1Store {
            inner: ArcSwap::from_pointee(build(max_bytes)),
            generation: AtomicU64::new(1),
            inserting: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    /// Is L1 enabled (byte budget > 0)?
    pub fn enabled(&self) -> bool {
        self.inner.load().cache.is_some()
    }

    /// The configured byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.inner.load().max_bytes
    }

    /// Change the byte budget. A different budget rebuilds L1 (it starts empty).
    pub fn reconfigure(&self, max_bytes: u64) {
        if self.max_bytes() == max_bytes {
            return;
        }
        let old = self.inner.swap(Arc::new(build(max_bytes)));
        if let Some(c) = &old.cache {
            c.invalidate_all();
            c.run_pending_tasks();
        }
    }

    /// The live entry for `key`, if any and not past its deadline. Never touches Redis.
    pub fn get(&self, key: &EntryKey) -> Option<Arc<L1Entry>> {
        let inner = self.inner.load();
        let e = inner.cache.as_ref()?.get(key)?;
        e.entry.remaining(SystemTime::now())?;
        Some(e)
    }

    /// Store `entry` under `key` (replacing any previous one). Entries past their deadline or
    /// heavier than u32::MAX bytes are not stored. Returns whether it was handed to moka
    /// (moka may still reject it when the budget is full).
    pub fn insert(&self, key: EntryKey, entry: StoredEntry) -> bool {
        let inner = self.inner.load();
        let Some(cache) = inner.cache.as_ref() else {
            return false;
        };
        if entry.remaining(SystemTime::now()).is_none() {
            return false;
        }
        let Ok(weight) = u32::try_from(heap_cost(&entry)) else {
            return false;
        };
        if u64::from(weight) > inner.max_bytes {
            return false;
        }
        let stripe = usize::from(key[0]) % INSERT_STRIPES;
        let _one_at_a_time = lock(&self.inserting[stripe]);
        let v = Arc::new(L1Entry {
            entry,
            hit_header: std::sync::OnceLock::new(),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            weight,
        });
        lock(&inner.index).add(key, &v);
        L1Stored { weight }.emit();
        cache.insert(key, v);
        true
    }

    /// Remove one key; true when an entry was present.
    pub fn remove(&self, key: &EntryKey) -> bool {
        let inner = self.inner.load();
        let Some(cache) = inner.cache.as_ref() else {
            return false;
        };
        match cache.remove(key) {
            Some(v) => {
                lock(&inner.index).remove(key, &v);
                true
            }
            None => false,
        }
    }

    /// Purge `key` softly at `at` (see [`StoredEntry::softened`]): replace its entry by one
    /// stale from `at` and servable stale for `grace` after it, or remove it when it may not
    /// be served stale. An entry stored at or after `at` (its refresh) is left alone, and so
    /// is one that another insert replaced meanwhile: the replacement goes through the
    /// insert stripe, so the index agrees with moka as for [`Self::insert`]. True when the
    /// entry was softened or removed.
    pub fn soften(&self, key: &EntryKey, at: SystemTime, grace: Duration) -> bool {
        let inner = self.inner.load();
        let Some(cache) = inner.cache.as_ref() else {
            return false;
        };
        let Some(current) = cache.get(key) else {
            return false;
        };
        if current.entry.created >= at {
            return false;
        }
        let Some(soft) = current.entry.softened(at, grace) else {
            return self.remove(key);
        };
        let weight = match u32::try_from(heap_cost(&soft)) {
            Ok(w) if soft.remaining(SystemTime::now()).is_some() => w,
            _ => return self.remove(key),
        };
        let stripe = usize::from(key[0]) % INSERT_STRIPES;
        let _one_at_a_time = lock(&self.inserting[stripe]);
        if !cache
            .get(key)
            .is_some_and(|now| Arc::ptr_eq(&now, &current))
        {
            return false;
        }
        let v = Arc::new(L1Entry {
            entry: soft,
            hit_header: std::sync::OnceLock::new(),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            weight,
        });
        lock(&inner.index).add(*key, &v);
        L1Stored { weight }.emit();
        cache.insert(*key, v);
        true
    }

    /// Purge what `kind`/`target` names softly at `at` (see [`Self::soften`]), yielding
    /// every [`YIELD_EVERY`] entries; returns how many were softened or removed.
    pub async fn purge_soft(
        &self,
        kind: PurgeKind,
        target: &str,
        at: SystemTime,
        grace: Duration,
    ) -> u64 {
        let mut since_yield = 0;
        let mut n = 0;
        let soften = |keys: Vec<EntryKey>| {
            let mut done = 0;
            for k in &keys {
                if self.soften(k, at, grace) {
                    done += 1;
                }
            }
            done
        };
        match kind {
            PurgeKind::Url => n += soften(self.url_keys(target)),
            PurgeKind::Tag => {
                for chunk in self.tag_keys(target).chunks(YIELD_EVERY) {
                    n += soften(chunk.to_vec());
                    tokio::task::yield_now().await;
                }
            }
            PurgeKind::Prefix => {
                let mut cursor = Bound::Included(target.to_owned());
                while let Some((keys, last)) = self.prefix_batch(target, &cursor) {
                    since_yield += keys.len();
                    n += soften(keys);
                    cursor = Bound::Excluded(last);
                    if since_yield >= YIELD_EVERY {
                        since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        n
    }

    /// Remove `keys`, yielding to the runtime every [`YIELD_EVERY`] removals so a big purge
    /// never holds a worker thread for long.
    async fn remove_keys(&self, keys: Vec<EntryKey>, since_yield: &mut usize) -> u64 {
        let mut n = 0;
        for k in &keys {
            if self.remove(k) {
                n += 1;
            }
            *since_yield += 1;
            if *since_yield >= YIELD_EVERY {
                *since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        n
    }

    /// The keys of the members `pick` finds in the index.
    fn indexed(&self, pick: impl FnOnce(&Index) -> Option<&Members>) -> Vec<EntryKey> {
        let inner = self.inner.load();
        let idx = lock(&inner.index);
        pick(&idx)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The keys indexed under exactly `url`.
    fn url_keys(&self, url: &str) -> Vec<EntryKey> {
        self.indexed(|i| i.urls.get(url))
    }

    /// The keys carrying `tag`.
    fn tag_keys(&self, tag: &str) -> Vec<EntryKey> {
        self.indexed(|i| i.tags.get(tag))
    }

    /// The keys of the next [`URL_BATCH`] urls starting with `prefix` after `cursor`, and
    /// the last of those urls (`None` when there are no more), under one index lock.
    fn prefix_batch(
        &self,
        prefix: &str,
        cursor: &Bound<String>,
    ) -> Option<(Vec<EntryKey>, String)> {
        let inner = self.inner.load();
        let idx = lock(&inner.index);
        let mut keys = Vec::new();
        let mut last = None;
        let range = idx
            .urls
            .range::<str, _>((cursor.as_ref().map(String::as_str), Bound::Unbounded))
            .take_while(|(u, _)| u.starts_with(prefix))
            .take(URL_BATCH);
        for (u, m) in range {
            keys.extend(m.keys().copied());
            last = Some(u.clone());
        }
        last.map(|l| (keys, l))
    }

    /// Remove every variant stored for exactly `url`. Returns how many entries were removed.
    pub async fn purge_url(&self, url: &str) -> u64 {
        self.remove_keys(self.url_keys(url), &mut 0).await
    }

    /// Remove every entry whose url starts with `prefix`. Walks the sorted url index range
    /// starting at `prefix` (never all entries), [`URL_BATCH`] urls per index lock, and yields
    /// between batches, so a purge of 100,000 entries does not stall requests or inserts.
    pub async fn purge_prefix(&self, prefix: &str) -> u64 {
        let mut cursor: Bound<String> = Bound::Included(prefix.to_owned());
        let mut removed = 0;
        let mut since_yield = 0;
        while let Some((keys, last)) = self.prefix_batch(prefix, &cursor) {
            removed += self.remove_keys(keys, &mut since_yield).await;
            cursor = Bound::Excluded(last);
            tokio::task::yield_now().await;
        }
        removed
    }

    /// Remove every entry carrying `tag`.
    pub async fn purge_tag(&self, tag: &str) -> u64 {
        self.remove_keys(self.tag_keys(tag), &mut 0).await
    }

    /// Remove what `kind`/`target` names at once, without yielding: for the small purges of a
    /// write's invalidation (one url, the query variants of one path) on the request path.
    pub fn purge_now(&self, kind: PurgeKind, target: &str) -> u64 {
        let removed = |keys: Vec<EntryKey>| keys.iter().filter(|k| self.remove(k)).count() as u64;
        match kind {
            PurgeKind::Url => removed(self.url_keys(target)),
            PurgeKind::Tag => removed(self.tag_keys(target)),
            PurgeKind::Prefix => {
                let mut cursor = Bound::Included(target.to_owned());
                let mut n = 0;
                while let Some((keys, last)) = self.prefix_batch(target, &cursor) {
                    n += removed(keys);
                    cursor = Bound::Excluded(last);
                }
                n
            }
        }
    }

    /// Drop everything (e.g. after a pub/sub gap). Runs moka's maintenance once so the
    /// invalidated entries, their index members and the gauges are gone when this returns
    /// (rare operation; O(entries)).
    pub fn clear(&self) {
        let inner = self.inner.load();
        if let Some(c) = &inner.cache {
            c.invalidate_all();
            c.run_pending_tasks();
        }
    }

    /// Run moka's pending maintenance (evictions, listener calls). For tests and periodic
    /// housekeeping, not per request.
    pub fn sync(&self) {
        if let Some(c) = &self.inner.load().cache {
            c.run_pending_tasks();
        }
    }

    /// moka's entry count (eventually consistent; call [`Self::sync`] first for exactness).
    pub fn entry_count(&self) -> u64 {
        self.inner
            .load()
            .cache
            .as_ref()
            .map(|c| c.entry_count())
            .unwrap_or(0)
    }

    /// moka's weighted size in bytes (eventually consistent).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner
            .load()
            .cache
            .as_ref()
            .map(|c| c.weighted_size())
            .unwrap_or(0)
    }

    /// Whether the indexes hold exactly what L1 holds: every entry under its url and each of
    /// its tags with its own generation, and nothing else. Runs moka's pending maintenance
    /// first; O(entries), for tests.
    pub fn index_agrees(&self) -> bool {
        self.sync();
        let inner = self.inner.load();
        let Some(cache) = &inner.cache else {
            return true;
        };
        let idx = lock(&inner.index);
        let mut members = 0;
        for (key, v) in cache.iter() {
            let ctx = &v.entry.ctx;
            let indexed = |m: Option<&Members>| m.and_then(|m| m.get(&*key)) == Some(&v.generation);
            if !ctx.url.is_empty() {
                members += 1;
                if !indexed(idx.urls.get(&ctx.url)) {
                    return false;
                }
            }
            for t in &ctx.tags {
                members += 1;
                if !indexed(idx.tags.get(t)) {
                    return false;
                }
            }
        }
        let held: usize = idx
            .urls
            .values()
            .chain(idx.tags.values())
            .map(HashMap::len)
            .sum();
        held == members
    }

    /// Number of urls and tags currently indexed (for tests and debugging).
    pub fn index_sizes(&self) -> (usize, usize) {
        let inner = self.inner.load();
        let idx = lock(&inner.index);
        (idx.urls.len(), idx.tags.len())
    }
}
