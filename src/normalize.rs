//! What a client sends, normalized or refused before it is routed, keyed or forwarded.
//!
//! - [`normalize_path`]: RFC 3986 §6.2.2 syntax-based normalization of the request path:
//!   percent-encoded unreserved characters decoded, the hex of other escapes upper-cased,
//!   repeated slashes merged, dot segments removed. Encoded `/`, `\` or NUL, a raw `\`, and
//!   dot segments that climb above the root are refused: an origin that decodes or
//!   normalizes them differently would see another path than the one sidecache routed and
//!   keyed (a `cache = false` route, an `invalidate_on` pattern or a rewrite prefix dodged).
//! - [`normalize_authority`]: the host a request is for, lower-cased, default port dropped.
//! - [`strip_hop_by_hop`]: headers meant for this hop only (those named in `Connection`, and
//!   the standard ones) are removed before the key, the Vary variant and the upstream request
//!   are computed from the request (RFC 9110 §7.6.1); [`upgrade_protocol`] and
//!   [`keep_upgrade`] carry an upgrade (a WebSocket handshake) across it.

use std::borrow::Cow;

use http::header::{self, HeaderName};
use pingora_http::RequestHeader;

/// Why a request path was refused (400 `bad_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path encodes '/', '\\' or NUL (%2F, %5C, %00)")]
    EncodedSeparator,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
}

impl BadPath {
    /// Static name for the error body and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotAbsolute => "not-absolute",
            Self::EncodedSeparator => "encoded-separator",
            Self::Backslash => "backslash",
            Self::BadEscape => "bad-escape",
            Self::AboveRoot => "above-root",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The normalized form of `path` (no query), borrowed when it is already normal.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(BadPath::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    // Decode escapes of unreserved characters, upper-case the others' hex.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = escape_at(bytes, i)?;
            let c = hi * 16 + lo;
            if is_unreserved(c) {
                decoded.push(char::from(c));
            } else {
                decoded.push('%');
                decoded.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                decoded.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
            }
            i += 3;
        } else {
            // `path` is a str and only ASCII bytes are handled one by one: push the char.
            let ch_len = utf8_len(b);
            decoded.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    // Merge repeated slashes and remove dot segments (RFC 3986 §5.2.4 on a rooted path).
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing_slash = n == last,
            "." => trailing_slash = n == last,
            ".." => {
                if out.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
                trailing_slash = n == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// The two hex digits of the escape at `i`, or the refusal it calls for.
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, u8), BadPath> {
    let hi = bytes.get(i + 1).copied().and_then(hex_value);
    let lo = bytes.get(i + 2).copied().and_then(hex_value);
    let (Some(hi), Some(lo)) = (hi, lo) else {
        return Err(BadPath::BadEscape);
    };
    match hi * 16 + lo {
        b'/' | b'\\' | 0 => Err(BadPath::EncodedSeparator),
        _ => Ok((hi, lo)),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Whether `bytes` is already normal (the common case: no allocation), or the refusal.
fn is_normal(bytes: &[u8]) -> Result<bool, BadPath> {
    let mut normal = true;
    let mut i = 0;
    let mut segment_start = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(BadPath::Backslash),
            b'%' => {
                let (hi, lo) = escape_at(bytes, i)?;
                let lower_hex = bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase);
                if is_unreserved(hi * 16 + lo) || lower_hex {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' if i > 0 => {
                if !segment_ok(&bytes[segment_start..i]) {
                    normal = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = &bytes[segment_start.min(bytes.len())..];
    if last == b"." || last == b".." {
        normal = false;
    }
    Ok(normal)
}

/// A segment followed by `/` that normalization keeps as it is.
fn segment_ok(seg: &[u8]) -> bool {
    !seg.is_empty() && seg != b"." && seg != b".."
}

/// Why a request's host was refused (400 `bad_host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid host")]
pub struct BadHost;

/// Append `host[:port]` lower-cased, with the scheme's default port dropped, to `out`: a name
/// or an IPv4 address of allowed characters, or a bracketed IPv6 literal; a port of digits.
pub fn normalize_authority(authority: &str, scheme: &str, out: &mut String) -> Result<(), BadHost> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(BadHost)?;
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BadHost);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(BadHost)?),
        };
        (&authority[..literal.len() + 2], port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !host_ok {
            return Err(BadHost);
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = p.parse().map_err(|_| BadHost)?;
            if n > 65_535 {
                return Err(BadHost);
            }
            let default = match scheme {
                "https" => 443,
                _ => 80,
            };
            (n != default).then_some(n)
        }
        Some(_) => return Err(BadHost),
    };
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(())
}

/// The protocol an HTTP/1.1 request asks to switch to: its `Upgrade` value, when its
/// `Connection` names `upgrade` (RFC 9110 §7.8). HTTP/1.0 and HTTP/2 have no upgrade.
pub fn upgrade_protocol(req: &RequestHeader) -> Option<http::HeaderValue> {
    if req.version != http::Version::HTTP_11 {
        return None;
    }
    let protocol = req.headers.get(header::UPGRADE)?;
    let asked = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| protocol.clone())
}

/// After [`strip_hop_by_hop`], ask the next hop for the switch again, as nginx's usual
/// `proxy_set_header Upgrade $http_upgrade; Connection $connection_upgrade` does: `Upgrade:
/// protocol` and `Connection: upgrade`, nothing else the client's `Connection` named.
pub fn keep_upgrade<M: HeaderFields>(msg: &mut M, protocol: http::HeaderValue) {
    msg.set_field(header::UPGRADE, protocol);
    msg.set_field(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
}

/// The authority of an absolute-form request target (`http://host:port/path`), as sent;
/// `None` for any other form. An empty authority is returned as such (and refused as a host).
pub fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return None;
    }
    let scheme_len = [&b"http://"[..], b"https://"]
        .into_iter()
        .find_map(|scheme| {
            (target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme))
                .then_some(scheme.len())
        })?;
    let rest = &target[scheme_len..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), besides those the `Connection`
