//! Cache warming end to end, with real processes: the stand-in backend, a `redis-server` and
//! the `sidecache` binary. `sidecache warm` fills L1 and L2 through the data plane;
//! `on_start = true` holds `/ready` while warming runs, but never beyond `max_ready_delay`;
//! `every` re-runs the list, and a reload that changes the list re-warms it.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::backend::{start_backend, Backend};
use support::http::{get, try_get};
use support::redis::RedisServer;
use support::sidecache::{config_opening, run_cli, Sidecache, SidecacheOptions};

const DIAGRAM: &str = "/api/state-machine/diagram";

/// A config with L2 on `redis`, the two cached routes, and `warm_section` appended.
fn config(redis: &RedisServer, warm_section: &str) -> String {
    let opening = config_opening()
        .upstream(r#"connect_timeout = "300ms""#)
        .upstream(r#"read_timeout = "10s""#);
    opening.then(&format!(
        r#"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"

[[routes]]
name = "diagram"
match = "GET /api/state-machine/diagram"
ttl = "5m"

[cache.l2]
url = "{redis}"

{warm_section}
"#,
        redis = redis.url()
    ))
}

fn bundle(id: u32) -> String {
    format!("/api/contractors/{id}/bundle")
}

/// Writes an ids file (with a comment, a blank line and a trailing comment) into `dir`.
fn write_ids_file(dir: &Path, ids: &[u32]) -> String {
    let mut text = String::from("# active contractors, last 7 days\n\n");
    for id in ids {
        text.push_str(&format!("{id}   # contractor\n"));
    }
    let path = dir.join("contractors.txt");
    std::fs::write(&path, text).expect("write ids file");
    path.display().to_string()
}

/// Origin requests the backend saw for `paths`.
fn origin_hits(backend: &Backend, paths: &[String]) -> u64 {
    paths.iter().map(|p| backend.stats().hits(p)).sum()
}

async fn warm_cli(sc: &Sidecache, extra: &[&str]) -> std::process::Output {
    let config = sc.config_path().display().to_string();
    let mut args: Vec<String> = vec!["warm".into(), "--config".into(), config];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[])
    })
    .await
    .expect("run sidecache warm")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `/ready` until `want` status or `timeout`; returns the body JSON of that answer.
