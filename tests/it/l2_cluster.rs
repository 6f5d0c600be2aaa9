//! L2 on a real 3-master Redis Cluster, end to end with real `sidecache` processes: hits
//! across instances, purges by tag and by prefix reaching every shard (also on clusters of
//! Redis 6.2 and of Valkey), `ASK` and `MOVED` followed while a slot moves between masters,
//! and a master killed under traffic without a single client error.

use crate::flavour_tests;
use crate::support;

use std::time::Duration;

use serde_json::json;
use support::backend::start_backend;
use support::http::get;
use support::redis::Flavour;
use support::redis_cluster::{bundle, l2_config, poll, toml_list, RedisCluster};
use support::sidecache::{admin_purge, until_x_cache, Sidecache, SidecacheOptions};
use support::traffic::Traffic;

const POLL: Duration = Duration::from_secs(15);

/// L1 is off (`max_bytes = 0`) so every lookup goes to the cluster.
fn config(nodes: &[String]) -> String {
    l2_config(
        "0",
        &format!(
            "mode = \"cluster\"\nnodes = {}\nprefix = \"ct:\"",
            toml_list(nodes)
        ),
    )
}

/// An [`L2Store`] of its own on `cluster`, its keys under `prefix`.
fn cluster_store(cluster: &RedisCluster, prefix: &str) -> sidecache::cache::storage::L2Store {
    use sidecache::config::{L2Mode, Secret};
    let mut cfg = support::storage::cache_config(0, Some(String::new()), prefix)
        .l2
        .expect("l2");
    cfg.mode = L2Mode::Cluster;
    cfg.nodes = cluster.urls().into_iter().map(Secret::new).collect();
    sidecache::cache::storage::L2Store::new(&cfg)
}

/// Request `ids` on `a` and wait until each is a HIT-L2 (its write landed).
async fn fill(a: &Sidecache, ids: impl Iterator<Item = u64>) {
    for id in ids {
        assert_eq!(get(&a.url(&bundle(id)), &[]).await.status, 200);
        until_x_cache(a, &bundle(id), "HIT-L2").await;
    }
}

flavour_tests!(hits_cross_instances_and_purges_reach_every_shard_on:
    hits_cross_instances_and_purges_reach_every_shard,
    hits_cross_instances_and_purges_reach_every_shard_on_redis_6_2,
    hits_cross_instances_and_purges_reach_every_shard_on_valkey);

