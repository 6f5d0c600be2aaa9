//! Metrics on the wire: exact counter increments after a known sequence, bounded label
//! cardinality, a live scrape that passes `promtool check metrics`, and a real Prometheus
//! scraping sidecache and answering a hit-ratio query.

use crate::support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::backend::start_backend;
use support::http::{get, metric, try_get, Client};
use support::redis::RedisServer;
use support::sidecache::{free_addr, Sidecache, SidecacheOptions};

fn config(redis_url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
threads = 2
grace_period = "2s"

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{{backend}}"

[[upstreams]]
name = "nowhere"
address = "127.0.0.1:1"
connect_timeout = "200ms"

[[rewrites]]
source = "/down/:path*"
destination = "nowhere"

[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "60s"

[[routes]]
name = "diagram"
match = "GET /api/state-machine/diagram"
ttl = "1s"
stale_while_revalidate = "30s"

[[routes]]
name = "no_cache_here"
match = "GET /api/admin/*"
cache = false

# the instances are sidecars of one API, each addressed by its own address
[cache]
key_host = false

[cache.l2]
url = "{redis_url}"
"#
    )
}

fn requests(route: &str, class: &str, cache: &str) -> String {
    format!(
        "sidecache_requests_total{{cache=\"{cache}\",method=\"GET\",route=\"{route}\",status_class=\"{class}\"}}"
    )
}

