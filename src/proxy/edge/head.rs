//! Request heads as the edge reads them off the socket: complete, still arriving, or refused
//! and why. Pure functions over the bytes read so far, so every rule is a unit test.
//!
//! The rules, stricter than pingora's own parser (which escapes bad targets and forwards
//! ambiguous framing):
//! - the head (request line and fields, through the blank line) is at most
//!   `max_header_bytes`, and has at most `max_headers` fields (431);
//! - the request line has a valid method token, `HTTP/1.0` or `HTTP/1.1`, and an
//!   origin-form, absolute-form (`http://`, `https://`) or `OPTIONS *` target (400);
//! - fields have token names and no bare CR, obs-fold, NUL or other control byte (400);
//! - HTTP/1.1 has exactly one `Host`, HTTP/1.0 at most one (400); with an absolute-form
//!   target, `Host` is the target's authority, byte for byte (400: which host the request is
//!   for would be ambiguous, and pingora refuses it without the edge's JSON);
//! - at most one `Content-Length`, a decimal number, and never beside `Transfer-Encoding`
//!   (400); `Transfer-Encoding` only in HTTP/1.1 (400) and only exactly `chunked` (501).

use std::mem::MaybeUninit;

use crate::telemetry::metrics::RequestRefusal;

/// Header slots of the parse: `server.max_headers` is at most this (pingora's own cap).
pub(super) const MAX_HEADER_SLOTS: usize = 256;

/// The connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The size and field-count bounds of one head.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// A complete head that passed every rule.
    Complete,
    /// Not complete, and nothing wrong so far.
    Partial,
    /// Refused. `head_only`: the method is `HEAD` (the answer then carries no body).
    Refused {
        reason: RequestRefusal,
        head_only: bool,
    },
}

/// Whether the first bytes of a connection are the HTTP/2 preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Preface {
    /// All of it: the connection speaks HTTP/2.
    Complete,
    /// A prefix of it: read on.
    Undecided,
    /// Not the preface: HTTP/1.
    No,
}

/// Classify the first bytes of a connection.
pub(super) fn preface(buf: &[u8]) -> Preface {
    if buf.starts_with(H2_PREFACE) {
        Preface::Complete
    } else if H2_PREFACE.starts_with(buf) {
        Preface::Undecided
    } else {
        Preface::No
    }
}

/// Check the head in `buf` (which may hold more after it: the start of a body).
pub(super) fn check(buf: &[u8], limits: HeadLimits) -> Head {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADER_SLOTS)];
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(buf, slots);
    let head_only = req.method == Some("HEAD");
    let refused = |reason| Head::Refused { reason, head_only };
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => {
            refused(RequestRefusal::HeaderTooLarge)
        }
        Ok(httparse::Status::Complete(_)) => match request_rules(&req) {
            Ok(()) => Head::Complete,
            Err(reason) => refused(reason),
        },
        Ok(httparse::Status::Partial) if buf.len() > limits.max_bytes => {
            refused(RequestRefusal::HeaderTooLarge)
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => refused(RequestRefusal::TooManyHeaders),
        Err(_) if request_line_is_bad(buf) => refused(RequestRefusal::MalformedRequestLine),
        Err(_) => refused(RequestRefusal::MalformedHeader),
    }
}

/// Whether the parse error lies in the request line (the bytes through its first LF).
fn request_line_is_bad(buf: &[u8]) -> bool {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| i + 1);
    httparse::Request::new(&mut [])
        .parse(&buf[..line_end])
        .is_err()
}

/// The target, Host and framing rules of a complete, syntactically valid head.
fn request_rules(req: &httparse::Request<'_, '_>) -> Result<(), RequestRefusal> {
    let method = req.method.unwrap_or("");
    if !target_form_allowed(method, req.path.unwrap_or("")) {
        return Err(RequestRefusal::BadTarget);
    }
    let (mut hosts, mut lengths, mut codings) = (0usize, 0usize, 0usize);
    let mut coding: &[u8] = b"";
    let target_authority =
        crate::normalize::absolute_form_authority(req.path.unwrap_or("").as_bytes());
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            if target_authority.is_some_and(|a| a != field.value) {
                return Err(RequestRefusal::HostDiffersFromTarget);
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if field.value.contains(&b',') {
                return Err(RequestRefusal::DuplicateContentLength);
            }
            if !is_decimal(field.value) {
                return Err(RequestRefusal::InvalidContentLength);
            }
            lengths += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            coding = field.value;
        }
    }
    let http11 = req.version == Some(1);
    if hosts == 0 && http11 {
        return Err(RequestRefusal::MissingHost);
    }
    if hosts > 1 {
        return Err(RequestRefusal::DuplicateHost);
    }
    if lengths > 1 {
        return Err(RequestRefusal::DuplicateContentLength);
    }
    if codings > 0 {
        if lengths > 0 {
            return Err(RequestRefusal::ContentLengthWithTransferEncoding);
        }
        if !http11 {
            return Err(RequestRefusal::TransferEncodingOnHttp10);
        }
        if codings > 1 || !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(RequestRefusal::UnsupportedTransferEncoding);
        }
    }
    Ok(())
}

