//! What the cache did for one request, as one word: [`CacheOutcome`], the vocabulary that the
//! `X-Cache` header, the `cache` metric label, the stats windows and the bench client share. A
//! leaf: every layer from telemetry up reads it, so it sits below them all (its
//! `Cache-Status` rendering, which needs the cache's reasons, is `cache::status`'s).

crate::labels::label_enum! {
    /// The cache outcome of one request. Static names, bounded label set.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum CacheOutcome {
        /// Fresh entry served from the in-process tier.
        HitL1 => "hit_l1",
        /// Fresh entry served from Redis (and promoted into L1).
        HitL2 => "hit_l2",
        /// Not in cache; fetched from the origin (and stored if allowed).
        Miss => "miss",
        /// A stale entry was served (stale-while-revalidate or stale-if-error).
        Stale => "stale",
        /// A stale entry was revalidated with the origin (304) and served.
        Revalidated => "revalidated",
        /// The request was not eligible for the cache (method, credentials, `cache = false`).
        Bypass => "bypass",
        /// Fetched from the origin but the response may not be stored.
        Uncacheable => "uncacheable",
        /// Answered by sidecache itself (health, readiness, errors it generated).
        Local => "local",
    }
    /// The metric label value.
    fn label;
}

impl CacheOutcome {
    /// The `X-Cache` header value; `None` for locally answered requests (they carry none).
    pub const fn x_cache(self) -> Option<&'static str> {
        match self {
            Self::HitL1 => Some("HIT-L1"),
            Self::HitL2 => Some("HIT-L2"),
            Self::Miss => Some("MISS"),
            Self::Stale => Some("STALE"),
            Self::Revalidated => Some("REVALIDATED"),
            Self::Bypass => Some("BYPASS"),
            Self::Uncacheable => Some("UNCACHEABLE"),
            Self::Local => None,
        }
    }

    /// Index into [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The outcome an `X-Cache` value names (case-insensitive, surrounding blanks ignored).
    pub fn from_x_cache(value: &str) -> Option<CacheOutcome> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|o| o.x_cache().is_some_and(|x| x.eq_ignore_ascii_case(value)))
    }
}
