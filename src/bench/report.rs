//! Statistics, verdicts and rendering of a `sidecache bench` run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cache::status::CacheOutcome;
use crate::client::{ClientError, GetResponse};

/// Whether a URL (or the whole run) met its budget, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within the p95 budget and the maximum error rate.
    Pass,
    /// Over budget; one human-readable reason per violated limit.
    Fail(Vec<String>),
}

impl Verdict {
    /// True for [`Verdict::Pass`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// The failure reasons (empty for a pass).
    pub fn reasons(&self) -> &[String] {
        match self {
            Verdict::Pass => &[],
            Verdict::Fail(reasons) => reasons,
        }
    }

    /// `PASS` or `FAIL`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
        }
    }
}

/// Measurements and verdict for one URL.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlReport {
    /// The URL as given.
    pub url: String,
    /// Requests attempted.
    pub requests: u64,
    /// Responses with a 2xx or 3xx status.
    pub successes: u64,
    /// Everything else: 4xx/5xx statuses, timeouts, connection and protocol errors.
    pub errors: u64,
    /// `successes / requests` (0.0 to 1.0).
    pub success_rate: f64,
    /// Fastest complete response.
    pub min: Duration,
    /// Slowest complete response.
    pub max: Duration,
    /// Mean over complete responses.
    pub avg: Duration,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 95th percentile (nearest rank).
    pub p95: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Count of each `X-Cache` response header value seen; `"none"` when absent.
    pub x_cache: BTreeMap<String, u64>,
    /// Count of each kind of error (`"status 503"`, `"timeout"`, `"connect: ..."`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Pass/fail against the run's limits.
    pub verdict: Verdict,
    /// The latency of every complete response, ascending (what the plots are drawn from).
    pub latencies: Vec<Duration>,
}

/// The result of a whole `sidecache bench` run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// One report per URL, in the order given.
    pub urls: Vec<UrlReport>,
    /// Fail if any URL failed (reasons are prefixed with the URL).
    pub verdict: Verdict,
    /// The p95 budget the run was judged against.
    pub p95_budget: Duration,
    /// The maximum error rate the run was judged against (0.0 to 1.0).
    pub max_error_rate: f64,
}

/// The nearest-rank percentile `p` (0 to 100) of ascending `sorted` samples: the
/// smallest sample such that at least `p`% of samples are <= it, i.e. the sample at
/// 1-based rank `ceil(p / 100 * n)` (clamped to `1..=n`). Zero for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Judges one URL: fails when `p95` exceeds `budget` or the error rate exceeds
/// `max_error_rate`.
pub fn judge(p95: Duration, error_rate: f64, budget: Duration, max_error_rate: f64) -> Verdict {
    let mut reasons = Vec::new();
    if p95 > budget {
        reasons.push(format!(
            "p95 {} ms exceeds budget {} ms",
            ms(p95),
            ms(budget)
        ));
    }
    if error_rate > max_error_rate {
        reasons.push(format!(
            "error rate {:.2}% exceeds max {:.2}%",
            error_rate * 100.0,
            max_error_rate * 100.0
        ));
    }
    if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(reasons)
    }
}

/// Raw observations of one URL, turned into a [`UrlReport`] by [`Tally::finish`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) successes: u64,
    /// Latencies of requests that got a complete response (any status).
    pub(crate) latencies: Vec<Duration>,
    pub(crate) x_cache: BTreeMap<String, u64>,
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
}

/// One timed request: how long it took and what it got.
#[derive(Debug)]
pub(crate) struct Sample {
    /// From sending (connecting included) to the last body byte, or to the error.
    pub(crate) latency: Duration,
    pub(crate) result: Result<GetResponse, ClientError>,
}

impl Tally {
    /// Counts one request: its latency when it got a complete response, its `X-Cache`
    /// value (see [`x_cache_label`]) and, unless 2xx/3xx, its error kind.
    pub(crate) fn record(&mut self, sample: Sample) {
        self.requests += 1;
        let kind = match sample.result {
            Ok(GetResponse { status, x_cache }) => {
                self.latencies.push(sample.latency);
                *self
                    .x_cache
                    .entry(x_cache_label(x_cache.as_deref()))
                    .or_insert(0) += 1;
                if (200..400).contains(&status) {
                    self.successes += 1;
                    return;
                }
                format!("status {status}")
            }
            Err(e) => e.to_string(),
        };
        *self.errors_by_kind.entry(kind).or_insert(0) += 1;
    }

