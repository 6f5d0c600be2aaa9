//! `sidecache bench`: a latency probe in the style of the legacy team's
//! `benchmarkProduction.js`, as a Rust HTTP/1.1 keep-alive client.
//!
//! Each URL is measured in turn with `iterations` GET requests spread over `concurrency`
//! workers of the [client pool](crate::client::pool), each holding one keep-alive
//! connection (reconnecting after an error). A request's latency runs from sending
//! (including connecting, when a new connection is needed) to the last body byte.
//! Percentiles use the nearest-rank method over the latencies of requests that got a
//! complete response (any status); see [`percentile`]. 2xx and 3xx count as successes;
//! other statuses, timeouts and transport errors count as errors. A URL fails when its p95
//! exceeds the budget or its error rate exceeds the maximum; the run fails when any URL
//! fails. `--report FILE.html` also writes the run as a self-contained HTML page with plots
//! ([`html`], [`plot`]).

pub mod html;
mod plot;
mod report;

pub use report::{judge, percentile, BenchReport, UrlReport, Verdict};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HOST;
use http::HeaderMap;

use report::{Sample, Tally};

use crate::client::pool::{self, Job, PoolOptions};
use crate::client::{
    block_on, header_map, CommandStatus, Connection, HttpUrl, InvalidHeader, InvalidUrl,
};

/// Why a bench run could not start (request failures are measured, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A URL is malformed or not `http://`.
    #[error(transparent)]
    InvalidUrl(#[from] InvalidUrl),
    /// A request header name or value is not valid HTTP.
    #[error(transparent)]
    InvalidHeader(#[from] InvalidHeader),
    /// Options out of range (no URLs, zero iterations or concurrency, rate outside 0..=1).
    #[error("invalid bench options: {0}")]
    InvalidOptions(String),
    /// A percentage such as `1%` could not be parsed.
    #[error("invalid percentage {0:?}: expected e.g. \"1%\", \"0.5%\" or \"0.01\"")]
    InvalidPercent(String),
}

/// What to measure and the limits to judge it by.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `http://` URLs to measure, in order.
    pub urls: Vec<String>,
    /// Requests per URL (default 50, as the legacy tool).
    pub iterations: usize,
    /// Concurrent keep-alive connections per URL (default 1).
    pub concurrency: usize,
    /// A URL fails if its p95 latency exceeds this (default 500 ms).
    pub p95_budget: Duration,
    /// A URL fails if its error rate exceeds this fraction (default 0.01 = 1%).
    pub max_error_rate: f64,
    /// Per-request timeout, counted as an error when hit (default 10 s).
    pub timeout: Duration,
    /// Extra request headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            iterations: 50,
            concurrency: 1,
            p95_budget: Duration::from_millis(500),
            max_error_rate: 0.01,
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

/// Runs the benchmark: every URL in turn, then judges each and the whole run.
///
/// Fails only for unusable options (bad URL, header or limits); unreachable servers are
/// measured as errors and show up in the report.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    validate(opts)?;
    let targets = opts
        .urls
        .iter()
        .map(|u| HttpUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let headers = header_map(&opts.headers)?;
    let mut reports = Vec::with_capacity(targets.len());
    for (url, target) in opts.urls.iter().zip(targets) {
        let tally = measure(target, &headers, opts).await;
        reports.push(tally.finish(url, opts.p95_budget, opts.max_error_rate));
    }
    Ok(BenchReport::new(
        reports,
        opts.p95_budget,
        opts.max_error_rate,
    ))
}

/// Runs `sidecache bench`: measures `opts`, prints the report (as JSON when `json`), writes
/// the HTML report to `html_report` when given, and says whether the run passed. Unusable
/// options are reported on stderr as bad usage; a report that cannot be written fails.
pub fn command(opts: &BenchOptions, json: bool, html_report: Option<&Path>) -> CommandStatus {
    let started = SystemTime::now();
    let clock = Instant::now();
    match block_on(run(opts)) {
        Ok(Ok(report)) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            if let Some(path) = html_report {
                let times = html::RunTimes {
                    started: httpdate::fmt_http_date(started),
                    elapsed: clock.elapsed(),
                };
                if let Err(e) = std::fs::write(path, html::render(&report, opts, &times)) {
                    eprintln!("sidecache bench: cannot write {}: {e}", path.display());
                    return CommandStatus::Failed;
                }
                eprintln!("sidecache bench: report written to {}", path.display());
            }
            if report.verdict.is_pass() {
                CommandStatus::Succeeded
            } else {
                CommandStatus::Failed
            }
        }
        Ok(Err(e)) => {
            eprintln!("sidecache bench: {e}");
            CommandStatus::BadUsage
        }
        Err(e) => {
            eprintln!("sidecache bench: {e}");
            CommandStatus::Failed
        }
    }
}

