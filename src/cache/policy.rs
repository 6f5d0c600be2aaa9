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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_cache::cache_control::{CacheControl, DirectiveKey, InterpretCacheControl};
use pingora_cache::{filters, CacheMeta, NoCacheReason};
use pingora_http::{RequestHeader, ResponseHeader};

use super::freshness::{self, Directives, Received};
use crate::config::{CacheMode, KeyConfig, RouteCacheConfig, Ttl};

crate::labels::label_enum! {
    /// Why a request skipped the cache (the `detail` of its `Cache-Status` and access log line).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BypassReason {
        /// Not GET or HEAD.
        Method => "method",
        /// The matching route says `cache = false`.
        RouteDisabled => "route-disabled",
        /// No route matched and `[cache] default_mode = "off"`.
        DefaultOff => "default-off",
        /// `Authorization` present and not part of the route's key.
        Authorization => "authorization",
        /// `Cookie` present and not part of the route's key.
        Cookie => "cookie",
        /// A body on GET or HEAD (allowed by `allow_body_on_safe_methods`): the
        /// key never holds a body.
        RequestBody => "request-body",
        /// The request says `Cache-Control: no-store` (and the route honours request directives).
        RequestNoStore => "request-no-store",
        /// An `Upgrade` request (a WebSocket): tunnelled to the upstream, never cached.
        Upgrade => "upgrade",
    }
    /// Static name for `Cache-Status` and logs.
    fn as_str;
}

crate::labels::label_enum! {
    /// Why a response was not stored (the `detail` of its `Cache-Status` and access log line).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum NoStoreReason {
        NoStore => "no-store",
        Private => "private",
        SetCookie => "set-cookie",
        VaryStar => "vary-star",
        Status => "status",
        /// Origin mode and the origin gave no explicit freshness.
        NoFreshness => "no-freshness",
        /// The body is larger than `cache.l1.max_object_bytes`.
        TooLarge => "too-large",
        /// This request waited longer than `cache.lock_timeout` on another's fetch of the key
        /// and fetched (without storing) itself.
        LockTimeout => "lock-timeout",
        /// The storage could not take the entry.
        StorageError => "storage-error",
        /// Origin mode, a request with `Authorization` (keyed by the route), and the response
        /// has none of `public`, `s-maxage`, `must-revalidate` (RFC 9111 §3.5).
        Authorization => "authorization",
    }
    /// Static name for `Cache-Status`, logs and pingora's `NoCacheReason::Custom`.
    fn as_str;
}

impl NoStoreReason {
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

/// The client's request directives sidecache honours (RFC 9111 §5.2.1), parsed once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age=N`: only a response at most N seconds old.
    pub max_age: Option<u64>,
    /// `min-fresh=N`: only a response fresh for at least N more seconds.
    pub min_fresh: Option<u64>,
    /// `max-stale[=N]`: a stale response is acceptable (stale by at most N seconds).
    pub max_stale: Option<Option<u64>>,
    /// `no-cache` (or `Pragma: no-cache` without `Cache-Control`): validate before reuse.
    pub no_cache: bool,
    /// `no-store`: nothing of this exchange is stored (it bypasses the cache).
    pub no_store: bool,
    /// `only-if-cached`: answer from the cache or 504, never from the origin.
    pub only_if_cached: bool,
}

/// What the request directives make of a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveVerdict {
    /// Revalidate before reusing it (and serve nothing stale meanwhile).
    Revalidate,
    /// Reuse it although it is stale (`max-stale`).
    ServeStale,
}

