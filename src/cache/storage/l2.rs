//! [`L2Store`]: the shared Redis tier behind a [`CircuitBreaker`].
//!
//! Keys (prefix from config, format version `v1` appended here):
//! - `{prefix}v1:e:{hex(combined_bin)}`: the encoded entry (see `codec`), `PX` = time left until
//!   its deadline.
//! - `{prefix}v1:url:{url}`: set of entry keys stored for that url (all Vary variants).
//! - `{prefix}v1:tag:{tag}`: set of entry keys carrying that tag.
//! - `{prefix}v1:urls`: sorted set (all scores 0) of urls, for prefix purges by `ZRANGEBYLEX`.
//!
//! Index keys get `PEXPIRE .. NX` then `PEXPIRE .. GT`, so they live at least as long as their
//! longest-living member.
//!
//! The `ConnectionManager` is created lazily in the runtime that first uses it (a
//! `tokio::sync::OnceCell`; a failed init leaves the cell empty so the next allowed attempt
//! retries). Every operation runs under a timeout, emits an `L2Operation` event and feeds the breaker;
//! while the breaker is open operations are skipped (`L2Result::Skipped`).

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::atomic_duration::AtomicDuration;
use super::breaker::CircuitBreaker;
use crate::config::L2Config;
use crate::hex::hex;
use crate::telemetry::events::{InternalEvent, L2Operation};
use crate::telemetry::metrics::{L2Op, L2Result};

/// Format version segment of every key this build writes.
pub const KEY_VERSION: &str = "v1:";

