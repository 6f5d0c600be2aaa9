//! Raw TOML document -> typed [`Config`], recording every problem instead of stopping at the
//! first. Where a value is bad its default is used so later checks still run; the caller
//! discards the config if any error was recorded.

use super::raw::{Doc, Table};
use super::*;
use crate::pattern::{Pattern, Template};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::OPTIONS,
];
/// Keys of a route that configure caching (forbidden with `cache = false`).
const ROUTE_CACHE_KEYS: [&str; 12] = [
    "forward_unkeyed_query",
    "honor_request_directives",
    "mode",
    "ttl",
    "max_ttl",
    "stale_while_revalidate",
    "stale_if_error",
    "key",
    "tags",
    "statuses",
    "negative_ttl",
    "invalidate_on",
];

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

/// The `[cache.l2]` defaults, with an empty URL to be filled from the file or env.
pub(crate) fn default_l2() -> L2Config {
    L2Config {
        mode: L2Mode::Standalone,
        url: Secret::new(""),
        nodes: Vec::new(),
        sentinels: Vec::new(),
        master_name: String::new(),
        fill_lock: false,
        compress_above: Some(4 << 10),
        prefix: "sidecache:".to_string(),
        timeout: Duration::from_millis(50),
        write_timeout: Duration::from_secs(1),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(5),
        purge_poll: Duration::from_secs(1),
        purge_backlog: 65_536,
        channel: "sidecache:purge".to_string(),
        channel_secret: None,
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

/// What each `cache.l2.mode` needs (after env overrides, which may supply the lists).
fn l2_mode(l2: &L2Config, table_line: Option<usize>, config: &Config, doc: &mut Doc<'_>) {
    let line = |key: &str| config.lines.get(&format!("cache.l2.{key}")).or(table_line);
    match l2.mode {
        L2Mode::Standalone => {}
        L2Mode::Cluster => {
            if l2.nodes.is_empty() {
                doc.error(
                    "cache.l2.nodes",
                    line("mode"),
                    "mode = \"cluster\" needs at least one seed node (or set SIDECACHE_REDIS_NODES)",
                );
            }
            if l2.prefix.contains(['{', '}']) {
                doc.error(
                    "cache.l2.prefix",
                    line("prefix"),
                    "must not contain '{' or '}' with mode = \"cluster\": the store adds its own hash tags",
                );
            }
        }
        L2Mode::Sentinel => {
            if l2.sentinels.is_empty() {
                doc.error(
                    "cache.l2.sentinels",
                    line("mode"),
                    "mode = \"sentinel\" needs at least one sentinel (or set SIDECACHE_REDIS_SENTINELS)",
                );
            }
            if l2.master_name.trim().is_empty() {
                doc.error(
                    "cache.l2.master_name",
                    line("mode"),
                    "mode = \"sentinel\" needs the master's name",
                );
            }
        }
    }
}

fn server(doc: &mut Doc<'_>, root: &mut Table<'_>) -> ServerConfig {
    let mut t = root.table(doc, "server");
    let addr = |t: &mut Table<'_>, doc: &mut Doc<'_>, key, default: [u8; 4], port| {
        t.get(doc, key)
            .and_then(|e| e.parsed(doc, parse_socket_addr))
            .unwrap_or(SocketAddr::from((default, port)))
    };
    let server = ServerConfig {
        listen: addr(&mut t, doc, "listen", [0, 0, 0, 0], 8080),
        admin_listen: addr(&mut t, doc, "admin_listen", [127, 0, 0, 1], 9091),
        threads: t
            .get(doc, "threads")
            .and_then(|e| e.int_in(doc, 1, 1024))
            .unwrap_or_else(default_threads),
        work_stealing: t
            .get(doc, "work_stealing")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        grace_period: t
            .get(doc, "grace_period")
            .and_then(|e| e.duration(doc))
            .unwrap_or(Duration::from_secs(10)),
        access_log: t
            .get(doc, "access_log")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        max_request_body_bytes: t
            .get(doc, "max_request_body")
            .and_then(|e| e.size(doc))
            .unwrap_or(64 << 20),
        admin_token: None,
        watch: t
            .get(doc, "watch")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        trusted_proxies: t
            .get(doc, "trusted_proxies")
            .and_then(|e| e.strings(doc))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(s, e)| e.parsed(doc, |_| Cidr::parse(&s)))
            .collect(),
        allow_body_on_safe_methods: t
            .get(doc, "allow_body_on_safe_methods")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        tunnel_idle_timeout: t
            .get(doc, "tunnel_idle_timeout")
            .and_then(|e| e.positive_duration(doc))
            .unwrap_or(Duration::from_secs(60)),
        limits: limits(doc, &mut t),
    };
    t.forbid(
        doc,
        "admin_token",
        "the admin token is never read from the file; set SIDECACHE_ADMIN_TOKEN instead",
    );
    t.finish(doc);
    server
}

fn limits(doc: &mut Doc<'_>, t: &mut Table<'_>) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let mut duration = |t: &mut Table<'_>, key, default| {
        t.get(doc, key)
            .and_then(|e| e.positive_duration(doc))
            .unwrap_or(default)
    };
    let header_timeout = duration(t, "header_timeout", d.header_timeout);
    let keepalive_timeout = duration(t, "keepalive_timeout", d.keepalive_timeout);
    let admin_body_timeout = duration(t, "admin_body_timeout", d.admin_body_timeout);
    let send_timeout = duration(t, "send_timeout", d.send_timeout);
    let min_send_rate = t
        .get(doc, "min_send_rate")
        .and_then(|e| match e.size_or_off(doc)? {
            Some(0) => {
                e.error(doc, "must be greater than 0 (or \"off\")");
                None
            }
            Some(rate) => Some(usize::try_from(rate).ok()),
            None => Some(None),
        })
        .unwrap_or(d.min_send_rate);
    let max_header_bytes = t
        .get(doc, "max_header_bytes")
        .and_then(|e| {
            let n = e.size(doc)?;
            if !(1024..=1 << 20).contains(&n) {
                e.error(doc, "must be between 1KiB and 1MiB (pingora's own limit)");
                return None;
            }
            usize::try_from(n).ok()
        })
        .unwrap_or(d.max_header_bytes);
    ConnectionLimits {
        max_header_bytes,
        max_headers: t
            .get(doc, "max_headers")
            .and_then(|e| e.int_in(doc, 1, 256))
            .unwrap_or(d.max_headers),
        header_timeout,
        keepalive_timeout,
        max_requests_per_connection: t
            .get(doc, "max_requests_per_connection")
            .and_then(|e| e.int_in(doc, 1, 1_000_000_000))
            .unwrap_or(d.max_requests_per_connection),
        max_connections: t
            .get(doc, "max_connections")
            .and_then(|e| e.int_in(doc, 1, 1_000_000))
            .unwrap_or(d.max_connections),
        admin_body_timeout,
        send_timeout,
        min_send_rate,
    }
}

