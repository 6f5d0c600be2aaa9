//! Cache policy: may this request use the cache, and may this response be stored, for how long.
//!
//! Two questions, asked at two phases of the pipeline:
//! - [`request_decision`] (before lookup): only GET/HEAD, only routes that cache, and never a
//!   request carrying credentials (`Authorization`, `Cookie`) unless the route's key names that
//!   header (then the entry is per-credential, see [`crate::cache::key`]).
//! - [`response_decision`] (after the origin answered): `no-store`, `private`, `Set-Cookie`,
//!   `Vary: *` and statuses outside the route's list are never stored, in either mode; then the
//!   route's mode decides freshness: [`CacheMode::Override`] uses the route's TTL,
//!   [`CacheMode::Origin`] follows RFC 9111 from the origin's headers.

use std::time::{Duration, SystemTime};

use pingora_cache::cache_control::CacheControl;
use pingora_cache::{filters, CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::config::{CacheMode, KeyConfig, RouteCacheConfig, Ttl};

/// Why a request skipped the cache (the `detail` of its `Cache-Status` and access log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Not GET or HEAD.
    Method,
    /// The matching route says `cache = false`.
    RouteDisabled,
    /// No route matched and `[cache] default_mode = "off"`.
    DefaultOff,
    /// `Authorization` present and not part of the route's key.
    Authorization,
    /// `Cookie` present and not part of the route's key.
    Cookie,
    /// A body on GET, HEAD, DELETE or OPTIONS (allowed by `allow_body_on_safe_methods`): the
    /// key never holds a body.
    RequestBody,
}

impl BypassReason {
    /// Every reason.
    pub const ALL: [BypassReason; 6] = [
        Self::Method,
        Self::RouteDisabled,
        Self::DefaultOff,
        Self::Authorization,
        Self::Cookie,
        Self::RequestBody,
    ];

    /// Static name for `Cache-Status` and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::RouteDisabled => "route-disabled",
            Self::DefaultOff => "default-off",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::RequestBody => "request-body",
        }
    }
}

/// Why a response was not stored (the `detail` of its `Cache-Status` and access log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    Status,
    /// Origin mode and the origin gave no explicit freshness.
    NoFreshness,
    /// The body is larger than `cache.l1.max_object_bytes`.
    TooLarge,
    /// This request waited longer than `cache.lock_timeout` on another's fetch of the key
    /// and fetched (without storing) itself.
    LockTimeout,
    /// The storage could not take the entry.
    StorageError,
}

impl NoStoreReason {
    /// Every reason.
    pub const ALL: [NoStoreReason; 9] = [
        Self::NoStore,
        Self::Private,
        Self::SetCookie,
        Self::VaryStar,
        Self::Status,
        Self::NoFreshness,
        Self::TooLarge,
        Self::LockTimeout,
        Self::StorageError,
    ];

    /// Static name for `Cache-Status`, logs and pingora's `NoCacheReason::Custom`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::Status => "status",
            Self::NoFreshness => "no-freshness",
            Self::TooLarge => "too-large",
            Self::LockTimeout => "lock-timeout",
            Self::StorageError => "storage-error",
        }
    }

    /// The reason behind pingora-cache disabling the cache for a response, when it is one of
    /// ours to tell the client.
    pub fn from_pingora(reason: &NoCacheReason) -> Option<NoStoreReason> {
        match reason {
            NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => {
                Some(Self::TooLarge)
            }
            NoCacheReason::CacheLockTimeout | NoCacheReason::CacheLockRetryLimit => {
                Some(Self::LockTimeout)
            }
            NoCacheReason::StorageError => Some(Self::StorageError),
            _ => None,
        }
    }
}

/// The cache policy that applies to one request: a route's, or the default for unmatched ones.
#[derive(Debug, Clone, Copy)]
pub struct EffectivePolicy<'a> {
    pub mode: CacheMode,
    /// `None` for unmatched requests under `default_mode = "origin"`.
    pub route: Option<&'a RouteCacheConfig>,
}

/// May this request be served from / stored into the cache?
pub fn request_decision<'a>(
    req: &RequestHeader,
    policy: Option<EffectivePolicy<'a>>,
    route_matched: bool,
) -> Result<EffectivePolicy<'a>, BypassReason> {
    if !filters::request_cacheable(req) {
        return Err(BypassReason::Method);
    }
    let Some(policy) = policy else {
        return Err(if route_matched {
            BypassReason::RouteDisabled
        } else {
            BypassReason::DefaultOff
        });
    };
    let key = policy.route.map(|r| &r.key);
    for (credential, reason) in [
        (http::header::AUTHORIZATION, BypassReason::Authorization),
        (http::header::COOKIE, BypassReason::Cookie),
    ] {
        if req.headers.contains_key(&credential) && !key_names(key, &credential) {
            return Err(reason);
        }
    }
    Ok(policy)
}

