//! The storage tiers behind pingora-cache: [`TieredCache`] (L1 moka + optional L2 Redis)
//! implementing `pingora_cache::storage::Storage`.
//!
//! - [`l1`]: in-process, byte-bounded, decoded entries; an L1 hit never touches Redis.
//! - [`l2`]: Redis, lazily connected, fail-open reads under a short timeout, spawned writes,
//!   guarded by a [`breaker::CircuitBreaker`].
//! - [`codec`]: the versioned binary entry format stored in Redis.
//! - [`tiered`]: the `Storage` implementation, hit/miss handlers and per-tier purges.
//! - [`coalescing_lock`]: pingora's per-process cache lock, re-checking L1 when it grants a
//!   fill, so a late miss never fetches a key whose fill just finished.
//! - [`fill_lock`]: the cross-instance fill lock (`cache.l2.fill_lock`).
//! - [`topology`]: how L2 reaches Redis per `cache.l2.mode` (standalone, cluster, sentinel).
//! - [`server_info`]: which server L2 talks to (Redis >= 6.2 or Valkey), refused if older.
//! - [`purge_log`]: this process's record of recent purges, so purges win over work that
//!   began before them (Redis keeps its own, see [`l2`]).
//!
//! Entries are addressed by [`storage_key`]: `CacheHashKey::combined_bin()` (primary hash +
//! variance), like pingora's `MemCache`, so Vary variants are separate entries and the primary
//! variant sits under the primary key, but with the path's placement as its first byte (see
//! [`crate::cache::key::cache_key`]), so all variants of a path share an L2 cluster partition.
//! Both tiers index entries by url and by tag, which is what a [`PurgeKind`] targets;
//! [`crate::purge`] decides when and in which order to purge them.

pub mod atomic_duration;
pub mod breaker;
pub mod coalescing_lock;
pub mod codec;
pub mod entry;
pub mod events;
pub mod fill_lock;
pub mod l1;
pub mod l2;
pub mod purge_log;
pub mod server_info;
pub mod tiered;
pub mod topology;

pub use coalescing_lock::CoalescingLock;
pub use l1::{EntryKey, L1Entry, L1Store};
pub use l2::L2Store;
pub use purge_log::{Provenance, PurgeLog, PurgeTicket, Refusal};
pub use tiered::{L1Probe, TieredCache, TieredHit, WorkStart};

/// The key both tiers store an entry under: its `combined_bin()` with the first byte of its
/// primary hash, the path's placement. A Vary variant's combined hash is a fresh hash, so
/// without this its variants would scatter over a cluster's partitions, away from the url
/// index a purge reads. Every tier operation takes its key from here, never from
/// `combined_bin()` directly.
pub fn storage_key(key: &impl pingora_cache::key::CacheHashKey) -> EntryKey {
    let mut k = key.combined_bin();
    k[0] = key.primary_bin()[0];
    k
}

/// A storage tier: which one served a hit, or where a corrupt entry was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
}

impl Tier {
    /// The metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

crate::labels::label_enum! {
    /// What a purge targets, through the indexes both tiers keep.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum PurgeKind {
        /// Every variant of exactly this url.
        Url => "url",
        /// Every entry whose url starts with this.
        Prefix => "prefix",
        /// Every entry carrying this tag.
        Tag => "tag",
    }
    /// The `kind` label / JSON value.
    fn label;
}

/// Context the proxy attaches to the `CacheMeta` extensions in `response_cache_filter`
/// (`meta.extensions_mut().insert(EntryContext { .. })`). The miss handler stores it with the
/// entry so purges by url, prefix and tag can find it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryContext {
    /// Path + "?" + query as the client sent it (no "?" without a query).
    pub url: String,
    /// Config route name.
    pub route: String,
    /// Filled tag templates, e.g. `contractor:42`, and the origin's surrogate keys.
    pub tags: Vec<String>,
    /// May a soft purge leave it servable stale? False when the response forbids serving it
    /// stale (in origin mode: `no-cache`, `must-revalidate`, `proxy-revalidate`, `s-maxage`),
    /// and for entries whose store did not say: a soft purge then removes it.
    pub soft_purgeable: bool,
}
