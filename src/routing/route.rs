//! Route policies: the compiled form of `[[routes]]`.

use std::sync::Arc;

use http::Method;

use crate::config::RouteCacheConfig;
use crate::pattern::{Params, Pattern};
use crate::telemetry::metrics::RouteMetrics;

/// One compiled `[[routes]]` entry: which requests it matches, how they are cached, and the
/// metric handles of its label.
#[derive(Debug)]
pub struct RoutePolicy {
    /// Position in the config's `routes` list (first match wins).
    pub index: usize,
    /// Unique route name, used as metric label.
    pub name: String,
    /// Path pattern matched against the client's path (before rewriting).
    pub pattern: Pattern,
    /// Methods this route matches; GET also matches HEAD.
    pub methods: Vec<Method>,
    /// `None` for `cache = false`: matching requests bypass the cache.
    pub cache: Option<RouteCacheConfig>,
    /// The upstream read timeout of this route's requests, when not the upstream's.
    pub timeout: Option<std::time::Duration>,
    /// Pre-resolved metric handles of this route's label.
    pub metrics: RouteMetrics,
}

/// A route that matched a request, with the params its pattern captured.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// The matching route.
    pub policy: &'a Arc<RoutePolicy>,
    /// Params captured from the request path.
    pub params: Params<'a>,
}

/// Whether `method` is in `methods`, counting HEAD as allowed wherever GET is.
pub fn method_allowed(methods: &[Method], method: &Method) -> bool {
    methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
}

impl RoutePolicy {
    /// This route's match for a request, if its methods and pattern accept it.
    pub fn matches<'a>(
        self: &'a Arc<Self>,
        method: &Method,
        path: &'a str,
    ) -> Option<RouteMatch<'a>> {
        if !method_allowed(&self.methods, method) {
            return None;
        }
        let params = self.pattern.matches(path)?;
        Some(RouteMatch {
            policy: self,
            params,
        })
    }

    /// The params of the first `invalidate_on` entry matching this write request.
    pub fn invalidated_by<'a>(&'a self, method: &Method, path: &'a str) -> Option<Params<'a>> {
        self.cache
            .iter()
            .flat_map(|c| &c.invalidate_on)
            .filter(|m| method_allowed(&m.methods, method))
            .find_map(|m| m.pattern.matches(path))
    }
}