fn proxy(doc: &mut Doc<'_>, root: &mut Table<'_>, upstreams: &[&str]) -> ProxyConfig {
    let mut t = root.table(doc, "proxy");
    let default_upstream = t
        .get(doc, "default_upstream")
        .and_then(|e| e.parsed(doc, |s| known_upstream(s, upstreams)));
    t.finish(doc);
    ProxyConfig { default_upstream }
}

/// The index of upstream `name`, or an error listing the defined ones.
fn known_upstream(name: &str, upstreams: &[&str]) -> Result<usize, String> {
    upstreams.iter().position(|u| *u == name).ok_or_else(|| {
        format!(
            "unknown upstream {name:?}; defined upstreams: {}",
            upstreams.join(", ")
        )
    })
}

/// The array of tables at `key` (empty when absent).
fn tables<'n>(doc: &mut Doc<'_>, root: &mut Table<'n>, key: &'static str) -> Vec<Table<'n>> {
    let Some(list) = root.get(doc, key).and_then(|e| e.list(doc)) else {
        return Vec::new();
    };
    list.iter().filter_map(|e| e.table(doc)).collect()
}

fn upstreams(doc: &mut Doc<'_>, root: &mut Table<'_>) -> Vec<UpstreamConfig> {
    let list = tables(doc, root, "upstreams");
    if list.is_empty() {
        doc.error("upstreams", None, "at least one [[upstreams]] is required");
    }
    let mut out: Vec<UpstreamConfig> = Vec::new();
    for mut t in list {
        let name = t.require(doc, "name").and_then(|e| {
            let name = e.parsed(doc, |s| {
                let ok = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                ok.then(|| s.to_string()).ok_or_else(|| {
                    format!("invalid upstream name {s:?}: use letters, digits, '-' and '_'")
                })
            })?;
            if out.iter().any(|u| u.name == name) {
                e.error(doc, format!("duplicate upstream name {name:?}"));
                return None;
            }
            Some(name)
        });
        let address = t
            .require(doc, "address")
            .and_then(|e| e.parsed(doc, |s| check_host_port(s).map(|()| s.to_string())));
        let mut timeout = |key, default| {
            t.get(doc, key)
                .and_then(|e| e.positive_duration(doc))
                .unwrap_or(Duration::from_secs(default))
        };
        let upstream = UpstreamConfig {
            name: name.unwrap_or_default(),
            address: address.unwrap_or_default(),
            connect_timeout: timeout("connect_timeout", 1),
            read_timeout: timeout("read_timeout", 60),
            write_timeout: timeout("write_timeout", 30),
            idle_timeout: timeout("idle_timeout", 60),
        };
        t.finish(doc);
        if !upstream.name.is_empty() {
            out.push(upstream);
        }
    }
    out
}

