//! Route policies: the compiled form of `[[routes]]`.

use super::pattern::{Params, Pattern};
use crate::config::RouteCacheConfig;
use http::Method;

/// One compiled `[[routes]]` entry: which requests it matches and how they are cached.
#[derive(Debug, Clone)]
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
    /// Write requests that purge this route's entries with the same params.
    pub invalidate_on: Vec<(Vec<Method>, Pattern)>,
}

/// A route that matched a request, with the params its pattern captured.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// The matching route.
    pub policy: &'a RoutePolicy,
    /// Params captured from the request path.
    pub params: Params<'a>,
}

/// Whether `method` is in `methods`, counting HEAD as allowed wherever GET is.
pub fn method_allowed(methods: &[Method], method: &Method) -> bool {
    methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
}

impl RoutePolicy {
    /// This route's match for a request, if its methods and pattern accept it.
    pub fn matches<'a>(&'a self, method: &Method, path: &'a str) -> Option<RouteMatch<'a>> {
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
        self.invalidate_on
            .iter()
            .filter(|(methods, _)| method_allowed(methods, method))
            .find_map(|(_, pattern)| pattern.matches(path))
    }
}