fn key_names(key: Option<&KeyConfig>, header: &http::HeaderName) -> bool {
    key.is_some_and(|k| k.headers.contains(header))
}

/// No heuristic freshness: origin mode stores only what the origin says is fresh.
fn no_default_fresh(_: http::StatusCode) -> Option<Duration> {
    None
}
static ORIGIN_DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(no_default_fresh, 0, 0);

/// May this response be stored, and with what freshness?
pub fn response_decision(
    resp: &ResponseHeader,
    policy: EffectivePolicy<'_>,
    now: SystemTime,
) -> Result<CacheMeta, NoStoreReason> {
    let cc = CacheControl::from_resp_headers(resp);
    if let Some(cc) = &cc {
        if cc.no_store() {
            return Err(NoStoreReason::NoStore);
        }
        if cc.private() {
            return Err(NoStoreReason::Private);
        }
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return Err(NoStoreReason::SetCookie);
    }
    if vary_star(resp) {
        return Err(NoStoreReason::VaryStar);
    }
    let status = resp.status.as_u16();
    let statuses = policy
        .route
        .map_or(&RouteCacheConfig::DEFAULT_STATUSES[..], |r| {
            r.statuses.as_slice()
        });
    if !statuses.contains(&status) {
        return Err(NoStoreReason::Status);
    }
    let (swr, sie) = policy.route.map_or((0, 0), |r| {
        (secs(r.stale_while_revalidate), secs(r.stale_if_error))
    });
    match (policy.mode, policy.route) {
        (CacheMode::Override, Some(route)) => {
            let fresh = override_freshness(route, status);
            Ok(CacheMeta::new(now + fresh, now, swr, sie, resp.clone()))
        }
        _ => match filters::resp_cacheable(cc.as_ref(), resp.clone(), false, &ORIGIN_DEFAULTS) {
            RespCacheable::Cacheable(mut meta) => {
                if let Some(route) = policy.route {
                    // Origin mode on a route: the route bounds freshness and supplies stale windows
                    // the origin did not give.
                    if let Some(max) = route.max_ttl {
                        let cap = now + max;
                        if meta.fresh_until() > cap {
                            meta = CacheMeta::new(
                                cap,
                                now,
                                meta.stale_while_revalidate_sec().max(swr),
                                meta.stale_if_error_sec().max(sie),
                                meta.response_header_copy(),
                            );
                            return Ok(meta);
                        }
                    }
                    if swr > meta.stale_while_revalidate_sec() || sie > meta.stale_if_error_sec() {
                        meta = CacheMeta::new(
                            meta.fresh_until(),
                            now,
                            meta.stale_while_revalidate_sec().max(swr),
                            meta.stale_if_error_sec().max(sie),
                            meta.response_header_copy(),
                        );
                    }
                }
                Ok(meta)
            }
            RespCacheable::Uncacheable(_) => Err(NoStoreReason::NoFreshness),
        },
    }
}

