//! [`L2Store`]: the shared Redis tier, behind a circuit breaker for entries and another for
//! purges.
//!
//! Keys (prefix from config, layout version `v2` appended here; `v1` kept the url and tag
//! indexes as plain sets that only grew, so the two layouts never share keys):
//! - `{prefix}v2:e:{hex(storage_key)}`: the encoded entry (see `codec`), `PX` = time left
//!   until its deadline.
//! - `{prefix}v2:url:{url}`: sorted set of the entry keys stored for that url (all Vary
//!   variants), each scored by its entry's expiry (Redis clock, ms). Every store into it drops
//!   the expired members, and the key itself lives as long as its longest-living member.
//! - `{prefix}v2:tag:{tag}`: the same per tag.
//! - `{prefix}v2:urls`: sorted set (all scores 0) of urls, for prefix purges by `ZRANGEBYLEX`,
//!   and `{prefix}v2:urls:expiry`: the same urls scored by their latest entry's expiry. Each
//!   store drops up to 64 urls whose entries have all expired from both, so under unique urls
//!   they hold about the live urls (plus what expired since the last stores).
//! - `{prefix}v2:purge`: hash of the purge generation `gen`, the `floor` and `tombs` (1 once a
//!   tombstone was recorded), and `finished` (the sequence of the finished-purge log), and
//!   `{prefix}v2:tombs`: sorted set of recent purges (`u`, `p` or `t` followed by the url,
//!   prefix or tag) scored by their generation.
//! - `{prefix}v2:purges:finished`: the finished-purge log, sorted set of the last 100,000
//!   purges whose Redis part finished (each its broadcast message), scored by sequence; other
//!   instances read it to repair lost broadcasts (see `crate::purge::catch_up`).
//! - `{prefix}v2:lock:{hex}`: an entry's cross-instance fill lock (see `super::fill_lock`).
//!
//! **Purges win in Redis too.** A generation lives in Redis, so the instances' clocks do not
//! matter: it starts at Redis's clock in microseconds and every purge moves it to
//! max(gen + 1, clock). The first batch of a purge records a tombstone with the new
//! generation before deleting anything. The GET of an L1 miss reads the generation in the
//! same round trip ([`L2Store::get_entry`]); a store carries the generation at which its work
//! began and runs as a Lua script ([`L2Store::set_entry`]) that refuses it when a newer
//! tombstone matches the entry's url, a prefix of it or one of its tags, so a write delayed on
//! the wire past a purge (from any instance) is not stored. Tombstones are kept 10 minutes and
//! at most 100,000; forgetting older ones raises the `floor`, and work that began before the
//! floor is refused (as is work that began "after" the current generation, which only happens
//! when Redis lost its state). A lost state (restart, flush, eviction) restarts the generation
//! at the clock with the floor there: the writes in flight then are refused, never stored
//! wrongly. Eviction-based `maxmemory-policy` values other than `volatile-*` or `noeviction`
//! can evict this bookkeeping and cost such refusals.
//!
//! **Purges are batched** (`purge.lua`): a prefix purge takes [`PURGE_URLS_PER_BATCH`] urls per
//! script call, a tag purge [`PURGE_ENTRIES_PER_BATCH`] entries, each call under the write
//! timeout on a connection of its own, counted as `op="purge"` and guarded by a breaker of
//! its own, so a purge of 100,000 entries neither blocks Redis for long, nor queues reads
//! behind it, nor can open the breaker reads depend on.
//!
//! **On a Redis Cluster** (`mode = "cluster"`) a script may only touch keys of one slot, so the
//! layout above is repeated in [`CLUSTER_PARTITIONS`] partitions, each under a hash tag of its
//! own, and versioned `v3` ([`CLUSTER_KEY_VERSION`]): `{prefix}v3:{pNN.M}:e:...`,
//! `...:url:...`, `...:tag:...`, `...:urls`, `...:purge`, `...:tombs` (the tags are chosen so
//! the partitions' slots are spread evenly over the slot range, hence over the masters). An
//! entry lives in the partition of its path (its key's first byte is the path's placement,
//! see [`crate::cache::storage::storage_key`]), with its url and tag indexes and the
//! tombstones its store checks, so every script call touches one slot, and all entries of
//! one path (every query, site and Vary variant) share a partition. The purge generation
//! itself is one counter on a home slot (`{prefix}v3:{home}:purge`): a GET reads it beside
//! the entry (two requests in flight at once), and a purge first advances it
//! ([`advance.lua`]) and then runs its batches, with that generation, in the partitions its
//! target can reach ([`Layout::parts_for`]): a url, or a prefix holding `?` (a write's
//! `path?`), names one path and visits its partition alone; a tag or another prefix visits
//! every partition. Each records the tombstone there before deleting. A store
//! that races a purge either lands before the purge reaches its partition (and is deleted by
//! it) or after (and is refused by the tombstone). A partition without state is seeded with
//! the home generation: on a new cluster, by every instance's entries connection as it opens
//! (`seed.lua`), before any work begins on it; on a node that lost it (flushed, failed over
//! empty), by the first store or purge to reach it, and then it refuses work that began
//! before it, since the tombstones that work should be checked against are gone. A purge by
//! tag or by a prefix of many paths therefore visits every partition, i.e. every master
//! holding sidecache keys; the partitions are fixed, so no `SCAN` is needed. A write's purges
//! (its url and `path?`) cost two script calls, where placing entries by hash cost 17 each.
//! Limitation: if the home slot loses its state and its master's clock is behind the old
//! generation, purges for a while get generations below work already under way; keep the
//! cluster on NTP (the same holds for a standalone Redis that fails over).
//!
//! **Servers.** Redis 6.2 and later, and Valkey: each connection asks the server what it is
//! when it opens (see [`super::server_info`]) and refuses an older one, so nothing is ever
//! written to it. The scripts use nothing newer than 6.2 (Redis 7's `PEXPIRE ... NX|GT` is
//! emulated with `PTTL`), and each writes its indexes before the entry they index: Redis does
//! not roll back a script that fails midway, and an index member whose entry is missing is
//! harmless where an entry outside every index could never be purged.
//!
//! The connections are opened at start ([`L2Store::connect_in_background`]) and again
//! whenever one is missing, one connect per lane at a time, each in a task of its own that
//! operations wait on for no longer than their own timeout (so a slow TLS handshake is not
//! cut off by a 50 ms read). A failed connect leaves no connection, so the next allowed
//! attempt retries, and under
//! Sentinel a failed operation drops its connection so the next finds the master again (see
//! [`super::topology`]); on a cluster the failure that opens a breaker drops its lane's
//! connection, so a client that stopped serving after masters restarted is replaced. Every operation runs under a timeout, emits an `L2Operation` event
//! and feeds its breaker; while a breaker is open its operations are skipped
//! (`L2Result::Skipped`). The breakers are per store, not per node: on a cluster one master
//! down fails the operations on its slots, enough of them open the breaker for the whole
//! tier, and every request goes on from L1 or the origin until a probe succeeds. That is
//! coarser than per node, but a lookup then never waits on a half-dead cluster.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;
use redis::FromRedisValue;
use tokio::sync::watch;

