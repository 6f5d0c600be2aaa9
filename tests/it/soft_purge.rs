//! Soft purges (`POST /admin/purge` with `"soft": true`, `sidecache purge --soft`), end to end
//! with real `sidecache` processes, a scripted origin and a real `redis-server`: what they
//! name is answered stale at once (`X-Cache: STALE`, `Cache-Status: ...; fwd=stale`) while
//! exactly one background fetch per key, fleet-wide, refreshes it; entries whose response
//! forbids stale are purged hard; after `[cache] soft_purge_grace` requests wait for the
//! refresh; soft purges are counted apart from hard ones.
//!
//! `soft_and_hard_purge_of_a_1000_entry_tag_under_load` prints (`--nocapture`) the origin
//! requests a soft purge of a 1,000-entry tag causes under load on two instances, next to a
//! hard purge of the same tag.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::http::{get, metric, Resp};
use support::redis::RedisServer;
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{
    admin_purge, config_opening, run_cli, until_x_cache, Sidecache, SidecacheOptions,
};

const POLL: Duration = Duration::from_secs(15);

/// How long the origin takes over a refresh: every client answered meanwhile was not made
/// to wait for it.
const REFRESH: Duration = Duration::from_millis(600);

/// Items in override mode tagged `item:{id}`, origin-mode `/strict/:id` tagged the same,
/// `Surrogate-Key` read, the grace `grace`, L1 on and L2 on `redis` under `prefix`.
fn config(redis: &RedisServer, prefix: &str, grace: &str) -> String {
    config_opening()
        .upstream(r#"read_timeout = "5s""#)
        .then(&format!(
            r#"
[[routes]]
name = "item"
match = "GET /api/items/:id"
ttl = "5m"
tags = ["item:{{id}}"]

[[routes]]
name = "strict"
match = "GET /strict/:id"
mode = "origin"
tags = ["item:{{id}}"]

[cache]
key_host = false
soft_purge_grace = "{grace}"
surrogate_key_header = "Surrogate-Key"

[cache.l1]
max_bytes = "64MiB"

[cache.l2]
url = "{url}"
prefix = "{prefix}"
timeout = "500ms"
write_timeout = "2s"
"#,
            url = redis.url()
        ))
}

/// `path` answers `first`, then `refreshed` after [`REFRESH`], then (never expected) `"extra"`.
fn script(origin: &ScriptedOrigin, path: &str, first: Scripted, refreshed: Scripted) {
    origin.script(path, [first, refreshed.after(REFRESH)]);
    origin.script(path, (0..20).map(|_| Scripted::ok("extra")));
}

/// GET `path` on `sc` until it answers `body` from L1.
async fn until_fresh(sc: &Sidecache, path: &str, body: &str) -> Resp {
    let deadline = Instant::now() + POLL;
    loop {
        let r = get(&sc.url(path), &[]).await;
        if r.x_cache() == "HIT-L1" && r.text() == body {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {body} from L1 (last {} {})",
            r.x_cache(),
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until Redis holds `n` entries under `prefix`.
async fn until_in_l2(redis: &RedisServer, prefix: &str, n: usize) {
    let deadline = Instant::now() + POLL;
    while redis.keys(&format!("{prefix}v2:e:*")).len() < n {
        assert!(Instant::now() < deadline, "entries never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` concurrent GETs of `path` spread over `instances`; their answers.
async fn burst(instances: &[&Sidecache], path: &str, n: usize) -> Vec<Resp> {
    let urls: Vec<String> = (0..n)
        .map(|i| instances[i % instances.len()].url(path))
        .collect();
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|u| tokio::spawn(async move { get(&u, &[]).await }))
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Every answer of a burst after a soft purge came from the cache at once: the stale copy,
/// or (once the refresh landed) the fresh one; none waited on the origin.
fn from_cache_at_once(answers: &[Resp]) -> usize {
    let mut stale = 0;
    for r in answers {
        assert_eq!(r.status, 200);
        match (r.x_cache(), r.text().as_str()) {
            ("STALE", "v1") => stale += 1,
            ("HIT-L1" | "HIT-L2", "v2") => {}
            (x, body) => panic!("an answer that is neither stale nor refreshed: {x} {body}"),
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_answers_stale_while_one_fetch_refreshes() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let sc = Sidecache::start(
        SidecacheOptions::new(config(&redis, "sp1:", "60s")).backend(origin.addr()),
    )
    .await;
    let path = "/api/items/1";
    script(&origin, path, Scripted::ok("v1"), Scripted::ok("v2"));
    assert_eq!(get(&sc.url(path), &[]).await.x_cache(), "MISS");
    until_x_cache(&sc, path, "HIT-L1").await;
    until_in_l2(&redis, "sp1:", 1).await;

    let report = admin_purge(&sc, json!({"tag": "item:1", "soft": true})).await;
    assert_eq!(report["soft"], true, "{report}");
    assert_eq!(report["removed_local"], 1, "{report}");
    assert_eq!(
        report["removed_l2"], 1,
        "marked stale in Redis too: {report}"
    );
    assert_eq!(
        redis.keys("sp1:v2:e:*").len(),
        1,
        "a soft purge keeps the entry"
    );

    // the stale answer says so
    let stale = get(&sc.url(path), &[]).await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.text(), "v1");
    assert_eq!(
        stale.header("cache-status"),
        Some("sidecache; hit; fwd=stale; detail=stale")
    );
    // 200 concurrent requests while the refresh is on its way: all answered from the cache
    let answers = burst(&[&sc], path, 200).await;
    let stale_n = from_cache_at_once(&answers);
    eprintln!("200 requests during the refresh: {stale_n} stale, the rest refreshed");
    until_fresh(&sc, path, "v2").await;
    assert_eq!(
        origin.hits(path),
        2,
        "the first fill and one refresh, for 201 requests"
    );

    let scrape = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        metric(
            &scrape,
            r#"sidecache_soft_purges_total{kind="tag",source="admin"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"sidecache_purges_total{kind="tag",source="admin"}"#
        ),
        0.0,
        "counted apart from hard purges"
    );
    let stats = get(&sc.admin_url("/admin/stats"), &[]).await.json();
    assert_eq!(stats["purge_counts"]["soft"], 1, "{stats}");
    assert_eq!(stats["purges"][0]["mode"], "soft", "{stats}");

    // the CLI says --soft; a hard purge afterwards removes as before
    let admin = format!("http://{}", sc.admin_addr());
    let out = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "purge",
                "--admin",
                &admin,
                "--url",
                "/api/items/1",
                "--soft",
            ],
            &[],
        )
    })
    .await
    .expect("cli task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"soft\":true"));
    assert_eq!(get(&sc.url(path), &[]).await.x_cache(), "STALE");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_that_forbids_stale_is_purged_hard() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let sc = Sidecache::start(
        SidecacheOptions::new(config(&redis, "sp2:", "60s")).backend(origin.addr()),
    )
    .await;
    let cc = |body: &str, cc: &str| Scripted::ok(body).header("cache-control", cc);
    // origin mode: must-revalidate forbids stale, plain max-age does not
    script(
        &origin,
        "/strict/1",
        cc("v1", "max-age=300, must-revalidate"),
        cc("v2", "max-age=300, must-revalidate"),
    );
    script(
        &origin,
        "/strict/2",
        cc("v1", "max-age=300"),
        cc("v2", "max-age=300"),
    );
    for path in ["/strict/1", "/strict/2"] {
        get(&sc.url(path), &[]).await;
        until_x_cache(&sc, path, "HIT-L1").await;
    }
    until_in_l2(&redis, "sp2:", 2).await;
    let report = admin_purge(&sc, json!({"prefix": "/strict/", "soft": true})).await;
    assert_eq!(report["removed_l2"], 2, "{report}");
    assert_eq!(
        redis.keys("sp2:v2:e:*").len(),
        1,
        "the must-revalidate entry was deleted from Redis, the other kept"
    );
    let hard = get(&sc.url("/strict/1"), &[]).await;
    assert_eq!(hard.x_cache(), "MISS", "must-revalidate: purged hard");
    assert_eq!(hard.text(), "v2");
    assert_eq!(get(&sc.url("/strict/2"), &[]).await.x_cache(), "STALE");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_grace_requests_wait_for_the_refresh() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let sc = Sidecache::start(
        SidecacheOptions::new(config(&redis, "sp3:", "1s")).backend(origin.addr()),
    )
    .await;
    let path = "/api/items/3";
    origin.script(path, [Scripted::ok("v1"), Scripted::ok("v2")]);
    get(&sc.url(path), &[]).await;
    until_x_cache(&sc, path, "HIT-L1").await;
    admin_purge(&sc, json!({"url": path, "soft": true})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = get(&sc.url(path), &[]).await;
    assert_ne!(r.x_cache(), "STALE", "past the grace");
    assert_eq!(r.text(), "v2", "the answer waited for the refresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_crosses_instances_and_refreshes_once_for_the_fleet() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let opts = SidecacheOptions::new(config(&redis, "sp4:", "60s")).backend(origin.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    let path = "/api/items/4";
    script(&origin, path, Scripted::ok("v1"), Scripted::ok("v2"));
    get(&a.url(path), &[]).await;
    until_x_cache(&a, path, "HIT-L1").await;
    until_in_l2(&redis, "sp4:", 1).await;
    until_x_cache(&b, path, "HIT-L1").await;
    assert_eq!(origin.hits(path), 1);

    admin_purge(&a, json!({"tag": "item:4", "soft": true})).await;
    // B hears of it (broadcast) and serves its own copy stale
    let deadline = Instant::now() + POLL;
    loop {
        let r = get(&b.url(path), &[]).await;
        if r.x_cache() == "STALE" {
            assert_eq!(r.text(), "v1");
            break;
        }
        assert_eq!(r.x_cache(), "HIT-L1");
        assert!(Instant::now() < deadline, "B never heard of the soft purge");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // both instances under 200 concurrent requests: one refresh for the fleet
    let answers = burst(&[&a, &b], path, 200).await;
    from_cache_at_once(&answers);
    until_fresh(&a, path, "v2").await;
    until_fresh(&b, path, "v2").await;
    assert_eq!(
        origin.hits(path),
        2,
        "the first fill and one refresh for two instances"
    );

    // a third instance with L1 off sees the soft mark in Redis: stale, then refreshed
    admin_purge(&b, json!({"url": path, "soft": true})).await;
    let c = Sidecache::start(
        SidecacheOptions::new(
            config(&redis, "sp4:", "60s").replace("max_bytes = \"64MiB\"", "max_bytes = 0"),
        )
        .backend(origin.addr()),
    )
    .await;
    let r = get(&c.url(path), &[]).await;
    assert_eq!(r.x_cache(), "STALE", "the soft mark travels in L2");
}

/// Origin requests caused by purging a tag of 1,000 entries while two instances serve them
/// under load: softly, then (after a refill) hard. Printed, and bounded: the soft purge
/// costs one fetch per key for the fleet and no client waits on the origin.
#[tokio::test(flavor = "multi_thread")]
async fn soft_and_hard_purge_of_a_1000_entry_tag_under_load() {
    const ENTRIES: usize = 1000;
    const CLIENTS: usize = 16;
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let opts = SidecacheOptions::new(config(&redis, "sp5:", "60s")).backend(origin.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    let path = |i: usize| format!("/bulk/{i}");
    let answer = |round: usize| {
        Scripted::ok(&format!("r{round}"))
            .header("cache-control", "max-age=600")
            .header("surrogate-key", "bulk")
            .after(Duration::from_millis(50))
    };
    for i in 0..ENTRIES {
        origin.script(&path(i), (0..8).map(answer));
    }
    let total = || (0..ENTRIES).map(|i| origin.hits(&path(i))).sum::<usize>();
    let fill = || async {
        for i in 0..ENTRIES {
            get(&a.url(&path(i)), &[]).await;
        }
        until_in_l2(&redis, "sp5:", ENTRIES).await;
        for i in 0..ENTRIES {
            get(&b.url(&path(i)), &[]).await;
        }
    };
    fill().await;

    for soft in [true, false] {
        // load: each client walks the tag's urls from its own start, on both instances
        let stop = Arc::new(AtomicBool::new(false));
        let (waited, served) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let base = if c % 2 == 0 { a.url("") } else { b.url("") };
            let (stop, waited, served) = (stop.clone(), waited.clone(), served.clone());
            clients.push(tokio::spawn(async move {
                let mut i = c * ENTRIES / CLIENTS;
                while !stop.load(Ordering::Relaxed) {
                    let r = get(&format!("{base}/bulk/{i}"), &[]).await;
                    served.fetch_add(1, Ordering::Relaxed);
                    if matches!(r.x_cache(), "MISS" | "REVALIDATED") {
                        waited.fetch_add(1, Ordering::Relaxed);
                    }
                    i = (i + 1) % ENTRIES;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = total();
        let served_before = served.load(Ordering::Relaxed);
        let report = admin_purge(&a, json!({"tag": "bulk", "soft": soft})).await;
        let purged = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client");
        }
        let caused = total() - before;
        let served_after = served.load(Ordering::Relaxed) - served_before;
        let mode = if soft { "soft" } else { "hard" };
        eprintln!(
            "{mode} purge of a {ENTRIES}-entry tag (L1 {} / L2 {} on A), {CLIENTS} clients on 2 instances for {:?}: \
             {caused} origin requests, {} of {served_after} client answers waited on the origin",
            report["removed_local"],
            report["removed_l2"],
            purged.elapsed(),
            waited.load(Ordering::Relaxed),
        );
        if soft {
            assert!(
                caused <= ENTRIES,
                "a soft purge costs at most one fetch per key for the fleet: {caused}"
            );
            assert_eq!(waited.load(Ordering::Relaxed), 0, "no client waited");
            // refill what the load did not reach, for the hard round
            fill().await;
        }
    }
}
