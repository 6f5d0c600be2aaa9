//! Origin mode as an RFC 9111 shared cache (issue 11), against a scripted origin that answers
//! each request with exactly the status and headers a test gives it, and records what it was
//! asked. Each test names the RFC section it checks.

use crate::support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use support::http::{get, request, Resp};
use support::redis::RedisServer;
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{Sidecache, SidecacheOptions};

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"

[proxy]
default_upstream = "origin"

[[upstreams]]
name = "origin"
address = "{backend}"
read_timeout = "5s"

# origin mode, with stale windows of its own (which the origin's directives may forbid)
[[routes]]
name = "stale_ok"
match = "GET /stale/:id"
mode = "origin"
stale_while_revalidate = "60s"
stale_if_error = "60s"

# override mode: the route's TTL, but field-scoped directives still apply
[[routes]]
name = "override"
match = "GET /override/:id"
ttl = "60s"

# origin mode, keyed on the credential
[[routes]]
name = "per_user"
match = "GET /auth/:id"
mode = "origin"
key = { headers = ["authorization"] }

# origin mode, the client's directives are not honoured
[[routes]]
name = "deaf"
match = "GET /deaf/:id"
mode = "origin"
honor_request_directives = false

[cache]
default_mode = "origin"
"#;

async fn start(origin: &ScriptedOrigin, extra: &str) -> Sidecache {
    Sidecache::start(SidecacheOptions::new(format!("{CONFIG}{extra}")).backend(origin.addr())).await
}

/// An HTTP-date `offset` seconds from now.
fn date(offset: i64) -> String {
    let now = SystemTime::now();
    let t = if offset >= 0 {
        now + Duration::from_secs(offset.unsigned_abs())
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

fn age(r: &Resp) -> u64 {
    r.header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age in {:?}", r.headers))
}

fn ok(max_age: &str) -> Scripted {
    Scripted::ok("body").header("cache-control", max_age)
}

/// §4.2.3, §5.1: the origin's `Age` counts against freshness, and the `Age` sent on a hit is
/// the corrected initial age plus the time in the cache. Invalid values are ignored; huge
/// ones are 2^31.
#[tokio::test(flavor = "multi_thread")]
async fn age_from_the_origin_reduces_freshness() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    origin.script(
        "/age/stale",
        [ok("max-age=3600").header("age", "3600"), ok("max-age=3600")],
    );
    assert_eq!(get(&sc.url("/age/stale"), &[]).await.x_cache(), "MISS");
    assert_ne!(
        get(&sc.url("/age/stale"), &[]).await.x_cache(),
        "HIT-L1",
        "max-age=3600 with Age: 3600 is already stale"
    );
    assert_eq!(origin.hits("/age/stale"), 2);

    origin.script("/age/old", [ok("max-age=3600").header("age", "100")]);
    get(&sc.url("/age/old"), &[]).await;
    let hit = get(&sc.url("/age/old"), &[]).await;
    assert_eq!(hit.x_cache(), "HIT-L1");
    assert!(
        (100..110).contains(&age(&hit)),
        "corrected initial age + resident time: {}",
        age(&hit)
    );

    for (path, value) in [
        ("/age/abc", "abc"),
        ("/age/neg", "-7200"),
        ("/age/float", "7200.0"),
    ] {
        origin.script(path, [ok("max-age=3600").header("age", value)]);
        get(&sc.url(path), &[]).await;
        let hit = get(&sc.url(path), &[]).await;
        assert_eq!(hit.x_cache(), "HIT-L1", "Age: {value} is ignored");
        assert!(age(&hit) < 10, "Age: {value}");
    }
    origin.script(
        "/age/huge",
        [
            ok("max-age=3600").header("age", "2147483648"),
            ok("max-age=3600"),
        ],
    );
    get(&sc.url("/age/huge"), &[]).await;
    assert_ne!(
        get(&sc.url("/age/huge"), &[]).await.x_cache(),
        "HIT-L1",
        "2^31 and more: stale"
    );
    origin.script("/age/list", [ok("max-age=3600").header("age", "0, 7200")]);
    get(&sc.url("/age/list"), &[]).await;
    assert_eq!(
        get(&sc.url("/age/list"), &[]).await.x_cache(),
        "HIT-L1",
        "the first member counts"
    );
}

/// RFC 9110 §6.6.1 and RFC 9111 §4.2.3: the stored `Date` is the origin's, it is sent
/// unchanged on hits, and the apparent age it implies counts.
#[tokio::test(flavor = "multi_thread")]
async fn the_origin_date_is_kept_on_hits() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    let sent = date(-100);
    origin.script("/date", [ok("max-age=3600").header("date", &sent)]);
    let miss = get(&sc.url("/date"), &[]).await;
    assert_eq!(miss.header("date"), Some(sent.as_str()));
    let hit = get(&sc.url("/date"), &[]).await;
    assert_eq!(hit.x_cache(), "HIT-L1");
    assert_eq!(
        hit.header("date"),
        Some(sent.as_str()),
        "not rewritten on a hit"
    );
    assert!(age(&hit) >= 99, "apparent age: {}", age(&hit));
}

