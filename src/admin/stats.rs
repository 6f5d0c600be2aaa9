//! `GET /admin/stats`: what the status page shows, as versioned JSON for admin dashboards
//! (schema: `docs/stats-api.md`).
//!
//! The since-start figures are read from the Prometheus metrics `/metrics` exports (the same
//! counters and histograms), so they match a scrape taken at the same moment; the 1 min and
//! 5 min figures come from the in-memory rings of [`window`].

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use serde_json::{json, Map, Value};

use crate::cache::status::CacheOutcome;
use crate::config::L2Mode;
use crate::live::Live;
use crate::telemetry::metrics::{metrics, L2Op, UpstreamErrorKind, WarmUrlResult, LATENCY_BUCKETS};
use crate::telemetry::recent::{recent, unix_now};
use crate::telemetry::window::{self, WindowSum, BUCKETS};

/// The schema version of the JSON; bumped only for incompatible changes.
pub const STATS_VERSION: u32 = 1;

/// The windows reported, in seconds, with their JSON names.
const WINDOWS: [(&str, u64); 2] = [("1m", 60), ("5m", window::WINDOW_SECONDS)];

/// How long an upstream reachability probe is reused.
const PROBE_REUSE: Duration = Duration::from_secs(5);

/// The quantiles reported.
const QUANTILES: [(&str, f64); 3] = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)];

/// The stats document, now.
pub async fn document(live: &Live) -> Value {
    let snapshot = live.snapshot();
    let config = &snapshot.config;
    let router = &snapshot.router;
    let uptime = live.uptime_secs();
    let now_second = window::now_second();
    let since_start = since_start_by_route();

    // Routes in config order, then the labels of unmatched and locally answered requests.
    let mut labels: Vec<(&str, &window::RouteWindow)> = router
        .routes()
        .iter()
        .map(|r| (r.name.as_str(), r.metrics.window()))
        .collect();
    labels.push(("default", router.default_metrics().window()));
    labels.push(("health", router.health_metrics().window()));

    let mut totals: Vec<WindowSum> = vec![WindowSum::default(); WINDOWS.len() + 1];
    let mut routes = Vec::with_capacity(labels.len());
    for (name, ring) in labels {
        let mut figures = Map::new();
        for (i, (label, seconds)) in WINDOWS.iter().enumerate() {
            let sum = ring.sum(now_second, *seconds);
            totals[i].add(&sum);
            figures.insert(
                (*label).into(),
                figures_json(&sum, covered(*seconds, uptime)),
            );
        }
        let start = since_start.get(name).cloned().unwrap_or_default();
        totals[WINDOWS.len()].add(&start);
        figures.insert("since_start".into(), figures_json(&start, uptime.max(1)));
        routes.push(json!({"route": name, "figures": figures}));
    }
    let mut total_figures = Map::new();
    for (i, (label, seconds)) in WINDOWS.iter().enumerate() {
        total_figures.insert(
            (*label).into(),
            figures_json(&totals[i], covered(*seconds, uptime)),
        );
    }
    total_figures.insert(
        "since_start".into(),
        figures_json(&totals[WINDOWS.len()], uptime.max(1)),
    );

    let loaded_at = recent().config_loaded_at();
    let now = unix_now();
    let m = metrics();
    json!({
        "version": STATS_VERSION,
        "generated_at": now,
        "sidecache_version": env!("CARGO_PKG_VERSION"),
        "instance": live.purges.instance_id(),
        "uptime_seconds": uptime,
        "config": {
            "source": config.source.as_ref().map(|p| p.display().to_string()),
            "loaded_at": loaded_at,
            "age_seconds": loaded_at.map(|at| (now - at).max(0.0).floor()),
            "last_reload": recent().last_reload(),
        },
        "totals": total_figures,
        "routes": routes,
        "l1": {
            "bytes": m.l1_bytes.get(),
            "capacity_bytes": m.l1_capacity_bytes.get(),
            "entries": m.l1_entries.get(),
        },
        "l2": l2_json(live),
        "purges": recent().purges(),
        "purge_counts": {
            "hard": counter_total(&m.purges),
            "soft": counter_total(&m.soft_purges),
        },
        "warm": {
            "every_seconds": config.warm.every.map(|d| d.as_secs_f64()),
            "jitter_seconds": config.warm.jitter.as_secs_f64(),
            "last_success_at": Some(m.warm_last_success.get()).filter(|t| *t > 0.0),
            "urls_total": WarmUrlResult::ALL.iter().map(|r| {
                (r.label().to_owned(), json!(m.warm_urls.with_label_values(&[r.label()]).get()))
            }).collect::<Map<String, Value>>(),
            "runs": recent().warm_runs(),
        },
        "upstreams": upstreams_json(live).await,
    })
}