/// header names, in requests and responses alike. `Transfer-Encoding` is not among them:
/// pingora frames the body by it on both sides.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Headers the `Connection` header may never remove: framing and routing.
const NEVER_NOMINATED: [HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// A message whose header fields can be read and removed (a pingora request or response).
pub trait HeaderFields {
    fn fields(&self) -> &http::HeaderMap;
    fn remove_field(&mut self, name: &HeaderName);
    /// Replace every value of `name` with `value` (a valid name and value cannot fail).
    fn set_field(&mut self, name: HeaderName, value: http::HeaderValue);
}

impl HeaderFields for RequestHeader {
    fn fields(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn remove_field(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set_field(&mut self, name: HeaderName, value: http::HeaderValue) {
        let _ = self.insert_header(name, value);
    }
}

impl HeaderFields for pingora_http::ResponseHeader {
    fn fields(&self) -> &http::HeaderMap {
        &self.headers
    }
    fn remove_field(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn set_field(&mut self, name: HeaderName, value: http::HeaderValue) {
        let _ = self.insert_header(name, value);
    }
}

/// Remove the hop-by-hop headers from a message: the ones every `Connection` line names
/// (except framing and `Host`), the standard ones, `Proxy-Connection`, and `proxy_only`
/// (`Proxy-Authorization` in requests, `Proxy-Authenticate` in responses: they are for a
/// proxy, never for the origin or the client).
pub fn strip_hop_by_hop<M: HeaderFields>(msg: &mut M, proxy_only: &HeaderName) {
    if !has_hop_by_hop(msg, proxy_only) {
        return;
    }
    if msg.fields().contains_key(header::CONNECTION) {
        let nominated: Vec<HeaderName> = msg
            .fields()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !NEVER_NOMINATED.contains(name))
            .collect();
        for name in &nominated {
            msg.remove_field(name);
        }
    }
    for name in HOP_BY_HOP.iter().chain([proxy_only, &PROXY_CONNECTION]) {
        if msg.fields().contains_key(name) {
            msg.remove_field(name);
        }
    }
}

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `msg` has any field [`strip_hop_by_hop`] would act on. One pass over the (few)
/// names finds the common case, a message with none of them, cheaper than hashing each
/// hop-by-hop name into the map.
fn has_hop_by_hop<M: HeaderFields>(msg: &M, proxy_only: &HeaderName) -> bool {
    let is_hop = |name: &HeaderName| {
        HOP_BY_HOP.contains(name) || name == proxy_only || *name == PROXY_CONNECTION
    };
    msg.fields().keys().any(is_hop)
}

/// [`strip_hop_by_hop`] for a request, keeping its upgrade (see [`upgrade_protocol`]) with
/// [`keep_upgrade`]. Whether it kept one: the request asks to switch protocols.
pub fn strip_request_hop_by_hop(req: &mut RequestHeader) -> bool {
    let proxy_only = &header::PROXY_AUTHORIZATION;
    if !has_hop_by_hop(req, proxy_only) {
        // No Upgrade either (it is hop-by-hop): the common case costs one pass.
        return false;
    }
    let upgrade = upgrade_protocol(req);
    strip_hop_by_hop(req, proxy_only);
    match upgrade {
        Some(protocol) => {
            keep_upgrade(req, protocol);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> Result<String, BadPath> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn paths_are_normalized_as_rfc_3986_says() {
        for (raw, want) in [
            ("/", "/"),
            ("/api/contractors/42/bundle", "/api/contractors/42/bundle"),
            ("/api//admin/x", "/api/admin/x"),
            ("/api/./admin/x", "/api/admin/x"),
            ("/api/%61dmin/x", "/api/admin/x"),
            ("/public/../admin/x", "/admin/x"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("//", "/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/%7euser", "/~user"),
            ("/a/...", "/a/..."),
            ("/café", "/café"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn dangerous_paths_are_refused() {
        for (raw, why) in [
            ("/a%2Fb", BadPath::EncodedSeparator),
            ("/a%2fb", BadPath::EncodedSeparator),
            ("/a%5Cb", BadPath::EncodedSeparator),
            ("/a%00b", BadPath::EncodedSeparator),
            ("/a\\b", BadPath::Backslash),
            ("/..", BadPath::AboveRoot),
            ("/../admin", BadPath::AboveRoot),
            ("/a/../../b", BadPath::AboveRoot),
            ("/%2e%2e/admin", BadPath::AboveRoot),
            ("/a%2", BadPath::BadEscape),
            ("/a%zz", BadPath::BadEscape),
            ("api", BadPath::NotAbsolute),
            ("*", BadPath::NotAbsolute),
            ("", BadPath::NotAbsolute),
        ] {
            assert_eq!(norm(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        assert!(matches!(normalize_path("/api/x/y"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a%20b/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a//b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn authorities_are_lower_cased_without_default_ports() {
        for (raw, scheme, want) in [
            ("API.Example.com", "http", "api.example.com"),
            ("api.example.com:80", "http", "api.example.com"),
            ("api.example.com:443", "https", "api.example.com"),
            ("api.example.com:443", "http", "api.example.com:443"),
            ("api.example.com:8080", "http", "api.example.com:8080"),
            ("127.0.0.1:80", "http", "127.0.0.1"),
            ("[::1]:80", "http", "[::1]"),
            ("[::1]:8443", "https", "[::1]:8443"),
        ] {
            let mut out = String::new();
            assert_eq!(normalize_authority(raw, scheme, &mut out), Ok(()), "{raw}");
            assert_eq!(out, want, "{raw}");
        }
        for bad in [
            "",
            "a b",
            "evil.example/x",
            "a@b",
            "h:",
            "h:99999",
            "h:8a",
            "[::1",
            "[zz]",
        ] {
            let mut out = String::new();
            assert_eq!(
                normalize_authority(bad, "http", &mut out),
                Err(BadHost),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_upgrade_survives_the_hop_by_hop_strip_and_nothing_else_it_named() {
        let mut r = RequestHeader::build("GET", b"/ws", None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        assert!(strip_request_hop_by_hop(&mut r), "an upgrade");
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "upgrade");
        assert!(!r.headers.contains_key("x-secret"));
        assert!(r.headers.contains_key("sec-websocket-key"));
        // Not an upgrade: Connection does not ask, or HTTP/1.0.
        let mut plain = RequestHeader::build("GET", b"/", None).unwrap();
        plain.append_header("upgrade", "websocket").unwrap();
        assert!(upgrade_protocol(&plain).is_none());
        plain.append_header("connection", "upgrade").unwrap();
        assert!(upgrade_protocol(&plain).is_some());
        plain.set_version(http::Version::HTTP_10);
        assert!(upgrade_protocol(&plain).is_none());
    }

    #[test]
    fn the_authority_of_an_absolute_form_target() {
        for (target, want) in [
            (&b"http://a.example/x?y"[..], Some(&b"a.example"[..])),
            (b"HTTPS://A.example:8443", Some(b"A.example:8443")),
            (b"http://a.example?q", Some(b"a.example")),
            (b"http:///x", Some(b"")),
            (b"/x", None),
            (b"*", None),
            (b"ftp://a/x", None),
        ] {
            assert_eq!(
                absolute_form_authority(target),
                want,
                "{}",
                target.escape_ascii()
            );
        }
    }

    #[test]
    fn hop_by_hop_response_headers_are_removed() {
        let mut r = pingora_http::ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-sum"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        strip_hop_by_hop(&mut r, &header::PROXY_AUTHENTICATE);
        let mut left: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "transfer-encoding"]);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, Accept-Language, x-secret"),
            ("connection", "content-length, host"),
            ("accept-language", "de"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("host", "api.example"),
            ("content-length", "0"),
            ("accept", "*/*"),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        strip_hop_by_hop(&mut r, &header::PROXY_AUTHORIZATION);
        let mut left: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-length", "host"]);
    }

    proptest! {
        #[test]
        fn normalizing_never_panics_and_is_idempotent(p in "(/|[a-z]|%[0-9a-fA-F]{2}|\\.|%2[eE]|/\\.\\.|[~_-]){0,24}") {
            let path = format!("/{p}");
            if let Ok(once) = normalize_path(&path) {
                let twice = normalize_path(&once).map(Cow::into_owned);
                prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()));
                prop_assert!(!once.contains("//") && !once.contains("/./") && !once.contains("/../"));
                prop_assert!(once.parse::<http::Uri>().is_ok(), "{}", once);
            }
        }

        #[test]
        fn arbitrary_input_never_panics(p in "\\PC{0,40}") {
            let _ = normalize_path(&p);
            let _ = normalize_authority(&p, "http", &mut String::new());
        }
    }
}
