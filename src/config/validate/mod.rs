//! Raw TOML document -> typed [`Config`], recording every problem instead of stopping at the
//! first. Where a value is bad its default is used so later checks still run; the caller
//! discards the config if any error was recorded.

use super::raw::{Doc, Table};
use super::*;
use crate::pattern::{Pattern, Template};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cache;
mod routes;
mod server;
mod upstreams;
mod warm;

pub(crate) use cache::default_l2;
use cache::{cache, l2_mode};
use routes::{routes, METHODS};
use server::server;
use upstreams::{proxy, rewrites, upstreams};
use warm::warm;

/// What validation could not finish because it depends on the environment.
pub(crate) struct Pending {
    /// `[cache.l2]` exists without `url`: its line, checked again after env overrides.
    pub l2_without_url: Option<Option<usize>>,
    /// The line of `[cache.l2]`, for the mode's requirements checked after env overrides.
    pub l2_mode_line: Option<usize>,
}

/// A socket address like `0.0.0.0:8080`.
pub(crate) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid socket address {s:?}: expected ip:port like \"0.0.0.0:8080\"")
    })
}

/// An upstream address `host:port` (hostname or IP; IPv6 in brackets).
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || format!("invalid address {s:?}: expected host:port like \"127.0.0.1:5000\"");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    match port.parse::<u16>() {
        Ok(p) if p != 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// A Redis URL `redis://[:password@]host:port[/db]` (or `rediss://`).
pub(crate) fn check_redis_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("redis://")
        .or_else(|| s.strip_prefix("rediss://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(()),
        _ => Err("invalid Redis URL: expected redis://[:password@]host:port[/db]".to_string()),
    }
}

/// `"GET,POST /path/:id"` -> methods (case-insensitive, deduplicated) and the compiled pattern.
pub(crate) fn parse_method_pattern(s: &str) -> Result<MethodPattern, String> {
    let mut parts = s.split_whitespace();
    let (Some(methods), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "invalid match {s:?}: expected \"METHOD[,METHOD...] /pattern\", e.g. \"GET /api/items/:id\""
        ));
    };
    let mut out: Vec<http::Method> = Vec::new();
    for m in methods.split(',') {
        let upper = m.trim().to_ascii_uppercase();
        let Some(method) = METHODS.iter().find(|known| known.as_str() == upper) else {
            let known: Vec<&str> = METHODS.iter().map(http::Method::as_str).collect();
            return Err(format!(
                "unknown method {m:?} in {s:?}: expected one of {}",
                known.join(", ")
            ));
        };
        if !out.contains(method) {
            out.push(method.clone());
        }
    }
    let pattern = parse_pattern(path)?;
    Ok(MethodPattern {
        methods: out,
        pattern,
    })
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| format!("invalid pattern {s:?}: {e}"))
}

fn absolute_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} must start with '/'"))
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Build the typed config from the document root, recording problems in `doc`.
pub(crate) fn build(
    doc: &mut Doc<'_>,
    root: &toml_edit::Table,
    source: Option<&Path>,
) -> (Config, Pending) {
    let mut root = Table::root(root);
    let server = server(doc, &mut root);
    let upstreams = upstreams(doc, &mut root);
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let proxy = proxy(doc, &mut root, &names);
    let rewrites = rewrites(doc, &mut root, &names);
    let routes = routes(doc, &mut root);
    let (cache, pending) = cache(doc, &mut root);
    let warm = warm(doc, &mut root, source);
    root.finish(doc);
    let config = Config {
        server,
        proxy,
        upstreams,
        rewrites,
        routes,
        cache,
        warm,
        source: source.map(Path::to_path_buf),
        lines: doc.take_lines(),
    };
    (config, pending)
}

/// The checks that need the environment applied first. Everything `run` refuses at start is
/// checked here, so `sidecache check` and `sidecache run` always agree.
pub(crate) fn after_env(config: &Config, pending: &Pending, doc: &mut Doc<'_>) {
    if let Some(l2) = &config.cache.l2 {
        l2_mode(l2, pending.l2_mode_line, config, doc);
    }
    let admin = config.server.admin_listen;
    if !admin.ip().is_loopback() && config.server.admin_token.is_none() {
        let line = config.lines.get("server.admin_listen");
        doc.error(
            "server.admin_listen",
            line,
            format!(
                "{admin} is not a loopback address: set SIDECACHE_ADMIN_TOKEN so /admin/* \
                 requires a bearer token, or listen on 127.0.0.1"
            ),
        );
    }
}

/// The array of tables at `key` (empty when absent).
fn tables<'n>(doc: &mut Doc<'_>, root: &mut Table<'n>, key: &'static str) -> Vec<Table<'n>> {
    let Some(list) = root.get(doc, key).and_then(|e| e.list(doc)) else {
        return Vec::new();
    };
    list.iter().filter_map(|e| e.table(doc)).collect()
}
