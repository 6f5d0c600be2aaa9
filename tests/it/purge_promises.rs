//! The purge promises of issue 19, end to end with real processes (one `redis-server`, the
//! stand-in backend, two `sidecache` instances A and B):
//! - no client can empty others' cache: a flood of writes to unrelated paths (under the
//!   default origin mode, each purges its own url) leaves every other entry in place, on the
//!   other instance and in Redis, and a write to a cached path purges that path only;
//! - a purge whose broadcast is lost still reaches the other instance, within
//!   `cache.l2.purge_poll` (the finished-purge log);
//! - a purge that could not reach Redis is retried until it lands, and then reaches the
//!   other instance; while Redis is out the backlog sends only the breaker's probes; the
//!   purge of an entry this instance held is not queued behind a flood of writes' purges
//!   of paths nothing cached;
//! - while the purge backlog is full, writes to cacheable paths are refused before the
//!   origin, and writes elsewhere pass;
//! - a captured signed broadcast replayed later is dropped.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::backend::start_backend;
use support::delay_proxy::{DelayProxy, Direction};
use support::http::{get, metric, request};
use support::redis::RedisServer;
use support::sidecache::{admin_purge, config_opening, Sidecache, SidecacheOptions};
use support::traffic::write_flood;

/// How long a purge may take to reach the other instance before a test fails: the bound is
/// `purge_poll` (200 ms here) plus a Redis round trip; this is a shared, noisy box.
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

/// Bound of every other poll.
const POLL: Duration = Duration::from_secs(15);

/// Routes and settings after [`config_opening`]; `{redis}`, `{channel}`, `{routes}` and
/// `{extra}` (in `[cache.l2]`) are filled per instance.
const ROUTES: &str = r#"
{routes}

