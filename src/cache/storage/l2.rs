//! [`L2Store`]: the shared Redis tier, behind a circuit breaker for entries and another for
//! purges.
//!
//! Keys (prefix from config, layout version `v2` appended here; `v1` kept the url and tag
//! indexes as plain sets that only grew, so the two layouts never share keys):
//! - `{prefix}v2:e:{hex(combined_bin)}`: the encoded entry (see `codec`), `PX` = time left
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
//!   tombstone was recorded), and `{prefix}v2:tombs`: sorted set of recent purges (`u`, `p` or
//!   `t` followed by the url, prefix or tag) scored by their generation.
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
//! The scripts compute index keys from the prefix, as the store always did: a standalone Redis
//! (or one primary), not Redis Cluster. The connections are created lazily in the runtime that
//! first uses them (a `tokio::sync::OnceCell`; a failed init leaves the cell empty so the next
//! allowed attempt retries). Every operation runs under a timeout, emits an `L2Operation`
//! event and feeds its breaker; while a breaker is open its operations are skipped
//! (`L2Result::Skipped`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::FromRedisValue;
use tokio::sync::OnceCell;

use super::atomic_duration::AtomicDuration;
use super::breaker::{BreakerScope, CircuitBreaker};
use super::purge_log::Refusal;
use super::PurgeKind;
use crate::config::L2Config;
use crate::hex::hex;
use crate::telemetry::events::{InternalEvent, L2Operation};
use crate::telemetry::metrics::{L2Op, L2Result};

/// Layout version segment of every key this build writes.
pub const KEY_VERSION: &str = "v2:";

/// Urls a prefix purge takes per script call.
pub const PURGE_URLS_PER_BATCH: usize = 256;

/// Entries a tag purge takes per script call.
pub const PURGE_ENTRIES_PER_BATCH: usize = 512;

/// A Lua script called by `EVALSHA`, loaded on first use and again whenever Redis has
/// forgotten it (restart, `SCRIPT FLUSH`).
struct Lua(redis::Script);

impl Lua {
    /// The `EVALSHA` command with `keys`; append the arguments.
    fn command(&self, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.0.get_hash()).arg(keys.len()).arg(keys);
        cmd
    }

    /// Run `cmd` (built by [`Lua::command`]), loading the script if Redis does not have it.
    async fn run<T: FromRedisValue>(
        &self,
        c: &mut ConnectionManager,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match cmd.query_async(c).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                self.0.prepare_invoke().load_async(c).await?;
                cmd.query_async(c).await
            }
            other => other,
        }
    }
}

macro_rules! lua {
    ($file:literal) => {
        Lazy::new(|| {
            Lua(redis::Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!(concat!("lua/", $file))
            )))
        })
    };
}

static GENERATION: Lazy<Lua> = lua!("generation.lua");
static STORE: Lazy<Lua> = lua!("store.lua");
static PURGE: Lazy<Lua> = lua!("purge.lua");

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

/// What became of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    Refused(Refusal),
}

/// Which connection and breaker an operation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Entries,
    Purges,
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
    client: Option<redis::Client>,
    conn: OnceCell<ConnectionManager>,
    purge_conn: OnceCell<ConnectionManager>,
    breaker: CircuitBreaker,
    purge_breaker: CircuitBreaker,
    prefix: String,
    read_timeout: AtomicDuration,
    write_timeout: AtomicDuration,
    /// The newest purge generation a reply carried (0: none yet).
    seen: AtomicU64,
}

