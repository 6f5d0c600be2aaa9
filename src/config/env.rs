//! Environment overrides (`SIDECACHE_*`), applied after the file is validated.

use super::validate::{check_host_port, check_redis_url, default_l2, parse_socket_addr};
use super::{Config, ConfigError, EnvSource, Secret};

/// The variable overriding the address of upstream `name` (`SIDECACHE_UPSTREAM_<NAME>`).
pub fn upstream_var(name: &str) -> String {
    format!(
        "SIDECACHE_UPSTREAM_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

fn bad(errors: &mut Vec<ConfigError>, var: &str, message: String) {
    errors.push(ConfigError {
        path: var.to_string(),
        line: None,
        message,
    });
}

/// Apply every `SIDECACHE_*` override found in `env`; bad values are errors naming the variable.
pub(crate) fn apply(config: &mut Config, env: &dyn EnvSource, errors: &mut Vec<ConfigError>) {
    for (var, target) in [
        ("SIDECACHE_LISTEN", &mut config.server.listen),
        ("SIDECACHE_ADMIN_LISTEN", &mut config.server.admin_listen),
    ] {
        if let Some(value) = env.var(var) {
            match parse_socket_addr(&value) {
                Ok(addr) => *target = addr,
                Err(msg) => bad(errors, var, msg),
            }
        }
    }
    for upstream in &mut config.upstreams {
        let var = upstream_var(&upstream.name);
        if let Some(value) = env.var(&var) {
            match check_host_port(&value) {
                Ok(()) => upstream.address = value,
                Err(msg) => bad(errors, &var, msg),
            }
        }
    }
    if let Some(url) = env.var("SIDECACHE_REDIS_URL") {
        match check_redis_url(&url) {
            Ok(()) => config.cache.l2.get_or_insert_with(default_l2).url = Secret::new(url),
            Err(msg) => bad(errors, "SIDECACHE_REDIS_URL", msg),
        }
    }
    for var in ["SIDECACHE_REDIS_NODES", "SIDECACHE_REDIS_SENTINELS"] {
        let Some(value) = env.var(var) else {
            continue;
        };
        let Some(l2) = config.cache.l2.as_mut() else {
            bad(
                errors,
                var,
                "set, but there is no [cache.l2] to use it (set its mode there)".to_string(),
            );
            continue;
        };
        let mut urls = Vec::new();
        for url in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            match check_redis_url(url) {
                Ok(()) => urls.push(Secret::new(url)),
                Err(msg) => bad(errors, var, msg),
            }
        }
        if var == "SIDECACHE_REDIS_NODES" {
            l2.nodes = urls;
        } else {
            l2.sentinels = urls;
        }
    }
    if let Some(secret) = env.var("SIDECACHE_CHANNEL_SECRET") {
        match config.cache.l2.as_mut() {
            _ if secret.len() < 16 => bad(
                errors,
                "SIDECACHE_CHANNEL_SECRET",
                "must be at least 16 characters".to_string(),
            ),
            Some(l2) => l2.channel_secret = Some(Secret::new(secret)),
            None => bad(
                errors,
                "SIDECACHE_CHANNEL_SECRET",
                "set, but there is no [cache.l2] (or SIDECACHE_REDIS_URL) to broadcast on"
                    .to_string(),
            ),
        }
    }
    if let Some(token) = env.var("SIDECACHE_ADMIN_TOKEN") {
        if token.trim().is_empty() {
            bad(
                errors,
                "SIDECACHE_ADMIN_TOKEN",
                "must not be empty".to_string(),
            );
        } else {
            config.server.admin_token = Some(Secret::new(token));
        }
    }
}
