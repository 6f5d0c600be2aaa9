//! Invalidation after writes: RFC 9111 §4.4 (a successful unsafe request invalidates the
//! stored responses for its URL) and routes' `invalidate_on` rules (a write such as
//! `POST /api/concierge/sessions/:id/end` purges that route's entries with the same params).
//!
//! The purges run in a spawned task: the client's response is never delayed by them.

use pingora_http::RequestHeader;

use super::{PurgeKind, PurgeRequest, PurgeService, PurgeSource};
use crate::cache::key;
use crate::pattern::fill_path;
use crate::routing::Router;

/// The purges a successful write to `req` calls for: its exact URL (and its path without the
/// query), every query variant of its path, and the entries of each route whose
/// `invalidate_on` matches, with the same params. A prefix always ends with `?`, so `/a/1`
/// never purges `/a/10`.
pub fn purges_after(router: &Router, req: &RequestHeader) -> Vec<PurgeRequest> {
    let path = req.uri.path();
    let mut urls = vec![key::request_url(req).to_owned()];
    if req.uri.query().is_some() {
        urls.push(path.to_owned());
    }
    let mut prefixes = vec![format!("{path}?")];
    for m in router.invalidations(&req.method, path) {
        let mut target = String::new();
        fill_path(&m.policy.pattern, &m.params, &mut target);
        prefixes.push(format!("{target}?"));
        urls.push(target);
    }
    urls.dedup();
    let url = |u| PurgeRequest::new(PurgeKind::Url, u, PurgeSource::Write);
    let prefix = |p| PurgeRequest::new(PurgeKind::Prefix, p, PurgeSource::Write);
    urls.into_iter()
        .map(url)
        .chain(prefixes.into_iter().map(prefix))
        .collect()
}

impl PurgeService {
    /// Purge what a successful write to `req` invalidates, in the background.
    pub fn after_write(&'static self, router: &Router, req: &RequestHeader) {
        let purges = purges_after(router, req);
        tokio::spawn(async move {
            for purge in &purges {
                self.apply(purge).await;
            }
        });
    }
}