    pub(crate) fn finish(mut self, url: &str, budget: Duration, max_error_rate: f64) -> UrlReport {
        self.latencies.sort_unstable();
        let lat = &self.latencies;
        let errors = self.requests - self.successes;
        let (success_rate, error_rate) = if self.requests == 0 {
            (0.0, 1.0)
        } else {
            let n = self.requests as f64;
            (self.successes as f64 / n, errors as f64 / n)
        };
        let avg = if lat.is_empty() {
            Duration::ZERO
        } else {
            lat.iter().sum::<Duration>() / lat.len() as u32
        };
        let p95 = percentile(lat, 95.0);
        UrlReport {
            url: url.to_owned(),
            requests: self.requests,
            successes: self.successes,
            errors,
            success_rate,
            min: lat.first().copied().unwrap_or_default(),
            max: lat.last().copied().unwrap_or_default(),
            avg,
            p50: percentile(lat, 50.0),
            p95,
            p99: percentile(lat, 99.0),
            x_cache: self.x_cache,
            errors_by_kind: self.errors_by_kind,
            verdict: judge(p95, error_rate, budget, max_error_rate),
            latencies: self.latencies,
        }
    }
}

impl BenchReport {
    /// Combines per-URL reports; the run fails if any URL failed.
    pub fn new(urls: Vec<UrlReport>, p95_budget: Duration, max_error_rate: f64) -> Self {
        let reasons: Vec<String> = urls
            .iter()
            .flat_map(|u| {
                u.verdict
                    .reasons()
                    .iter()
                    .map(|r| format!("{}: {r}", u.url))
            })
            .collect();
        let verdict = if reasons.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(reasons)
        };
        Self {
            urls,
            verdict,
            p95_budget,
            max_error_rate,
        }
    }

    /// Process exit code for the CLI: 0 when the run passed, 1 when it failed.
    pub fn exit_code(&self) -> i32 {
        if self.verdict.is_pass() {
            0
        } else {
            1
        }
    }

    /// A human-readable report in the style of the legacy `benchmarkProduction.js`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sidecache bench: {} URL(s), p95 budget {} ms, max error rate {:.2}%",
            self.urls.len(),
            ms(self.p95_budget),
            self.max_error_rate * 100.0
        );
        for u in &self.urls {
            let _ = writeln!(out, "\n{}", u.url);
            let _ = writeln!(
                out,
                "  Success rate: {:.2}% ({}/{})",
                u.success_rate * 100.0,
                u.successes,
                u.requests
            );
            let _ = writeln!(
                out,
                "  Latency (ms): min {}  avg {}  p50 {}  p95 {}  p99 {}  max {}",
                ms(u.min),
                ms(u.avg),
                ms(u.p50),
                ms(u.p95),
                ms(u.p99),
                ms(u.max)
            );
            let _ = writeln!(out, "  X-Cache:      {}", mix(&u.x_cache));
            if !u.errors_by_kind.is_empty() {
                let _ = writeln!(out, "  Errors:       {}", mix(&u.errors_by_kind));
            }
            match &u.verdict {
                Verdict::Pass => {
                    let _ = writeln!(out, "  Verdict:      PASS");
                }
                Verdict::Fail(reasons) => {
                    let _ = writeln!(out, "  Verdict:      FAIL ({})", reasons.join("; "));
                }
            }
        }
        let passed = self.urls.iter().filter(|u| u.verdict.is_pass()).count();
        let _ = writeln!(
            out,
            "\nOverall: {} ({passed}/{} URLs within budget)",
            self.verdict.label(),
            self.urls.len()
        );
        out
    }

    /// The report as JSON; durations are milliseconds rounded to 3 decimals.
    pub fn to_json(&self) -> Value {
        let urls: Vec<Value> = self
            .urls
            .iter()
            .map(|u| {
                json!({
                    "url": u.url,
                    "requests": u.requests,
                    "successes": u.successes,
                    "errors": u.errors,
                    "success_rate": u.success_rate,
                    "latency_ms": {
                        "min": ms_f64(u.min),
                        "max": ms_f64(u.max),
                        "avg": ms_f64(u.avg),
                        "p50": ms_f64(u.p50),
                        "p95": ms_f64(u.p95),
                        "p99": ms_f64(u.p99),
                    },
                    "x_cache": u.x_cache,
                    "errors_by_kind": u.errors_by_kind,
                    "verdict": u.verdict.label().to_lowercase(),
                    "reasons": u.verdict.reasons(),
                })
            })
            .collect();
        json!({
            "verdict": self.verdict.label().to_lowercase(),
            "reasons": self.verdict.reasons(),
            "p95_budget_ms": ms_f64(self.p95_budget),
            "max_error_rate": self.max_error_rate,
            "urls": urls,
        })
    }
}