[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"
tags = ["contractor:{id}"]
invalidate_on = ["PUT /api/contractors/:id"]

[[routes]]
name = "concierge_state"
match = "GET /api/concierge/sessions/:id/state"
ttl = "until-invalidated"
invalidate_on = ["POST /api/concierge/sessions/:id/end"]

[cache.l1]
max_bytes = "8MiB"

[cache.l2]
url = "{redis}"
prefix = "promise:"
channel = "{channel}"
timeout = "250ms"
write_timeout = "500ms"
breaker_failures = 3
breaker_cooldown = "200ms"
purge_poll = "200ms"
{extra}
"#;

fn options(
    redis_url: &str,
    channel: &str,
    extra: &str,
    backend: std::net::SocketAddr,
) -> SidecacheOptions {
    options_with_routes(redis_url, channel, extra, "", backend)
}

/// [`options`] with `routes` before the shared ones.
fn options_with_routes(
    redis_url: &str,
    channel: &str,
    extra: &str,
    routes: &str,
    backend: std::net::SocketAddr,
) -> SidecacheOptions {
    let config = config_opening()
        .upstream(r#"read_timeout = "5s""#)
        .then(ROUTES)
        .replace("{routes}", routes)
        .replace("{redis}", redis_url)
        .replace("{channel}", channel)
        .replace("{extra}", extra);
    SidecacheOptions::new(config).backend(backend)
}

/// One Redis and the stand-in backend, with A reaching Redis through a [`DelayProxy`] (to
/// delay or cut) and B directly, both on the channel `promise:purge`.
struct Proxied {
    redis: RedisServer,
    proxy: DelayProxy,
    _backend: support::backend::Backend,
    a: Sidecache,
    b: Sidecache,
}

async fn proxied() -> Proxied {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.addr()).await;
    let backend = start_backend(Duration::ZERO).await;
    let a = Sidecache::start(options(
        &proxy.redis_url(),
        "promise:purge",
        "",
        backend.addr(),
    ))
    .await;
    let b = Sidecache::start(options(&redis.url(), "promise:purge", "", backend.addr())).await;
    Proxied {
        redis,
        proxy,
        _backend: backend,
        a,
        b,
    }
}

/// GET `path` on `sc` until it is served from L1.
async fn warm(sc: &Sidecache, path: &str) {
    let deadline = Instant::now() + POLL;
    loop {
        let r = get(&sc.url(path), &[]).await;
        assert_eq!(r.status, 200, "GET {path}");
        if r.x_cache() == "HIT-L1" {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never became HIT-L1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `path` on `sc` until it is no longer served from L1, at most `bound`; returns how
/// long that took after `since`.
async fn leaves_l1(sc: &Sidecache, path: &str, since: Instant, bound: Duration) -> Duration {
    loop {
        let r = get(&sc.url(path), &[]).await;
        if r.x_cache() != "HIT-L1" {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < bound,
            "{path} still HIT-L1 after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn scrape(sc: &Sidecache, series: &str) -> f64 {
    metric(&get(&sc.admin_url("/metrics"), &[]).await.text(), series)
}

/// Entry keys in Redis under the tests' prefix.
fn entries_in_redis(redis: &RedisServer) -> usize {
    redis.keys("promise:v2:e:*").len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_flood_to_other_paths_leaves_every_other_entry_alone() {
    // A reaches Redis through a proxy that holds its traffic for a while mid-flood: Redis
    // "cannot keep up", and what waits must still never widen
    let Proxied {
        redis,
        proxy,
        _backend,
        a,
        b,
    } = proxied().await;
    let hot: Vec<String> = (1..=20)
        .map(|i| format!("/api/contractors/{i}/bundle"))
        .collect();
    for path in &hot {
        warm(&b, path).await;
    }
    let stored = entries_in_redis(&redis);
    assert_eq!(stored, hot.len());

    // anonymous writes that succeed at the origin, each to a path of its own, as fast as
    // they go: each may purge its own url (the default origin mode could have stored it)
    let until = Instant::now() + Duration::from_secs(3);
    let base = a.url("");
    let flood = tokio::spawn(async move { write_flood(&base, 16, until).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.delay_on(Direction::ToServer);
    // Redis is held until more purges wait than the old bounded queue (1,024) held before
    // it escalated, or the flood is nearly over: a slow box writes fewer per second, so a
    // fixed hold could leave too few waiting to prove anything
    let hold_until = until - Duration::from_millis(300);
    let held = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = scrape(&a, "sidecache_purge_backlog").await;
        if waiting > 1_500.0 || Instant::now() >= hold_until {
            break waiting;
        }
    };
    proxy.delay_off(Direction::ToServer);
    let sent = flood.await.expect("flood");
    let waiting = scrape(&a, "sidecache_purge_backlog").await;
    eprintln!(
        "flood: {sent} writes in 3 s on A; {held} purges waiting while Redis was held, \
         {waiting} at the end"
    );
    assert!(
        held > 1_024.0,
        "the flood did not outrun Redis ({held} waiting)"
    );
    let deadline = Instant::now() + POLL;
    while scrape(&a, "sidecache_purge_backlog").await > 0.0 {
        assert!(Instant::now() < deadline, "the backlog never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sent > 1_000,
        "the flood was too thin to prove anything ({sent})"
    );
    // none wider than its own target
    for kind in ["tag"] {
        let series = format!("sidecache_purges_total{{kind=\"{kind}\",source=\"write\"}}");
        assert_eq!(scrape(&a, &series).await, 0.0, "{series}");
    }
    for path in &hot {
        let r = get(&b.url(path), &[]).await;
        assert_eq!(r.x_cache(), "HIT-L1", "{path} on B after the flood");
    }
    assert_eq!(
        entries_in_redis(&redis),
        stored,
        "Redis lost entries to the flood"
    );

    // a write that invalidates one entry purges that entry, on both instances, only
    let written = &hot[0];
    let r = request(
        "PUT",
        &a.url("/api/contractors/1"),
        &[("content-type", "application/json")],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 200, "PUT /api/contractors/1: {}", r.text());
    let since = Instant::now();
    leaves_l1(&b, written, since, PROPAGATION_BOUND).await;
    for path in &hot[1..] {
        assert_eq!(get(&b.url(path), &[]).await.x_cache(), "HIT-L1", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_broadcast_is_repaired_from_the_finished_purge_log() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    // A publishes where B does not listen: every broadcast of A's is lost to B
    let a = Sidecache::start(options(&redis.url(), "promise:lost", "", backend.addr())).await;
    let b = Sidecache::start(options(&redis.url(), "promise:purge", "", backend.addr())).await;
    let session = "/api/concierge/sessions/9/state";
    let bundle = "/api/contractors/5/bundle";
    for path in [session, bundle] {
        warm(&a, path).await;
        warm(&b, path).await;
    }

    // an until-invalidated session ended on A: B stops serving it within purge_poll
    let r = request(
        "POST",
        &a.url("/api/concierge/sessions/9/end"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let took = leaves_l1(&b, session, Instant::now(), PROPAGATION_BOUND).await;
    eprintln!("write purge, broadcast lost: B caught up after {took:?}");

    // an admin purge by tag, the same way
    let since = Instant::now();
    let report = admin_purge(&a, json!({"tag": "contractor:5"})).await;
    assert_eq!(report["l2_ok"], true, "{report}");
    let took = leaves_l1(&b, bundle, since, PROPAGATION_BOUND).await;
    eprintln!("admin purge, broadcast lost: B caught up after {took:?}");
    assert!(scrape(&b, "sidecache_purges_caught_up_total").await >= 2.0);
    // and once only: A's own purges are not applied to A again
    assert_eq!(scrape(&a, "sidecache_purges_caught_up_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_that_could_not_reach_redis_lands_when_it_can() {
    // every field bound: one left out would drop (stop) at once
    let Proxied {
        redis: _redis,
        proxy,
        _backend,
        a,
        b,
    } = proxied().await;
    let path = "/api/contractors/3/bundle";
    warm(&a, path).await;
    warm(&b, path).await;

    proxy.delay_on(Direction::ToServer);
    let report = admin_purge(&a, json!({"url": path})).await;
    assert_eq!(
        (report["l2_ok"].as_bool(), report["retrying"].as_bool()),
        (Some(false), Some(true)),
        "{report}"
    );
    // A is right at once: not from L1, not from Redis
    let r = get(&a.url(path), &[]).await;
    assert_eq!(r.x_cache(), "MISS", "A after its purge");
    assert!(scrape(&a, "sidecache_purge_backlog").await >= 1.0);

    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.delay_off(Direction::ToServer);
    let since = Instant::now();
    // the retry lands (backoff at most a few hundred ms after so short a cut), then B learns
    let took = leaves_l1(&b, path, since, Duration::from_secs(8)).await;
    eprintln!("purge retried after a 0.5 s cut: B stopped serving after {took:?}");
    let deadline = Instant::now() + POLL;
    while scrape(&a, "sidecache_purge_backlog").await > 0.0 {
        assert!(Instant::now() < deadline, "the backlog never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While A cannot reach Redis, its purge backlog sends Redis nothing but the purge breaker's
/// probes, one per cooldown; when Redis is back the next probe closes the breaker and the
/// backlog drains at once. (The worker used to send rounds of 64 jobs regardless, which the
/// open breaker skipped, counted as 64 failed retries each, and then slept up to 5 s
/// between rounds, so each time a fault opened the breaker it drained in bursts, long after
/// Redis was back: the torture runs' full backlogs.)
#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_out_the_backlog_sends_only_the_breakers_probes() {
    // every field bound: one left out would drop (stop) at once
    let Proxied {
        redis: _redis,
        proxy,
        _backend,
        a,
        b: _b,
    } = proxied().await;
    proxy.cut();
    let writes = write_flood(&a.url(""), 8, Instant::now() + Duration::from_millis(500)).await;
    let waiting = scrape(&a, "sidecache_purge_backlog").await;
    assert!(
        waiting >= 64.0,
        "the flood was too thin ({writes} writes, {waiting} purges waiting)"
    );
    // the jobs out when the breaker opened come back within the write timeout
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = scrape(&a, "sidecache_purge_retries_total").await;
    let out = Duration::from_secs(3);
    tokio::time::sleep(out).await;
    let retries = scrape(&a, "sidecache_purge_retries_total").await - before;
    // cooldown 200 ms, a probe fails within the 500 ms write timeout: about 5 probes in
    // 3 s, at most 15; the old worker's rounds of 64 made at least 4 x 64
    eprintln!("{waiting} purges waiting, Redis out for {out:?}: {retries} failed attempts");
    assert!(
        retries <= 20.0,
        "the backlog sent {retries} purges to be skipped or fail while Redis was out"
    );

    proxy.heal();
    let since = Instant::now();
    let deadline = since + POLL;
    while scrape(&a, "sidecache_purge_backlog").await > 0.0 {
        assert!(Instant::now() < deadline, "the backlog never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{waiting} purges drained {:?} after Redis came back",
        since.elapsed()
    );
}

/// A flood of anonymous writes to paths nothing cached fills A's backlog while A cannot
/// reach Redis; the purge of an entry A held, made after the flood, goes ahead of the
/// flood's purges once Redis is back: B stops serving the entry while most of them still
/// wait. (Oldest first, it waited behind every one of them, and an anonymous flood could
/// hold a real invalidation back from the other instances for as long as it kept going.)
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_of_a_held_entry_is_not_queued_behind_a_write_flood() {
    // every field bound: one left out would drop (stop) at once
    let Proxied {
        redis: _redis,
        proxy,
        _backend,
        a,
        b,
    } = proxied().await;
    let path = "/api/contractors/4/bundle";
    warm(&a, path).await;
    warm(&b, path).await;

    proxy.cut();
    write_flood(&a.url(""), 16, Instant::now() + Duration::from_secs(2)).await;
    let r = request(
        "PUT",
        &a.url("/api/contractors/4"),
        &[("content-type", "application/json")],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 200, "PUT /api/contractors/4: {}", r.text());
    let waiting = scrape(&a, "sidecache_purge_backlog").await;
    assert!(
        waiting > 1_000.0,
        "the flood was too thin ({waiting} waiting)"
    );

    proxy.heal();
    let since = Instant::now();
    let took = leaves_l1(&b, path, since, POLL).await;
    let left = scrape(&a, "sidecache_purge_backlog").await;
    eprintln!(
        "held entry's purge behind a flood: B stopped serving it {took:?} after Redis came \
         back, with {left} of {waiting} purges still waiting on A"
    );
    assert!(
        left > waiting / 2.0,
        "the held entry's purge waited behind the flood: {left} of {waiting} purges were \
         still waiting when B learned of it"
    );
}

/// A route that never caches `/test/echo`: writes there purge nothing.
const UNCACHED_ECHO: &str = r#"
[[routes]]
name = "echo"
match = "GET /test/echo"
cache = false
"#;

#[tokio::test(flavor = "multi_thread")]
async fn writes_to_cacheable_paths_are_refused_while_the_purge_backlog_is_full() {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.addr()).await;
    let backend = start_backend(Duration::ZERO).await;
    // each end purges its own url and query variants (the default origin mode could have
    // stored it) and its session's (invalidate_on): two ends fill the backlog
    let a = Sidecache::start(options_with_routes(
        &proxy.redis_url(),
        "promise:purge",
        "purge_backlog = 8",
        UNCACHED_ECHO,
        backend.addr(),
    ))
    .await;
    let end = |id: u32| format!("/api/concierge/sessions/{id}/end");

    proxy.delay_on(Direction::ToServer);
    for id in [1, 2] {
        let r = request("POST", &a.url(&end(id)), &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "end {id}: {}", r.text());
    }
    let r = request("POST", &a.url(&end(3)), &[], Bytes::new()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "purge_backlog_full");
    assert_eq!(
        backend.stats().hits(&end(3)),
        0,
        "the refused write reached the origin"
    );
    assert!(scrape(&a, "sidecache_purge_backlog_refusals_total").await >= 1.0);
    // a write no cache depends on still goes through
    let r = request("POST", &a.url("/test/echo"), &[], Bytes::from_static(b"x")).await;
    assert_eq!(r.status, 200);

    proxy.delay_off(Direction::ToServer);
    let deadline = Instant::now() + POLL;
    loop {
        let r = request("POST", &a.url(&end(3)), &[], Bytes::new()).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes stayed refused: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_signed_broadcast_is_dropped() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let secret = "channel_secret = \"a-shared-secret-of-some-length\"";
    let opts = options(&redis.url(), "promise:purge", secret, backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    let path = "/api/contractors/8/bundle";
    warm(&a, path).await;
    warm(&b, path).await;

    // capture what A publishes
    let client = redis::Client::open(redis.url()).expect("client");
    let mut capture = client.get_connection().expect("connection");
    let mut pubsub = capture.as_pubsub();
    pubsub.subscribe("promise:purge").expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    admin_purge(&a, json!({"url": path})).await;
    let captured: Vec<u8> = pubsub
        .get_message()
        .expect("A's broadcast")
        .get_payload_bytes()
        .to_vec();
    leaves_l1(&b, path, Instant::now(), PROPAGATION_BOUND).await;

    // B caches it again; the captured message, published again, changes nothing
    warm(&b, path).await;
    let dropped = "sidecache_purge_messages_dropped_total{reason=\"replayed\"}";
    let before = scrape(&b, dropped).await;
    let _: u64 = redis::cmd("PUBLISH")
        .arg("promise:purge")
        .arg(&captured)
        .query(&mut redis.conn())
        .expect("PUBLISH");
    let deadline = Instant::now() + POLL;
    while scrape(&b, dropped).await <= before {
        assert!(Instant::now() < deadline, "the replay was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&b.url(path), &[]).await.x_cache(),
        "HIT-L1",
        "the replay purged B"
    );
}
