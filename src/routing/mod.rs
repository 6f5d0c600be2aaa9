//! Routing: which upstream a request goes to (rewrites) and which cache policy applies (routes).
//!
//! A [`Router`] is built once per validated [`Config`](crate::config::Config) from values the
//! config already compiled (patterns, methods, upstream indices), so building it cannot fail,
//! and it is immutable afterwards. Matching borrows from it and the request path and does not
//! allocate; what a request resolved to is kept as `Arc`s in its plan.

pub mod rewrite;
pub mod route;

pub use rewrite::{Rewrite, RewriteDecision};
pub use route::{RouteMatch, RoutePolicy};

use std::sync::Arc;

use http::Method;

use crate::config::{Config, UpstreamConfig};
use crate::telemetry::metrics::{RouteMetrics, UpstreamMetrics};

/// One configured origin, compiled: its settings, its position and its metric handles.
#[derive(Debug)]
pub struct Upstream {
    /// Position in the config's `upstreams` list (indexes per-upstream metric handles).
    pub index: usize,
    /// Name, address and timeouts.
    pub config: UpstreamConfig,
    /// Pre-resolved error counters of this upstream.
    pub metrics: UpstreamMetrics,
}

/// Two upstreams are the same when they are the same configured entry.
impl PartialEq for Upstream {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.config == other.config
    }
}

/// The compiled rewrites and routes of one config.
#[derive(Debug)]
pub struct Router {
    upstreams: Vec<Arc<Upstream>>,
    default_upstream: Option<Arc<Upstream>>,
    rewrites: Vec<Rewrite>,
    routes: Vec<Arc<RoutePolicy>>,
    /// Metric handles of requests no route matched (label `default`).
    default_metrics: RouteMetrics,
    /// Metric handles of the endpoints sidecache answers itself (label `health`).
    health_metrics: RouteMetrics,
    /// Whether requests no route matches are cached (`[cache] default_mode` is set).
    default_stores: bool,
}

impl Router {
    /// Compile a validated config. Every reference in it is already checked, so this cannot
    /// fail.
    pub fn new(config: &Config) -> Router {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| {
                Arc::new(Upstream {
                    index,
                    config: u.clone(),
                    metrics: UpstreamMetrics::new(&u.name),
                })
            })
            .collect();
        let pick = |i: usize| upstreams.get(i).cloned();
        let rewrites = config
            .rewrites
            .iter()
            .filter_map(|r| {
                Some(Rewrite {
                    source: r.source.clone(),
                    upstream: pick(r.upstream)?,
                    path: r.path.clone(),
                    strip_prefix: r.strip_prefix.clone(),
                    add_prefix: r.add_prefix.clone(),
                })
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                Arc::new(RoutePolicy {
                    index,
                    name: r.name.clone(),
                    pattern: r.pattern.clone(),
                    methods: r.methods.clone(),
                    cache: r.cache.clone(),
                    timeout: r.timeout,
                    metrics: RouteMetrics::new(&r.name, upstreams.len()),
                })
            })
            .collect();
        Router {
            default_upstream: config.proxy.default_upstream.and_then(pick),
            default_metrics: RouteMetrics::new("default", upstreams.len()),
            health_metrics: RouteMetrics::new("health", 0),
            default_stores: config.cache.default_mode.is_some(),
            upstreams,
            rewrites,
            routes,
        }
    }

    /// The configured upstreams, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Index of `proxy.default_upstream`, if set.
    pub fn default_upstream(&self) -> Option<usize> {
        self.default_upstream.as_ref().map(|u| u.index)
    }

    /// First matching rewrite for `path` (no query); unmatched -> default upstream (path
    /// unchanged) or NotFound. Strip/add prefix are applied after templating. The caller
    /// re-appends the query string unchanged.
    pub fn rewrite(&self, path: &str) -> RewriteDecision<'_> {
        self.rewrites
            .iter()
            .find_map(|r| r.apply(path))
            .unwrap_or(match &self.default_upstream {
                Some(upstream) => RewriteDecision::Forward {
                    upstream,
                    path: None,
                },
                None => RewriteDecision::NotFound,
            })
    }

    /// First route whose methods and pattern match. A route with GET also matches HEAD.
    pub fn route<'a>(&'a self, method: &Method, path: &'a str) -> Option<RouteMatch<'a>> {
        self.routes.iter().find_map(|r| r.matches(method, path))
    }

    /// Whether a GET of `path` could be stored: the first route matching it caches, or no
    /// route matches and `[cache] default_mode` caches. A write to any other path cannot
    /// have changed anything cached, so it purges nothing.
    pub fn may_store(&self, path: &str) -> bool {
        match self.route(&Method::GET, path) {
            Some(m) => m.policy.cache.is_some(),
            None => self.default_stores,
        }
    }

    /// The compiled routes in config order.
    pub fn routes(&self) -> &[Arc<RoutePolicy>] {
        &self.routes
    }

    /// Routes whose `invalidate_on` matches this write request, with the params captured by the
    /// invalidate_on pattern (used to purge entries of that route with the same params).
    pub fn invalidations<'a>(&'a self, method: &Method, path: &'a str) -> Vec<RouteMatch<'a>> {
        self.routes
            .iter()
            .filter_map(|policy| {
                policy
                    .invalidated_by(method, path)
                    .map(|params| RouteMatch { policy, params })
            })
            .collect()
    }

    /// Metric handles of requests no route matched (label `default`).
    pub fn default_metrics(&self) -> &RouteMetrics {
        &self.default_metrics
    }

    /// Metric handles of the endpoints sidecache answers itself (label `health`).
    pub fn health_metrics(&self) -> &RouteMetrics {
        &self.health_metrics
    }
}

#[cfg(test)]
mod tests;
