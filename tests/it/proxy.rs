//! The data plane as a proxy: rewrites, local health/readiness, forwarded headers, request
//! ids, upstream failures and streamed bodies. Real sockets: the built binary in front of the
//! stand-in backend.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::backend::{big_pattern_checksum, start_backend};
use support::http::{get, get_digest, request, try_request_timeout};
use support::sidecache::{Sidecache, SidecacheOptions};

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "3s"
# the test client stands for a front proxy on loopback: its forwarded headers are believed
trusted_proxies = ["127.0.0.1"]

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"
connect_timeout = "500ms"
read_timeout = "1s"

[[upstreams]]
name = "nowhere"
address = "127.0.0.1:1"
connect_timeout = "300ms"

[[rewrites]]
source = "/legacy/:path*"
destination = "backend:/api/:path*"

[[rewrites]]
source = "/v1/contractors/:id"
destination = "backend:/api/contractors/:id/bundle"

[[rewrites]]
source = "/first/:x"
destination = "backend:/test/echo"

[[rewrites]]
source = "/first/:x"
destination = "nowhere"

[[rewrites]]
source = "/stripped/:path*"
destination = "backend"
strip_prefix = "/stripped"

[[rewrites]]
source = "/down/:path*"
destination = "nowhere"

[cache]
default_mode = "off"
"#;

async fn proxy() -> (demo::Backend, Sidecache) {
    let backend = start_backend(Duration::from_millis(5)).await;
    let sc = Sidecache::start(SidecacheOptions::new(CONFIG).backend(backend.addr())).await;
    (backend, sc)
}

use sidecache::demo;

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_named_catch_all_prefix_strip_first_match_and_query() {
    let (backend, sc) = proxy().await;

    // catch-all: /legacy/state-machine/diagram -> /api/state-machine/diagram
    let r = get(&sc.url("/legacy/state-machine/diagram"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.stats().hits("/api/state-machine/diagram"), 1);

    // named segment into a template
    let r = get(&sc.url("/v1/contractors/77"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "77");

    // first match wins (the second /first rule would go nowhere)
    let r = get(&sc.url("/first/a?keep=1&x=%20y"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/test/echo");
    assert_eq!(r.json()["query"], "keep=1&x=%20y", "query passes unchanged");

    // prefix strip
    let r = get(&sc.url("/stripped/test/echo?q=1"), &[]).await;
    assert_eq!(r.json()["path"], "/test/echo");
    assert_eq!(r.json()["query"], "q=1");

    // unmatched -> default upstream, path unchanged
    let r = get(&sc.url("/api/events/5/context"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.stats().hits("/api/events/5/context"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_without_default_upstream_is_a_404_json() {
    let backend = start_backend(Duration::ZERO).await;
    let config = CONFIG.replace("default_upstream = \"backend\"", "");
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let r = get(&sc.url("/nothing/here"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(r.json()["path"], "/nothing/here");
    assert_eq!(backend.stats().total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_answered_locally_on_both_paths_with_head() {
    let (backend, sc) = proxy().await;
    for path in ["/health", "/api/health"] {
        let r = get(&sc.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let body = r.json();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["uptime_seconds"].is_u64());
        assert!(
            r.header("x-cache").is_none(),
            "local answers carry no X-Cache"
        );
        let head = request("HEAD", &sc.url(path), &[], Bytes::new()).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }
    assert_eq!(
        backend.stats().total(),
        0,
        "health never reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_default_upstream() {
    let (backend, sc) = proxy().await;
    for path in ["/ready", "/api/ready"] {
        let r = get(&sc.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["upstreams"]["backend"], "up");
        let head = request("HEAD", &sc.url(path), &[], Bytes::new()).await;
        assert_eq!(head.status, 200);
    }
    backend.stop().await;
    let r = get(&sc.url("/ready"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["down"][0], "backend");
    assert_eq!(r.json()["status"], "unavailable");
    backend.restart().await.expect("restart backend");
    assert_eq!(get(&sc.url("/api/ready"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_and_request_id_reach_the_backend() {
    let (_backend, sc) = proxy().await;
    let r = get(
        &sc.url("/test/echo"),
        &[("host", "api.example"), ("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "api.example");
    let generated = seen["x-request-id"]
        .as_str()
        .expect("request id sent upstream");
    assert_eq!(generated.len(), 32);
    assert_eq!(
        r.header("x-request-id"),
        Some(generated),
        "echoed to the client"
    );

    let r = get(&sc.url("/test/echo"), &[("x-request-id", "trace-abc-1")]).await;
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-abc-1");
    assert_eq!(r.header("x-request-id"), Some("trace-abc-1"));
}

/// A 502 or 504 after the request was read completely keeps the client's connection: the
/// next request on it is served (wrk counted a socket error per 502 when it was closed).
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_error_keeps_the_client_connection() {
    let (_backend, sc) = proxy().await;
    let mut client = support::http::Client::new();
    let down = client.get(&sc.url("/down/x"), &[]).await;
    assert_eq!(down.status, 502);
    assert_ne!(
        down.header("connection"),
        Some("close"),
        "{:?}",
        down.headers
    );
    let next = client.get(&sc.url("/api/health"), &[]).await;
    assert_eq!(next.status, 200);
    assert_eq!(
        client.connections_opened(),
        1,
        "one connection for both requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_a_502_json_within_the_connect_timeout() {
    let (_backend, sc) = proxy().await;
    let started = Instant::now();
    let r = get(&sc.url("/down/x"), &[("x-request-id", "rid-502")]).await;
    assert_eq!(r.status, 502);
    let body = r.json();
    assert_eq!(body["error"], "upstream_unavailable");
    assert_eq!(body["upstream"], "nowhere");
    assert_eq!(body["request_id"], "rid-502");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered, not hung"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_a_504_json_after_the_read_timeout() {
    let (_backend, sc) = proxy().await;
    let r = try_request_timeout(
        "GET",
        &sc.url("/test/slow?ms=3000"),
        &[],
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(r.json()["upstream"], "backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways() {
    let (_backend, sc) = proxy().await;
    let n: u64 = 20_000_000;
    let d = get_digest(&sc.url(&format!("/test/big?bytes={n}")), &[]).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.bytes, n);
    assert_eq!(d.checksum, big_pattern_checksum(n));

    let upload: Vec<u8> = (0..n).map(sidecache::demo::pattern_byte).collect();
    let r = request("POST", &sc.url("/test/upload"), &[], Bytes::from(upload)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], n);
    assert_eq!(r.json()["sha"], big_pattern_checksum(n));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_bodies_get_413() {
    let backend = start_backend(Duration::ZERO).await;
    let config = CONFIG.replace(
        "grace_period = \"3s\"",
        "grace_period = \"3s\"\nmax_request_body = \"1KiB\"",
    );
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let r = request(
        "POST",
        &sc.url("/test/upload"),
        &[],
        Bytes::from(vec![b'x'; 4096]),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "request_body_too_large");
    assert_eq!(backend.stats().hits("/test/upload"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_request_then_exits() {
    let (_backend, mut sc) = proxy().await;
    let url = sc.url("/test/slow?ms=800");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sc.sigterm();
    let r = in_flight.await.expect("request task");
    assert_eq!(r.status, 200, "the in-flight request completes");
    let status = sc
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_fast() {
    let (_backend, mut sc) = proxy().await;
    sc.sigint();
    assert!(sc.wait_exit(Duration::from_secs(3)).await.is_some());
}
