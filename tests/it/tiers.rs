//! The L1/L2 tiers end to end: several sidecache processes sharing one real `redis-server`,
//! Redis killed and restarted under traffic, and a corrupt value planted in Redis.

use crate::support;

use std::time::{Duration, Instant};

use support::backend::start_backend;
use support::http::{get, metric};
use support::redis::RedisServer;
use support::sidecache::{config_opening, Sidecache, SidecacheOptions};

fn config(redis_url: &str) -> String {
    config_opening().grace_period("2s").then(&format!(
        r#"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "60s"

# the instances are sidecars of one API, each addressed by its own address
[cache]
key_host = false

[cache.l2]
url = "{redis_url}"
timeout = "50ms"
breaker_failures = 2
breaker_cooldown = "500ms"
"#
    ))
}

/// L2 writes are asynchronous: wait until Redis holds `n` entries.
fn wait_for_l2_entries(redis: &RedisServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("*v2:e:*").len() < n {
        assert!(Instant::now() < deadline, "L2 never received the entry");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_serves_hit_l2_with_a_sane_age() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::from_millis(10)).await;
    let opts = SidecacheOptions::new(config(&redis.url())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let url = "/api/contractors/1/bundle";
    assert_eq!(get(&a.url(url), &[]).await.x_cache(), "MISS");
    wait_for_l2_entries(&redis, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let b = Sidecache::start(opts).await;
    let from_l2 = get(&b.url(url), &[]).await;
    assert_eq!(from_l2.x_cache(), "HIT-L2");
    assert_eq!(
        from_l2.header("cache-status"),
        Some("sidecache; hit; detail=l2")
    );
    let age: u64 = from_l2
        .header("age")
        .expect("Age")
        .parse()
        .expect("numeric");
    assert!(
        (1..=60).contains(&age),
        "age {age} counts from the original store"
    );
    assert_eq!(
        get(&b.url(url), &[]).await.x_cache(),
        "HIT-L1",
        "promoted into B's L1"
    );
    assert_eq!(
        backend.stats().hits(url),
        1,
        "one origin fetch for both instances"
    );

    let ttl = redis.pttl(&redis.keys("*v2:e:*")[0]);
    assert!(
        ttl > 0 && ttl <= 66_000,
        "Redis TTL is the entry's lifetime: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_degrades_to_l1_and_origin_then_recovers() {
    let mut redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&redis.url())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    assert_eq!(
        get(&a.url("/api/contractors/1/bundle"), &[])
            .await
            .x_cache(),
        "MISS"
    );
    wait_for_l2_entries(&redis, 1);

    redis.kill();
    for id in 10..40 {
        let r = get(&a.url(&format!("/api/contractors/{id}/bundle")), &[]).await;
        assert_eq!(r.status, 200, "no client-visible error while Redis is down");
    }
    assert_eq!(
        get(&a.url("/api/contractors/1/bundle"), &[])
            .await
            .x_cache(),
        "HIT-L1"
    );
    let m = get(&a.admin_url("/metrics"), &[]).await.text();
    assert_eq!(metric(&m, "sidecache_l2_up"), 0.0, "breaker open");
    assert!(
        metric(
            &m,
            "sidecache_l2_operations_total{op=\"get\",result=\"skipped\"}"
        ) > 0.0
    );
    let ready = get(&a.url("/ready"), &[]).await;
    assert_eq!(
        ready.status, 200,
        "Redis down never makes sidecache unready"
    );
    assert_eq!(ready.json()["l2"], "down");

    redis.restart();
    // after the cooldown a probe closes the breaker; new entries reach L2 again
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 100;
    while redis.keys("*v2:e:*").is_empty() {
        assert!(Instant::now() < deadline, "L2 writes never resumed");
        get(&a.url(&format!("/api/contractors/{id}/bundle")), &[]).await;
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Sidecache::start(opts).await;
    let r = get(&b.url(&format!("/api/contractors/{}/bundle", id - 1)), &[]).await;
    assert_eq!(r.x_cache(), "HIT-L2", "L2 hits resume");
    let m = get(&a.admin_url("/metrics"), &[]).await.text();
    assert_eq!(metric(&m, "sidecache_l2_up"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_value_in_redis_is_a_counted_miss_not_a_500() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&redis.url())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let url = "/api/contractors/5/bundle";
    assert_eq!(get(&a.url(url), &[]).await.x_cache(), "MISS");
    wait_for_l2_entries(&redis, 1);
    let key = redis.keys("*v2:e:*").remove(0);
    redis.set_raw(&key, b"\x00garbage that is not an entry");

    let b = Sidecache::start(opts).await;
    let r = get(&b.url(url), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.x_cache(), "MISS");
    let m = get(&b.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        metric(&m, "sidecache_corrupt_entries_total{tier=\"l2\"}"),
        1.0
    );
    assert_eq!(backend.stats().hits(url), 2);
}

/// Bodies above `cache.l2.compress_above` (default 4 KiB) sit in Redis zstd-compressed and
/// come back byte for byte on another instance; a value in a format this build does not know
/// (a future version) is a counted miss, not a 500.
#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_are_compressed_in_redis_and_served_whole() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&redis.url())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let url = "/api/contractors/9/bundle";
    let first = get(&a.url(url), &[]).await;
    assert!(
        first.body.len() > 4096,
        "a bundle is ~5 KB: {}",
        first.body.len()
    );
    wait_for_l2_entries(&redis, 1);
    let key = redis.keys("*v2:e:*").remove(0);
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query(&mut redis.conn())
        .expect("raw GET");
    assert!(
        stored.len() * 2 < first.body.len(),
        "stored {} bytes for a {}-byte body",
        stored.len(),
        first.body.len()
    );

    let b = Sidecache::start(opts.clone()).await;
    let from_l2 = get(&b.url(url), &[]).await;
    assert_eq!(from_l2.x_cache(), "HIT-L2");
    assert_eq!(from_l2.body, first.body);

    let mut future = stored.clone();
    future[4] = 99; // the format version byte
    redis.set_raw(&key, &future);
    let c = Sidecache::start(opts).await;
    let r = get(&c.url(url), &[]).await;
    assert_eq!((r.status, r.x_cache()), (200, "MISS"));
    let m = get(&c.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        metric(&m, "sidecache_corrupt_entries_total{tier=\"l2\"}"),
        1.0
    );
}

/// `rediss://`: credentials and TLS come through the URL (managed Redis requires TLS in
/// transit). The instances trust the test CA through `SSL_CERT_FILE`, as rustls-native-certs
/// reads it; the plain port is only the harness's window into what was stored.
///
/// Each instance opens its connections (entries, purges, the purge subscriber: 3) at start,
/// before any request: a TLS handshake on a loaded host outlasts the 50 ms read timeout, and
/// a connect made inside the first lookup was cut off by that lookup's deadline.
#[tokio::test(flavor = "multi_thread")]
async fn l2_over_tls_is_shared_between_instances() {
    let redis = RedisServer::start_tls();
    let backend = start_backend(Duration::ZERO).await;
    let ca = redis.ca_file().display().to_string();
    let opts = SidecacheOptions::new(config(&redis.tls_url()))
        .backend(backend.addr())
        .env("SSL_CERT_FILE", ca);
    let a = Sidecache::start(opts.clone()).await;
    redis.wait_for_tls_clients(3);
    let url = "/api/contractors/7/bundle";
    assert_eq!(get(&a.url(url), &[]).await.x_cache(), "MISS");
    wait_for_l2_entries(&redis, 1);

    let b = Sidecache::start(opts).await;
    redis.wait_for_tls_clients(6);
    assert_eq!(get(&b.url(url), &[]).await.x_cache(), "HIT-L2");
    assert_eq!(backend.stats().hits(url), 1, "one origin fetch over TLS");
    let m = get(&b.admin_url("/metrics"), &[]).await.text();
    assert_eq!(metric(&m, "sidecache_l2_up"), 1.0);
}
