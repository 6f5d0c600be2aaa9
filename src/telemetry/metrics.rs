//! Prometheus metrics with pre-resolved label handles.
//!
//! Every metric sidecache exports is declared here, registered once in the default registry
//! (so `prometheus::gather()` and pingora's helpers see them), and recorded through typed
//! methods that take enums, never strings. Label values are bounded: `route` is a config
//! route name (or `default` / `health`), `upstream` a configured upstream name.
//!
//! Hot-path recording is lock- and allocation-free after the first use of a label
//! combination: [`RouteMetrics`] holds `OnceLock` slots for every (method, status class,
//! outcome) combination and resolves each slot once.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    register_gauge, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Gauge, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

use crate::outcome::CacheOutcome;

pub use super::labels::*;
pub use super::window::LATENCY_BUCKETS;
use super::window::{self, RouteWindow};

/// Warming pass duration buckets in seconds, 100 ms to 30 min.
pub const WARM_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0];

/// Tunnel duration buckets in seconds, 1 s to 1 day.
pub const TUNNEL_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
];
/// All process-wide metric families. Get it with [`metrics()`].
pub struct Metrics {
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub l2_operations: IntCounterVec,
    pub l2_duration: HistogramVec,
    pub l2_up: IntGauge,
    pub l1_entries: IntGauge,
    pub l1_bytes: IntGauge,
    pub l1_capacity_bytes: IntGauge,
    pub l1_evictions: IntCounterVec,
    pub coalesced_requests: IntCounterVec,
    pub cache_lock_timeouts: IntCounter,
    pub corrupt_entries: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub purges: IntCounterVec,
    pub soft_purges: IntCounterVec,
    pub surrogate_keys_dropped: IntCounter,
    pub purge_broadcasts: IntCounterVec,
    pub pubsub_gaps: IntCounter,
    pub purge_messages_dropped: IntCounterVec,
    pub purge_backlog: IntGauge,
    pub purge_retries: IntCounter,
    pub purges_coalesced: IntCounter,
    pub purge_backlog_refusals: IntCounter,
    pub purges_caught_up: IntCounter,
    pub purge_log_gaps: IntCounter,
    pub stores_refused: IntCounterVec,
    pub warm_urls: IntCounterVec,
    pub warm_duration: HistogramVec,
    pub warm_last_success: Gauge,
    pub warm_runs: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounterVec,
    pub requests_refused: IntCounterVec,
    pub tunnels_open: IntGauge,
    pub tunnels: IntCounter,
    pub tunnel_bytes: IntCounterVec,
    pub tunnel_duration: Histogram,
    /// Every family above, as registered (see [`families`]).
    families: Vec<Family>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut declared = Vec::new();
    let m = Metrics {
        requests_total: noted(&mut declared, register_int_counter_vec!(
            "sidecache_requests_total",
            "Downstream requests by route, method, status class and cache outcome.",
            &["route", "method", "status_class", "cache"]
        )),
        request_duration: noted(&mut declared, register_histogram_vec!(
            "sidecache_request_duration_seconds",
            "Downstream request duration, full response, by route and cache outcome.",
            &["route", "cache"],
            LATENCY_BUCKETS.to_vec()
        )),
        upstream_duration: noted(&mut declared, register_histogram_vec!(
            "sidecache_upstream_duration_seconds",
            "Time from sending the upstream request to its response header.",
            &["upstream", "route"],
            LATENCY_BUCKETS.to_vec()
        )),
        upstream_errors: noted(&mut declared, register_int_counter_vec!(
            "sidecache_upstream_errors_total",
            "Upstream failures by upstream and kind (connect, timeout, reset, status_5xx).",
            &["upstream", "kind"]
        )),
        l2_operations: noted(&mut declared, register_int_counter_vec!(
            "sidecache_l2_operations_total",
            "Redis operations by op and result.",
            &["op", "result"]
        )),
        l2_duration: noted(&mut declared, register_histogram_vec!(
            "sidecache_l2_duration_seconds",
            "Redis operation duration by op.",
            &["op"],
            LATENCY_BUCKETS.to_vec()
        )),
        l2_up: noted(&mut declared, register_int_gauge!(
            "sidecache_l2_up",
            "1 when Redis is usable (circuit breaker closed), else 0."
        )),
        l1_entries: noted(&mut declared, register_int_gauge!("sidecache_l1_entries", "Entries in the L1 cache.")),
        l1_bytes: noted(&mut declared, register_int_gauge!("sidecache_l1_bytes", "Bytes held by the L1 cache.")),
        l1_capacity_bytes: noted(&mut declared, register_int_gauge!(
            "sidecache_l1_capacity_bytes",
            "Configured byte budget of the L1 cache."
        )),
        l1_evictions: noted(&mut declared, register_int_counter_vec!(
            "sidecache_l1_evictions_total",
            "Entries removed from L1 by cause.",
            &["cause"]
        )),
        coalesced_requests: noted(&mut declared, register_int_counter_vec!(
            "sidecache_coalesced_requests_total",
            "Requests that waited on another request's fetch of the same key.",
            &["route"]
        )),
        cache_lock_timeouts: noted(&mut declared, register_int_counter!(
            "sidecache_cache_lock_timeouts_total",
            "Requests that gave up waiting on another's fetch and went to the origin."
        )),
        corrupt_entries: noted(&mut declared, register_int_counter_vec!(
            "sidecache_corrupt_entries_total",
            "Stored entries that failed to decode and were treated as misses.",
            &["tier"]
        )),
        config_reloads: noted(&mut declared, register_int_counter_vec!(
            "sidecache_config_reloads_total",
            "Config reloads by result.",
            &["result"]
        )),
        build_info: noted(&mut declared, register_int_gauge_vec!(
            "sidecache_build_info",
            "Always 1; the version label says which build runs.",
            &["version"]
        )),
        purges: noted(&mut declared, register_int_counter_vec!(
            "sidecache_purges_total",
            "Purges applied by kind (url, prefix, tag) and source (admin, cli, write = invalidation after a write, remote = received from another instance).",
            &["kind", "source"]
        )),
        soft_purges: noted(&mut declared, register_int_counter_vec!(
            "sidecache_soft_purges_total",
            "Soft purges applied (entries marked stale and refreshed in the background, not removed), by kind and source; sidecache_purges_total counts the hard ones.",
            &["kind", "source"]
        )),
        surrogate_keys_dropped: noted(&mut declared, register_int_counter!(
            "sidecache_surrogate_keys_dropped_total",
            "Surrogate keys an origin sent that did not tag the entry: past 64 per response, longer than 128 bytes, or not visible ASCII."
        )),
        purge_broadcasts: noted(&mut declared, register_int_counter_vec!(
            "sidecache_purge_broadcasts_total",
            "Purges published to the other instances, by result.",
            &["result"]
        )),
        pubsub_gaps: noted(&mut declared, register_int_counter!(
            "sidecache_pubsub_gaps_total",
            "Purge subscriptions re-established after a period without one (each clears L1)."
        )),
        purge_messages_dropped: noted(&mut declared, register_int_counter_vec!(
            "sidecache_purge_messages_dropped_total",
            "Received purge broadcasts dropped by reason (malformed; unsigned or bad_signature when cache.l2.channel_secret is set).",
            &["reason"]
        )),
        purge_backlog: noted(&mut declared, register_int_gauge!(
            "sidecache_purge_backlog",
            "Purges whose Redis part is waiting (Redis slow or unreachable), retried until they land; their targets are not served from Redis meanwhile."
        )),
        purge_retries: noted(&mut declared, register_int_counter!(
            "sidecache_purge_retries_total",
            "Failed attempts at a purge's Redis part (each is retried until it lands)."
        )),
        purges_coalesced: noted(&mut declared, register_int_counter!(
            "sidecache_purges_coalesced_total",
            "Write purges that took the place of a waiting purge of the same target."
        )),
        purge_backlog_refusals: noted(&mut declared, register_int_counter!(
            "sidecache_purge_backlog_refusals_total",
            "Writes to cacheable paths refused (503) because the purge backlog was full."
        )),
        purges_caught_up: noted(&mut declared, register_int_counter!(
            "sidecache_purges_caught_up_total",
            "Purges of other instances applied from the finished-purge log because their broadcast never arrived."
        )),
        purge_log_gaps: noted(&mut declared, register_int_counter!(
            "sidecache_purge_log_gaps_total",
            "Readings of the finished-purge log that found it restarted or trimmed past this instance (each clears L1)."
        )),
        stores_refused: noted(&mut declared, register_int_counter_vec!(
            "sidecache_stores_refused_total",
            "Entries not stored because a purge won over the work that fetched them, by tier and reason (purged, forgotten = the purge record no longer reached back, unknown = no start generation).",
            &["tier", "reason"]
        )),
        warm_urls: noted(&mut declared, register_int_counter_vec!(
            "sidecache_warm_urls_total",
            "URLs requested by warming passes inside this process, by result (fetched, already_warm, failed).",
            &["result"]
        )),
        warm_duration: noted(&mut declared, register_histogram_vec!(
            "sidecache_warm_duration_seconds",
            "Duration of warming passes inside this process, by trigger.",
            &["trigger"],
            WARM_BUCKETS.to_vec()
        )),
        warm_last_success: noted(&mut declared, register_gauge!(
            "sidecache_warm_last_success_timestamp_seconds",
            "Unix time of the last warming pass with no failed URL (0: none yet)."
        )),
        warm_runs: noted(&mut declared, register_int_counter_vec!(
            "sidecache_warm_runs_total",
            "Warming passes inside this process, by trigger (start, schedule, reload) and result (ok = no failed URL, error).",
            &["trigger", "result"]
        )),
        connections_open: noted(&mut declared, register_int_gauge!(
            "sidecache_connections_open",
            "Client connections open on the data plane (HTTP/1 and h2c alike)."
        )),
        connections_refused: noted(&mut declared, register_int_counter_vec!(
            "sidecache_connections_refused_total",
            "Client connections refused before a request was read, by reason (max_connections: answered 503 and closed).",
            &["reason"]
        )),
        requests_refused: noted(&mut declared, register_int_counter_vec!(
            "sidecache_requests_refused_total",
            "Requests refused before routing (never forwarded), or closed for a late head, by reason.",
            &["reason"]
        )),
        tunnels_open: noted(&mut declared, register_int_gauge!(
            "sidecache_tunnels_open",
            "Upgraded connections (WebSockets) open: the origin answered 101 and bytes pass both ways."
        )),
        tunnels: noted(&mut declared, register_int_counter!(
            "sidecache_tunnels_total",
            "Upgraded connections (WebSockets) opened since start."
        )),
        tunnel_bytes: noted(&mut declared, register_int_counter_vec!(
            "sidecache_tunnel_bytes_total",
            "Bytes through closed upgraded connections, by direction (to_origin, to_client).",
            &["direction"]
        )),
        tunnel_duration: noted(&mut declared, register_histogram!(
            "sidecache_tunnel_duration_seconds",
            "How long upgraded connections stayed open.",
            TUNNEL_BUCKETS.to_vec()
        )),
        families: declared,
    };
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    // Pre-create the bounded label sets so dashboards see zeros, not gaps.
    for op in L2Op::ALL {
        for r in [
            L2Result::Ok,
            L2Result::Error,
            L2Result::Timeout,
            L2Result::Skipped,
        ] {
            m.l2_operations.with_label_values(&[op.label(), r.label()]);
        }
    }
    for r in Success::ALL {
        m.config_reloads.with_label_values(&[r.label()]);
        m.purge_broadcasts.with_label_values(&[r.label()]);
    }
    for d in TunnelDirection::ALL {
        m.tunnel_bytes.with_label_values(&[d.label()]);
    }
    for r in MessageDrop::ALL {
        m.purge_messages_dropped.with_label_values(&[r.label()]);
    }
    for r in WarmUrlResult::ALL {
        m.warm_urls.with_label_values(&[r.label()]);
    }
    for t in WarmTrigger::ALL {
        for r in Success::ALL {
            m.warm_runs.with_label_values(&[t.label(), r.label()]);
        }
    }
    for r in ConnectionRefusal::ALL {
        m.connections_refused.with_label_values(&[r.label()]);
    }
    for r in RequestRefusal::ALL {
        m.requests_refused.with_label_values(&[r.label()]);
    }
    m
});

