//! Routing: which upstream a request goes to (rewrites) and which cache policy applies (routes).
//!
//! A [`Router`] is compiled once per validated [`Config`](crate::config::Config) and is
//! immutable; matching a route borrows from it and the request path and does not allocate.

pub mod pattern;
pub mod rewrite;
pub mod route;

pub use pattern::{fill_braces, fill_path, Params, Pattern, PatternError, MAX_PARAMS};
pub use rewrite::{Rewrite, RewriteDecision};
pub use route::{RouteMatch, RoutePolicy};

use crate::config::{Config, UpstreamConfig};
use http::Method;

/// The compiled rewrites and routes of one config.
#[derive(Debug, Clone)]
pub struct Router {
    upstreams: Vec<UpstreamConfig>,
    default_upstream: Option<usize>,
    rewrites: Vec<Rewrite>,
    routes: Vec<RoutePolicy>,
}

fn parse_logged(src: &str, what: &str) -> Option<Pattern> {
    match Pattern::parse(src) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(pattern = src, error = %e, "skipping {what}: pattern does not parse");
            None
        }
    }
}

fn methods_logged(names: &[String], what: &str) -> Option<Vec<Method>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match Method::from_bytes(name.as_bytes()) {
            Ok(m) => out.push(m),
            Err(_) => {
                tracing::error!(method = %name, "skipping {what}: bad method");
                return None;
            }
        }
    }
    Some(out)
}

impl Router {
    /// Compile a validated config (patterns already checked by validation, so this cannot fail;
    /// if something still fails to parse, skip it and log with tracing::error!).
    pub fn new(config: &Config) -> Router {
        let upstreams = config.upstreams.clone();
        let index = |name: &str| upstreams.iter().position(|u| u.name == name);
        let default_upstream = config.proxy.default_upstream.as_deref().and_then(|name| {
            let found = index(name);
            if found.is_none() {
                tracing::error!(upstream = name, "default upstream does not exist; ignoring");
            }
            found
        });
        let rewrites = config
            .rewrites
            .iter()
            .filter_map(|r| {
                let Some(upstream) = index(&r.upstream) else {
                    tracing::error!(upstream = %r.upstream, "skipping rewrite: unknown upstream");
                    return None;
                };
                let path = match &r.path {
                    Some(p) => Some(parse_logged(p, "rewrite")?),
                    None => None,
                };
                Some(Rewrite {
                    source: parse_logged(&r.source, "rewrite")?,
                    upstream,
                    path,
                    strip_prefix: r.strip_prefix.clone(),
                    add_prefix: r.add_prefix.clone(),
                })
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let mut invalidate_on = Vec::new();
                for mp in r.cache.iter().flat_map(|c| &c.invalidate_on) {
                    invalidate_on.push((
                        methods_logged(&mp.methods, "route")?,
                        parse_logged(&mp.pattern, "route")?,
                    ));
                }
                Some(RoutePolicy {
                    index,
                    name: r.name.clone(),
                    pattern: parse_logged(&r.pattern, "route")?,
                    methods: methods_logged(&r.methods, "route")?,
                    cache: r.cache.clone(),
                    invalidate_on,
                })
            })
            .collect();
        Router {
            upstreams,
            default_upstream,
            rewrites,
            routes,
        }
    }

    /// The configured upstreams; rewrite decisions index into this.
    pub fn upstreams(&self) -> &[UpstreamConfig] {
        &self.upstreams
    }

    /// Index of the upstream called `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }

    /// Index of `proxy.default_upstream`, if set.
    pub fn default_upstream(&self) -> Option<usize> {
        self.default_upstream
    }

    /// First matching rewrite for `path` (no query); unmatched -> default upstream (path unchanged) or NotFound.
    /// Strip/add prefix are applied after templating. The caller re-appends the query string unchanged.
    pub fn rewrite(&self, path: &str) -> RewriteDecision {
        self.rewrites
            .iter()
            .find_map(|r| r.apply(path))
            .unwrap_or(match self.default_upstream {
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

    /// The compiled routes in config order.
    pub fn routes(&self) -> &[RoutePolicy] {
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
}

#[cfg(test)]
mod tests;
