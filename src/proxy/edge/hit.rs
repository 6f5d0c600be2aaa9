//! Fresh L1 hits answered by the edge itself, before pingora is entered (issue 20).
//!
//! pingora's HTTP/1 session and proxy path are most of what an L1 hit costs (73 % of its
//! instructions in the profile of `docs/performance.md`): a second parse of the head, a boxed
//! 8.8 KB future per request, the session's header and body writes. The edge already holds
//! the checked head, so for a request that can only be answered from the cache it builds the
//! request, makes its plan exactly as `request_filter` does ([`plan::prepare`],
//! [`plan::resolve`]) and, when L1 holds an entry the fast path may serve
//! ([`fast_path::can_answer`], checked inside `resolve`), writes the fast path's own answer
//! ([`fast_path::response`]) and emits the same `RequestFinished` event. Anything else (a
//! miss, a stale, conditional or ranged hit, a refusal, a local endpoint) goes to pingora with
//! its bytes untouched, which makes the plan again.
//!
//! Only requests that can neither carry a body nor change the connection are tried (see
//! [`candidate`]): `GET` or `HEAD`, HTTP/1.1, without `Content-Length` (other than 0),
//! `Transfer-Encoding`, `Connection`, `Upgrade` or `Expect`, on a path the router may store.
//! The connection's last allowed request and any after shutdown began go to pingora, which
//! answers them with `Connection: close`. Hazard: the answer must be byte for byte what
//! pingora's fast path sends (`tests/it/edge_hits.rs` compares the two); a header added on one
//! path only would make hits differ by connection state.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use pingora_core::protocols::http::date;
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

use super::super::events::RequestFinished;
use super::super::{fast_path, forwarded, plan};
use crate::cache::status::CacheOutcome;
use crate::config::ConnectionLimits;
use crate::live::Live;
use crate::telemetry::events::InternalEvent;

/// Header fields a candidate head may hold at most (more: pingora parses it).
const MAX_FIELDS: usize = 64;

/// Bodies up to this size go out in the same write as the header (one segment, one
/// syscall); larger ones follow it.
const COALESCE_BODY: usize = 16 * 1024;

/// What the edge did with a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// Answered from L1; the head was taken from the buffer (what follows it stays).
    Answered,
    /// Answered in part, or not at all, because the client could not be written to in
    /// time: close the connection.
    Gone,
    /// Not for the edge: pingora takes the request, its bytes untouched.
    Pass,
}

/// Answer the complete head at the start of `buf` from L1 if it is a fresh hit the fast path
/// may serve (see the module docs); `peer` is the client's address.
pub(super) async fn serve(
    live: &'static Live,
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &ConnectionLimits,
    peer: Option<IpAddr>,
) -> Served {
    let snapshot = live.snapshot();
    let Some((mut req, len)) = candidate(buf, |path| snapshot.router.may_store(path)) else {
        return Served::Pass;
    };
    let started = Instant::now();
    let Ok(prepared) = plan::prepare(&mut req, peer, &snapshot.config) else {
        return Served::Pass;
    };
    let resolved = plan::resolve(&req, &snapshot, live.cache, prepared, false);
    let Some(entry) = resolved.fresh_hit else {
        return Served::Pass;
    };
    let request_id = forwarded::request_id(&req);
    let Ok(mut resp) = fast_path::response(&entry, &request_id) else {
        return Served::Pass;
    };
    // What pingora's HTTP/1 session adds to every response it writes on a kept-alive
    // connection: a `Date` when the stored header has none, and `Connection: keep-alive`.
    if !resp.headers.contains_key(http::header::DATE)
        && resp
            .insert_header(http::header::DATE, date::get_cached_date())
            .is_err()
    {
        return Served::Pass;
    }
    if resp
        .insert_header(http::header::CONNECTION, "keep-alive")
        .is_err()
    {
        return Served::Pass;
    }
    let _ = buf.split_to(len);
    live.request_started();
    let head_only = req.method == http::Method::HEAD;
    let body = fast_path::body(&entry, &resp, head_only);
    let body_len = body.as_ref().map_or(0, bytes::Bytes::len);
    let mut wire = BytesMut::with_capacity(
        512 + if body_len <= COALESCE_BODY {
            body_len
        } else {
            0
        },
    );
    write_head(&resp, &mut wire);
    let rest = match body {
        Some(b) if b.len() <= COALESCE_BODY => {
            wire.put_slice(&b);
            None
        }
        other => other,
    };
    let write = async {
        stream.write_all(&wire).await?;
        if let Some(rest) = &rest {
            stream.write_all(rest).await?;
        }
        stream.flush().await
    };
    let written = pingora_timeout::timeout(send_limit(limits, wire.len() + body_len), write).await;
    let served = match written {
        Ok(Ok(())) => Served::Answered,
        _ => Served::Gone,
    };
    let config = &snapshot.config;
    RequestFinished {
        metrics: resolved.plan.metrics(&snapshot.router),
        method: &req.method,
        path: req.uri.path(),
        status: resp.status.as_u16(),
        outcome: CacheOutcome::HitL1,
        detail: None,
        elapsed: started.elapsed(),
        request_id: request_id.to_str().unwrap_or(""),
        error: None,
        lock_wait: None,
        lock_timeout: config.cache.lock_timeout,
        access_log: config.server.access_log,
    }
    .emit();
    live.request_finished();
    served
}