use super::atomic_duration::AtomicDuration;
use super::breaker::{BreakerScope, CircuitBreaker};
use super::events::L2ServerChanged;
use super::purge_log::Refusal;
use super::server_info::{self, ServerInfo};
use super::topology::{L2Connection, SubscribeTarget, Topology};
use super::PurgeKind;
use crate::config::L2Config;
use crate::hex::hex;
use crate::telemetry::events::{InternalEvent, L2Operation};
use crate::telemetry::metrics::{L2Op, L2Result};

mod connection;
mod layout;
mod scripts;

use connection::{ConnectionSlot, Lane};
use layout::Layout;
pub use layout::{key_slot, CLUSTER_KEY_VERSION, CLUSTER_PARTITIONS, KEY_VERSION};
use scripts::{ADVANCE, FILL, FINISHED, FINISHED_SINCE, GENERATION, PURGE, SEED, STORE, UNLOCK};

/// Urls a prefix purge takes per script call.
pub const PURGE_URLS_PER_BATCH: usize = 256;

/// Entries a tag purge takes per script call.
pub const PURGE_ENTRIES_PER_BATCH: usize = 512;

/// Which entry the fill lock's read treats as missing, so that the lock is taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    /// Only no entry at all (a miss).
    Missing,
    /// Also an entry still marked soft-purged (its refresh).
    SoftPurged,
    /// Also an entry expired at this moment (the refetch of an expired entry).
    ExpiredAt(std::time::SystemTime),
}

