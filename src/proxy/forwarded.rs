//! Headers a proxy owes its upstream and its client: `X-Forwarded-*` and `X-Request-Id`.

use http::HeaderValue;
use pingora_http::RequestHeader;

/// Header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The request's id: the client's `X-Request-Id` when it is sane (1..=128 visible ASCII
/// characters), else a new random 128-bit hex id.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// A fresh random id (32 hex characters).
pub fn new_request_id() -> HeaderValue {
    let id: [u8; 32] = crate::hex::hex_array(fastrand::u128(..).to_be_bytes());
    // 32 ASCII hex digits always make a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// Add `X-Forwarded-For` (appending the client), `X-Forwarded-Proto` and `X-Forwarded-Host`
/// (kept when a front proxy already set them) and `X-Request-Id` to the upstream request.
pub fn add_forwarded(
    upstream: &mut RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    request_id: &HeaderValue,
) -> pingora_error::Result<()> {
    if let Some(ip) = client_ip {
        let xff = match upstream.headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(prev)) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    if !upstream.headers.contains_key("x-forwarded-proto") {
        upstream.insert_header("x-forwarded-proto", "http")?;
    }
    if !upstream.headers.contains_key("x-forwarded-host") {
        if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
    }
    upstream.insert_header(REQUEST_ID, request_id.clone())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_client_id_and_replaces_a_bad_one() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header(REQUEST_ID, "abc-123").expect("hdr");
        assert_eq!(request_id(&r), "abc-123");
        r.insert_header(REQUEST_ID, "a b").expect("hdr");
        assert_eq!(request_id(&r).len(), 32);
    }

    #[test]
    fn adds_absent_headers_and_replaces_a_rejected_request_id() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("host", "api.example").expect("hdr");
        r.insert_header(REQUEST_ID, "bad id").expect("hdr");
        let id = new_request_id();
        add_forwarded(&mut r, Some([10, 0, 0, 9].into()), &id).expect("add");
        assert_eq!(r.headers["x-forwarded-for"], "10.0.0.9");
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "api.example");
        assert_eq!(r.headers.get_all(REQUEST_ID).iter().count(), 1);
        assert_eq!(r.headers[REQUEST_ID], id);
    }

    #[test]
    fn appends_to_forwarded_for_and_keeps_proto() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("x-forwarded-for", "10.0.0.1").expect("hdr");
        r.insert_header("x-forwarded-proto", "https").expect("hdr");
        r.insert_header("host", "api.example").expect("hdr");
        let id = new_request_id();
        add_forwarded(&mut r, Some([127, 0, 0, 1].into()), &id).expect("add");
        assert_eq!(r.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert_eq!(r.headers["x-forwarded-host"], "api.example");
        assert_eq!(r.headers[REQUEST_ID], id);
    }
}
