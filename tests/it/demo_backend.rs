//! The stand-in legacy backend over real sockets.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::backend::{big_pattern_checksum, start_backend};
use support::http::{get, get_digest, request, try_get, Client};

#[tokio::test]
async fn api_endpoints_answer_json_of_realistic_size_without_cache_headers() {
    let b = start_backend(Duration::ZERO).await;
    for (path, min, max) in [
        ("/api/state-machine/diagram", 8_000, 14_000),
        ("/api/state-machine/metadata", 1_500, 3_000),
        ("/api/contractors/42/bundle", 4_000, 7_000),
        ("/api/events/7/context", 700, 1_500),
        ("/api/concierge/sessions/s1/state", 20, 500),
    ] {
        let r = get(&b.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        let len = r.body.len();
        assert!((min..max).contains(&len), "{path}: {len} bytes");
        r.json();
        for h in ["cache-control", "etag", "last-modified", "expires", "vary"] {
            assert!(r.header(h).is_none(), "{path} must not send {h}");
        }
    }
    assert_eq!(b.stats().hits("/api/state-machine/diagram"), 1);
    assert_eq!(b.stats().total(), 5);
}

#[tokio::test]
async fn generation_counts_origin_fetches_per_id() {
    let b = start_backend(Duration::ZERO).await;
    let g = |r: support::http::Resp| r.json()["generation"].as_u64().unwrap();
    assert_eq!(g(get(&b.url("/api/contractors/1/bundle"), &[]).await), 1);
    assert_eq!(g(get(&b.url("/api/contractors/1/bundle"), &[]).await), 2);
    let other = get(&b.url("/api/contractors/2/bundle"), &[]).await.json();
    assert_eq!(other["generation"], 1);
    assert_eq!(other["id"], "2");
    assert_eq!(
        g(get(&b.url("/api/concierge/sessions/x/state"), &[]).await),
        1
    );
    assert_eq!(
        g(get(&b.url("/api/concierge/sessions/x/state"), &[]).await),
        2
    );
}

#[tokio::test]
async fn writes_answer_like_the_legacy_api() {
    let b = start_backend(Duration::ZERO).await;
    let r = request(
        "POST",
        &b.url("/api/events"),
        &[("content-type", "application/json")],
        Bytes::from_static(br#"{"type":"x","n":3}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), serde_json::json!({"type":"x","n":3}));

    let r = request(
        "POST",
        &b.url("/api/concierge/sessions/s1/end"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"ended": true}))
    );

    let r = request(
        "PUT",
        &b.url("/api/contractors/9"),
        &[],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(
        "POST",
        &b.url("/api/events"),
        &[],
        Bytes::from_static(b"nope"),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn health_paths_and_unknown_paths_404_like_express() {
    let b = start_backend(Duration::ZERO).await;
    for path in ["/api/health", "/health", "/nope"] {
        let r = get(&b.url(path), &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"], "not_found");
        assert_eq!(r.json()["path"], path);
    }
    // Wrong method on a known path is also a 404, as in Express.
    let r = request(
        "DELETE",
        &b.url("/api/state-machine/diagram"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn delay_applies_to_api_only_and_is_live() {
    // Margins are wide so a loaded CI box does not flake.
    let b = start_backend(Duration::from_millis(500)).await;
    assert_eq!(b.delay(), Duration::from_millis(500));
    let t = Instant::now();
    get(&b.url("/api/state-machine/metadata"), &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(500));
    let t = Instant::now();
    get(&b.url("/test/count"), &[]).await;
    assert!(t.elapsed() < Duration::from_millis(400));
    b.set_delay(Duration::ZERO);
    let t = Instant::now();
    get(&b.url("/api/state-machine/metadata"), &[]).await;
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn echo_reports_method_path_query_and_headers() {
    let b = start_backend(Duration::ZERO).await;
    let r = get(
        &b.url("/test/echo?a=1&b=2"),
        &[("x-request-id", "abc"), ("x-forwarded-for", "10.0.0.1")],
    )
    .await
    .json();
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/test/echo");
    assert_eq!(r["query"], "a=1&b=2");
    assert_eq!(r["headers"]["x-request-id"], "abc");
    assert_eq!(r["headers"]["x-forwarded-for"], "10.0.0.1");
    assert_eq!(r["headers"]["host"], b.addr().to_string());
}

#[tokio::test]
async fn respond_sets_exactly_the_requested_status_and_headers() {
    let b = start_backend(Duration::ZERO).await;
    let url = b.url(
        "/test/respond?status=404&cache-control=private&set-cookie=a%3Db&set-cookie=c%3Dd\
         &vary=accept-language&age=10&h=X-Custom:%20yes&body=hello",
    );
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("private"));
    assert_eq!(r.header_all("set-cookie"), vec!["a=b", "c=d"]);
    assert_eq!(r.header("vary"), Some("accept-language"));
    assert_eq!(r.header("age"), Some("10"));
    assert_eq!(r.header("x-custom"), Some("yes"));
    let j = r.json();
    assert_eq!(j["body"], "hello");
    assert_eq!(j["generation"], 1);
    assert_eq!(get(&url, &[]).await.json()["generation"], 2);
    // A different URL has its own counter.
    let other = get(&b.url("/test/respond?v=2"), &[]).await;
    assert_eq!(
        (other.status, other.json()["generation"].as_u64()),
        (200, Some(1))
    );
    assert!(other.header("cache-control").is_none());
}

#[tokio::test]
async fn respond_honours_if_none_match_and_delay() {
    let b = start_backend(Duration::ZERO).await;
    let url = b.url("/test/respond?etag=%22v1%22&cache-control=max-age%3D60&delay_ms=100");
    let t = Instant::now();
    let r = get(&url, &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(get(&url, &[("if-none-match", "\"v0\"")]).await.status, 200);
    // Bad parameters are a 400, not a crash.
    assert_eq!(
        get(&b.url("/test/respond?status=abc"), &[]).await.status,
        400
    );
    assert_eq!(
        get(&b.url("/test/respond?h=nocolon"), &[]).await.status,
        400
    );
}

#[tokio::test]
async fn big_streams_the_deterministic_pattern() {
    let b = start_backend(Duration::ZERO).await;
    let n = 20_000_000u64;
    let d = get_digest(&b.url(&format!("/test/big?bytes={n}")), &[]).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.bytes, n);
    assert_eq!(d.headers["content-length"], n.to_string().as_str());
    assert_eq!(d.checksum, big_pattern_checksum(n));
}

#[tokio::test]
async fn upload_is_counted_and_checksummed() {
    let b = start_backend(Duration::ZERO).await;
    let data: Bytes = sidecache::demo::pattern_chunk(0, 3_000_000);
    let r = request("POST", &b.url("/test/upload"), &[], data.clone()).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["bytes"], 3_000_000);
    assert_eq!(j["sha"], big_pattern_checksum(3_000_000));
}

#[tokio::test]
async fn slow_and_stall_hold_back_headers_and_body() {
    let b = start_backend(Duration::ZERO).await;
    let t = Instant::now();
    assert_eq!(get(&b.url("/test/slow?ms=150"), &[]).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let r = support::http::try_request_timeout(
        "GET",
        &b.url("/test/stall"),
        &[],
        Bytes::new(),
        Duration::from_millis(300),
    )
    .await;
    assert!(r.unwrap_err().contains("timed out"));
}

#[tokio::test]
async fn count_reports_per_path_counters_and_reset_clears_them() {
    let b = start_backend(Duration::ZERO).await;
    let mut c = Client::new();
    for _ in 0..3 {
        c.get(&b.url("/api/events/1/context"), &[]).await;
    }
    assert_eq!(
        c.connections_opened(),
        1,
        "keep-alive reuses the connection"
    );
    let j = c.get(&b.url("/test/count"), &[]).await.json();
    assert_eq!(j["paths"]["/api/events/1/context"], 3);
    assert_eq!(j["total"], 4);
    b.stats().reset();
    assert_eq!(b.stats().total(), 0);
    assert_eq!(b.stats().hits("/api/events/1/context"), 0);
}

#[tokio::test]
async fn stop_is_a_real_outage_and_restart_recovers() {
    let b = start_backend(Duration::ZERO).await;
    let mut c = Client::new();
    assert_eq!(c.get(&b.url("/test/count"), &[]).await.status, 200);
    // An in-flight slow request is cut off too.
    let slow_url = b.url("/test/slow?ms=5000");
    let slow = tokio::spawn(async move { try_get(&slow_url, &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    b.stop().await;
    assert!(!b.is_running());
    assert!(try_get(&b.url("/test/count"), &[]).await.is_err());
    assert!(c
        .try_request("GET", &b.url("/test/count"), &[], Bytes::new())
        .await
        .is_err());
    assert!(slow.await.unwrap().is_err());

    b.restart().await.unwrap();
    assert_eq!(get(&b.url("/test/count"), &[]).await.status, 200);
    assert_eq!(c.get(&b.url("/test/count"), &[]).await.status, 200);
}

#[tokio::test]
async fn a_background_backend_runs_on_its_own_thread_on_loopback() {
    let delay = Duration::from_millis(20);
    let addr = tokio::task::spawn_blocking(move || sidecache::demo::start_in_background(delay))
        .await
        .expect("join")
        .expect("start in background");
    assert!(addr.ip().is_loopback(), "{addr}");
    let t = Instant::now();
    let r = get(&format!("http://{addr}/api/state-machine/metadata"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= delay, "the delay applies");
}