/// `resp` as pingora's HTTP/1 session writes it: the status line with the header's own
/// reason phrase (an origin's, kept in the stored header, else the canonical one), the
/// fields with their case, and the blank line.
fn write_head(resp: &ResponseHeader, out: &mut BytesMut) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(resp.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(resp.get_reason_phrase().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    resp.header_to_h1_wire(out);
    out.put_slice(b"\r\n");
}

/// How long writing `bytes` may take: `server.send_timeout`, or for a large answer its
/// length at `server.min_send_rate`, whichever is longer (as pingora's session applies them
/// to each write, see `edge::send_limits`).
fn send_limit(limits: &ConnectionLimits, bytes: usize) -> Duration {
    let at_rate = limits
        .min_send_rate
        .filter(|rate| *rate > 0)
        .map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(bytes as f64 / rate as f64)
        });
    limits.send_timeout.max(at_rate)
}

/// The request in `head` and the head's length, if it is one the edge may answer: `GET` or
/// `HEAD` over HTTP/1.1, no field that frames a body or changes the connection, on a path
/// `may_store` accepts. `None` for anything else, including heads it cannot parse here
/// (pingora then parses, and the edge already checked, them).
fn candidate(head: &[u8], may_store: impl Fn(&str) -> bool) -> Option<(RequestHeader, usize)> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let method = match parsed.method? {
        "GET" => http::Method::GET,
        "HEAD" => http::Method::HEAD,
        _ => return None,
    };
    if parsed.version != Some(1) {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !may_store(path) {
        return None;
    }
    let mut req =
        RequestHeader::build_no_case(method, target.as_bytes(), Some(parsed.headers.len())).ok()?;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        let refused = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if refused("transfer-encoding")
            || refused("connection")
            || refused("upgrade")
            || refused("expect")
            || (refused("content-length") && field.value != b"0")
        {
            return None;
        }
        let name = http::HeaderName::from_bytes(name).ok()?;
        let value = http::HeaderValue::from_bytes(field.value).ok()?;
        req.append_header(name, value).ok()?;
    }
    Some((req, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(head: &str) -> bool {
        candidate(head.as_bytes(), |p| p.starts_with("/c/")).is_some()
    }

    #[test]
    fn only_body_free_requests_that_keep_the_connection_are_tried() {
        assert!(tried("GET /c/1 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(tried(
            "HEAD /c/1?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        ));
        for head in [
            "GET /other HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /c/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET /c/1 HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nconnection: keep-alive\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /c/1 HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert!(!tried(head), "{head:?}");
        }
    }

    #[test]
    fn the_status_line_keeps_the_origins_reason_phrase() {
        let mut resp = ResponseHeader::build(200, None).expect("header");
        resp.append_header("Content-Length", "0").expect("field");
        let mut out = BytesMut::new();
        write_head(&resp, &mut out);
        assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        resp.set_reason_phrase(Some("Fine")).expect("reason");
        out.clear();
        write_head(&resp, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 200 Fine\r\n"), "{out:?}");
    }

    #[test]
    fn the_head_length_leaves_a_pipelined_request_in_the_buffer() {
        let two = "GET /c/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /c/2 HTTP/1.1\r\n";
        let (req, len) = candidate(two.as_bytes(), |_| true).expect("candidate");
        assert_eq!(req.uri.path(), "/c/1");
        assert_eq!(&two[len..], "GET /c/2 HTTP/1.1\r\n");
    }
}
