//! `[[routes]]`: patterns, and each route's cache policy and key.

use super::*;

pub(super) const METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::OPTIONS,
];

/// Keys of a route that configure caching (forbidden with `cache = false`).
pub(super) const ROUTE_CACHE_KEYS: [&str; 12] = [
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

pub(super) fn route_name(s: &str) -> Result<String, String> {
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

pub(super) fn routes(doc: &mut Doc<'_>, root: &mut Table<'_>) -> Vec<RouteConfig> {
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

pub(super) fn route_cache(
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
        e.parsed(doc, |s| {
            CacheMode::from_label(s)
                .ok_or_else(|| format!("invalid mode {s:?}: expected \"override\" or \"origin\""))
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

pub(super) fn key_config(doc: &mut Doc<'_>, route: &mut Table<'_>) -> KeyConfig {
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