/// Seconds a window of `seconds` really covers after `uptime` seconds (at least 1).
fn covered(seconds: u64, uptime: u64) -> u64 {
    seconds.min(uptime + 1).max(1)
}

/// The figures of one window (or since start) over `seconds` seconds.
/// The sum of every series of a counter family.
fn counter_total(family: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|c| c.get_counter().value() as u64)
        .sum()
}

fn figures_json(sum: &WindowSum, seconds: u64) -> Value {
    let requests = sum.requests();
    let outcomes: Map<String, Value> = CacheOutcome::ALL
        .iter()
        .map(|&o| (o.label().to_owned(), json!(sum.count(o))))
        .collect();
    let latency: Map<String, Value> = QUANTILES
        .iter()
        .map(|(name, q)| ((*name).to_owned(), json!(sum.quantile(*q))))
        .collect();
    json!({
        "seconds": seconds,
        "requests": requests,
        "rate_per_second": requests as f64 / seconds as f64,
        "lookups": sum.lookups(),
        "hit_ratio": sum.hit_ratio(),
        "tiers": {
            "l1": sum.share(CacheOutcome::HitL1),
            "l2": sum.share(CacheOutcome::HitL2),
        },
        "outcomes": outcomes,
        "errors_5xx": sum.server_errors,
        "latency_seconds": latency,
    })
}

/// Label `name` of a Prometheus sample.
fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Adds a cumulative Prometheus histogram into per-bucket `counts` over [`LATENCY_BUCKETS`]
/// and `+Inf`.
fn add_histogram(counts: &mut [u64; BUCKETS], h: &prometheus::proto::Histogram) {
    let mut below = 0u64;
    for (i, b) in h
        .get_bucket()
        .iter()
        .enumerate()
        .take(LATENCY_BUCKETS.len())
    {
        let cumulative = b.cumulative_count();
        counts[i] += cumulative.saturating_sub(below);
        below = cumulative;
    }
    counts[BUCKETS - 1] += h.get_sample_count().saturating_sub(below);
}

/// Since-start figures per route label, from `sidecache_requests_total` and
/// `sidecache_request_duration_seconds`.
fn since_start_by_route() -> BTreeMap<String, WindowSum> {
    let m = metrics();
    let mut by_route: BTreeMap<String, WindowSum> = BTreeMap::new();
    for family in m.requests_total.collect() {
        for sample in family.get_metric() {
            let Some(outcome) = CacheOutcome::ALL
                .iter()
                .find(|o| o.label() == label(sample, "cache"))
            else {
                continue;
            };
            let n = sample.get_counter().value() as u64;
            let sum = by_route
                .entry(label(sample, "route").to_owned())
                .or_default();
            sum.outcomes[outcome.index()] += n;
            if label(sample, "status_class") == "5xx" {
                sum.server_errors += n;
            }
        }
    }
    for family in m.request_duration.collect() {
        for sample in family.get_metric() {
            let sum = by_route
                .entry(label(sample, "route").to_owned())
                .or_default();
            add_histogram(&mut sum.latency, sample.get_histogram());
        }
    }
    by_route
}

/// Since-start quantiles of one Redis operation's duration.
fn l2_latency(op: L2Op) -> Value {
    let mut counts = [0u64; BUCKETS];
    for family in metrics().l2_duration.collect() {
        for sample in family.get_metric() {
            if label(sample, "op") == op.label() {
                add_histogram(&mut counts, sample.get_histogram());
            }
        }
    }
    QUANTILES
        .iter()
        .map(|(name, q)| ((*name).to_owned(), json!(window::quantile(&counts, *q))))
        .collect::<Map<String, Value>>()
        .into()
}

fn breaker_state(closed: bool) -> &'static str {
    if closed {
        "closed"
    } else {
        "open"
    }
}

