//! One origin request per key, for any arrival pattern: 100 GETs of one new key arriving
//! spread at random over 0.5 s at an origin that answers in 300 ms, with Redis L2 (the
//! production set-up), must cost the origin exactly one request, on one instance and across
//! two with `cache.l2.fill_lock = true` (one Redis, and a 3-master cluster).
//!
//! The spread is what the older tests missed: requests that arrive while the fill is in
//! flight wait on the lock, but one whose Redis read is on the wire while the fill finishes
//! comes back after the lock was released, and must not start a second fetch.
//!
//! A purge in the middle of a stampede (a write to the key while 40 requests wait on its
//! fill) costs one more fetch, not one per waiter: the fill that began before the write is
//! refused, and the next one, which began after it, is stored. Purges in a row cost one
//! fetch each, however many waiters are left.
//!
//! `SIDECACHE_STAMPEDE_ROUNDS` (default 8) sets the rounds per scenario and
//! `SIDECACHE_STAMPEDE_SEED` the first seed (default from the clock, printed); each round
//! uses its own key and arrival pattern (seed + round), and a failure names the round's
//! seed. The closing figures of issue 19 come from 1,000 rounds.

use crate::support;

use std::time::Duration;

use support::backend::{start_backend, Backend};
use support::http::{get, try_get, Resp};
use support::redis::RedisServer;
use support::redis_cluster::{bundle, l2_config, toml_list, RedisCluster};
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{config_opening, Sidecache, SidecacheOptions};

/// Requests per round.
const REQUESTS: usize = 100;

/// Arrivals are spread over this window.
const SPREAD_MS: u64 = 500;

/// Rounds run at once (each on its own key).
const PARALLEL_ROUNDS: u64 = 4;

