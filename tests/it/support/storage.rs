//! Driving `TieredCache` and `PurgeService` directly, as pingora-cache and the request plan
//! do: configs, leaked (`'static`) caches and purge services, keys, metas with an entry
//! context, a miss handler's write, a lookup, and polls.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use pingora_cache::storage::{HitHandler, Storage};
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use sidecache::cache::storage::{EntryContext, Tier, TieredCache, TieredHit};
use sidecache::config::{CacheConfig, L1Config, L2Config, L2Mode, Secret};
use sidecache::purge::{PurgeKind, PurgeReport, PurgeRequest, PurgeService, PurgeSource};

/// Largest body the test caches store.
pub const MAX_OBJECT: u64 = 4096;

/// Bound of every poll.
pub const POLL: Duration = Duration::from_secs(5);

/// A cache config with `l1_bytes` of L1 (0: none) and, with `redis_url`, an L2 under `prefix`
/// on the channel `test:purge`.
pub fn cache_config(l1_bytes: u64, redis_url: Option<String>, prefix: &str) -> CacheConfig {
    CacheConfig {
        default_mode: None,
        key_host: true,
        targeted_cache_control: vec![],
        honor_request_directives: true,
        lock_timeout: Duration::from_secs(5),
        soft_purge_grace: Duration::from_secs(60),
        surrogate_key_header: None,
        l1: L1Config {
            max_bytes: l1_bytes,
            max_object_bytes: MAX_OBJECT,
        },
        l2: redis_url.map(|url| L2Config {
            mode: L2Mode::Standalone,
            url: Secret::new(url),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: String::new(),
            fill_lock: false,
            compress_above: Some(4096),
            prefix: prefix.to_owned(),
            // generous for a noisy 2-core box; the outage test measures against it
            timeout: Duration::from_millis(250),
            write_timeout: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(400),
            purge_poll: Duration::from_millis(100),
            purge_backlog: 65_536,
            channel: "test:purge".into(),
            channel_secret: None,
        }),
    }
}

/// A cache for `cfg` that lives for the rest of the test process.
pub fn leak(cfg: &CacheConfig) -> &'static TieredCache {
    Box::leak(Box::new(TieredCache::new(cfg)))
}

/// The purge service of `cache` (one per cache: its instance id is in its broadcasts).
pub fn purges(cache: &'static TieredCache, cfg: &CacheConfig) -> &'static PurgeService {
    Box::leak(Box::new(PurgeService::new(cache, cfg)))
}

/// An admin purge of `kind`/`target` through `p`.
pub async fn purge(p: &'static PurgeService, kind: PurgeKind, target: &str) -> PurgeReport {
    p.apply(&PurgeRequest::new(kind, target, PurgeSource::Admin))
        .await
}

/// The key of `path`.
pub fn key(path: &str) -> CacheKey {
    CacheKey::new(path.as_bytes().to_vec(), "")
}

/// The key of `path` with the L1 probe left in it, as the request plan leaves it: the
/// request's work begins now.
pub fn probed_key(c: &TieredCache, path: &str) -> CacheKey {
    let mut k = key(path);
    c.probe_l1(&k).remember_in(&mut k);
    k
}

/// A 200 meta fresh until `fresh_until` whose entry context is `url` and `tags`.
pub fn meta_at(fresh_until: SystemTime, swr: u32, sie: u32, url: &str, tags: &[&str]) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.append_header("Content-Type", "application/json")
        .expect("ct");
    h.append_header("X-Test-Case", "MixedCase").expect("x");
    let created = SystemTime::now();
    let mut m = CacheMeta::new(fresh_until, created, swr, sie, h);
    m.extensions_mut().insert(EntryContext {
        url: url.to_owned(),
        route: "test".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    });
    m
}

/// [`meta_at`] fresh for `ttl` seconds, with swr 10 and sie 20.
pub fn meta(ttl: u64, url: &str, tags: &[&str]) -> CacheMeta {
    meta_at(
        SystemTime::now() + Duration::from_secs(ttl),
        10,
        20,
        url,
        tags,
    )
}

/// Store `body` under `k` the way a miss does: miss handler, two chunks, finish.
pub async fn write(
    c: &'static TieredCache,
    k: &CacheKey,
    m: &CacheMeta,
    body: &[u8],
) -> pingora_error::Result<()> {
    let span = Span::inactive();
    let mut mh = c.get_miss_handler(k, m, &span.handle()).await?;
    let mid = body.len() / 2;
    mh.write_body(Bytes::copy_from_slice(&body[..mid]), false)
        .await?;
    mh.write_body(Bytes::copy_from_slice(&body[mid..]), true)
        .await?;
    mh.finish().await.map(|_| ())
}

/// pingora-cache's lookup of `k`.
pub async fn lookup(c: &'static TieredCache, k: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
    let span = Span::inactive();
    c.lookup(k, &span.handle())
        .await
        .expect("lookup never errors")
}

/// The whole body a hit handler serves.
pub async fn body(mut h: HitHandler) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = h.read_body().await.expect("read_body") {
        out.extend_from_slice(&b);
    }
    out
}

/// The tier that served a hit.
pub fn tier(h: &HitHandler) -> Tier {
    h.as_any()
        .downcast_ref::<TieredHit>()
        .expect("TieredHit")
        .tier()
}

/// Poll until `f` holds, failing the test after [`POLL`].
pub async fn wait_for<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + POLL;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
