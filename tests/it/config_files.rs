//! The shipped example configs parse, validate and route as documented.

use sidecache::config::{self, CacheMode, Ttl};
use sidecache::routing::{RewriteDecision, Router};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn load(name: &str) -> config::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    config::load(&path, &HashMap::new()).unwrap_or_else(|e| panic!("{name}:\n{}", e.report()))
}

fn check_common(c: &config::Config) {
    assert_eq!(c.upstreams[0].name, "backend");
    assert_eq!(c.upstreams[0].address, "127.0.0.1:5000");
    assert_eq!(
        c.proxy.default_upstream.map(|u| c.upstream_name(u)),
        Some("backend")
    );
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    for name in [
        "contractor_bundle",
        "event_context",
        "concierge_state",
        "state_machine_diagram",
        "state_machine_metadata",
        "no_cache_here",
    ] {
        assert!(names.contains(&name), "{name} missing");
    }
    let bundle = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(bundle.mode, CacheMode::Override);
    assert_eq!(bundle.ttl, Some(Ttl::Fixed(Duration::from_secs(300))));
    assert_eq!(bundle.stale_while_revalidate, Duration::from_secs(30));
    assert_eq!(bundle.stale_if_error, Duration::from_secs(600));
    assert_eq!(bundle.key.query, Some(vec!["include".to_string()]));
    assert_eq!(bundle.key.headers, ["accept-language"]);
    assert_eq!(bundle.tags, ["contractor:{id}"]);
    let state = c
        .routes
        .iter()
        .find(|r| r.name == "concierge_state")
        .unwrap();
    let state = state.cache.as_ref().unwrap();
    assert_eq!(state.ttl, Some(Ttl::UntilInvalidated));
    assert_eq!(state.max_ttl, Some(Duration::from_secs(86_400)));
    assert!(c
        .routes
        .iter()
        .find(|r| r.name == "no_cache_here")
        .unwrap()
        .cache
        .is_none());
    assert_eq!(
        c.cache.l2, None,
        "L2 is off unless SIDECACHE_REDIS_URL is set"
    );

    let router = Router::new(c);
    assert_eq!(
        router.rewrite("/api/contractors/1/bundle"),
        RewriteDecision::Forward {
            upstream: &router.upstreams()[0],
            path: Some("/api/contractors/1/bundle".into())
        }
    );
    let m = router
        .route(&http::Method::GET, "/api/contractors/1/bundle")
        .unwrap();
    assert_eq!(m.policy.name, "contractor_bundle");
    let hits = router.invalidations(&http::Method::POST, "/api/concierge/sessions/9/end");
    assert_eq!(hits[0].policy.name, "concierge_state");
}

#[test]
fn documented_example_parses() {
    let c = load("sidecache.toml");
    check_common(&c);
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.cache.default_mode, Some(CacheMode::Origin));
}

#[test]
fn demo_config_parses() {
    let c = load("demo.toml");
    check_common(&c);
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9091");
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(5));
}

#[test]
fn demo_backend_address_is_overridable_from_env() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let env: HashMap<String, String> = [(
        "SIDECACHE_UPSTREAM_BACKEND".to_string(),
        "127.0.0.1:45678".to_string(),
    )]
    .into();
    let c = config::load(&path, &env).unwrap();
    assert_eq!(c.upstreams[0].address, "127.0.0.1:45678");
}
