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

pub use crate::outcome::CacheOutcome;

impl CacheOutcome {
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
