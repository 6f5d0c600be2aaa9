//! Unit tests of loading, validation, env overrides, reload checks and JSON redaction.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

const UPSTREAM: &str = "[[upstreams]]\nname = \"backend\"\naddress = \"127.0.0.1:5000\"\n";

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(text: &str) -> Config {
    match parse(text, None, &no_env()) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{}", e.report()),
    }
}

/// The report lines for a config that must fail.
fn errors(text: &str) -> Vec<String> {
    errors_with(text, &no_env())
}

fn errors_with(text: &str, env: &dyn EnvSource) -> Vec<String> {
    match parse(text, None, env) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(text: &str, expected: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?} in:\n{}",
        errs.join("\n")
    );
}

fn route(body: &str) -> String {
    format!("{UPSTREAM}[[routes]]\nname = \"r\"\nmatch = \"GET /c/:id\"\n{body}")
}

#[test]
fn defaults_are_exactly_the_documented_ones() {
    let c = ok(UPSTREAM);
    let s = &c.server;
    assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(s.admin_listen.to_string(), "127.0.0.1:9091");
    assert_eq!(
        s.threads,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    assert!(!s.work_stealing);
    assert_eq!(s.grace_period, Duration::from_secs(10));
    assert!(!s.access_log);
    assert_eq!(s.max_request_body_bytes, 64 << 20);
    assert_eq!(s.admin_token, None);
    assert!(!s.watch);
    assert_eq!(c.proxy.default_upstream, None);
    let u = &c.upstreams[0];
    assert_eq!(
        (u.name.as_str(), u.address.as_str()),
        ("backend", "127.0.0.1:5000")
    );
    assert_eq!(u.connect_timeout, Duration::from_secs(1));
    assert_eq!(u.read_timeout, Duration::from_secs(60), "nginx's default");
    assert_eq!(u.write_timeout, Duration::from_secs(30));
    assert_eq!(u.idle_timeout, Duration::from_secs(60));
    assert!(c.rewrites.is_empty() && c.routes.is_empty());
    assert_eq!(c.cache.default_mode, Some(CacheMode::Origin));
    assert_eq!(c.cache.lock_timeout, Duration::from_secs(5));
    assert_eq!(c.cache.l1.max_bytes, 256 << 20);
    assert_eq!(c.cache.l1.max_object_bytes, 8 << 20);
    assert_eq!(c.cache.l2, None);
    let w = &c.warm;
    assert!(!w.on_start);
    assert_eq!((w.concurrency, w.rate_per_second), (4, 50));
    assert_eq!(w.max_ready_delay, Duration::from_secs(30));
    assert!(w.urls.is_empty() && w.templates.is_empty());
    assert_eq!(c.source, None);
}

#[test]
fn route_defaults() {
    let c = ok(&route("ttl = \"5m\"\n"));
    let r = &c.routes[0];
    assert_eq!(r.methods, ["GET"]);
    assert_eq!(r.pattern, "/c/:id");
    let cache = r.cache.as_ref().unwrap();
    assert_eq!(cache.mode, CacheMode::Override);
    assert_eq!(cache.ttl, Some(Ttl::Fixed(Duration::from_secs(300))));
    assert_eq!(cache.max_ttl, None);
    assert_eq!(cache.stale_while_revalidate, Duration::ZERO);
    assert_eq!(cache.stale_if_error, Duration::ZERO);
    assert_eq!(cache.key, KeyConfig::default());
    assert!(cache.tags.is_empty() && cache.invalidate_on.is_empty());
    assert_eq!(cache.statuses, [200, 203, 204, 301, 404]);
    assert_eq!(cache.negative_ttl, Duration::from_secs(30));

    let origin = ok(&route(""));
    let cache = origin.routes[0].cache.as_ref().unwrap();
    assert_eq!((cache.mode, cache.ttl), (CacheMode::Origin, None));
    assert_eq!(r.timeout, None, "the upstream's read_timeout applies");
}

#[test]
fn a_route_timeout_is_a_positive_duration_allowed_without_cache() {
    let c = ok(&route("cache = false\ntimeout = \"90s\"\n"));
    assert_eq!(c.routes[0].timeout, Some(Duration::from_secs(90)));
    assert!(c.routes[0].cache.is_none());
    let c = ok(&route("ttl = \"5m\"\ntimeout = \"2m\"\n"));
    assert_eq!(c.routes[0].timeout, Some(Duration::from_secs(120)));
    assert_eq!(c.redacted_json()["routes"][0]["timeout"], "2m");
    for bad in ["\"0s\"", "\"soon\"", "30"] {
        assert!(
            !errors(&route(&format!("timeout = {bad}\n"))).is_empty(),
            "timeout = {bad}"
        );
    }
}

#[test]
fn until_invalidated_defaults_max_ttl_to_a_day() {
    let c = ok(&route("ttl = \"until-invalidated\"\n"));
    let cache = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(cache.ttl, Some(Ttl::UntilInvalidated));
    assert_eq!(cache.max_ttl, Some(Duration::from_secs(86_400)));
}

#[test]
fn full_route_is_parsed() {
    let c = ok(&route(
        r#"mode = "override"
ttl = "5m"
max_ttl = "1h"
stale_while_revalidate = "30s"
stale_if_error = "10m"
key = { query = ["z", "include"], headers = ["Accept-Language"] }
tags = ["contractor:{id}"]
statuses = [200, 404]
negative_ttl = "10s"
invalidate_on = ["post,PUT /c/:id/end"]
"#,
    ));
    let cache = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(cache.max_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(cache.stale_if_error, Duration::from_secs(600));
    assert_eq!(cache.key.query, Some(vec!["include".into(), "z".into()]));
    assert_eq!(cache.key.headers, ["accept-language"]);
    assert_eq!(cache.tags, ["contractor:{id}"]);
    assert_eq!(cache.statuses, [200, 404]);
    assert_eq!(cache.negative_ttl, Duration::from_secs(10));
    assert_eq!(
        cache.invalidate_on,
        [MethodPattern {
            methods: vec![http::Method::POST, http::Method::PUT],
            pattern: crate::pattern::Pattern::parse("/c/:id/end").unwrap()
        }]
    );
}

#[test]
fn rewrites_and_default_upstream_are_parsed() {
    let c = ok(&format!(
        "{UPSTREAM}[proxy]\ndefault_upstream = \"backend\"\n\
         [[rewrites]]\nsource = \"/api/:path*\"\ndestination = \"backend:/v2/:path*\"\n\
         strip_prefix = \"/api\"\nadd_prefix = \"/v1\"\n\
         [[rewrites]]\nsource = \"/x\"\ndestination = \"backend\"\n"
    ));
    assert_eq!(
        c.proxy.default_upstream.map(|u| c.upstream_name(u)),
        Some("backend")
    );
    assert_eq!(
        c.rewrites[0],
        RewriteConfig {
            source: crate::pattern::Pattern::parse("/api/:path*").unwrap(),
            upstream: 0,
            path: Some(crate::pattern::Pattern::parse("/v2/:path*").unwrap()),
            strip_prefix: Some("/api".into()),
            add_prefix: Some("/v1".into()),
        }
    );
    assert_eq!(c.rewrites[1].path, None);
}

#[test]
fn syntax_error_has_a_line() {
    let errs = errors("[server]\nlisten = \n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("line 2: TOML syntax error"), "{errs:?}");
}

#[test]
fn unknown_keys_are_rejected_everywhere_with_lines() {
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:1\"\nlisen = 1\n{UPSTREAM}retries = 3\n\
         [[routes]]\nname = \"r\"\nmatch = \"GET /\"\nkey = {{ quer = [] }}\n\
         [cache.l1]\nsize = 1\n[extra]\n"
    );
    let errs = errors(&text);
    let expect = [
        "server.lisen (line 3): unknown key",
        "upstreams[0].retries (line 7): unknown key",
        "routes[0].key.quer (line 11): unknown key",
        "cache.l1.size (line 13): unknown key",
        "extra (line 14): unknown key",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "{e} not in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    let server = errs.iter().find(|e| e.starts_with("server.lisen")).unwrap();
    assert!(
        server.ends_with("expected one of: listen, admin_listen, threads, work_stealing, grace_period, access_log, max_request_body, watch, trusted_proxies, allow_body_on_safe_methods, tunnel_idle_timeout, header_timeout, keepalive_timeout, admin_body_timeout, send_timeout, min_send_rate, max_header_bytes, max_headers, max_requests_per_connection, max_connections"),
        "{server}"
    );
}

#[test]
fn missing_required_keys() {
    assert_error("", "upstreams: at least one [[upstreams]] is required");
    assert_error(
        "upstreams = []",
        "upstreams: at least one [[upstreams]] is required",
    );
    let errs = errors("[[upstreams]]\n[[rewrites]]\n[[routes]]\n");
    for path in [
        "upstreams[0].name",
        "upstreams[0].address",
        "rewrites[0].source",
        "rewrites[0].destination",
        "routes[0].name",
        "routes[0].match",
    ] {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(path) && e.ends_with("missing required key")),
            "{path} not in {errs:#?}"
        );
    }
}

#[test]
fn duplicate_names() {
    assert_error(
        &format!("{UPSTREAM}{UPSTREAM}"),
        "upstreams[1].name (line 5): duplicate upstream name \"backend\"",
    );
    let text = format!(
        "{UPSTREAM}[[routes]]\nname = \"a\"\nmatch = \"GET /a\"\n[[routes]]\nname = \"a\"\nmatch = \"GET /b\"\n"
    );
    assert_error(&text, "routes[1].name (line 8): duplicate route name \"a\"");
}

#[test]
fn route_names_are_checked() {
    for (name, msg) in [
        (
            "Bad-Name",
            "invalid route name \"Bad-Name\": use only a-z, 0-9 and '_'",
        ),
        ("default", "route name \"default\" is reserved"),
        ("health", "route name \"health\" is reserved"),
    ] {
        let text = format!("{UPSTREAM}[[routes]]\nname = \"{name}\"\nmatch = \"GET /\"\n");
        assert_error(&text, &format!("routes[0].name (line 5): {msg}"));
    }
}

#[test]
fn unknown_upstreams_are_rejected() {
    assert_error(
        &format!("{UPSTREAM}[proxy]\ndefault_upstream = \"nope\"\n"),
        "proxy.default_upstream (line 5): unknown upstream \"nope\"; defined upstreams: backend",
    );
    assert_error(
        &format!("{UPSTREAM}[[rewrites]]\nsource = \"/a\"\ndestination = \"nope:/b\"\n"),
        "rewrites[0].destination (line 6): unknown upstream \"nope\"; defined upstreams: backend",
    );
}

#[test]
fn bad_patterns_are_rejected() {
    let rw = |src: &str, dst: &str| {
        format!("{UPSTREAM}[[rewrites]]\nsource = \"{src}\"\ndestination = \"{dst}\"\n")
    };
    assert_error(
        &rw("/a/:", "backend"),
        "rewrites[0].source (line 5): invalid pattern \"/a/:\": segment ':' has no name",
    );
    assert_error(
        &rw("/a/:id", "backend:/b/:other"),
        "rewrites[0].destination (line 6): destination uses :other, which the source \"/a/:id\" does not define",
    );
    assert_error(
        &rw("/a/*", "backend:/b/*"),
        "rewrites[0].destination (line 6): destination cannot use an anonymous *; name it in the source, e.g. :path*",
    );
    assert_error(
        &route("invalidate_on = [\"POST c/:id\"]\n"),
        "routes[0].invalidate_on[0] (line 7): invalid pattern \"c/:id\": pattern must start with '/'",
    );
    let text = format!("{UPSTREAM}[[routes]]\nname = \"r\"\nmatch = \"/c\"\n");
    assert!(errors(&text)[0].starts_with("routes[0].match (line 6): invalid match \"/c\""));
}

#[test]
fn unknown_methods_are_rejected() {
    let text = format!("{UPSTREAM}[[routes]]\nname = \"r\"\nmatch = \"GET,FETCH /c\"\n");
    assert_error(
        &text,
        "routes[0].match (line 6): unknown method \"FETCH\" in \"GET,FETCH /c\": expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
    );
}

#[test]
fn cache_false_forbids_cache_keys() {
    let errs = errors(&route("cache = false\nttl = \"5m\"\ntags = []\n"));
    assert_eq!(
        errs,
        [
            "routes[0].ttl (line 8): not allowed with cache = false",
            "routes[0].tags (line 9): not allowed with cache = false",
        ]
    );
    assert_eq!(ok(&route("cache = false\n")).routes[0].cache, None);
}

#[test]
fn ttl_rules() {
    assert_error(
        &route("mode = \"override\"\n"),
        "routes[0].mode (line 7): mode = \"override\" needs a ttl",
    );
    assert_error(
        &route("ttl = \"5m\"\nmax_ttl = \"1m\"\n"),
        "routes[0].max_ttl (line 8): max_ttl (1m) is shorter than ttl (5m)",
    );
    assert_error(
        &route("ttl = \"5 minutes\"\n"),
        "routes[0].ttl (line 7): invalid duration \"5 minutes\": expected a number followed by ms, s, m, h or d",
    );
    assert_error(
        &route("ttl = \"0s\"\n"),
        "routes[0].ttl (line 7): ttl must be greater than 0",
    );
    assert_error(
        &route("mode = \"lazy\"\n"),
        "routes[0].mode (line 7): invalid mode \"lazy\": expected \"override\" or \"origin\"",
    );
    assert_eq!(
        ok(&route("mode = \"origin\"\nttl = \"1m\"\n")).routes[0]
            .cache
            .as_ref()
            .unwrap()
            .mode,
        CacheMode::Origin
    );
}

#[test]
fn tags_must_use_params_of_the_pattern() {
    assert_error(
        &route("tags = [\"c:{id}\", \"x:{other}\"]\n"),
        "routes[0].tags[1] (line 7): tag \"x:{other}\" uses {other}, which the route's pattern does not capture",
    );
    assert_error(
        &route("tags = [\"c:{id\"]\n"),
        "routes[0].tags[0] (line 7): unbalanced braces in template \"c:{id\"",
    );
    // invalidate_on needs no particular params: only shared names are used.
    ok(&route(
        "invalidate_on = [\"POST /other/:x\"]\ntags = [\"c:{id}\"]\n",
    ));
}

#[test]
fn statuses_must_be_http_statuses() {
    assert_error(
        &route("statuses = [200, 99, 600]\n"),
        "routes[0].statuses[1] (line 7): 99 is out of range: expected 100..=599",
    );
    assert_error(
        &route("statuses = [200, 99, 600]\n"),
        "routes[0].statuses[2] (line 7): 600 is out of range: expected 100..=599",
    );
}

#[test]
fn key_headers_are_lower_cased_and_checked() {
    let c = ok(&route("key = { headers = [\"X-Tenant\", \"Cookie\"] }\n"));
    let key = &c.routes[0].cache.as_ref().unwrap().key;
    assert_eq!(key.headers, ["x-tenant", "cookie"]);
    assert_eq!(key.query, None);
    assert_error(
        &route("key = { headers = [\"bad header\"] }\n"),
        "routes[0].key.headers[0] (line 7): invalid header name \"bad header\"",
    );
}

#[test]
fn work_stealing_is_a_checked_boolean() {
    let on = ok(&format!("[server]\nwork_stealing = true\n{UPSTREAM}"));
    assert!(on.server.work_stealing);
    let errs = errors(&format!("[server]\nwork_stealing = 1\n{UPSTREAM}"));
    assert_eq!(
        errs,
        ["server.work_stealing (line 2): expected a boolean, found an integer"]
    );
}

#[test]
fn server_values_are_checked() {
    let text = format!(
        "[server]\nthreads = 0\nlisten = \"localhost\"\nadmin_listen = \"1.2.3.4\"\n\
         grace_period = \"soon\"\nmax_request_body = \"1MB\"\nadmin_token = \"x\"\naccess_log = \"yes\"\n{UPSTREAM}"
    );
    let errs = errors(&text);
    assert_eq!(
        errs,
        [
            "server.threads (line 2): 0 is out of range: expected 1..=1024",
            "server.listen (line 3): invalid socket address \"localhost\": expected ip:port like \"0.0.0.0:8080\"",
            "server.admin_listen (line 4): invalid socket address \"1.2.3.4\": expected ip:port like \"0.0.0.0:8080\"",
            "server.grace_period (line 5): invalid duration \"soon\": expected a number followed by ms, s, m, h or d",
            "server.max_request_body (line 6): invalid size \"1MB\": expected a number of bytes or a number followed by B, KiB, MiB or GiB",
            "server.admin_token (line 7): the admin token is never read from the file; set SIDECACHE_ADMIN_TOKEN instead",
            "server.access_log (line 8): expected a boolean, found a string",
        ]
    );
}

#[test]
fn upstream_addresses_are_host_port() {
    for good in ["127.0.0.1:5000", "backend.internal:80", "[::1]:5000"] {
        ok(&format!(
            "[[upstreams]]\nname = \"b\"\naddress = \"{good}\"\n"
        ));
    }
    for bad in [
        "127.0.0.1",
        ":80",
        "host:0",
        "host:x",
        "::1:80",
        "http://h:80",
    ] {
        let text = format!("[[upstreams]]\nname = \"b\"\naddress = \"{bad}\"\n");
        assert_error(
            &text,
            &format!(
                "upstreams[0].address (line 3): invalid address {bad:?}: expected host:port like \"127.0.0.1:5000\""
            ),
        );
    }
}

#[test]
fn zero_l1_budget_disables_l1_and_keeps_the_object_bound() {
    let c = ok(&format!("[cache.l1]\nmax_bytes = \"0\"\n{UPSTREAM}"));
    assert_eq!(c.cache.l1.max_bytes, 0);
    assert_eq!(c.cache.l1.max_object_bytes, 8 << 20);
}

#[test]
fn sizes_accept_integers() {
    let c = ok(&format!(
        "[server]\nmax_request_body = 1024\n[cache.l1]\nmax_bytes = \"1GiB\"\n{UPSTREAM}"
    ));
    assert_eq!(c.server.max_request_body_bytes, 1024);
    assert_eq!(c.cache.l1.max_bytes, 1 << 30);
    assert_error(
        &format!("[cache.l1]\nmax_bytes = \"1MiB\"\nmax_object_bytes = \"2MiB\"\n{UPSTREAM}"),
        "cache.l1.max_object_bytes (line 3): max_object_bytes must not exceed max_bytes",
    );
}

#[test]
fn cache_and_l2_are_parsed() {
    let c = ok(&format!(
        "{UPSTREAM}[cache]\ndefault_mode = \"off\"\nlock_timeout = \"2s\"\n\
         [cache.l2]\nurl = \"redis://:pw@r:6379/0\"\ntimeout = \"20ms\"\nbreaker_failures = 5\n"
    ));
    assert_eq!(c.cache.default_mode, None);
    assert_eq!(c.cache.lock_timeout, Duration::from_secs(2));
    let l2 = c.cache.l2.unwrap();
    assert_eq!(l2.url.expose(), "redis://:pw@r:6379/0");
    assert_eq!(l2.timeout, Duration::from_millis(20));
    assert_eq!(l2.breaker_failures, 5);
    assert_eq!(l2.prefix, "sidecache:");
    assert_eq!(l2.write_timeout, Duration::from_secs(1));
    assert_eq!(l2.breaker_cooldown, Duration::from_secs(5));
    assert_eq!(l2.channel, "sidecache:purge");
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nprefix = \"x\"\n"),
        "cache.l2.url (line 4): missing required key (or set SIDECACHE_REDIS_URL)",
    );
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nurl = \"http://x\"\n"),
        "cache.l2.url (line 5): invalid Redis URL: expected redis://[:password@]host:port[/db]",
    );
}