async fn wait_ready_status(sc: &Sidecache, want: u16, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match try_get(&sc.url("/ready"), &[]).await {
            Ok(r) if r.status == want => return r.json(),
            Ok(r) => last = format!("{}: {}", r.status, r.text()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/ready did not answer {want} within {timeout:?}; last {last}");
}

/// Polls `/metrics` until `series` reaches `at_least` (within 30 s); returns that scrape.
async fn wait_metric(sc: &Sidecache, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get(&sc.admin_url("/metrics"), &[]).await.text();
        if support::http::metric(&m, series) >= at_least {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {at_least}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_warm_fills_l1_and_l2_then_reports_everything_already_warm() {
    let backend = start_backend(Duration::from_millis(10)).await;
    let redis = RedisServer::start();
    let ids_dir = tempfile::tempdir().expect("temp dir");
    let ids_file = write_ids_file(ids_dir.path(), &[3, 4, 2]);
    let warm = format!(
        "[warm]\nconcurrency = 2\nrate_per_second = 100\nurls = [\"{DIAGRAM}\"]\n\n\
         [[warm.templates]]\ntemplate = \"/api/contractors/{{id}}/bundle\"\nids = [\"1\", \"2\"]\n\
         ids_file = \"{ids_file}\"\n"
    );
    let sc = Sidecache::start(SidecacheOptions::new(config(&redis, &warm)).backend(backend.addr()))
        .await;
    let paths: Vec<String> = [DIAGRAM.to_owned()]
        .into_iter()
        .chain([1, 2, 3, 4].map(bundle))
        .collect();

    let first = warm_cli(&sc, &[]).await;
    let text = stdout(&first);
    assert_eq!(
        first.status.code(),
        Some(0),
        "stdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        text.contains("warmed 5 URL(s)") && text.contains("fetched 5, already warm 0, failed 0"),
        "{text}"
    );
    for p in &paths {
        assert_eq!(backend.stats().hits(p), 1, "origin hits for {p}");
    }
    assert_eq!(
        get(&sc.url(&bundle(3)), &[]).await.header("x-cache"),
        Some("HIT-L1")
    );
    // L2 writes may trail the response slightly; poll (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("*v2:e:*").len() < paths.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        redis.keys("*v2:e:*").len() >= paths.len(),
        "redis entries: {:?}",
        redis.keys("*")
    );

    let before = origin_hits(&backend, &paths);
    let second = warm_cli(&sc, &["--json"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", stdout(&second));
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).expect("JSON summary");
    assert_eq!(report["fetched"], 0, "{report}");
    assert_eq!(report["already_warm"], 5, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(origin_hits(&backend, &paths), before, "no origin calls");

    // Nothing listens at the target: every request fails, exit 1, failures named.
    let down = warm_cli(&sc, &["--target", "http://127.0.0.1:1", "--json"]).await;
    assert_eq!(down.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&down.stdout).expect("JSON summary");
    assert_eq!(report["failed"], 5, "{report}");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_warm_with_a_missing_ids_file_names_the_file() {
    let redis = RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let warm = "[warm]\n[[warm.templates]]\ntemplate = \"/api/contractors/{id}/bundle\"\n\
                ids_file = \"/nonexistent/sidecache/contractors.txt\"\n";
    let sc =
        Sidecache::start(SidecacheOptions::new(config(&redis, warm)).backend(backend.addr())).await;
    let out = warm_cli(&sc, &[]).await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/sidecache/contractors.txt"),
        "{err}"
    );
    assert_eq!(backend.stats().total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_start_warming_holds_ready_until_done_and_caches_the_urls() {
    let backend = start_backend(Duration::from_millis(300)).await;
    let redis = RedisServer::start();
    let ids_dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<u32> = (1..=8).collect();
    let ids_file = write_ids_file(ids_dir.path(), &ids);
    let warm = format!(
        "[warm]\non_start = true\nconcurrency = 2\nmax_ready_delay = \"30s\"\n\
         urls = [\"{DIAGRAM}\"]\n\n[[warm.templates]]\ntemplate = \"/api/contractors/{{id}}/bundle\"\n\
         ids_file = \"{ids_file}\"\n"
    );
    let sc = Sidecache::start(SidecacheOptions::new(config(&redis, &warm)).backend(backend.addr()))
        .await;
    let paths: Vec<String> = [DIAGRAM.to_owned()]
        .into_iter()
        .chain(ids.iter().map(|&i| bundle(i)))
        .collect();

    // 9 URLs x 300 ms over 2 connections: at least ~1.2 s of warming.
    let held = wait_ready_status(&sc, 503, Duration::from_secs(5)).await;
    assert_eq!(held["warming"], true, "{held}");
    assert!(
        origin_hits(&backend, &paths) < paths.len() as u64,
        "still warming while held"
    );

    let ready = wait_ready_status(&sc, 200, Duration::from_secs(20)).await;
    assert_eq!(ready["warming"], false, "warming finished: {ready}");
    for p in &paths {
        assert_eq!(backend.stats().hits(p), 1, "origin hits for {p}");
    }
    assert_eq!(
        get(&sc.url(&bundle(8)), &[]).await.header("x-cache"),
        Some("HIT-L1")
    );
    assert_eq!(origin_hits(&backend, &paths), paths.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_ready_delay_bounds_readiness_while_warming_continues() {
    let backend = start_backend(Duration::from_millis(400)).await;
    let redis = RedisServer::start();
    let ids: Vec<String> = (1..=40).map(|i| format!("\"{i}\"")).collect();
    // 40 URLs x 400 ms on one connection: ~16 s of warming; readiness waits 2 s at most.
    let warm = format!(
        "[warm]\non_start = true\nconcurrency = 1\nmax_ready_delay = \"2s\"\n\n\
         [[warm.templates]]\ntemplate = \"/api/contractors/{{id}}/bundle\"\nids = [{}]\n",
        ids.join(", ")
    );
    let sc = Sidecache::start(SidecacheOptions::new(config(&redis, &warm)).backend(backend.addr()))
        .await;
    let paths: Vec<String> = (1..=40).map(bundle).collect();

    let held = wait_ready_status(&sc, 503, Duration::from_secs(2)).await;
    assert_eq!(held["warming"], true, "{held}");
    let ready = wait_ready_status(&sc, 200, Duration::from_secs(10)).await;
    let fetched = origin_hits(&backend, &paths);
    assert_eq!(
        ready["warming"], true,
        "still warming in the background: {ready}"
    );
    assert!(
        fetched < paths.len() as u64 / 2,
        "ready after {fetched} of {} URLs: before warming could finish",
        paths.len()
    );
    // Warming does continue in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin_hits(&backend, &paths) <= fetched && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(origin_hits(&backend, &paths) > fetched);
}

/// A finished start-up warming pass is counted: URLs by result, the pass's duration, and the
/// time of the last pass without a failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_warming_pass_is_counted_in_the_metrics() {
    let backend = start_backend(Duration::ZERO).await;
    let redis = RedisServer::start();
    let warm = format!(
        "[warm]\non_start = true\nurls = [\"{DIAGRAM}\", \"/api/contractors/1/bundle\", \"/missing/x\"]\n"
    );
    let sc = Sidecache::start(SidecacheOptions::new(config(&redis, &warm)).backend(backend.addr()))
        .await;
    wait_ready_status(&sc, 200, Duration::from_secs(10)).await;
    let scrape = wait_metric(
        &sc,
        "sidecache_warm_duration_seconds_count{trigger=\"start\"}",
        1.0,
    )
    .await;
    let urls = |r: &str| {
        support::http::metric(
            &scrape,
            &format!("sidecache_warm_urls_total{{result=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (urls("fetched"), urls("already_warm"), urls("failed")),
        (2.0, 0.0, 1.0)
    );
    assert_eq!(
        support::http::metric(&scrape, "sidecache_warm_last_success_timestamp_seconds"),
        0.0,
        "a pass with a failure is not a success"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reruns_the_list_and_a_reload_that_changes_it_rewarms() {
    let backend = start_backend(Duration::ZERO).await;
    let redis = RedisServer::start();
    let warm = |every: &str, urls: &[String]| {
        let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[warm]\nevery = \"{every}\"\njitter = \"0s\"\nurls = [{}]\n",
            list.join(", ")
        )
    };
    let first = [DIAGRAM.to_owned()];
    let sc = Sidecache::start(
        SidecacheOptions::new(config(&redis, &warm("1s", &first))).backend(backend.addr()),
    )
    .await;
    let scrape = wait_metric(
        &sc,
        "sidecache_warm_runs_total{result=\"ok\",trigger=\"schedule\"}",
        2.0,
    )
    .await;
    let metric = |m: &str, series: &str| support::http::metric(m, series);
    assert!(
        metric(
            &scrape,
            "sidecache_warm_duration_seconds_count{trigger=\"schedule\"}"
        ) >= 2.0
    );
    assert!(metric(&scrape, "sidecache_warm_urls_total{result=\"fetched\"}") >= 1.0);
    assert!(
        metric(
            &scrape,
            "sidecache_warm_urls_total{result=\"already_warm\"}"
        ) >= 1.0,
        "the second run finds the first one's entry"
    );
    assert!(metric(&scrape, "sidecache_warm_last_success_timestamp_seconds") > 0.0);
    assert_eq!(
        metric(
            &scrape,
            "sidecache_warm_runs_total{result=\"ok\",trigger=\"start\"}"
        ),
        0.0
    );
    assert_eq!(
        backend.stats().hits(DIAGRAM),
        1,
        "warm runs after the first hit the cache"
    );
    let stats = get(&sc.admin_url("/admin/stats"), &[]).await.json();
    assert_eq!(stats["warm"]["every_seconds"], 1.0);
    assert_eq!(stats["warm"]["runs"][0]["trigger"], "schedule");

    // A reload with a new list (and a schedule too far off to matter) warms the new list.
    let second = [DIAGRAM.to_owned(), bundle(1), bundle(2)];
    sc.rewrite_config(&config(&redis, &warm("1h", &second)));
    let reload = support::http::request(
        "POST",
        &sc.admin_url("/admin/reload"),
        &[("content-type", "application/json")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    let scrape = wait_metric(
        &sc,
        "sidecache_warm_runs_total{result=\"ok\",trigger=\"reload\"}",
        1.0,
    )
    .await;
    assert_eq!(
        origin_hits(&backend, &second[1..]),
        2,
        "the new URLs were fetched"
    );
    let r = get(&sc.url(&bundle(2)), &[]).await;
    assert_eq!(r.x_cache(), "HIT-L1");
    let scheduled = metric(
        &scrape,
        "sidecache_warm_runs_total{result=\"ok\",trigger=\"schedule\"}",
    );
    let stats = get(&sc.admin_url("/admin/stats"), &[]).await.json();
    assert_eq!(stats["warm"]["runs"][0]["trigger"], "reload");
    assert_eq!(stats["warm"]["runs"][0]["fetched"], 2);
    assert_eq!(stats["warm"]["runs"][0]["already_warm"], 1);
    assert_eq!(stats["warm"]["every_seconds"], 3600.0);
    // The 1 h schedule replaced the 1 s one: no scheduled run since the reload's.
    let m = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        metric(
            &m,
            "sidecache_warm_runs_total{result=\"ok\",trigger=\"schedule\"}"
        ),
        scheduled
    );
}
