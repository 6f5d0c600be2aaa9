//! Invalidation after writes: RFC 9111 §4.4 (a successful unsafe request invalidates the
//! stored responses for its URL) and routes' `invalidate_on` rules (a write such as
//! `POST /api/concierge/sessions/:id/end` purges that route's entries with the same params).
//!
//! Purges run in a spawned task: the client's response is never delayed by them.

use pingora_http::RequestHeader;

use crate::cache::key;
use crate::live::{Live, Snapshot};
use crate::routing::fill_path;
use crate::telemetry::metrics::metrics;

/// What a successful write invalidates: exact URLs and path prefixes (a prefix always ends
/// with `?`, so `/a/1` never purges `/a/10`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteInvalidation {
    pub urls: Vec<String>,
    pub query_prefixes: Vec<String>,
}

/// Work out what a successful unsafe request invalidates.
pub fn plan(snapshot: &Snapshot, req: &RequestHeader) -> WriteInvalidation {
    let mut plan = WriteInvalidation::default();
    let path = req.uri.path();
    plan.urls.push(key::request_url(req).to_owned());
    if req.uri.query().is_some() {
        plan.urls.push(path.to_owned());
    }
    plan.query_prefixes.push(format!("{path}?"));
    for m in snapshot.router.invalidations(&req.method, path) {
        let mut target = String::new();
        fill_path(&m.policy.pattern, &m.params, &mut target);
        plan.query_prefixes.push(format!("{target}?"));
        plan.urls.push(target);
    }
    plan.urls.dedup();
    plan
}

/// Purge what a successful write to `req` invalidates, in the background.
pub fn after_write(live: &'static Live, snapshot: &Snapshot, req: &RequestHeader) {
    let plan = plan(snapshot, req);
    metrics().purges.with_label_values(&["write"]).inc();
    tokio::spawn(async move {
        for url in &plan.urls {
            live.cache.purge_url(url).await;
        }
        for prefix in &plan.query_prefixes {
            live.cache.purge_prefix(prefix).await;
        }
    });
}