/// Fresh lifetime of a stored response in override mode.
pub fn override_freshness(route: &RouteCacheConfig, status: u16) -> Duration {
    let base = match route.ttl {
        Some(Ttl::Fixed(d)) => d,
        Some(Ttl::UntilInvalidated) | None => {
            route.max_ttl.unwrap_or(Duration::from_secs(24 * 3600))
        }
    };
    let base = route.max_ttl.map_or(base, |max| base.min(max));
    if status == 404 {
        base.min(route.negative_ttl)
    } else {
        base
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn vary_star(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*")
}

/// The request header names an entry varies on, from the stored response's `Vary`.
pub fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = &str> {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyConfig;

    fn route(ttl: Ttl) -> RouteCacheConfig {
        RouteCacheConfig {
            mode: CacheMode::Override,
            ttl: Some(ttl),
            max_ttl: None,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(600),
            key: KeyConfig::default(),
            tags: vec![],
            statuses: vec![200, 203, 204, 301, 404],
            negative_ttl: Duration::from_secs(30),
            invalidate_on: vec![],
            forward_unkeyed_query: false,
        }
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/x", None).expect("request");
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).expect("response");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn over(r: &RouteCacheConfig) -> EffectivePolicy<'_> {
        EffectivePolicy {
            mode: CacheMode::Override,
            route: Some(r),
        }
    }

    #[test]
    fn only_get_and_head_use_the_cache() {
        let r = route(Ttl::Fixed(Duration::from_secs(60)));
        assert!(request_decision(&req("GET", &[]), Some(over(&r)), true).is_ok());
        assert!(request_decision(&req("HEAD", &[]), Some(over(&r)), true).is_ok());
        assert_eq!(
            request_decision(&req("POST", &[]), Some(over(&r)), true).err(),
            Some(BypassReason::Method)
        );
    }

    #[test]
    fn credentials_bypass_unless_keyed() {
        let mut r = route(Ttl::Fixed(Duration::from_secs(60)));
        let auth = req("GET", &[("authorization", "Bearer a")]);
        let cookie = req("GET", &[("cookie", "sid=1")]);
        assert_eq!(
            request_decision(&auth, Some(over(&r)), true).err(),
            Some(BypassReason::Authorization)
        );
        assert_eq!(
            request_decision(&cookie, Some(over(&r)), true).err(),
            Some(BypassReason::Cookie)
        );
        r.key.headers = vec![http::header::AUTHORIZATION];
        assert!(request_decision(&auth, Some(over(&r)), true).is_ok());
        assert!(request_decision(&cookie, Some(over(&r)), true).is_err());
        let origin = EffectivePolicy {
            mode: CacheMode::Origin,
            route: None,
        };
        assert!(request_decision(&auth, Some(origin), false).is_err());
    }

    #[test]
    fn disabled_routes_and_default_off_bypass() {
        assert_eq!(
            request_decision(&req("GET", &[]), None, true).err(),
            Some(BypassReason::RouteDisabled)
        );
        assert_eq!(
            request_decision(&req("GET", &[]), None, false).err(),
            Some(BypassReason::DefaultOff)
        );
    }

    #[test]
    fn user_specific_responses_are_never_stored() {
        let r = route(Ttl::Fixed(Duration::from_secs(60)));
        let now = SystemTime::now();
        for (h, v, why) in [
            ("cache-control", "no-store", NoStoreReason::NoStore),
            (
                "cache-control",
                "private, max-age=60",
                NoStoreReason::Private,
            ),
            ("set-cookie", "a=b", NoStoreReason::SetCookie),
            ("vary", "accept, *", NoStoreReason::VaryStar),
        ] {
            let got = response_decision(&resp(200, &[(h, v)]), over(&r), now).err();
            assert_eq!(got, Some(why), "{h}: {v}");
        }
        assert_eq!(
            response_decision(&resp(500, &[]), over(&r), now).err(),
            Some(NoStoreReason::Status)
        );
    }

    #[test]
    fn override_mode_uses_route_ttl_without_origin_headers() {
        let r = route(Ttl::Fixed(Duration::from_secs(300)));
        let now = SystemTime::now();
        let meta = response_decision(&resp(200, &[]), over(&r), now).expect("stored");
        assert_eq!(meta.fresh_until(), now + Duration::from_secs(300));
        assert_eq!(meta.stale_while_revalidate_sec(), 30);
        assert_eq!(meta.stale_if_error_sec(), 600);
        let neg = response_decision(&resp(404, &[]), over(&r), now).expect("stored");
        assert_eq!(neg.fresh_until(), now + Duration::from_secs(30));
    }

    #[test]
    fn until_invalidated_is_bounded_by_max_ttl() {
        let mut r = route(Ttl::UntilInvalidated);
        r.max_ttl = Some(Duration::from_secs(3600));
        assert_eq!(override_freshness(&r, 200), Duration::from_secs(3600));
        r.max_ttl = None;
        assert_eq!(override_freshness(&r, 200), Duration::from_secs(86400));
    }

    #[test]
    fn origin_mode_follows_origin_headers() {
        let origin = EffectivePolicy {
            mode: CacheMode::Origin,
            route: None,
        };
        let now = SystemTime::now();
        assert_eq!(
            response_decision(&resp(200, &[]), origin, now).err(),
            Some(NoStoreReason::NoFreshness)
        );
        let meta = response_decision(&resp(200, &[("cache-control", "max-age=60")]), origin, now)
            .expect("stored");
        assert!(meta.fresh_until() > now + Duration::from_secs(50));
        let shared = response_decision(
            &resp(200, &[("cache-control", "max-age=5, s-maxage=90")]),
            origin,
            now,
        )
        .expect("stored");
        assert!(shared.fresh_until() > now + Duration::from_secs(80));
    }

    #[test]
    fn vary_names_are_listed() {
        let r = resp(200, &[("vary", "Accept-Encoding, accept-language")]);
        let names: Vec<_> = vary_names(&r).collect();
        assert_eq!(names, ["Accept-Encoding", "accept-language"]);
    }
}