#[test]
fn warm_templates_are_checked_and_ids_file_is_relative_to_the_config() {
    let text = format!(
        "{UPSTREAM}[warm]\non_start = true\nurls = [\"/a\"]\n\
         [[warm.templates]]\ntemplate = \"/c/{{id}}\"\nids_file = \"warm/ids.txt\"\n\
         [[warm.templates]]\ntemplate = \"/c/x\"\nids = [\"1\"]\n\
         [[warm.templates]]\ntemplate = \"/d/{{id}}\"\n"
    );
    let err = parse(
        &text,
        Some(std::path::Path::new("/etc/sc/sidecache.toml")),
        &no_env(),
    )
    .unwrap_err();
    let report = err.report();
    assert!(
        report.contains("warm.templates[1].template (line 11): template \"/c/x\" must use {id}"),
        "{report}"
    );
    assert!(
        report.contains("warm.templates[2] (line 13): needs ids or ids_file"),
        "{report}"
    );
    assert_eq!(err.0.len(), 2, "{report}");

    let good = format!(
        "{UPSTREAM}[[warm.templates]]\ntemplate = \"/c/{{id}}/{{id}}\"\nids_file = \"warm/ids.txt\"\nids = [\"7\"]\n"
    );
    let c = parse(
        &good,
        Some(std::path::Path::new("/etc/sc/sidecache.toml")),
        &no_env(),
    )
    .unwrap();
    let t = &c.warm.templates[0];
    assert_eq!(
        t.ids_file.as_deref(),
        Some(std::path::Path::new("/etc/sc/warm/ids.txt"))
    );
    assert_eq!(t.ids, ["7"]);
    assert_error(
        &format!("{UPSTREAM}[warm]\nurls = [\"a\"]\n"),
        "warm.urls[0] (line 5): \"a\" must start with '/'",
    );
}

