//! The storage tiers behind pingora-cache: [`TieredCache`] (L1 moka + optional L2 Redis)
//! implementing `pingora_cache::storage::Storage`.
//!
//! - [`l1`]: in-process, byte-bounded, decoded entries; an L1 hit never touches Redis.
//! - [`l2`]: Redis, lazily connected, fail-open reads under a short timeout, spawned writes,
//!   guarded by a [`breaker::CircuitBreaker`].
//! - [`codec`]: the versioned binary entry format stored in Redis.
//! - [`tiered`]: the `Storage` implementation, hit/miss handlers and purges.
//! - [`pubsub`]: purges across instances (Redis pub/sub broadcast, subscriber, gap rule).
//!
//! Entries are addressed by `CacheHashKey::combined_bin()` (primary hash + variance), exactly
//! like pingora's `MemCache`, so Vary variants are separate entries and the primary variant sits
//! under the primary key.

pub mod breaker;
pub mod codec;
pub mod l1;
pub mod l2;
pub mod pubsub;
pub mod tiered;

pub use l1::{EntryKey, L1Store};
pub use l2::L2Store;
pub use tiered::{TieredCache, TieredHit};

/// Which tier served a hit. The proxy downcasts the hit handler to [`TieredHit`] to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
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
    /// Filled tag templates, e.g. `contractor:42`.
    pub tags: Vec<String>,
}

/// Result of a purge by url, prefix or tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries removed from L1.
    pub l1_removed: u64,
    /// Entries removed from L2 (0 without L2).
    pub l2_removed: u64,
    /// False when L2 is configured but the purge could not reach it (error, timeout, breaker
    /// open). True without L2.
    pub l2_ok: bool,
    /// True when the purge was published to the other instances (false without L2).
    pub broadcast: bool,
}
