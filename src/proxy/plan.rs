//! The request plan: what sidecache does with one request, decided once by [`resolve`] in
//! `request_filter` and only read by the phases after it.
//!
//! First [`prepare`] normalizes the request in place (hop-by-hop headers removed but an
//! upgrade's own, the path normalized: see [`crate::normalize`]) and works out its [`ClientOrigin`] (trusting
//! forwarded headers only from configured proxies), or refuses it. Then [`resolve`] reads the
//! normalized request and the config snapshot, and probes L1 once: it answers what sidecache
//! owns (health, readiness, its own refusals), picks the upstream through the rewrites,
//! matches the route once (its params fill the entry's tags), asks the cache policy whether
//! the request may use the cache, and builds the cache key from the site, the normalized path
//! and the keyed query. Nothing later looks any of this up again: the plan carries the
//! upstream, the route and the client's origin, and the key carries the L1 probe's result
//! to the storage lookup (so a miss probes L1 once).

use std::net::IpAddr;
use std::sync::Arc;

use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

use super::fast_path;
use super::forwarded::ClientOrigin;
use crate::cache::key::{self, KeyInput};
use crate::cache::policy::{self, BypassReason, EffectivePolicy, RequestDirectives};
use crate::cache::storage::{EntryContext, L1Entry, TieredCache};
use crate::config::{CacheMode, Config};
use crate::health::LocalEndpoint;
use crate::live::{site_url_tag, Snapshot};
use crate::normalize::{self, BadPath};
use crate::routing::{RewriteDecision, RoutePolicy, Router, Upstream};
use crate::telemetry::metrics::RouteMetrics;

/// What sidecache does with one request.
#[expect(
    clippy::large_enum_variant,
    reason = "one plan per request, kept in its context and never moved around: boxing the \
              cache plan would cost an allocation per request, fast-path hits included"
)]
pub(crate) enum Plan {
    /// Before `request_filter` has decided (only seen if a client error stops the request
    /// earlier).
    Undecided,
    /// Answered by sidecache itself; never reaches an upstream.
    Local(LocalAnswer),
    /// Forwarded without the cache.
    Bypass {
        target: Target,
        reason: BypassReason,
    },
    /// Forwarded through the cache: looked up first, stored when the response allows it.
    Cache { target: Target, cache: CachePlan },
}

/// A response sidecache writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalAnswer {
    /// `/health`, `/api/health`.
    Health,
    /// `/ready`, `/api/ready`.
    Ready,
    /// No rewrite matched and there is no default upstream (404).
    NotFound,
    /// The declared body is over `server.max_request_body` (413).
    BodyTooLarge,
    /// The path is refused by normalization (400 `bad_path`).
    BadPath(BadPath),
    /// The host (or a trusted proxy's forwarded host) is not a valid authority (400).
    BadHost,
    /// A body on GET or HEAD, without `allow_body_on_safe_methods` (400).
    BodyNotAllowed,
}

impl LocalAnswer {
    /// The endpoints sidecache owns, counted under the `health` route label; the others are
    /// refusals of proxied paths, counted under `default`.
    pub(crate) fn is_endpoint(self) -> bool {
        matches!(self, Self::Health | Self::Ready)
    }
}

/// Where a forwarded request goes, which route it matched, and who sent it.
pub(crate) struct Target {
    /// The upstream the rewrites chose.
    pub upstream: Arc<Upstream>,
    /// The path and query the upstream receives, when not the (normalized) request's own:
    /// the rewritten path, and for a route with `key.query` only the keyed parameters.
    pub uri: Option<String>,
    /// The matched route (`None`: no route matched; the default policy applies).
    pub route: Option<Arc<RoutePolicy>>,
    /// The client's origin, for the forwarded headers.
    pub origin: ClientOrigin,
}

impl Target {
    /// The metric handles of this request's route label.
    pub(crate) fn metrics<'a>(&'a self, router: &'a Router) -> &'a RouteMetrics {
        self.route
            .as_ref()
            .map_or(router.default_metrics(), |r| &r.metrics)
    }
}

/// The cache half of a [`Plan::Cache`].
pub(crate) struct CachePlan {
    /// How freshness is decided: the route's mode, or `[cache] default_mode` for unmatched
    /// requests.
    pub mode: CacheMode,
    /// The entry's key, handed to pingora by `cache_key_callback` (taken once).
    pub key: Option<CacheKey>,
    /// What purges find the entry by (url, route, filled tags); attached to a stored miss.
    pub entry: EntryContext,
    /// The client's request directives, when the route honours them (else none).
    pub directives: RequestDirectives,
    /// The request carries `Authorization` (the route keys it).
    pub authorization: bool,
}

impl CachePlan {
    /// The policy that decides whether and how long the response is stored.
    pub(crate) fn policy<'a>(&self, target: &'a Target) -> EffectivePolicy<'a> {
        EffectivePolicy {
            mode: self.mode,
            route: target.route.as_ref().and_then(|r| r.cache.as_ref()),
        }
    }
}