/// On a cluster of `flavour`'s servers: entries spread over the masters, another instance's
/// HIT-L2, purges by tag and prefix reaching every shard, and the server named in the stats.
async fn hits_cross_instances_and_purges_reach_every_shard_on(flavour: Flavour) {
    let cluster = RedisCluster::start_flavour(flavour, 3);
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&cluster.urls())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;

    // the operator's view names the deployment: /admin/stats shows the mode and the seeds
    let stats = get(&a.admin_url("/admin/stats"), &[]).await.json();
    assert_eq!(stats["l2"]["mode"], json!("cluster"), "{stats}");
    assert_eq!(stats["l2"]["cluster_seeds"], json!(3), "{stats}");

    fill(&a, 1..=24).await;
    let stats = get(&a.admin_url("/admin/stats"), &[]).await.json();
    let (name, version) = flavour.reported();
    let server = &stats["l2"]["server"];
    assert_eq!(server["name"], json!(name), "{server}");
    assert!(
        server["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(version)),
        "{server}"
    );
    // the entries are spread over the masters
    let holding = (0..3)
        .filter(|i| {
            let k: Vec<String> = redis::cmd("KEYS")
                .arg("ct:*:e:*")
                .query(&mut cluster.conn(*i))
                .expect("KEYS");
            !k.is_empty()
        })
        .count();
    assert!(holding >= 2, "entries on {holding} master(s) only");
    for id in 1..=24 {
        assert_eq!(
            get(&b.url(&bundle(id)), &[]).await.x_cache(),
            "HIT-L2",
            "id {id}"
        );
    }

    // by tag: only that contractor's entry goes, from whichever shard holds it
    let report = admin_purge(&b, json!({"tag": "contractor:7"})).await;
    assert_eq!(report["removed_l2"], json!(1), "{report}");
    assert_eq!(get(&a.url(&bundle(7)), &[]).await.x_cache(), "MISS");
    assert_eq!(get(&a.url(&bundle(8)), &[]).await.x_cache(), "HIT-L2");

    // by prefix: /api/contractors/1... is 1, 10-19 (and 7's refill is untouched)
    let before = cluster.keys("ct:*:e:*").len();
    let report = admin_purge(&a, json!({"prefix": "/api/contractors/1"})).await;
    assert_eq!(report["removed_l2"], json!(11), "{report}");
    assert_eq!(cluster.keys("ct:*:e:*").len(), before - 11);
    for id in [1, 10, 15, 19] {
        assert_eq!(
            get(&b.url(&bundle(id)), &[]).await.x_cache(),
            "MISS",
            "id {id}"
        );
    }
    for id in [2, 20, 24] {
        assert_eq!(
            get(&b.url(&bundle(id)), &[]).await.x_cache(),
            "HIT-L2",
            "id {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_and_moved_are_followed_while_a_slot_moves() {
    let cluster = RedisCluster::start(3);
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&cluster.urls())).backend(backend.addr());
    let a = Sidecache::start(opts).await;
    fill(&a, 1..=1).await;
    let keys = cluster.keys("ct:*:e:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let slot = cluster.slot_of(&keys[0]);
    let to = (cluster.owner_of(slot) + 1) % 3;

    // keys moved, slot still "migrating": the old owner answers ASK
    cluster.begin_migration(slot, to);
    let r = get(&a.url(&bundle(1)), &[]).await;
    assert_eq!(
        (r.status, r.x_cache()),
        (200, "HIT-L2"),
        "during the migration (ASK)"
    );
    // the new owner is known everywhere: the client's old map gets MOVED
    cluster.finish_migration(slot, to);
    let r = get(&a.url(&bundle(1)), &[]).await;
    assert_eq!(
        (r.status, r.x_cache()),
        (200, "HIT-L2"),
        "after the migration (MOVED)"
    );
    // a purge and a store in the moved slot work too
    admin_purge(&a, json!({"url": bundle(1)})).await;
    assert_eq!(get(&a.url(&bundle(1)), &[]).await.x_cache(), "MISS");
    until_x_cache(&a, &bundle(1), "HIT-L2").await;
}

// more workers than cores: the harness's process control blocks one while traffic runs
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_under_traffic_causes_no_client_errors() {
    let mut cluster = RedisCluster::start(3);
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&cluster.urls())).backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    fill(&a, 1..=8).await;

    let url = a.url("");
    let traffic = Traffic::start(4, move |w, i| {
        format!("{url}{}", bundle(1 + (w * 7 + i) % 16))
    });
    poll(POLL, "traffic flows", || traffic.ok() > 50);
    cluster.kill(1);
    let seen = traffic.ok();
    poll(POLL, "traffic flows with a master down", || {
        traffic.ok() > seen + 200
    });
    cluster.restart(1);
    cluster.wait_ok();
    let seen = traffic.ok();
    poll(POLL, "traffic flows after the master is back", || {
        traffic.ok() > seen + 100
    });
    traffic.stop_without_failures().await;

    // L2 works again, from a second instance too
    let b = Sidecache::start(opts).await;
    fill(&a, 30..=33).await;
    for id in 30..=33 {
        until_x_cache(&b, &bundle(id), "HIT-L2").await;
    }
}