fn rewrites(doc: &mut Doc<'_>, root: &mut Table<'_>, upstreams: &[&str]) -> Vec<RewriteConfig> {
    let mut out = Vec::new();
    for mut t in tables(doc, root, "rewrites") {
        let source = t.require(doc, "source");
        let pattern = source.as_ref().and_then(|e| e.parsed(doc, parse_pattern));
        let destination = t.require(doc, "destination").and_then(|e| {
            let dest = e.str(doc)?;
            let (upstream, path) = match dest.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (dest, None),
            };
            let upstream = match known_upstream(upstream, upstreams) {
                Ok(i) => i,
                Err(msg) => {
                    e.error(doc, msg);
                    return None;
                }
            };
            let Some(path) = path else {
                return Some((upstream, None));
            };
            let template = match parse_pattern(path) {
                Ok(t) => t,
                Err(msg) => {
                    e.error(doc, format!("invalid destination path template: {msg}"));
                    return None;
                }
            };
            if template.has_anonymous_catch_all() {
                e.error(
                    doc,
                    "destination cannot use an anonymous *; name it in the source, e.g. :path*",
                );
                return None;
            }
            if let Some(source) = &pattern {
                let missing: Vec<&str> = template
                    .param_names()
                    .filter(|n| !source.param_names().any(|s| s == *n))
                    .collect();
                if !missing.is_empty() {
                    e.error(
                        doc,
                        format!(
                            "destination uses :{}, which the source {:?} does not define",
                            missing.join(", :"),
                            source.source()
                        ),
                    );
                    return None;
                }
            }
            Some((upstream, Some(template)))
        });
        let strip_prefix = t
            .get(doc, "strip_prefix")
            .and_then(|e| e.parsed(doc, absolute_path));
        let add_prefix = t
            .get(doc, "add_prefix")
            .and_then(|e| e.parsed(doc, absolute_path));
        t.finish(doc);
        if let (Some(p), Some((upstream, path))) = (pattern, destination) {
            out.push(RewriteConfig {
                source: p,
                upstream,
                path,
                strip_prefix,
                add_prefix,
            });
        }
    }
    out
}

fn route_name(s: &str) -> Result<String, String> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid route name {s:?}: use only a-z, 0-9 and '_'"
        ));
    }
    if s == "default" || s == "health" {
        return Err(format!("route name {s:?} is reserved"));
    }
    Ok(s.to_string())
}

fn routes(doc: &mut Doc<'_>, root: &mut Table<'_>) -> Vec<RouteConfig> {
    let mut out: Vec<RouteConfig> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for mut t in tables(doc, root, "routes") {
        let name = t.require(doc, "name").and_then(|e| {
            let name = e.parsed(doc, route_name)?;
            if names.contains(&name) {
                e.error(doc, format!("duplicate route name {name:?}"));
                return None;
            }
            names.push(name.clone());
            Some(name)
        });
        let matcher = t
            .require(doc, "match")
            .and_then(|e| e.parsed(doc, parse_method_pattern));
        let timeout = t.get(doc, "timeout").and_then(|e| e.positive_duration(doc));
        let cache_enabled = t
            .get(doc, "cache")
            .and_then(|e| e.bool(doc))
            .unwrap_or(true);
        let cache = if cache_enabled {
            Some(route_cache(
                doc,
                &mut t,
                matcher.as_ref().map(|m| &m.pattern),
            ))
        } else {
            for key in ROUTE_CACHE_KEYS {
                if let Some(e) = t.get(doc, key) {
                    e.error(doc, "not allowed with cache = false");
                }
            }
            None
        };
        t.finish(doc);
        if let (Some(name), Some(mp)) = (name, matcher) {
            out.push(RouteConfig {
                name,
                methods: mp.methods,
                pattern: mp.pattern,
                cache,
                timeout,
            });
        }
    }
    out
}