impl Plan {
    /// The forwarding target, for plans that reach an upstream.
    pub(crate) fn target(&self) -> Option<&Target> {
        match self {
            Plan::Bypass { target, .. } | Plan::Cache { target, .. } => Some(target),
            Plan::Undecided | Plan::Local(_) => None,
        }
    }

    /// The metric handles this request is counted under.
    pub(crate) fn metrics<'a>(&'a self, router: &'a Router) -> &'a RouteMetrics {
        match self {
            Plan::Local(answer) if answer.is_endpoint() => router.health_metrics(),
            Plan::Bypass { target, .. } | Plan::Cache { target, .. } => target.metrics(router),
            Plan::Undecided | Plan::Local(_) => router.default_metrics(),
        }
    }
}

/// A resolved request: its plan, and the fresh L1 entry the fast path answers it from (only
/// with a [`Plan::Cache`] whose key and entry context were then not needed, so not built).
pub(crate) struct Resolved {
    pub plan: Plan,
    pub fresh_hit: Option<Arc<L1Entry>>,
}

impl From<Plan> for Resolved {
    fn from(plan: Plan) -> Self {
        Resolved {
            plan,
            fresh_hit: None,
        }
    }
}

/// A request [`prepare`] normalized: who sent it, and whether it asks to switch protocols.
pub(crate) struct Prepared {
    pub origin: ClientOrigin,
    /// An upgrade (a WebSocket handshake) whose `Upgrade` was kept for the upstream.
    pub upgrade: bool,
}

/// Normalize `req` in place and work out who sent it, before anything routes, keys or
/// forwards it: hop-by-hop headers removed (an upgrade's own kept), the path normalized (the
/// upstream receives the normal form; the query is kept as sent), the client's origin from
/// the connection and the forwarded headers of trusted proxies only. Or the refusal.
pub(crate) fn prepare(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    config: &Config,
) -> Result<Prepared, LocalAnswer> {
    let upgrade = normalize::strip_request_hop_by_hop(req);
    // An absolute-form target names the host, and Host is ignored (RFC 9112 §3.2.2): make
    // Host say it, so the key, the forwarded headers and the upstream all use one authority
    // (pingora would otherwise send the target's while the key held Host's, or none).
    let absolute = match normalize::absolute_form_authority(req.raw_path()) {
        Some(authority) => {
            Some(http::HeaderValue::from_bytes(authority).map_err(|_| LocalAnswer::BadHost)?)
        }
        None => None,
    };
    let absolute = match absolute {
        Some(host) => {
            req.insert_header(http::header::HOST, host)
                .map_err(|_| LocalAnswer::BadHost)?;
            true
        }
        None => false,
    };
    let origin = ClientOrigin::of(req, peer, &config.server.trusted_proxies)
        .map_err(|_| LocalAnswer::BadHost)?;
    if !req.headers.contains_key(http::header::HOST) && !origin.authority().is_empty() {
        // HTTP/2 names the host in :authority; the HTTP/1.1 upstream request needs Host.
        let host =
            http::HeaderValue::from_str(origin.authority()).map_err(|_| LocalAnswer::BadHost)?;
        req.insert_header(http::header::HOST, host)
            .map_err(|_| LocalAnswer::BadHost)?;
    }
    let normal = match normalize::normalize_path(req.uri.path()) {
        Ok(p) if p.as_ref() == req.uri.path() && req.uri.scheme().is_none() && !absolute => None,
        Ok(p) => Some(p.into_owned()),
        Err(why) => return Err(LocalAnswer::BadPath(why)),
    };
    if let Some(path) = normal {
        let uri = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        // A normalized path of a valid URI is a valid origin-form target.
        let uri = uri
            .parse()
            .map_err(|_| LocalAnswer::BadPath(BadPath::BadEscape))?;
        req.set_uri(uri);
    }
    Ok(Prepared { origin, upgrade })
}