/// Create the series of `vec` for every pair of label values from `first` and `second`, so
/// each is exported (at 0) before it first counts. The label enums belong to the domain, so
/// the component that owns them calls this with their `ALL` lists when it is built.
pub fn preset_pairs(vec: &IntCounterVec, first: &[&str], second: &[&str]) {
    for a in first {
        for b in second {
            vec.with_label_values(&[a, b]);
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One metric family sidecache exports: its name and type. The registry's `gather()` omits
/// a labelled family until it has a series, so this list is what names every family, for
/// the checks that dashboards and alert rules use only what is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub kind: FamilyKind,
}

/// The Prometheus type of a [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family sidecache registers, in declaration order.
pub fn families() -> &'static [Family] {
    &metrics().families
}

/// The [`FamilyKind`] of each collector type the registry holds.
trait Kind {
    const KIND: FamilyKind;
}

macro_rules! kind {
    ($($collector:ty => $kind:ident),* $(,)?) => {
        $(impl Kind for $collector {
            const KIND: FamilyKind = FamilyKind::$kind;
        })*
    };
}

kind! {
    IntCounter => Counter,
    IntCounterVec => Counter,
    IntGauge => Gauge,
    IntGaugeVec => Gauge,
    Gauge => Gauge,
    Histogram => Histogram,
    HistogramVec => Histogram,
}

/// A collector just registered, its families noted in `declared`. Registration only fails
/// on a duplicate name, a programming error the first test that touches metrics catches.
#[allow(clippy::expect_used)]
fn noted<C: Collector + Kind>(declared: &mut Vec<Family>, made: prometheus::Result<C>) -> C {
    let collector = made.expect("each metric family registers once, under its own name");
    declared.extend(collector.desc().into_iter().map(|d| Family {
        name: d.fq_name.clone(),
        kind: C::KIND,
    }));
    collector
}

const SLOTS: usize = MethodLabel::COUNT * 5 * CacheOutcome::ALL.len();

/// Pre-resolved error counters of one upstream (every kind, so dashboards see zeros).
#[derive(Debug)]
pub struct UpstreamMetrics {
    errors: [IntCounter; 4],
}

impl UpstreamMetrics {
    /// Resolve the counters of the upstream called `name`.
    pub fn new(name: &str) -> Self {
        let m = metrics();
        Self {
            errors: UpstreamErrorKind::ALL
                .map(|k| m.upstream_errors.with_label_values(&[name, k.label()])),
        }
    }

    /// Count one failure of `kind`.
    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }
}