#[test]
fn warm_schedule_is_an_interval_with_bounded_jitter() {
    let c = ok(&format!(
        "{UPSTREAM}[warm]\nevery = \"15m\"\nurls = [\"/a\"]\n"
    ));
    assert_eq!(c.warm.every, Some(Duration::from_secs(900)));
    assert_eq!(c.warm.jitter, Duration::from_secs(90), "a tenth by default");
    let c = ok(&format!(
        "{UPSTREAM}[warm]\nevery = \"1m\"\njitter = \"0s\"\nurls = [\"/a\"]\n"
    ));
    assert_eq!(c.warm.jitter, Duration::ZERO);
    let c = ok(UPSTREAM);
    assert_eq!((c.warm.every, c.warm.jitter), (None, Duration::ZERO));
    assert_eq!(
        errors(&format!(
            "{UPSTREAM}[warm]\nevery = \"500ms\"\nurls = [\"/a\"]\n"
        )),
        ["warm.every (line 5): must be at least 1s"]
    );
    assert_eq!(
        errors(&format!(
            "{UPSTREAM}[warm]\nevery = \"1m\"\njitter = \"2m\"\nurls = [\"/a\"]\n"
        )),
        ["warm.jitter (line 6): must not exceed warm.every"]
    );
    assert_eq!(
        errors(&format!(
            "{UPSTREAM}[warm]\njitter = \"2m\"\nurls = [\"/a\"]\n"
        )),
        ["warm.jitter (line 5): needs warm.every"]
    );
    assert_eq!(
        errors(&format!("{UPSTREAM}[warm]\nevery = \"1m\"\n")),
        ["warm.every (line 5): needs warm.urls or [[warm.templates]]: there is nothing to warm"]
    );
}

