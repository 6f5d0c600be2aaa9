//! Bounded purge bookkeeping, against real `redis-server` processes: Redis index members
//! expire with their entries, a prefix purge of 100,000 entries runs in bounded batches
//! without opening the breaker reads depend on, purge broadcasts are signed with the channel
//! secret, and write purges that Redis cannot take wait in a bounded backlog, coalesced and
//! never widened, until they land.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora_http::RequestHeader;
use sidecache::cache::storage::codec;
use sidecache::cache::storage::entry::StoredEntry;
use sidecache::cache::storage::l2::{EntryWrite, PURGE_URLS_PER_BATCH};
use sidecache::cache::storage::{storage_key, EntryContext, TieredCache};
use sidecache::config::{self, CacheConfig, Secret};
use sidecache::purge::broadcast::{ChannelKey, PurgeMessage};
use sidecache::purge::{PurgeKind, PurgeService};
use sidecache::routing::Router;
use sidecache::telemetry::metrics::{metrics, L2Op, L2Result, MessageDrop};
use support::delay_proxy::{DelayProxy, Direction};
use support::redis::RedisServer;
use support::storage::{cache_config, key, leak, lookup, meta, meta_at, purge, purges, wait_for};

const CHANNEL: &str = "test:purge";

fn zcard(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query(&mut redis.conn())
        .expect("ZCARD")
}

/// Subscribers on the purge channel, as Redis counts them.
fn subscribers(redis: &RedisServer) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query(&mut redis.conn())
        .expect("PUBSUB NUMSUB");
    n
}

/// An entry for the L1 of `c` (no Redis involved) under `url`.
fn entry(url: &str) -> StoredEntry {
    StoredEntry::from_meta(
        &meta(300, url, &[]),
        EntryContext {
            url: url.into(),
            route: "test".into(),
            tags: vec![],
            ..Default::default()
        },
        Bytes::from_static(b"x"),
    )
}

