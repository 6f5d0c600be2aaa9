//! Caching behaviour on the wire (L1 only, no Redis): route policies, keys, freshness, stale
//! serving, coalescing, the never-share-a-user's-response rules, Vary, invalidation and the
//! object size bound.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use support::backend::{big_pattern_checksum, start_backend};
use support::http::{get, get_digest, request};
use support::sidecache::{Sidecache, SidecacheOptions};

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "2s"

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"
connect_timeout = "300ms"
read_timeout = "5s"

[[rewrites]]
source = "/o/:path*"
destination = "backend:/:path*"

[[routes]]
name = "special_event"
match = "GET /api/events/special/context"
ttl = "30s"

[[routes]]
name = "event_context"
match = "GET /api/events/:id/context"
ttl = "1s"

[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "30s"
key = { query = ["include", "lang"], headers = ["accept-language"] }
tags = ["contractor:{id}"]

[[routes]]
name = "concierge_state"
match = "GET /api/concierge/sessions/:id/state"
ttl = "until-invalidated"
max_ttl = "3s"
invalidate_on = ["POST /api/concierge/sessions/:id/end"]

[[routes]]
name = "diagram"
match = "GET /api/state-machine/diagram"
ttl = "1s"
stale_while_revalidate = "30s"

[[routes]]
name = "metadata"
match = "GET /api/state-machine/metadata"
ttl = "1s"
stale_if_error = "60s"

[[routes]]
name = "respond"
match = "GET /test/respond"
ttl = "30s"

[[routes]]
name = "per_user"
match = "GET /test/echo"
ttl = "30s"
key = { headers = ["authorization"] }

[[routes]]
name = "big"
match = "GET /test/big"
ttl = "30s"

[[routes]]
name = "no_cache_here"
match = "GET /api/admin/*"
cache = false

[cache]
default_mode = "origin"
lock_timeout = "5s"

[cache.l1]
max_bytes = "4MiB"
max_object_bytes = "1MiB"
"#;

async fn setup(delay_ms: u64) -> (sidecache::demo::Backend, Sidecache) {
    let backend = start_backend(Duration::from_millis(delay_ms)).await;
    let sc = Sidecache::start(SidecacheOptions::new(CONFIG).backend(backend.addr())).await;
    (backend, sc)
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_l1_with_age_and_cache_status() {
    let (backend, sc) = setup(20).await;
    let url = sc.url("/api/contractors/42/bundle");
    let first = get(&url, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.header("cache-status"),
        Some("sidecache; fwd=miss; stored")
    );
    let second = get(&url, &[]).await;
    assert_eq!(second.x_cache(), "HIT-L1");
    assert_eq!(
        second.header("cache-status"),
        Some("sidecache; hit; detail=l1")
    );
    assert_eq!(second.body, first.body, "the stored copy is served");
    let age: u64 = second
        .header("age")
        .expect("Age on a hit")
        .parse()
        .expect("numeric Age");
    assert!(age <= 30);
    assert_eq!(backend.stats().hits("/api/contractors/42/bundle"), 1);

    let head = request("HEAD", &url, &[], Bytes::new()).await;
    assert_eq!(head.x_cache(), "HIT-L1");
    assert!(head.body.is_empty());
    assert_eq!(backend.stats().hits("/api/contractors/42/bundle"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_and_route_order() {
    let (backend, sc) = setup(0).await;
    let short = sc.url("/api/events/1/context");
    let special = sc.url("/api/events/special/context");
    assert_eq!(get(&short, &[]).await.x_cache(), "MISS");
    assert_eq!(get(&special, &[]).await.x_cache(), "MISS");
    assert_eq!(get(&short, &[]).await.x_cache(), "HIT-L1");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get(&short, &[]).await.x_cache(), "MISS", "1s route expired");
    assert_eq!(
        get(&special, &[]).await.x_cache(),
        "HIT-L1",
        "the earlier, more specific route (30s) won"
    );
    assert_eq!(backend.stats().hits("/api/events/1/context"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rules_query_subset_sorted_and_header() {
    let (backend, sc) = setup(0).await;
    let path = "/api/contractors/7/bundle";
    assert_eq!(
        (get(&sc.url(&format!("{path}?include=a&lang=x&utm=1")), &[]).await).x_cache(),
        "MISS"
    );
    // same listed params, other order, unlisted param changed -> same entry
    assert_eq!(
        (get(&sc.url(&format!("{path}?utm=2&lang=x&include=a")), &[]).await).x_cache(),
        "HIT-L1"
    );
    // a listed param changed -> another entry
    assert_eq!(
        (get(&sc.url(&format!("{path}?include=b&lang=x")), &[]).await).x_cache(),
        "MISS"
    );
    // key header changes the entry
    let de = [("accept-language", "de")];
    assert_eq!(
        (get(&sc.url(&format!("{path}?include=a&lang=x")), &de).await).x_cache(),
        "MISS"
    );
    assert_eq!(
        (get(&sc.url(&format!("{path}?lang=x&include=a")), &de).await).x_cache(),
        "HIT-L1"
    );
    assert_eq!(backend.stats().hits(path), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn until_invalidated_outlives_short_ttls_respects_max_ttl_and_ends_with_the_session() {
    let (backend, sc) = setup(0).await;
    let state = sc.url("/api/concierge/sessions/s1/state");
    let first = get(&state, &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&state, &[]).await.x_cache(),
        "HIT-L1",
        "alive past a 1s route's TTL"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        get(&state, &[]).await.x_cache(),
        "MISS",
        "max_ttl (3s) bounds it"
    );
    assert_eq!(get(&state, &[]).await.x_cache(), "HIT-L1");

    // the session ends: invalidate_on purges this session's state, not another's
    let other = sc.url("/api/concierge/sessions/s2/state");
    assert_eq!(get(&other, &[]).await.x_cache(), "MISS");
    let end = request(
        "POST",
        &sc.url("/api/concierge/sessions/s1/end"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(end.status, 200);
    let after = wait_for_x_cache(&state, "MISS").await;
    assert_ne!(after.json()["generation"], first.json()["generation"]);
    assert_eq!(get(&other, &[]).await.x_cache(), "HIT-L1");
    assert_eq!(backend.stats().hits("/api/concierge/sessions/s1/state"), 3);
}

/// Invalidation runs in the background after the write's response: poll briefly.
async fn wait_for_x_cache(url: &str, want: &str) -> support::http::Resp {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = get(url, &[]).await;
        if r.x_cache() == want || std::time::Instant::now() > deadline {
            assert_eq!(r.x_cache(), want, "{url}");
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_once_then_refreshes() {
    let (backend, sc) = setup(50).await;
    let url = sc.url("/api/state-machine/diagram");
    assert_eq!(get(&url, &[]).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = get(&url, &[]).await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.status, 200);
    // the background refresh lands; the next request is a fresh hit
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = get(&url, &[]).await;
        if r.x_cache() == "HIT-L1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refreshed: {}",
            r.x_cache()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.stats().hits("/api/state-machine/diagram"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_serves_stale_while_the_backend_is_down() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/api/state-machine/metadata");
    let fresh = get(&url, &[]).await;
    assert_eq!(fresh.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    backend.stop().await;
    let stale = get(&url, &[]).await;
    assert_eq!(stale.status, 200, "served stale, not an error");
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body, fresh.body);
    // an uncached route has nothing to fall back on
    let uncached = get(&sc.url("/api/admin/users"), &[]).await;
    assert_eq!(uncached.status, 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_concurrent_misses_make_one_backend_request() {
    let (backend, sc) = setup(300).await;
    let url = sc.url("/api/contractors/99/bundle");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { get(&url, &[]).await }));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, 200);
    }
    assert_eq!(backend.stats().hits("/api/contractors/99/bundle"), 1);
    let metrics = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("sidecache_coalesced_requests_total{route=\"contractor_bundle\"}"),
        "coalesced requests are counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_specific_responses_are_never_shared() {
    let (backend, sc) = setup(0).await;
    for (query, why) in [
        ("set-cookie=session%3Dalice", "Set-Cookie"),
        ("cache-control=private", "private"),
        ("cache-control=no-store", "no-store"),
    ] {
        let url = sc.url(&format!("/test/respond?{query}"));
        let a = get(&url, &[]).await;
        let b = get(&url, &[]).await;
        assert_eq!(a.x_cache(), "UNCACHEABLE", "{why}");
        assert_eq!(b.x_cache(), "UNCACHEABLE", "{why}");
        assert_ne!(
            a.json()["generation"],
            b.json()["generation"],
            "{why}: both from the origin"
        );
    }
    // credentials bypass the cache unless the route keys on them
    let url = sc.url("/test/respond?who=1");
    let alice = get(&url, &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.x_cache(), "BYPASS");
    let anon = get(&url, &[]).await;
    assert_eq!(anon.x_cache(), "MISS");
    let bob = get(&url, &[("cookie", "sid=bob")]).await;
    assert_eq!(
        bob.x_cache(),
        "BYPASS",
        "never the anonymous copy for a cookie holder"
    );
    assert_eq!(
        backend.stats().hits("/test/respond"),
        9,
        "3 x 2 uncacheable + alice + anon + bob"
    );
}

/// Why the cache was not used reaches the client as the RFC 9211 `detail` of `Cache-Status`:
/// the bypass reason of the request, or the reason its response was not stored.
#[tokio::test(flavor = "multi_thread")]
async fn cache_status_names_why_the_cache_was_not_used() {
    let (_backend, sc) = setup(0).await;
    let respond = sc.url("/test/respond?who=detail");
    for (method, url, headers, want) in [
        (
            "GET",
            respond.clone(),
            vec![("authorization", "Bearer a")],
            "sidecache; fwd=bypass; detail=authorization",
        ),
        (
            "GET",
            respond.clone(),
            vec![("cookie", "sid=1")],
            "sidecache; fwd=bypass; detail=cookie",
        ),
        (
            "POST",
            sc.url("/test/echo"),
            vec![],
            "sidecache; fwd=bypass; detail=method",
        ),
        (
            "GET",
            sc.url("/api/admin/users"),
            vec![],
            "sidecache; fwd=bypass; detail=route-disabled",
        ),
        (
            "GET",
            sc.url("/test/respond?cache-control=private"),
            vec![],
            "sidecache; fwd=uri-miss; detail=private",
        ),
        (
            "GET",
            sc.url("/test/respond?set-cookie=s%3D1"),
            vec![],
            "sidecache; fwd=uri-miss; detail=set-cookie",
        ),
        (
            "GET",
            sc.url("/test/respond?cache-control=no-store"),
            vec![],
            "sidecache; fwd=uri-miss; detail=no-store",
        ),
        (
            "GET",
            sc.url("/test/respond?status=500"),
            vec![],
            "sidecache; fwd=uri-miss; detail=status",
        ),
        (
            "GET",
            sc.url("/o/test/respond?x=no-headers"),
            vec![],
            "sidecache; fwd=uri-miss; detail=no-freshness",
        ),
    ] {
        let r = request(method, &url, &headers, Bytes::new()).await;
        assert_eq!(
            r.header("cache-status"),
            Some(want),
            "{method} {url} {headers:?}"
        );
    }
    // X-Cache keeps its coarse value
    let r = get(&respond, &[("authorization", "Bearer a")]).await;
    assert_eq!(r.x_cache(), "BYPASS");
}

/// A URL whose response cannot be stored is remembered (hit-for-miss): its next requests skip
/// the cache lock and go to the origin side by side, none waiting on another's fetch.
#[tokio::test(flavor = "multi_thread")]
async fn uncacheable_urls_do_not_wait_on_each_other() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/o/test/respond?delay_ms=200&v=hfm");
    assert_eq!(get(&url, &[]).await.x_cache(), "UNCACHEABLE");
    let metrics = || {
        let admin = sc.admin_url("/metrics");
        async move { get(&admin, &[]).await.text() }
    };
    let coalesced =
        |m: &str| support::http::metric(m, "sidecache_coalesced_requests_total{route=\"default\"}");
    let before = coalesced(&metrics().await);
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let url = url.clone();
        all.spawn(async move { get(&url, &[]).await });
    }
    while let Some(r) = all.join_next().await {
        let r = r.expect("request task");
        assert_eq!((r.status, r.x_cache()), (200, "UNCACHEABLE"));
        assert_eq!(
            r.header("cache-status"),
            Some("sidecache; fwd=uri-miss; detail=no-freshness")
        );
    }
    assert_eq!(
        backend.stats().hits("/test/respond"),
        101,
        "every request reached the origin"
    );
    assert_eq!(
        coalesced(&metrics().await),
        before,
        "none waited on another's fetch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_keyed_on_authorization_caches_per_user() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/test/echo");
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    assert_eq!(get(&url, &alice).await.x_cache(), "MISS");
    let a2 = get(&url, &alice).await;
    assert_eq!(a2.x_cache(), "HIT-L1");
    assert_eq!(a2.json()["headers"]["authorization"], "Bearer alice");
    let b1 = get(&url, &bob).await;
    assert_eq!(b1.x_cache(), "MISS");
    assert_eq!(b1.json()["headers"]["authorization"], "Bearer bob");
    assert_eq!(backend.stats().hits("/test/echo"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_is_honoured_in_override_and_origin_modes() {
    let (_backend, sc) = setup(0).await;
    for path in [
        "/test/respond?vary=accept-language",
        "/o/test/respond?vary=accept-language&cache-control=max-age%3D60",
    ] {
        let url = sc.url(path);
        let en = [("accept-language", "en")];
        let de = [("accept-language", "de")];
        let en1 = get(&url, &en).await;
        assert_eq!(en1.x_cache(), "MISS", "{path}");
        assert_eq!(get(&url, &en).await.x_cache(), "HIT-L1", "{path}");
        let de1 = get(&url, &de).await;
        assert_eq!(de1.x_cache(), "MISS", "{path}: another variant");
        assert_ne!(de1.json()["generation"], en1.json()["generation"]);
        assert_eq!(get(&url, &de).await.x_cache(), "HIT-L1", "{path}");
        let en2 = get(&url, &en).await;
        assert_eq!(en2.x_cache(), "HIT-L1", "{path}");
        assert_eq!(en2.json()["generation"], en1.json()["generation"]);
    }
    let star = sc.url("/test/respond?vary=*");
    get(&star, &[]).await;
    assert_eq!(
        get(&star, &[]).await.x_cache(),
        "UNCACHEABLE",
        "Vary: * is never stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_mode_follows_cache_control_for_unmatched_paths() {
    let (backend, sc) = setup(0).await;
    let cached = sc.url("/o/test/respond?cache-control=max-age%3D60&n=1");
    assert_eq!(get(&cached, &[]).await.x_cache(), "MISS");
    assert_eq!(get(&cached, &[]).await.x_cache(), "HIT-L1");
    let plain = sc.url("/o/test/respond?n=2");
    assert_eq!(
        get(&plain, &[]).await.x_cache(),
        "UNCACHEABLE",
        "no freshness, no store"
    );
    assert_eq!(get(&plain, &[]).await.x_cache(), "UNCACHEABLE");
    assert_eq!(backend.stats().hits("/test/respond"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_post_invalidates_the_url() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/test/echo");
    assert_eq!(get(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(get(&url, &[]).await.x_cache(), "HIT-L1");
    let post = request("POST", &url, &[], Bytes::from_static(b"{}")).await;
    assert_eq!(post.status, 200);
    assert_eq!(
        post.x_cache(),
        "BYPASS",
        "unsafe methods never come from the cache"
    );
    wait_for_x_cache(&url, "MISS").await;
    assert_eq!(backend.stats().hits("/test/echo"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_the_size_limit_stream_through_uncached() {
    let (backend, sc) = setup(0).await;
    let n: u64 = 2 * 1024 * 1024;
    let url = sc.url(&format!("/test/big?bytes={n}"));
    for _ in 0..2 {
        let d = get_digest(&url, &[]).await;
        assert_eq!(d.status, 200);
        assert_eq!(d.bytes, n);
        assert_eq!(d.checksum, big_pattern_checksum(n));
    }
    assert_eq!(
        backend.stats().hits("/test/big"),
        2,
        "never served from cache"
    );
    let small = sc.url("/test/big?bytes=1000");
    get(&small, &[]).await;
    assert_eq!(
        get(&small, &[]).await.x_cache(),
        "HIT-L1",
        "small objects are cached"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_stays_within_its_byte_budget_under_a_flood_of_keys() {
    let (_backend, sc) = setup(0).await;
    let mut client = support::http::Client::new();
    for id in 0..1200 {
        let r = client
            .get(&sc.url(&format!("/api/contractors/{id}/bundle")), &[])
            .await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = get(&sc.admin_url("/metrics"), &[]).await.text();
    let value = |name: &str| support::http::metric(&metrics, name);
    let bytes = value("sidecache_l1_bytes");
    let capacity = value("sidecache_l1_capacity_bytes");
    let entries = value("sidecache_l1_entries");
    assert_eq!(capacity, 4.0 * 1024.0 * 1024.0);
    // moka applies a batch of up to 64 writes before it evicts for them, so the weight in L1
    // may run that far past the budget; with a 4 MiB budget and entries weighed at their
    // whole heap cost (≈9 KiB here) that batch alone is 14 % of it.
    let batch = 64.0 * bytes / entries.max(1.0);
    assert!(
        bytes > 0.0 && bytes <= capacity * 1.05 + batch,
        "{bytes} of {capacity} ({entries} entries)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_and_range_requests_are_answered_from_the_cache() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/test/respond?etag=%22v1%22&body=0123456789abcdef");
    let full = get(&url, &[]).await;
    assert_eq!(full.x_cache(), "MISS");
    let not_modified = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let range = get(&url, &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.x_cache(), "HIT-L1");
    assert_eq!(&range.body[..], &full.body[..10]);
    let plain = get(&url, &[]).await;
    assert_eq!(plain.x_cache(), "HIT-L1");
    assert_eq!(plain.body, full.body);
    assert_eq!(
        plain.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    assert_eq!(backend.stats().hits("/test/respond"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_entry_is_revalidated_with_a_304_and_refreshed() {
    let (backend, sc) = setup(0).await;
    let url = sc.url("/o/test/respond?etag=%22v7%22&cache-control=max-age%3D1");
    let first = get(&url, &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let revalidated = get(&url, &[]).await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(revalidated.status, 200);
    assert_eq!(
        revalidated.body, first.body,
        "the stored body, confirmed by a 304"
    );
    assert_eq!(
        get(&url, &[]).await.x_cache(),
        "HIT-L1",
        "freshness was updated"
    );
    assert_eq!(backend.stats().hits("/test/respond"), 2);
}