#[test]
fn several_errors_are_all_reported_in_line_order() {
    let text = "[server]\nthreads = 0\n\
        [[upstreams]]\nname = \"a\"\naddress = \"nope\"\n\
        [[upstreams]]\nname = \"a\"\naddress = \"h:1\"\n\
        [[routes]]\nname = \"X\"\nmatch = \"GET /x\"\nttl = \"5 minutes\"\n\
        [[routes]]\nname = \"ok\"\nmatch = \"GET /y/:id\"\ntags = [\"{nope}\"]\n";
    let err = parse(text, None, &no_env()).unwrap_err();
    let lines: Vec<Option<usize>> = err.0.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        [Some(2), Some(5), Some(7), Some(10), Some(12), Some(16)],
        "{}",
        err.report()
    );
    assert_eq!(err.report().lines().count(), 6);
}

#[test]
fn env_overrides_apply() {
    let e = env(&[
        ("SIDECACHE_LISTEN", "127.0.0.1:1"),
        ("SIDECACHE_ADMIN_LISTEN", "127.0.0.1:2"),
        ("SIDECACHE_UPSTREAM_MY_API", "10.0.0.1:81"),
        ("SIDECACHE_REDIS_URL", "redis://r:6379"),
        ("SIDECACHE_ADMIN_TOKEN", "s3cret"),
    ]);
    let text = "[[upstreams]]\nname = \"my-api\"\naddress = \"h:1\"\n";
    let c = parse(text, None, &e).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:1");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:2");
    assert_eq!(c.upstreams[0].address, "10.0.0.1:81");
    let l2 = c.cache.l2.as_ref().unwrap();
    assert_eq!(l2.url.expose(), "redis://r:6379");
    assert_eq!(l2.timeout, Duration::from_millis(50));
    assert_eq!(c.server.admin_token.as_ref().unwrap().expose(), "s3cret");
    // The env also fills a [cache.l2] table that has no url.
    let text = format!("{UPSTREAM}[cache.l2]\nprefix = \"p:\"\n");
    let c = parse(&text, None, &env(&[("SIDECACHE_REDIS_URL", "redis://r:1")])).unwrap();
    assert_eq!(c.cache.l2.unwrap().prefix, "p:");
    assert_eq!(upstream_var("my-api"), "SIDECACHE_UPSTREAM_MY_API");
}