/// §5.3, §4.2.1: freshness from `Expires` is `Expires − Date` on the origin's clock; an
/// invalid `Expires` means already stale; `Expires` is ignored beside `max-age`.
#[tokio::test(flavor = "multi_thread")]
async fn expires_counts_from_the_origin_date() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    origin.script(
        "/expires/fresh",
        [Scripted::ok("x").header("expires", &date(600))],
    );
    get(&sc.url("/expires/fresh"), &[]).await;
    assert_eq!(
        get(&sc.url("/expires/fresh"), &[]).await.x_cache(),
        "HIT-L1"
    );
    // The origin's clock runs ahead: its Expires is in our future but before its own Date,
    // so the response was stale when it was sent.
    origin.script(
        "/expires/skew",
        [
            Scripted::ok("x")
                .header("date", &date(100))
                .header("expires", &date(50)),
            Scripted::ok("y"),
        ],
    );
    get(&sc.url("/expires/skew"), &[]).await;
    assert_ne!(
        get(&sc.url("/expires/skew"), &[]).await.x_cache(),
        "HIT-L1",
        "Expires before Date: stale"
    );
    assert_eq!(origin.hits("/expires/skew"), 2);

    origin.script(
        "/expires/bad",
        [Scripted::ok("x").header("expires", "0"), Scripted::ok("y")],
    );
    get(&sc.url("/expires/bad"), &[]).await;
    assert_ne!(
        get(&sc.url("/expires/bad"), &[]).await.x_cache(),
        "HIT-L1",
        "invalid: stale"
    );

    origin.script(
        "/expires/ignored",
        [ok("max-age=600").header("expires", &date(-600))],
    );
    get(&sc.url("/expires/ignored"), &[]).await;
    assert_eq!(
        get(&sc.url("/expires/ignored"), &[]).await.x_cache(),
        "HIT-L1"
    );
    assert_eq!(origin.hits("/expires/ignored"), 1);
}