/// The purge-wins rule holds across shards: work that began before a purge is refused in
/// whichever partition its entry lives, later work is stored, and a purge by tag finds the
/// entries in every partition.
#[tokio::test(flavor = "multi_thread")]
async fn purges_win_over_earlier_work_in_every_partition() {
    use sidecache::cache::storage::l2::{EntryWrite, StoreOutcome};
    use sidecache::cache::storage::{PurgeKind, Refusal};

    let cluster = RedisCluster::start(3);
    let l2 = cluster_store(&cluster, "pw:");
    let tags = vec!["t".to_string()];
    // one key per partition (the first byte picks it)
    let keys: Vec<[u8; 16]> = (0..16u8).map(|i| [i; 16]).collect();
    let write = |key: &'static [u8; 16], since: u64| EntryWrite {
        key,
        value: b"v",
        ttl: Duration::from_secs(60),
        url: "/u",
        tags: &[],
        since,
    };
    let keys: &'static [[u8; 16]] = Box::leak(keys.into_boxed_slice());
    let tags: &'static [String] = Box::leak(tags.into_boxed_slice());
    let before = l2.generation().await.expect("generation");
    for key in keys {
        let w = EntryWrite {
            tags,
            ..write(key, before)
        };
        assert_eq!(l2.set_entry(&w).await, Ok(StoreOutcome::Stored));
    }
    assert_eq!(
        l2.purge(PurgeKind::Tag, "t").await.map(|d| d.deleted),
        Ok(16)
    );
    for key in keys {
        assert_eq!(l2.get_entry(key).await.expect("read").value, None);
        let w = EntryWrite {
            tags,
            ..write(key, before)
        };
        assert_eq!(
            l2.set_entry(&w).await,
            Ok(StoreOutcome::Refused(Refusal::Purged))
        );
    }
    let after = l2.generation().await.expect("generation");
    assert!(after > before);
    for key in keys {
        let w = EntryWrite {
            tags,
            ..write(key, after)
        };
        assert_eq!(l2.set_entry(&w).await, Ok(StoreOutcome::Stored));
    }
    // a prefix purge reaches every partition too
    assert_eq!(
        l2.purge(PurgeKind::Prefix, "/").await.map(|d| d.deleted),
        Ok(16)
    );
    assert!(cluster.keys("pw:*:e:*").is_empty());
}

/// A purge's tombstone in a partition keeps the newest generation of its target. On a
/// cluster the generation is taken on the home slot first, so the partition step of an older
/// purge of the same target (a retried job, another instance's) can land after a newer one's.
/// When its lower generation replaced the newer, work begun between the two purges was
/// stored: the cluster torture (seed 8402) saw the instance that had just written serve the
/// old version from Redis.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_purge_landing_late_does_not_lower_a_newer_ones_tombstone() {
    use sidecache::cache::storage::l2::{EntryWrite, StoreOutcome};
    use sidecache::cache::storage::{PurgeKind, Refusal};

    let cluster = RedisCluster::start(3);
    let l2 = cluster_store(&cluster, "late:");
    // the entry's partition (placed by its path, the key's first byte) has its state from
    // before both purges: a first store seeds it
    let key: &'static [u8; 16] =
        Box::leak(Box::new([sidecache::cache::key::placement("/items/4"); 16]));
    let mut between = EntryWrite {
        key,
        value: b"old version",
        ttl: Duration::from_secs(60),
        url: "/items/4",
        tags: &[],
        since: l2.generation().await.expect("generation"),
    };
    l2.set_entry(&between).await.expect("seeding store");
    let older = l2.advance().await.expect("advance");
    let newer = l2.advance().await.expect("advance");
    assert!(newer > older);
    // the newer purge's partition step first, then the older one's, late
    for generation in [newer, older] {
        l2.purge_partitions(PurgeKind::Url, "/items/4", generation, None)
            .await
            .expect("partition step");
    }
    // work that began after the older purge and before the newer one
    between.since = older;
    assert_eq!(
        l2.set_entry(&between).await,
        Ok(StoreOutcome::Refused(Refusal::Purged))
    );
    // work that began after both is stored
    let after = EntryWrite {
        since: l2.generation().await.expect("generation"),
        ..between
    };
    assert_eq!(l2.set_entry(&after).await, Ok(StoreOutcome::Stored));
}