/// What an `X-Cache` value is counted under: the [`CacheOutcome`]'s own spelling when it
/// names one (`hit-l1 ` counts as `HIT-L1`), the value as received otherwise, and `none`
/// when the response had no `X-Cache`.
fn x_cache_label(value: Option<&str>) -> String {
    match value {
        None => "none".to_owned(),
        Some(v) => CacheOutcome::from_x_cache(v)
            .and_then(CacheOutcome::x_cache)
            .unwrap_or(v)
            .to_owned(),
    }
}

/// Milliseconds rounded to 3 decimals, as a JSON-friendly number.
fn ms_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// Milliseconds with 3 decimals, for text.
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn mix(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "-".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 95.0), Duration::from_millis(95));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
        // 50 samples (the seed's default): p95 is rank ceil(47.5) = 48.
        let s = ms_list(&(1..=50).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 95.0), Duration::from_millis(48));
        assert_eq!(percentile(&ms_list(&[7]), 99.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 95.0), Duration::ZERO);
    }

    #[test]
    fn verdict_checks_budget_and_error_rate() {
        let budget = Duration::from_millis(500);
        assert_eq!(
            judge(Duration::from_millis(500), 0.01, budget, 0.01),
            Verdict::Pass
        );
        let v = judge(Duration::from_millis(501), 0.0, budget, 0.01);
        assert!(v.reasons()[0].contains("p95 501.000 ms exceeds budget 500.000 ms"));
        let v = judge(Duration::from_millis(1), 0.02, budget, 0.01);
        assert_eq!(v.reasons(), ["error rate 2.00% exceeds max 1.00%"]);
        assert_eq!(
            judge(Duration::from_secs(1), 0.5, budget, 0.01)
                .reasons()
                .len(),
            2
        );
    }

    #[test]
    fn tally_and_report_render_and_serialise() {
        let mut t = Tally {
            requests: 4,
            successes: 3,
            latencies: ms_list(&[30, 10, 20, 40]),
            ..Tally::default()
        };
        t.x_cache.insert("HIT".into(), 3);
        t.errors_by_kind.insert("status 503".into(), 1);
        let u = t.finish("http://x/a", Duration::from_millis(100), 0.01);
        assert_eq!(
            (u.min, u.max, u.avg),
            (ms_list(&[10])[0], ms_list(&[40])[0], ms_list(&[25])[0])
        );
        assert_eq!(u.errors, 1);
        assert!(!u.verdict.is_pass(), "25% errors fails");

        let r = BenchReport::new(vec![u], Duration::from_millis(100), 0.01);
        assert_eq!(r.exit_code(), 1);
        assert!(r.verdict.reasons()[0].starts_with("http://x/a: error rate"));
        let text = r.render_text();
        assert!(text.contains("Success rate: 75.00% (3/4)"), "{text}");
        assert!(text.contains("X-Cache:      HIT x3"), "{text}");
        assert!(text.contains("Overall: FAIL (0/1"), "{text}");
        let j = r.to_json();
        assert_eq!(j["verdict"], "fail");
        assert_eq!(j["urls"][0]["latency_ms"]["avg"], 25.0);
        assert_eq!(j["urls"][0]["x_cache"]["HIT"], 3);
        assert_eq!(ms_f64(Duration::from_micros(1_234_567)), 1234.567);
        assert_eq!(ms_f64(Duration::from_nanos(12_345_678)), 12.346);

        let ok = BenchReport::new(vec![], Duration::from_millis(1), 0.0);
        assert_eq!(ok.exit_code(), 0);
    }

    #[test]
    fn samples_count_x_cache_by_outcome_and_keep_unknown_and_missing_values() {
        let mut t = Tally::default();
        let answer = |status: u16, x_cache: Option<&str>| Sample {
            latency: Duration::from_millis(5),
            result: Ok(GetResponse {
                status,
                x_cache: x_cache.map(str::to_owned),
            }),
        };
        for x_cache in [
            Some("HIT-L1"),
            Some(" hit-l1"),
            Some("Miss"),
            Some("warm?"),
            None,
        ] {
            t.record(answer(200, x_cache));
        }
        t.record(answer(503, Some("BYPASS")));
        t.record(Sample {
            latency: Duration::from_millis(100),
            result: Err(ClientError::Timeout),
        });
        let u = t.finish("http://x/a", Duration::from_secs(1), 1.0);
        let x_cache: Vec<_> = u.x_cache.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            x_cache,
            [
                ("BYPASS", 1),
                ("HIT-L1", 2),
                ("MISS", 1),
                ("none", 1),
                ("warm?", 1)
            ]
        );
        assert_eq!((u.requests, u.successes, u.errors), (7, 5, 2));
        let errors: Vec<_> = u
            .errors_by_kind
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(errors, [("status 503", 1), ("timeout", 1)]);
        assert_eq!(
            u.max,
            Duration::from_millis(5),
            "only complete answers are timed"
        );
    }
}
