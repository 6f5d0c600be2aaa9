//! Purges win over work that began before them, at the storage level, with the race held
//! open deterministically: a TCP delay proxy in front of a real `redis-server` keeps an L2
//! write (or the answer to an L2 read) of instance A in flight while a purge runs, on A or
//! on instance B (straight to Redis), and releases it afterwards.
//!
//! (c), an origin fetch that answers after the purge, and the until-invalidated session
//! state, are tested through real sidecache processes in tests/it/purge.rs.

use crate::support;

use sidecache::cache::storage::Refusal;
use sidecache::cache::storage::{storage_key, Tier, TieredCache};
use sidecache::config::CacheConfig;
use sidecache::purge::{PurgeKind, PurgeRequest, PurgeService, PurgeSource};
use sidecache::telemetry::metrics::metrics;
use support::delay_proxy::{DelayProxy, Direction};
use support::redis::RedisServer;
use support::storage::{
    body, cache_config, key, leak, lookup, meta, probed_key, purge, purges, tier, wait_for, write,
};

/// Config of an instance on `url` under `prefix`; writes may wait long in the proxy.
fn config(url: String, prefix: &str) -> CacheConfig {
    let mut cfg = cache_config(8 << 20, Some(url), prefix);
    if let Some(l2) = cfg.l2.as_mut() {
        l2.write_timeout = std::time::Duration::from_secs(5);
    }
    cfg
}

/// Instance A behind the delay proxy and instance B straight on Redis, sharing `prefix`.
struct Race {
    redis: RedisServer,
    proxy: DelayProxy,
    a: &'static TieredCache,
    b: &'static TieredCache,
    pa: &'static PurgeService,
    pb: &'static PurgeService,
}

async fn race(prefix: &str) -> Race {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.addr()).await;
    let cfg_a = config(proxy.redis_url(), prefix);
    let cfg_b = config(redis.url(), prefix);
    let (a, b) = (leak(&cfg_a), leak(&cfg_b));
    let (pa, pb) = (purges(a, &cfg_a), purges(b, &cfg_b));
    Race {
        redis,
        proxy,
        a,
        b,
        pa,
        pb,
    }
}

fn refused(tier: Tier, reason: Refusal) -> u64 {
    metrics()
        .stores_refused
        .with_label_values(&[tier.label(), reason.label()])
        .get()
}

/// (a) A's L2 write, spawned before B's purge, lands in Redis after it: Redis refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn an_l2_write_delayed_past_a_purge_is_not_stored() {
    let Race {
        redis,
        proxy,
        a,
        pb,
        ..
    } = race("race-a:").await;

    for (kind, target, path, tags) in [
        (PurgeKind::Url, "/ra/1?v=1", "/ra/1?v=1", vec![]),
        (PurgeKind::Prefix, "/ra/2", "/ra/2/x", vec![]),
        (PurgeKind::Tag, "t:ra3", "/ra/3", vec!["t:ra3"]),
    ] {
        // the request's lookup (L1 miss, L2 miss) notes the generations its work began at
        let k = probed_key(a, path);
        assert!(lookup(a, &k).await.is_none());
        let rk = a.l2().expect("l2").entry_key(&storage_key(&k));
        let before = refused(Tier::L2, Refusal::Purged);

        proxy.delay_on(Direction::ToServer);
        write(a, &k, &meta(60, path, &tags), b"from before the purge")
            .await
            .expect("write");
        wait_for("A's SET held in the proxy", || {
            proxy.held(Direction::ToServer) > 0
        })
        .await;
        let r = purge(pb, kind, target).await;
        assert!(r.l2_ok, "{kind:?}: {r:?}");
        proxy.delay_off(Direction::ToServer);
        // A's connection answers in order: once this PING returns, the SET has run
        a.l2_ping().await.expect("ping through the proxy");

        assert!(
            !redis.exists(&rk),
            "{kind:?}: a write whose work began before the purge landed after it"
        );
        // counted by A's write task once its answer is in
        wait_for("the refusal counted", || {
            refused(Tier::L2, Refusal::Purged) > before
        })
        .await;
    }

    // work that begins after the purge stores as usual (A's L1 still has its own copy: A
    // runs no subscriber here, so it never heard of B's purge)
    a.clear_l1();
    let k = probed_key(a, "/ra/1?v=1");
    assert!(lookup(a, &k).await.is_none());
    write(a, &k, &meta(60, "/ra/1?v=1", &[]), b"after")
        .await
        .expect("write");
    let rk = a.l2().expect("l2").entry_key(&storage_key(&k));
    wait_for("the later write in L2", || redis.exists(&rk)).await;
}

/// (b) An L2 read that began before a purge answers after it: what it read is neither
/// served nor promoted into L1, whether A itself or another instance purged.
#[tokio::test(flavor = "multi_thread")]
async fn an_l2_read_answered_after_a_purge_is_not_served_or_promoted() {
    let Race {
        redis,
        proxy,
        a,
        b,
        pa,
        pb,
    } = race("race-b:").await;

    for (path, local) in [("/rb/local", true), ("/rb/remote", false)] {
        // B stored the entry; A's L1 does not have it
        let kb = key(path);
        write(b, &kb, &meta(60, path, &[]), b"old state")
            .await
            .expect("write");
        let rk = b.l2().expect("l2").entry_key(&storage_key(&kb));
        wait_for("B's write in L2", || redis.exists(&rk)).await;
        // control: without a purge A reads it from L2
        let (_, h) = lookup(a, &probed_key(a, path)).await.expect("L2 hit");
        assert_eq!(tier(&h), Tier::L2);
        assert_eq!(body(h).await, b"old state");
        a.clear_l1();

        let k = probed_key(a, path);
        proxy.delay_on(Direction::ToClient);
        let read = tokio::spawn({
            let k = k.clone();
            async move { lookup(a, &k).await.is_some() }
        });
        wait_for("the answer to A's GET held in the proxy", || {
            proxy.held(Direction::ToClient) > 0
        })
        .await;
        let purging = if local {
            // A's own purge: recorded at once, its Redis batch waits for the proxy too
            let purge = tokio::spawn(async move { purge(pa, PurgeKind::Url, "/rb/local").await });
            wait_for("A's purge recorded", || a.purge_log().sizes().1 > 0).await;
            Some(purge)
        } else {
            // B's purge, received by A (what A's subscriber does with B's broadcast)
            assert!(purge(pb, PurgeKind::Url, path).await.l2_ok);
            let received = PurgeRequest::new(PurgeKind::Url, path, PurgeSource::Remote);
            pa.apply(&received).await;
            None
        };
        proxy.delay_off(Direction::ToClient);

        let served = read.await.expect("lookup task");
        assert!(
            !served,
            "{path}: an L2 read that began before the purge was served"
        );
        assert!(
            a.l1().get(&storage_key(&k)).is_none(),
            "{path}: and it must not be promoted into L1"
        );
        if let Some(purge) = purging {
            let r = purge.await.expect("purge task");
            assert!(r.l2_ok && r.l2_removed == 1, "{r:?}");
        }
        assert!(!redis.exists(&rk), "{path}: gone from Redis too");
        assert!(lookup(a, &probed_key(a, path)).await.is_none());
    }
}
