//! Headers a proxy owes its upstream and its client: `X-Forwarded-*` and `X-Request-Id`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::HeaderValue;
use pingora_http::RequestHeader;

use crate::config::Cidr;
use crate::normalize::{normalize_authority, BadHost};

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
/// trusted proxy these come from the value that proxy itself appended (the last value of
/// `X-Forwarded-Proto`/`-Host`, else of the last `Forwarded` element); from any other peer,
/// from the connection (`http`) and the request's own `Host` (or its HTTP/2 `:authority`).
/// [`add_forwarded`] then sends the upstream exactly these values, so whichever value an
/// origin believes (the first, the last, `Forwarded` or `X-Forwarded-*`) is the one keyed.
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
        let proto = match trusted {
            true => last_value(req, X_FORWARDED_PROTO).or(forwarded.and_then(|f| f.proto)),
            false => None,
        };
        let scheme = match proto {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        let host = match trusted {
            true => last_value(req, X_FORWARDED_HOST).or(forwarded.and_then(|f| f.host)),
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

/// Fields that tell an origin which URL a request is for (frameworks build links and
/// redirects from them) that sidecache neither keys nor believes: removed from the requests
/// of untrusted peers, whose values would otherwise be stored for everyone (cache poisoning).
/// From a trusted proxy they are its own statement about its public URL and are kept.
const UNKEYED_URL_FIELDS: [&str; 4] = [
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
];

/// Fields that make some origins serve another path or host than the request line and
/// `Host` name (IIS and Symfony's `X-Original-URL`/`X-Rewrite-URL`, `X-Host`): removed from
/// every request, trusted proxies' too, since sidecache routes and keys by the request line
/// and the host it believes, and the origin must serve exactly that.
const TARGET_OVERRIDES: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-host"];

/// The last comma-separated value of the `name` headers (the one the nearest proxy
/// appended), trimmed and non-empty.
fn last_value<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
}

/// The `proto` and `host` of an RFC 7239 `Forwarded` element.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ForwardedElement<'a> {
    proto: Option<&'a str>,
    host: Option<&'a str>,
}

/// The last element of the `Forwarded` headers (the one the nearest proxy, the trusted peer,
/// added about its own client), as written.
fn last_forwarded_text(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
}

/// The `proto` and `host` of the last `Forwarded` element.
fn last_forwarded_element(req: &RequestHeader) -> Option<ForwardedElement<'_>> {
    last_forwarded_text(req).map(forwarded_element)
}

fn forwarded_element(text: &str) -> ForwardedElement<'_> {
    let mut element = ForwardedElement::default();
    for pair in text.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        let k = k.trim();
        if k.eq_ignore_ascii_case("proto") {
            element.proto = Some(v);
        } else if k.eq_ignore_ascii_case("host") {
            element.host = Some(v);
        }
    }
    element
}

/// Whether a `Forwarded` element says what `origin` believes (or nothing about it).
fn agrees(element: ForwardedElement<'_>, origin: &ClientOrigin) -> bool {
    let proto_agrees = element
        .proto
        .is_none_or(|p| p.eq_ignore_ascii_case(origin.scheme));
    let host_agrees = element.host.is_none_or(|h| {
        let mut normal = String::with_capacity(h.len());
        normalize_authority(h.trim(), origin.scheme, &mut normal).is_ok()
            && normal == origin.authority()
    });
    proto_agrees && host_agrees
}

/// Set the forwarding headers of the upstream request and `X-Request-Id`.
///
/// - `X-Forwarded-Proto` and `-Host` are always exactly what sidecache believes and keys
///   ([`ClientOrigin`]), one value each: an untrusted client's are replaced, a trusted
///   proxy's chain is reduced to the value it appended.
/// - `Forwarded`: dropped from an untrusted peer; from a trusted proxy reduced to its last
///   element when that agrees with what is keyed, else dropped.
/// - `X-Forwarded-For`: an untrusted client's is replaced by the peer's address; a trusted
///   proxy's has the peer appended.
/// - [`UNKEYED_URL_FIELDS`] are removed from untrusted peers' requests, [`TARGET_OVERRIDES`]
///   from every request.
pub fn add_forwarded(
    upstream: &mut RequestHeader,
    origin: &ClientOrigin,
    request_id: &HeaderValue,
) -> pingora_error::Result<()> {
    if origin.trusted {
        let agreed = last_forwarded_text(upstream)
            .filter(|text| agrees(forwarded_element(text), origin))
            .map(str::to_owned);
        remove_all(upstream, |name| {
            TARGET_OVERRIDES.contains(&name) || (agreed.is_none() && name == FORWARDED)
        });
        if let Some(element) = agreed {
            upstream.insert_header(FORWARDED, element)?;
        }
    } else {
        remove_all(upstream, |name| {
            TARGET_OVERRIDES.contains(&name)
                || UNKEYED_URL_FIELDS.contains(&name)
                || name == X_FORWARDED_FOR
                || name == FORWARDED
        });
    }
    if let Some(ip) = origin.peer {
        // Every line of a trusted proxy's chain, in order, then the peer.
        let mut xff = String::with_capacity(48);
        for prev in upstream.headers.get_all(X_FORWARDED_FOR).iter() {
            let prev = prev.to_str().unwrap_or("").trim();
            if !prev.is_empty() {
                xff.push_str(prev);
                xff.push_str(", ");
            }
        }
        // writing to a String cannot fail
        let _ = write!(xff, "{ip}");
        upstream.insert_header(X_FORWARDED_FOR, xff)?;
    }
    upstream.insert_header(X_FORWARDED_PROTO, origin.scheme)?;
    if origin.authority().is_empty() {
        remove_all(upstream, |name| name == X_FORWARDED_HOST);
    } else {
        upstream.insert_header(X_FORWARDED_HOST, origin.authority())?;
    }
    upstream.insert_header(REQUEST_ID, request_id.clone())?;
    Ok(())
}

