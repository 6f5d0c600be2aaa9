//! The command line and the admin plane: `check` and exit 64, env overrides, `--version`,
//! `bench` verdicts, the client commands' exit codes, the admin token rules and
//! `/admin/config` redaction.

use crate::support;

use std::time::Duration;

use support::backend::start_backend;
use support::http::{get, request};
use support::sidecache::{free_addr, run_cli, Sidecache, SidecacheOptions};

const MINIMAL: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 1
grace_period = "1s"

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"
"#;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_example_configs_and_prints_a_summary() {
    for path in ["config/sidecache.toml", "config/demo.toml"] {
        let out = run_cli(&["check", "--config", path], &[]);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("upstreams:"), "{text}");
        assert!(text.contains("contractor_bundle"), "{text}");
    }
}

#[test]
fn a_bad_config_exits_64_naming_every_field_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n\n[[upstreams]]\nname = \"backend\"\naddress = \"127.0.0.1:2\"\n\n[[rewrites]]\nsource = \"/a/:x\"\ndestination = \"ghost:/b\"\n\n[[routes]]\nname = \"r\"\nmatch = \"GET /c\"\nttl = \"5 minutes\"\n",
    )
    .expect("write");
    let out = run_cli(&["check", "--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(err.contains("server.bogus"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("ghost"), "{err}");
    assert!(err.contains("routes[0].ttl"), "{err}");

    // running (not just checking) a bad config exits 64 too, without binding anything
    let out = run_cli(&["--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn version_and_help() {
    let out = run_cli(&["--version"], &[]);
    assert!(out.status.success());
    assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
    let help = stdout(&run_cli(&["--help"], &[]));
    for word in ["check", "demo", "bench", "purge", "--config"] {
        assert!(help.contains(word), "help mentions {word}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn env_overrides_the_upstream_address() {
    let backend = start_backend(Duration::ZERO).await;
    let config = MINIMAL.replace("{backend}", "127.0.0.1:1");
    let sc = Sidecache::start(
        SidecacheOptions::new(config).env("SIDECACHE_UPSTREAM_BACKEND", backend.addr().to_string()),
    )
    .await;
    let r = get(&sc.url("/api/events/1/context"), &[]).await;
    assert_eq!(r.status, 200, "the env address won: {}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn env_overrides_the_listen_address() {
    let backend = start_backend(Duration::ZERO).await;
    let listen = free_addr();
    let sc = Sidecache::spawn(
        SidecacheOptions::new(MINIMAL)
            .backend(backend.addr())
            .env("SIDECACHE_LISTEN", listen.to_string()),
    );
    let url = format!("http://{listen}/health");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = support::http::try_get(&url, &[]).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", sc.stderr_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sc.sigint();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_admin_listener_needs_a_token() {
    let backend = start_backend(Duration::ZERO).await;
    let public = format!("0.0.0.0:{}", free_addr().port());
    let config = MINIMAL.replace("{admin}", &public);
    let mut sc = Sidecache::spawn(SidecacheOptions::new(config.clone()).backend(backend.addr()));
    let status = sc
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("refuses to start");
    assert_eq!(status.code(), Some(64));
    assert!(
        sc.stderr_text().contains("SIDECACHE_ADMIN_TOKEN"),
        "{}",
        sc.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_guards_admin_but_not_metrics_or_health() {
    let backend = start_backend(Duration::ZERO).await;
    let port = free_addr().port();
    let config = MINIMAL.replace("{admin}", &format!("0.0.0.0:{port}"))
        + "\n[cache.l2]\nurl = \"redis://:s3cret@127.0.0.1:1/0\"\n";
    let _sidecache = Sidecache::start(
        SidecacheOptions::new(config)
            .backend(backend.addr())
            .env("SIDECACHE_ADMIN_TOKEN", "tok-123"),
    )
    .await;
    let admin = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(get(&admin("/metrics"), &[]).await.status, 200);
    assert_eq!(get(&admin("/health"), &[]).await.status, 200);
    assert_eq!(get(&admin("/ready"), &[]).await.status, 200);
    assert_eq!(get(&admin("/admin/config"), &[]).await.status, 401);
    assert_eq!(
        get(
            &admin("/admin/config"),
            &[("authorization", "Bearer wrong")]
        )
        .await
        .status,
        401
    );
    let purge = request(
        "POST",
        &admin("/admin/purge"),
        &[],
        bytes::Bytes::from_static(b"{\"url\":\"/x\"}"),
    )
    .await;
    assert_eq!(purge.status, 401);
    let ok = get(
        &admin("/admin/config"),
        &[("authorization", "Bearer tok-123")],
    )
    .await;
    assert_eq!(ok.status, 200);
    let text = ok.text();
    assert!(!text.contains("s3cret"), "Redis password redacted: {text}");
    assert!(!text.contains("tok-123"), "token redacted: {text}");
    assert!(text.contains("[redacted]"));
    assert_eq!(ok.json()["upstreams"][0]["name"], "backend");
}

/// One raw request to the admin listener; its status and JSON body.
async fn admin_raw(sc: &Sidecache, head: &str) -> (u16, serde_json::Value) {
    let r = support::raw::exchange(sc.admin_addr(), head.as_bytes()).await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread")]
async fn web_pages_cannot_purge_or_reload_through_the_browser() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(SidecacheOptions::new(MINIMAL).backend(backend.addr())).await;
    let admin = sc.admin_addr();
    let purge = |fields: &str| {
        let body = r#"{"url":"/x"}"#;
        format!(
            "POST /admin/purge HTTP/1.1\r\n{fields}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // An HTML form can send this (no type, or text/plain): refused, the hazard named.
    for fields in [
        format!("Host: {admin}\r\n"),
        format!("Host: {admin}\r\nContent-Type: text/plain\r\n"),
        format!("Host: {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
    ] {
        let (status, body) = admin_raw(&sc, &purge(&fields)).await;
        assert_eq!(status, 415, "{fields:?}: {body}");
        assert_eq!(body["error"], "unsupported_media_type");
        assert!(body["hazard"]
            .as_str()
            .unwrap()
            .contains("cross-site request forgery"));
    }
    // A script on another origin.
    let (status, body) = admin_raw(
        &sc,
        &purge(&format!(
            "Host: {admin}\r\nContent-Type: application/json\r\nOrigin: http://evil.example\r\n"
        )),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    assert!(body["hazard"]
        .as_str()
        .unwrap()
        .contains("cross-site request forgery"));
    // A page whose name now resolves to the listener (DNS rebinding): same-origin for the
    // browser, but not a local Host. Reads are refused as well as writes.
    let rebound = format!("Host: evil.example:{}\r\n", admin.port());
    let (status, body) = admin_raw(
        &sc,
        &purge(&format!(
            "{rebound}Content-Type: application/json\r\nOrigin: http://evil.example:{}\r\n",
            admin.port()
        )),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_host"))
    );
    assert!(body["hazard"].as_str().unwrap().contains("DNS rebinding"));
    let (status, _) = admin_raw(
        &sc,
        &format!("GET /admin/config HTTP/1.1\r\n{rebound}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    let reload = request(
        "POST",
        &sc.admin_url("/admin/reload"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reload.status, 415, "{}", reload.text());
    // The admin plane's own callers: JSON, a local Host, no or the same Origin.
    for fields in [
        format!("Host: {admin}\r\nContent-Type: application/json\r\n"),
        format!(
            "Host: localhost:{}\r\nContent-Type: Application/JSON; charset=utf-8\r\n",
            admin.port()
        ),
        format!("Host: {admin}\r\nContent-Type: application/json\r\nOrigin: http://{admin}\r\n"),
    ] {
        let (status, body) = admin_raw(&sc, &purge(&fields)).await;
        assert_eq!(status, 200, "{fields:?}: {body}");
    }
    // And `sidecache purge`.
    let out = run_cli(
        &[
            "purge",
            "--admin",
            &format!("http://{admin}"),
            "--url",
            "/x",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_credentials_do_not_let_another_origin_purge() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(
        SidecacheOptions::new(MINIMAL)
            .backend(backend.addr())
            .env("SIDECACHE_ADMIN_TOKEN", "tok-123"),
    )
    .await;
    // What a browser holding the status page's Basic credentials sends from another page.
    let basic = "Authorization: Basic dXNlcjp0b2stMTIz\r\n"; // user:tok-123
    let head = |fields: &str| {
        format!(
            "POST /admin/reload HTTP/1.1\r\nHost: sidecache-admin.internal:9091\r\n{basic}{fields}\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let (status, body) = admin_raw(&sc, &head("Content-Type: text/plain\r\n")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, body) = admin_raw(
        &sc,
        &head("Content-Type: application/json\r\nOrigin: https://evil.example\r\n"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    // With the token, a DNS name is fine (a rebound page never holds the credentials).
    let (status, body) = admin_raw(&sc, &head("Content-Type: application/json\r\n")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_admin_listener_needs_no_token() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(SidecacheOptions::new(MINIMAL).backend(backend.addr())).await;
    assert_eq!(get(&sc.admin_url("/admin/config"), &[]).await.status, 200);
    let bad = request(
        "POST",
        &sc.admin_url("/admin/purge"),
        &[("content-type", "application/json")],
        bytes::Bytes::from_static(b"not json"),
    )
    .await;
    assert_eq!(bad.status, 400, "a malformed request is a 4xx");
    assert_eq!(get(&sc.admin_url("/nope"), &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_gives_the_verdict_budgets_call_for() {
    let backend = start_backend(Duration::from_millis(30)).await;
    let url = backend.url("/api/state-machine/metadata");
    let pass = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--iterations",
            "5",
            "--p95-budget",
            "5s",
        ],
        &[],
    );
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{}{}",
        stdout(&pass),
        stderr(&pass)
    );
    assert!(stdout(&pass).contains("PASS"));
    let fail = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--iterations",
            "5",
            "--p95-budget",
            "1ms",
        ],
        &[],
    );
    assert_eq!(fail.status.code(), Some(1));
    assert!(stdout(&fail).contains("FAIL"));
    let json = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--iterations",
            "3",
            "--p95-budget",
            "5s",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert!(v.is_object(), "{v}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("weekly.html");
    let diagram = backend.url("/api/state-machine/diagram");
    let report = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--url",
            &diagram,
            "--iterations",
            "8",
            "--concurrency",
            "2",
            "--p95-budget",
            "1ms",
            "--report",
            &file.display().to_string(),
        ],
        &[],
    );
    assert_eq!(report.status.code(), Some(1), "{}", stderr(&report));
    let html = std::fs::read_to_string(&file).expect("report written");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"id="verdict"><span class="fail">FAIL</span>"#));
    assert!(html.contains("<tr><th>requests per URL</th><td>8</td></tr>"));
    assert!(html.contains("<tr><th>concurrency</th><td>2</td></tr>"));
    assert!(html.contains("p95 budget 1 ms"), "the budget line is drawn");
    assert_eq!(
        html.matches("<svg ").count(),
        4,
        "2 plots + 1 histogram per URL"
    );
    assert!(html.contains(&url) && html.contains(&diagram));
    let unwritable = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--iterations",
            "1",
            "--report",
            "/nonexistent/dir/r.html",
        ],
        &[],
    );
    assert_eq!(unwritable.status.code(), Some(1));
    assert!(stderr(&unwritable).contains("cannot write /nonexistent/dir/r.html"));
}

#[test]
fn client_commands_exit_64_on_bad_usage_and_1_when_the_server_is_unreachable() {
    for args in [
        &["bench", "--url", "https://example.com/"][..],
        &[
            "bench",
            "--url",
            "http://127.0.0.1:1/",
            "--max-error-rate",
            "lots",
        ],
        &["purge", "--admin", "http://127.0.0.1:1"],
    ] {
        let out = run_cli(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    let out = run_cli(
        &["purge", "--admin", "http://127.0.0.1:1", "--tag", "t"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("http://127.0.0.1:1/admin/purge: connect: connection refused"),
        "{err}"
    );
    let out = run_cli(
        &["purge", "--admin", "https://127.0.0.1:1", "--url", "/a"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("use http://"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_purges_reach_the_admin_api_as_the_cli_source() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(SidecacheOptions::new(MINIMAL).backend(backend.addr())).await;
    let admin = format!("http://{}/", sc.admin_addr());
    let out = tokio::task::spawn_blocking(move || {
        run_cli(&["purge", "--admin", &admin, "--prefix", "/api/"], &[])
    })
    .await
    .expect("cli task");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["purged"], "prefix", "{answer}");
    assert_eq!(answer["target"], "/api/", "{answer}");
    let metrics = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("sidecache_purges_total{kind=\"prefix\",source=\"cli\"} 1"),
        "{metrics}"
    );
}

/// A sidecache in front of `backend` writing JSON logs with an access line per request.
async fn with_json_access_log(backend: &sidecache::demo::Backend) -> Sidecache {
    let config = MINIMAL.replace(
        "grace_period = \"1s\"",
        "grace_period = \"1s\"\naccess_log = true",
    );
    Sidecache::start(
        SidecacheOptions::new(config)
            .backend(backend.addr())
            .env("SIDECACHE_LOG_FORMAT", "json"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_with_one_access_line_per_request() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = with_json_access_log(&backend).await;
    get(
        &sc.url("/api/events/1/context?x=1"),
        &[("x-request-id", "json-log-1")],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = sc.stderr_text();
        let access: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every log line is JSON"))
            .filter(|v| v["target"] == "sidecache::access" && v["request_id"] == "json-log-1")
            .collect();
        if access.len() == 1 {
            assert_eq!(access[0]["status"], 200);
            assert_eq!(access[0]["path"], "/api/events/1/context");
            assert_eq!(access[0]["route"], "default");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every config `run` refuses at start, `check` refuses too, with exit 64 and the same
/// field named: start-time checks are part of validation.
#[tokio::test(flavor = "multi_thread")]
async fn check_and_run_refuse_the_same_configs() {
    let backend = start_backend(Duration::ZERO).await;
    let public = format!("0.0.0.0:{}", free_addr().port());
    let cases = [
        (
            "public admin without a token",
            MINIMAL.replace("{admin}", &public),
            "server.admin_listen",
        ),
        (
            "bad duration",
            MINIMAL.replace("grace_period = \"1s\"", "grace_period = \"soon\""),
            "server.grace_period",
        ),
        (
            "unknown upstream",
            MINIMAL.replace(
                "default_upstream = \"backend\"",
                "default_upstream = \"ghost\"",
            ),
            "proxy.default_upstream",
        ),
    ];
    for (what, config, field) in cases {
        let sc = Sidecache::spawn(SidecacheOptions::new(config).backend(backend.addr()));
        let checked = run_cli(
            &[
                "check",
                "--config",
                sc.config_path().to_str().expect("utf8"),
            ],
            &[],
        );
        assert_eq!(
            checked.status.code(),
            Some(64),
            "check, {what}: {}",
            stderr(&checked)
        );
        assert!(
            stderr(&checked).contains(field),
            "check, {what}: {}",
            stderr(&checked)
        );
        let mut sc = sc;
        let status = sc
            .wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("run, {what}: still running"));
        assert_eq!(status.code(), Some(64), "run, {what}: {}", sc.stderr_text());
        assert!(
            sc.stderr_text().contains(field),
            "run, {what}: {}",
            sc.stderr_text()
        );
    }
}

/// The access log line says why the cache was bypassed, like `Cache-Status` does.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_line_names_the_bypass_reason() {
    let backend = start_backend(Duration::ZERO).await;
    let sc = with_json_access_log(&backend).await;
    let r = get(
        &sc.url("/api/events/1/context"),
        &[("x-request-id", "detail-1"), ("authorization", "Bearer x")],
    )
    .await;
    assert_eq!(
        r.header("cache-status"),
        Some("sidecache; fwd=bypass; detail=authorization")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = sc.stderr_text();
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "sidecache::access" && v["request_id"] == "detail-1");
        if let Some(line) = line {
            assert_eq!(line["cache"], "bypass");
            assert_eq!(line["detail"], "authorization");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