/// §4.3.4, §3.2: a 304 freshens the stored response with its fields (not Content-Length),
/// in both tiers; later hits show the new fields, the 304's Date and a small Age.
#[tokio::test(flavor = "multi_thread")]
async fn a_304_freshens_the_stored_response_in_both_tiers() {
    let redis = RedisServer::start();
    let origin = ScriptedOrigin::start().await;
    let l2 = format!("\n[cache.l2]\nurl = \"{}\"\n", redis.url());
    // two sidecars of one API, each reached by its own address
    let shared = CONFIG.replace(
        "[cache]\ndefault_mode = \"origin\"",
        "[cache]\ndefault_mode = \"origin\"\nkey_host = false",
    );
    let a = Sidecache::start(SidecacheOptions::new(format!("{shared}{l2}")).backend(origin.addr()))
        .await;
    origin.script(
        "/revalidate",
        [
            Scripted::ok("payload")
                .header("cache-control", "max-age=1")
                .header("etag", "\"v1\"")
                .header("x-version", "1"),
            Scripted::status(304, "")
                .header("cache-control", "max-age=600")
                .header("etag", "\"v1\"")
                .header("x-version", "2")
                .header("date", &date(-5))
                .header("content-length", "0"),
        ],
    );
    assert_eq!(get(&a.url("/revalidate"), &[]).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let revalidated = get(&a.url("/revalidate"), &[]).await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(revalidated.text(), "payload");
    assert!(age(&revalidated) < 10, "{}", age(&revalidated));
    let seen = origin.seen("/revalidate");
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");

    let hit = get(&a.url("/revalidate"), &[]).await;
    assert_eq!(hit.x_cache(), "HIT-L1");
    assert_eq!(
        hit.header("x-version"),
        Some("2"),
        "the freshened header stays"
    );
    assert_eq!(
        hit.header("content-length"),
        Some("7"),
        "not the 304's Content-Length"
    );
    assert!(
        (5..15).contains(&age(&hit)),
        "the 304's Date counts: {}",
        age(&hit)
    );

    // L2 was rewritten too: another instance reads the freshened entry.
    let b = Sidecache::start(SidecacheOptions::new(format!("{shared}{l2}")).backend(origin.addr()))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&b.url("/revalidate"), &[]).await;
        if r.header("x-version") == Some("2") {
            assert!(r.x_cache().starts_with("HIT"), "{}", r.x_cache());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "L2 kept the old header"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(origin.hits("/revalidate"), 2);
}

/// §3, §4.2.2, RFC 9110 §15.1: any final status with an explicit lifetime is stored; the
/// heuristic (a fraction of the time since Last-Modified) only for heuristically cacheable
/// statuses; a 206 is passed through uncached.
#[tokio::test(flavor = "multi_thread")]
async fn statuses_and_heuristic_freshness() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    for status in [299, 400, 404, 410, 500] {
        let path = format!("/status/{status}");
        origin.script(
            &path,
            [Scripted::status(status, "s").header("cache-control", "max-age=60")],
        );
        assert_eq!(get(&sc.url(&path), &[]).await.status, status);
        let again = get(&sc.url(&path), &[]).await;
        assert_eq!(
            (again.status, again.x_cache()),
            (status, "HIT-L1"),
            "{status}"
        );
    }
    let modified = date(-10 * 86_400);
    origin.script(
        "/heuristic/ok",
        [Scripted::ok("h").header("last-modified", &modified)],
    );
    get(&sc.url("/heuristic/ok"), &[]).await;
    assert_eq!(get(&sc.url("/heuristic/ok"), &[]).await.x_cache(), "HIT-L1");
    origin.script(
        "/heuristic/created",
        [
            Scripted::status(201, "c").header("last-modified", &modified),
            Scripted::status(201, "c").header("last-modified", &modified),
        ],
    );
    let first = get(&sc.url("/heuristic/created"), &[]).await;
    assert_eq!(
        first.header("cache-status"),
        Some("sidecache; fwd=uri-miss; detail=no-freshness")
    );
    assert_eq!(
        get(&sc.url("/heuristic/created"), &[]).await.x_cache(),
        "UNCACHEABLE"
    );
    origin.script(
        "/partial",
        [
            Scripted::status(206, "part")
                .header("cache-control", "max-age=60")
                .header("content-range", "bytes 0-3/10"),
            Scripted::status(206, "part")
                .header("cache-control", "max-age=60")
                .header("content-range", "bytes 0-3/10"),
        ],
    );
    assert_eq!(get(&sc.url("/partial"), &[]).await.x_cache(), "UNCACHEABLE");
    assert_eq!(get(&sc.url("/partial"), &[]).await.status, 206);
    assert_eq!(origin.hits("/partial"), 2, "a 206 is never stored");
}