/// Decide what to do with the normalized `req` ([`prepare`]) under `snapshot`, probing L1
/// (never L2) once for cacheable requests. `has_body`: the request carries a body.
pub(crate) fn resolve(
    req: &RequestHeader,
    snapshot: &Snapshot,
    cache: &TieredCache,
    prepared: Prepared,
    has_body: bool,
) -> Resolved {
    let Prepared { origin, upgrade } = prepared;
    let path = req.uri.path();
    let config: &Config = &snapshot.config;
    if declared_body_len(req).is_some_and(|n| n > config.server.max_request_body_bytes) {
        return Plan::Local(LocalAnswer::BodyTooLarge).into();
    }
    let body_on_safe_method = has_body && is_body_free(&req.method);
    if body_on_safe_method && !config.server.allow_body_on_safe_methods {
        return Plan::Local(LocalAnswer::BodyNotAllowed).into();
    }
    if req.method == http::Method::GET || req.method == http::Method::HEAD {
        match LocalEndpoint::from_path(path) {
            Some(LocalEndpoint::Health) => return Plan::Local(LocalAnswer::Health).into(),
            Some(LocalEndpoint::Ready) => return Plan::Local(LocalAnswer::Ready).into(),
            None => {}
        }
    }
    let router = &snapshot.router;
    let (upstream, upstream_path) = match router.rewrite(path) {
        RewriteDecision::Forward { upstream, path } => (Arc::clone(upstream), path),
        RewriteDecision::NotFound => return Plan::Local(LocalAnswer::NotFound).into(),
    };
    let matched = router.route(&req.method, path);
    let route_cache = matched.and_then(|m| m.policy.cache.as_ref());
    let key_rules = route_cache.map(|c| &c.key);
    let keyed_query = key::keyed_query(req.uri.query(), key_rules);
    let query_changed = key_rules.is_some_and(|k| k.query.is_some())
        && route_cache.is_some_and(|c| !c.forward_unkeyed_query)
        && keyed_query.as_deref() != req.uri.query();
    let uri = (upstream_path.is_some() || query_changed).then(|| {
        let path = upstream_path.as_deref().unwrap_or(path);
        let query = if query_changed {
            keyed_query.as_deref()
        } else {
            req.uri.query()
        };
        match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        }
    });
    let target = Target {
        upstream,
        uri,
        route: matched.map(|m| Arc::clone(m.policy)),
        origin,
    };
    if body_on_safe_method {
        let reason = BypassReason::RequestBody;
        return Plan::Bypass { target, reason }.into();
    }
    if upgrade {
        // Tunnelled, never cached.
        let reason = BypassReason::Upgrade;
        return Plan::Bypass { target, reason }.into();
    }
    let effective = match &target.route {
        Some(r) => r.cache.as_ref().map(|c| EffectivePolicy {
            mode: c.mode,
            route: Some(c),
        }),
        None => config
            .cache
            .default_mode
            .map(|mode| EffectivePolicy { mode, route: None }),
    };
    let policy = match policy::request_decision(req, effective, target.route.is_some()) {
        Ok(policy) => policy,
        Err(reason) => return Plan::Bypass { target, reason }.into(),
    };
    let mode = policy.mode;
    let honor = route_cache
        .and_then(|c| c.honor_request_directives)
        .unwrap_or(config.cache.honor_request_directives);
    let directives = if honor {
        RequestDirectives::of(req)
    } else {
        RequestDirectives::default()
    };
    if directives.no_store {
        let reason = BypassReason::RequestNoStore;
        return Plan::Bypass { target, reason }.into();
    }
    let authorization = req.headers.contains_key(http::header::AUTHORIZATION);
    let site = if config.cache.key_host {
        target.origin.site()
    } else {
        ""
    };
    let input = KeyInput {
        site,
        path,
        query: keyed_query.as_deref(),
        headers: &req.headers,
    };
    let mut cache_key = key::cache_key(&input, policy.route.map(|c| &c.key));
    let probe = cache.probe_l1(&cache_key);
    let fast = !directives.constrain_reuse();
    if let Some(entry) = probe.found().filter(|e| {
        fast && fast_path::can_answer(req, e, config.cache.surrogate_key_header.as_ref())
    }) {
        let cache = CachePlan {
            mode,
            key: None,
            entry: EntryContext::default(),
            directives,
            authorization,
        };
        return Resolved {
            fresh_hit: Some(Arc::clone(entry)),
            plan: Plan::Cache { target, cache },
        };
    }
    probe.remember_in(&mut cache_key);
    let mut entry = EntryContext {
        url: match keyed_query.as_deref() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        },
        route: target
            .route
            .as_ref()
            .map_or_else(|| "default".to_owned(), |r| r.name.clone()),
        tags: match (matched, policy.route) {
            (Some(m), Some(c)) => c.tags.iter().map(|t| t.fill(&m.params)).collect(),
            _ => Vec::new(),
        },
        // the response decides (response_cache_filter)
        soft_purgeable: false,
    };
    if !site.is_empty() {
        entry.tags.push(site_url_tag(site, &entry.url));
    }
    let cache = CachePlan {
        mode,
        key: Some(cache_key),
        entry,
        directives,
        authorization,
    };
    Plan::Cache { target, cache }.into()
}

/// Methods whose content has no defined semantics (RFC 9110 §9.3.1, §9.3.2) and whose
/// responses are cached by the key alone: a body there is refused (or, when allowed, never
/// cached), since the key never holds a body. Every other method's body is forwarded (a
/// `DELETE` with a JSON list of ids, an `OPTIONS` with content).
fn is_body_free(method: &http::Method) -> bool {
    *method == http::Method::GET || *method == http::Method::HEAD
}

/// The request's `Content-Length`, when it is one valid number.
fn declared_body_len(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