/// What an L1 miss read from Redis: the entry, if any, and the purge generation at that
/// moment.
#[derive(Debug)]
pub struct L2Read {
    pub value: Option<Vec<u8>>,
    pub generation: u64,
}

/// One entry to store: where, what, for how long, what indexes it, and the purge generation
/// at which the work that produced it began.
#[derive(Clone, Copy, Debug)]
pub struct EntryWrite<'a> {
    pub key: &'a [u8; 16],
    /// The encoded entry.
    pub value: &'a [u8],
    pub ttl: Duration,
    /// Its url (`""`: none).
    pub url: &'a str,
    pub tags: &'a [String],
    pub since: u64,
}

/// A purge's Redis part, done: the generation its tombstone was recorded with (the purge's
/// identity in broadcasts and in the finished-purge log) and the entries it deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeDone {
    pub generation: u64,
    pub deleted: u64,
}

/// A soft purge's parameters: when it was made, and how long what it names stays servable
/// stale after that (`cache.soft_purge_grace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftPurge {
    pub at: std::time::SystemTime,
    pub grace: Duration,
}

/// What a reader of the finished-purge log found after its last sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinishedLog {
    /// The purge generation now.
    pub generation: u64,
    /// The newest sequence given (0: none since Redis's state began).
    pub newest: u64,
    /// The oldest sequence still kept (0: the log is empty).
    pub oldest: u64,
    /// The purges after the reader's sequence, oldest first (at most the limit asked): each
    /// sequence and the text logged (opaque here; the purge service writes and reads it).
    pub purges: Vec<(u64, Vec<u8>)>,
}

/// What the fill lock of an entry said (see `lua/fill.lua`).
#[derive(Debug)]
pub enum FillState {
    /// The entry is there: its raw bytes.
    Filled(Vec<u8>),
    /// The lock was free and is now the caller's.
    Taken,
    /// Another holder is fetching.
    Held,
    /// The last holder's response could not be stored: fetch without the lock.
    GaveUp,
}

/// What became of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    Refused(Refusal),
}

const fn kind_letter(kind: PurgeKind) -> &'static str {
    match kind {
        PurgeKind::Url => "u",
        PurgeKind::Prefix => "p",
        PurgeKind::Tag => "t",
    }
}

/// The Redis tier: connections, breakers, timeouts and key layout.
pub struct L2Store {
    topology: Option<Arc<Topology>>,
    conn: Arc<ConnectionSlot>,
    purge_conn: Arc<ConnectionSlot>,
    breaker: CircuitBreaker,
    purge_breaker: CircuitBreaker,
    layout: Arc<Layout>,
    read_timeout: AtomicDuration,
    write_timeout: AtomicDuration,
    /// `cache.l2.compress_above` (`u64::MAX`: off).
    compress_above: AtomicU64,
    /// `cache.l2.purge_poll`.
    purge_poll: AtomicDuration,
    /// `cache.l2.purge_backlog`.
    purge_backlog: AtomicUsize,
    /// The newest purge generation a reply carried (0: none yet).
    seen: AtomicU64,
    /// What the last connection opened found (`None`: none yet, or it would not say).
    server: Arc<ArcSwapOption<ServerInfo>>,
}

