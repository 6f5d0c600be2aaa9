//! Hot config reload (SIGHUP, `POST /admin/reload`, the file watcher) and the zero-downtime
//! binary upgrade (listening sockets handed to a new process) under steady load.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::backend::start_backend;
use support::http::{get, metric, request, try_get};
use support::sidecache::{admin_reload, Sidecache, SidecacheOptions};
use support::traffic::Traffic;

fn config(ttl: &str, watch: bool) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
threads = 2
grace_period = "2s"
watch = {watch}

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{{backend}}"

[[routes]]
name = "event_context"
match = "GET /api/events/:id/context"
ttl = "{ttl}"
"#
    )
}

fn reloads(scrape: &str, result: &str) -> f64 {
    metric(
        scrape,
        &format!("sidecache_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Write the config with the real ports substituted (the harness substitutes on start).
fn rewrite(sc: &Sidecache, text: &str, backend: std::net::SocketAddr) {
    let text = text
        .replace("{listen}", &sc.listen_addr().to_string())
        .replace("{admin}", &sc.admin_addr().to_string())
        .replace("{backend}", &backend.to_string());
    sc.rewrite_config(&text);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_ttl_without_dropping_an_in_flight_request() {
    let backend = start_backend(Duration::ZERO).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(config("1h", false)).backend(backend.addr())).await;
    let slow_url = sc.url("/test/slow?ms=1500");
    let in_flight = tokio::spawn(async move { get(&slow_url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    rewrite(&sc, &config("1s", false), backend.addr());
    sc.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&get(&sc.admin_url("/metrics"), &[]).await.text(), "ok") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "reload never happened: {}",
            sc.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = sc.url("/api/events/9/context");
    assert_eq!(get(&url, &[]).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(&url, &[]).await.x_cache(),
        "MISS",
        "the new 1s TTL applies"
    );
    assert_eq!(
        in_flight.await.expect("task").status,
        200,
        "in-flight request finished"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_reload_keeps_the_old_config_and_names_the_field() {
    let backend = start_backend(Duration::ZERO).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(config("1h", false)).backend(backend.addr())).await;
    let url = sc.url("/api/events/1/context");
    get(&url, &[]).await;

    rewrite(&sc, &config("soon", false), backend.addr());
    let r = admin_reload(&sc).await;
    assert_eq!(r.status, 422);
    let body = r.json();
    assert_eq!(body["result"], "error");
    assert_eq!(body["errors"][0]["path"], "routes[0].ttl");
    assert!(body["errors"][0]["line"].is_u64());
    assert_eq!(
        get(&url, &[]).await.x_cache(),
        "HIT-L1",
        "old config keeps serving"
    );
    let m = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert_eq!(reloads(&m, "error"), 1.0);
    assert!(
        sc.stderr_text().contains("routes[0].ttl"),
        "logged with the field path"
    );

    // a change that needs a restart is rejected with a message that says so
    let moved = config("1h", false).replace("{listen}", "127.0.0.1:1");
    sc.rewrite_config(
        &moved
            .replace("{admin}", &sc.admin_addr().to_string())
            .replace("{backend}", &backend.addr().to_string()),
    );
    let r = admin_reload(&sc).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("restart"), "{}", r.text());

    rewrite(&sc, &config("1h", false), backend.addr());
    let r = admin_reload(&sc).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_watcher_picks_up_an_edit() {
    let backend = start_backend(Duration::ZERO).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(config("1h", true)).backend(backend.addr())).await;
    let url = sc.url("/api/events/3/context");
    get(&url, &[]).await;
    assert_eq!(get(&url, &[]).await.x_cache(), "HIT-L1");
    // disable caching for the route by editing the file: no signal, no API call
    let edited = config("1h", true).replace("ttl = \"1h\"", "cache = false");
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime
    rewrite(&sc, &edited, backend.addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(&url, &[]).await.x_cache() == "BYPASS" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watcher never reloaded: {}",
            sc.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_under_load_loses_no_request() {
    let backend = start_backend(Duration::ZERO).await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("upgrade.sock");
    let sock_arg = sock.to_str().expect("utf8").to_owned();
    let old = Sidecache::start(
        SidecacheOptions::new(config("1h", false))
            .backend(backend.addr())
            .arg("--upgrade-sock")
            .arg(sock_arg.clone()),
    )
    .await;
    let (listen, admin) = (old.listen_addr(), old.admin_addr());

    let load = Traffic::start(4, move |worker, i| {
        format!(
            "http://{listen}/api/events/{}/context",
            (worker * 1000 + i) % 50
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // the new process, same config (same ports), takes the sockets over
    let config_text = std::fs::read_to_string(old.config_path()).expect("config");
    let new = Sidecache::spawn(
        SidecacheOptions::new(config_text)
            .arg("--upgrade")
            .arg("--upgrade-sock")
            .arg(sock_arg),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut old = old;
    let quit = std::process::Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .expect("kill -QUIT");
    assert!(quit.success());
    let exited = old.wait_exit(Duration::from_secs(20)).await;
    assert!(exited.is_some(), "old process exits after handing over");
    let served_before = load.ok();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (ok, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "failed requests during the upgrade: {failures:?}"
    );
    assert!(
        ok > served_before,
        "the new process serves after the old one left"
    );
    // the new process also takes over the admin port once the old one released it
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_get(&format!("http://{admin}/health"), &[])
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{}", new.stderr_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new.sigint();
}

/// A reload that changes a restart-only setting (the Redis URL, key prefix or purge channel,
/// adding or removing Redis, the grace period) is refused, naming the field and its line;
/// `POST /admin/reload` answers non-2xx, and the old config keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_a_restart_only_setting_is_refused() {
    let redis = support::redis::RedisServer::start();
    let other = support::redis::RedisServer::start();
    let backend = start_backend(Duration::ZERO).await;
    let l2 = |url: &str, prefix: &str, channel: &str| {
        format!("\n[cache.l2]\nurl = \"{url}\"\nprefix = \"{prefix}\"\nchannel = \"{channel}\"\n")
    };
    let base = config("1h", false) + &l2(&redis.url(), "rr:", "rr:purge");
    let sc = Sidecache::start(SidecacheOptions::new(base.clone()).backend(backend.addr())).await;
    let url = sc.url("/api/events/1/context");
    assert_eq!(get(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(get(&url, &[]).await.x_cache(), "HIT-L1");

    let cases = [
        (
            "cache.l2.url",
            config("1h", false) + &l2(&other.url(), "rr:", "rr:purge"),
        ),
        (
            "cache.l2.prefix",
            config("1h", false) + &l2(&redis.url(), "other:", "rr:purge"),
        ),
        (
            "cache.l2.channel",
            config("1h", false) + &l2(&redis.url(), "rr:", "other"),
        ),
        ("cache.l2", config("1h", false)),
        (
            "server.grace_period",
            base.replace("grace_period = \"2s\"", "grace_period = \"9s\""),
        ),
    ];
    for (field, text) in cases {
        rewrite(&sc, &text, backend.addr());
        let r = admin_reload(&sc).await;
        assert_eq!(r.status, 422, "{field}: {}", r.text());
        let body = r.json();
        let error = &body["errors"][0];
        assert_eq!(error["path"], field, "{}", r.text());
        assert!(
            error["message"].as_str().unwrap_or("").contains("restart"),
            "{}",
            r.text()
        );
        if field != "cache.l2" {
            assert!(
                error["line"].is_u64(),
                "{field}: the line is named: {}",
                r.text()
            );
        }
        assert_eq!(
            get(&url, &[]).await.x_cache(),
            "HIT-L1",
            "{field}: old config serves"
        );
    }
    let m = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert_eq!(reloads(&m, "error"), 5.0);
    assert!(redis.keys("other:*").is_empty() && other.keys("*").is_empty());

    rewrite(
        &sc,
        &base.replace("ttl = \"1h\"", "ttl = \"2h\""),
        backend.addr(),
    );
    let r = admin_reload(&sc).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `config` with the route's ttl at `{1000 k + 7}ms` (version `k`, shown as such by
/// `/admin/config`) and `fillers` more routes, so that validating it takes a while.
fn version(k: u64, fillers: usize) -> String {
    let mut text = config(&format!("{}ms", 1000 * k + 7), false);
    for i in 0..fillers {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"filler_{i}\"\nmatch = \"GET /filler/{i}/:id\"\nttl = \"1m\"\n"
        ));
    }
    text
}

/// Rounds of the randomized reload race, and the routes that widen it.
const RELOAD_ROUNDS: u64 = 50;
const RELOAD_FILLERS: usize = 200;

/// An admin reload and a SIGHUP fired together while the file changes between them, round
/// after round with random spacing: once both have finished, the live config
/// (`GET /admin/config`) is the file's last version, whichever reload read what. Replay with
/// `SIDECACHE_TEST_SEED`.
#[tokio::test(flavor = "multi_thread")]
async fn racing_reloads_leave_the_newest_file_live() {
    let seed = std::env::var("SIDECACHE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("racing_reloads_leave_the_newest_file_live: SIDECACHE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let backend = start_backend(Duration::ZERO).await;
    let sc =
        Sidecache::start(SidecacheOptions::new(version(0, RELOAD_FILLERS)).backend(backend.addr()))
            .await;
    let reloads_done = || async {
        let m = get(&sc.admin_url("/metrics"), &[]).await.text();
        reloads(&m, "ok") + reloads(&m, "error")
    };
    for round in 0..RELOAD_ROUNDS {
        let (older, newer) = (2 * round + 1, 2 * round + 2);
        rewrite(&sc, &version(older, RELOAD_FILLERS), backend.addr());
        let admin = sc.admin_url("/admin/reload");
        let by_admin = tokio::spawn(async move {
            request(
                "POST",
                &admin,
                &[("content-type", "application/json")],
                Bytes::new(),
            )
            .await
        });
        tokio::time::sleep(Duration::from_micros(rng.u64(0..5_000))).await;
        rewrite(&sc, &version(newer, RELOAD_FILLERS), backend.addr());
        sc.sighup();
        let answer = by_admin.await.expect("admin reload task");
        assert_eq!(answer.status, 200, "seed {seed}: {}", answer.text());

        let deadline = Instant::now() + Duration::from_secs(20);
        while reloads_done().await < (2 * (round + 1)) as f64 {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: the SIGHUP reload never finished"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let live = get(&sc.admin_url("/admin/config"), &[]).await.json();
        assert_eq!(
            live["routes"][0]["cache"]["ttl"],
            format!("{}ms", 1000 * newer + 7),
            "seed {seed}, round {round}: the last reload to finish applied an older file"
        );
    }
}