/// Pre-resolved handles for one route label (a config route, `default` or `health`).
///
/// Built once per config snapshot; recording after the first use of a combination takes no
/// lock and allocates nothing.
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    requests: Box<[OnceLock<IntCounter>]>,
    durations: [OnceLock<Histogram>; 8],
    coalesced: OnceLock<IntCounter>,
    /// Upstream latency handles, by upstream index.
    upstream: Box<[OnceLock<Histogram>]>,
    /// The route label's windowed figures (shared across snapshots).
    window: Arc<RouteWindow>,
}

impl RouteMetrics {
    /// Handles for the route label `route`, for a config with `upstreams` upstreams.
    pub fn new(route: &str, upstreams: usize) -> Self {
        Self {
            route: route.to_owned(),
            requests: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            durations: Default::default(),
            coalesced: OnceLock::new(),
            upstream: (0..upstreams).map(|_| OnceLock::new()).collect(),
            window: window::for_route(route),
        }
    }

    /// The route label's windowed figures.
    pub fn window(&self) -> &RouteWindow {
        &self.window
    }

    /// Record the time upstream `index` (named `name`) took to answer for this route.
    pub fn record_upstream(&self, index: usize, name: &str, elapsed: Duration) {
        if let Some(cell) = self.upstream.get(index) {
            cell.get_or_init(|| {
                metrics()
                    .upstream_duration
                    .with_label_values(&[name, &self.route])
            })
            .observe(elapsed.as_secs_f64());
        }
    }

