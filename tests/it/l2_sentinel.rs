//! L2 behind a real Redis Sentinel set-up (1 master, 1 replica, 3 sentinels), end to end: the
//! master is SIGKILLed under traffic, no client sees an error, sidecache follows the
//! promotion, L2 hits resume on the new master, and purges are broadcast there.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::backend::start_backend;
use support::http::get;
use support::redis_cluster::{bundle, l2_config, poll, toml_list, SentinelSet};
use support::sidecache::{admin_purge, until_x_cache, Sidecache, SidecacheOptions};
use support::traffic::Traffic;

const POLL: Duration = Duration::from_secs(20);

fn config(set: &SentinelSet, l1_max_bytes: &str) -> String {
    l2_config(
        l1_max_bytes,
        &format!(
            "mode = \"sentinel\"\nsentinels = {}\nmaster_name = \"{}\"\nprefix = \"st:\"",
            toml_list(&set.sentinel_urls()),
            set.master_name
        ),
    )
}

// more workers than cores: the harness's process control blocks one while traffic runs
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_is_followed_without_client_errors() {
    let mut set = SentinelSet::start();
    let backend = start_backend(Duration::ZERO).await;
    // A has no L1, so every lookup reaches Redis; B has one, for the purge broadcast
    let a =
        Sidecache::start(SidecacheOptions::new(config(&set, "0")).backend(backend.addr())).await;
    let b =
        Sidecache::start(SidecacheOptions::new(config(&set, "\"8MiB\"")).backend(backend.addr()))
            .await;
    let stats = get(&a.admin_url("/admin/stats"), &[]).await.json();
    assert_eq!(
        stats["l2"]["mode"],
        serde_json::json!("sentinel"),
        "{stats}"
    );
    assert_eq!(
        stats["l2"]["sentinel"]["sentinels"],
        serde_json::json!(3),
        "{stats}"
    );
    for id in 1..=4 {
        get(&a.url(&bundle(id)), &[]).await;
        until_x_cache(&a, &bundle(id), "HIT-L2").await;
    }
    set.wait_replica_synced();

    let url = a.url("");
    let traffic = Traffic::start(4, move |w, i| format!("{url}{}", bundle(1 + (w + i) % 8)));
    poll(POLL, "traffic flows", || traffic.ok() > 50);
    set.kill_master();
    set.wait_failover();
    // the entries replicated before the kill are served from the promoted master
    until_x_cache(&a, &bundle(1), "HIT-L2").await;
    let seen = traffic.ok();
    poll(POLL, "traffic flows after the failover", || {
        traffic.ok() > seen + 100
    });
    traffic.stop_without_failures().await;

    // new entries land on the new master
    get(&a.url(&bundle(50)), &[]).await;
    until_x_cache(&a, &bundle(50), "HIT-L2").await;
    let n: u64 = redis::cmd("DBSIZE")
        .query(&mut set.master_conn())
        .expect("DBSIZE");
    assert!(n > 0);

    // the subscriber moved too: a purge on A reaches B's L1
    until_x_cache(&b, &bundle(50), "HIT-L1").await;
    admin_purge(&a, json!({"url": bundle(50)})).await;
    let deadline = Instant::now() + POLL;
    while get(&b.url(&bundle(50)), &[]).await.x_cache() == "HIT-L1" {
        assert!(Instant::now() < deadline, "the purge never reached B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
