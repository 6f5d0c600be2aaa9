//! The request plan: what sidecache does with one request, decided once by [`resolve`] in
//! `request_filter` and only read by the phases after it.
//!
//! Resolving reads the request and the config snapshot, and probes L1 once: it answers what
//! sidecache owns (health, readiness, its own refusals), picks the upstream through the
//! rewrites, matches the route once (its params fill the entry's tags), asks the cache policy
//! whether the request may use the cache, and builds the cache key. Nothing later looks any
//! of this up again: the plan carries the upstream and the route as `Arc`s, and the key
//! carries the L1 probe's result to the storage lookup (so a miss probes L1 once).

use std::sync::Arc;

use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

use super::fast_path;
use super::local::LocalEndpoint;
use crate::cache::key;
use crate::cache::policy::{self, BypassReason, EffectivePolicy};
use crate::cache::storage::{EntryContext, L1Entry, TieredCache};
use crate::config::{CacheMode, Config};
use crate::live::Snapshot;
use crate::routing::{RewriteDecision, RoutePolicy, Router, Upstream};
use crate::telemetry::metrics::RouteMetrics;

/// What sidecache does with one request.
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
}

impl LocalAnswer {
    /// The endpoints sidecache owns, counted under the `health` route label; the others are
    /// refusals of proxied paths, counted under `default`.
    pub(crate) fn is_endpoint(self) -> bool {
        matches!(self, Self::Health | Self::Ready)
    }
}

/// Where a forwarded request goes and which route it matched.
pub(crate) struct Target {
    /// The upstream the rewrites chose.
    pub upstream: Arc<Upstream>,
    /// The rewritten path (`None`: the client's path, unchanged). The query is kept.
    pub path: Option<String>,
    /// The matched route (`None`: no route matched; the default policy applies).
    pub route: Option<Arc<RoutePolicy>>,
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

/// Decide what to do with `req` under `snapshot`, probing L1 (never L2) once for cacheable
/// requests.
pub(crate) fn resolve(req: &RequestHeader, snapshot: &Snapshot, cache: &TieredCache) -> Resolved {
    let path = req.uri.path();
    if req.method == http::Method::GET || req.method == http::Method::HEAD {
        match LocalEndpoint::from_path(path) {
            Some(LocalEndpoint::Health) => return Plan::Local(LocalAnswer::Health).into(),
            Some(LocalEndpoint::Ready) => return Plan::Local(LocalAnswer::Ready).into(),
            None => {}
        }
    }
    let config: &Config = &snapshot.config;
    if declared_body_len(req).is_some_and(|n| n > config.server.max_request_body_bytes) {
        return Plan::Local(LocalAnswer::BodyTooLarge).into();
    }
    let router = &snapshot.router;
    let (upstream, upstream_path) = match router.rewrite(path) {
        RewriteDecision::Forward { upstream, path } => (Arc::clone(upstream), path),
        RewriteDecision::NotFound => return Plan::Local(LocalAnswer::NotFound).into(),
    };
    let matched = router.route(&req.method, path);
    let target = Target {
        upstream,
        path: upstream_path,
        route: matched.map(|m| Arc::clone(m.policy)),
    };
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
    let mut cache_key = key::cache_key(req, policy.route.map(|c| &c.key));
    let probe = cache.probe_l1(&cache_key);
    if let Some(entry) = probe.found().filter(|e| fast_path::can_answer(req, e)) {
        let cache = CachePlan {
            mode,
            key: None,
            entry: EntryContext::default(),
        };
        return Resolved {
            fresh_hit: Some(Arc::clone(entry)),
            plan: Plan::Cache { target, cache },
        };
    }
    probe.remember_in(&mut cache_key);
    let entry = EntryContext {
        url: key::request_url(req).to_owned(),
        route: target
            .route
            .as_ref()
            .map_or_else(|| "default".to_owned(), |r| r.name.clone()),
        tags: match (matched, policy.route) {
            (Some(m), Some(c)) => c.tags.iter().map(|t| t.fill(&m.params)).collect(),
            _ => Vec::new(),
        },
    };
    let cache = CachePlan {
        mode,
        key: Some(cache_key),
        entry,
    };
    Plan::Cache { target, cache }.into()
}

/// The request's `Content-Length`, when it is one valid number.
fn declared_body_len(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
