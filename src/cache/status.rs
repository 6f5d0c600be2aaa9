//! What the cache did for one request, and how that is told on the wire.
//!
//! [`CacheOutcome`] is the single source for the `X-Cache` header, the RFC 9211
//! `Cache-Status` header and the `cache` metric label; [`Detail`] says why a request
//! bypassed the cache or its response was not stored (`Cache-Status: ...; detail=private`).

use super::policy::{BypassReason, NoStoreReason};

/// Why the cache was not used for a request or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The request was not eligible (`fwd=bypass`).
    Bypass(BypassReason),
    /// The response was not stored (`fwd=uri-miss`).
    NoStore(NoStoreReason),
}

impl Detail {
    /// The static name (`authorization`, `private`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bypass(r) => r.as_str(),
            Self::NoStore(r) => r.as_str(),
        }
    }
}

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

    /// The RFC 9211 `Cache-Status` header value for a response that was (`stored`) or was not
    /// written to the cache, with the reason when there is one. Every value is static.
    pub const fn cache_status(self, stored: bool, detail: Option<Detail>) -> Option<&'static str> {
        Some(match (self, stored) {
            (Self::HitL1, _) => "sidecache; hit; detail=l1",
            (Self::HitL2, _) => "sidecache; hit; detail=l2",
            (Self::Stale, _) => "sidecache; hit; fwd=stale; detail=stale",
            (Self::Revalidated, _) => "sidecache; fwd=stale; fwd-status=304",
            (Self::Miss, true) => "sidecache; fwd=miss; stored",
            (Self::Miss, false) => "sidecache; fwd=miss",
            (Self::Bypass, _) => match detail {
                Some(Detail::Bypass(r)) => bypass_status(r),
                _ => "sidecache; fwd=bypass",
            },
            (Self::Uncacheable, _) => match detail {
                Some(Detail::NoStore(r)) => no_store_status(r),
                _ => "sidecache; fwd=uri-miss; detail=uncacheable",
            },
            (Self::Local, _) => return None,
        })
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

const fn bypass_status(r: BypassReason) -> &'static str {
    match r {
        BypassReason::Method => "sidecache; fwd=bypass; detail=method",
        BypassReason::RouteDisabled => "sidecache; fwd=bypass; detail=route-disabled",
        BypassReason::DefaultOff => "sidecache; fwd=bypass; detail=default-off",
        BypassReason::Authorization => "sidecache; fwd=bypass; detail=authorization",
        BypassReason::Cookie => "sidecache; fwd=bypass; detail=cookie",
        BypassReason::RequestBody => "sidecache; fwd=bypass; detail=request-body",
        BypassReason::RequestNoStore => "sidecache; fwd=bypass; detail=request-no-store",
        BypassReason::Upgrade => "sidecache; fwd=bypass; detail=upgrade",
    }
}

const fn no_store_status(r: NoStoreReason) -> &'static str {
    match r {
        NoStoreReason::NoStore => "sidecache; fwd=uri-miss; detail=no-store",
        NoStoreReason::Private => "sidecache; fwd=uri-miss; detail=private",
        NoStoreReason::SetCookie => "sidecache; fwd=uri-miss; detail=set-cookie",
        NoStoreReason::VaryStar => "sidecache; fwd=uri-miss; detail=vary-star",
        NoStoreReason::Status => "sidecache; fwd=uri-miss; detail=status",
        NoStoreReason::NoFreshness => "sidecache; fwd=uri-miss; detail=no-freshness",
        NoStoreReason::TooLarge => "sidecache; fwd=uri-miss; detail=too-large",
        NoStoreReason::LockTimeout => "sidecache; fwd=uri-miss; detail=lock-timeout",
        NoStoreReason::StorageError => "sidecache; fwd=uri-miss; detail=storage-error",
        NoStoreReason::Authorization => "sidecache; fwd=uri-miss; detail=authorization",
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
        assert_eq!(CacheOutcome::Local.cache_status(false, None), None);
    }

    #[test]
    fn reasons_reach_cache_status_as_detail() {
        for r in BypassReason::ALL {
            let cs = CacheOutcome::Bypass.cache_status(false, Some(Detail::Bypass(r)));
            let want = format!("sidecache; fwd=bypass; detail={}", r.as_str());
            assert_eq!(cs, Some(want.as_str()));
        }
        for r in NoStoreReason::ALL {
            let cs = CacheOutcome::Uncacheable.cache_status(false, Some(Detail::NoStore(r)));
            let want = format!("sidecache; fwd=uri-miss; detail={}", r.as_str());
            assert_eq!(cs, Some(want.as_str()));
        }
    }

    #[test]
    fn x_cache_values_parse_back() {
        for o in CacheOutcome::ALL {
            if let Some(x) = o.x_cache() {
                assert_eq!(CacheOutcome::from_x_cache(x), Some(o));
                assert_eq!(
                    CacheOutcome::from_x_cache(&format!(" {} ", x.to_lowercase())),
                    Some(o)
                );
            }
        }
        assert_eq!(CacheOutcome::from_x_cache("HIT"), None);
        assert_eq!(CacheOutcome::from_x_cache(""), None);
    }
}