/// Remove every field whose (lower-case) name `doomed` picks, in one pass over the
/// request's own names. Most requests carry none of them (then nothing is allocated); asking
/// the map for each name by its text instead parsed and hashed every one, about a tenth of a
/// pass-through's instructions (callgrind, docs/performance.md).
fn remove_all(upstream: &mut RequestHeader, doomed: impl Fn(&str) -> bool) {
    let names: Vec<http::HeaderName> = upstream
        .headers
        .keys()
        .filter(|n| doomed(n.as_str()))
        .cloned()
        .collect();
    for name in names {
        upstream.remove_header(&name);
    }
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

    #[test]
    fn untrusted_peers_cannot_send_unkeyed_url_fields_and_nobody_overrides_the_target() {
        let fields = [
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-host", "evil.example"),
        ];
        let build = || {
            let mut r = RequestHeader::build("GET", b"/", None).expect("req");
            r.insert_header("host", "api.example").expect("hdr");
            for (k, v) in fields {
                r.insert_header(k, v).expect("hdr");
            }
            r
        };
        let mut untrusted = build();
        let o = origin(&untrusted, [10, 9, 9, 9], &["127.0.0.0/8"]);
        add_forwarded(&mut untrusted, &o, &new_request_id()).expect("add");
        for (k, _) in fields {
            assert!(
                !untrusted.headers.contains_key(k),
                "{k} from an untrusted peer"
            );
        }
        let mut trusted = build();
        let o = origin(&trusted, [127, 0, 0, 1], &["127.0.0.0/8"]);
        add_forwarded(&mut trusted, &o, &new_request_id()).expect("add");
        for (k, _) in &fields[..4] {
            assert!(trusted.headers.contains_key(*k), "{k} from a trusted proxy");
        }
        for (k, _) in &fields[4..] {
            assert!(!trusted.headers.contains_key(*k), "{k} from anyone");
        }
    }

    #[test]
    fn a_trusted_chain_is_reduced_to_the_value_its_nearest_proxy_appended() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("host", "internal").expect("hdr");
        r.append_header("x-forwarded-host", "evil.example, Shop.example")
            .expect("hdr");
        r.append_header("x-forwarded-proto", "http, https")
            .expect("hdr");
        r.append_header("x-forwarded-for", "1.1.1.1").expect("hdr");
        r.append_header("x-forwarded-for", "2.2.2.2").expect("hdr");
        r.append_header(
            "forwarded",
            "for=1.1.1.1;host=evil.example;proto=http, for=2.2.2.2;host=shop.example;proto=https",
        )
        .expect("hdr");
        let o = origin(&r, [10, 0, 0, 2], &["10.0.0.0/8"]);
        assert_eq!(o.site(), "https://shop.example");
        add_forwarded(&mut r, &o, &new_request_id()).expect("add");
        let all = |name: &str| -> Vec<&str> {
            r.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-forwarded-host"), ["shop.example"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert_eq!(
            all("forwarded"),
            ["for=2.2.2.2;host=shop.example;proto=https"]
        );
        assert_eq!(all("x-forwarded-for"), ["1.1.1.1, 2.2.2.2, 10.0.0.2"]);

        // Forwarded alone decides the same way: its last element.
        let mut f = RequestHeader::build("GET", b"/", None).expect("req");
        f.insert_header("host", "internal").expect("hdr");
        f.append_header("forwarded", "host=evil.example;proto=http")
            .expect("hdr");
        f.append_header("forwarded", "host=shop.example;proto=https")
            .expect("hdr");
        assert_eq!(
            origin(&f, [10, 0, 0, 2], &["10.0.0.0/8"]).site(),
            "https://shop.example"
        );

        // A Forwarded element that disagrees with the X-Forwarded-* pair is not sent on.
        let mut d = RequestHeader::build("GET", b"/", None).expect("req");
        d.insert_header("host", "internal").expect("hdr");
        d.insert_header("x-forwarded-host", "shop.example")
            .expect("hdr");
        d.insert_header("forwarded", "host=evil.example")
            .expect("hdr");
        let o = origin(&d, [10, 0, 0, 2], &["10.0.0.0/8"]);
        add_forwarded(&mut d, &o, &new_request_id()).expect("add");
        assert!(!d.headers.contains_key("forwarded"));
        assert_eq!(d.headers["x-forwarded-host"], "shop.example");
    }
}
