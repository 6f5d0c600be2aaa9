//! One typed event per thing that happens, each recording its log line and its metrics
//! together (like vector's `InternalEvent`): a call site builds the event and calls
//! [`InternalEvent::emit`], and never writes a metric or a log line of its own.
//!
//! Labels come from enums with static names (`label_enum!`) or from handles resolved once
//! per config label ([`RouteMetrics`](super::metrics::RouteMetrics),
//! [`UpstreamMetrics`](super::metrics::UpstreamMetrics)); no event takes a free-form label.
//! Events on the request path allocate nothing and log at most one line per request.
//!
//! This module holds the trait and the events that name nothing of the domain. An event
//! about a domain type lives beside the component that emits it (as vector keeps its
//! internal events), so telemetry imports nothing above it: `proxy::events` (a request
//! finished, an upstream answered), `cache::storage::events` (breakers, the Redis server,
//! corrupt entries, refused stores), `purge::events` (purges applied, broadcast,
//! deferred), and `live`'s `ReloadRejected`.

use std::fmt::Display;
use std::time::Duration;

use super::metrics::{
    metrics, ConnectionRefusal, EvictionCause, L2Op, L2Result, MessageDrop, RequestRefusal,
    Success, TunnelDirection, WarmTrigger, WarmUrlResult,
};
use super::recent::{recent, unix_now, ReloadRecord, WarmRecord};

/// Something that happened, recorded as its log line and its metrics together.
pub trait InternalEvent {
    /// Record the event.
    fn emit(self);
}

/// One Redis operation ended (or was skipped by the open breaker).
pub struct L2Operation<'a> {
    pub op: L2Op,
    pub result: L2Result,
    pub elapsed: Duration,
    pub error: Option<&'a redis::RedisError>,
}

impl InternalEvent for L2Operation<'_> {
    fn emit(self) {
        let m = metrics();
        m.l2_operations
            .with_label_values(&[self.op.label(), self.result.label()])
            .inc();
        if self.result != L2Result::Skipped {
            m.l2_duration
                .with_label_values(&[self.op.label()])
                .observe(self.elapsed.as_secs_f64());
        }
        if let Some(e) = self.error {
            tracing::debug!(op = self.op.label(), error = %e, "redis error");
        }
    }
}

/// An entry went into L1. Counted only: it can happen per request.
pub struct L1Stored {
    /// The bytes the entry weighs.
    pub weight: u32,
}

impl InternalEvent for L1Stored {
    fn emit(self) {
        let m = metrics();
        m.l1_entries.inc();
        m.l1_bytes.add(i64::from(self.weight));
    }
}

/// An entry left L1 (moka's eviction listener). Counted only: it can happen per request.
pub struct L1Eviction {
    pub cause: EvictionCause,
    /// The bytes the entry weighed.
    pub weight: u32,
}

impl InternalEvent for L1Eviction {
    fn emit(self) {
        let m = metrics();
        m.l1_evictions
            .with_label_values(&[self.cause.label()])
            .inc();
        m.l1_entries.dec();
        m.l1_bytes.sub(i64::from(self.weight));
    }
}

/// An origin's response declared surrogate keys past the bounds (see
/// [`crate::cache::surrogate`]); they were dropped. Counted only: no label, no log line (it
/// can happen per request, and key names never become labels).
pub struct SurrogateKeysDropped {
    pub count: u64,
}

impl InternalEvent for SurrogateKeysDropped {
    fn emit(self) {
        metrics().surrogate_keys_dropped.inc_by(self.count);
    }
}

/// A received purge broadcast was dropped. Counted, and logged at debug only: whoever can
/// publish on the channel must not be able to flood the log.
pub struct PurgeMessageDropped<'a> {
    pub reason: MessageDrop,
    pub error: &'a dyn Display,
}

impl InternalEvent for PurgeMessageDropped<'_> {
    fn emit(self) {
        metrics()
            .purge_messages_dropped
            .with_label_values(&[self.reason.label()])
            .inc();
        tracing::debug!(target: "sidecache::purge", reason = self.reason.label(),
            error = %self.error, "dropped a purge message");
    }
}

