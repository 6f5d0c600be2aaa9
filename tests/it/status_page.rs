//! The operator's view, end to end with the real binary and the stand-in backend: the stats
//! API (`GET /admin/stats`, versioned JSON whose since-start figures are the counters of
//! `/metrics`), the status page (`GET /`, `/status`) rendered by headless Chromium under
//! traffic, and the admin token rules for both off loopback.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::backend::start_backend;
use support::browser::{dump_dom_async, refreshes, route_cell, text_of_id};
use support::http::{get, request};
use support::sidecache::{config_opening, free_addr, Sidecache, SidecacheOptions};

const DIAGRAM: &str = "/api/state-machine/diagram";
const METADATA: &str = "/api/state-machine/metadata";

fn config(admin: &str) -> String {
    config_opening().admin_listen(admin).then(
        r#"
[[routes]]
name = "diagram"
match = "GET /api/state-machine/diagram"
ttl = "5m"

[[routes]]
name = "metadata"
match = "GET /api/state-machine/metadata"
ttl = "5m"
"#,
    )
}

/// The sum of the `sidecache_requests_total` series of `route` whose `cache` label is one
/// of `outcomes` (all outcomes when empty).
fn requests(scrape: &str, route: &str, outcomes: &[&str]) -> u64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("sidecache_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| {
            outcomes.is_empty()
                || outcomes
                    .iter()
                    .any(|o| l.contains(&format!("cache=\"{o}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const HITS: &[&str] = &["hit_l1", "hit_l2", "stale", "revalidated"];
const LOOKUPS: &[&str] = &["hit_l1", "hit_l2", "stale", "revalidated", "miss"];

/// `/metrics`' hit ratio of `route`.
fn hit_ratio(scrape: &str, route: &str) -> f64 {
    requests(scrape, route, HITS) as f64 / requests(scrape, route, LOOKUPS) as f64
}

/// Sends `n` GETs of `path` through the data plane.
async fn traffic(sc: &Sidecache, path: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(get(&sc.url(path), &[]).await.status, 200);
    }
}

async fn scrape(sc: &Sidecache) -> String {
    get(&sc.admin_url("/metrics"), &[]).await.text()
}

async fn stats(sc: &Sidecache) -> Value {
    let r = get(&sc.admin_url("/admin/stats"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn route<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("route {name} in {stats}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stats_api_reports_what_metrics_counts_and_what_happened_lately() {
    let backend = start_backend(Duration::from_millis(5)).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(config("{admin}")).backend(backend.addr())).await;
    traffic(&sc, DIAGRAM, 10).await; // 1 miss, 9 L1 hits
    traffic(&sc, METADATA, 4).await; // 1 miss, 3 L1 hits
    traffic(&sc, "/api/events/7/context", 2).await; // no route: the `default` label
    let purge = request(
        "POST",
        &sc.admin_url("/admin/purge"),
        &[("content-type", "application/json")],
        bytes::Bytes::from_static(b"{\"url\":\"/api/state-machine/diagram\"}"),
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert_eq!(
        request(
            "POST",
            &sc.admin_url("/admin/reload"),
            &[("content-type", "application/json")],
            bytes::Bytes::new()
        )
        .await
        .status,
        200
    );

    let s = stats(&sc).await;
    let m = scrape(&sc).await;
    assert_eq!(s["version"], 1);
    assert_eq!(s["sidecache_version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_seconds"].as_u64().is_some());
    assert_eq!(
        s["config"]["source"],
        sc.config_path().display().to_string()
    );
    assert_eq!(s["config"]["last_reload"]["result"], "ok");
    assert!(s["config"]["age_seconds"].as_f64().unwrap() < 60.0);

    for name in ["diagram", "metadata", "default"] {
        let start = &route(&s, name)["figures"]["since_start"];
        assert_eq!(
            start["requests"].as_u64().unwrap(),
            requests(&m, name, &[]),
            "{name}: since-start requests are /metrics' counters"
        );
    }
    let diagram = &route(&s, "diagram")["figures"];
    for window in ["1m", "5m", "since_start"] {
        let f = &diagram[window];
        assert_eq!(f["requests"], 10, "{window}: {f}");
        assert_eq!(f["lookups"], 10);
        assert_eq!(f["outcomes"]["hit_l1"], 9);
        assert_eq!(f["outcomes"]["miss"], 1);
        assert_eq!(f["hit_ratio"], 0.9);
        assert_eq!(f["tiers"]["l1"], 0.9);
        assert_eq!(f["tiers"]["l2"], 0.0);
        let p50 = f["latency_seconds"]["p50"].as_f64().unwrap();
        let p99 = f["latency_seconds"]["p99"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{f}");
    }
    assert!(
        (diagram["since_start"]["hit_ratio"].as_f64().unwrap() - hit_ratio(&m, "diagram")).abs()
            < 1e-9
    );
    let totals = &s["totals"]["since_start"];
    assert_eq!(
        totals["requests"].as_u64().unwrap(),
        requests(&m, "diagram", &[])
            + requests(&m, "metadata", &[])
            + requests(&m, "default", &[])
            + requests(&m, "health", &[])
    );
    assert!(s["totals"]["1m"]["rate_per_second"].as_f64().unwrap() > 0.0);

    let l1 = &s["l1"];
    assert_eq!(
        l1["capacity_bytes"].as_f64().unwrap(),
        support::http::metric(&m, "sidecache_l1_capacity_bytes")
    );
    assert!(l1["entries"].as_u64().unwrap() >= 1, "{l1}");
    assert_eq!(s["l2"]["configured"], false);

    let purges = s["purges"].as_array().unwrap();
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0]["kind"], "url");
    assert_eq!(purges[0]["target"], DIAGRAM);
    assert_eq!(purges[0]["source"], "admin");
    assert_eq!(purges[0]["instance"], s["instance"]);
    assert_eq!(purges[0]["removed_l1"], 1);

    let upstream = &s["upstreams"][0];
    assert_eq!(upstream["name"], "backend");
    assert_eq!(upstream["reachable"], true);
    assert_eq!(upstream["errors_total"]["connect"], 0);
    assert!(upstream["latency_seconds"]["p50"].as_f64().is_some());
    assert_eq!(s["warm"]["every_seconds"], Value::Null);
    assert_eq!(s["warm"]["runs"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_renders_the_figures_of_metrics_in_a_headless_browser() {
    let backend = start_backend(Duration::from_millis(5)).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(config("{admin}")).backend(backend.addr())).await;
    traffic(&sc, DIAGRAM, 20).await; // 1 miss, 19 hits
    traffic(&sc, METADATA, 3).await; // 1 miss, 2 hits

    let page = get(&sc.admin_url("/status"), &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    for external in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
        assert!(!html.contains(external), "self-contained: {external}");
    }
    assert_eq!(get(&sc.admin_url("/"), &[]).await.text(), html);

    let m = scrape(&sc).await;
    let url = format!("{}?refresh=1", sc.admin_url("/status"));
    let dom = dump_dom_async(url, Duration::from_secs(5)).await;
    let polls: u32 = refreshes(&dom).unwrap_or_else(|| panic!("no refresh counter in {dom}"));
    assert!(
        polls >= 2,
        "the page polled again: {polls} refreshes\n{dom}"
    );
    assert_eq!(
        text_of_id(&dom, "version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    for name in ["diagram", "metadata"] {
        let rendered = route_cell(&dom, name, "requests_since_start")
            .unwrap_or_else(|| panic!("row {name} in {dom}"));
        assert_eq!(rendered, requests(&m, name, &[]).to_string(), "{name}");
        let shown = route_cell(&dom, name, "hit_ratio_since_start").unwrap();
        assert_eq!(
            shown,
            format!("{:.1} %", hit_ratio(&m, name) * 100.0),
            "{name}"
        );
        let minute = route_cell(&dom, name, "hit_ratio_1m").unwrap();
        assert_eq!(minute, shown, "{name}: the last minute is all of it");
    }
    let total: u64 = ["diagram", "metadata", "default", "health"]
        .iter()
        .map(|r| requests(&m, r, &[]))
        .sum();
    assert_eq!(text_of_id(&dom, "requests-start"), Some(total.to_string()));
    let all_hits = requests(&m, "diagram", HITS) + requests(&m, "metadata", HITS);
    let all_lookups = requests(&m, "diagram", LOOKUPS) + requests(&m, "metadata", LOOKUPS);
    assert_eq!(
        text_of_id(&dom, "hit-start"),
        Some(format!(
            "{:.1} %",
            all_hits as f64 / all_lookups as f64 * 100.0
        ))
    );
    assert_eq!(
        text_of_id(&dom, "l2-state").as_deref(),
        Some("not configured")
    );
    assert!(dom.contains("data-upstream=\"backend\""), "{dom}");
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_the_page_and_the_stats_need_the_token() {
    let backend = start_backend(Duration::ZERO).await;
    let port = free_addr().port();
    let sc = Sidecache::start(
        SidecacheOptions::new(config(&format!("0.0.0.0:{port}")))
            .backend(backend.addr())
            .env("SIDECACHE_ADMIN_TOKEN", "tok-123"),
    )
    .await;
    let admin = |p: &str| format!("http://127.0.0.1:{port}{p}");
    traffic(&sc, DIAGRAM, 3).await;
    for path in ["/", "/status", "/admin/stats"] {
        let denied = get(&admin(path), &[]).await;
        assert_eq!(denied.status, 401, "{path}");
        assert!(
            !denied.text().contains("hit_ratio"),
            "{path}: no figures leak"
        );
        let wrong = get(&admin(path), &[("authorization", "Bearer nope")]).await;
        assert_eq!(wrong.status, 401, "{path}");
        let bearer = get(&admin(path), &[("authorization", "Bearer tok-123")]).await;
        assert_eq!(bearer.status, 200, "{path}");
        // "any:tok-123" and "any:nope", as a browser sends Basic credentials.
        let basic = get(&admin(path), &[("authorization", "Basic YW55OnRvay0xMjM=")]).await;
        assert_eq!(basic.status, 200, "{path}");
        let bad_basic = get(&admin(path), &[("authorization", "Basic YW55Om5vcGU=")]).await;
        assert_eq!(bad_basic.status, 401, "{path}");
    }
    let challenge = get(&admin("/status"), &[]).await;
    assert_eq!(
        challenge.header("www-authenticate"),
        Some("Basic realm=\"sidecache admin\", charset=\"UTF-8\"")
    );

    // A browser without the token sees no page; with it (as Basic credentials) the page
    // loads and its script's polls carry the credentials too.
    let denied_url = admin("/status?refresh=1");
    let denied = dump_dom_async(denied_url, Duration::from_secs(2)).await;
    assert!(refreshes(&denied).is_none(), "{denied}");
    let allowed_url = format!("http://admin:tok-123@127.0.0.1:{port}/status?refresh=1");
    let allowed = dump_dom_async(allowed_url, Duration::from_secs(4)).await;
    assert!(refreshes(&allowed).unwrap_or(0) >= 1, "{allowed}");
    assert_eq!(
        route_cell(&allowed, "diagram", "requests_since_start").as_deref(),
        Some("3")
    );
}
