//! Invalidation after writes: RFC 9111 §4.4 (a successful unsafe request invalidates the
//! stored responses for its URL) and routes' `invalidate_on` rules (a write such as
//! `POST /api/concierge/sessions/:id/end` purges that route's entries with the same params).
//!
//! **A write purges only what could have been stored** ([`purges_after`]): its own URL and
//! the same-site URLs its response names in `Location`/`Content-Location`, each only when a
//! GET of it could be cached (a route with caching on, or origin mode), plus its
//! `invalidate_on` targets. A write to a path nothing ever caches purges nothing, so no
//! volume of client traffic can purge more than the targets of the writes themselves.
//!
//! [`PurgeService::after_write`] runs on the request path and never waits on Redis: each
//! purge is recorded and applied to L1 at once (so this instance serves nothing it matches
//! from either tier from then on, and nothing in flight can store it back), and its Redis part
//! goes to the [`super::backlog`], coalesced per target and retried until it lands.

use http::header;
use pingora_http::{RequestHeader, ResponseHeader};

use super::backlog::{Job, Pushed};
use super::{PurgeKind, PurgeRequest, PurgeService, PurgeSource};
use crate::cache::key;
use crate::normalize::{normalize_authority, normalize_path};
use crate::pattern::fill_path;
use crate::routing::Router;
use crate::telemetry::events::{InternalEvent, PurgeCoalesced};

/// The purges a successful write to `req` calls for: its exact URL (and its path without the
/// query) and every query variant of its path, the same for the URLs its response names in
/// `Location` and `Content-Location` when they are on the same site (RFC 9111 §4.4; `site` is
/// the request's `scheme://authority`), each only when the router could store a GET of that
/// path ([`Router::may_store`]), and the entries of each route whose `invalidate_on` matches,
/// with the same params. A prefix always ends with `?`, so `/a/1` never purges `/a/10`.
pub fn purges_after(
    router: &Router,
    req: &RequestHeader,
    resp: Option<&ResponseHeader>,
    site: &str,
) -> Vec<PurgeRequest> {
    let path = req.uri.path();
    let mut urls = Vec::new();
    let mut prefixes = Vec::new();
    if router.may_store(path) {
        urls.push(key::request_url(req).to_owned());
        if req.uri.query().is_some() {
            urls.push(path.to_owned());
        }
        prefixes.push(format!("{path}?"));
    }
    let named = resp.into_iter().flat_map(|r| {
        [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .filter_map(|name| r.headers.get(name)?.to_str().ok())
            .filter_map(|value| same_site_url(value, path, site))
            .collect::<Vec<_>>()
    });
    for url in named {
        let target_path = url.split('?').next().unwrap_or(&url).to_owned();
        if router.may_store(&target_path) {
            prefixes.push(format!("{target_path}?"));
            urls.push(url);
        }
    }
    for m in router.invalidations(&req.method, path) {
        let mut target = String::new();
        fill_path(&m.policy.pattern, &m.params, &mut target);
        prefixes.push(format!("{target}?"));
        urls.push(target);
    }
    urls.sort_unstable();
    urls.dedup();
    prefixes.sort_unstable();
    prefixes.dedup();
    let url = |u| PurgeRequest::new(PurgeKind::Url, u, PurgeSource::Write);
    let prefix = |p| PurgeRequest::new(PurgeKind::Prefix, p, PurgeSource::Write);
    urls.into_iter()
        .map(url)
        .chain(prefixes.into_iter().map(prefix))
        .collect()
}

/// Whether a successful write to `req` would purge anything: its path could be stored, or a
/// route's `invalidate_on` matches it. (A `Location` it answers with can add targets; that is
/// only known afterwards.)
pub fn may_purge(router: &Router, req: &RequestHeader) -> bool {
    !req.method.is_safe()
        && (router.may_store(req.uri.path())
            || !router.invalidations(&req.method, req.uri.path()).is_empty())
}

/// A `Location`/`Content-Location` value as the normalized `path?query` entries are indexed
/// by, when it is on `site` (an absolute URL of the same scheme and authority, a path, or a
/// path relative to the request's `base`); `None` for another site or a refused path.
fn same_site_url(value: &str, base: &str, site: &str) -> Option<String> {
    let value = value.trim();
    let relative = if let Some((scheme, rest)) = value.split_once("://") {
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let mut theirs = format!("{}://", scheme.to_ascii_lowercase());
        normalize_authority(authority, &scheme.to_ascii_lowercase(), &mut theirs).ok()?;
        if theirs != site {
            return None;
        }
        path.to_owned()
    } else if value.starts_with('/') {
        value.to_owned()
    } else {
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{value}")
    };
    let relative = relative.split('#').next().unwrap_or("");
    let (path, query) = match relative.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (relative, None),
    };
    let path = normalize_path(path).ok()?;
    Some(match query {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    })
}

impl PurgeService {
    /// Purge what a successful write to `req` (answered by `resp`, from the client's `site`)
    /// invalidates: L1 now, Redis and the broadcast from the backlog (see the module docs).
    /// Never blocks on Redis.
    pub fn after_write(
        &'static self,
        router: &Router,
        req: &RequestHeader,
        resp: Option<&ResponseHeader>,
        site: &str,
    ) {
        for purge in purges_after(router, req, resp, site) {
            self.invalidate(purge);
        }
    }

    /// One write purge: recorded and applied to L1 now; its Redis part queued.
    fn invalidate(&'static self, request: PurgeRequest) {
        let l2_part = self.cache.l2().is_some();
        let ticket = self
            .cache
            .record_purge(request.kind, &request.target, l2_part);
        let l1_removed = self.cache.purge_l1_now(request.kind, &request.target);
        if !l2_part {
            drop(ticket);
            self.applied_l1_only(&request, l1_removed);
            return;
        }
        let job = Job {
            request,
            ticket,
            l1_removed,
            attempts: 0,
        };
        if self.queue(job) == Pushed::Coalesced {
            PurgeCoalesced.emit();
        }
    }
}