/// Entries are placed by path: every entry of one path (each query and Vary variant) lives
/// in its path's partition, beside its url index, so a write's purges (its url and `path?`)
/// run the home slot's advance and one script in that partition each, and still remove every
/// variant. Placed by hash, as before, each purge ran in all 16 partitions (34 script runs
/// here, not 4), and a Vary variant's fresh hash put it in a partition of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_of_one_path_runs_in_its_partition_alone_and_finds_every_variant() {
    use pingora_cache::key::CacheHashKey;
    use sidecache::cache::key::{cache_key, KeyInput};
    use sidecache::cache::storage::l2::{EntryWrite, StoreOutcome};
    use sidecache::cache::storage::{storage_key, PurgeKind};

    let cluster = RedisCluster::start(3);
    let l2 = cluster_store(&cluster, "pp:");
    let headers = http::HeaderMap::new();
    let key = |path: &str, query: Option<&str>, variance: Option<u8>| {
        let mut k = cache_key(
            &KeyInput {
                site: "",
                path,
                query,
                headers: &headers,
            },
            None,
        );
        if let Some(v) = variance {
            k.set_variance_key([v; 16]);
            assert_ne!(
                k.combined_bin()[0],
                k.primary_bin()[0],
                "pick another variance"
            );
        }
        storage_key(&k)
    };
    // (path, query, variance, the url it is indexed by)
    let entries = [
        ("/items/1", None, None, "/items/1"),
        ("/items/1", None, Some(1), "/items/1"),
        ("/items/1", Some("a=1"), None, "/items/1?a=1"),
        ("/items/1", Some("a=1"), Some(3), "/items/1?a=1"),
        ("/items/2", None, None, "/items/2"),
    ];
    let since = l2.generation().await.expect("generation");
    let mut keys = Vec::new();
    for (path, query, variance, url) in entries {
        let k = key(path, query, variance);
        let w = EntryWrite {
            key: &k,
            value: b"v",
            ttl: Duration::from_secs(60),
            url,
            tags: &[],
            since,
        };
        assert_eq!(l2.set_entry(&w).await, Ok(StoreOutcome::Stored), "{url}");
        keys.push(k);
    }
    let tag_of = |k: &[u8; 16]| {
        let name = l2.entry_key(k);
        name[name.find('{').expect("{")..=name.find('}').expect("}")].to_owned()
    };
    let home = tag_of(&keys[0]);
    for k in &keys[1..4] {
        assert_eq!(tag_of(k), home, "every entry of /items/1 in one partition");
    }
    assert!(l2.entry_key(&keys[0]).starts_with("pp:v3:{"));

    let before = cluster.script_runs();
    let url = l2
        .purge(PurgeKind::Url, "/items/1")
        .await
        .expect("url purge");
    let prefix = l2
        .purge(PurgeKind::Prefix, "/items/1?")
        .await
        .expect("prefix purge");
    let runs = cluster.script_runs() - before;
    assert_eq!(
        (url.deleted, prefix.deleted),
        (2, 2),
        "both variants of each url"
    );
    assert_eq!(
        runs, 4,
        "each purge: the home slot's advance and one partition"
    );
    for k in &keys[..4] {
        assert_eq!(l2.get_entry(k).await.expect("read").value, None);
    }
    assert!(l2.get_entry(&keys[4]).await.expect("read").value.is_some());
}