fn duration_count(route: &str, cache: &str) -> String {
    format!("sidecache_request_duration_seconds_count{{cache=\"{cache}\",route=\"{route}\"}}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_sequence_gives_exact_counts() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let opts = SidecacheOptions::new(config(&redis.url())).backend(backend.addr());
    // instance A fills L2; every count below is B's
    let a = Sidecache::start(opts.clone()).await;
    get(&a.url("/api/contractors/1/bundle"), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("*v2:e:*").is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Sidecache::start(opts).await;
    let x = |r: &support::http::Resp| r.header("x-cache").unwrap_or("").to_owned();
    assert_eq!(
        x(&get(&b.url("/api/contractors/1/bundle"), &[]).await),
        "HIT-L2"
    );
    assert_eq!(
        x(&get(&b.url("/api/contractors/1/bundle"), &[]).await),
        "HIT-L1"
    );
    assert_eq!(
        x(&get(&b.url("/api/contractors/2/bundle"), &[]).await),
        "MISS"
    );
    assert_eq!(
        x(&get(&b.url("/api/state-machine/diagram"), &[]).await),
        "MISS"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        x(&get(&b.url("/api/state-machine/diagram"), &[]).await),
        "STALE"
    );
    assert_eq!(x(&get(&b.url("/api/admin/users"), &[]).await), "BYPASS");
    assert_eq!(get(&b.url("/down/x"), &[]).await.status, 502);
    // the harness polled /health while B started: count this one as a delta
    let before = get(&b.admin_url("/metrics"), &[]).await.text();
    assert_eq!(get(&b.url("/health"), &[]).await.status, 200);

    // A request is counted in pingora's logging phase, after its response was written: the
    // client can scrape before the last one is recorded, so wait (bounded) for that one.
    let health = requests("health", "2xx", "local");
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = get(&b.admin_url("/metrics"), &[]).await.text();
        if metric(&m, &health) - metric(&before, &health) >= 1.0 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let route = "contractor_bundle";
    assert_eq!(metric(&m, &requests(route, "2xx", "hit_l2")), 1.0);
    assert_eq!(metric(&m, &requests(route, "2xx", "hit_l1")), 1.0);
    assert_eq!(metric(&m, &requests(route, "2xx", "miss")), 1.0);
    assert_eq!(metric(&m, &requests("diagram", "2xx", "miss")), 1.0);
    assert_eq!(metric(&m, &requests("diagram", "2xx", "stale")), 1.0);
    assert_eq!(metric(&m, &requests("no_cache_here", "4xx", "bypass")), 1.0);
    assert_eq!(metric(&m, &health) - metric(&before, &health), 1.0);
    let default_5xx: f64 = ["miss", "bypass", "uncacheable"]
        .iter()
        .map(|c| metric(&m, &requests("default", "5xx", c)))
        .sum();
    assert_eq!(default_5xx, 1.0, "the failed request is counted once");
    assert_eq!(
        metric(
            &m,
            "sidecache_upstream_errors_total{kind=\"connect\",upstream=\"nowhere\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, &duration_count(route, "hit_l2")), 1.0);
    assert_eq!(metric(&m, &duration_count(route, "hit_l1")), 1.0);
    assert_eq!(metric(&m, &duration_count("diagram", "stale")), 1.0);
    assert_eq!(
        metric(&m, "sidecache_upstream_duration_seconds_count{route=\"contractor_bundle\",upstream=\"backend\"}"),
        1.0
    );
    assert!(
        metric(
            &m,
            "sidecache_l2_operations_total{op=\"get\",result=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&m, "sidecache_l2_up"), 1.0);
    assert_eq!(metric(&m, "sidecache_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(
        m.contains("process_resident_memory_bytes"),
        "process metrics exported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn label_cardinality_stays_fixed_under_ten_thousand_paths() {
    let backend = start_backend(Duration::ZERO).await;
    let redis = RedisServer::start();
    let sc =
        Sidecache::start(SidecacheOptions::new(config(&redis.url())).backend(backend.addr())).await;
    let series = |scrape: &str| -> BTreeSet<String> {
        scrape
            .lines()
            .filter(|l| l.starts_with("sidecache_"))
            .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
            .collect()
    };
    let mut client = Client::new();
    for i in 0..100 {
        client.get(&sc.url(&format!("/unknown/{i}")), &[]).await;
    }
    let before = series(&get(&sc.admin_url("/metrics"), &[]).await.text());
    for i in 100..10_000 {
        let r = client
            .get(&sc.url(&format!("/unknown/{i}?q={i}")), &[])
            .await;
        assert_eq!(r.status, 404);
    }
    let after = series(&get(&sc.admin_url("/metrics"), &[]).await.text());
    assert_eq!(before, after, "no series per raw path");
    assert!(after.iter().all(|s| !s.contains("/unknown/")));
}

fn promtool() -> &'static str {
    "promtool"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_scrape_passes_promtool_check_metrics() {
    let backend = start_backend(Duration::ZERO).await;
    let redis = RedisServer::start();
    let sc =
        Sidecache::start(SidecacheOptions::new(config(&redis.url())).backend(backend.addr())).await;
    get(&sc.url("/api/contractors/1/bundle"), &[]).await;
    let scrape = get(&sc.admin_url("/metrics"), &[]).await.text();
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run ./dev deps (Debian package prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write scrape");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus server (Debian package `prometheus`, installed by `./dev deps`).
struct Prometheus {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_sidecache_and_computes_the_hit_ratio() {
    let backend = start_backend(Duration::ZERO).await;
    let redis = RedisServer::start();
    let sc =
        Sidecache::start(SidecacheOptions::new(config(&redis.url())).backend(backend.addr())).await;
    for _ in 0..4 {
        get(&sc.url("/api/contractors/1/bundle"), &[]).await; // 1 miss, 3 hits
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sidecache\n    static_configs:\n      - targets: ['{}']\n",
            sc.admin_addr()
        ),
    )
    .expect("write prometheus.yml");
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus not found: run ./dev deps (Debian package prometheus)");
    let _prom = Prometheus { child, _dir: dir };
    let query = "sum(sidecache_requests_total{cache=~\"hit_l1|hit_l2\"}) / sum(sidecache_requests_total{cache=~\"hit_l1|hit_l2|miss\"})";
    let url = format!(
        "http://{}/api/v1/query?query={}",
        addr,
        query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = try_get(&url, &[]).await {
            let body = r.json();
            if let Some(v) = body["data"]["result"][0]["value"][1].as_str() {
                let ratio: f64 = v.parse().expect("a number");
                assert!((ratio - 0.75).abs() < 1e-9, "hit ratio {ratio}");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped sidecache"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
