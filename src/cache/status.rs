//! What the cache did for one request, and how that is told on the wire.
//!
//! [`CacheOutcome`] is the single source for the `X-Cache` header, the RFC 9211
//! `Cache-Status` header and the `cache` metric label.

/// The cache outcome of one request. Static names, bounded label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Fresh entry served from the in-process tier.
    HitL1,
    /// Fresh entry served from Redis (and promoted into L1).
    HitL2,
    /// Not in cache; fetched from the origin (and stored if allowed).
    Miss,
    /// A stale entry was served (stale-while-revalidate or stale-if-error).
    Stale,
    /// A stale entry was revalidated with the origin (304) and served.
    Revalidated,
    /// The request was not eligible for the cache (method, credentials, `cache = false`).
    Bypass,
    /// Fetched from the origin but the response may not be stored.
    Uncacheable,
    /// Answered by sidecache itself (health, readiness, errors it generated).
    Local,
}

impl CacheOutcome {
    /// Every outcome, in label order (used to pre-resolve metric handles).
    pub const ALL: [CacheOutcome; 8] = [
        Self::HitL1,
        Self::HitL2,
        Self::Miss,
        Self::Stale,
        Self::Revalidated,
        Self::Bypass,
        Self::Uncacheable,
        Self::Local,
    ];

    /// The metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::HitL1 => "hit_l1",
            Self::HitL2 => "hit_l2",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
            Self::Bypass => "bypass",
            Self::Uncacheable => "uncacheable",
            Self::Local => "local",
        }
    }

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

    /// The RFC 9211 `Cache-Status` header value for a response that was (`stored`) or was not
    /// written to the cache.
    pub const fn cache_status(self, stored: bool) -> Option<&'static str> {
        match (self, stored) {
            (Self::HitL1, _) => Some("sidecache; hit; detail=l1"),
            (Self::HitL2, _) => Some("sidecache; hit; detail=l2"),
            (Self::Stale, _) => Some("sidecache; hit; detail=stale"),
            (Self::Revalidated, _) => Some("sidecache; fwd=stale; fwd-status=304"),
            (Self::Miss, true) => Some("sidecache; fwd=miss; stored"),
            (Self::Miss, false) => Some("sidecache; fwd=miss"),
            (Self::Bypass, _) => Some("sidecache; fwd=bypass"),
            (Self::Uncacheable, _) => Some("sidecache; fwd=uri-miss; detail=uncacheable"),
            (Self::Local, _) => None,
        }
    }

    /// Index into [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_labels_are_unique() {
        for (i, o) in CacheOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        let mut labels: Vec<_> = CacheOutcome::ALL.iter().map(|o| o.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), CacheOutcome::ALL.len());
    }

    #[test]
    fn local_answers_carry_no_cache_headers() {
        assert_eq!(CacheOutcome::Local.x_cache(), None);
        assert_eq!(CacheOutcome::Local.cache_status(false), None);
    }
}
