//! Configuration: TOML file -> spanned document walk -> validation (all errors at once) -> [`Config`].
//!
//! Loading never binds a port; a bad file is reported with key paths and line numbers.

mod env;
mod json;
mod model;
mod raw;
pub mod summary;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;
pub use env::upstream_var;
pub use json::redact_url;
pub use model::*;

use std::path::Path;

/// Where environment overrides come from (a trait so tests need no `set_var`).
pub trait EnvSource {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;
impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables (tests, and `sidecache demo` overriding the backend address).
impl EnvSource for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// One validation problem: the key path (`routes[2].ttl`), the line if known, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path like `routes[2].ttl`, an env variable name, or empty for whole-file problems.
    pub path: String,
    /// 1-based line in the file, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

/// Prints `routes[2].ttl (line 41): message`; the parts that are unknown are left out.
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.path.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

/// Every problem found in one config, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config")]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// One line per problem, e.g. `routes[2].ttl (line 41): invalid duration "5 minutes": ...`.
    pub fn report(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn single(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            line,
            message: message.into(),
        }])
    }
}

/// Read, parse and validate the file at `path`.
pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single("", None, format!("cannot read {}: {e}", path.display()))
    })?;
    parse(&text, Some(path), env)
}

/// Parse and validate TOML text; `source` is used for messages and relative paths.
pub fn parse(
    text: &str,
    source: Option<&Path>,
    env: &dyn EnvSource,
) -> Result<Config, ConfigErrors> {
    let document = toml_edit::ImDocument::parse(text).map_err(|e| {
        let doc = raw::Doc::new(text);
        let message = e.message().trim().replace('\n', "; ");
        ConfigErrors::single(
            "",
            doc.line(e.span()),
            format!("TOML syntax error: {message}"),
        )
    })?;
    let mut doc = raw::Doc::new(text);
    let (mut config, pending) = validate::build(&mut doc, document.as_table(), source);
    env::apply(&mut config, env, &mut doc.errors);
    if let (Some(line), Some(l2)) = (pending.l2_without_url, &config.cache.l2) {
        if l2.mode == L2Mode::Standalone && l2.url.expose().is_empty() {
            doc.error(
                "cache.l2.url",
                line,
                "missing required key (or set SIDECACHE_REDIS_URL)",
            );
        }
    }
    validate::after_env(&config, &pending, &mut doc);
    let mut errors = doc.errors;
    if errors.is_empty() {
        return Ok(config);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(ConfigErrors(errors))
}

/// A setting a running process cannot change: a reload that changes one is refused (with a
/// message naming it) and the running config keeps serving.
pub struct RestartOnly {
    /// Key path, as in error messages (`cache.l2.url`).
    pub path: &'static str,
    /// What it is, for the message ("the Redis URL").
    pub what: &'static str,
    changed: fn(&Config, &Config) -> bool,
}

fn l2_field_changed<T: PartialEq>(old: &Config, new: &Config, field: fn(&L2Config) -> &T) -> bool {
    match (&old.cache.l2, &new.cache.l2) {
        (Some(o), Some(n)) => field(o) != field(n),
        _ => false,
    }
}

/// Every restart-only setting, and why: listeners, the thread count and the grace period are
/// fixed when pingora's server starts; the cache lock's age limit when the lock is built; the
/// Redis connection, key prefix, purge channel and its secret when the tiers and the
/// subscriber start.
pub const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        path: "server.listen",
        what: "the listen address",
        changed: |o, n| o.server.listen != n.server.listen,
    },
    RestartOnly {
        path: "server.admin_listen",
        what: "the admin listen address",
        changed: |o, n| o.server.admin_listen != n.server.admin_listen,
    },
    RestartOnly {
        path: "server.threads",
        what: "the number of threads",
        changed: |o, n| o.server.threads != n.server.threads,
    },
    RestartOnly {
        path: "server.work_stealing",
        what: "the scheduler",
        changed: |o, n| o.server.work_stealing != n.server.work_stealing,
    },
    RestartOnly {
        path: "server.grace_period",
        what: "the shutdown grace period",
        changed: |o, n| o.server.grace_period != n.server.grace_period,
    },
    RestartOnly {
        path: "cache.lock_timeout",
        what: "the cache lock timeout",
        changed: |o, n| o.cache.lock_timeout != n.cache.lock_timeout,
    },
    RestartOnly {
        path: "cache.l2",
        what: "adding or removing the Redis tier",
        changed: |o, n| o.cache.l2.is_some() != n.cache.l2.is_some(),
    },
    RestartOnly {
        path: "cache.l2.mode",
        what: "the Redis mode",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.mode),
    },
    RestartOnly {
        path: "cache.l2.url",
        what: "the Redis URL",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.url),
    },
    RestartOnly {
        path: "cache.l2.nodes",
        what: "the Redis Cluster seed nodes",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.nodes),
    },
    RestartOnly {
        path: "cache.l2.sentinels",
        what: "the Redis sentinels",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.sentinels),
    },
    RestartOnly {
        path: "cache.l2.master_name",
        what: "the Sentinel master name",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.master_name),
    },
    RestartOnly {
        path: "cache.l2.prefix",
        what: "the Redis key prefix",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.prefix),
    },
    RestartOnly {
        path: "cache.l2.channel",
        what: "the purge channel",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.channel),
    },
    RestartOnly {
        path: "cache.l2.channel_secret",
        what: "the purge channel secret",
        changed: |o, n| l2_field_changed(o, n, |l2| &l2.channel_secret),
    },
];

/// Whether a running process can switch from `old` to `new` without a restart: an error per
/// [`RESTART_ONLY`] setting that differs, with its line in the new file.
pub fn check_reloadable(old: &Config, new: &Config) -> Result<(), ConfigErrors> {
    let errors: Vec<ConfigError> = RESTART_ONLY
        .iter()
        .filter(|r| (r.changed)(old, new))
        .map(|r| ConfigError {
            path: r.path.to_string(),
            line: new.lines.get(r.path),
            message: format!("changing {} needs a restart", r.what),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