/// Origin-form (`/path?query`), absolute-form with an http(s) scheme, or `OPTIONS *`.
fn target_form_allowed(method: &str, target: &str) -> bool {
    let t = target.as_bytes();
    let scheme = |s: &[u8]| t.len() > s.len() && t[..s.len()].eq_ignore_ascii_case(s);
    t.first() == Some(&b'/')
        || (target == "*" && method == "OPTIONS")
        || scheme(b"http://")
        || scheme(b"https://")
}

/// `1*DIGIT`, short enough for a `u64`.
fn is_decimal(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 8,
    };

    fn reason(head: &[u8]) -> Option<RequestRefusal> {
        match check(head, LIMITS) {
            Head::Refused { reason, .. } => Some(reason),
            Head::Complete | Head::Partial => None,
        }
    }

    #[test]
    fn valid_heads_are_complete_and_partial_ones_partial() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"HEAD /x?y=1 HTTP/1.1\r\nhost: a\r\n\r\n",
            b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /ok HTTP/1.1\nHost: a\n\n",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
        ] {
            assert_eq!(
                check(head, LIMITS),
                Head::Complete,
                "{}",
                head.escape_ascii()
            );
        }
        for head in [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], b"GET", b"GET /x HTT"] {
            assert_eq!(
                check(head, LIMITS),
                Head::Partial,
                "{}",
                head.escape_ascii()
            );
        }
    }

    #[test]
    fn size_and_count_bounds_are_431_reasons() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(1024)
        );
        assert_eq!(reason(big.as_bytes()), Some(RequestRefusal::HeaderTooLarge));
        // Still arriving but already over the bound.
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(1100));
        assert_eq!(
            reason(partial.as_bytes()),
            Some(RequestRefusal::HeaderTooLarge)
        );
        let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(
            reason(many.as_bytes()),
            Some(RequestRefusal::TooManyHeaders)
        );
        let eight: String = (0..7).map(|i| format!("X-{i}: v\r\n")).collect();
        let eight = format!("GET / HTTP/1.1\r\nHost: a\r\n{eight}\r\n");
        assert_eq!(check(eight.as_bytes(), LIMITS), Head::Complete);
    }

    #[test]
    fn malformed_request_lines_and_targets() {
        for head in [
            &b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"GET /ok\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET  /ok HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        ] {
            assert_eq!(
                reason(head),
                Some(RequestRefusal::MalformedRequestLine),
                "{}",
                head.escape_ascii()
            );
        }
        for head in [
            &b"GET ok HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                reason(head),
                Some(RequestRefusal::BadTarget),
                "{}",
                head.escape_ascii()
            );
        }
    }

    #[test]
    fn malformed_fields() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX@A: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        ] {
            assert_eq!(
                reason(head),
                Some(RequestRefusal::MalformedHeader),
                "{}",
                head.escape_ascii()
            );
        }
    }

    #[test]
    fn host_and_framing_rules() {
        let cases: [(&[u8], RequestRefusal); 15] = [
            (
                b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
                RequestRefusal::HostDiffersFromTarget,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", RequestRefusal::MissingHost),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                RequestRefusal::DuplicateHost,
            ),
            (
                b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
                RequestRefusal::DuplicateHost,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                RequestRefusal::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\n",
                RequestRefusal::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                RequestRefusal::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n",
                RequestRefusal::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                RequestRefusal::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
                RequestRefusal::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestRefusal::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestRefusal::TransferEncodingOnHttp10,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                RequestRefusal::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                RequestRefusal::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestRefusal::UnsupportedTransferEncoding,
            ),
        ];
        for (head, expected) in cases {
            assert_eq!(reason(head), Some(expected), "{}", head.escape_ascii());
        }
    }

    #[test]
    fn refusals_of_head_requests_say_so() {
        assert_eq!(
            check(b"HEAD / HTTP/1.1\r\n\r\n", LIMITS),
            Head::Refused {
                reason: RequestRefusal::MissingHost,
                head_only: true
            }
        );
    }

    #[test]
    fn the_h2_preface_is_recognised_from_its_first_byte() {
        assert_eq!(preface(H2_PREFACE), Preface::Complete);
        assert_eq!(preface(&H2_PREFACE[..10]), Preface::Undecided);
        assert_eq!(preface(b"PRI * HTTP/1.1\r\n"), Preface::No);
        // A short HTTP/1 request is told apart at once (pingora's 24-byte peek waited).
        assert_eq!(preface(b"GET / HTTP/1.0\r\n\r\n"), Preface::No);
    }
}
