//! Purges across instances, end to end: one real `redis-server`, the stand-in backend and two
//! real `sidecache` processes (A and B) with the same config. A purge issued on A (admin API
//! by url, prefix and tag, invalidate-on-write, the `sidecache purge` CLI) must drop B's L1
//! copy; after a Redis restart B resubscribes and clears its L1 (the gap rule).
//!
//! Purges also win over origin fetches that began before them: a fetch the stand-in backend
//! answers after the purge (by admin API, broadcast, or the end of an until-invalidated
//! session) is stored in neither tier of either instance.
//!
//! Propagation times are printed (`--nocapture`), asserted only against a generous bound.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::backend::start_backend;
use support::http::{get, metric, request, Resp};
use support::redis::RedisServer;
use support::sidecache::{admin_purge, config_opening, run_cli, Sidecache, SidecacheOptions};

/// How long a purge may take to reach the other instance before the test fails (the target
/// is 100 ms; this is a shared, noisy box).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

/// Bound for warming, resubscribing and other polls.
const POLL: Duration = Duration::from_secs(15);

/// The routes and the rest, after [`config_opening`].
const ROUTES: &str = r#"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"
tags = ["contractor:{id}"]

[[routes]]
name = "concierge_state"
match = "GET /api/concierge/sessions/:id/state"
ttl = "until-invalidated"
invalidate_on = ["POST /api/concierge/sessions/:id/end"]

[cache.l1]
max_bytes = "8MiB"

[cache.l2]
url = "{redis}"
prefix = "purgetest:"
timeout = "250ms"
write_timeout = "1s"
breaker_failures = 3
breaker_cooldown = "300ms"
"#;

struct Pair {
    backend: sidecache::demo::Backend,
    a: Sidecache,
    b: Sidecache,
}