/// §4.2.4, §5.2.2 (and RFC 5861): must-revalidate, proxy-revalidate, s-maxage and no-cache
/// forbid serving stale even where the route allows it; the origin's own
/// stale-while-revalidate is honoured, with the right Age and Cache-Status.
#[tokio::test(flavor = "multi_thread")]
async fn stale_rules() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    for (n, cc) in [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/stale/{n}");
        origin.script(&path, [ok(cc), ok(cc)]);
        get(&sc.url(&path), &[]).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let r = get(&sc.url(&path), &[]).await;
        assert_ne!(r.x_cache(), "STALE", "{cc} forbids stale");
        assert_eq!(origin.hits(&path), 2, "{cc}: revalidated with the origin");
    }
    for cc in ["no-cache", "no-cache=\"x-a\", max-age=600"] {
        let path = format!("/stale/nc{}", cc.len());
        origin.script(
            &path,
            [
                ok(cc).header("etag", "\"e\""),
                Scripted::status(304, "").header("etag", "\"e\""),
            ],
        );
        get(&sc.url(&path), &[]).await;
        let r = get(&sc.url(&path), &[]).await;
        assert_eq!(r.x_cache(), "REVALIDATED", "{cc}: every reuse is validated");
        assert_eq!(origin.hits(&path), 2, "{cc}");
    }
    origin.script(
        "/swr",
        [ok("max-age=1, stale-while-revalidate=30"), ok("max-age=60")],
    );
    get(&sc.url("/swr"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = get(&sc.url("/swr"), &[]).await;
    assert_eq!(
        stale.x_cache(),
        "STALE",
        "the origin's stale-while-revalidate"
    );
    assert_eq!(
        stale.header("cache-status"),
        Some("sidecache; hit; fwd=stale; detail=stale")
    );
    assert!(age(&stale) >= 1, "{}", age(&stale));
}

/// §5.2.2.7, §5.2.2.4: the fields `private="…"` and `no-cache="…"` name are not stored, in
/// origin and override mode alike; the client that caused the miss still gets them.
#[tokio::test(flavor = "multi_thread")]
async fn field_scoped_directives_remove_the_named_fields_before_storing() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    for path in ["/private/field", "/override/field"] {
        origin.script(
            path,
            [Scripted::ok("f")
                .header("cache-control", "max-age=60, private=\"X-User\"")
                .header("x-user", "alice")],
        );
        let miss = get(&sc.url(path), &[]).await;
        assert_eq!(miss.header("x-user"), Some("alice"));
        let hit = get(&sc.url(path), &[]).await;
        assert_eq!(hit.x_cache(), "HIT-L1", "{path}");
        assert_eq!(hit.header("x-user"), None, "{path}: X-User was not stored");
    }
    origin.script(
        "/nocache/cookie",
        [
            Scripted::ok("c")
                .header("cache-control", "max-age=60, no-cache=\"Set-Cookie\"")
                .header("set-cookie", "sid=alice")
                .header("etag", "\"c\""),
            Scripted::status(304, "").header("etag", "\"c\""),
        ],
    );
    assert_eq!(
        get(&sc.url("/nocache/cookie"), &[])
            .await
            .header("set-cookie"),
        Some("sid=alice")
    );
    let reused = get(&sc.url("/nocache/cookie"), &[]).await;
    assert_eq!(reused.x_cache(), "REVALIDATED");
    assert_eq!(
        reused.header("set-cookie"),
        None,
        "alice's cookie is never shared"
    );
}