fn route_cache(
    doc: &mut Doc<'_>,
    t: &mut Table<'_>,
    pattern: Option<&Pattern>,
) -> RouteCacheConfig {
    let ttl_entry = t.get(doc, "ttl");
    let ttl = ttl_entry.as_ref().and_then(|e| {
        e.parsed(doc, |s| match s {
            "until-invalidated" => Ok(Ttl::UntilInvalidated),
            _ => match super::units::parse_duration(s) {
                Ok(d) if d.is_zero() => Err("ttl must be greater than 0".to_string()),
                Ok(d) => Ok(Ttl::Fixed(d)),
                Err(e) => Err(e.to_string()),
            },
        })
    });
    let mode_entry = t.get(doc, "mode");
    let mode = mode_entry.as_ref().and_then(|e| {
        e.parsed(doc, |s| match s {
            "override" => Ok(CacheMode::Override),
            "origin" => Ok(CacheMode::Origin),
            _ => Err(format!(
                "invalid mode {s:?}: expected \"override\" or \"origin\""
            )),
        })
    });
    if let (Some(CacheMode::Override), None, Some(e)) = (mode, &ttl_entry, &mode_entry) {
        e.error(doc, "mode = \"override\" needs a ttl");
    }
    let mode = mode.unwrap_or(if ttl_entry.is_some() {
        CacheMode::Override
    } else {
        CacheMode::Origin
    });
    let max_ttl = match t.get(doc, "max_ttl") {
        Some(e) => e.positive_duration(doc).inspect(|max| {
            if let Some(Ttl::Fixed(ttl)) = ttl {
                if *max < ttl {
                    e.error(
                        doc,
                        format!(
                            "max_ttl ({}) is shorter than ttl ({})",
                            super::units::format_duration(*max),
                            super::units::format_duration(ttl)
                        ),
                    );
                }
            }
        }),
        None if ttl == Some(Ttl::UntilInvalidated) => Some(Duration::from_secs(86_400)),
        None => None,
    };
    let mut duration = |key, default| {
        t.get(doc, key)
            .and_then(|e| e.duration(doc))
            .unwrap_or(default)
    };
    let stale_while_revalidate = duration("stale_while_revalidate", Duration::ZERO);
    let stale_if_error = duration("stale_if_error", Duration::ZERO);
    let negative_ttl = duration("negative_ttl", Duration::from_secs(30));
    let key = key_config(doc, t);
    let honor_request_directives = t
        .get(doc, "honor_request_directives")
        .and_then(|e| e.bool(doc));
    let forward_unkeyed_query = match t.get(doc, "forward_unkeyed_query") {
        Some(e) => {
            let v = e.bool(doc).unwrap_or(false);
            if v && key.query.is_none() {
                e.error(
                    doc,
                    "only meaningful with key = { query = [...] }: without it the whole query is keyed and forwarded",
                );
            }
            v
        }
        None => false,
    };
    let params: Vec<&str> = pattern
        .map(|p| p.param_names().collect())
        .unwrap_or_default();
    let tags = t
        .get(doc, "tags")
        .and_then(|e| e.strings(doc))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(tag, e)| match Template::parse(&tag) {
            Err(err) => {
                e.error(doc, err);
                None
            }
            Ok(_) if tag.starts_with("url:") => {
                e.error(
                    doc,
                    format!("tag {tag:?}: tags starting with \"url:\" are sidecache's own (one per absolute URL)"),
                );
                None
            }
            Ok(template) => {
                let missing: Vec<&str> = template
                    .names()
                    .filter(|n| pattern.is_some() && !params.contains(n))
                    .collect();
                if missing.is_empty() {
                    Some(template)
                } else {
                    e.error(
                        doc,
                        format!(
                            "tag {tag:?} uses {{{}}}, which the route's pattern does not capture",
                            missing.join("}, {")
                        ),
                    );
                    None
                }
            }
        })
        .collect();
    let statuses = match t.get(doc, "statuses").and_then(|e| e.list(doc)) {
        Some(list) => list
            .iter()
            .filter_map(|e| e.int_in::<u16>(doc, 100, 599))
            .collect(),
        None => RouteCacheConfig::DEFAULT_STATUSES.to_vec(),
    };
    let invalidate_on = t
        .get(doc, "invalidate_on")
        .and_then(|e| e.strings(doc))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(s, e)| e.parsed(doc, |_| parse_method_pattern(&s)))
        .collect();
    RouteCacheConfig {
        mode,
        ttl,
        max_ttl,
        stale_while_revalidate,
        stale_if_error,
        key,
        tags,
        statuses,
        negative_ttl,
        invalidate_on,
        forward_unkeyed_query,
        honor_request_directives,
    }
}