async fn start_pair(redis: &RedisServer) -> Pair {
    let backend = start_backend(Duration::ZERO).await;
    let config = config_opening()
        .upstream(r#"connect_timeout = "300ms""#)
        .upstream(r#"read_timeout = "5s""#)
        .then(ROUTES)
        .replace("{redis}", &redis.url());
    let opts = SidecacheOptions::new(config).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    Pair { backend, a, b }
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

/// Warm `paths` on both instances (A first, so B may get them from L2).
async fn warm_both(p: &Pair, paths: &[&str]) {
    for path in paths {
        warm(&p.a, path).await;
        warm(&p.b, path).await;
    }
}

/// Poll `path` on `sc` until it is no longer served from L1; returns how long that took.
async fn gone_from_l1(sc: &Sidecache, path: &str, since: Instant, what: &str) -> Duration {
    loop {
        let r = get(&sc.url(path), &[]).await;
        if r.x_cache() != "HIT-L1" {
            let took = since.elapsed();
            eprintln!(
                "{what}: {path} left the other instance's L1 after {took:?} (now {})",
                r.x_cache()
            );
            return took;
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "{what}: {path} still HIT-L1 on B after {PROPAGATION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purges_on_one_instance_reach_the_other() {
    let redis = RedisServer::start();
    let p = start_pair(&redis).await;

    for (what, body, path) in [
        (
            "admin purge by url",
            json!({"url": "/api/contractors/1/bundle"}),
            "/api/contractors/1/bundle",
        ),
        (
            "admin purge by prefix",
            json!({"prefix": "/api/contractors/2/"}),
            "/api/contractors/2/bundle",
        ),
        (
            "admin purge by tag",
            json!({"tag": "contractor:3"}),
            "/api/contractors/3/bundle",
        ),
    ] {
        warm_both(&p, &[path, "/api/contractors/99/bundle"]).await;
        let t = Instant::now();
        let report = admin_purge(&p.a, body.clone()).await;
        assert_eq!(report["broadcast"], true, "{what}: {report}");
        assert_eq!(report["l2_ok"], true, "{what}: {report}");
        assert_eq!(report["removed_local"], 1, "{what}: {report}");
        gone_from_l1(&p.b, path, t, what).await;
        let a_after = get(&p.a.url(path), &[]).await;
        assert_ne!(a_after.x_cache(), "HIT-L1", "{what}: purged on A too");
    }
    // unrelated entries stay in B's L1
    assert_eq!(
        get(&p.b.url("/api/contractors/99/bundle"), &[])
            .await
            .x_cache(),
        "HIT-L1"
    );

    // invalidate-on-write: ending the session on A ends its cached state on B
    let state = "/api/concierge/sessions/s1/state";
    warm_both(&p, &[state]).await;
    let t = Instant::now();
    let end = request(
        "POST",
        &p.a.url("/api/concierge/sessions/s1/end"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(end.status, 200);
    gone_from_l1(&p.b, state, t, "invalidate-on-write").await;

    // the CLI against A's admin
    let path = "/api/contractors/4/bundle";
    warm_both(&p, &[path]).await;
    let admin = format!("http://{}", p.a.admin_addr());
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        run_cli(&["purge", "--admin", &admin, "--tag", "contractor:4"], &[])
    })
    .await
    .expect("cli task");
    assert!(
        out.status.success(),
        "sidecache purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"broadcast\":true"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    gone_from_l1(&p.b, path, t, "sidecache purge CLI").await;

    // The status page's last purges: on A the CLI's, on B the same purge received from A.
    let stats = |sc: &Sidecache| {
        let url = sc.admin_url("/admin/stats");
        async move { get(&url, &[]).await.json() }
    };
    let a_stats = stats(&p.a).await;
    let newest = &a_stats["purges"][0];
    assert_eq!(
        (&newest["kind"], &newest["target"], &newest["source"]),
        (&json!("tag"), &json!("contractor:4"), &json!("cli"))
    );
    assert_eq!(newest["instance"], a_stats["instance"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b_stats = stats(&p.b).await;
        let newest = &b_stats["purges"][0];
        if newest["target"] == "contractor:4" {
            assert_eq!(newest["source"], "remote");
            assert_eq!(newest["instance"], a_stats["instance"], "the sender, not B");
            assert_ne!(b_stats["instance"], a_stats["instance"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B lists no remote purge: {b_stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_redis_restart_the_subscription_returns_and_l1_is_cleared() {
    let mut redis = RedisServer::start();
    let p = start_pair(&redis).await;
    let before = "/api/contractors/10/bundle";
    warm_both(&p, &[before]).await;

    redis.kill();
    // B keeps serving what it has from L1 while Redis is away
    assert_eq!(get(&p.b.url(before), &[]).await.x_cache(), "HIT-L1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();

    // B notices the gap once it resubscribes
    let deadline = Instant::now() + POLL;
    while gaps(&p.b).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "B did not resubscribe after the Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(&p.b.url(before), &[]).await;
    assert_ne!(
        r.x_cache(),
        "HIT-L1",
        "an entry B held before the outage is not served from L1 after the gap"
    );
    eprintln!("after the gap B served {before} as {}", r.x_cache());

    // and purges on A reach B again (A's breaker may need a moment: retry until broadcast)
    let path = "/api/contractors/11/bundle";
    warm_both(&p, &[path]).await;
    let deadline = Instant::now() + POLL;
    let t = loop {
        let t = Instant::now();
        let report = admin_purge(&p.a, json!({"url": path})).await;
        if report["broadcast"] == true {
            break t;
        }
        assert!(Instant::now() < deadline, "A never broadcast: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gone_from_l1(&p.b, path, t, "purge after the Redis restart").await;
}

/// `sidecache_pubsub_gaps_total` as B's admin reports it.
async fn gaps(sc: &Sidecache) -> f64 {
    let text = get(&sc.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("sidecache_pubsub_gaps_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// How long the backend takes to answer the fetches held in flight across a purge.
const SLOW_ORIGIN: Duration = Duration::from_millis(1500);

/// GET `path` on `sc` in the background, once the backend is slow; returns when the request
/// has reached the backend (and makes the backend fast again for everything after it).
async fn slow_fetch(p: &Pair, sc: &Sidecache, path: &str) -> tokio::task::JoinHandle<Resp> {
    let seen = p.backend.stats().hits(path);
    p.backend.set_delay(SLOW_ORIGIN);
    let url = sc.url(path);
    let fetch = tokio::spawn(async move { get(&url, &[]).await });
    let deadline = Instant::now() + POLL;
    while p.backend.stats().hits(path) == seen {
        assert!(
            Instant::now() < deadline,
            "GET {path} never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.backend.set_delay(Duration::ZERO);
    fetch
}

/// `sidecache_purges_total{kind,source}` on `sc`.
async fn purges_applied(sc: &Sidecache, kind: &str, source: &str) -> f64 {
    let scrape = get(&sc.admin_url("/metrics"), &[]).await.text();
    metric(
        &scrape,
        &format!("sidecache_purges_total{{kind=\"{kind}\",source=\"{source}\"}}"),
    )
}

/// Wait until `sc` has applied `n` more purges of `kind` from `source` than `before`.
async fn applied_since(sc: &Sidecache, kind: &str, source: &str, before: f64, n: f64) {
    let deadline = Instant::now() + POLL;
    while purges_applied(sc, kind, source).await < before + n {
        assert!(
            Instant::now() < deadline,
            "{kind} purges from {source} not applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The backend's per-fetch generation in a JSON body.
fn generation(r: &Resp) -> u64 {
    r.json()["generation"]
        .as_u64()
        .expect("a generation in the body")
}

/// (c) An origin fetch that began before a purge and answers after it is not stored, in
/// either tier: purged on the fetching instance by url, and on the other one by tag.
#[tokio::test(flavor = "multi_thread")]
async fn an_origin_fetch_answering_after_a_purge_is_not_stored() {
    let redis = RedisServer::start();
    let p = start_pair(&redis).await;
    for (what, on_a, body, path) in [
        (
            "url purge on the fetching instance",
            true,
            json!({"url": "/api/contractors/20/bundle"}),
            "/api/contractors/20/bundle",
        ),
        (
            "tag purge on the other instance",
            false,
            json!({"tag": "contractor:21"}),
            "/api/contractors/21/bundle",
        ),
    ] {
        let (kind, remote_before) = match on_a {
            true => ("url", 0.0),
            false => ("tag", purges_applied(&p.a, "tag", "remote").await),
        };
        let fetch = slow_fetch(&p, &p.a, path).await;
        let report = admin_purge(if on_a { &p.a } else { &p.b }, body).await;
        assert_eq!(report["l2_ok"], true, "{what}: {report}");
        if !on_a {
            applied_since(&p.a, kind, "remote", remote_before, 1.0).await;
        }
        assert!(
            !fetch.is_finished(),
            "{what}: the origin answered before the purge was applied; the race was not held"
        );
        let fetched = fetch.await.expect("fetch task");
        assert_eq!((fetched.status, fetched.x_cache()), (200, "MISS"), "{what}");

        let a = get(&p.a.url(path), &[]).await;
        assert_eq!(
            a.x_cache(),
            "MISS",
            "{what}: A stored what it fetched before the purge"
        );
        let b = get(&p.b.url(path), &[]).await;
        assert!(
            generation(&a) > generation(&fetched) && generation(&b) > generation(&fetched),
            "{what}: generation {} (fetched before the purge) served again: A {} {}, B {} {}",
            generation(&fetched),
            a.x_cache(),
            generation(&a),
            b.x_cache(),
            generation(&b)
        );
    }
}

/// An until-invalidated session state is not served after its session ended, from either
/// tier of either instance: neither the copies cached before the end (`s8`), nor a fetch of
/// the state that was in flight when it ended (`s9`, on the other instance).
#[tokio::test(flavor = "multi_thread")]
async fn an_until_invalidated_session_is_never_served_after_it_ended() {
    let redis = RedisServer::start();
    let p = start_pair(&redis).await;
    let (cached, in_flight) = (
        "/api/concierge/sessions/s8/state",
        "/api/concierge/sessions/s9/state",
    );
    warm_both(&p, &[cached]).await;
    let cached_generation = generation(&get(&p.b.url(cached), &[]).await);
    let fetch = slow_fetch(&p, &p.b, in_flight).await;

    let remote_before = purges_applied(&p.b, "url", "remote").await;
    let local_before = purges_applied(&p.a, "url", "write").await;
    for id in ["s8", "s9"] {
        let url = p.a.url(&format!("/api/concierge/sessions/{id}/end"));
        let end = request("POST", &url, &[], Bytes::new()).await;
        assert_eq!(end.status, 200);
    }
    // each end purges two urls (its own and the state's) and two query prefixes: wait until
    // A has run the L2 part of the url purges and B has received them
    applied_since(&p.a, "url", "write", local_before, 4.0).await;
    applied_since(&p.b, "url", "remote", remote_before, 4.0).await;
    assert!(
        !fetch.is_finished(),
        "the origin answered before the session ended; the race was not held"
    );
    let fetched = fetch.await.expect("fetch task");
    assert_eq!(fetched.status, 200);

    let b = get(&p.b.url(in_flight), &[]).await;
    assert_eq!(
        b.x_cache(),
        "MISS",
        "B stored the state it fetched before the session ended"
    );
    assert!(generation(&b) > generation(&fetched));
    let a = get(&p.a.url(in_flight), &[]).await;
    assert!(generation(&a) > generation(&fetched), "A: {}", a.x_cache());
    for sc in [&p.a, &p.b] {
        let r = get(&sc.url(cached), &[]).await;
        assert!(
            generation(&r) > cached_generation,
            "the state cached before the end was served ({})",
            r.x_cache()
        );
    }
}