/// §3.5: a response to a request with Authorization is stored only with public, s-maxage or
/// must-revalidate, and then only for the same credential (the route keys it).
#[tokio::test(flavor = "multi_thread")]
async fn authorization_needs_an_explicit_permission_to_store() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    origin.script("/auth/plain", [ok("max-age=60"), ok("max-age=60")]);
    let r = get(&sc.url("/auth/plain"), &alice).await;
    assert_eq!(
        r.header("cache-status"),
        Some("sidecache; fwd=uri-miss; detail=authorization")
    );
    assert_eq!(
        get(&sc.url("/auth/plain"), &alice).await.x_cache(),
        "UNCACHEABLE"
    );
    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        let path = format!("/auth/{}", cc.len());
        origin.script(&path, [ok(cc), ok(cc)]);
        assert_eq!(get(&sc.url(&path), &alice).await.x_cache(), "MISS");
        assert_eq!(
            get(&sc.url(&path), &alice).await.x_cache(),
            "HIT-L1",
            "{cc}"
        );
        assert_eq!(
            get(&sc.url(&path), &bob).await.x_cache(),
            "MISS",
            "{cc}: never alice's answer"
        );
    }
    let anonymous = get(&sc.url("/auth/plain"), &[]).await;
    assert_ne!(anonymous.x_cache(), "HIT-L1");
}

