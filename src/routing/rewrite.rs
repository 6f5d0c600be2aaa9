//! Rewrites: the compiled form of `[[rewrites]]` (which upstream, which path).

use std::sync::Arc;

use super::Upstream;
use crate::pattern::{fill_path, Pattern};

/// One compiled `[[rewrites]]` rule.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Request paths this rule applies to.
    pub source: Pattern,
    /// Where matching requests go.
    pub upstream: Arc<Upstream>,
    /// Destination path template; `None` keeps the path.
    pub path: Option<Pattern>,
    /// Literal prefix removed after templating.
    pub strip_prefix: Option<String>,
    /// Literal prefix added after stripping.
    pub add_prefix: Option<String>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum RewriteDecision<'a> {
    /// Send to `upstream`, with a new path if `Some`.
    Forward {
        /// The upstream, as the router holds it.
        upstream: &'a Arc<Upstream>,
        /// New path (no query); `None` = path unchanged.
        path: Option<String>,
    },
    /// No rewrite matched and there is no default upstream.
    NotFound,
}

impl Rewrite {
    /// Apply this rule to `path`, or `None` if its source does not match.
    pub fn apply(&self, path: &str) -> Option<RewriteDecision<'_>> {
        let params = self.source.matches(path)?;
        if self.path.is_none() && self.strip_prefix.is_none() && self.add_prefix.is_none() {
            return Some(RewriteDecision::Forward {
                upstream: &self.upstream,
                path: None,
            });
        }
        let mut out = String::with_capacity(path.len() + 16);
        match &self.path {
            Some(template) => fill_path(template, &params, &mut out),
            None => out.push_str(path),
        }
        if let Some(prefix) = &self.strip_prefix {
            out = strip_path_prefix(&out, prefix).to_string();
        }
        if let Some(prefix) = &self.add_prefix {
            out = if out == "/" {
                prefix.clone()
            } else {
                format!("{}{}", prefix.trim_end_matches('/'), out)
            };
        }
        Some(RewriteDecision::Forward {
            upstream: &self.upstream,
            path: Some(out),
        })
    }
}

/// Remove `prefix` from `path` at a segment boundary ("/api" strips "/api/x" but not "/apix").
fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> &'a str {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Arc<Upstream> {
        let config = crate::config::UpstreamConfig {
            name: "u".into(),
            address: "127.0.0.1:1".into(),
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            write_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
        };
        Arc::new(Upstream {
            index: 1,
            metrics: crate::telemetry::metrics::UpstreamMetrics::new(&config.name),
            config,
        })
    }

    fn rule(source: &str, path: Option<&str>, strip: Option<&str>, add: Option<&str>) -> Rewrite {
        Rewrite {
            source: Pattern::parse(source).unwrap(),
            upstream: upstream(),
            path: path.map(|p| Pattern::parse(p).unwrap()),
            strip_prefix: strip.map(str::to_string),
            add_prefix: add.map(str::to_string),
        }
    }

    /// The upstream index and new path of a decision (`None`: no match).
    fn fwd(path: Option<&str>) -> Option<(usize, Option<String>)> {
        Some((1, path.map(str::to_string)))
    }

    fn applied(r: &Rewrite, path: &str) -> Option<(usize, Option<String>)> {
        match r.apply(path)? {
            RewriteDecision::Forward { upstream, path } => Some((upstream.index, path)),
            RewriteDecision::NotFound => None,
        }
    }

    #[test]
    fn plain_rule_keeps_path() {
        let r = rule("/api/:path*", None, None, None);
        assert_eq!(applied(&r, "/api/x"), fwd(None));
        assert_eq!(applied(&r, "/other"), None);
    }

    #[test]
    fn template_then_strip_then_add() {
        let r = rule(
            "/api/:path*",
            Some("/api/:path*"),
            Some("/api"),
            Some("/v1"),
        );
        assert_eq!(applied(&r, "/api/a/b"), fwd(Some("/v1/a/b")));
        assert_eq!(applied(&r, "/api"), fwd(Some("/v1")));
    }

    #[test]
    fn strip_only_at_segment_boundary() {
        let r = rule("/:path*", None, Some("/api"), None);
        assert_eq!(applied(&r, "/api/x"), fwd(Some("/x")));
        assert_eq!(applied(&r, "/apix"), fwd(Some("/apix")));
        assert_eq!(applied(&r, "/api"), fwd(Some("/")));
    }

    #[test]
    fn add_prefix_without_template() {
        let r = rule("/:path*", None, None, Some("/v1"));
        assert_eq!(applied(&r, "/x/y"), fwd(Some("/v1/x/y")));
    }

    #[test]
    fn percent_encoding_is_kept() {
        let r = rule("/old/:id", Some("/new/:id"), None, None);
        assert_eq!(applied(&r, "/old/a%20b"), fwd(Some("/new/a%20b")));
    }
}
