//! Cache warming: requests a list of URLs **through sidecache's own data plane**, so the normal
//! cache path fills L1 and L2 before real traffic arrives (the job the legacy
//! `warmCache.js` did on deployment).
//!
//! Two halves:
//! - *what* to fetch: [`expand`] turns `[warm]` (`urls`, and `templates` x `ids` / `ids_file`)
//!   into an ordered, de-duplicated list of paths;
//! - *how*: [`run`] fetches them with at most `concurrency` keep-alive connections, paced to
//!   `rate_per_second` by a shared [`Pacer`], a per-request timeout, and classifies each
//!   answer by its `X-Cache` header into a [`WarmReport`].
//!
//! Used by `sidecache warm` (the CLI) and by `[warm] on_start = true` (see
//! [`crate::server`]), which also holds `/ready` at 503 while warming runs, for at most
//! `max_ready_delay`.

mod client;
mod report;

pub use report::{Outcome, ProgressGate, WarmReport};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

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
}

impl WarmOptions {
    /// Options from `[warm]`, aimed at `target`.
    pub fn from_config(config: &WarmConfig, target: String) -> Self {
        Self {
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
    let bad = || WarmError::InvalidTarget(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(bad());
    }
    let uri: http::uri::Authority = authority.parse().map_err(|_| bad())?;
    if uri.host().is_empty() {
        return Err(bad());
    }
    Ok(match uri.port_u16() {
        Some(_) => authority.to_owned(),
        None => format!("{authority}:80"),
    })
}

/// Interval pacing for `rate_per_second`: request *n* may start no earlier than
/// `first + n * interval`; a late start does not bank credit beyond one slot.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for at most `rate_per_second` starts per second (0 is treated as 1).
    pub fn new(rate_per_second: u32) -> Self {
        Self {
            interval: Self::interval_for(rate_per_second),
            next: None,
        }
    }

    /// The spacing between request starts for a rate.
    pub fn interval_for(rate_per_second: u32) -> Duration {
        Duration::from_secs(1) / rate_per_second.max(1)
    }

    /// Reserves the next start slot at or after `now`; returns when to start.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(slot + self.interval);
        slot
    }
}

/// Fetches every path in `paths` through `opts.target` and reports what happened.
/// `on_progress` is called after each finished request with the running totals (it must be
/// quick; it runs under the report lock).
pub async fn run<F>(paths: Vec<String>, opts: &WarmOptions, on_progress: F) -> WarmReport
where
    F: Fn(&WarmReport, usize) + Send + Sync + 'static,
{
    let started = Instant::now();
    let total = paths.len();
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let pacer = Arc::new(tokio::sync::Mutex::new(Pacer::new(opts.rate_per_second)));
    let report = Arc::new(Mutex::new(WarmReport::default()));
    let on_progress = Arc::new(on_progress);
    let target: Arc<str> = Arc::from(opts.target.as_str());
    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency.max(1).min(total) {
        let paths = Arc::clone(&paths);
        let next = Arc::clone(&next);
        let pacer = Arc::clone(&pacer);
        let report = Arc::clone(&report);
        let on_progress = Arc::clone(&on_progress);
        let target = Arc::clone(&target);
        let timeout = opts.timeout;
        workers.spawn(async move {
            let mut conn = client::Conn::new(target);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = paths.get(i) else { break };
                let at = pacer.lock().await.reserve(Instant::now());
                tokio::time::sleep_until(at.into()).await;
                let outcome = conn.warm(path, timeout).await;
                if let Ok(mut r) = report.lock() {
                    r.record(path, outcome);
                    on_progress(&r, total);
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            if let Ok(mut r) = report.lock() {
                r.record("(worker)", Outcome::Failed(format!("worker ended: {e}")));
            }
        }
    }
    let mut out = report.lock().map(|r| r.clone()).unwrap_or_default();
    out.elapsed = started.elapsed();
    out
}

#[cfg(test)]
mod tests;
