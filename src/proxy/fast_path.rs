//! The L1 fast path: a fresh entry in the in-process cache answered straight from
//! `request_filter`, before pingora-cache's generic state machine runs.
//!
//! It covers the common case only and hands everything else to pingora-cache unchanged:
//! the entry must be in L1, fresh, stored without a `Vary` variant, and the request must not
//! be conditional or ranged (pingora answers those: 304s, `Range`, `If-*`). What the client
//! sees is the same as a pingora-cache hit: the stored header, `Age`, `X-Cache: HIT-L1`,
//! `Cache-Status`, the request id, and the body shared (`Bytes`, no copy) with L1.

use std::time::SystemTime;

use http::header;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::forwarded::REQUEST_ID;
use super::response_head::{self, Verdict};
use super::RequestCtx;
use crate::cache::status::CacheOutcome;
use crate::cache::storage::entry::StoredEntry;
use crate::cache::storage::l1::HIT_HEADER_LINES;
use crate::cache::storage::L1Entry;

const REQUEST_ID_HEADER: header::HeaderName = header::HeaderName::from_static(REQUEST_ID);

/// Request headers that make pingora-cache's own handling necessary.
const NEEDS_PINGORA: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Whether the fast path can answer `req` from `entry`: the request is neither conditional
/// nor ranged, and the entry is fresh, stored without a Vary variant, and holds no
/// `surrogate` header (an entry stored before `cache.surrogate_key_header` named it: its
/// shared hit header would send it, so pingora's path, which removes it, answers).
pub(super) fn can_answer(
    req: &RequestHeader,
    entry: &L1Entry,
    surrogate: Option<&header::HeaderName>,
) -> bool {
    let stored = &entry.entry;
    !req.headers.keys().any(|h| NEEDS_PINGORA.contains(h))
        && stored.variance.is_none()
        && SystemTime::now() < stored.fresh_until
        && surrogate.is_none_or(|name| !stored.header.headers.contains_key(name))
}

/// Answer the request from `entry` (which [`can_answer`] accepted).
pub(super) async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    entry: &L1Entry,
) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    let resp = response(entry, &ctx.request_id)?;
    ctx.progress.status = resp.status.as_u16();
    ctx.progress.fast_hit = true;
    let body = body(entry, &resp, head_only);
    session.write_response_header(resp, body.is_none()).await?;
    if let Some(body) = body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The response header of a fast hit on `entry`: the shared [`hit_header`] with this hit's
/// `Age` and request id. Every fast hit takes its header from here, whether pingora's
/// session writes it ([`answer`]) or the edge does (`edge::hit`).
pub(super) fn response(
    entry: &L1Entry,
    request_id: &http::HeaderValue,
) -> Result<Box<ResponseHeader>> {
    let stored = &entry.entry;
    let mut resp = Box::new(
        entry
            .hit_header
            .get_or_init(|| Box::new(hit_header(stored)))
            .as_ref()
            .clone(),
    );
    let age = SystemTime::now()
        .duration_since(stored.epoch)
        .unwrap_or_default()
        .as_secs();
    // The shared header holds both as placeholders, so these replace values in place and
    // the copy's maps (cloned at their exact length) never grow per hit.
    resp.insert_header(header::AGE, age)?;
    resp.insert_header(REQUEST_ID_HEADER, request_id.clone())?;
    Ok(resp)
}

/// The body a fast hit sends with `resp`: none to a HEAD, for a 204 or 304, or when empty;
/// else the stored body, shared with L1.
pub(super) fn body(
    entry: &L1Entry,
    resp: &ResponseHeader,
    head_only: bool,
) -> Option<bytes::Bytes> {
    let stored = &entry.entry;
    let no_body = matches!(resp.status.as_u16(), 204 | 304);
    (!head_only && !no_body && !stored.body.is_empty()).then(|| stored.body.clone())
}

/// The header every fast hit on `stored` shares: the stored header, HTTP/1.1 framing with an
/// exact `Content-Length`, finished as every response is ([`response_head::finish`]: the
/// `X-Cache` / `Cache-Status` of an L1 hit), and placeholders of `Age` and the request id,
/// which each hit replaces ([`HIT_HEADER_LINES`] in all). It lives in L1 beside the entry, so
/// it is built at its exact size (see [`StoredEntry::header_with_room`]) and kept as a clone.
fn hit_header(stored: &StoredEntry) -> ResponseHeader {
    let mut resp = stored.header_with_room(HIT_HEADER_LINES);
    resp.set_version(http::Version::HTTP_11);
    resp.remove_header(&header::AGE);
    resp.remove_header(&REQUEST_ID_HEADER);
    // Inserting these known-good values cannot fail; a failure would only drop the header.
    if !matches!(resp.status.as_u16(), 204 | 304) {
        resp.remove_header(&header::TRANSFER_ENCODING);
        let _ = resp.insert_header(header::CONTENT_LENGTH, stored.body.len());
    }
    let verdict = Verdict {
        outcome: CacheOutcome::HitL1,
        stored: false,
        detail: None,
    };
    // The request id is a placeholder each hit replaces.
    let _ = response_head::finish(
        &mut resp,
        verdict,
        &http::HeaderValue::from_static(""),
        None,
    );
    let _ = resp.append_header(header::AGE, 0);
    // Kept as a clone: a clone's maps hold exactly its lines, not the room `resp` has left.
    resp.clone()
}