impl RequestDirectives {
    /// The directives of `req`: its `Cache-Control`, or `Pragma: no-cache` when it has no
    /// `Cache-Control` (RFC 9111 §5.4 keeps that rule from RFC 7234 for HTTP/1.0 clients).
    pub fn of(req: &RequestHeader) -> Self {
        let Some(cc) = CacheControl::from_req_headers(req) else {
            let pragma_no_cache = req
                .headers
                .get_all(http::header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case("no-cache"));
            return RequestDirectives {
                no_cache: pragma_no_cache,
                ..Self::default()
            };
        };
        let delta = |key: &str| -> Option<u64> {
            let value = cc
                .directives
                .get(&DirectiveKey::from_lowercase(key))?
                .as_ref()?;
            value.parse_as_delta_seconds().ok().map(u64::from)
        };
        RequestDirectives {
            max_age: delta("max-age"),
            min_fresh: delta("min-fresh"),
            max_stale: cc.has_key("max-stale").then(|| delta("max-stale")),
            no_cache: cc.has_key("no-cache"),
            no_store: cc.no_store(),
            only_if_cached: cc.only_if_cached(),
        }
    }

    /// Whether these directives can change which stored response is acceptable (the L1 fast
    /// path then leaves the request to pingora-cache and [`Self::verdict`]).
    pub fn constrain_reuse(&self) -> bool {
        self.max_age.is_some()
            || self.min_fresh.is_some()
            || self.max_stale.is_some()
            || self.no_cache
    }

    /// The verdict on a stored response of `age`, fresh `until`, whose own directives
    /// `forbid_stale`, at `now`. `None`: reuse it as pingora-cache would.
    pub fn verdict(
        &self,
        age: Duration,
        until: SystemTime,
        forbid_stale: bool,
        now: SystemTime,
    ) -> Option<DirectiveVerdict> {
        let left = until.duration_since(now).ok();
        let too_old = self.max_age.is_some_and(|m| age > Duration::from_secs(m));
        let too_close = self
            .min_fresh
            .is_some_and(|m| left.is_none_or(|l| l.as_secs() < m));
        if self.no_cache || too_old || too_close {
            return Some(DirectiveVerdict::Revalidate);
        }
        let stale_for = now.duration_since(until).unwrap_or_default();
        let stale_ok = self
            .max_stale
            .is_some_and(|limit| limit.is_none_or(|m| stale_for.as_secs() <= m));
        (left.is_none() && stale_ok && !forbid_stale).then_some(DirectiveVerdict::ServeStale)
    }
}

/// What a response's storing depends on besides its header.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// When it arrived (for its age).
    pub received: Received,
    /// The request carried `Authorization` (a route that keys it let it through): origin
    /// mode then stores only with `public`, `s-maxage` or `must-revalidate` (§3.5).
    pub authorization: bool,
    /// The targeted Cache-Control fields honoured, first match wins (RFC 9213).
    pub targets: &'a [http::HeaderName],
}