fn key_config(doc: &mut Doc<'_>, route: &mut Table<'_>) -> KeyConfig {
    let Some(mut t) = route.get(doc, "key").and_then(|e| e.table(doc)) else {
        return KeyConfig::default();
    };
    let query = t
        .get(doc, "query")
        .and_then(|e| e.strings(doc))
        .map(|list| {
            let mut names: Vec<String> = list.into_iter().map(|(s, _)| s).collect();
            names.sort();
            names.dedup();
            names
        });
    let headers = t
        .get(doc, "headers")
        .and_then(|e| e.strings(doc))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(h, e)| {
            e.parsed(doc, |_| {
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("invalid header name {h:?}"))
            })
        })
        .collect();
    t.finish(doc);
    KeyConfig { query, headers }
}

fn cache(doc: &mut Doc<'_>, root: &mut Table<'_>) -> (CacheConfig, Pending) {
    let mut t = root.table(doc, "cache");
    let default_mode = t
        .get(doc, "default_mode")
        .and_then(|e| {
            e.parsed(doc, |s| match s {
                "origin" => Ok(Some(CacheMode::Origin)),
                "off" => Ok(None),
                _ => Err(format!(
                    "invalid default_mode {s:?}: expected \"origin\" or \"off\""
                )),
            })
        })
        .unwrap_or(Some(CacheMode::Origin));
    let lock_timeout = t
        .get(doc, "lock_timeout")
        .and_then(|e| e.positive_duration(doc))
        .unwrap_or(Duration::from_secs(5));
    let key_host = t
        .get(doc, "key_host")
        .and_then(|e| e.bool(doc))
        .unwrap_or(true);
    let targeted_cache_control = match t.get(doc, "targeted_cache_control") {
        Some(e) => e
            .strings(doc)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, e)| {
                e.parsed(doc, |_| {
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("invalid header name {name:?}"))
                        .and_then(|n| match n.as_str() {
                            "cache-control" => {
                                Err("Cache-Control is not a targeted field".to_owned())
                            }
                            _ => Ok(n),
                        })
                })
            })
            .collect(),
        None => vec![
            SIDECACHE_CACHE_CONTROL,
            http::HeaderName::from_static("cdn-cache-control"),
        ],
    };
    let honor_request_directives = t
        .get(doc, "honor_request_directives")
        .and_then(|e| e.bool(doc))
        .unwrap_or(true);
    let soft_purge_grace = t
        .get(doc, "soft_purge_grace")
        .and_then(|e| {
            e.duration(doc).and_then(|d| {
                if d > MAX_SOFT_PURGE_GRACE {
                    e.error(doc, "soft_purge_grace must be at most 1h");
                    None
                } else {
                    Some(d)
                }
            })
        })
        .unwrap_or(Duration::from_secs(60));
    let surrogate_key_header = t.get(doc, "surrogate_key_header").and_then(|e| {
        e.parsed(doc, |name| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))
                .and_then(|n| match NOT_SURROGATE_KEYS.contains(&n.as_str()) {
                    true => Err(format!(
                        "{name:?} cannot carry surrogate keys: clients need it, and it is never sent"
                    )),
                    false => Ok(n),
                })
        })
    });

    let mut l1t = t.table(doc, "l1");
    let max_bytes = l1t.get(doc, "max_bytes").and_then(|e| e.size(doc));
    let object = l1t.get(doc, "max_object_bytes");
    let max_object_bytes = object.as_ref().and_then(|e| e.size(doc));
    let l1 = L1Config {
        max_bytes: max_bytes.unwrap_or(256 << 20),
        max_object_bytes: max_object_bytes.unwrap_or(8 << 20),
    };
    // max_bytes = 0 disables L1; max_object_bytes then still bounds what L2 stores.
    if l1.max_bytes > 0 && l1.max_object_bytes > l1.max_bytes {
        let path = l1t.key_path("max_object_bytes");
        let line = object.and_then(|e| e.line).or(l1t.line);
        doc.error(path, line, "max_object_bytes must not exceed max_bytes");
    }
    l1t.finish(doc);

    let mut pending = Pending {
        l2_without_url: None,
        l2_mode_line: None,
    };
    let l2 = t.get(doc, "l2").and_then(|e| e.table(doc)).map(|mut l2t| {
        let mut l2 = default_l2();
        match l2t.get(doc, "url") {
            Some(e) => {
                if let Some(url) = e.parsed(doc, |s| check_redis_url(s).map(|()| s.to_string())) {
                    l2.url = Secret::new(url);
                }
            }
            None => pending.l2_without_url = Some(l2t.line),
        }
        let string = |t: &mut Table<'_>, doc: &mut Doc<'_>, key, default: String| {
            t.get(doc, key)
                .and_then(|e| e.str(doc).map(str::to_string))
                .unwrap_or(default)
        };
        l2.mode = l2t
            .get(doc, "mode")
            .and_then(|e| {
                e.parsed(doc, |s| match s {
                    "standalone" => Ok(L2Mode::Standalone),
                    "cluster" => Ok(L2Mode::Cluster),
                    "sentinel" => Ok(L2Mode::Sentinel),
                    _ => Err("expected \"standalone\", \"cluster\" or \"sentinel\""),
                })
            })
            .unwrap_or(l2.mode);
        let urls = |t: &mut Table<'_>, doc: &mut Doc<'_>, key| -> Vec<Secret> {
            let Some(list) = t.get(doc, key).and_then(|e| e.strings(doc)) else {
                return Vec::new();
            };
            list.into_iter()
                .filter_map(|(s, e)| {
                    e.parsed(doc, |_| {
                        check_redis_url(&s).map(|()| Secret::new(s.clone()))
                    })
                })
                .collect()
        };
        l2.nodes = urls(&mut l2t, doc, "nodes");
        l2.sentinels = urls(&mut l2t, doc, "sentinels");
        l2.master_name = string(&mut l2t, doc, "master_name", l2.master_name);
        pending.l2_mode_line = l2t.line;
        l2.fill_lock = l2t
            .get(doc, "fill_lock")
            .and_then(|e| e.bool(doc))
            .unwrap_or(l2.fill_lock);
        l2.compress_above = l2t
            .get(doc, "compress_above")
            .and_then(|e| e.size_or_off(doc))
            .unwrap_or(l2.compress_above);
        l2.prefix = string(&mut l2t, doc, "prefix", l2.prefix);
        l2.channel = string(&mut l2t, doc, "channel", l2.channel);
        l2.channel_secret = l2t.get(doc, "channel_secret").and_then(|e| {
            e.parsed(doc, |s| match s.len() {
                16.. => Ok(Secret::new(s)),
                _ => Err("must be at least 16 characters"),
            })
        });
        let mut duration = |key, default| {
            l2t.get(doc, key)
                .and_then(|e| e.positive_duration(doc))
                .unwrap_or(default)
        };
        l2.timeout = duration("timeout", l2.timeout);
        l2.write_timeout = duration("write_timeout", l2.write_timeout);
        l2.breaker_cooldown = duration("breaker_cooldown", l2.breaker_cooldown);
        l2.purge_poll = duration("purge_poll", l2.purge_poll);
        l2.purge_backlog = l2t
            .get(doc, "purge_backlog")
            .and_then(|e| e.int_in(doc, 1, 16_777_216))
            .unwrap_or(l2.purge_backlog);
        l2.breaker_failures = l2t
            .get(doc, "breaker_failures")
            .and_then(|e| e.int_in(doc, 1, 1_000_000))
            .unwrap_or(l2.breaker_failures);
        l2t.finish(doc);
        l2
    });
    t.finish(doc);
    let cache = CacheConfig {
        default_mode,
        key_host,
        targeted_cache_control,
        honor_request_directives,
        lock_timeout,
        soft_purge_grace,
        surrogate_key_header,
        l1,
        l2,
    };
    (cache, pending)
}