#[test]
fn bad_env_values_name_the_variable() {
    let e = env(&[
        ("SIDECACHE_LISTEN", "nope"),
        ("SIDECACHE_UPSTREAM_BACKEND", "nohost"),
        ("SIDECACHE_REDIS_URL", "http://x"),
        ("SIDECACHE_ADMIN_TOKEN", " "),
    ]);
    let errs = errors_with(UPSTREAM, &e);
    for prefix in [
        "SIDECACHE_LISTEN: invalid socket address \"nope\"",
        "SIDECACHE_UPSTREAM_BACKEND: invalid address \"nohost\"",
        "SIDECACHE_REDIS_URL: invalid Redis URL",
        "SIDECACHE_ADMIN_TOKEN: must not be empty",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(prefix)),
            "{prefix} not in {errs:#?}"
        );
    }
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, UPSTREAM).unwrap();
    let c = load(&path, &no_env()).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    let err = load(&dir.path().join("missing.toml"), &no_env()).unwrap_err();
    assert!(err.report().starts_with("cannot read "), "{}", err.report());
}

#[test]
fn error_display_formats() {
    let e = |path: &str, line| ConfigError {
        path: path.into(),
        line,
        message: "m".into(),
    };
    assert_eq!(e("a.b", Some(3)).to_string(), "a.b (line 3): m");
    assert_eq!(e("a.b", None).to_string(), "a.b: m");
    assert_eq!(e("", Some(3)).to_string(), "line 3: m");
    assert_eq!(
        ConfigErrors(vec![e("a", None), e("b", None)]).report(),
        "a: m\nb: m"
    );
    assert_eq!(ConfigErrors(vec![]).to_string(), "invalid config");
}

#[test]
fn reload_rejects_listener_and_thread_changes() {
    let old = ok(UPSTREAM);
    let mut new = old.clone();
    new.routes.clear();
    new.server.access_log = !new.server.access_log;
    assert_eq!(check_reloadable(&old, &new), Ok(()));
    new.server.listen = "127.0.0.1:1".parse().unwrap();
    new.server.admin_listen = "127.0.0.1:2".parse().unwrap();
    new.server.threads += 1;
    new.server.work_stealing = !new.server.work_stealing;
    let report = check_reloadable(&old, &new).unwrap_err().report();
    assert_eq!(
        report,
        "server.listen: changing the listen address needs a restart\n\
         server.admin_listen: changing the admin listen address needs a restart\n\
         server.threads: changing the number of threads needs a restart\n\
         server.work_stealing: changing the scheduler needs a restart"
    );
}

