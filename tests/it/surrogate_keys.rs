//! Surrogate keys declared by the origin (`[cache] surrogate_key_header`), end to end with
//! real `sidecache` processes, a scripted origin and a real `redis-server` (and a real Redis
//! Cluster): the keys tag the stored entry beside the route's tags, a tag purge on one
//! instance reaches them in L1 and L2 of every instance, keys past the bounds are dropped
//! and counted, and the header never reaches a client (MISS, HIT-L1, HIT-L2, uncacheable).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::http::{get, metric, Resp};
use support::redis::RedisServer;
use support::redis_cluster::{toml_list, RedisCluster};
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{admin_purge, config_opening, until_x_cache, Sidecache, SidecacheOptions};

const POLL: Duration = Duration::from_secs(15);

/// A route in override mode tagged `item:{id}`, an origin-mode default, the surrogate header
/// `Surrogate-Key`, L1 of `l1` (TOML value) and the `[cache.l2]` lines `l2`.
fn config(l1: &str, l2: &str) -> String {
    config_opening().then(&format!(
        r#"
[[routes]]
name = "item"
match = "GET /api/items/:id"
ttl = "5m"
tags = ["item:{{id}}"]

[cache]
key_host = false
surrogate_key_header = "Surrogate-Key"

[cache.l1]
max_bytes = {l1}

[cache.l2]
{l2}
timeout = "300ms"
write_timeout = "1s"
"#
    ))
}

/// The origin's answer for an item: tagged with `keys`.
fn tagged(body: &str, keys: &str) -> Scripted {
    Scripted::ok(body)
        .header("content-type", "application/json")
        .header("surrogate-key", keys)
}

/// `resp` carries no surrogate key header, whatever answered it.
fn no_keys(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 200, "{what}");
    assert!(
        resp.header("surrogate-key").is_none(),
        "{what} ({}) sent Surrogate-Key: {:?}",
        resp.x_cache(),
        resp.header("surrogate-key")
    );
}