/// A write's purge took the place of a waiting purge of the same target.
pub struct PurgeCoalesced;

impl InternalEvent for PurgeCoalesced {
    fn emit(self) {
        metrics().purges_coalesced.inc();
    }
}

/// A write to a cacheable path was refused because the purge backlog was full.
pub struct PurgeBacklogFull {
    /// Purges waiting.
    pub waiting: usize,
}

impl InternalEvent for PurgeBacklogFull {
    fn emit(self) {
        metrics().purge_backlog_refusals.inc();
        tracing::debug!(target: "sidecache::purge", waiting = self.waiting,
            "write refused: the purge backlog is full");
    }
}

/// Purges other instances finished were applied from the finished-purge log: their
/// broadcasts never arrived.
pub struct PurgesCaughtUp {
    pub count: u64,
}

impl InternalEvent for PurgesCaughtUp {
    fn emit(self) {
        metrics().purges_caught_up.inc_by(self.count);
        tracing::info!(target: "sidecache::purge", count = self.count,
            "applied purges whose broadcast never arrived, from the finished-purge log");
    }
}

/// The finished-purge log restarted or was trimmed past this instance: L1 was cleared.
pub struct PurgeLogGap;

impl InternalEvent for PurgeLogGap {
    fn emit(self) {
        metrics().purge_log_gaps.inc();
        tracing::warn!(target: "sidecache::purge",
            "the finished-purge log restarted or moved past this instance (Redis lost its state, or this instance could not read it for long); L1 cleared");
    }
}

/// What happened to the purge subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubsubLinkState {
    /// Subscribed (the first time, or after start-up attempts that missed nothing).
    Up,
    /// Subscribed again after a period without: L1 was cleared (the gap rule).
    UpAfterGap,
    /// The subscription was lost, or an attempt failed.
    Down,
    /// Another attempt failed while already down.
    StillDown,
}

/// The purge subscription changed state.
pub struct PubsubLink<'a> {
    pub channel: &'a str,
    pub state: PubsubLinkState,
    pub error: Option<&'a str>,
}

impl InternalEvent for PubsubLink<'_> {
    fn emit(self) {
        let channel = self.channel;
        let error = self.error.unwrap_or("");
        match self.state {
            PubsubLinkState::Up => {
                tracing::info!(channel, "purge subscription established");
            }
            PubsubLinkState::UpAfterGap => {
                metrics().pubsub_gaps.inc();
                tracing::warn!(channel, "purge subscription re-established after a gap; L1 cleared");
            }
            PubsubLinkState::Down => tracing::warn!(channel, error,
                "purge subscription down; purges from other instances are missed until it is back (then L1 is cleared)"),
            PubsubLinkState::StillDown => {
                tracing::debug!(channel, error, "purge subscription still down");
            }
        }
    }
}

/// A new config is serving.
pub struct ReloadApplied;

impl InternalEvent for ReloadApplied {
    fn emit(self) {
        metrics()
            .config_reloads
            .with_label_values(&[Success::Ok.label()])
            .inc();
        recent().reload(ReloadRecord {
            at: unix_now(),
            result: Success::Ok.label(),
            errors: 0,
        });
        tracing::info!(target: "sidecache::reload", result = "ok", "config reloaded");
    }
}

/// How many failed warming URLs the log names (the metrics count them all).
const LOGGED_WARM_FAILURES: usize = 20;

/// A warming pass inside this process finished.
pub struct WarmFinished<'a> {
    pub trigger: WarmTrigger,
    /// URLs the origin was called for.
    pub fetched: usize,
    /// URLs already in L1 or L2.
    pub already_warm: usize,
    /// URLs that failed (status, timeout, transport error).
    pub failed: usize,
    /// `(url, reason)` of the failures.
    pub failures: &'a [(String, String)],
    pub elapsed: Duration,
}

