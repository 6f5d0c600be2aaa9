//! Headers a proxy owes its upstream and its client: `X-Forwarded-*` and `X-Request-Id`.

use std::net::IpAddr;

use http::HeaderValue;
use pingora_http::RequestHeader;

use super::normalize::{normalize_authority, BadHost};
use crate::config::Cidr;

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

/// Who sent a request and what it was for, as sidecache believes it: the peer address, whether
/// the peer is a trusted proxy, and the scheme and authority the request is for. From a
/// trusted proxy these come from its `X-Forwarded-Proto`/`-Host` (or `Forwarded`); from any
/// other peer, from the connection (`http`) and the request's own `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin {
    /// The TCP peer, when it is an IP socket.
    pub peer: Option<IpAddr>,
    /// The peer is in `[server] trusted_proxies`.
    pub trusted: bool,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `scheme://authority`, the authority normalized (see [`normalize_authority`]).
    site: String,
}

impl ClientOrigin {
    /// Work out the origin of `req` from `peer`, trusting forwarded headers only from
    /// `trusted` networks. A host that is not a valid authority is refused.
    pub fn of(
        req: &RequestHeader,
        peer: Option<IpAddr>,
        trusted: &[Cidr],
    ) -> Result<Self, BadHost> {
        let trusted = peer.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip)));
        let forwarded = trusted.then(|| last_forwarded_element(req)).flatten();
        let scheme = match trusted {
            true => first_value(req, X_FORWARDED_PROTO)
                .or(forwarded.as_ref().and_then(|f| f.proto.as_deref()))
                .map(|p| {
                    if p.eq_ignore_ascii_case("https") {
                        "https"
                    } else {
                        "http"
                    }
                })
                .unwrap_or("http"),
            false => "http",
        };
        let host = match trusted {
            true => first_value(req, X_FORWARDED_HOST)
                .or(forwarded.as_ref().and_then(|f| f.host.as_deref())),
            false => None,
        }
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        let mut site = String::with_capacity(scheme.len() + 3 + host.map_or(0, str::len));
        site.push_str(scheme);
        site.push_str("://");
        if let Some(h) = host {
            normalize_authority(h.trim(), scheme, &mut site)?;
        }
        Ok(ClientOrigin {
            peer,
            trusted,
            scheme,
            site,
        })
    }

    /// `scheme://authority`, the part of a cache key that says which site an entry is of.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The normalized `host[:port]`; empty when the request named no host (HTTP/1.0 without
    /// `Host`).
    pub fn authority(&self) -> &str {
        &self.site[self.scheme.len() + 3..]
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const FORWARDED: &str = "forwarded";

/// The first comma-separated value of the first `name` header, trimmed and non-empty.
fn first_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    let v = req.headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// The `proto` and `host` of an RFC 7239 `Forwarded` element.
#[derive(Debug, Default)]
struct ForwardedElement {
    proto: Option<String>,
    host: Option<String>,
}

/// The last element of the `Forwarded` headers: the one the nearest proxy (the trusted peer)
/// added about its own client.
fn last_forwarded_element(req: &RequestHeader) -> Option<ForwardedElement> {
    let last = req
        .headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()?;
    let mut element = ForwardedElement::default();
    for pair in last.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "proto" => element.proto = Some(v),
            "host" => element.host = Some(v),
            _ => {}
        }
    }
    Some(element)
}

/// Set the forwarding headers of the upstream request and `X-Request-Id`. From an untrusted
/// peer whatever the client sent is replaced: `X-Forwarded-For` is the peer's address,
/// `X-Forwarded-Proto`/`-Host` are sidecache's own view, `Forwarded` is dropped. From a
/// trusted proxy the peer is appended to its `X-Forwarded-For`, and its `-Proto`/`-Host` and
/// `Forwarded` are kept (set when it sent none).
pub fn add_forwarded(
    upstream: &mut RequestHeader,
    origin: &ClientOrigin,
    request_id: &HeaderValue,
) -> pingora_error::Result<()> {
    if !origin.trusted {
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            FORWARDED,
        ] {
            if upstream.headers.contains_key(name) {
                upstream.remove_header(name);
            }
        }
    }
    if let Some(ip) = origin.peer {
        let xff = match upstream.headers.get(X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(prev)) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        upstream.insert_header(X_FORWARDED_FOR, xff)?;
    }
    if !upstream.headers.contains_key(X_FORWARDED_PROTO) {
        upstream.insert_header(X_FORWARDED_PROTO, origin.scheme)?;
    }
    if !upstream.headers.contains_key(X_FORWARDED_HOST) && !origin.authority().is_empty() {
        upstream.insert_header(X_FORWARDED_HOST, origin.authority())?;
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

    fn origin(req: &RequestHeader, peer: [u8; 4], trusted: &[&str]) -> ClientOrigin {
        let trusted: Vec<Cidr> = trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        ClientOrigin::of(req, Some(peer.into()), &trusted).expect("valid host")
    }

    #[test]
    fn adds_absent_headers_and_replaces_a_rejected_request_id() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("host", "api.example").expect("hdr");
        r.insert_header(REQUEST_ID, "bad id").expect("hdr");
        let id = new_request_id();
        let o = origin(&r, [10, 0, 0, 9], &[]);
        add_forwarded(&mut r, &o, &id).expect("add");
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
        let o = origin(&r, [127, 0, 0, 1], &["127.0.0.1"]);
        add_forwarded(&mut r, &o, &id).expect("add");
        assert_eq!(r.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert_eq!(r.headers["x-forwarded-host"], "api.example");
        assert_eq!(r.headers[REQUEST_ID], id);
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_what_the_origin_believes() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("host", "API.example:80").expect("hdr");
        r.insert_header("x-forwarded-for", "1.2.3.4").expect("hdr");
        r.insert_header("x-forwarded-proto", "https").expect("hdr");
        r.insert_header("x-forwarded-host", "evil.example")
            .expect("hdr");
        r.insert_header("forwarded", "for=1.2.3.4;host=evil.example;proto=https")
            .expect("hdr");
        let o = origin(&r, [10, 9, 9, 9], &["127.0.0.0/8"]);
        assert_eq!(
            (o.trusted, o.scheme, o.authority()),
            (false, "http", "api.example")
        );
        assert_eq!(o.site(), "http://api.example");
        add_forwarded(&mut r, &o, &new_request_id()).expect("add");
        assert_eq!(r.headers["x-forwarded-for"], "10.9.9.9");
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "api.example");
        assert!(!r.headers.contains_key("forwarded"));
    }

    #[test]
    fn a_trusted_proxy_says_which_site_a_request_is_for() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("host", "internal:8080").expect("hdr");
        r.insert_header("x-forwarded-host", "Shop.Example")
            .expect("hdr");
        r.insert_header("x-forwarded-proto", "https").expect("hdr");
        let o = origin(&r, [10, 0, 0, 2], &["10.0.0.0/8"]);
        assert_eq!(o.site(), "https://shop.example");
        let mut f = RequestHeader::build("GET", b"/", None).expect("req");
        f.insert_header("host", "internal").expect("hdr");
        f.insert_header(
            "forwarded",
            "for=1.1.1.1;proto=http, for=2.2.2.2;proto=https;host=\"a.example:443\"",
        )
        .expect("hdr");
        assert_eq!(
            origin(&f, [10, 0, 0, 2], &["10.0.0.0/8"]).site(),
            "https://a.example"
        );
        let mut bad = RequestHeader::build("GET", b"/", None).expect("req");
        bad.insert_header("host", "evil.example/x").expect("hdr");
        assert!(ClientOrigin::of(&bad, None, &[]).is_err());
    }
}
