//! Cleartext HTTP/2 with prior knowledge (h2c) on the data plane, with a real HTTP/2 client
//! (hyper's): health, a miss, a hit, a purge and the miss after it, all as streams of one
//! connection; the header limits answered per stream with 431 JSON; an idle connection closed
//! after `keepalive_timeout`.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use support::backend::start_backend;
use support::http::{metric, request, H2Client};
use support::sidecache::{Sidecache, SidecacheOptions};

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
keepalive_timeout = "1s"
max_headers = 20

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"
connect_timeout = "500ms"
read_timeout = "5s"

[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "30s"
tags = ["contractor:{id}"]
"#;

async fn start() -> (support::backend::Backend, Sidecache) {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(SidecacheOptions::new(CONFIG).backend(backend.addr())).await;
    (backend, sc)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_miss_hit_purge_and_miss_again_over_one_h2c_connection() {
    let (backend, sc) = start().await;
    let mut h2 = H2Client::connect(&sc.listen_addr().to_string())
        .await
        .expect("h2c handshake");

    let health = h2.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    let path = "/api/contractors/7/bundle";
    let miss = h2.get(path).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(miss.json()["id"], "7");
    let hit = h2.get(path).await;
    assert_eq!(hit.x_cache(), "HIT-L1");
    assert_eq!(hit.body, miss.body);
    assert_eq!(backend.stats().hits(path), 1);

    let purged = request(
        "POST",
        &sc.admin_url("/admin/purge"),
        &[("content-type", "application/json")],
        Bytes::from(json!({"url": path}).to_string()),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let again = h2.get(path).await;
    assert_eq!(again.x_cache(), "MISS");
    assert_eq!(backend.stats().hits(path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2c_stream_over_max_headers_gets_431_json_and_the_connection_goes_on() {
    let (backend, sc) = start().await;
    let mut h2 = H2Client::connect(&sc.listen_addr().to_string())
        .await
        .expect("h2c handshake");
    let names: Vec<String> = (0..21).map(|i| format!("x-field-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let path = "/api/contractors/8/bundle";
    let r = h2
        .request("GET", path, &fields, Bytes::new())
        .await
        .expect("a 431 answer");
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["reason"], "too_many_headers");
    assert_eq!(r.json()["limit"], 20);
    assert_eq!(backend.stats().hits(path), 0, "never forwarded");
    let scrape = request("GET", &sc.admin_url("/metrics"), &[], Bytes::new())
        .await
        .text();
    assert_eq!(
        metric(
            &scrape,
            "sidecache_requests_refused_total{reason=\"too_many_headers\"}"
        ),
        1.0
    );
    // The refusal ended that stream only.
    let r = h2
        .request("GET", path, &fields[..10], Bytes::new())
        .await
        .expect("the next stream");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2c_connection_is_closed_after_the_keepalive_timeout() {
    let (_backend, sc) = start().await;
    let mut h2 = H2Client::connect(&sc.listen_addr().to_string())
        .await
        .expect("h2c handshake");
    assert_eq!(h2.get("/health").await.status, 200);
    assert!(
        h2.closed_within(Duration::from_secs(5)).await,
        "an idle h2c connection is closed"
    );
}
