//! The data plane's events (see [`crate::telemetry::events`]): a request finished, an
//! upstream answered or failed. Each records its log line and its metrics together.

use std::time::Duration;

use crate::cache::status::{CacheOutcome, Detail};
use crate::routing::Upstream;
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::*;
use crate::telemetry::window;

/// A client request finished (not a background refresh): request counters and latency,
/// coalescing, and the access log line when `server.access_log` is on.
pub struct RequestFinished<'a> {
    pub metrics: &'a RouteMetrics,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub outcome: CacheOutcome,
    /// Why the cache was bypassed or the response not stored.
    pub detail: Option<Detail>,
    pub elapsed: Duration,
    pub request_id: &'a str,
    pub error: Option<&'a pingora_error::Error>,
    /// How long the request waited on another's fetch of the same key, if it did.
    pub lock_wait: Option<Duration>,
    /// `cache.lock_timeout`: a wait this long gave up and went to the origin.
    pub lock_timeout: Duration,
    pub access_log: bool,
}

impl InternalEvent for RequestFinished<'_> {
    fn emit(self) {
        self.metrics.record_request(
            MethodLabel::from_method(self.method),
            self.status,
            self.outcome,
            self.elapsed,
        );
        self.metrics.window().record(
            window::now_second(),
            self.outcome,
            self.status,
            self.elapsed,
        );
        if let Some(waited) = self.lock_wait {
            self.metrics.record_coalesced();
            if waited >= self.lock_timeout {
                metrics().cache_lock_timeouts.inc();
            }
        }
        if self.access_log {
            tracing::info!(
                target: "sidecache::access",
                method = %self.method,
                path = self.path,
                status = self.status,
                cache = self.outcome.label(),
                detail = self.detail.map(Detail::as_str),
                route = self.metrics.route(),
                duration_ms = self.elapsed.as_secs_f64() * 1000.0,
                request_id = self.request_id,
                error = self.error.map(tracing::field::display),
            );
        }
    }
}

/// An upstream's response header arrived.
pub struct UpstreamResponded<'a> {
    pub metrics: &'a RouteMetrics,
    pub upstream: &'a Upstream,
    /// From sending the request to the response header.
    pub elapsed: Duration,
    pub status: http::StatusCode,
}

impl InternalEvent for UpstreamResponded<'_> {
    fn emit(self) {
        self.metrics.record_upstream(
            self.upstream.index,
            &self.upstream.config.name,
            self.elapsed,
        );
        if self.status.is_server_error() {
            self.upstream.metrics.error(UpstreamErrorKind::Status5xx);
        }
    }
}

/// Proxying to an upstream failed (connect, timeout, reset).
pub struct UpstreamFailed<'a> {
    pub upstream: &'a Upstream,
    pub kind: UpstreamErrorKind,
}

impl InternalEvent for UpstreamFailed<'_> {
    fn emit(self) {
        self.upstream.metrics.error(self.kind);
    }
}
