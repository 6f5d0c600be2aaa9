//! Key integrity at the edge (issue 10, part 1 and 2): what a client sends is normalized or
//! refused before it is routed, keyed or forwarded, so no client chooses what others are
//! served. Each test tries the attack the issue names and checks both what the client got
//! and what the stand-in backend saw.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use support::backend::start_backend;
use support::http::{get, request};
use support::sidecache::{config_opening, Sidecache, SidecacheOptions};

/// The routes and the rest, after [`config_opening`].
const ROUTES: &str = r#"
[[routes]]
name = "echo_keyed_query"
match = "GET /test/echo"
ttl = "60s"
key = { query = ["include"], headers = ["accept-language"] }

[[routes]]
name = "admin"
match = "GET /api/admin/*"
cache = false

[[routes]]
name = "respond"
match = "GET /test/respond"
ttl = "60s"

[[routes]]
name = "catch_all"
match = "GET /:rest*"
ttl = "60s"
"#;

async fn setup(extra: &str) -> (sidecache::demo::Backend, Sidecache) {
    let backend = start_backend(Duration::ZERO).await;
    let config = config_opening().then(ROUTES).replace(
        "grace_period = \"1s\"",
        &format!("grace_period = \"1s\"\n{extra}"),
    );
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    (backend, sc)
}

