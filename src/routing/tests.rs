//! Router tests, built from TOML so they exercise the same path as production.

use super::*;
use std::collections::HashMap;

fn router(text: &str) -> Router {
    let config = crate::config::parse(text, None, &HashMap::new())
        .unwrap_or_else(|e| panic!("{}", e.report()));
    Router::new(&config)
}

const BASE: &str = r#"
[[upstreams]]
name = "backend"
address = "127.0.0.1:5000"
[[upstreams]]
name = "legacy"
address = "127.0.0.1:5001"
"#;

/// A decision as (upstream index, new path); `None` for NotFound.
fn fwd(upstream: usize, path: Option<&str>) -> Option<(usize, Option<String>)> {
    Some((upstream, path.map(str::to_string)))
}

trait Decided {
    fn decided(&self) -> Option<(usize, Option<String>)>;
}

impl Decided for RewriteDecision<'_> {
    fn decided(&self) -> Option<(usize, Option<String>)> {
        match self {
            RewriteDecision::Forward { upstream, path } => Some((upstream.index, path.clone())),
            RewriteDecision::NotFound => None,
        }
    }
}

#[test]
fn first_matching_rewrite_wins_and_templates_apply() {
    let r = router(&format!(
        r#"{BASE}
[[rewrites]]
source = "/api/legacy/:path*"
destination = "legacy:/:path*"
[[rewrites]]
source = "/api/:path*"
destination = "backend:/api/:path*"
strip_prefix = "/api"
add_prefix = "/v1"
[[rewrites]]
source = "/static/*"
destination = "legacy"
"#
    ));
    assert_eq!(r.rewrite("/api/legacy/a/b").decided(), fwd(1, Some("/a/b")));
    assert_eq!(
        r.rewrite("/api/contractors/1").decided(),
        fwd(0, Some("/v1/contractors/1"))
    );
    assert_eq!(r.rewrite("/static/x.css").decided(), fwd(1, None));
    assert_eq!(r.rewrite("/elsewhere"), RewriteDecision::NotFound);
    assert_eq!(r.rewrite("/elsewhere").decided(), None);
    assert_eq!(r.default_upstream(), None);
}

#[test]
fn unmatched_requests_go_to_the_default_upstream_unchanged() {
    let r = router(&format!("{BASE}[proxy]\ndefault_upstream = \"legacy\"\n"));
    assert_eq!(r.default_upstream(), Some(1));
    assert_eq!(r.rewrite("/anything?x").decided(), fwd(1, None));
}

#[test]
fn upstreams_keep_config_order() {
    let r = router(BASE);
    assert_eq!(r.upstreams().len(), 2);
    assert_eq!(r.upstreams()[1].config.name, "legacy");
    assert_eq!(r.upstreams()[1].index, 1);
}

const ROUTES: &str = r#"
[[routes]]
name = "bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"
tags = ["contractor:{id}"]
invalidate_on = ["PUT /api/contractors/:id"]
[[routes]]
name = "state"
match = "GET /api/concierge/sessions/:id/state"
ttl = "until-invalidated"
invalidate_on = ["POST /api/concierge/sessions/:id/end", "PUT,DELETE /api/concierge/sessions/:id"]
[[routes]]
name = "admin"
match = "GET /api/admin/*"
cache = false
[[routes]]
name = "writes"
match = "POST,PUT /api/contractors/:id"
[[routes]]
name = "catch_all"
match = "GET /api/:rest*"
"#;

#[test]
fn routes_match_methods_and_first_match_wins() {
    let r = router(&format!("{BASE}{ROUTES}"));
    assert_eq!(r.routes().len(), 5);
    let m = r.route(&Method::GET, "/api/contractors/42/bundle").unwrap();
    assert_eq!((m.policy.name.as_str(), m.policy.index), ("bundle", 0));
    assert_eq!(m.params.get("id"), Some("42"));
    assert!(m.policy.cache.is_some());
    // HEAD is allowed wherever GET is.
    assert_eq!(
        r.route(&Method::HEAD, "/api/contractors/42/bundle")
            .unwrap()
            .policy
            .name,
        "bundle"
    );
    // POST to a GET route falls through to the next matching route.
    assert_eq!(
        r.route(&Method::POST, "/api/contractors/42")
            .unwrap()
            .policy
            .name,
        "writes"
    );
    assert!(r
        .route(&Method::HEAD, "/api/contractors/42")
        .is_none_or(|m| m.policy.name != "writes"));
    assert!(r
        .route(&Method::POST, "/api/contractors/42/bundle")
        .is_none());
    let admin = r.route(&Method::GET, "/api/admin/users").unwrap();
    assert_eq!(admin.policy.name, "admin");
    assert!(admin.policy.cache.is_none());
    let rest = r.route(&Method::GET, "/api/other/x").unwrap();
    assert_eq!(
        (rest.policy.name.as_str(), rest.params.get("rest")),
        ("catch_all", Some("other/x"))
    );
    assert!(r.route(&Method::GET, "/not-api").is_none());
}

#[test]
fn invalidations_find_routes_with_the_write_params() {
    let r = router(&format!("{BASE}{ROUTES}"));
    let hits = r.invalidations(&Method::POST, "/api/concierge/sessions/s1/end");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].policy.name, "state");
    assert_eq!(hits[0].params.get("id"), Some("s1"));
    let hits = r.invalidations(&Method::DELETE, "/api/concierge/sessions/s2");
    assert_eq!((hits.len(), hits[0].params.get("id")), (1, Some("s2")));
    let hits = r.invalidations(&Method::PUT, "/api/contractors/7");
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].policy.cache.as_ref().unwrap().tags[0].fill(&hits[0].params),
        "contractor:7"
    );
    assert!(r
        .invalidations(&Method::GET, "/api/concierge/sessions/s1/end")
        .is_empty());
    assert!(r
        .invalidations(&Method::POST, "/api/contractors/7")
        .is_empty());
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}
