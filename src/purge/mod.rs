//! Purges: one service for every way a cached entry is invalidated.
//!
//! A [`PurgeRequest`] says what to purge ([`PurgeKind`] and target) and where the purge came
//! from ([`PurgeSource`]): the admin API (`POST /admin/purge`, also what `sidecache purge`
//! calls), a write (a route's `invalidate_on`, and RFC 9111 §4.4 unsafe-method
//! invalidation: see [`writes`]), or another instance's broadcast ([`broadcast`]).
//! [`PurgeService::apply`] runs each the same way:
//!
//! 1. **L2 first** (local purges only): an L1 miss right after the L1 purge, here or on
//!    another instance, cannot promote the old copy back from Redis.
//! 2. **L1**, even when the L2 delete failed (Redis down): this instance is right at once,
//!    and L2 is right as soon as its entries expire.
//! 3. **Broadcast** (local purges only): other instances apply it to their L1. A received
//!    purge is applied to L1 only and never re-broadcast.
//!
//! The storage tiers only store and remove; the order and the broadcast live here.

pub mod broadcast;
mod command;
pub mod writes;

pub use command::{command, PurgeCommand};

use serde::{Deserialize, Serialize};

pub use crate::cache::storage::PurgeKind;
use crate::cache::storage::TieredCache;
use crate::config::CacheConfig;
use crate::telemetry::events::{InternalEvent, PurgeApplied, PurgeBroadcast};
use broadcast::PurgeMessage;

/// Where a purge came from (the `source` label of `sidecache_purges_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeSource {
    /// `POST /admin/purge` by an operator or a script.
    Admin,
    /// `sidecache purge` (which calls the admin API and says so).
    Cli,
    /// A successful write: `invalidate_on` or unsafe-method invalidation.
    Write,
    /// Another instance's broadcast, applied to L1 only.
    Remote,
}

impl PurgeSource {
    /// Every source, in label order.
    pub const ALL: [PurgeSource; 4] = [Self::Admin, Self::Cli, Self::Write, Self::Remote];

    /// The metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Cli => "cli",
            Self::Write => "write",
            Self::Remote => "remote",
        }
    }
}

/// One purge: what it targets and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeRequest {
    pub kind: PurgeKind,
    /// The url (path and query), url prefix or tag.
    pub target: String,
    pub source: PurgeSource,
}

impl PurgeRequest {
    /// A purge of `kind`/`target` from `source`.
    pub fn new(kind: PurgeKind, target: impl Into<String>, source: PurgeSource) -> Self {
        Self {
            kind,
            target: target.into(),
            source,
        }
    }
}

/// What one purge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries removed from L1.
    pub l1_removed: u64,
    /// Entries removed from L2 (0 without L2, and for received purges).
    pub l2_removed: u64,
    /// False when L2 is configured but the purge could not reach it (error, timeout, breaker
    /// open). True without L2, and for received purges.
    pub l2_ok: bool,
    /// True when the purge was published to the other instances (false without L2, and for
    /// received purges).
    pub broadcast: bool,
}

/// Applies purges to both tiers and broadcasts them to the other instances.
pub struct PurgeService {
    cache: &'static TieredCache,
    /// This process's id in broadcasts; messages carrying it are skipped on receipt.
    instance_id: String,
    /// The pub/sub channel (`cache.l2.channel`); `None` without L2.
    channel: Option<String>,
}

impl PurgeService {
    /// The purge service of `cache` (whose L2, if any, carries the broadcasts).
    pub fn new(cache: &'static TieredCache, config: &CacheConfig) -> Self {
        PurgeService {
            cache,
            instance_id: broadcast::new_instance_id(),
            channel: config.l2.as_ref().map(|l2| l2.channel.clone()),
        }
    }

    /// This process's id in purge broadcasts.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The cache this service purges.
    pub fn cache(&self) -> &'static TieredCache {
        self.cache
    }

    /// Apply one purge (see the module docs for the order) and report what it did.
    pub async fn apply(&self, request: &PurgeRequest) -> PurgeReport {
        let report = if request.source == PurgeSource::Remote {
            PurgeReport {
                l1_removed: self.cache.purge_l1(request.kind, &request.target).await,
                l2_ok: true,
                ..PurgeReport::default()
            }
        } else {
            let l2 = self.cache.purge_l2(request.kind, &request.target).await;
            let l1_removed = self.cache.purge_l1(request.kind, &request.target).await;
            let broadcast = match l2 {
                Some(_) => self.broadcast(request).await,
                None => false,
            };
            PurgeReport {
                l1_removed,
                l2_removed: l2.and_then(Result::ok).unwrap_or(0),
                l2_ok: l2.is_none_or(|r| r.is_ok()),
                broadcast,
            }
        };
        PurgeApplied {
            request,
            report: &report,
        }
        .emit();
        report
    }

    /// Publish `request` to the other instances; true when Redis accepted it.
    async fn broadcast(&self, request: &PurgeRequest) -> bool {
        let (Some(l2), Some(channel)) = (self.cache.l2(), &self.channel) else {
            return false;
        };
        let message = PurgeMessage::new(&self.instance_id, request.kind, &request.target);
        let ok = match message.encode() {
            Ok(payload) => l2.publish(channel, payload).await.is_ok(),
            Err(_) => false,
        };
        PurgeBroadcast {
            kind: request.kind,
            ok,
        }
        .emit();
        ok
    }

    /// Receive other instances' purges until `shutdown` flips (see [`broadcast`]). Returns at
    /// once without L2. Run it once per process, inside a runtime that lives as long as the
    /// process (sidecache runs it as a pingora background service).
    pub async fn run_subscriber(&'static self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(channel) = &self.channel else { return };
        broadcast::run(self, channel, shutdown).await;
    }
}