    /// The route label.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Record one finished downstream request.
    pub fn record_request(
        &self,
        method: MethodLabel,
        status: u16,
        outcome: CacheOutcome,
        elapsed: Duration,
    ) {
        let class = status_class_index(status);
        let slot = (method as usize * 5 + class) * CacheOutcome::ALL.len() + outcome.index();
        if let Some(cell) = self.requests.get(slot) {
            cell.get_or_init(|| {
                metrics().requests_total.with_label_values(&[
                    &self.route,
                    method.label(),
                    STATUS_CLASSES[class],
                    outcome.label(),
                ])
            })
            .inc();
        }
        self.durations[outcome.index()]
            .get_or_init(|| {
                metrics()
                    .request_duration
                    .with_label_values(&[&self.route, outcome.label()])
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Record one request that waited on another's fetch.
    pub fn record_coalesced(&self) {
        self.coalesced
            .get_or_init(|| {
                metrics()
                    .coalesced_requests
                    .with_label_values(&[&self.route])
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_name_the_labelled_families_gather_omits() {
        let listed = |name: &str| families().iter().find(|f| f.name == name).map(|f| f.kind);
        let gathered = |name: &str| prometheus::gather().iter().any(|f| f.name() == name);
        // no test here records a coalesced request: the family has no series yet
        assert!(!gathered("sidecache_coalesced_requests_total"));
        assert_eq!(
            listed("sidecache_coalesced_requests_total"),
            Some(FamilyKind::Counter)
        );
        assert_eq!(
            listed("sidecache_request_duration_seconds"),
            Some(FamilyKind::Histogram)
        );
        assert_eq!(listed("sidecache_l1_bytes"), Some(FamilyKind::Gauge));
        assert_eq!(families().len(), 40);
    }

    #[test]
    fn route_metrics_count_into_the_right_series() {
        let rm = RouteMetrics::new("unit_test_route", 1);
        rm.record_request(
            MethodLabel::Get,
            200,
            CacheOutcome::HitL1,
            Duration::from_micros(50),
        );
        rm.record_request(
            MethodLabel::Get,
            200,
            CacheOutcome::HitL1,
            Duration::from_micros(50),
        );
        let c = metrics().requests_total.with_label_values(&[
            "unit_test_route",
            "GET",
            "2xx",
            "hit_l1",
        ]);
        assert_eq!(c.get(), 2);
        let h = metrics()
            .request_duration
            .with_label_values(&["unit_test_route", "hit_l1"]);
        assert_eq!(h.get_sample_count(), 2);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class_index(204), 1);
        assert_eq!(status_class_index(504), 4);
        assert_eq!(status_class_index(999), 4);
    }
}