/// `/test/echo`'s report of what the backend received.
fn seen(r: &support::http::Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_is_part_of_the_key_and_forwarded_headers_are_not_believed() {
    let (backend, sc) = setup("").await;
    let url = sc.url("/api/contractors/42/bundle");
    let evil = get(&url, &[("host", "evil.example")]).await;
    assert_eq!(evil.x_cache(), "MISS");
    let api = get(&url, &[("host", "api.example")]).await;
    assert_eq!(
        api.x_cache(),
        "MISS",
        "another host never gets evil.example's entry"
    );
    let api_again = get(&url, &[("host", "API.example:80")]).await;
    assert_eq!(
        api_again.x_cache(),
        "HIT-L1",
        "host case and the default port do not matter"
    );
    assert_eq!(backend.stats().hits("/api/contractors/42/bundle"), 2);

    // From an untrusted peer, X-Forwarded-* and Forwarded are replaced, not passed on, and
    // do not change the key.
    let echo = sc.url("/test/echo?x=1");
    let r = get(
        &echo,
        &[
            ("host", "api.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4;proto=https;host=evil.example"),
        ],
    )
    .await;
    let headers = &seen(&r)["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "api.example");
    assert!(headers.get("forwarded").is_none(), "{headers}");
    let plain = get(&echo, &[("host", "api.example")]).await;
    assert_eq!(
        plain.x_cache(),
        "HIT-L1",
        "the forwarded headers were not part of the key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_names_the_site_and_the_scheme() {
    let (backend, sc) = setup("trusted_proxies = [\"127.0.0.1\"]").await;
    let url = sc.url("/api/contractors/7/bundle");
    let https = [
        ("host", "internal"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-proto", "https"),
    ];
    let http = [
        ("host", "internal"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-proto", "http"),
    ];
    assert_eq!(get(&url, &https).await.x_cache(), "MISS");
    assert_eq!(
        get(&url, &http).await.x_cache(),
        "MISS",
        "the scheme is keyed"
    );
    assert_eq!(get(&url, &https).await.x_cache(), "HIT-L1");
    assert_eq!(backend.stats().hits("/api/contractors/7/bundle"), 2);
    let r = get(
        &sc.url("/test/echo?include=a"),
        &[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let headers = &seen(&r)["headers"];
    assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn query_names_are_keyed_as_the_origin_reads_them_and_only_keyed_ones_are_forwarded() {
    let (backend, sc) = setup("").await;
    // Express reads incl%75de as include: keyed and forwarded as include.
    let aliased = get(&sc.url("/test/echo?incl%75de=reviews&token=secret"), &[]).await;
    assert_eq!(aliased.x_cache(), "MISS");
    let got = seen(&aliased);
    assert_eq!(
        got["query"], "include=reviews",
        "only the keyed parameter reaches the origin"
    );
    let plain = get(&sc.url("/test/echo?include=reviews"), &[]).await;
    assert_eq!(
        plain.x_cache(),
        "HIT-L1",
        "one entry for what the origin saw"
    );
    // include[]=x is an array to qs: its own entry, and forwarded as such.
    let array = get(&sc.url("/test/echo?include[]=reviews"), &[]).await;
    assert_eq!(array.x_cache(), "MISS");
    assert_eq!(seen(&array)["query"], "include%5B%5D=reviews");
    // A credential in an unkeyed parameter never reaches the origin, so is never shared.
    let token = get(&sc.url("/test/echo?token=alice"), &[]).await;
    assert_eq!(token.x_cache(), "MISS");
    assert_eq!(seen(&token)["query"], Value::Null);
    assert_eq!(backend.stats().hits("/test/echo"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_unkeyed_query_sends_the_whole_query() {
    let backend = start_backend(Duration::ZERO).await;
    let config = config_opening().then(ROUTES).replace(
        "key = { query = [\"include\"], headers = [\"accept-language\"] }",
        "key = { query = [\"include\"], headers = [\"accept-language\"] }\nforward_unkeyed_query = true",
    );
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let r = get(&sc.url("/test/echo?include=a&utm=1"), &[]).await;
    assert_eq!(seen(&r)["query"], "include=a&utm=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_named_in_connection_is_neither_keyed_nor_forwarded() {
    let (backend, sc) = setup("").await;
    let url = sc.url("/test/echo?include=lang");
    let nominated = get(
        &url,
        &[("accept-language", "de"), ("connection", "accept-language")],
    )
    .await;
    assert_eq!(nominated.x_cache(), "MISS");
    assert!(
        seen(&nominated)["headers"].get("accept-language").is_none(),
        "the origin never saw the nominated header"
    );
    let german = get(&url, &[("accept-language", "de")]).await;
    assert_eq!(
        german.x_cache(),
        "MISS",
        "the answer without a language was not stored as the German variant"
    );
    assert_eq!(seen(&german)["headers"]["accept-language"], "de");
    let none = get(&url, &[]).await;
    assert_eq!(
        none.x_cache(),
        "HIT-L1",
        "it was stored as the variant without a language"
    );
    assert_eq!(backend.stats().hits("/test/echo"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_uses_every_value_of_a_header() {
    let (_backend, sc) = setup("").await;
    let url = sc.url("/test/respond?vary=accept-language&v=all");
    let first = request(
        "GET",
        &url,
        &[("accept-language", "en"), ("accept-language", "de")],
        Bytes::new(),
    )
    .await;
    assert_eq!(first.x_cache(), "MISS");
    let other = request(
        "GET",
        &url,
        &[("accept-language", "en"), ("accept-language", "fr")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        other.x_cache(),
        "MISS",
        "the second line differs: another variant"
    );
    let same = request(
        "GET",
        &url,
        &[("accept-language", "en"), ("accept-language", "de")],
        Bytes::new(),
    )
    .await;
    assert_eq!(same.x_cache(), "HIT-L1");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_normalized_before_routing_keying_and_forwarding() {
    let (backend, sc) = setup("").await;
    for path in [
        "/api//admin/x",
        "/api/./admin/x",
        "/api/%61dmin/x",
        "/public/../api/admin/x",
    ] {
        let r = get(&sc.url(path), &[]).await;
        assert_eq!(
            r.header("cache-status"),
            Some("sidecache; fwd=bypass; detail=route-disabled"),
            "{path} reaches the cache = false route"
        );
    }
    assert_eq!(
        backend.stats().hits("/api/admin/x"),
        4,
        "the backend saw the normal path"
    );
    let r = get(&sc.url("/test//echo?include=n"), &[]).await;
    assert_eq!(seen(&r)["path"], "/test/echo");
    assert_eq!(
        get(&sc.url("/test/echo?include=n"), &[]).await.x_cache(),
        "HIT-L1"
    );
    for bad in [
        "/api/admin%2Fx",
        "/api%5Cadmin",
        "/api/%00",
        "/../etc/passwd",
        "/a/%2e%2e/%2e%2e/b",
    ] {
        let r = get(&sc.url(bad), &[]).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "bad_path", "{bad}");
    }
    assert_eq!(
        backend.stats().total(),
        5,
        "no refused path reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_on_get_are_refused_and_never_cached() {
    let (backend, sc) = setup("").await;
    let r = request(
        "GET",
        &sc.url("/test/echo?include=b"),
        &[],
        Bytes::from_static(b"payload"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "body_not_allowed");
    assert_eq!(backend.stats().hits("/test/echo"), 0);

    let backend = start_backend(Duration::ZERO).await;
    let config = config_opening().then(ROUTES).replace(
        "grace_period = \"1s\"",
        "grace_period = \"1s\"\nallow_body_on_safe_methods = true",
    );
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let url = sc.url("/test/echo?include=b");
    for _ in 0..2 {
        let r = request("GET", &url, &[], Bytes::from_static(b"payload")).await;
        assert_eq!(
            r.header("cache-status"),
            Some("sidecache; fwd=bypass; detail=request-body")
        );
        assert_eq!(seen(&r)["body_bytes"], 7);
    }
    assert_eq!(
        get(&url, &[]).await.x_cache(),
        "MISS",
        "the bodies stored nothing"
    );
}

/// A purge names what requests stored: its path normalized, its query reduced to the keyed
/// parameters; a path purges it on every host, an absolute URL on that host only.
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_url_is_normalized_like_the_requests_it_targets() {
    let (_backend, sc) = setup("").await;
    let url = sc.url("/test/echo?include=p");
    let api = [("host", "api.example")];
    let other = [("host", "other.example")];
    for host in [&api, &other] {
        assert_eq!(get(&url, host).await.x_cache(), "MISS");
        assert_eq!(get(&url, host).await.x_cache(), "HIT-L1");
    }
    let purge = |body: &'static str| {
        let admin = sc.admin_url("/admin/purge");
        async move {
            request(
                "POST",
                &admin,
                &[("content-type", "application/json")],
                Bytes::from_static(body.as_bytes()),
            )
            .await
        }
    };
    let r = purge(r#"{"url": "http://API.example:80/test//echo?incl%75de=p&utm=x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["removed_local"], 1, "that host only: {}", r.text());
    assert_eq!(get(&url, &api).await.x_cache(), "MISS");
    assert_eq!(get(&url, &other).await.x_cache(), "HIT-L1");
    let r = purge(r#"{"url": "/test/./echo?include=p"}"#).await;
    assert_eq!(
        r.json()["removed_local"],
        2,
        "a path, every host: {}",
        r.text()
    );
    assert_eq!(get(&url, &other).await.x_cache(), "MISS");
    let bad = purge(r#"{"prefix": "/../x"}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"], "bad_path");
}