/// On a new cluster, a purge must not refuse work it does not match: the partitions are
/// seeded when the connection opens, so the first purge to reach one finds its state and
/// records a tombstone, instead of seeding it with a floor at the purge's generation (which
/// refused every store whose work began before the purge, as `forgotten`: one more origin
/// fetch per key in flight, on every instance).
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_on_a_new_cluster_refuses_no_unrelated_work() {
    use sidecache::cache::storage::l2::{EntryWrite, StoreOutcome};
    use sidecache::cache::storage::{PurgeKind, Refusal};

    let cluster = RedisCluster::start(3);
    let l2 = cluster_store(&cluster, "nc:");
    // work begins (an L1 miss reads the generation with its lookup) ...
    let before = l2.generation().await.expect("generation");
    // ... a purge of something else runs in every partition ...
    l2.purge(PurgeKind::Tag, "other").await.expect("purge");
    // ... and the work's stores, one per partition, are not refused
    let keys: &'static [[u8; 16]] = Box::leak(
        (0..16u8)
            .map(|i| [i; 16])
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let tags: &'static [String] = Box::leak(vec!["t".to_string()].into_boxed_slice());
    for key in keys {
        let w = EntryWrite {
            key,
            value: b"v",
            ttl: Duration::from_secs(60),
            url: "/u",
            tags,
            since: before,
        };
        assert_eq!(
            l2.set_entry(&w).await,
            Ok(StoreOutcome::Stored),
            "key {key:?}"
        );
    }
    // work that a purge does match is still refused
    l2.purge(PurgeKind::Tag, "t").await.expect("purge");
    let w = EntryWrite {
        key: &keys[3],
        value: b"v",
        ttl: Duration::from_secs(60),
        url: "/u",
        tags,
        since: before,
    };
    assert_eq!(
        l2.set_entry(&w).await,
        Ok(StoreOutcome::Refused(Refusal::Purged))
    );
}

/// A flood of anonymous writes on a cluster, each to a path of its own: each queues its
/// url's purge, which runs in its path's partition (before the entries were placed by path,
/// in all 16). The backlog drains, every write is answered 200 (none refused as
/// `purge_backlog_full`), and every other entry stays, in the cluster and in the other
/// instance's L1. The printed drain time is the figure of the purge's Redis work.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_flood_drains_and_leaves_every_other_entry_alone() {
    use support::http::metric;
    use support::traffic::write_flood;

    let cluster = RedisCluster::start(3);
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(l2_config(
        "\"8MiB\"",
        &format!(
            "mode = \"cluster\"\nnodes = {}\nprefix = \"fl:\"",
            toml_list(&cluster.urls())
        ),
    ))
    .backend(backend.addr());
    let a = Sidecache::start(opts.clone()).await;
    let b = Sidecache::start(opts).await;
    let backlog = |sc: &Sidecache| {
        let url = sc.admin_url("/metrics");
        async move { metric(&get(&url, &[]).await.text(), "sidecache_purge_backlog") }
    };
    for id in 1..=20 {
        assert_eq!(get(&b.url(&bundle(id)), &[]).await.status, 200);
        until_x_cache(&b, &bundle(id), "HIT-L1").await;
    }
    let stored = 20;
    poll(POLL, "the 20 entries are in the cluster", || {
        cluster.keys("fl:*:e:*").len() == stored
    });

    let started = std::time::Instant::now();
    let until = started + Duration::from_secs(3);
    let base = a.url("");
    let flood = tokio::spawn(async move { write_flood(&base, 16, until).await });
    let mut most = 0.0f64;
    while std::time::Instant::now() < until {
        most = most.max(backlog(&a).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = flood.await.expect("flood");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = backlog(&a).await;
        most = most.max(waiting);
        if waiting == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog never drained ({waiting} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "cluster flood: {sent} writes in 3 s on A, at most {most} purges waiting, \
         drained {:.1} s after the flood began",
        started.elapsed().as_secs_f64()
    );
    assert!(
        sent > 500,
        "the flood was too thin to prove anything ({sent})"
    );
    for id in 1..=20 {
        let r = get(&b.url(&bundle(id)), &[]).await;
        assert_eq!(r.x_cache(), "HIT-L1", "{} on B after the flood", bundle(id));
    }
    assert_eq!(
        cluster.keys("fl:*:e:*").len(),
        stored,
        "the cluster lost entries"
    );
}