/// May this response be stored, and with what freshness?
///
/// In both modes: `no-store` and bare `private` (of the targeted field when one applies,
/// else of `Cache-Control`), `Vary: *`, partial content and statuses below 200 are refused,
/// the fields a `private="..."`/`no-cache="..."` names are removed from the stored copy, and
/// `Set-Cookie` left after that is refused. Override mode then uses the route's TTL, statuses
/// and stale windows. Origin mode follows RFC 9111: any final status with an explicit
/// lifetime, the heuristic for heuristically cacheable ones, the lifetime counted from the
/// corrected initial age (the stored epoch is back-dated by it), no stale serving where the
/// directives forbid it, and the route's `max_ttl` and stale windows on top.
pub fn response_decision(
    resp: &ResponseHeader,
    policy: EffectivePolicy<'_>,
    cx: ResponseContext<'_>,
) -> Result<CacheMeta, NoStoreReason> {
    let directives = Directives::of(resp, cx.targets);
    if let Some(cc) = &directives.cc {
        if cc.no_store() {
            return Err(NoStoreReason::NoStore);
        }
        if cc.private() {
            return Err(NoStoreReason::Private);
        }
    }
    let mut header = resp.clone();
    if let Some(cc) = &directives.cc {
        cc.strip_private_headers(&mut header);
    }
    header.remove_header(&http::header::AGE);
    if header.headers.contains_key(http::header::SET_COOKIE) {
        return Err(NoStoreReason::SetCookie);
    }
    if vary_star(resp) {
        return Err(NoStoreReason::VaryStar);
    }
    let status = resp.status.as_u16();
    if status < 200 || status == 206 || status == 304 {
        return Err(NoStoreReason::Status);
    }
    let received_at = cx.received.response_time;
    match (policy.mode, policy.route) {
        (CacheMode::Override, Some(route)) => {
            if !route.statuses.contains(&status) {
                return Err(NoStoreReason::Status);
            }
            let fresh = override_freshness(route, status);
            let (swr, sie) = (
                secs(route.stale_while_revalidate),
                secs(route.stale_if_error),
            );
            Ok(CacheMeta::new(
                received_at + fresh,
                received_at,
                swr,
                sie,
                header,
            ))
        }
        _ => {
            let cc = directives.cc.as_ref();
            if cx.authorization && !cc.is_some_and(|c| c.allow_caching_authorized_req()) {
                return Err(NoStoreReason::Authorization);
            }
            let lifetime = freshness::lifetime(resp, &directives)
                .ok_or(NoStoreReason::NoFreshness)?
                .duration();
            let age = freshness::corrected_initial_age(&resp.headers, cx.received);
            let epoch = received_at
                .checked_sub(age)
                .unwrap_or(UNIX_EPOCH)
                .max(UNIX_EPOCH);
            let mut fresh_until = epoch
                .checked_add(lifetime)
                .unwrap_or(received_at + lifetime);
            let (mut swr, mut sie) = freshness::origin_stale_windows(&directives);
            if let Some(route) = policy.route {
                if let Some(max) = route.max_ttl {
                    fresh_until = fresh_until.min(received_at + max);
                }
                if !directives.forbid_stale() {
                    swr = swr.max(route.stale_while_revalidate);
                    sie = sie.max(route.stale_if_error);
                }
            }
            let mut meta = CacheMeta::new(fresh_until, received_at, secs(swr), secs(sie), header);
            if epoch != received_at {
                meta.set_epoch_override(epoch);
            }
            Ok(meta)
        }
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
            honor_request_directives: None,
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

    /// A response received at `now`, without delay, for a request without Authorization.
    fn at(now: SystemTime) -> ResponseContext<'static> {
        ResponseContext {
            received: Received {
                response_time: now,
                response_delay: Duration::ZERO,
            },
            authorization: false,
            targets: &[],
        }
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
            let got = response_decision(&resp(200, &[(h, v)]), over(&r), at(now)).err();
            assert_eq!(got, Some(why), "{h}: {v}");
        }
        assert_eq!(
            response_decision(&resp(500, &[]), over(&r), at(now)).err(),
            Some(NoStoreReason::Status)
        );
    }

    #[test]
    fn override_mode_uses_route_ttl_without_origin_headers() {
        let r = route(Ttl::Fixed(Duration::from_secs(300)));
        let now = SystemTime::now();
        let meta = response_decision(&resp(200, &[]), over(&r), at(now)).expect("stored");
        assert_eq!(meta.fresh_until(), now + Duration::from_secs(300));
        assert_eq!(meta.stale_while_revalidate_sec(), 30);
        assert_eq!(meta.stale_if_error_sec(), 600);
        let neg = response_decision(&resp(404, &[]), over(&r), at(now)).expect("stored");
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
            response_decision(&resp(200, &[]), origin, at(now)).err(),
            Some(NoStoreReason::NoFreshness)
        );
        let meta = response_decision(
            &resp(200, &[("cache-control", "max-age=60")]),
            origin,
            at(now),
        )
        .expect("stored");
        assert!(meta.fresh_until() > now + Duration::from_secs(50));
        let shared = response_decision(
            &resp(200, &[("cache-control", "max-age=5, s-maxage=90")]),
            origin,
            at(now),
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