impl InternalEvent for WarmFinished<'_> {
    fn emit(self) {
        for (url, reason) in self.failures.iter().take(LOGGED_WARM_FAILURES) {
            tracing::warn!(target: "sidecache::warm", url = %url, reason = %reason,
                "warming request failed");
        }
        let m = metrics();
        let run_result = if self.failed == 0 {
            Success::Ok
        } else {
            Success::Error
        };
        for (result, n) in [
            (WarmUrlResult::Fetched, self.fetched),
            (WarmUrlResult::AlreadyWarm, self.already_warm),
            (WarmUrlResult::Failed, self.failed),
        ] {
            m.warm_urls
                .with_label_values(&[result.label()])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
        m.warm_duration
            .with_label_values(&[self.trigger.label()])
            .observe(self.elapsed.as_secs_f64());
        m.warm_runs
            .with_label_values(&[self.trigger.label(), run_result.label()])
            .inc();
        let now = unix_now();
        if self.failed == 0 {
            m.warm_last_success.set(now);
        }
        recent().warm_run(WarmRecord {
            at: now,
            trigger: self.trigger.label(),
            fetched: self.fetched,
            already_warm: self.already_warm,
            failed: self.failed,
            duration_seconds: self.elapsed.as_secs_f64(),
        });
        tracing::info!(target: "sidecache::warm", trigger = self.trigger.label(),
            fetched = self.fetched, already_warm = self.already_warm, failed = self.failed,
            elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "warming finished");
    }
}

/// The origin answered an upgrade request with 101: the connection is now a tunnel.
pub struct TunnelOpened;

impl InternalEvent for TunnelOpened {
    fn emit(self) {
        let m = metrics();
        m.tunnels_open.inc();
        m.tunnels.inc();
    }
}

/// A tunnel closed (either side closed, the origin was silent for
/// `server.tunnel_idle_timeout`, or the client stopped reading).
pub struct TunnelClosed {
    pub to_origin: u64,
    pub to_client: u64,
    pub open_for: Duration,
}

impl InternalEvent for TunnelClosed {
    fn emit(self) {
        let m = metrics();
        m.tunnels_open.dec();
        for (direction, bytes) in [
            (TunnelDirection::ToOrigin, self.to_origin),
            (TunnelDirection::ToClient, self.to_client),
        ] {
            m.tunnel_bytes
                .with_label_values(&[direction.label()])
                .inc_by(bytes);
        }
        m.tunnel_duration.observe(self.open_for.as_secs_f64());
    }
}

/// A client connection was accepted and took one of the `server.max_connections` slots.
pub struct ConnectionOpened;

impl InternalEvent for ConnectionOpened {
    fn emit(self) {
        metrics().connections_open.inc();
    }
}

/// A client connection that held a slot closed.
pub struct ConnectionClosed;

impl InternalEvent for ConnectionClosed {
    fn emit(self) {
        metrics().connections_open.dec();
    }
}

/// A client connection was refused before any of its requests was read. Logged at debug
/// only: a flood would otherwise flood the log too (the counter and its alert tell).
pub struct ConnectionRefused<'a> {
    pub reason: ConnectionRefusal,
    pub peer: Option<&'a dyn Display>,
}

impl InternalEvent for ConnectionRefused<'_> {
    fn emit(self) {
        metrics()
            .connections_refused
            .with_label_values(&[self.reason.label()])
            .inc();
        tracing::debug!(target: "sidecache::edge", reason = self.reason.label(),
            peer = self.peer.map(tracing::field::display), "connection refused");
    }
}

/// A request was refused before routing (it never reached an upstream), or its connection
/// was closed because the head came too late. Logged at debug only, like
/// [`ConnectionRefused`].
pub struct RequestRefused<'a> {
    pub reason: RequestRefusal,
    pub peer: Option<&'a dyn Display>,
}

impl InternalEvent for RequestRefused<'_> {
    fn emit(self) {
        metrics()
            .requests_refused
            .with_label_values(&[self.reason.label()])
            .inc();
        tracing::debug!(target: "sidecache::edge", reason = self.reason.label(),
            peer = self.peer.map(tracing::field::display), "request refused");
    }
}