/// Parses an error-rate limit: `"1%"` -> 0.01, `"0.5%"` -> 0.005, and a bare fraction
/// `"0.01"` -> 0.01. The result must lie in `0.0..=1.0`.
pub fn parse_percent(s: &str) -> Result<f64, BenchError> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| BenchError::InvalidPercent(s.to_owned()))?;
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(BenchError::InvalidPercent(s.to_owned()))
    }
}

fn validate(opts: &BenchOptions) -> Result<(), BenchError> {
    if opts.urls.is_empty() {
        return Err(BenchError::InvalidOptions("no URLs given".into()));
    }
    if opts.iterations == 0 {
        return Err(BenchError::InvalidOptions(
            "iterations must be at least 1".into(),
        ));
    }
    if opts.concurrency == 0 {
        return Err(BenchError::InvalidOptions(
            "concurrency must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&opts.max_error_rate) {
        return Err(BenchError::InvalidOptions(format!(
            "max error rate {} is outside 0..=1",
            opts.max_error_rate
        )));
    }
    if opts.timeout.is_zero() {
        return Err(BenchError::InvalidOptions(
            "timeout must be positive".into(),
        ));
    }
    Ok(())
}

/// Measures one URL: `iterations` requests over `concurrency` pool workers.
async fn measure(target: HttpUrl, headers: &HeaderMap, opts: &BenchOptions) -> Tally {
    let mut headers = headers.clone();
    if !headers.contains_key(HOST) {
        headers.insert(HOST, target.host);
    }
    let pool_options = PoolOptions {
        addr: Arc::from(target.connect),
        concurrency: opts.concurrency,
        rate_per_second: None,
    };
    let job = BenchRequest {
        path: target.path,
        headers,
        timeout: opts.timeout,
    };
    let mut tally = Tally::default();
    let failed_workers = pool::run(
        &pool_options,
        vec![(); opts.iterations].into(),
        job,
        |_, sample| tally.record(sample),
    )
    .await;
    for err in failed_workers {
        // A worker panicked; count it rather than lose it.
        *tally
            .errors_by_kind
            .entry(format!("worker: {err}"))
            .or_insert(0) += 1;
    }
    tally
}

/// The one request a URL's measurement repeats, timed from sending (including connecting,
/// when a new connection is needed) to the last body byte.
struct BenchRequest {
    path: String,
    headers: HeaderMap,
    timeout: Duration,
}

impl Job for BenchRequest {
    type Item = ();
    type Output = Sample;

    async fn run(&self, conn: &mut Connection, _: &()) -> Sample {
        let started = Instant::now();
        let result = conn.get(&self.path, &self.headers, self.timeout).await;
        Sample {
            latency: started.elapsed(),
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parsing() {
        assert_eq!(parse_percent("1%").unwrap(), 0.01);
        assert_eq!(parse_percent("0.5%").unwrap(), 0.005);
        assert_eq!(parse_percent(" 100 % ").unwrap(), 1.0);
        assert_eq!(parse_percent("0.01").unwrap(), 0.01);
        assert_eq!(parse_percent("0").unwrap(), 0.0);
        for bad in ["", "%", "abc", "5", "101%", "-1%", "NaN", "inf%"] {
            assert!(
                matches!(parse_percent(bad), Err(BenchError::InvalidPercent(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_are_validated() {
        let base = BenchOptions {
            urls: vec!["http://127.0.0.1:1/".into()],
            ..BenchOptions::default()
        };
        assert!(validate(&base).is_ok());
        for opts in [
            BenchOptions {
                urls: vec![],
                ..base.clone()
            },
            BenchOptions {
                iterations: 0,
                ..base.clone()
            },
            BenchOptions {
                concurrency: 0,
                ..base.clone()
            },
            BenchOptions {
                max_error_rate: 2.0,
                ..base.clone()
            },
        ] {
            assert!(matches!(
                validate(&opts),
                Err(BenchError::InvalidOptions(_))
            ));
        }
        assert!(header_map(&[("bad name".into(), "v".into())]).is_err());
    }
}