/// Fields `cache.surrogate_key_header` may not name: the header is removed from every answer.
const NOT_SURROGATE_KEYS: [&str; 14] = [
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "location",
    "set-cookie",
    "transfer-encoding",
    "vary",
];

/// The longest `cache.soft_purge_grace`: a soft-purged entry is served stale for no longer.
const MAX_SOFT_PURGE_GRACE: Duration = Duration::from_secs(3600);

/// The shortest `warm.every`.
const MIN_WARM_EVERY: Duration = Duration::from_secs(1);

fn warm(doc: &mut Doc<'_>, root: &mut Table<'_>, source: Option<&Path>) -> WarmConfig {
    let mut t = root.table(doc, "warm");
    let on_start = t
        .get(doc, "on_start")
        .and_then(|e| e.bool(doc))
        .unwrap_or(false);
    let concurrency = t
        .get(doc, "concurrency")
        .and_then(|e| e.int_in(doc, 1, 1024))
        .unwrap_or(4);
    let rate_per_second = t
        .get(doc, "rate_per_second")
        .and_then(|e| e.int_in(doc, 1, 1_000_000))
        .unwrap_or(50);
    let max_ready_delay = t
        .get(doc, "max_ready_delay")
        .and_then(|e| e.duration(doc))
        .unwrap_or(Duration::from_secs(30));
    let every_entry = t.get(doc, "every");
    let every = every_entry.as_ref().and_then(|e| {
        let d = e.duration(doc)?;
        if d < MIN_WARM_EVERY {
            e.error(doc, "must be at least 1s");
            return None;
        }
        Some(d)
    });
    let jitter_entry = t.get(doc, "jitter");
    let jitter = match (&jitter_entry, every) {
        (Some(e), Some(every)) => e.duration(doc).and_then(|j| {
            if j > every {
                e.error(doc, "must not exceed warm.every");
                None
            } else {
                Some(j)
            }
        }),
        (Some(e), None) => {
            e.error(doc, "needs warm.every");
            None
        }
        (None, Some(every)) => Some(every / 10),
        (None, None) => None,
    }
    .unwrap_or(Duration::ZERO);
    let host = t.get(doc, "host").and_then(|e| {
        e.parsed(doc, |s| {
            let mut normal = String::new();
            crate::normalize::normalize_authority(s, "http", &mut normal)
                .map(|()| s.to_owned())
                .map_err(|_| format!("invalid host {s:?}: expected host[:port]"))
        })
    });
    let urls: Vec<String> = t
        .get(doc, "urls")
        .and_then(|e| e.strings(doc))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(u, e)| e.parsed(doc, |_| absolute_path(&u)))
        .collect();
    let base = source.and_then(Path::parent);
    let mut templates = Vec::new();
    for mut wt in tables(doc, &mut t, "templates") {
        let template = wt.require(doc, "template").and_then(|e| {
            e.parsed(doc, |s| {
                let template = Template::parse(s).map_err(|e| e.to_string())?;
                if template.names().next().is_none() || template.names().any(|n| n != "id") {
                    return Err(format!(
                        "template {s:?} must use {{id}} and no other {{name}}"
                    ));
                }
                absolute_path(s)?;
                Ok(template)
            })
        });
        let ids: Vec<String> = wt
            .get(doc, "ids")
            .and_then(|e| e.strings(doc))
            .map(|list| list.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let ids_entry = wt.get(doc, "ids_file");
        let ids_file = ids_entry
            .as_ref()
            .and_then(|e| e.str(doc))
            .map(|f| match base {
                Some(dir) => dir.join(f),
                None => PathBuf::from(f),
            });
        if ids.is_empty() && ids_file.is_none() && ids_entry.is_none() {
            doc.error(wt.path.clone(), wt.line, "needs ids or ids_file");
        }
        wt.finish(doc);
        if let Some(template) = template {
            templates.push(WarmTemplate {
                template,
                ids,
                ids_file,
            });
        }
    }
    if let Some(e) = &every_entry {
        if urls.is_empty() && templates.is_empty() {
            e.error(
                doc,
                "needs warm.urls or [[warm.templates]]: there is nothing to warm",
            );
        }
    }
    t.finish(doc);
    WarmConfig {
        every,
        jitter,
        on_start,
        concurrency,
        rate_per_second,
        max_ready_delay,
        host,
        urls,
        templates,
    }
}
