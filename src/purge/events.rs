//! The purge service's events (see [`crate::telemetry::events`]): a purge applied,
//! broadcast, or deferred to the backlog.

use super::{PurgeReport, PurgeRequest, PurgeSource};
use crate::cache::storage::PurgeKind;
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::*;
use crate::telemetry::recent::{recent, unix_now, PurgeRecord};

/// A purge was applied to this instance's tiers.
pub struct PurgeApplied<'a> {
    pub request: &'a PurgeRequest,
    pub report: &'a PurgeReport,
    /// The instance that originated it.
    pub instance: &'a str,
}

impl InternalEvent for PurgeApplied<'_> {
    fn emit(self) {
        let r = self.request;
        let counter = match r.soft_at {
            Some(_) => &metrics().soft_purges,
            None => &metrics().purges,
        };
        counter
            .with_label_values(&[r.kind.label(), r.source.label()])
            .inc();
        let rep = self.report;
        recent().purge(PurgeRecord {
            at: unix_now(),
            kind: r.kind.label(),
            target: r.target.clone(),
            source: r.source.label(),
            mode: r.mode(),
            instance: self.instance.to_owned(),
            removed_l1: rep.l1_removed,
            removed_l2: rep.l2_removed,
        });
        match r.source {
            PurgeSource::Admin | PurgeSource::Cli => tracing::info!(
                target: "sidecache::purge", kind = r.kind.label(), source = r.source.label(),
                mode = r.mode(), target = %r.target, removed_l1 = rep.l1_removed,
                removed_l2 = rep.l2_removed, l2_ok = rep.l2_ok, broadcast = rep.broadcast,
                "purged"),
            PurgeSource::Write | PurgeSource::Remote => tracing::debug!(
                target: "sidecache::purge", kind = r.kind.label(), source = r.source.label(),
                mode = r.mode(), target = %r.target, removed_l1 = rep.l1_removed,
                removed_l2 = rep.l2_removed, "purged"),
        }
    }
}

/// A purge was (or could not be) published to the other instances.
pub struct PurgeBroadcast {
    pub kind: PurgeKind,
    pub ok: bool,
}

impl InternalEvent for PurgeBroadcast {
    fn emit(self) {
        let result = if self.ok { Success::Ok } else { Success::Error };
        metrics()
            .purge_broadcasts
            .with_label_values(&[result.label()])
            .inc();
        if !self.ok {
            tracing::warn!(target: "sidecache::purge", kind = self.kind.label(),
                "purge not broadcast; other instances keep their L1 copy until it expires or their subscription has a gap");
        }
    }
}

/// A purge's Redis part failed: it waits in the backlog and is retried until it lands.
/// Logged at warn on a purge's first failure, then at debug.
pub struct PurgeDeferred {
    pub kind: PurgeKind,
    /// Failed attempts so far (1 for the first).
    pub attempt: u32,
    pub result: L2Result,
}

impl InternalEvent for PurgeDeferred {
    fn emit(self) {
        metrics().purge_retries.inc();
        if self.attempt == 1 {
            tracing::warn!(target: "sidecache::purge", kind = self.kind.label(),
                result = self.result.label(),
                "purge could not reach Redis; retrying until it lands (this instance serves none of its targets from Redis meanwhile)");
        } else {
            tracing::debug!(target: "sidecache::purge", kind = self.kind.label(),
                result = self.result.label(), attempt = self.attempt, "purge retry failed");
        }
    }
}
