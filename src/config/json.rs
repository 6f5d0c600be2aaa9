//! The running config as JSON for the admin API, with secrets redacted.

use super::units::format_duration;
use super::*;
use serde_json::{json, Value};

const REDACTED: &str = "[redacted]";

/// Replace the password of a `redis://user:password@host` URL with `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}{}", &rest[at..]),
        None => url.to_string(),
    }
}

fn duration(d: std::time::Duration) -> Value {
    Value::String(format_duration(d))
}

fn mode(m: CacheMode) -> &'static str {
    m.label()
}

fn route(r: &RouteConfig) -> Value {
    let cache = r.cache.as_ref().map(|c| {
        json!({
            "mode": mode(c.mode),
            "ttl": c.ttl.map(|t| match t {
                Ttl::Fixed(d) => duration(d),
                Ttl::UntilInvalidated => Value::from("until-invalidated"),
            }),
            "max_ttl": c.max_ttl.map(duration),
            "stale_while_revalidate": duration(c.stale_while_revalidate),
            "stale_if_error": duration(c.stale_if_error),
            "key": {
                "query": c.key.query,
                "headers": c.key.headers.iter().map(http::HeaderName::as_str).collect::<Vec<_>>(),
            },
            "tags": c.tags.iter().map(|t| t.source()).collect::<Vec<_>>(),
            "statuses": c.statuses,
            "negative_ttl": duration(c.negative_ttl),
            "invalidate_on": c.invalidate_on.iter()
                .map(MethodPattern::to_config_string)
                .collect::<Vec<_>>(),
            "forward_unkeyed_query": c.forward_unkeyed_query,
            "honor_request_directives": c.honor_request_directives,
        })
    });
    json!({
        "name": r.name,
        "match": matcher_string(&r.methods, &r.pattern),
        "cache": cache,
        "timeout": r.timeout.map(duration),
    })
}

impl Config {
    /// The full running config as JSON (for `/admin/config`), with the Redis URL password and
    /// the admin token replaced by `[redacted]`. Durations print as `"5m"`, sizes as bytes.
    pub fn redacted_json(&self) -> Value {
        let s = &self.server;
        json!({
            "server": {
                "listen": s.listen.to_string(),
                "admin_listen": s.admin_listen.to_string(),
                "threads": s.threads,
                "work_stealing": s.work_stealing,
                "grace_period": duration(s.grace_period),
                "access_log": s.access_log,
                "max_request_body_bytes": s.max_request_body_bytes,
                "admin_token": s.admin_token.as_ref().map(|_| REDACTED),
                "watch": s.watch,
                "trusted_proxies": s.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allow_body_on_safe_methods": s.allow_body_on_safe_methods,
                "tunnel_idle_timeout": duration(s.tunnel_idle_timeout),
                "max_header_bytes": s.limits.max_header_bytes,
                "max_headers": s.limits.max_headers,
                "header_timeout": duration(s.limits.header_timeout),
                "keepalive_timeout": duration(s.limits.keepalive_timeout),
                "max_requests_per_connection": s.limits.max_requests_per_connection,
                "max_connections": s.limits.max_connections,
                "admin_body_timeout": duration(s.limits.admin_body_timeout),
                "send_timeout": duration(s.limits.send_timeout),
                "min_send_rate": s.limits.min_send_rate,
            },
            "proxy": {
                "default_upstream": self.proxy.default_upstream.map(|i| self.upstream_name(i)),
            },
            "upstreams": self.upstreams.iter().map(|u| json!({
                "name": u.name,
                "address": u.address,
                "connect_timeout": duration(u.connect_timeout),
                "read_timeout": duration(u.read_timeout),
                "write_timeout": duration(u.write_timeout),
                "idle_timeout": duration(u.idle_timeout),
            })).collect::<Vec<_>>(),
            "rewrites": self.rewrites.iter().map(|r| json!({
                "source": r.source.source(),
                "upstream": self.upstream_name(r.upstream),
                "path": r.path.as_ref().map(|p| p.source()),
                "strip_prefix": r.strip_prefix,
                "add_prefix": r.add_prefix,
            })).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(route).collect::<Vec<_>>(),
            "cache": {
                "default_mode": self.cache.default_mode.map_or("off", mode),
                "key_host": self.cache.key_host,
                "targeted_cache_control": self.cache.targeted_cache_control.iter()
                    .map(http::HeaderName::as_str).collect::<Vec<_>>(),
                "honor_request_directives": self.cache.honor_request_directives,
                "lock_timeout": duration(self.cache.lock_timeout),
                "soft_purge_grace": duration(self.cache.soft_purge_grace),
                "surrogate_key_header": self.cache.surrogate_key_header.as_ref()
                    .map(http::HeaderName::as_str),
                "l1": {
                    "max_bytes": self.cache.l1.max_bytes,
                    "max_object_bytes": self.cache.l1.max_object_bytes,
                },
                "l2": self.cache.l2.as_ref().map(|l2| json!({
                    "mode": l2.mode.label(),
                    "url": redact_url(l2.url.expose()),
                    "nodes": l2.nodes.iter().map(|u| redact_url(u.expose())).collect::<Vec<_>>(),
                    "sentinels": l2.sentinels.iter().map(|u| redact_url(u.expose())).collect::<Vec<_>>(),
                    "master_name": l2.master_name,
                    "fill_lock": l2.fill_lock,
                    "compress_above": l2.compress_above,
                    "prefix": l2.prefix,
                    "timeout": duration(l2.timeout),
                    "write_timeout": duration(l2.write_timeout),
                    "breaker_failures": l2.breaker_failures,
                    "breaker_cooldown": duration(l2.breaker_cooldown),
                    "purge_poll": duration(l2.purge_poll),
                    "purge_backlog": l2.purge_backlog,
                    "channel": l2.channel,
                    "channel_secret": l2.channel_secret.as_ref().map(|_| REDACTED),
                })),
            },
            "warm": {
                "on_start": self.warm.on_start,
                "every": self.warm.every.map(duration),
                "jitter": duration(self.warm.jitter),
                "concurrency": self.warm.concurrency,
                "rate_per_second": self.warm.rate_per_second,
                "max_ready_delay": duration(self.warm.max_ready_delay),
                "host": self.warm.host,
                "urls": self.warm.urls,
                "templates": self.warm.templates.iter().map(|t| json!({
                    "template": t.template.source(),
                    "ids": t.ids,
                    "ids_file": t.ids_file.as_ref().map(|p| p.display().to_string()),
                })).collect::<Vec<_>>(),
            },
            "source": self.source.as_ref().map(|p| p.display().to_string()),
        })
    }
}