fn rounds() -> u64 {
    std::env::var("SIDECACHE_STAMPEDE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

fn first_seed() -> u64 {
    let seed = std::env::var("SIDECACHE_STAMPEDE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..1_000_000));
    eprintln!("stampede: SIDECACHE_STAMPEDE_SEED={seed}");
    seed
}

fn options(l2: &str, fill_lock: bool, backend: &Backend) -> SidecacheOptions {
    let config = l2_config("\"64MiB\"", &format!("{l2}\nfill_lock = {fill_lock}"))
        .replace("[cache]\n", "[cache]\nlock_timeout = \"5s\"\n");
    SidecacheOptions::new(config).backend(backend.addr())
}

/// One round: [`REQUESTS`] GETs of `path`, arriving at random over [`SPREAD_MS`] at the
/// instances (`bases`, `http://IP:PORT`) in turn. Every answer must be a 200. Returns the
/// X-Cache values seen.
async fn round(bases: Vec<String>, path: String, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let url = format!("{}{path}", bases[i % bases.len()]);
            let at = Duration::from_millis(rng.u64(..=SPREAD_MS));
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                try_get(&url, &[]).await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        let r = t.await.expect("request task");
        let r = r.unwrap_or_else(|e| panic!("seed {seed}: request failed: {e}"));
        assert_eq!(r.status, 200, "seed {seed}: {}", r.text());
        seen.push(r.x_cache().to_owned());
    }
    seen
}

/// Runs [`rounds`] rounds, [`PARALLEL_ROUNDS`] at a time (each a task of its own, on its
/// own key), and asserts one origin request per round.
async fn every_round_fetches_once(instances: &[&Sidecache], backend: &Backend, base_id: u64) {
    // the promise is for a reachable Redis: wait until each instance's L2 answers (its
    // connections are opened in the background at start; on a loaded box a cluster's take a
    // while), or the first rounds would test the degraded bound (one fetch per instance)
    for sc in instances {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while get(&sc.url("/ready"), &[]).await.status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "an instance never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let seed0 = first_seed();
    let bases: Vec<String> = instances.iter().map(|sc| sc.url("")).collect();
    let total = rounds();
    let mut next = 0;
    while next < total {
        let batch: Vec<u64> = (next..total.min(next + PARALLEL_ROUNDS)).collect();
        let running: Vec<_> = batch
            .iter()
            .map(|&r| tokio::spawn(round(bases.clone(), bundle(base_id + r), seed0 + r)))
            .collect();
        for (&r, task) in batch.iter().zip(running) {
            let seen = task.await.expect("round task");
            let origin = backend.stats().hits(&bundle(base_id + r));
            let misses = seen.iter().filter(|x| *x == "MISS").count();
            assert_eq!(
                origin,
                1,
                "round {r} (SIDECACHE_STAMPEDE_SEED={} SIDECACHE_STAMPEDE_ROUNDS=1): \
                 {origin} origin requests, {misses} MISS answers",
                seed0 + r
            );
        }
        next += batch.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_with_l2_fetches_each_key_once_for_any_arrival_spread() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::from_millis(300)).await;
    let l2 = format!("url = {:?}\nprefix = \"st:\"", redis.url());
    let a = Sidecache::start(options(&l2, false, &backend)).await;
    every_round_fetches_once(&[&a], &backend, 1_000).await;
    let b = Sidecache::start(options(&l2.replace("st:", "st2:"), true, &backend)).await;
    every_round_fetches_once(&[&b], &backend, 2_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_the_fill_lock_fetch_each_key_once_on_one_redis() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::from_millis(300)).await;
    let l2 = format!("url = {:?}\nprefix = \"st:\"", redis.url());
    let a = Sidecache::start(options(&l2, true, &backend)).await;
    let b = Sidecache::start(options(&l2, true, &backend)).await;
    every_round_fetches_once(&[&a, &b], &backend, 3_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_the_fill_lock_fetch_each_key_once_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let backend = start_backend(Duration::from_millis(300)).await;
    let l2 = format!(
        "mode = \"cluster\"\nnodes = {}\nprefix = \"st:\"",
        toml_list(&cluster.urls())
    );
    let a = Sidecache::start(options(&l2, true, &backend)).await;
    let b = Sidecache::start(options(&l2, true, &backend)).await;
    every_round_fetches_once(&[&a, &b], &backend, 4_000).await;
}

/// `n` GETs of `url` sent at once; [`all_ok`] awaits them.
fn gets_at_once(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Result<Resp, String>>> {
    (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { try_get(&url, &[]).await })
        })
        .collect()
}

/// Await `gets`; every one must answer 200.
async fn all_ok(gets: Vec<tokio::task::JoinHandle<Result<Resp, String>>>) {
    for g in gets {
        let r = g.await.expect("GET task").expect("GET");
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// 40 GETs of one new key at once, and a write that purges it while the first fill is
/// under way: that fill is refused (it may hold the old version) and the waiters get the
/// next, which began after the write: two origin fetches in all, not one per waiter (each
/// refused in turn, as every waiter's work had begun before the write).
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_during_a_stampede_costs_one_more_fetch_not_one_per_waiter() {
    let redis = RedisServer::start();
    for (prefix, fill_lock) in [("pw:", false), ("pwl:", true)] {
        let origin = ScriptedOrigin::start().await;
        let path = "/items/1";
        origin.script(
            path,
            std::iter::once(Scripted::ok("v1").after(Duration::from_millis(600)))
                .chain(std::iter::once(Scripted::ok("written")))
                .chain((0..40).map(|_| Scripted::ok("v2").after(Duration::from_millis(200)))),
        );
        let config = config_opening().then(&format!(
            r#"
[[routes]]
name = "items"
match = "GET /items/:id"
ttl = "5m"

[cache]
lock_timeout = "5s"

[cache.l1]
max_bytes = "8MiB"

[cache.l2]
url = {:?}
prefix = {prefix:?}
fill_lock = {fill_lock}
timeout = "300ms"
write_timeout = "1s"
"#,
            redis.url()
        ));
        let sc = Sidecache::start(SidecacheOptions::new(config).backend(origin.addr())).await;
        let url = sc.url(path);
        let gets = gets_at_once(&url, 40);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let write =
            support::http::request("PUT", &url, &[], bytes::Bytes::from_static(b"{}")).await;
        assert_eq!(write.status, 200, "{}", write.text());
        all_ok(gets).await;
        let fetches = origin
            .seen(path)
            .iter()
            .filter(|r| r.method == "GET")
            .count();
        assert!(
            fetches <= 2,
            "fill_lock = {fill_lock}: {fetches} origin fetches for 40 GETs and one write"
        );
    }
}

/// 40 GETs of one new key at once while three purges of it land one after another, each in
/// the middle of a fill: every fill but the last is refused, and each time the waiters
/// compete again, so one of them fetches. Four origin fetches in all, one per fill window.
/// (pingora lets a waiter compete at most twice by default, then sends it to the origin with
/// the cache off: after the third refused fill every waiter left fetched at once, 38 fetches
/// in one window. The wait stays bounded by `cache.lock_timeout`, which pingora counts
/// across the retries.)
#[tokio::test(flavor = "multi_thread")]
async fn purges_in_a_row_during_a_stampede_cost_one_fetch_each_not_one_per_waiter() {
    let origin = ScriptedOrigin::start().await;
    let path = "/items/2";
    origin.script(
        path,
        (0..40).map(|i| Scripted::ok(&format!("v{i}")).after(Duration::from_millis(400))),
    );
    let config = config_opening().then(
        r#"
[[routes]]
name = "items"
match = "GET /items/:id"
ttl = "5m"

[cache]
lock_timeout = "10s"

[cache.l1]
max_bytes = "8MiB"
"#,
    );
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(origin.addr())).await;
    let url = sc.url(path);
    let gets = gets_at_once(&url, 40);
    let fetches = || origin.seen(path).len();
    for fill in 1..=3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fetches() < fill {
            assert!(
                std::time::Instant::now() < deadline,
                "fill {fill} never reached the origin"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // the fill is under way (it answers after 400 ms): this purge refuses its store
        tokio::time::sleep(Duration::from_millis(100)).await;
        support::sidecache::admin_purge(&sc, serde_json::json!({ "url": path })).await;
    }
    all_ok(gets).await;
    let fetches = fetches();
    assert!(
        fetches <= 5,
        "{fetches} origin fetches for 40 GETs and 3 purges: the waiters left after the \
         third refused fill each fetched"
    );
}