#[test]
fn redis_urls_are_redacted() {
    assert_eq!(
        redact_url("redis://:pw@host:6379/0"),
        "redis://:[redacted]@host:6379/0"
    );
    assert_eq!(
        redact_url("redis://user:pw@host:6379"),
        "redis://user:[redacted]@host:6379"
    );
    assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
    assert_eq!(
        redact_url("redis://user@host:6379"),
        "redis://user@host:6379"
    );
}

#[test]
fn redacted_json_hides_secrets_and_shows_everything_else() {
    let e = env(&[
        ("SIDECACHE_REDIS_URL", "redis://:pw@host:6379/0"),
        ("SIDECACHE_ADMIN_TOKEN", "tok"),
    ]);
    let c = parse(&route("ttl = \"5m\"\n"), None, &e).unwrap();
    let json = c.redacted_json();
    let text = json.to_string();
    assert!(!text.contains("pw@") && !text.contains("\"tok\""), "{text}");
    assert_eq!(
        json["cache"]["l2"]["url"],
        "redis://:[redacted]@host:6379/0"
    );
    assert_eq!(json["server"]["admin_token"], "[redacted]");
    assert_eq!(json["server"]["listen"], "0.0.0.0:8080");
    assert_eq!(json["routes"][0]["match"], "GET /c/:id");
    assert_eq!(json["routes"][0]["cache"]["ttl"], "5m");
    assert_eq!(json["upstreams"][0]["address"], "127.0.0.1:5000");
    assert_eq!(json["cache"]["default_mode"], "origin");
}

#[test]
fn sample_report_reads_well() {
    let text = "[server]\nlisten = 1979-05-27\nlisten2 = 1\n[[upstreams]]\nname = \"b\"\naddress = \"h:1\"\n\
        [[routes]]\nname = \"r\"\nmatch = \"GET /c/:id\"\nttl = 5\n";
    let report = parse(text, None, &no_env()).unwrap_err().report();
    assert_eq!(
        report,
        "server.listen (line 2): expected a string, found a datetime\n\
         server.listen2 (line 3): unknown key \"listen2\"; expected one of: listen, admin_listen, threads, work_stealing, grace_period, access_log, max_request_body, watch, trusted_proxies, allow_body_on_safe_methods, tunnel_idle_timeout, header_timeout, keepalive_timeout, admin_body_timeout, send_timeout, min_send_rate, max_header_bytes, max_headers, max_requests_per_connection, max_connections\n\
         routes[0].ttl (line 10): expected a string, found an integer"
    );
    let dup = parse("[server]\nwatch = true\nwatch = false\n", None, &no_env()).unwrap_err();
    assert!(
        dup.report()
            .starts_with("line 3: TOML syntax error: duplicate key"),
        "{}",
        dup.report()
    );
}

#[test]
fn edge_limits_default_to_safe_values() {
    let c = ok(UPSTREAM);
    let s = &c.server;
    assert!(
        s.trusted_proxies.is_empty(),
        "no peer is trusted by default"
    );
    assert!(!s.allow_body_on_safe_methods);
    assert_eq!(s.tunnel_idle_timeout, Duration::from_secs(60));
    let l = &s.limits;
    assert_eq!((l.max_header_bytes, l.max_headers), (32 << 10, 100));
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(l.max_requests_per_connection, 1000);
    assert_eq!(l.max_connections, 16384);
    assert_eq!(l.admin_body_timeout, Duration::from_secs(10));
    assert_eq!(
        l.send_timeout,
        Duration::from_secs(60),
        "nginx's send_timeout"
    );
    assert_eq!(l.min_send_rate, Some(16 << 10));
    assert!(c.cache.key_host, "the host is keyed by default");
    let r = ok(&route("ttl = \"5m\"\nkey = { query = [\"a\"] }\n"));
    assert!(!r.routes[0].cache.as_ref().unwrap().forward_unkeyed_query);
}

#[test]
fn edge_limits_are_parsed_and_checked() {
    let c = ok(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_header_bytes = \"8KiB\"\n\
         max_headers = 50\nheader_timeout = \"2s\"\nkeepalive_timeout = \"5s\"\n\
         max_requests_per_connection = 10\nmax_connections = 100\n\
         allow_body_on_safe_methods = true\nsend_timeout = \"5s\"\nmin_send_rate = \"off\"\n\
         [cache]\nkey_host = false\n{UPSTREAM}"
    ));
    assert_eq!(c.server.limits.send_timeout, Duration::from_secs(5));
    assert_eq!(c.server.limits.min_send_rate, None);
    let s = &c.server;
    assert_eq!(s.trusted_proxies.len(), 2);
    assert!(s.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!s.trusted_proxies[0].contains("11.0.0.1".parse().unwrap()));
    assert!(s.trusted_proxies[1].contains("::1".parse().unwrap()));
    assert_eq!(
        (s.limits.max_header_bytes, s.limits.max_headers),
        (8 << 10, 50)
    );
    assert_eq!(s.limits.max_connections, 100);
    assert!(s.allow_body_on_safe_methods && !c.cache.key_host);
    for (text, expected) in [
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "server.trusted_proxies[0] (line 2): invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            "[server]\nmax_header_bytes = \"2MiB\"\n",
            "server.max_header_bytes (line 2): must be between 1KiB and 1MiB",
        ),
        (
            "[server]\nmax_headers = 0\n",
            "server.max_headers (line 2): 0 is out of range",
        ),
        (
            "[server]\nheader_timeout = \"0s\"\n",
            "server.header_timeout (line 2): must be greater than 0",
        ),
    ] {
        let errs = errors(&format!("{text}{UPSTREAM}"));
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{expected:?} in {errs:?}"
        );
    }
    assert_error(
        &route("ttl = \"5m\"\nforward_unkeyed_query = true\n"),
        "routes[0].forward_unkeyed_query (line 8): only meaningful with key = { query = [...] }: without it the whole query is keyed and forwarded",
    );
}

