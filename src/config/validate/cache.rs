//! `[cache]`, `[cache.l1]` and `[cache.l2]`: the tiers, and what each L2 mode needs.

use super::*;

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

/// What each `cache.l2.mode` needs (after env overrides, which may supply the lists).
pub(super) fn l2_mode(
    l2: &L2Config,
    table_line: Option<usize>,
    config: &Config,
    doc: &mut Doc<'_>,
) {
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

pub(super) fn cache(doc: &mut Doc<'_>, root: &mut Table<'_>) -> (CacheConfig, Pending) {
    let mut t = root.table(doc, "cache");
    let default_mode = t
        .get(doc, "default_mode")
        .and_then(|e| {
            e.parsed(doc, |s| match (s, CacheMode::from_label(s)) {
                ("off", _) => Ok(None),
                (_, Some(CacheMode::Origin)) => Ok(Some(CacheMode::Origin)),
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
                e.parsed(doc, |s| {
                    L2Mode::from_label(s)
                        .ok_or("expected \"standalone\", \"cluster\" or \"sentinel\"")
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
pub(super) const NOT_SURROGATE_KEYS: [&str; 14] = [
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
pub(super) const MAX_SOFT_PURGE_GRACE: Duration = Duration::from_secs(3600);
