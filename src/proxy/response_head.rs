//! The one place a response header is finished before a client sees it, whichever path
//! answered: the fast path's shared L1 hit header ([`super::fast_path`]) and pingora's
//! `response_filter` (misses, pingora-cache hits, stale and revalidated entries, bypasses,
//! upgrades) both call [`finish`], so a rule added here reaches every response.
//!
//! What it does: removes the hop-by-hop fields (RFC 9110 §7.6.1; entries stored by an older
//! build may still hold some) but an upgrade's own, which a 101 keeps as `Upgrade: proto`
//! and `Connection: upgrade`; removes [`NEVER_SENT`] and the origin's surrogate keys
//! (`cache.surrogate_key_header`); says that a stored 200 of known
//! length is served in ranges (`Accept-Ranges: bytes`); and says what the cache did
//! (`X-Cache`, RFC 9211 `Cache-Status`) and the request id. Per-request values the fast path
//! shares across hits (`Age`, the id) are placeholders it replaces in place.

use http::header::{self, HeaderName};
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::ResponseHeader;

use super::forwarded::REQUEST_ID;
use crate::cache::freshness::SIDECACHE_CACHE_CONTROL;
use crate::cache::status::{CacheOutcome, Detail};
use crate::normalize;

/// Fields that steer sidecache and are never sent to a client: the targeted
/// `Sidecache-Cache-Control` (RFC 9213 §2.1; kept in the stored copy, where a 304 recomputes
/// freshness from it).
pub const NEVER_SENT: [HeaderName; 1] = [SIDECACHE_CACHE_CONTROL];

/// What the cache did for a response, as the client is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    pub outcome: CacheOutcome,
    /// The response was handed to the cache for storing.
    pub stored: bool,
    /// Why the cache was bypassed or the response not stored.
    pub detail: Option<Detail>,
}

/// Finish `resp` for the client (see the module docs). `surrogate`: the configured
/// `cache.surrogate_key_header`, which is never sent either.
pub(crate) fn finish(
    resp: &mut ResponseHeader,
    verdict: Verdict,
    request_id: &HeaderValue,
    surrogate: Option<&HeaderName>,
) -> Result<()> {
    let upgrade = (resp.status == http::StatusCode::SWITCHING_PROTOCOLS)
        .then(|| resp.headers.get(header::UPGRADE).cloned())
        .flatten();
    normalize::strip_hop_by_hop(resp, &header::PROXY_AUTHENTICATE);
    if let Some(protocol) = upgrade {
        normalize::keep_upgrade(resp, protocol);
    }
    for name in NEVER_SENT.iter().chain(surrogate) {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
    let from_cache = matches!(
        verdict.outcome,
        CacheOutcome::HitL1 | CacheOutcome::HitL2 | CacheOutcome::Stale | CacheOutcome::Revalidated
    );
    if from_cache
        && resp.status == http::StatusCode::OK
        && resp.headers.contains_key(header::CONTENT_LENGTH)
    {
        // A stored 200 of known length is served in ranges too (pingora-cache answers
        // Range), so say so, as pingora's own hit path and nginx do.
        resp.insert_header(header::ACCEPT_RANGES, "bytes")?;
    }
    if let Some(x) = verdict.outcome.x_cache() {
        resp.insert_header("x-cache", x)?;
    }
    if let Some(cs) = verdict.outcome.cache_status(verdict.stored, verdict.detail) {
        resp.insert_header("cache-status", cs)?;
    }
    resp.insert_header(REQUEST_ID, request_id.clone())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(outcome: CacheOutcome) -> Verdict {
        Verdict {
            outcome,
            stored: false,
            detail: None,
        }
    }

    #[test]
    fn hop_by_hop_and_steering_fields_go_and_the_verdict_comes() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("sidecache-cache-control", "max-age=60"),
            ("surrogate-key", "contractor:42"),
            ("content-type", "application/json"),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        finish(
            &mut r,
            verdict(CacheOutcome::HitL1),
            &HeaderValue::from_static("id-1"),
            Some(&HeaderName::from_static("surrogate-key")),
        )
        .unwrap();
        let mut left: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["cache-status", "content-type", "x-cache", "x-request-id"]
        );
        assert_eq!(r.headers["x-cache"], "HIT-L1");
        assert_eq!(r.headers["x-request-id"], "id-1");
        let mut sized = ResponseHeader::build(200, None).unwrap();
        sized.append_header("content-length", "2").unwrap();
        let id = HeaderValue::from_static("i");
        finish(&mut sized, verdict(CacheOutcome::HitL2), &id, None).unwrap();
        assert_eq!(sized.headers["accept-ranges"], "bytes");
    }

    #[test]
    fn a_101_keeps_its_upgrade_and_nothing_else_its_connection_named() {
        let mut r = ResponseHeader::build(101, None).unwrap();
        for (k, v) in [
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        finish(
            &mut r,
            verdict(CacheOutcome::Bypass),
            &HeaderValue::from_static("id"),
            None,
        )
        .unwrap();
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "upgrade");
        assert!(!r.headers.contains_key("x-hop"));
        assert!(r.headers.contains_key("sec-websocket-accept"));
    }
}