#[test]
fn cidrs_match_their_networks_only() {
    let c = Cidr::parse("192.168.1.0/24").unwrap();
    assert!(c.contains("192.168.1.200".parse().unwrap()));
    assert!(!c.contains("192.168.2.1".parse().unwrap()));
    assert!(
        c.contains("::ffff:192.168.1.7".parse().unwrap()),
        "IPv4-mapped counts as IPv4"
    );
    assert!(!c.contains("::1".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(Cidr::parse("::/0")
        .unwrap()
        .contains("2001:db8::1".parse().unwrap()));
    assert!(Cidr::parse("127.0.0.1")
        .unwrap()
        .contains("127.0.0.1".parse().unwrap()));
    assert!(!Cidr::parse("127.0.0.1")
        .unwrap()
        .contains("127.0.0.2".parse().unwrap()));
    for bad in [
        "",
        "10.0.0.0/",
        "10.0.0/8",
        "::1/129",
        "host/8",
        "::ffff:10.0.0.0/95",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_ipv4_mapped_network_is_the_ipv4_network_it_maps() {
    // Before: prefix 128 applied to the canonical 32-bit form underflowed the mask (every
    // IPv4 peer trusted in a release build, a panic per request in a debug one).
    let host = Cidr::parse("::ffff:10.0.0.5").unwrap();
    assert_eq!(host, Cidr::parse("10.0.0.5/32").unwrap());
    assert!(host.contains("10.0.0.5".parse().unwrap()));
    assert!(host.contains("::ffff:10.0.0.5".parse().unwrap()));
    assert!(!host.contains("10.0.0.6".parse().unwrap()));
    assert!(!host.contains("192.168.1.1".parse().unwrap()));
    let net = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
    assert_eq!(net.to_string(), "10.0.0.0/8");
    assert!(net.contains("10.200.0.1".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
}

mod cidr_properties {
    use super::Cidr;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The reference: the first `prefix` bits of both addresses, bit by bit.
    fn same_leading_bits(a: &[u8], b: &[u8], prefix: u32) -> bool {
        (0..prefix).all(|i| {
            let (byte, bit) = ((i / 8) as usize, 7 - (i % 8));
            (a[byte] >> bit) & 1 == (b[byte] >> bit) & 1
        })
    }

    fn octets(ip: IpAddr) -> Vec<u8> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #[test]
        fn contains_agrees_with_a_bitwise_reference(net in any_ip(), p in 0u8..=128, ip in any_ip()) {
            let text = format!("{net}/{p}");
            let Ok(cidr) = Cidr::parse(&text) else {
                // Refused: a prefix wider than the family, or a mapped prefix under 96.
                let max = if net.is_ipv4() { 32 } else { 128 };
                let mapped = matches!(net, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
                prop_assert!(p > max || (mapped && p < 96), "{text} refused");
                return Ok(());
            };
            let (n, a) = (octets(net), octets(ip));
            let effective = u32::from(p) - if n.len() == 4 && net.is_ipv6() { 96 } else { 0 };
            let expected = n.len() == a.len() && same_leading_bits(&n, &a, effective);
            prop_assert_eq!(cidr.contains(ip), expected, "{} contains {}", text, ip);
        }

        #[test]
        fn a_mapped_network_matches_exactly_as_its_ipv4_form(v4 in any::<u32>(), p in 0u8..=32, ip in any_ip()) {
            let v4 = Ipv4Addr::from(v4);
            let plain = Cidr::parse(&format!("{v4}/{p}")).unwrap();
            let mapped = Cidr::parse(&format!("{}/{}", v4.to_ipv6_mapped(), p + 96)).unwrap();
            prop_assert_eq!(plain, mapped);
            prop_assert_eq!(plain.contains(ip), mapped.contains(ip));
        }
    }
}

#[test]
fn the_channel_secret_is_redacted_and_restart_only() {
    let text = format!(
        "{UPSTREAM}[cache.l2]\nurl = \"redis://127.0.0.1:1\"\nchannel_secret = \"0123456789abcdef\"\n"
    );
    let c = ok(&text);
    assert_eq!(
        c.redacted_json()["cache"]["l2"]["channel_secret"],
        "[redacted]"
    );
    let mut other = c.clone();
    other.cache.l2.as_mut().unwrap().channel_secret = Some(Secret::new("fedcba9876543210"));
    let report = check_reloadable(&c, &other).unwrap_err().report();
    assert!(report.starts_with("cache.l2.channel_secret"), "{report}");
    assert_error(
        &format!(
            "{UPSTREAM}[cache.l2]\nurl = \"redis://127.0.0.1:1\"\nchannel_secret = \"short\"\n"
        ),
        "cache.l2.channel_secret (line 6): must be at least 16 characters",
    );
}

#[test]
fn the_channel_secret_can_come_from_the_env() {
    let with_l2 = format!("{UPSTREAM}[cache.l2]\nurl = \"redis://127.0.0.1:1\"\n");
    let secret = env(&[("SIDECACHE_CHANNEL_SECRET", "0123456789abcdef0123")]);
    let c = parse(&with_l2, None, &secret).unwrap();
    let got = c.cache.l2.unwrap().channel_secret.unwrap();
    assert_eq!(got.expose(), "0123456789abcdef0123");
    let errs = errors_with(UPSTREAM, &secret);
    assert!(
        errs[0].starts_with("SIDECACHE_CHANNEL_SECRET: set, but there is no [cache.l2]"),
        "{errs:?}"
    );
    let short = env(&[("SIDECACHE_CHANNEL_SECRET", "short")]);
    assert_eq!(
        errors_with(&with_l2, &short),
        ["SIDECACHE_CHANNEL_SECRET: must be at least 16 characters"]
    );
}

#[test]
fn l2_modes_are_parsed_and_need_their_fields() {
    let c = ok(&format!(
        "{UPSTREAM}[cache.l2]\nmode = \"cluster\"\n\
         nodes = [\"redis://:pw@a:7000\", \"redis://b:7001\"]\n"
    ));
    let l2 = c.cache.l2.as_ref().unwrap();
    assert_eq!(l2.mode, L2Mode::Cluster);
    assert_eq!(l2.nodes.len(), 2);
    assert_eq!(l2.nodes[0].expose(), "redis://:pw@a:7000");
    let json = c.redacted_json();
    assert_eq!(json["cache"]["l2"]["mode"], "cluster");
    assert_eq!(
        json["cache"]["l2"]["nodes"][0],
        "redis://:[redacted]@a:7000"
    );

    let c = ok(&format!(
        "{UPSTREAM}[cache.l2]\nmode = \"sentinel\"\nsentinels = [\"redis://s:26379\"]\n\
         master_name = \"m\"\n"
    ));
    let l2 = c.cache.l2.unwrap();
    assert_eq!((l2.mode, l2.master_name.as_str()), (L2Mode::Sentinel, "m"));
    assert!(!l2.fill_lock, "off by default");
    assert_eq!(l2.compress_above, Some(4096), "4 KiB by default");
    let l2_with = |line: &str| {
        ok(&format!(
            "{UPSTREAM}[cache.l2]\nurl = \"redis://r:1\"\n{line}\n"
        ))
        .cache
        .l2
        .unwrap()
        .compress_above
    };
    assert_eq!(l2_with("compress_above = \"off\""), None);
    assert_eq!(l2_with("compress_above = \"1KiB\""), Some(1024));
    assert_eq!(l2_with("compress_above = 0"), Some(0));
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nurl = \"redis://r:1\"\ncompress_above = true\n"),
        "cache.l2.compress_above (line 6): expected a size like \"4KiB\", a number of bytes, or \"off\", found a boolean",
    );
    let c = ok(&format!(
        "{UPSTREAM}[cache.l2]\nurl = \"redis://r:1\"\nfill_lock = true\n"
    ));
    assert!(c.cache.l2.as_ref().unwrap().fill_lock);
    assert_eq!(c.redacted_json()["cache"]["l2"]["fill_lock"], true);
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nurl = \"redis://r:1\"\nfill_lock = \"yes\"\n"),
        "cache.l2.fill_lock (line 6): expected a boolean, found a string",
    );
    assert_eq!(
        ok(&format!("{UPSTREAM}[cache.l2]\nurl = \"redis://r:1\"\n"))
            .cache
            .l2
            .unwrap()
            .mode,
        L2Mode::Standalone
    );

    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nmode = \"cluster\"\n"),
        "cache.l2.nodes (line 5): mode = \"cluster\" needs at least one seed node (or set SIDECACHE_REDIS_NODES)",
    );
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nmode = \"cluster\"\nnodes = [\"redis://a:1\"]\nprefix = \"{{x}}\"\n"),
        "cache.l2.prefix (line 7): must not contain '{' or '}' with mode = \"cluster\": the store adds its own hash tags",
    );
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nmode = \"cluster\"\nnodes = [\"http://a:1\"]\n"),
        "cache.l2.nodes[0] (line 6): invalid Redis URL: expected redis://[:password@]host:port[/db]",
    );
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nmode = \"sentinel\"\nsentinels = [\"redis://s:1\"]\n"),
        "cache.l2.master_name (line 5): mode = \"sentinel\" needs the master's name",
    );
    assert_error(
        &format!("{UPSTREAM}[cache.l2]\nmode = \"primary\"\n"),
        "cache.l2.mode (line 5): expected \"standalone\", \"cluster\" or \"sentinel\"",
    );
}

