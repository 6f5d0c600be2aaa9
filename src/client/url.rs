//! Parsing what the client commands are pointed at: `http://` URLs ([`HttpUrl`]) and
//! request headers ([`header_map`]).

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use super::{InvalidHeader, InvalidUrl};

/// An `http://` URL split into what a [`Connection`](super::Connection) needs: where to
/// connect, the `Host` header and the request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to (port 80 when the URL names none).
    pub connect: String,
    /// The `Host` header: the URL's authority as written.
    pub host: HeaderValue,
    /// Origin-form request target, `/path?query` (`/` when the URL has no path).
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path][?query]`; other schemes, a missing scheme or host,
    /// and malformed URLs are an [`InvalidUrl`] saying why.
    pub fn parse(url: &str) -> Result<Self, InvalidUrl> {
        let bad = |reason: &str| InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!("scheme {other:?} not supported, use http://")))
            }
            None => return Err(bad("missing http:// scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = uri.port_u16().unwrap_or(80);
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            connect: format!("{host}:{port}"),
            host: host_header,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// Whether the URL is a bare base, `http://host[:port]` with at most trailing `/`s: no
    /// path, query or user info.
    pub fn is_base(&self) -> bool {
        self.path.bytes().all(|b| b == b'/') && !self.host.as_bytes().contains(&b'@')
    }
}

/// Request headers from `(name, value)` pairs (both trimmed; repeated names are kept).
pub fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, InvalidHeader> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let bad = |reason: String| InvalidHeader {
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
        let v = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
        map.append(n, v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let t = HttpUrl::parse("http://localhost:8080/api/x?y=1").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.path.as_str()),
            ("localhost:8080", "/api/x?y=1")
        );
        assert_eq!(t.host, "localhost:8080");
        let t = HttpUrl::parse("http://example.com").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.path.as_str()),
            ("example.com:80", "/")
        );
        for bad in ["https://x/", "x/y", "/path", "http://", "not a url"] {
            assert!(
                matches!(HttpUrl::parse(bad), Err(InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_base_url_has_nothing_after_the_authority() {
        for base in ["http://x:1", "http://x:1/", "http://cache.internal//"] {
            assert!(HttpUrl::parse(base).unwrap().is_base(), "{base}");
        }
        for not_base in ["http://x:1/api", "http://x:1/?q=1", "http://a@b:1"] {
            assert!(!HttpUrl::parse(not_base).unwrap().is_base(), "{not_base}");
        }
    }

    #[test]
    fn headers_are_trimmed_repeatable_and_checked() {
        let map =
            header_map(&[(" x-a ".into(), " 1 ".into()), ("x-a".into(), "2".into())]).unwrap();
        let values: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        let err = header_map(&[("bad name".into(), "v".into())]).unwrap_err();
        assert_eq!(err.name, "bad name");
        let err = header_map(&[("authorization".into(), "Bearer a\nb".into())]).unwrap_err();
        assert!(!err.to_string().contains("Bearer"), "{err}");
    }
}