fn l1_key(i: u64) -> [u8; 16] {
    let mut k = [0x5au8; 16];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn l1_has(c: &TieredCache, i: u64) -> bool {
    c.l1().get(&l1_key(i)).is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn index_members_expire_with_their_entries() {
    let redis = RedisServer::start();
    let cfg = cache_config(0, Some(redis.url()), "idx:");
    let c = leak(&cfg);
    let l2 = c.l2().expect("l2");
    // 100 unique urls that live about a second (fresh until 4 s ago + 5 s slack) ...
    let mut short = Vec::new();
    for i in 0..100 {
        let url = format!("/idx/short/{i}");
        let m = meta_at(
            SystemTime::now() - Duration::from_secs(4),
            0,
            0,
            &url,
            &["t:idx"],
        );
        let k = key(&url);
        support::storage::write(c, &k, &m, b"s")
            .await
            .expect("write");
        short.push(l2.entry_key(&storage_key(&k)));
    }
    let last = short.last().cloned().unwrap_or_default();
    wait_for("the short entries stored", || redis.exists(&last)).await;
    assert!(zcard(&redis, &l2.urls_key()) >= 100);
    wait_for("the short entries expired", || {
        short.iter().all(|k| !redis.exists(k))
    })
    .await;
    // ... then stores of long-lived entries trim what expired (up to 64 urls each)
    for url in ["/idx/long/1", "/idx/long/2"] {
        let k = key(url);
        support::storage::write(c, &k, &meta(300, url, &["t:idx"]), b"l")
            .await
            .expect("write");
        let rk = l2.entry_key(&storage_key(&k));
        wait_for("a long entry stored", || redis.exists(&rk)).await;
    }
    assert_eq!(zcard(&redis, &l2.urls_key()), 2, "url set");
    assert_eq!(zcard(&redis, &l2.url_expiry_key()), 2, "url expiry set");
    assert_eq!(zcard(&redis, &l2.tag_key("t:idx")), 2, "tag index");
    assert!(
        redis.keys("idx:v2:url:/idx/short/*").is_empty(),
        "url indexes of expired entries"
    );
}

/// A prefix purge of 100,000 L2 entries: every entry goes, in bounded batches, while reads
/// of another entry keep being served from Redis and the read breaker (one failure opens it
/// here) stays closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_purge_of_100000_entries_runs_in_batches_without_opening_the_read_breaker() {
    const N: u64 = 100_000;
    let redis = RedisServer::start();
    let mut cfg = cache_config(0, Some(redis.url()), "bulk:");
    if let Some(l2) = cfg.l2.as_mut() {
        l2.breaker_failures = 1;
    }
    let c = leak(&cfg);
    let l2 = c.l2().expect("l2");
    // one ordinary store (it loads the script and learns the generation), then the rest
    // pipelined
    let other = key("/other/1");
    support::storage::write(c, &other, &meta(300, "/other/1", &[]), b"other")
        .await
        .expect("write");
    let since = l2.seen_generation().expect("a generation");
    let mut template = entry("/bulk/");
    let mut conn = redis.conn();
    for chunk in (0..N).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            template.ctx.url = format!("/bulk/{i}");
            let value = codec::encode(&template);
            let write = EntryWrite {
                key: &l1_key(*i),
                value: &value,
                ttl: Duration::from_secs(300),
                url: &template.ctx.url,
                tags: &[],
                since,
            };
            pipe.add_command(l2.store_command(&write)).ignore();
        }
        let () = pipe.query(&mut conn).expect("pipelined stores");
    }
    assert_eq!(zcard(&redis, &l2.urls_key()), N + 1);

    let stop = Arc::new(AtomicBool::new(false));
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = tokio::spawn({
        let (stop, hits, misses) = (stop.clone(), hits.clone(), misses.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let counter = match lookup(c, &key("/other/1")).await {
                    Some(_) => &hits,
                    None => &misses,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let batches = || {
        metrics()
            .l2_operations
            .with_label_values(&[L2Op::Purge.label(), L2Result::Ok.label()])
            .get()
    };
    let batches_before = batches();
    let r = purge(purges(c, &cfg), PurgeKind::Prefix, "/bulk/").await;
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("reader");

    assert!(r.l2_ok, "{r:?}");
    assert_eq!(r.l2_removed, N);
    assert!(
        batches() - batches_before >= N / PURGE_URLS_PER_BATCH as u64,
        "purged in {} batches",
        batches() - batches_before
    );
    assert_eq!(c.l2_healthy(), Some(true), "the read breaker stayed closed");
    let (hits, misses) = (hits.load(Ordering::SeqCst), misses.load(Ordering::SeqCst));
    assert!(
        hits > 0 && misses == 0,
        "reads during the purge: {hits} hits, {misses} misses"
    );
    assert_eq!(
        redis.keys("bulk:v2:e:*").len(),
        1,
        "only the other entry is left"
    );
    assert_eq!(zcard(&redis, &l2.urls_key()), 1);
}

/// Three instances on one channel, A and B sharing a secret and C with another: forged
/// messages (unsigned, or signed with a wrong secret) purge nothing; A's signed purge reaches
/// B; A and C ignore each other.
#[tokio::test(flavor = "multi_thread")]
async fn purge_broadcasts_are_signed_and_forgeries_are_dropped() {
    let redis = RedisServer::start();
    let with_secret = |secret: &str| {
        let mut cfg = cache_config(8 << 20, Some(redis.url()), "sig:");
        if let Some(l2) = cfg.l2.as_mut() {
            l2.channel_secret = Some(Secret::new(secret));
        }
        cfg
    };
    let (cfg_ab, cfg_c) = (
        with_secret("the-shared-secret-of-a-and-b"),
        with_secret("the-secret-of-c-alone"),
    );
    let (a, b, c) = (leak(&cfg_ab), leak(&cfg_ab), leak(&cfg_c));
    let (pa, pb, pc) = (purges(a, &cfg_ab), purges(b, &cfg_ab), purges(c, &cfg_c));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    for p in [pa, pb, pc] {
        tokio::spawn(p.run_subscriber(stop.clone()));
    }
    wait_for("three subscribers", || subscribers(&redis) == 3).await;
    for cache in [a, b, c] {
        assert!(cache.l1().insert(l1_key(1), entry("/sig/1")));
        assert!(cache.l1().insert(l1_key(2), entry("/sig/2")));
    }
    let dropped = |reason: MessageDrop| {
        metrics()
            .purge_messages_dropped
            .with_label_values(&[reason.label()])
            .get()
    };
    let publish = |payload: String| {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload)
            .query(&mut redis.conn())
            .expect("PUBLISH");
    };
    let everything = PurgeMessage::new("intruder", PurgeKind::Prefix, "/", 1)
        .encode()
        .expect("encode");

    // a forged, unsigned purge of everything: dropped by all three
    let before = dropped(MessageDrop::Unsigned);
    publish(everything.clone());
    wait_for("three unsigned drops", || {
        dropped(MessageDrop::Unsigned) >= before + 3
    })
    .await;
    // one signed with a secret nobody has: dropped too
    let before = dropped(MessageDrop::BadSignature);
    publish(
        ChannelKey::new("a-guessed-secret!")
            .sign(&everything)
            .expect("sign"),
    );
    wait_for("three bad signatures", || {
        dropped(MessageDrop::BadSignature) >= before + 3
    })
    .await;
    for cache in [a, b, c] {
        assert!(l1_has(cache, 1) && l1_has(cache, 2), "a forgery purged L1");
    }

    // A's signed purge reaches B, and C drops it
    let before = dropped(MessageDrop::BadSignature);
    assert!(purge(pa, PurgeKind::Url, "/sig/1").await.broadcast);
    wait_for("B applies A's purge", || !l1_has(b, 1)).await;
    wait_for("C drops A's purge", || {
        dropped(MessageDrop::BadSignature) > before
    })
    .await;
    assert!(l1_has(c, 1), "C applied a purge signed with another secret");

    // C's signed purge is dropped by A and B
    let before = dropped(MessageDrop::BadSignature);
    assert!(purge(pc, PurgeKind::Url, "/sig/2").await.broadcast);
    wait_for("A and B drop C's purge", || {
        dropped(MessageDrop::BadSignature) >= before + 2
    })
    .await;
    assert!(!l1_has(c, 2), "C purged its own L1");
    assert!(l1_has(a, 2) && l1_has(b, 2), "C's purge reached A or B");
}

/// A router whose `GET /things/:id` is cached: each write there purges its url and its query
/// variants; writes elsewhere purge nothing (no default origin mode).
fn router() -> Router {
    let text = "[proxy]\ndefault_upstream = \"b\"\n[[upstreams]]\nname = \"b\"\naddress = \"127.0.0.1:1\"\n\
                [[routes]]\nname = \"things\"\nmatch = \"GET /things/:id\"\nttl = \"5m\"\n\
                [cache]\ndefault_mode = \"off\"\n";
    let config = config::parse(text, None, &HashMap::new()).expect("config");
    Router::new(&config)
}

/// Write purges that Redis cannot take (it is held in the proxy) wait in the backlog: each is
/// applied to L1 at once, writes to one target coalesce, nothing is widened (an entry no
/// write named stays in Redis and in another instance's L1), and once Redis answers every
/// waiting purge lands, in Redis and on the other instance.
#[tokio::test(flavor = "multi_thread")]
async fn write_purges_redis_cannot_take_wait_coalesced_and_never_widen() {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.addr()).await;
    let slow = |url: String| -> CacheConfig {
        let mut cfg = cache_config(8 << 20, Some(url), "queue:");
        if let Some(l2) = cfg.l2.as_mut() {
            l2.write_timeout = Duration::from_millis(300);
            l2.breaker_cooldown = Duration::from_millis(200);
        }
        cfg
    };
    let (cfg_a, cfg_b) = (slow(proxy.redis_url()), slow(redis.url()));
    let (a, b) = (leak(&cfg_a), leak(&cfg_b));
    let pa: &'static PurgeService = purges(a, &cfg_a);
    let pb = purges(b, &cfg_b);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(pb.run_subscriber(stop));
    wait_for("B subscribed", || subscribers(&redis) == 1).await;

    let writes = 300u64;
    for i in 0..writes {
        assert!(a.l1().insert(l1_key(i), entry(&format!("/things/{i}"))));
        assert!(b.l1().insert(l1_key(i), entry(&format!("/things/{i}"))));
    }
    assert!(b.l1().insert(l1_key(writes), entry("/elsewhere")));
    let last = key(&format!("/things/{}", writes - 1));
    let never_purged = key("/things-in-l2-only");
    for (k, url) in [
        (&last, format!("/things/{}", writes - 1)),
        (&never_purged, "/things-in-l2-only".into()),
    ] {
        support::storage::write(b, k, &meta(300, &url, &[]), b"l2")
            .await
            .expect("write");
    }
    let in_l2 =
        |k: &pingora_cache::CacheKey| redis.exists(&b.l2().expect("l2").entry_key(&storage_key(k)));
    wait_for("the L2 entries", || in_l2(&last) && in_l2(&never_purged)).await;

    let coalesced = || metrics().purges_coalesced.get();
    let coalesced_before = coalesced();
    proxy.delay_on(Direction::ToServer);
    let router = router();
    let put = |path: String| RequestHeader::build("PUT", path.as_bytes(), None).expect("request");
    for i in 0..writes {
        pa.after_write(&router, &put(format!("/things/{i}")), None, "http://test");
    }
    // the same target again and again, and a path nothing caches
    for _ in 0..50 {
        pa.after_write(&router, &put("/things/0".into()), None, "http://test");
        pa.after_write(&router, &put("/uncached/0".into()), None, "http://test");
    }
    for i in 0..writes {
        assert!(!l1_has(a, i), "write {i}'s purge did not reach L1 at once");
    }
    // each write: its url and its query variants; the repeats took the waiting ones' place
    let waiting = pa.backlog_len() as u64;
    assert!(
        waiting <= 2 * writes + 2 && waiting >= 2 * writes - 2 * 4,
        "{waiting} purges waiting for {writes} writes"
    );
    assert!(
        coalesced() >= coalesced_before + 50,
        "the repeats were not coalesced"
    );
    assert!(in_l2(&last), "something reached Redis while it was held");

    proxy.delay_off(Direction::ToServer);
    wait_for("the backlog drained", || pa.backlog_len() == 0).await;
    wait_for("every purge settled", || a.purge_log().sizes().1 == 0).await;
    assert!(!in_l2(&last), "the waiting purge never reached Redis");
    wait_for("they reached B", || (0..writes).all(|i| !l1_has(b, i))).await;
    // nothing was widened
    assert!(in_l2(&never_purged), "an entry no write named left Redis");
    assert!(l1_has(b, writes), "an entry no write named left B's L1");
}