#[test]
fn l2_node_lists_come_from_the_env_and_mode_changes_need_a_restart() {
    let text = format!("{UPSTREAM}[cache.l2]\nmode = \"cluster\"\n");
    let e = env(&[("SIDECACHE_REDIS_NODES", "redis://a:1, redis://b:2")]);
    let c = parse(&text, None, &e).unwrap();
    let nodes: Vec<&str> = c
        .cache
        .l2
        .as_ref()
        .unwrap()
        .nodes
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(nodes, ["redis://a:1", "redis://b:2"]);

    let text = format!("{UPSTREAM}[cache.l2]\nmode = \"sentinel\"\nmaster_name = \"m\"\n");
    let e = env(&[("SIDECACHE_REDIS_SENTINELS", "redis://s:26379")]);
    let sentinel = parse(&text, None, &e).unwrap();
    assert_eq!(sentinel.cache.l2.as_ref().unwrap().sentinels.len(), 1);

    let err = parse(
        UPSTREAM,
        None,
        &env(&[("SIDECACHE_REDIS_NODES", "redis://a:1")]),
    )
    .unwrap_err();
    assert!(
        err.report()
            .starts_with("SIDECACHE_REDIS_NODES: set, but there is no [cache.l2]"),
        "{}",
        err.report()
    );
    let err = parse(
        &text,
        None,
        &env(&[("SIDECACHE_REDIS_SENTINELS", "http://s")]),
    )
    .unwrap_err();
    assert!(
        err.report()
            .contains("SIDECACHE_REDIS_SENTINELS: invalid Redis URL"),
        "{}",
        err.report()
    );

    let report = check_reloadable(&sentinel, &c).unwrap_err().report();
    assert!(report.contains("cache.l2.mode"), "{report}");
    assert!(report.contains("cache.l2.nodes"), "{report}");
    assert!(report.contains("cache.l2.sentinels"), "{report}");
    assert!(report.contains("cache.l2.master_name"), "{report}");
}
