//! The storage tiers' events (see [`crate::telemetry::events`]): breakers, the Redis server
//! found, corrupt entries, stores a purge refused.

use std::fmt::Display;

use super::breaker::BreakerScope;
use super::purge_log::Refusal;
use super::server_info::ServerInfo;
use super::Tier;
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::*;

/// The state the Redis circuit breaker moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis is used again.
    Closed,
    /// Redis is skipped until the cooldown has passed.
    Open,
}

/// A Redis circuit breaker opened or closed.
pub struct BreakerTransition {
    pub scope: BreakerScope,
    pub to: BreakerState,
}

impl InternalEvent for BreakerTransition {
    fn emit(self) {
        let scope = self.scope.label();
        let up = match self.to {
            BreakerState::Closed => {
                tracing::info!(scope, "redis circuit breaker closed");
                1
            }
            BreakerState::Open => {
                tracing::warn!(scope, "redis circuit breaker open");
                0
            }
        };
        if self.scope == BreakerScope::Entries {
            metrics().l2_up.set(up);
        }
    }
}

/// An L2 connection found a server other than the one before (or the first): which, and
/// whether it is refused (see `cache::storage::server_info`).
pub struct L2ServerChanged {
    /// `None`: the server would not say (`INFO` refused); it is used.
    pub server: Option<ServerInfo>,
}

impl InternalEvent for L2ServerChanged {
    fn emit(self) {
        match self.server.map(ServerInfo::check) {
            Some(Ok(server)) => tracing::info!(%server, "redis server supported"),
            Some(Err(refused)) => tracing::error!(error = %refused, "redis server refused"),
            None => tracing::warn!(
                "redis server refused INFO, so its version is unknown; using it as supported"
            ),
        }
    }
}

/// A stored entry failed to decode; it is treated as a miss and deleted.
pub struct CorruptEntry<'a> {
    pub tier: Tier,
    pub key: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for CorruptEntry<'_> {
    fn emit(self) {
        tracing::warn!(tier = self.tier.label(), key = self.key, error = %self.error,
            "corrupt cache entry deleted");
        metrics()
            .corrupt_entries
            .with_label_values(&[self.tier.label()])
            .inc();
    }
}

/// An entry was not stored because a purge won over the work that fetched it. Counted, and
/// logged at debug with its url (the metric has no url label): it can happen per request.
pub struct StoreRefused<'a> {
    pub tier: Tier,
    pub reason: Refusal,
    /// The entry's url (`""`: none).
    pub url: &'a str,
}

impl InternalEvent for StoreRefused<'_> {
    fn emit(self) {
        metrics()
            .stores_refused
            .with_label_values(&[self.tier.label(), self.reason.label()])
            .inc();
        tracing::debug!(target: "sidecache::purge", tier = self.tier.label(),
            reason = self.reason.label(), url = self.url, "entry not stored: a purge won");
    }
}