impl L2Store {
    /// No I/O: parses the URLs only (a bad one makes every operation fail and opens the
    /// breaker).
    pub fn new(cfg: &L2Config) -> Self {
        let topology = match Topology::new(cfg) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                tracing::error!(error = %e, mode = cfg.mode.label(), "invalid redis settings; L2 disabled");
                None
            }
        };
        let cluster = topology.as_deref().is_some_and(Topology::is_cluster);
        let breaker =
            |scope| CircuitBreaker::new(scope, cfg.breaker_failures, cfg.breaker_cooldown);
        L2Store {
            topology,
            conn: Arc::default(),
            purge_conn: Arc::default(),
            breaker: breaker(BreakerScope::Entries),
            purge_breaker: breaker(BreakerScope::Purges),
            layout: Arc::new(Layout::new(&cfg.prefix, cluster)),
            read_timeout: AtomicDuration::new(cfg.timeout),
            write_timeout: AtomicDuration::new(cfg.write_timeout),
            compress_above: AtomicU64::new(cfg.compress_above.unwrap_or(u64::MAX)),
            purge_poll: AtomicDuration::new(cfg.purge_poll),
            purge_backlog: AtomicUsize::new(cfg.purge_backlog),
            seen: AtomicU64::new(0),
            server: Arc::default(),
        }
    }

    /// Live-adjust timeouts and breaker settings. The mode, urls and prefix need a restart.
    pub fn reconfigure(&self, cfg: &L2Config) {
        self.read_timeout.set(cfg.timeout);
        self.write_timeout.set(cfg.write_timeout);
        self.compress_above
            .store(cfg.compress_above.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.purge_poll.set(cfg.purge_poll);
        self.purge_backlog
            .store(cfg.purge_backlog, Ordering::Relaxed);
        for b in [&self.breaker, &self.purge_breaker] {
            b.reconfigure(cfg.breaker_failures, cfg.breaker_cooldown);
        }
    }

    /// Bodies longer than this are stored compressed (`None`: never).
    pub fn compress_above(&self) -> Option<u64> {
        Some(self.compress_above.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }

    /// How often the finished-purge log is read (`cache.l2.purge_poll`).
    pub fn purge_poll(&self) -> Duration {
        self.purge_poll.get()
    }

    /// Purges whose Redis part may wait at most (`cache.l2.purge_backlog`).
    pub fn purge_backlog(&self) -> usize {
        self.purge_backlog.load(Ordering::Relaxed)
    }

    /// Timeout of each read.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout.get()
    }

    /// Timeout of each background write and of each purge batch.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout.get()
    }

    /// The breaker guarding entry reads and writes.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The breaker guarding purges and their broadcasts.
    pub fn purge_breaker(&self) -> &CircuitBreaker {
        &self.purge_breaker
    }

    /// The newest purge generation a Redis reply carried, if any: a generation no newer than
    /// Redis's at any later moment (work that begins now may use it as its start).
    pub fn seen_generation(&self) -> Option<u64> {
        Some(self.seen.load(Ordering::SeqCst)).filter(|g| *g > 0)
    }

    /// The server the last connection opened found (`None`: none opened yet, or it would
    /// not say what it is).
    pub fn server(&self) -> Option<ServerInfo> {
        self.server.load().as_deref().copied()
    }

    fn saw(&self, generation: u64) {
        self.seen.fetch_max(generation, Ordering::SeqCst);
    }

    /// GET an entry's raw bytes and the purge generation in one round trip, under the read
    /// timeout (a Redis without a generation yet gets one in a second round trip). On a
    /// cluster the two live on different slots and are asked at once.
    pub async fn get_entry(&self, key: &[u8; 16]) -> Result<L2Read, L2Result> {
        let k = self.entry_key(key);
        let state = self.purge_state_key();
        let tombs = self.tombstones_key();
        let partitioned = self.partitioned();
        let read = self
            .run(L2Op::Get, self.read_timeout(), |mut c| async move {
                let (value, generation): (Option<Vec<u8>>, Option<u64>) = if partitioned {
                    let mut c2 = c.clone();
                    let get = redis::cmd("GET").arg(&k).to_owned();
                    let hget = redis::cmd("HGET").arg(&state).arg("gen").to_owned();
                    tokio::try_join!(get.query_async(&mut c), hget.query_async(&mut c2))?
                } else {
                    redis::pipe()
                        .cmd("GET")
                        .arg(&k)
                        .cmd("HGET")
                        .arg(&state)
                        .arg("gen")
                        .query_async(&mut c)
                        .await?
                };
                let generation = match generation {
                    Some(g) => g,
                    None => {
                        let cmd = GENERATION.command(&[&state, &tombs]);
                        GENERATION.run(&mut c, &cmd).await?
                    }
                };
                Ok(L2Read { value, generation })
            })
            .await?;
        self.saw(read.generation);
        Ok(read)
    }

    /// The purge generation now, under the read timeout (for work whose start was not noted).
    pub async fn generation(&self) -> Result<u64, L2Result> {
        let cmd = GENERATION.command(&[&self.purge_state_key(), &self.tombstones_key()]);
        let generation = self
            .run(L2Op::Get, self.read_timeout(), |mut c| async move {
                GENERATION.run(&mut c, &cmd).await
            })
            .await?;
        self.saw(generation);
        Ok(generation)
    }

    /// The script call that makes `write` (see [`L2Store::set_entry`]). Pipelining these
    /// requires the script to be loaded already (any [`L2Store::set_entry`] loads it) and,
    /// on a cluster, the partition to have its state.
    pub fn store_command(&self, write: &EntryWrite<'_>) -> redis::Cmd {
        self.store_command_seeded(write, if self.partitioned() { "" } else { "-" })
    }

    /// [`L2Store::store_command`] with `seed`: `-` on a standalone Redis, else `""` or the
    /// generation to seed an empty partition with.
    fn store_command_seeded(&self, write: &EntryWrite<'_>, seed: &str) -> redis::Cmd {
        let ttl_ms = u64::try_from(write.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let part = self.layout.part(write.key);
        let mut cmd = STORE.command(&[
            &format!("{part}purge"),
            &format!("{part}tombs"),
            &self.entry_key(write.key),
            &format!("{part}urls"),
            &format!("{part}urls:expiry"),
        ]);
        cmd.arg(part)
            .arg(write.value)
            .arg(ttl_ms)
            .arg(write.since)
            .arg(write.url)
            .arg(seed)
            .arg(write.tags);
        cmd
    }

    /// Make `write` unless a purge after its work began matches the entry (the check and the
    /// store are one script), under the write timeout. On a cluster, a partition without
    /// state is first seeded with the current generation (and this write refused, as it
    /// began before what the partition can vouch for).
    pub async fn set_entry(&self, write: &EntryWrite<'_>) -> Result<StoreOutcome, L2Result> {
        let mut seed = if self.partitioned() {
            String::new()
        } else {
            "-".to_owned()
        };
        let code = loop {
            let cmd = self.store_command_seeded(write, &seed);
            let code: i64 = self
                .run(L2Op::Set, self.write_timeout(), |mut c| async move {
                    STORE.run(&mut c, &cmd).await
                })
                .await?;
            if code != -2 || !seed.is_empty() {
                break code;
            }
            seed = self.generation().await?.to_string();
        };
        Ok(match code {
            1 => StoreOutcome::Stored,
            0 => StoreOutcome::Refused(Refusal::Purged),
            _ => StoreOutcome::Refused(Refusal::Forgotten),
        })
    }

    /// DEL one entry; returns how many keys were deleted (0 or 1).
    pub async fn del_entry(&self, key: &[u8; 16]) -> Result<u64, L2Result> {
        let k = self.entry_key(key);
        self.run(L2Op::Del, self.write_timeout(), |mut c| async move {
            let n: u64 = redis::cmd("DEL").arg(&k).query_async(&mut c).await?;
            Ok(n)
        })
        .await
    }

    /// Purge every entry `kind`/`target` names: the first batch records the tombstone, then
    /// bounded batches delete (see the module docs). On a cluster the generation is advanced
    /// on the home slot first and every partition runs its batches with it. Returns the
    /// generation recorded and the entries deleted; stops at the first batch that fails.
    /// Once the caller has made the purge known, [`L2Store::log_finished`] logs it for the
    /// instances that miss its broadcast.
    pub async fn purge(&self, kind: PurgeKind, target: &str) -> Result<PurgeDone, L2Result> {
        self.purge_with(kind, target, None).await
    }

    /// [`Self::purge`], or with `soft` a soft purge: the entries it names are rewritten in
    /// place stale from `soft.at` and servable stale for `soft.grace` after it (their
    /// freshness fields and flags, see `lua/purge.lua`), and those that may not be served
    /// stale (or were stored by an older format) are deleted. `deleted` then counts both.
    pub async fn purge_with(
        &self,
        kind: PurgeKind,
        target: &str,
        soft: Option<SoftPurge>,
    ) -> Result<PurgeDone, L2Result> {
        if !self.partitioned() {
            let (generation, deleted) = self
                .purge_partition(&self.layout.home, kind, target, "", soft)
                .await?;
            self.saw(generation);
            return Ok(PurgeDone {
                generation,
                deleted,
            });
        }
        let generation = self.advance().await?;
        let deleted = self
            .purge_partitions(kind, target, generation, soft)
            .await?;
        Ok(PurgeDone {
            generation,
            deleted,
        })
    }

    /// Cluster: move the purge generation on the home slot past now and return it (the
    /// first step of [`Self::purge_with`]), under the write timeout.
    pub async fn advance(&self) -> Result<u64, L2Result> {
        let cmd = ADVANCE.command(&[&self.purge_state_key(), &self.tombstones_key()]);
        let generation: u64 = self
            .run_in(
                Lane::Purges,
                L2Op::Purge,
                self.write_timeout(),
                |mut c| async move { ADVANCE.run(&mut c, &cmd).await },
            )
            .await?;
        self.saw(generation);
        Ok(generation)
    }

    /// Cluster: the second step of [`Self::purge_with`], the purge of `kind`/`target` in
    /// each partition it can touch, recording `generation` (from [`Self::advance`]) as its
    /// tombstone there. Returns the entries deleted. The steps of two purges of one target
    /// may reach a partition in either order (a retried job, two instances): each tombstone
    /// keeps the newer generation.
    pub async fn purge_partitions(
        &self,
        kind: PurgeKind,
        target: &str,
        generation: u64,
        soft: Option<SoftPurge>,
    ) -> Result<u64, L2Result> {
        let given = generation.to_string();
        // The partitions are independent (each records its tombstone before it deletes), so
        // they run at once over the multiplexed connection: a url purge costs the latency of
        // two round trips, not seventeen, which is what lets the backlog keep up with a flood
        // of writes on a cluster. Any failure fails the purge, which is retried whole.
        let parts = self
            .layout
            .parts_for(kind, target)
            .iter()
            .map(|part| self.purge_partition(part, kind, target, &given, soft));
        let mut deleted = 0;
        for done in futures_util::future::join_all(parts).await {
            deleted += done?.1;
        }
        Ok(deleted)
    }

    /// Log `entry` (a finished purge, as the purge service writes it: unique per purge) in
    /// the finished-purge log (see `lua/finished.lua`), under the write timeout. Returns its
    /// sequence.
    pub async fn log_finished(&self, entry: &str) -> Result<u64, L2Result> {
        let mut cmd = FINISHED.command(&[
            &self.purge_state_key(),
            &self.tombstones_key(),
            &self.finished_log_key(),
        ]);
        cmd.arg(entry);
        self.run_in(
            Lane::Purges,
            L2Op::Purge,
            self.write_timeout(),
            |mut c| async move { FINISHED.run(&mut c, &cmd).await },
        )
        .await
    }

    /// The purges logged finished after sequence `after`, at most `limit` (see
    /// `lua/finished_since.lua`), under the write timeout (a background read).
    pub async fn finished_since(&self, after: u64, limit: usize) -> Result<FinishedLog, L2Result> {
        let mut cmd = FINISHED_SINCE.command(&[
            &self.purge_state_key(),
            &self.tombstones_key(),
            &self.finished_log_key(),
        ]);
        cmd.arg(after).arg(limit);
        let reply: Vec<Vec<u8>> = self
            .run_in(
                Lane::Purges,
                L2Op::PurgeLog,
                self.write_timeout(),
                |mut c| async move { FINISHED_SINCE.run(&mut c, &cmd).await },
            )
            .await?;
        let number = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        };
        let at = |i: usize| reply.get(i).and_then(|v| number(v)).unwrap_or(0);
        let log = FinishedLog {
            generation: at(0),
            newest: at(1),
            oldest: at(2),
            purges: reply
                .get(3..)
                .unwrap_or_default()
                .chunks_exact(2)
                .filter_map(|pair| Some((number(&pair[1])?, pair[0].clone())))
                .collect(),
        };
        self.saw(log.generation);
        Ok(log)
    }

    /// The batches of one purge in the partition under `part` (standalone: the one);
    /// `given` is the cluster's generation for it (`""`: standalone, the script takes one).
    /// Returns the generation recorded and the entries deleted.
    async fn purge_partition(
        &self,
        part: &str,
        kind: PurgeKind,
        target: &str,
        given: &str,
        soft: Option<SoftPurge>,
    ) -> Result<(u64, u64), L2Result> {
        let (at, keep_ms, grace_ms) = match soft {
            Some(s) => {
                let at =
                    s.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                        .unwrap_or(0);
                let grace_ms = u64::try_from(s.grace.as_millis()).unwrap_or(u64::MAX);
                let keep = s.grace + super::entry::SLACK;
                let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
                (at.to_be_bytes().to_vec(), keep_ms, grace_ms)
            }
            None => (Vec::new(), 0, 0),
        };
        let batch = match kind {
            PurgeKind::Prefix => PURGE_URLS_PER_BATCH,
            PurgeKind::Url | PurgeKind::Tag => PURGE_ENTRIES_PER_BATCH,
        };
        let keys = [
            format!("{part}purge"),
            format!("{part}tombs"),
            format!("{part}urls"),
            format!("{part}urls:expiry"),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut cursor = String::new();
        let mut first = true;
        let mut recorded = 0;
        let mut deleted = 0;
        loop {
            let mut cmd = PURGE.command(&keys);
            cmd.arg(part)
                .arg(kind_letter(kind))
                .arg(target)
                .arg(if first { "1" } else { "0" })
                .arg(&cursor)
                .arg(batch)
                .arg(given)
                .arg(&at)
                .arg(keep_ms)
                .arg(grace_ms);
            let (generation, n, next): (u64, u64, String) = self
                .run_in(
                    Lane::Purges,
                    L2Op::Purge,
                    self.write_timeout(),
                    |mut c| async move { PURGE.run(&mut c, &cmd).await },
                )
                .await?;
            if first {
                recorded = generation;
            }
            deleted += n;
            if next.is_empty() {
                return Ok((recorded, deleted));
            }
            cursor = next;
            first = false;
        }
    }

    /// Read the entry of `key` and, when it is absent, take its fill lock (`token`, held
    /// for `ttl`), both in one atomic script under the read timeout (see `lua/fill.lua`).
    /// With `refresh` (a soft-purged entry's refresh), an entry still marked soft-purged
    /// counts as absent.
    pub async fn take_fill_lock(
        &self,
        key: &[u8; 16],
        token: u64,
        ttl: Duration,
        absent: Absent,
    ) -> Result<FillState, L2Result> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = FILL.command(&[&self.entry_key(key), &self.fill_lock_key(key)]);
        cmd.arg(token).arg(ttl_ms);
        match absent {
            Absent::Missing => cmd.arg("0"),
            Absent::SoftPurged => cmd.arg("1"),
            Absent::ExpiredAt(at) => {
                let ms = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                cmd.arg("2").arg(ms)
            }
        };
        self.run(L2Op::Lock, self.read_timeout(), |mut c| async move {
            let (state, value): (i64, Vec<u8>) = FILL.run(&mut c, &cmd).await?;
            Ok(match state {
                2 => FillState::Filled(value),
                1 => FillState::Taken,
                3 => FillState::GaveUp,
                _ => FillState::Held,
            })
        })
        .await
    }

    /// Release the fill lock of `key` if `token` still holds it (under the write timeout).
    /// `gave_up`: the holder's response could not be stored, and the lock says so to its
    /// waiters for `linger` instead of disappearing.
    pub async fn release_fill_lock(
        &self,
        key: &[u8; 16],
        token: u64,
        gave_up: Option<Duration>,
    ) -> Result<(), L2Result> {
        let linger_ms = gave_up.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let mut cmd = UNLOCK.command(&[&self.fill_lock_key(key)]);
        cmd.arg(token).arg(linger_ms);
        self.run(L2Op::Lock, self.write_timeout(), |mut c| async move {
            let _: i64 = UNLOCK.run(&mut c, &cmd).await?;
            Ok(())
        })
        .await
    }

    /// PUBLISH `payload` on `channel` under the write timeout (on the purge connection and
    /// breaker, counted as `op="publish"`). Returns how many subscribers received it (on a
    /// cluster: on the node that took it; the cluster bus forwards it to the others).
    pub async fn publish(&self, channel: &str, payload: String) -> Result<u64, L2Result> {
        let channel = channel.to_owned();
        self.run_in(
            Lane::Purges,
            L2Op::Publish,
            self.write_timeout(),
            |mut c| async move {
                let n: u64 = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(payload)
                    .query_async(&mut c)
                    .await?;
                Ok(n)
            },
        )
        .await
    }

    /// Where the purge subscriber connects (`None` when the settings were invalid).
    pub fn subscriber(&self) -> Option<SubscribeTarget> {
        self.topology.as_deref().map(Topology::subscriber)
    }

    /// PING under the read timeout (readiness). Bypasses the breaker but reports to it on
    /// success, so a recovered Redis is noticed.
    pub async fn ping(&self) -> Result<(), String> {
        let res = tokio::time::timeout(self.read_timeout(), async {
            let mut c = self.connection(Lane::Entries).await?;
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok::<(), redis::RedisError>(())
        })
        .await;
        if !matches!(res, Ok(Ok(()))) {
            self.failed(Lane::Entries, false);
        }
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("redis error: {e}")),
            Err(_) => Err(format!(
                "redis ping timed out after {:?}",
                self.read_timeout()
            )),
        }
    }
}
