//! Contract tests of `TieredCache` as a pingora-cache `Storage`, against real redis-server
//! processes: one suite run for L1 only, L2 only and tiered, plus tiered-only behaviour
//! (promotion, outage + breaker, purges across tiers, a second instance, L1 byte budget).

use crate::flavour_tests;
use crate::support;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use pingora_cache::storage::{HitHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use sidecache::cache::storage::codec;
use sidecache::cache::storage::entry::StoredEntry;
use sidecache::cache::storage::l2::{EntryWrite, StoreOutcome};
use sidecache::cache::storage::{storage_key, EntryContext, Refusal, Tier, TieredCache};
use sidecache::config::CacheConfig;
use sidecache::purge::PurgeKind;
use sidecache::telemetry::metrics::{metrics, L2Result};
use support::redis::{Flavour, RedisServer};
use support::storage::{
    body, cache_config, key, leak, lookup, meta, meta_at, purge, purges, tier, wait_for, write,
    MAX_OBJECT, POLL,
};

/// A cache config with `l1_bytes` of L1 and, with `redis`, an L2 under its prefix.
fn config(l1_bytes: u64, redis: Option<(&RedisServer, &str)>) -> CacheConfig {
    let (url, prefix) = redis.map_or((None, ""), |(r, p)| (Some(r.url()), p));
    cache_config(l1_bytes, url, prefix)
}

/// Poll until `f` holds (L2 writes are spawned, so visibility is eventual).
async fn lookup_until<F>(
    c: &'static TieredCache,
    k: &CacheKey,
    f: F,
) -> Option<(CacheMeta, HitHandler)>
where
    F: Fn(&Option<(CacheMeta, HitHandler)>) -> bool,
{
    let deadline = Instant::now() + POLL;
    loop {
        let r = lookup(c, k).await;
        if f(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn found(c: &'static TieredCache, k: &CacheKey) -> (CacheMeta, HitHandler) {
    lookup_until(c, k, |r| r.is_some())
        .await
        .expect("entry should become visible")
}

struct Setup {
    cache: &'static TieredCache,
    redis: Option<RedisServer>,
}

/// The storage contract every configuration must satisfy.
async fn contract(s: &Setup) {
    let c = s.cache;
    let span = Span::inactive();

    // miss on empty
    assert!(lookup(c, &key("/c/a")).await.is_none());

    // write then read back identical meta + body
    let ka = key("/c/a");
    let ma = meta(60, "/c/a", &["t:a"]);
    write(c, &ka, &ma, b"hello body").await.expect("write");
    let (m, h) = found(c, &ka).await;
    assert_eq!(m.fresh_until(), ma.fresh_until());
    assert_eq!(m.created(), ma.created());
    assert_eq!(m.stale_while_revalidate_sec(), 10);
    assert_eq!(m.stale_if_error_sec(), 20);
    assert_eq!(m.response_header().status, 200);
    assert_eq!(
        m.headers().get("x-test-case").map(|v| v.as_bytes()),
        Some(&b"MixedCase"[..])
    );
    assert_eq!(m.headers().len(), ma.headers().len());
    assert_eq!(body(h).await, b"hello body");

    // range: seek serves a slice
    let (_, mut h) = found(c, &ka).await;
    assert!(h.can_seek());
    h.seek(6, Some(8)).expect("seek");
    assert_eq!(body(h).await, b"bo");

    // expiry: deadline = fresh_until + max(swr,sie) + 5s; put fresh_until 4s in the past
    let ke = key("/c/expiring");
    let me = meta_at(
        SystemTime::now() - Duration::from_secs(4),
        0,
        0,
        "/c/expiring",
        &[],
    );
    write(c, &ke, &me, b"short").await.expect("write");
    let r = lookup_until(c, &ke, |r| r.is_none()).await;
    assert!(r.is_none(), "entry past its deadline must be gone");

    // purge via the trait removes from every tier
    let outcome = c
        .purge(
            PurgeTarget::Active(&ka.to_compact()),
            PurgeType::Invalidation,
            &span.handle(),
        )
        .await
        .expect("purge");
    assert!(matches!(outcome, PurgeOutcome::Purged(_)));
    assert!(lookup(c, &ka).await.is_none());

    // update_meta changes freshness, keeps the body
    let kb = key("/c/b");
    let mb = meta(60, "/c/b", &[]);
    write(c, &kb, &mb, b"bbb").await.expect("write");
    found(c, &kb).await;
    let later = SystemTime::now() + Duration::from_secs(600);
    let newer = meta_at(later, 1, 2, "/c/b", &[]);
    assert!(c
        .update_meta(&kb, &newer, &span.handle())
        .await
        .expect("update"));
    let (m, h) = lookup_until(c, &kb, |r| {
        r.as_ref().map(|(m, _)| m.fresh_until()) == Some(later)
    })
    .await
    .expect("still there");
    assert_eq!(m.fresh_until(), later);
    assert_eq!(m.stale_if_error_sec(), 2);
    assert_eq!(body(h).await, b"bbb");

    // Vary: primary variant under the primary key, others under primary+variance
    let kv = key("/c/vary");
    let mut m1 = meta(60, "/c/vary", &[]);
    m1.set_variance_key([1; 16]);
    write(c, &kv, &m1, b"variant-1").await.expect("write v1");
    let (m, h) = found(c, &kv).await;
    assert_eq!(m.variance(), Some([1; 16]));
    assert_eq!(body(h).await, b"variant-1");
    let mut kv2 = key("/c/vary");
    kv2.set_variance_key([2; 16]);
    assert!(lookup(c, &kv2).await.is_none(), "other variance is a miss");
    let mut m2 = meta(60, "/c/vary", &[]);
    m2.set_variance_key([2; 16]);
    write(c, &kv2, &m2, b"variant-2").await.expect("write v2");
    let (m, h) = found(c, &kv2).await;
    assert_eq!(m.variance(), Some([2; 16]));
    assert_eq!(body(h).await, b"variant-2");
    let (m, h) = found(c, &kv).await;
    assert_eq!(m.variance(), Some([1; 16]));
    assert_eq!(body(h).await, b"variant-1");

    // size limit: larger bodies are not stored; exactly the limit is
    let kbig = key("/c/big");
    let r = write(
        c,
        &kbig,
        &meta(60, "/c/big", &[]),
        &vec![b'x'; MAX_OBJECT as usize + 1],
    )
    .await;
    assert!(r.is_err(), "finish reports the oversize body");
    let kfit = key("/c/fit");
    write(
        c,
        &kfit,
        &meta(60, "/c/fit", &[]),
        &vec![b'y'; MAX_OBJECT as usize],
    )
    .await
    .expect("fits");
    let (_, h) = found(c, &kfit).await;
    assert_eq!(body(h).await.len(), MAX_OBJECT as usize);
    assert!(lookup(c, &kbig).await.is_none());

    // corrupt L2 value: miss + counter + deleted; so is a compressed body larger than
    // max_object_bytes, whether it decodes to that or only claims a gigabyte
    if let (Some(l2), Some(redis)) = (c.l2(), s.redis.as_ref()) {
        let over = MAX_OBJECT as usize + 1;
        let oversized = compressed_claiming("/c/corrupt", over, over as u32);
        let gigabyte = compressed_claiming("/c/corrupt", over, 1 << 30);
        for garbage in [
            &b"garbage"[..],
            b"SCE1\x07rest",
            b"SCE1\x01\x00\x00",
            &oversized,
            &gigabyte,
        ] {
            let kc = key("/c/corrupt");
            let rk = l2.entry_key(&storage_key(&kc));
            redis.set_raw(&rk, garbage);
            let before = metrics()
                .corrupt_entries
                .with_label_values(&[Tier::L2.label()])
                .get();
            assert!(lookup(c, &kc).await.is_none());
            let after = metrics()
                .corrupt_entries
                .with_label_values(&[Tier::L2.label()])
                .get();
            assert!(after > before, "corrupt counter must go up");
            wait_for("corrupt key deletion", || !redis.exists(&rk)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_l1_only() {
    let cache = leak(&config(8 << 20, None));
    assert_eq!(cache.l2_healthy(), None);
    assert!(cache.l2_ping().await.is_ok());
    contract(&Setup { cache, redis: None }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_l2_only() {
    let redis = RedisServer::start();
    let cache = leak(&config(0, Some((&redis, "l2only:"))));
    assert!(!cache.l1().enabled());
    contract(&Setup {
        cache,
        redis: Some(redis),
    })
    .await;
    // nothing ever landed in L1
    assert_eq!(cache.l1().entry_count(), 0);
}

/// An L2 value for `url`, fresh for a minute, whose body is `len` bytes zstd-compressed and
/// claims to decode to `claimed` bytes (format version 2: body encoding 1, the claim, the
/// frame).
fn compressed_claiming(url: &str, len: usize, claimed: u32) -> Vec<u8> {
    let ctx = EntryContext {
        url: url.to_owned(),
        route: "test".into(),
        tags: vec![],
        ..Default::default()
    };
    let mut value = codec::encode(&StoredEntry::from_meta(
        &meta(60, url, &[]),
        ctx,
        Bytes::new(),
    ));
    // the raw empty body's encoding byte and length end the value
    value.truncate(value.len() - 5);
    let frame = zstd::bulk::compress(&vec![b'z'; len], 1).expect("compress");
    value.push(1);
    value.extend_from_slice(&claimed.to_be_bytes());
    value.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    value.extend_from_slice(&frame);
    value
}

/// The contract with L1 and an L2 on a server of `flavour`; the breaker never opened.
async fn contract_tiered_on(flavour: Flavour) {
    let redis = RedisServer::start_flavour(flavour);
    let cache = leak(&config(8 << 20, Some((&redis, "tiered:"))));
    assert!(cache.l2_ping().await.is_ok());
    let setup = Setup {
        cache,
        redis: Some(redis),
    };
    contract(&setup).await;
    assert_indexed(setup.redis.as_ref().expect("redis"), "tiered:");
    assert_eq!(cache.l2_healthy(), Some(true), "the breaker opened");
}

flavour_tests!(contract_tiered_on:
    contract_tiered,
    contract_tiered_on_redis_6_2,
    contract_tiered_on_valkey);

/// Every entry under `prefix` is known to the indexes a purge walks: its url's index holds
/// it and the url set holds that url.
fn assert_indexed(redis: &RedisServer, prefix: &str) {
    let urls: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}v2:urls"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("ZRANGE urls");
    let entries = redis.keys(&format!("{prefix}v2:e:*"));
    assert!(!entries.is_empty(), "entries under {prefix}");
    for entry in entries {
        let indexed = urls.iter().any(|url| {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(format!("{prefix}v2:url:{url}"))
                .arg(&entry)
                .query(&mut redis.conn())
                .expect("ZSCORE");
            score.is_some()
        });
        assert!(
            indexed,
            "{entry} is outside every url index (urls: {urls:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn l2_hit_is_promoted_and_ttl_is_set() {
    let redis = RedisServer::start();
    let c = leak(&config(8 << 20, Some((&redis, "promo:"))));
    let k = key("/p/1");
    write(c, &k, &meta(60, "/p/1", &["x"]), b"promote me")
        .await
        .expect("write");
    let (_, h) = found(c, &k).await;
    assert_eq!(tier(&h), Tier::L1);
    let rk = c.l2().expect("l2").entry_key(&storage_key(&k));
    wait_for("L2 write", || redis.exists(&rk)).await;
    // PX = fresh 60s + max(swr 10, sie 20) + 5s slack
    let pttl = redis.pttl(&rk);
    assert!(pttl > 80_000 && pttl <= 85_000, "pttl {pttl}");
    let idx = redis.keys("promo:v2:*");
    assert!(idx.contains(&"promo:v2:url:/p/1".to_string()), "{idx:?}");
    assert!(idx.contains(&"promo:v2:tag:x".to_string()), "{idx:?}");
    assert!(redis.pttl("promo:v2:tag:x") >= pttl - 1000);
    c.clear_l1();
    let (_, h) = lookup(c, &k).await.expect("L2 hit");
    assert_eq!(tier(&h), Tier::L2);
    assert_eq!(body(h).await, b"promote me");
    let (_, h) = lookup(c, &k).await.expect("L1 hit");
    assert_eq!(tier(&h), Tier::L1);
}

#[tokio::test(flavor = "multi_thread")]
async fn second_instance_sees_l2_entries() {
    let redis = RedisServer::start();
    let a = leak(&config(8 << 20, Some((&redis, "shared:"))));
    let b = leak(&config(8 << 20, Some((&redis, "shared:"))));
    let k = key("/shared/1");
    write(a, &k, &meta(60, "/shared/1", &[]), b"from a")
        .await
        .expect("write");
    let (m, h) = found(b, &k).await;
    assert_eq!(tier(&h), Tier::L2);
    assert_eq!(m.response_header().status, 200);
    assert_eq!(body(h).await, b"from a");
}

flavour_tests!(purges_remove_from_both_tiers_on:
    purges_remove_from_both_tiers,
    purges_remove_from_both_tiers_on_redis_6_2,
    purges_remove_from_both_tiers_on_valkey);

/// Url, tag and prefix purges find every entry they name through the L2 indexes, also
/// entries this instance never held in L1.
async fn purges_remove_from_both_tiers_on(flavour: Flavour) {
    let redis = RedisServer::start_flavour(flavour);
    let cfg = config(8 << 20, Some((&redis, "purge:")));
    let c = leak(&cfg);
    let p = purges(c, &cfg);
    let l2 = c.l2().expect("l2");
    let mut entries = Vec::new();
    for (path, variance, url, tags) in [
        ("/p/a", None, "/p/a?x=1", vec!["t1"]),
        ("/p/a", Some([7u8; 16]), "/p/a?x=1", vec!["t1"]),
        ("/p/b", None, "/p/b", vec!["t2"]),
        ("/q/c", None, "/q/c", vec!["t1"]),
        ("/q/d", None, "/q/d", vec!["t3"]),
    ] {
        let mut k = key(path);
        let mut m = meta(60, url, &tags);
        if let Some(v) = variance {
            k.set_variance_key(v);
            m.set_variance_key(v);
        }
        write(c, &k, &m, path.as_bytes()).await.expect("write");
        let rk = l2.entry_key(&storage_key(&k));
        wait_for("L2 write", || redis.exists(&rk)).await;
        entries.push((k, rk));
    }

    let r = purge(p, PurgeKind::Url, "/p/a?x=1").await;
    assert_eq!((r.l1_removed, r.l2_removed, r.l2_ok), (2, 2, true));
    let r = purge(p, PurgeKind::Tag, "t1").await;
    assert_eq!((r.l1_removed, r.l2_removed, r.l2_ok), (1, 1, true));
    let r = purge(p, PurgeKind::Prefix, "/p/").await;
    assert_eq!((r.l1_removed, r.l2_removed, r.l2_ok), (1, 1, true));
    for (k, rk) in &entries[..4] {
        assert!(lookup(c, k).await.is_none());
        assert!(!redis.exists(rk));
    }
    let (k, rk) = &entries[4];
    assert!(lookup(c, k).await.is_some(), "unrelated entry survives");
    assert!(redis.exists(rk));
    // an L2-only copy (other instance wrote it, not in our L1) is purged too
    c.clear_l1();
    let r = purge(p, PurgeKind::Prefix, "/q/").await;
    assert_eq!((r.l1_removed, r.l2_removed), (0, 1));
    assert!(!redis.exists(rk));
    assert!(!redis.exists("purge:v2:url:/q/d"));
}

/// An encoded entry for `url` whose deadline is `ttl` away.
fn stored(url: &str, ttl: Duration) -> Vec<u8> {
    let m = meta_at(SystemTime::now() + ttl, 0, 0, url, &[]);
    let ctx = EntryContext {
        url: url.to_owned(),
        route: "test".into(),
        tags: vec![],
        ..Default::default()
    };
    codec::encode(&StoredEntry::from_meta(&m, ctx, Bytes::from_static(b"x")))
}

/// The L2 store script on a server of `flavour`: indexes live as long as their
/// longest-lived entry (a longer-lived store extends them, a shorter-lived one never
/// shortens them); a purge's tombstone refuses work that began before it; and a store that
/// fails midway leaves no entry outside the indexes.
async fn the_store_script_on(flavour: Flavour) {
    let redis = RedisServer::start_flavour(flavour);
    let cfg = config(8 << 20, Some((&redis, "store:")));
    let c = leak(&cfg);
    let p = purges(c, &cfg);
    let l2 = c.l2().expect("l2");
    let tags = vec!["t:s".to_owned()];
    let write = |key: &'static [u8; 16], url: &'static str, ttl: Duration, since: u64| {
        let value = stored(url, ttl);
        let tags = tags.clone();
        async move {
            let w = EntryWrite {
                key,
                value: &value,
                ttl,
                url,
                tags: &tags,
                since,
            };
            l2.set_entry(&w).await
        }
    };
    let since = l2.generation().await.expect("generation");
    let minute = Duration::from_secs(60);
    let index_ttls = || {
        [
            "store:v2:url:/s/a",
            "store:v2:tag:t:s",
            "store:v2:urls",
            "store:v2:urls:expiry",
        ]
        .map(|k| redis.pttl(k))
    };

    assert_eq!(
        write(&[1; 16], "/s/a", minute, since).await,
        Ok(StoreOutcome::Stored)
    );
    for t in index_ttls() {
        assert!(t > 55_000 && t <= 60_000, "{flavour:?}: index ttl {t}");
    }
    assert_eq!(
        write(&[2; 16], "/s/a", 10 * minute, since).await,
        Ok(StoreOutcome::Stored)
    );
    for t in index_ttls() {
        assert!(t > 590_000 && t <= 600_000, "{flavour:?}: extended to {t}");
    }
    assert_eq!(
        write(&[3; 16], "/s/a", Duration::from_secs(5), since).await,
        Ok(StoreOutcome::Stored)
    );
    for t in index_ttls() {
        assert!(t > 590_000, "{flavour:?}: shortened to {t}");
    }

    // work that began before a purge of its url, prefix or tag is refused by Redis (this
    // instance's own record is not asked: the store goes straight to L2)
    for (kind, target) in [
        (PurgeKind::Url, "/s/a"),
        (PurgeKind::Prefix, "/s/"),
        (PurgeKind::Tag, "t:s"),
    ] {
        let since = l2.generation().await.expect("generation");
        let r = purge(p, kind, target).await;
        assert!(r.l2_ok, "{flavour:?} {kind:?}: {r:?}");
        assert_eq!(
            write(&[4; 16], "/s/a", minute, since).await,
            Ok(StoreOutcome::Refused(Refusal::Purged)),
            "{flavour:?} {kind:?}"
        );
        assert!(!redis.exists(&l2.entry_key(&[4; 16])));
    }

    // an index write that fails (a foreign value of the wrong type) fails the store before
    // the entry is written
    redis.set_raw("store:v2:tag:t:s", b"not a sorted set");
    let since = l2.generation().await.expect("generation");
    assert_eq!(
        write(&[5; 16], "/s/b", minute, since).await,
        Err(L2Result::Error),
        "{flavour:?}"
    );
    assert!(
        !redis.exists(&l2.entry_key(&[5; 16])),
        "{flavour:?}: the entry was stored though its tag index failed"
    );
}

flavour_tests!(the_store_script_on:
    the_store_script_on_redis_7,
    the_store_script_on_redis_6_2,
    the_store_script_on_valkey);

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_opens_breaker_and_recovers() {
    let mut redis = RedisServer::start();
    let cfg = config(8 << 20, Some((&redis, "outage:")));
    let c = leak(&cfg);
    let k = key("/o/1");
    write(c, &k, &meta(60, "/o/1", &[]), b"before")
        .await
        .expect("write");
    let rk = c.l2().expect("l2").entry_key(&storage_key(&k));
    wait_for("L2 write", || redis.exists(&rk)).await;
    assert_eq!(c.l2_healthy(), Some(true));

    redis.kill();
    // L1 hits are unaffected; L1 misses fail open, each within the read timeout (+ slack)
    let bound = Duration::from_secs(1);
    assert!(lookup(c, &k).await.is_some());
    for i in 0..6 {
        let t = Instant::now();
        assert!(lookup(c, &key(&format!("/o/miss/{i}"))).await.is_none());
        assert!(t.elapsed() < bound, "lookup took {:?}", t.elapsed());
        let t = Instant::now();
        write(c, &key(&format!("/o/w/{i}")), &meta(60, "/o/w", &[]), b"w")
            .await
            .expect("writes never fail on L2 trouble");
        assert!(t.elapsed() < bound);
    }
    wait_for("breaker open", || c.l2_healthy() == Some(false)).await;
    assert!(c.l2_ping().await.is_err());
    let r = purge(purges(c, &cfg), PurgeKind::Url, "/o/1").await;
    assert!(!r.l2_ok);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while c.l2_healthy() != Some(true) {
        assert!(Instant::now() < deadline, "L2 did not recover");
        i += 1;
        let _ = lookup(c, &key(&format!("/o/probe/{i}"))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let k2 = key("/o/after");
    write(c, &k2, &meta(60, "/o/after", &[]), b"after")
        .await
        .expect("write");
    let rk2 = c.l2().expect("l2").entry_key(&storage_key(&k2));
    wait_for("L2 write after recovery", || redis.exists(&rk2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_stays_within_byte_budget() {
    let budget: u64 = 1 << 20;
    let c = leak(&config(budget, None));
    let body = vec![b'z'; 900];
    for i in 0..10_000 {
        let p = format!("/budget/{i}");
        write(c, &key(&p), &meta(60, &p, &["b"]), &body)
            .await
            .expect("write");
    }
    c.l1().sync();
    let used = c.l1().weighted_bytes();
    assert!(used <= budget, "L1 holds {used} bytes > budget {budget}");
    let n = c.l1().entry_count();
    assert!(n > 100 && n < 10_000, "entries {n}");
    let (urls, _) = c.l1().index_sizes();
    assert!(urls as u64 <= n + 16, "url index {urls} tracks entries {n}");
    assert!(metrics().l1_evictions.with_label_values(&["size"]).get() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconfigure_rebuilds_l1_and_retunes_breaker() {
    let redis = RedisServer::start();
    let mut cfg = config(1 << 20, Some((&redis, "reconf:")));
    let c = leak(&cfg);
    let k = key("/r/1");
    write(c, &k, &meta(60, "/r/1", &[]), b"r")
        .await
        .expect("write");
    let rk = c.l2().expect("l2").entry_key(&storage_key(&k));
    wait_for("L2 write", || redis.exists(&rk)).await;
    cfg.l1.max_bytes = 2 << 20;
    if let Some(l2) = cfg.l2.as_mut() {
        l2.breaker_failures = 1;
        l2.timeout = Duration::from_millis(300);
    }
    c.reconfigure(&cfg);
    assert_eq!(c.l1().max_bytes(), 2 << 20);
    assert_eq!(
        c.l2().expect("l2").read_timeout(),
        Duration::from_millis(300)
    );
    // L1 was rebuilt empty: the next hit comes from L2
    let (_, h) = lookup(c, &k).await.expect("hit");
    assert_eq!(tier(&h), Tier::L2);
    // one failure now opens the breaker
    drop(redis);
    let _ = lookup(c, &key("/r/miss")).await;
    assert_eq!(c.l2_healthy(), Some(false));
}

fn entry_key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k[8] = 0xa5;
    k
}

/// A prefix purge of 100,000 L1 entries removes them all, leaves neighbours alone and yields
/// to the runtime while it works: on this single-threaded runtime the ticker task only runs
/// when the purge yields (no wall-clock assertion).
#[tokio::test]
async fn big_prefix_purge_removes_everything_and_yields() {
    let cfg = config(512 << 20, None);
    let c = leak(&cfg);
    let p = purges(c, &cfg);
    let template = StoredEntry::from_meta(
        &meta(300, "/big/", &[]),
        EntryContext::default(),
        Bytes::from_static(b"x"),
    );
    const N: u64 = 100_000;
    for i in 0..N {
        let mut e = template.clone();
        e.ctx.url = format!("/big/{i}");
        assert!(c.l1().insert(entry_key(i), e));
    }
    for (i, url) in [(N, "/bif/1"), (N + 1, "/bih/1"), (N + 2, "/big")] {
        let mut e = template.clone();
        e.ctx.url = url.to_owned();
        assert!(c.l1().insert(entry_key(i), e));
    }
    c.l1().sync();
    assert_eq!(c.l1().entry_count(), N + 3);

    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    tokio::task::yield_now().await;
    let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
    let r = purge(p, PurgeKind::Prefix, "/big/").await;
    let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
    ticker.abort();

    assert_eq!(r.l1_removed, N);
    assert!(!r.broadcast, "no L2, nothing to broadcast");
    assert!(
        during >= N / 1024,
        "the purge yielded only {during} times for {N} removals"
    );
    c.l1().sync();
    assert_eq!(c.l1().entry_count(), 3, "only the neighbours are left");
    assert_eq!(c.l1().index_sizes().0, 3);
    for i in [N, N + 1, N + 2] {
        assert!(c.l1().get(&entry_key(i)).is_some());
    }
}

/// Two caches on one Redis: a purge on A is broadcast and drops B's L1 copy (B keeps nothing
/// from L1), while A's report says it was broadcast.
#[tokio::test(flavor = "multi_thread")]
async fn purge_broadcast_reaches_the_other_instance_l1() {
    let redis = RedisServer::start();
    let cfg = config(8 << 20, Some((&redis, "bcast:")));
    let a = leak(&cfg);
    let b = leak(&cfg);
    let (pa, pb) = (purges(a, &cfg), purges(b, &cfg));
    assert_ne!(pa.instance_id(), pb.instance_id());
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(pa.run_subscriber(stop.clone()));
    tokio::spawn(pb.run_subscriber(stop));

    // handshake: wait until B's subscriber is up (a purge on A empties B's L1 copy)
    let template = StoredEntry::from_meta(
        &meta(300, "/hs", &[]),
        EntryContext {
            url: "/hs".into(),
            route: "test".into(),
            tags: vec![],
            ..Default::default()
        },
        Bytes::from_static(b"h"),
    );
    b.l1().insert(entry_key(1), template);
    let deadline = Instant::now() + POLL;
    while b.l1().get(&entry_key(1)).is_some() {
        assert!(Instant::now() < deadline, "B never received a broadcast");
        let r = purge(pa, PurgeKind::Url, "/hs").await;
        assert!(r.l2_ok);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for (kind, url, tag) in [
        ("url", "/bc/1", "t:1"),
        ("prefix", "/bc/2", "t:2"),
        ("tag", "/bc/3", "t:3"),
    ] {
        let k = key(url);
        write(a, &k, &meta(60, url, &[tag]), b"v")
            .await
            .expect("write");
        let (_, h) = found(b, &k).await; // from L2, promoted into B's L1
        assert_eq!(tier(&h), Tier::L2);
        let (_, h) = lookup(b, &k).await.expect("L1 hit on B");
        assert_eq!(tier(&h), Tier::L1);

        let t = Instant::now();
        let r = match kind {
            "url" => purge(pa, PurgeKind::Url, url).await,
            "prefix" => purge(pa, PurgeKind::Prefix, "/bc/").await,
            _ => purge(pa, PurgeKind::Tag, tag).await,
        };
        assert!(r.l2_ok && r.broadcast, "{kind}: {r:?}");
        assert_eq!((r.l1_removed, r.l2_removed), (1, 1), "{kind}");
        while b.l1().get(&storage_key(&k)).is_some() {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{kind} purge did not reach B"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eprintln!("{kind} purge reached B's L1 after {:?}", t.elapsed());
        assert!(
            lookup(b, &k).await.is_none(),
            "{kind}: gone from both tiers"
        );
    }
}

/// The request plan probes L1 once and the storage lookup that follows uses that probe
/// instead of probing again: once, for exactly that key. A later lookup of the same key
/// (after waiting on the cache lock) and a lookup of another key probe L1 themselves.
#[tokio::test(flavor = "multi_thread")]
async fn the_plans_l1_probe_is_used_once_by_the_next_lookup() {
    let cfg = config(8 << 20, None);
    let c = leak(&cfg);
    let mut k = key("/probe/a");
    let probe = c.probe_l1(&k);
    assert!(probe.found().is_none(), "nothing stored yet");
    probe.remember_in(&mut k);
    // another request stores the entry between the probe and the lookup
    write(c, &key("/probe/a"), &meta(60, "/probe/a", &[]), b"v")
        .await
        .expect("write");
    assert!(
        lookup(c, &k).await.is_none(),
        "the first lookup uses the probe: a miss"
    );
    let (_, h) = lookup(c, &k)
        .await
        .expect("the next lookup probes L1 again");
    assert_eq!(tier(&h), Tier::L1);

    // a probe that found the entry hands it over even if it left L1 since
    let mut k = key("/probe/a");
    let probe = c.probe_l1(&k);
    assert!(probe.found().is_some());
    probe.remember_in(&mut k);
    c.clear_l1();
    let (_, h) = lookup(c, &k).await.expect("the probed entry is used");
    assert_eq!(body(h).await, b"v");
    assert!(lookup(c, &k).await.is_none(), "then L1 is probed again");

    // the probe is for exactly its key: a Vary variant looks itself up
    let mut k = key("/probe/b");
    let probe = c.probe_l1(&k);
    assert!(probe.found().is_none());
    probe.remember_in(&mut k);
    let mut variant = key("/probe/b");
    variant.set_variance_key([9u8; 16]);
    let mut m = meta(60, "/probe/b", &[]);
    m.set_variance_key([9u8; 16]);
    write(c, &variant, &m, b"variant").await.expect("write");
    k.set_variance_key([9u8; 16]);
    assert!(
        lookup(c, &k).await.is_some(),
        "a variant is not the probed key"
    );
}
