//! Purges: one service for every way a cached entry is invalidated.
//!
//! A [`PurgeRequest`] says what to purge ([`PurgeKind`] and target) and where the purge came
//! from ([`PurgeSource`]): the admin API (`POST /admin/purge`, also what `sidecache purge`
//! calls), a write (a route's `invalidate_on`, and RFC 9111 §4.4 unsafe-method
//! invalidation: see [`writes`]), or another instance's broadcast ([`broadcast`]).
//! [`PurgeService::apply`] runs each the same way:
//!
//! 1. **Record** it in this process's purge log
//!    ([`purge_log`](crate::cache::storage::purge_log)) with the next generation: from then
//!    on nothing it matches is stored by work that began before it (an origin fetch, an L2
//!    read), and, until its L2 part below has run, nothing it matches is served from L2 on
//!    this instance (a miss instead), so the old copy cannot come back from Redis.
//! 2. **L1**: this instance is right at once.
//! 3. **L2** (local purges only), in bounded batches: the first records a tombstone in Redis,
//!    so a store of any instance whose work began before the purge is refused by Redis
//!    itself, however late it lands. Even when this fails (Redis down) L1 was purged, and L2
//!    is right as soon as its entries expire.
//! 4. **Broadcast** (local purges only): other instances record and apply it to their L1. A
//!    received purge is applied to L1 only and never re-broadcast.
//!
//! A write's invalidation ([`writes`]) runs steps 1 and 2 at once on the request path and
//! queues 3 and 4 for a bounded worker. The storage tiers only store and remove; the order
//! and the broadcast live here.

pub mod broadcast;
mod command;
pub mod writes;

pub use command::{command, PurgeCommand};

use serde::{Deserialize, Serialize};

pub use crate::cache::storage::PurgeKind;
use crate::cache::storage::{PurgeTicket, TieredCache};
use crate::config::CacheConfig;
use crate::telemetry::events::{InternalEvent, PurgeApplied, PurgeBroadcast};
use broadcast::{ChannelKey, PurgeMessage};

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
    /// The instance a received purge came from (`None`: this one).
    pub origin: Option<String>,
}

impl PurgeRequest {
    /// A purge of `kind`/`target` from `source`.
    pub fn new(kind: PurgeKind, target: impl Into<String>, source: PurgeSource) -> Self {
        Self {
            kind,
            target: target.into(),
            source,
            origin: None,
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
    /// Signs and checks broadcasts (`cache.l2.channel_secret`); `None`: unsigned.
    channel_key: Option<ChannelKey>,
    /// Write invalidations waiting for their L2 part.
    writes: writes::WriteQueue,
}

impl PurgeService {
    /// The purge service of `cache` (whose L2, if any, carries the broadcasts).
    pub fn new(cache: &'static TieredCache, config: &CacheConfig) -> Self {
        let l2 = config.l2.as_ref();
        PurgeService {
            cache,
            instance_id: broadcast::new_instance_id(),
            channel: l2.map(|l2| l2.channel.clone()),
            channel_key: l2
                .and_then(|l2| l2.channel_secret.as_ref())
                .map(|secret| ChannelKey::new(secret.expose())),
            writes: writes::WriteQueue::default(),
        }
    }

    /// The key that signs and checks broadcasts, if a secret is configured.
    pub fn channel_key(&self) -> Option<&ChannelKey> {
        self.channel_key.as_ref()
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
        let l2_part = request.source != PurgeSource::Remote && self.cache.l2().is_some();
        let ticket = self
            .cache
            .record_purge(request.kind, &request.target, l2_part);
        let l1_removed = self.cache.purge_l1(request.kind, &request.target).await;
        self.finish(request, ticket, l1_removed).await
    }

    /// The rest of a purge whose L1 part is done: its L2 part and broadcast (local purges
    /// only), settling `ticket` once L2 is done; then the event.
    async fn finish(
        &self,
        request: &PurgeRequest,
        ticket: PurgeTicket<'_>,
        l1_removed: u64,
    ) -> PurgeReport {
        let l2 = match request.source {
            PurgeSource::Remote => None,
            _ => self.cache.purge_l2(request.kind, &request.target).await,
        };
        drop(ticket);
        let broadcast = match l2 {
            Some(_) => self.broadcast(request).await,
            None => false,
        };
        let report = PurgeReport {
            l1_removed,
            l2_removed: l2.and_then(Result::ok).unwrap_or(0),
            l2_ok: l2.is_none_or(|r| r.is_ok()),
            broadcast,
        };
        PurgeApplied {
            request,
            report: &report,
            instance: request.origin.as_deref().unwrap_or(&self.instance_id),
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
        let payload = message.encode().and_then(|text| match &self.channel_key {
            Some(key) => key.sign(&text),
            None => Ok(text),
        });
        let ok = match payload {
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