/// GET `path` on `sc` until the answer is not `x_cache` any more; the answer.
async fn until_not(sc: &Sidecache, path: &str, x_cache: &str) -> Resp {
    let deadline = Instant::now() + POLL;
    loop {
        let r = get(&sc.url(path), &[]).await;
        if r.x_cache() != x_cache {
            return r;
        }
        assert!(Instant::now() < deadline, "{path} still {x_cache}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_tag_entries_for_tag_purges_across_instances_and_never_reach_clients() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let opts = SidecacheOptions::new(config(
        "\"8MiB\"",
        &format!("url = \"{}\"\nprefix = \"sk:\"", redis.url()),
    ))
    .backend(origin.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;

    for id in 1..=3 {
        let path = format!("/api/items/{id}");
        let keys = match id {
            3 => "list".to_owned(),
            _ => format!("contractor:42, list  invoice:{id}"),
        };
        origin.script(&path, [tagged("v1", &keys)]);
        origin.script(&path, (0..3).map(|_| tagged("v2", &keys)));
        no_keys(&get(&a.url(&path), &[]).await, "MISS on A");
        let hit = get(&a.url(&path), &[]).await;
        assert_eq!(hit.x_cache(), "HIT-L1");
        no_keys(&hit, "HIT-L1 on A");
        until_x_cache(&b, &path, "HIT-L1").await;
    }
    // B's first answers came from L2 (A's store), and no answer of B's carried the header
    let l2_hit = get(&b.url("/api/items/1"), &[]).await;
    no_keys(&l2_hit, "HIT-L1 on B");
    assert!(
        redis.keys("sk:v2:tag:contractor:42").len() == 1,
        "the origin's key indexes the entries in L2: {:?}",
        redis.keys("sk:v2:tag:*")
    );

    // a purge of the origin's key, on A, reaches both items on B (L1) and in L2
    let before: Vec<usize> = (1..=2)
        .map(|id| origin.hits(&format!("/api/items/{id}")))
        .collect();
    let report = admin_purge(&a, json!({"tag": "contractor:42"})).await;
    assert_eq!(report["removed_local"], 2, "{report}");
    assert_eq!(report["removed_l2"], 2, "{report}");
    for id in 1..=2 {
        let path = format!("/api/items/{id}");
        let r = until_not(&b, &path, "HIT-L1").await;
        assert_eq!(r.x_cache(), "MISS", "{path} refetched on B");
        assert_eq!(r.text(), "v2");
        no_keys(&r, "MISS on B");
        assert_eq!(origin.hits(&path), before[id - 1] + 1, "{path}");
    }
    // the item tagged `list` only was not purged; the route's own tags still work
    assert_eq!(get(&b.url("/api/items/3"), &[]).await.x_cache(), "HIT-L1");
    admin_purge(&b, json!({"tag": "item:3"})).await;
    assert_eq!(until_not(&a, "/api/items/3", "HIT-L1").await.text(), "v2");

    // an HIT-L2 answer (L2 only: a third instance with L1 off) carries no header either
    let c = Sidecache::start(
        SidecacheOptions::new(config(
            "0",
            &format!("url = \"{}\"\nprefix = \"sk:\"", redis.url()),
        ))
        .backend(origin.addr()),
    )
    .await;
    until_x_cache(&c, "/api/items/1", "HIT-L2").await;
    no_keys(&get(&c.url("/api/items/1"), &[]).await, "HIT-L2");

    // an answer that is not stored does not leak it either
    origin.script(
        "/api/private",
        [tagged("p", "secret:1").header("cache-control", "private")],
    );
    no_keys(&get(&a.url("/api/private"), &[]).await, "uncacheable");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_past_the_bounds_are_dropped_and_counted() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let a = Sidecache::start(
        SidecacheOptions::new(config(
            "\"8MiB\"",
            &format!("url = \"{}\"\nprefix = \"skb:\"", redis.url()),
        ))
        .backend(origin.addr()),
    )
    .await;
    // 70 keys of which 64 are taken (k0..k63), and one of 129 bytes before them
    let long = "x".repeat(129);
    let keys: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
    let line = format!("{long} {}", keys.join(" "));
    origin.script("/api/items/7", [tagged("v1", &line), tagged("v2", &line)]);
    no_keys(&get(&a.url("/api/items/7"), &[]).await, "MISS");
    until_x_cache(&a, "/api/items/7", "HIT-L1").await;
    let scrape = get(&a.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        metric(&scrape, "sidecache_surrogate_keys_dropped_total"),
        7.0,
        "1 too long + 6 past 64"
    );
    assert!(
        !scrape.contains("k63"),
        "key names never become metric labels"
    );
    // the dropped keys purge nothing; the 64th kept one purges the entry
    for dropped in ["k64", "k69", long.as_str()] {
        let report = admin_purge(&a, json!({"tag": dropped})).await;
        assert_eq!(report["removed_local"], 0, "{report}");
    }
    assert_eq!(get(&a.url("/api/items/7"), &[]).await.x_cache(), "HIT-L1");
    let report = admin_purge(&a, json!({"tag": "k63"})).await;
    assert_eq!(report["removed_local"], 1, "{report}");
    assert_eq!(report["removed_l2"], 1, "{report}");
    assert_eq!(get(&a.url("/api/items/7"), &[]).await.text(), "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_purge_reaches_the_keys_on_every_shard_of_a_cluster() {
    let cluster = RedisCluster::start(3);
    let origin = ScriptedOrigin::start().await;
    // L1 off: every answer comes from the cluster
    let opts = SidecacheOptions::new(config(
        "0",
        &format!(
            "mode = \"cluster\"\nnodes = {}\nprefix = \"skc:\"",
            toml_list(&cluster.urls())
        ),
    ))
    .backend(origin.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    let ids = 1..=16;
    for id in ids.clone() {
        let path = format!("/api/items/{id}");
        origin.script(&path, [tagged("v1", "contractor:42")]);
        origin.script(&path, (0..3).map(|_| tagged("v2", "contractor:42")));
        no_keys(&get(&a.url(&path), &[]).await, "MISS");
        until_x_cache(&a, &path, "HIT-L2").await;
        no_keys(&get(&b.url(&path), &[]).await, "HIT-L2 on B");
    }
    let report = admin_purge(&a, json!({"tag": "contractor:42"})).await;
    assert_eq!(report["removed_l2"], 16, "{report}");
    for id in ids {
        let path = format!("/api/items/{id}");
        let r = get(&b.url(&path), &[]).await;
        assert_eq!(r.x_cache(), "MISS", "{path}");
        assert_eq!(r.text(), "v2", "{path}");
    }
}