fn l2_json(live: &Live) -> Value {
    let Some(l2) = live.cache.l2() else {
        return json!({"configured": false});
    };
    let snapshot = live.snapshot();
    let Some(cfg) = snapshot.config.cache.l2.as_ref() else {
        return json!({"configured": false});
    };
    json!({
        "configured": true,
        "mode": cfg.mode.label(),
        // Cluster: how many seed nodes are configured; sentinel: the master followed and how
        // many sentinels report it. Addresses are not shown (credentials live in the URLs).
        "cluster_seeds": (cfg.mode == L2Mode::Cluster).then_some(cfg.nodes.len()),
        "sentinel": (cfg.mode == L2Mode::Sentinel).then(|| json!({
            "master_name": cfg.master_name,
            "sentinels": cfg.sentinels.len(),
        })),
        "fill_lock": cfg.fill_lock,
        "up": metrics().l2_up.get() == 1,
        // What the last connection found: name, version, and whether sidecache runs on it.
        "server": l2.server().map(|s| json!({
            "name": s.name.label(),
            "version": s.version.to_string(),
            "supported": s.supported(),
        })),
        "breaker": breaker_state(l2.breaker().is_closed()),
        "purge_breaker": breaker_state(l2.purge_breaker().is_closed()),
        "latency_seconds": {"get": l2_latency(L2Op::Get), "set": l2_latency(L2Op::Set)},
    })
}

/// One reachability probe of every upstream: when, and by upstream name.
type Probes = (Instant, BTreeMap<String, bool>);

/// The last probe.
static PROBES: LazyLock<Mutex<Option<Probes>>> = LazyLock::new(|| Mutex::new(None));

/// Whether each upstream accepts a TCP connection within its connect timeout, probed at most
/// every [`PROBE_REUSE`] however often the stats are read.
async fn reachability(live: &Live) -> BTreeMap<String, bool> {
    if let Ok(cached) = PROBES.lock() {
        if let Some((at, probes)) = cached.as_ref() {
            if at.elapsed() < PROBE_REUSE {
                return probes.clone();
            }
        }
    }
    let snapshot = live.snapshot();
    let checks: Vec<_> = snapshot
        .router
        .upstreams()
        .iter()
        .map(|u| {
            let (name, address, timeout) = (
                u.config.name.clone(),
                u.config.address.clone(),
                u.config.connect_timeout,
            );
            tokio::spawn(async move {
                let up = crate::health::tcp_connects(&address, timeout).await;
                (name, up)
            })
        })
        .collect();
    let mut probes = BTreeMap::new();
    for check in checks {
        if let Ok((name, up)) = check.await {
            probes.insert(name, up);
        }
    }
    if let Ok(mut cached) = PROBES.lock() {
        *cached = Some((Instant::now(), probes.clone()));
    }
    probes
}

async fn upstreams_json(live: &Live) -> Value {
    {
        let reachable = reachability(live).await;
        let snapshot = live.snapshot();
        let m = metrics();
        let mut latency_by_upstream: BTreeMap<String, [u64; BUCKETS]> = BTreeMap::new();
        for family in m.upstream_duration.collect() {
            for sample in family.get_metric() {
                let counts = latency_by_upstream
                    .entry(label(sample, "upstream").to_owned())
                    .or_insert([0; BUCKETS]);
                add_histogram(counts, sample.get_histogram());
            }
        }
        snapshot
            .router
            .upstreams()
            .iter()
            .map(|u| {
                let name = &u.config.name;
                let errors: Map<String, Value> = UpstreamErrorKind::ALL
                    .iter()
                    .map(|k| {
                        let n = m
                            .upstream_errors
                            .with_label_values(&[name, k.label()])
                            .get();
                        (k.label().to_owned(), json!(n))
                    })
                    .collect();
                let counts = latency_by_upstream
                    .get(name)
                    .copied()
                    .unwrap_or([0; BUCKETS]);
                let latency: Map<String, Value> = QUANTILES
                    .iter()
                    .map(|(q_name, q)| ((*q_name).to_owned(), json!(window::quantile(&counts, *q))))
                    .collect();
                json!({
                    "name": name,
                    "address": u.config.address,
                    "reachable": reachable.get(name).copied(),
                    "errors_total": errors,
                    "latency_seconds": latency,
                })
            })
            .collect::<Vec<Value>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cumulative_histogram_becomes_per_bucket_counts() {
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("t", "t").buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap();
        for s in [0.00005, 0.002, 0.002, 0.08, 20.0] {
            h.observe(s);
        }
        let family = h.collect();
        let mut counts = [0u64; BUCKETS];
        add_histogram(&mut counts, family[0].get_metric()[0].get_histogram());
        assert_eq!(counts[0], 1);
        assert_eq!(counts[window::bucket_index(Duration::from_millis(2))], 2);
        assert_eq!(counts[window::bucket_index(Duration::from_millis(80))], 1);
        assert_eq!(counts[BUCKETS - 1], 1);
        assert_eq!(counts.iter().sum::<u64>(), 5);
    }

    #[test]
    fn windows_cover_no_more_than_the_uptime() {
        assert_eq!(covered(60, 5), 6);
        assert_eq!(covered(60, 600), 60);
        assert_eq!(covered(300, 0), 1);
    }
}