/// The Redis tier: connection, breaker, timeouts and key layout.
pub struct L2Store {
    client: Option<redis::Client>,
    conn: OnceCell<ConnectionManager>,
    breaker: CircuitBreaker,
    prefix: String,
    read_timeout: AtomicDuration,
    write_timeout: AtomicDuration,
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
        L2Store {
            client,
            conn: OnceCell::new(),
            breaker: CircuitBreaker::new(cfg.breaker_failures, cfg.breaker_cooldown),
            prefix: format!("{}{}", cfg.prefix, KEY_VERSION),
            read_timeout: AtomicDuration::new(cfg.timeout),
            write_timeout: AtomicDuration::new(cfg.write_timeout),
        }
    }

    /// Live-adjust timeouts and breaker settings. The url and prefix need a restart.
    pub fn reconfigure(&self, cfg: &L2Config) {
        self.read_timeout.set(cfg.timeout);
        self.write_timeout.set(cfg.write_timeout);
        self.breaker
            .reconfigure(cfg.breaker_failures, cfg.breaker_cooldown);
    }

    /// Timeout of each read.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout.get()
    }

    /// Timeout of each background write.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout.get()
    }

    /// The breaker guarding this store.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// `{prefix}v1:e:{hex}` for an entry key.
    pub fn entry_key(&self, key: &[u8; 16]) -> String {
        format!("{}e:{}", self.prefix, hex(key))
    }

    /// `{prefix}v1:url:{url}`.
    pub fn url_key(&self, url: &str) -> String {
        format!("{}url:{}", self.prefix, url)
    }

    /// `{prefix}v1:tag:{tag}`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{}", self.prefix, tag)
    }

    /// `{prefix}v1:urls`.
    pub fn urls_key(&self) -> String {
        format!("{}urls", self.prefix)
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let client = self.client.as_ref().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "invalid redis url"))
        })?;
        let connect_timeout = self.write_timeout().max(Duration::from_millis(100));
        let conn = self
            .conn
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

    /// Run one logical operation (may be several commands) through breaker, timeout and
    /// metrics. `Err` carries how it ended (`Skipped`, `Timeout`, `Error`).
    pub async fn run<T, F, Fut>(&self, op: L2Op, timeout: Duration, f: F) -> Result<T, L2Result>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
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
            let conn = self.connection().await?;
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
            self.breaker.on_success();
        } else {
            self.breaker.on_failure();
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

    /// GET an entry's raw bytes under the read timeout. `Ok(None)`: not there.
    pub async fn get_raw(&self, key: &[u8; 16]) -> Result<Option<Vec<u8>>, L2Result> {
        let k = self.entry_key(key);
        self.run(L2Op::Get, self.read_timeout(), |mut c| async move {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query_async(&mut c).await?;
            Ok(v)
        })
        .await
    }

    /// SET an entry with its TTL and add it to the url/tag indexes (one pipeline).
    pub async fn set_entry(
        &self,
        key: &[u8; 16],
        value: Vec<u8>,
        ttl: Duration,
        url: &str,
        tags: &[String],
    ) -> Result<(), L2Result> {
        let ek = self.entry_key(key);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(&ek)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        let index_key = |p: &mut redis::Pipeline, set: String| {
            p.cmd("SADD").arg(&set).arg(&ek).ignore();
            p.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("GT").ignore();
        };
        if !url.is_empty() {
            index_key(&mut p, self.url_key(url));
            let urls = self.urls_key();
            p.cmd("ZADD").arg(&urls).arg(0).arg(url).ignore();
            p.cmd("PEXPIRE").arg(&urls).arg(ttl_ms).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(&urls).arg(ttl_ms).arg("GT").ignore();
        }
        for t in tags {
            index_key(&mut p, self.tag_key(t));
        }
        self.run(L2Op::Set, self.write_timeout(), |mut c| async move {
            p.query_async::<()>(&mut c).await
        })
        .await
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

    /// Delete all entries indexed under `url` and the index itself. Returns entries deleted.
    pub async fn purge_url(&self, url: &str) -> Result<u64, L2Result> {
        let urls = self.urls_key();
        let uk = self.url_key(url);
        let url = url.to_owned();
        self.run(L2Op::Del, self.write_timeout(), |mut c| async move {
            purge_urls(&mut c, &urls, vec![(url, uk)]).await
        })
        .await
    }

    /// Delete all entries whose url starts with `prefix` (ZRANGEBYLEX on the url index).
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, L2Result> {
        let urls_key = self.urls_key();
        let mut min = b"[".to_vec();
        min.extend_from_slice(prefix.as_bytes());
        // 0xff never occurs in UTF-8, so "[prefix\xff" bounds every string starting with prefix
        let mut max = min.clone();
        max.push(0xff);
        let this_prefix = self.url_key("");
        self.run(L2Op::Del, self.write_timeout(), |mut c| async move {
            let found: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&urls_key)
                .arg(min)
                .arg(max)
                .query_async(&mut c)
                .await?;
            let pairs = found
                .into_iter()
                .map(|u| {
                    let k = format!("{this_prefix}{u}");
                    (u, k)
                })
                .collect();
            purge_urls(&mut c, &urls_key, pairs).await
        })
        .await
    }

    /// Delete all entries carrying `tag` and the tag index.
    pub async fn purge_tag(&self, tag: &str) -> Result<u64, L2Result> {
        let tk = self.tag_key(tag);
        self.run(L2Op::Del, self.write_timeout(), |mut c| async move {
            let members: Vec<String> = redis::cmd("SMEMBERS").arg(&tk).query_async(&mut c).await?;
            let mut n = 0;
            if !members.is_empty() {
                n = redis::cmd("DEL").arg(&members).query_async(&mut c).await?;
            }
            let _: u64 = redis::cmd("DEL").arg(&tk).query_async(&mut c).await?;
            Ok(n)
        })
        .await
    }

    /// PUBLISH `payload` on `channel` under the write timeout (through the breaker, counted as
    /// `op="publish"`). Returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, payload: String) -> Result<u64, L2Result> {
        let channel = channel.to_owned();
        self.run(L2Op::Publish, self.write_timeout(), |mut c| async move {
            let n: u64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut c)
                .await?;
            Ok(n)
        })
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
            let mut c = self.connection().await?;
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

async fn purge_urls(
    c: &mut ConnectionManager,
    urls_key: &str,
    pairs: Vec<(String, String)>,
) -> redis::RedisResult<u64> {
    let mut n = 0u64;
    for (url, uk) in pairs {
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(&uk).query_async(c).await?;
        if !members.is_empty() {
            let d: u64 = redis::cmd("DEL").arg(&members).query_async(c).await?;
            n += d;
        }
        let _: u64 = redis::cmd("DEL").arg(&uk).query_async(c).await?;
        let _: u64 = redis::cmd("ZREM")
            .arg(urls_key)
            .arg(&url)
            .query_async(c)
            .await?;
    }
    Ok(n)
}
