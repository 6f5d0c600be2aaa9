//! Cache warming: requests a list of URLs **through sidecache's own data plane**, so the normal
//! cache path fills L1 and L2 before real traffic arrives (the job the legacy
//! `warmCache.js` did on deployment).
//!
//! Two halves:
//! - *what* to fetch: [`expand`] turns `[warm]` (`urls`, and `templates` x `ids` / `ids_file`)
//!   into an ordered, de-duplicated list of paths;
//! - *how*: [`run`] fetches them on the client [`pool`] with at most `concurrency`
//!   keep-alive connections, paced to `rate_per_second`, a per-request timeout, and
//!   classifies each answer by its `X-Cache` header into a [`WarmReport`].
//!
//! Used by `sidecache warm` ([`command`]), by `[warm] on_start = true` (see
//! [`crate::server`]), which also holds `/ready` at 503 while warming runs, for at most
//! `max_ready_delay`, and by `[warm] every` and reloads ([`schedule`]).

mod command;
mod job;
mod report;
pub mod schedule;

pub use command::{command, WarmCommand};
pub use report::{Outcome, ProgressGate, WarmReport};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{pool, HttpUrl};
use crate::config::WarmConfig;
use crate::pattern::Params;

/// Default per-request timeout of a warming request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why warming could not start (failed requests are counted in the report, not errors).
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// An ids file could not be read.
    #[error("warm ids file {}: {source}", path.display())]
    IdsFile {
        /// The file as resolved from the config.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An id (from `ids` or an ids file) cannot be placed in a URL path.
    #[error("warm id {id:?} in {origin}: ids must be non-empty and contain no whitespace, '/', '?' or '#'")]
    InvalidId {
        /// The id as written.
        id: String,
        /// Where it came from (`template "..."` or `FILE:LINE`).
        origin: String,
    },
    /// The `--target` base URL is not `http://host:port`.
    #[error("invalid warm target {0:?}: expected http://host:port")]
    InvalidTarget(String),
}

/// How to run a warming pass.
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// Where to send the requests (`host:port` of a sidecache data plane).
    pub target: String,
    /// Parallel requests (each worker keeps one keep-alive connection). At least 1.
    pub concurrency: usize,
    /// Requests started per second, at most. At least 1.
    pub rate_per_second: u32,
    /// Per-request timeout (connect + response + body); a timeout counts as failed.
    pub timeout: Duration,
    /// The `Host` header sent (`warm.host`, else the target).
    pub host: String,
}

impl WarmOptions {
    /// Options from `[warm]`, aimed at `target`.
    pub fn from_config(config: &WarmConfig, target: String) -> Self {
        Self {
            host: config.host.clone().unwrap_or_else(|| target.clone()),
            target,
            concurrency: config.concurrency.max(1),
            rate_per_second: config.rate_per_second.max(1),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The paths `[warm]` asks for: `urls` first, then each template filled with its `ids` and
/// then its `ids_file` ids, in order, without duplicates.
pub fn expand(config: &WarmConfig) -> Result<Vec<String>, WarmError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |url: String| {
        if seen.insert(url.clone()) {
            out.push(url);
        }
    };
    for url in &config.urls {
        push(url.clone());
    }
    for t in &config.templates {
        let mut ids: Vec<(String, String)> = Vec::new();
        for id in &t.ids {
            ids.push((id.trim().to_owned(), format!("template {:?}", t.template)));
        }
        if let Some(path) = &t.ids_file {
            ids.extend(read_ids_file(path)?);
        }
        for (id, origin) in ids {
            check_id(&id, &origin)?;
            let mut params = Params::default();
            params.push("id", &id);
            push(t.template.fill(&params));
        }
    }
    Ok(out)
}

/// Reads an ids file: one id per line; blank lines and `#` comments (whole-line or trailing)
/// are skipped. Returns each id with its `FILE:LINE` origin.
pub fn read_ids_file(path: &Path) -> Result<Vec<(String, String)>, WarmError> {
    let text = std::fs::read_to_string(path).map_err(|source| WarmError::IdsFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_ids(&text)
        .into_iter()
        .map(|(line, id)| (id, format!("{}:{line}", path.display())))
        .collect())
}

/// Parses ids text: `(line number, id)` for each line that is not blank or a `#` comment.
pub fn parse_ids(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let id = line.split('#').next().unwrap_or("").trim();
            (!id.is_empty()).then(|| (i + 1, id.to_owned()))
        })
        .collect()
}

fn check_id(id: &str, origin: &str) -> Result<(), WarmError> {
    let bad = id.is_empty()
        || id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#'));
    if bad {
        return Err(WarmError::InvalidId {
            id: id.to_owned(),
            origin: origin.to_owned(),
        });
    }
    Ok(())
}

/// The `host:port` to reach a listener bound to `listen` from this machine: a wildcard
/// address (`0.0.0.0`, `[::]`) becomes loopback.
pub fn local_target(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// Parses `--target http://host:port` (a trailing `/` allowed) into `host:port`.
pub fn parse_target(url: &str) -> Result<String, WarmError> {
    match HttpUrl::parse(url) {
        Ok(parsed) if parsed.is_base() => Ok(parsed.connect),
        _ => Err(WarmError::InvalidTarget(url.to_owned())),
    }
}

/// Fetches every path in `paths` through `opts.target` and reports what happened.
/// `on_progress` is called after each finished request with the running totals and the
/// number of paths.
pub async fn run<F>(paths: Vec<String>, opts: &WarmOptions, mut on_progress: F) -> WarmReport
where
    F: FnMut(&WarmReport, usize),
{
    let started = Instant::now();
    let total = paths.len();
    let pool_options = pool::PoolOptions {
        addr: Arc::from(opts.target.as_str()),
        concurrency: opts.concurrency,
        rate_per_second: Some(opts.rate_per_second),
    };
    let mut report = WarmReport::default();
    let failed_workers = pool::run(
        &pool_options,
        paths.into(),
        job::WarmJob::new(&opts.host, opts.timeout),
        |path: &String, outcome| {
            report.record(path, outcome);
            on_progress(&report, total);
        },
    )
    .await;
    for e in failed_workers {
        report.record("(worker)", Outcome::Failed(format!("worker ended: {e}")));
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests;