/// §5.2.1 (and RFC 7234 §5.4 for Pragma): the client's max-age, min-fresh, max-stale,
/// no-cache, no-store and only-if-cached are honoured, unless the route opts out.
#[tokio::test(flavor = "multi_thread")]
async fn request_directives_are_honoured() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    let fresh = |n: usize| {
        (0..n)
            .map(|_| ok("max-age=60").header("etag", "\"r\""))
            .collect::<Vec<_>>()
    };
    origin.script("/req/a", fresh(1));
    get(&sc.url("/req/a"), &[]).await;
    assert_eq!(get(&sc.url("/req/a"), &[]).await.x_cache(), "HIT-L1");
    for cc in [
        ("cache-control", "max-age=0"),
        ("cache-control", "no-cache"),
        ("cache-control", "min-fresh=3600"),
        ("pragma", "no-cache"),
    ] {
        origin.script(
            "/req/a",
            [Scripted::status(304, "").header("etag", "\"r\"")],
        );
        let before = origin.hits("/req/a");
        let r = get(&sc.url("/req/a"), &[cc]).await;
        assert_eq!(
            origin.hits("/req/a"),
            before + 1,
            "{cc:?} goes to the origin"
        );
        assert_ne!(r.x_cache(), "HIT-L1", "{cc:?}");
    }
    let no_store = get(&sc.url("/req/a"), &[("cache-control", "no-store")]).await;
    assert_eq!(
        no_store.header("cache-status"),
        Some("sidecache; fwd=bypass; detail=request-no-store")
    );
    let missing = get(
        &sc.url("/req/nothing"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(missing.status, 504);
    assert_eq!(origin.hits("/req/nothing"), 0, "never asked the origin");
    let cached = get(&sc.url("/req/a"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(cached.status, 200);

    origin.script("/req/stale", [ok("max-age=1")]);
    get(&sc.url("/req/stale"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale_ok = get(&sc.url("/req/stale"), &[("cache-control", "max-stale=60")]).await;
    assert!(
        stale_ok.x_cache().starts_with("HIT"),
        "max-stale: {}",
        stale_ok.x_cache()
    );
    assert_eq!(origin.hits("/req/stale"), 1);

    origin.script("/deaf/a", fresh(1));
    get(&sc.url("/deaf/a"), &[]).await;
    let ignored = get(&sc.url("/deaf/a"), &[("cache-control", "no-cache")]).await;
    assert_eq!(
        ignored.x_cache(),
        "HIT-L1",
        "honor_request_directives = false"
    );
}

/// RFC 9110 §7.6.1, RFC 9111 §3.1: headers listed in Connection and the other hop-by-hop
/// headers are neither stored nor sent to clients.
#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_neither_stored_nor_sent() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    origin.script(
        "/hop",
        [ok("max-age=60")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("trailer", "x-sum")],
    );
    for expected in ["MISS", "HIT-L1"] {
        let r = get(&sc.url("/hop"), &[]).await;
        assert_eq!(r.x_cache(), expected);
        for name in ["x-hop", "keep-alive", "proxy-authenticate", "trailer"] {
            assert_eq!(r.header(name), None, "{expected}: {name}");
        }
    }
}

/// RFC 9213: the first valid targeted field (Sidecache-Cache-Control, CDN-Cache-Control)
/// replaces Cache-Control, including its private, no-cache and no-store;
/// Sidecache-Cache-Control never reaches the client.
#[tokio::test(flavor = "multi_thread")]
async fn targeted_cache_control_takes_precedence() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    origin.script(
        "/cdn",
        [Scripted::ok("t")
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=60")],
    );
    let miss = get(&sc.url("/cdn"), &[]).await;
    assert_eq!(
        miss.header("cdn-cache-control"),
        Some("max-age=60"),
        "forwarded"
    );
    assert_eq!(get(&sc.url("/cdn"), &[]).await.x_cache(), "HIT-L1");

    origin.script(
        "/own",
        [Scripted::ok("o")
            .header("cache-control", "private, no-cache")
            .header("cdn-cache-control", "no-store")
            .header("sidecache-cache-control", "max-age=60")],
    );
    let miss = get(&sc.url("/own"), &[]).await;
    assert_eq!(
        miss.header("sidecache-cache-control"),
        None,
        "never sent to clients"
    );
    assert_eq!(
        miss.header("cache-control"),
        Some("private, no-cache"),
        "browsers keep theirs"
    );
    let hit = get(&sc.url("/own"), &[]).await;
    assert_eq!(hit.x_cache(), "HIT-L1");
    assert_eq!(hit.header("sidecache-cache-control"), None);

    origin.script(
        "/own/private",
        [
            Scripted::ok("p")
                .header("cache-control", "max-age=60")
                .header("sidecache-cache-control", "private"),
            Scripted::ok("p")
                .header("cache-control", "max-age=60")
                .header("sidecache-cache-control", "private"),
        ],
    );
    get(&sc.url("/own/private"), &[]).await;
    assert_eq!(
        get(&sc.url("/own/private"), &[]).await.x_cache(),
        "UNCACHEABLE"
    );

    origin.script(
        "/own/invalid",
        [Scripted::ok("i")
            .header("cache-control", "max-age=60")
            .header("cdn-cache-control", "max-age=\"10000\"")],
    );
    get(&sc.url("/own/invalid"), &[]).await;
    assert_eq!(
        get(&sc.url("/own/invalid"), &[]).await.x_cache(),
        "HIT-L1",
        "an invalid field is ignored"
    );
}

/// §4.4: an unsafe method's non-error response invalidates the target URI and the
/// same-origin URIs in Location and Content-Location, and never another origin's.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_invalidates_its_location_and_content_location() {
    let origin = ScriptedOrigin::start().await;
    let sc = start(&origin, "").await;
    for path in ["/inv/a", "/inv/b", "/inv/c"] {
        origin.script(path, [ok("max-age=600"), ok("max-age=600")]);
        get(&sc.url(path), &[]).await;
        assert_eq!(get(&sc.url(path), &[]).await.x_cache(), "HIT-L1");
    }
    let site = format!("http://{}", sc.listen_addr());
    origin.script(
        "/inv/write",
        [Scripted::status(201, "made")
            .header("location", "/inv/a")
            .header("content-location", &format!("{site}/inv/b"))],
    );
    let w = request("POST", &sc.url("/inv/write"), &[], Bytes::from_static(b"x")).await;
    assert_eq!(w.status, 201);
    assert_eq!(
        get(&sc.url("/inv/a"), &[]).await.x_cache(),
        "MISS",
        "Location"
    );
    assert_eq!(
        get(&sc.url("/inv/b"), &[]).await.x_cache(),
        "MISS",
        "Content-Location"
    );
    origin.script(
        "/inv/write",
        [Scripted::status(201, "made").header("location", "http://other.example/inv/c")],
    );
    request("POST", &sc.url("/inv/write"), &[], Bytes::from_static(b"x")).await;
    assert_eq!(
        get(&sc.url("/inv/c"), &[]).await.x_cache(),
        "HIT-L1",
        "another origin's URI is kept"
    );
}