impl L2Store {
    /// No I/O: parses the URL only (a bad URL makes every operation fail and opens the breaker).
    pub fn new(cfg: &L2Config) -> Self {
        let client = match redis::Client::open(cfg.url.expose()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "invalid redis url; L2 disabled");
                None
            }
        };
        let breaker =
            |scope| CircuitBreaker::new(scope, cfg.breaker_failures, cfg.breaker_cooldown);
        L2Store {
            client,
            conn: OnceCell::new(),
            purge_conn: OnceCell::new(),
            breaker: breaker(BreakerScope::Entries),
            purge_breaker: breaker(BreakerScope::Purges),
            prefix: format!("{}{}", cfg.prefix, KEY_VERSION),
            read_timeout: AtomicDuration::new(cfg.timeout),
            write_timeout: AtomicDuration::new(cfg.write_timeout),
            seen: AtomicU64::new(0),
        }
    }

    /// Live-adjust timeouts and breaker settings. The url and prefix need a restart.
    pub fn reconfigure(&self, cfg: &L2Config) {
        self.read_timeout.set(cfg.timeout);
        self.write_timeout.set(cfg.write_timeout);
        for b in [&self.breaker, &self.purge_breaker] {
            b.reconfigure(cfg.breaker_failures, cfg.breaker_cooldown);
        }
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

    fn saw(&self, generation: u64) {
        self.seen.fetch_max(generation, Ordering::SeqCst);
    }

    /// `{prefix}v2:e:{hex}` for an entry key.
    pub fn entry_key(&self, key: &[u8; 16]) -> String {
        format!("{}e:{}", self.prefix, hex(key))
    }

    /// `{prefix}v2:url:{url}`.
    pub fn url_key(&self, url: &str) -> String {
        format!("{}url:{}", self.prefix, url)
    }

    /// `{prefix}v2:tag:{tag}`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{}", self.prefix, tag)
    }

    /// `{prefix}v2:urls`.
    pub fn urls_key(&self) -> String {
        format!("{}urls", self.prefix)
    }

    /// `{prefix}v2:urls:expiry`.
    pub fn url_expiry_key(&self) -> String {
        format!("{}urls:expiry", self.prefix)
    }

    /// `{prefix}v2:purge`.
    pub fn purge_state_key(&self) -> String {
        format!("{}purge", self.prefix)
    }

    /// `{prefix}v2:tombs`.
    pub fn tombstones_key(&self) -> String {
        format!("{}tombs", self.prefix)
    }

    async fn connection(&self, lane: Lane) -> redis::RedisResult<ConnectionManager> {
        let client = self.client.as_ref().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "invalid redis url"))
        })?;
        let connect_timeout = self.write_timeout().max(Duration::from_millis(100));
        let cell = match lane {
            Lane::Entries => &self.conn,
            Lane::Purges => &self.purge_conn,
        };
        let conn = cell
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(200);
                match tokio::time::timeout(
                    connect_timeout,
                    client.get_connection_manager_with_config(cfg),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "redis connect timed out",
                    ))),
                }
            })
            .await?;
        Ok(conn.clone())
    }

    /// Run one logical entry operation (may be several commands) through the entry breaker,
    /// `timeout` and metrics. `Err` carries how it ended (`Skipped`, `Timeout`, `Error`).
    pub async fn run<T, F, Fut>(&self, op: L2Op, timeout: Duration, f: F) -> Result<T, L2Result>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_in(Lane::Entries, op, timeout, f).await
    }

    async fn run_in<T, F, Fut>(
        &self,
        lane: Lane,
        op: L2Op,
        timeout: Duration,
        f: F,
    ) -> Result<T, L2Result>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let breaker = match lane {
            Lane::Entries => &self.breaker,
            Lane::Purges => &self.purge_breaker,
        };
        if !breaker.allow() {
            L2Operation {
                op,
                result: L2Result::Skipped,
                elapsed: Duration::ZERO,
                error: None,
            }
            .emit();
            return Err(L2Result::Skipped);
        }
        let start = Instant::now();
        let res = tokio::time::timeout(timeout, async {
            let conn = self.connection(lane).await?;
            f(conn).await
        })
        .await;
        let elapsed = start.elapsed();
        let (result, error) = match &res {
            Ok(Ok(_)) => (L2Result::Ok, None),
            Ok(Err(e)) => (L2Result::Error, Some(e)),
            Err(_) => (L2Result::Timeout, None),
        };
        if result == L2Result::Ok {
            breaker.on_success();
        } else {
            breaker.on_failure();
        }
        L2Operation {
            op,
            result,
            elapsed,
            error,
        }
        .emit();
        match res {
            Ok(Ok(v)) => Ok(v),
            _ => Err(result),
        }
    }

    /// GET an entry's raw bytes and the purge generation in one round trip, under the read
    /// timeout (a Redis without a generation yet gets one in a second round trip).
    pub async fn get_entry(&self, key: &[u8; 16]) -> Result<L2Read, L2Result> {
        let k = self.entry_key(key);
        let state = self.purge_state_key();
        let tombs = self.tombstones_key();
        let read = self
            .run(L2Op::Get, self.read_timeout(), |mut c| async move {
                let (value, generation): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
                    .cmd("GET")
                    .arg(&k)
                    .cmd("HGET")
                    .arg(&state)
                    .arg("gen")
                    .query_async(&mut c)
                    .await?;
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
    /// requires the script to be loaded already (any [`L2Store::set_entry`] loads it).
    pub fn store_command(&self, write: &EntryWrite<'_>) -> redis::Cmd {
        let ttl_ms = u64::try_from(write.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut cmd = STORE.command(&[
            &self.purge_state_key(),
            &self.tombstones_key(),
            &self.entry_key(write.key),
            &self.urls_key(),
            &self.url_expiry_key(),
        ]);
        cmd.arg(&self.prefix)
            .arg(write.value)
            .arg(ttl_ms)
            .arg(write.since)
            .arg(write.url)
            .arg(write.tags);
        cmd
    }

    /// Make `write` unless a purge after its work began matches the entry (the check and the
    /// store are one script), under the write timeout.
    pub async fn set_entry(&self, write: &EntryWrite<'_>) -> Result<StoreOutcome, L2Result> {
        let cmd = self.store_command(write);
        let code: i64 = self
            .run(L2Op::Set, self.write_timeout(), |mut c| async move {
                STORE.run(&mut c, &cmd).await
            })
            .await?;
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
    /// bounded batches delete (see the module docs). Returns the entries deleted; stops at the
    /// first batch that fails.
    pub async fn purge(&self, kind: PurgeKind, target: &str) -> Result<u64, L2Result> {
        let batch = match kind {
            PurgeKind::Prefix => PURGE_URLS_PER_BATCH,
            PurgeKind::Url | PurgeKind::Tag => PURGE_ENTRIES_PER_BATCH,
        };
        let keys = [
            self.purge_state_key(),
            self.tombstones_key(),
            self.urls_key(),
            self.url_expiry_key(),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut cursor = String::new();
        let mut first = true;
        let mut deleted = 0;
        loop {
            let mut cmd = PURGE.command(&keys);
            cmd.arg(&self.prefix)
                .arg(kind_letter(kind))
                .arg(target)
                .arg(if first { "1" } else { "0" })
                .arg(&cursor)
                .arg(batch);
            let (generation, n, next): (u64, u64, String) = self
                .run_in(
                    Lane::Purges,
                    L2Op::Purge,
                    self.write_timeout(),
                    |mut c| async move { PURGE.run(&mut c, &cmd).await },
                )
                .await?;
            if first {
                self.saw(generation);
            }
            deleted += n;
            if next.is_empty() {
                return Ok(deleted);
            }
            cursor = next;
            first = false;
        }
    }

    /// PUBLISH `payload` on `channel` under the write timeout (on the purge connection and
    /// breaker, counted as `op="publish"`). Returns how many subscribers received it.
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

    /// The parsed Redis client (`None` when the url was invalid), for dedicated connections
    /// such as the purge subscriber's.
    pub fn client(&self) -> Option<&redis::Client> {
        self.client.as_ref()
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
