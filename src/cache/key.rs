//! Cache keys: what makes two requests share one entry.
//!
//! The primary key is the site (`scheme://host`, unless `[cache] key_host = false`), the
//! normalized path, then the query as keyed ([`keyed_query`]: whole, or only the route's
//! listed parameters in a canonical form), then the values of the route's key headers.
//! Header values are hashed, so credentials named in a key never sit in memory or Redis in
//! clear. Components are separated by `\n`, which cannot appear in a request line, so two
//! different requests never build the same key.

use std::borrow::Cow;

use http::HeaderMap;
use pingora_cache::key::{hash_key, CacheHashKey};
use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

use crate::config::KeyConfig;
use crate::hex::push_hex;

/// What of a request, already normalized, its key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// `scheme://authority`, or empty when the host is not keyed.
    pub site: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The query as keyed (see [`keyed_query`]).
    pub query: Option<&'a str>,
    /// The request headers (hop-by-hop ones already removed).
    pub headers: &'a HeaderMap,
}

/// Build the cache key of a request under `key` rules (`None`: unmatched route, whole query).
///
/// The primary hash is computed here once and pinned (`set_primary_bin_override`), so the L1
/// probe, the lookup, the cache lock and the miss handler do not each hash the key again.
/// Its first byte is the path's [`placement`] instead of the hash's own: every entry of one
/// path, whatever its query, site or Vary variant (see `storage::storage_key`), then lives in
/// one partition of a Redis Cluster, which is what lets a purge of a url or of `path?` visit
/// that partition alone. The other 15 bytes are the hash's, so keys stay 120-bit unique.
pub fn cache_key(input: &KeyInput<'_>, key: Option<&KeyConfig>) -> CacheKey {
    let mut primary = String::with_capacity(128);
    write_primary(input, key, &mut primary);
    let mut k = CacheKey::new(primary, "");
    let mut bin = k.primary_bin();
    bin[0] = placement(input.path);
    k.set_primary_bin_override(bin);
    k
}

/// Which of 256 places the entries of a normalized path (no query) go to: a stable hash
/// (FNV-1a, folded to a byte), the same in every process and build, since instances that
/// share a Redis Cluster must agree on it. L2 maps it onto its partitions.
pub fn placement(path: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in path.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let folded = h ^ (h >> 16);
    (folded ^ (folded >> 8)) as u8
}

/// The path a url or prefix purge target confines its entries to: the target up to its `?`
/// for a url (`/a/1?x=2` and `/a/1` alike), and for a prefix only when it holds a `?`
/// (`/a/1?` names query variants of `/a/1` alone; `/a/` names many paths: `None`).
pub fn target_path(target: &str, prefix: bool) -> Option<&str> {
    match target.split_once('?') {
        Some((path, _)) => Some(path),
        None if prefix => None,
        None => Some(target),
    }
}

/// The URL part of a request as the client sent it (`path?query`).
pub fn request_url(req: &RequestHeader) -> &str {
    req.uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |pq| pq.as_str())
}

/// The query a key holds and the upstream receives: the whole query as sent when the route
/// lists no parameters, else [`canonical_query`] of the listed ones (`None` when none is
/// left).
pub fn keyed_query<'q>(query: Option<&'q str>, key: Option<&KeyConfig>) -> Option<Cow<'q, str>> {
    let query = query?;
    match key.and_then(|k| k.query.as_deref()) {
        None => Some(Cow::Borrowed(query)),
        Some(listed) => canonical_query(query, listed).map(Cow::Owned),
    }
}

/// The listed parameters of `query`, the way the origin reads them, in one canonical form.
///
/// Names are compared after percent-decoding (`+` as space) and up to their first `[...]`
/// group, as Express's `qs` reads them: `incl%75de=x`, `include[]=x` and `[include]=x` are all
/// `include`. Each kept parameter is re-encoded (everything but unreserved characters
/// percent-encoded, hex upper-case), and they are ordered by name, repeated names keeping
/// their order (a `qs` array keeps its order). So the key and what the origin receives are
/// one and the same string, and no spelling of a parameter name can slip past the key.
pub fn canonical_query(query: &str, listed: &[String]) -> Option<String> {
    let mut kept: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(name);
            let base = qs_base_name(&name);
            listed
                .iter()
                .any(|l| l.as_bytes() == base)
                .then(|| (name, form_decode(value)))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len());
    for (i, (name, value)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(name, &mut out);
        out.push('=');
        encode_component(value, &mut out);
    }
    Some(out)
}

/// Percent-decode a form component, `+` as space (an invalid escape is kept as written).
fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The parameter `qs` files a decoded name under: the part before its first `[...]` group,
/// or that group's content when the name starts with it.
fn qs_base_name(name: &[u8]) -> &[u8] {
    let mut start = None;
    for (i, &c) in name.iter().enumerate() {
        match c {
            b'[' => start = Some(i),
            b']' => {
                if let Some(s) = start {
                    return if s == 0 { &name[1..i] } else { &name[..s] };
                }
            }
            _ => {}
        }
    }
    name
}

/// Percent-encode everything but unreserved characters.
fn encode_component(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        }
    }
}

/// Write the primary key string into `out`.
pub fn write_primary(input: &KeyInput<'_>, key: Option<&KeyConfig>, out: &mut String) {
    out.push_str(input.site);
    out.push_str(input.path);
    if let Some(q) = input.query {
        out.push('?');
        out.push_str(q);
    }
    if let Some(k) = key {
        for name in &k.headers {
            out.push('\n');
            out.push_str(name.as_str());
            out.push(':');
            let mut values = input.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                out.push('-');
                continue;
            }
            for v in values {
                push_hex(&hash_key(v.as_bytes()), out);
                out.push(',');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn req(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    /// The primary key of a request for `uri`, with no site (`key_host = false`).
    fn primary(uri: &str, headers: &[(&str, &str)], key: Option<&KeyConfig>) -> String {
        let r = req(uri, headers);
        let query = keyed_query(r.uri.query(), key);
        let input = KeyInput {
            site: "",
            path: r.uri.path(),
            query: query.as_deref(),
            headers: &r.headers,
        };
        let mut s = String::new();
        write_primary(&input, key, &mut s);
        s
    }

    #[test]
    fn whole_query_is_part_of_the_key_by_default() {
        assert_eq!(primary("/a?x=1&y=2", &[], None), "/a?x=1&y=2");
        assert_ne!(primary("/a?x=1", &[], None), primary("/a?x=2", &[], None));
    }

    #[test]
    fn listed_query_params_only_and_sorted() {
        let k = KeyConfig {
            query: Some(vec!["include".into(), "b".into()]),
            headers: vec![],
        };
        assert_eq!(
            primary("/a?utm=1&include=x&b=2", &[], Some(&k)),
            primary("/a?b=2&include=x&utm=9", &[], Some(&k))
        );
        assert_eq!(
            primary("/a?utm=1&include=x&b=2", &[], Some(&k)),
            "/a?b=2&include=x"
        );
        assert_ne!(
            primary("/a?include=x", &[], Some(&k)),
            primary("/a?include=y", &[], Some(&k))
        );
    }

    #[test]
    fn key_headers_vary_the_key_and_are_hashed() {
        let k = KeyConfig {
            query: None,
            headers: vec![http::header::AUTHORIZATION],
        };
        let a = primary("/a", &[("authorization", "Bearer alice")], Some(&k));
        let b = primary("/a", &[("authorization", "Bearer bob")], Some(&k));
        let none = primary("/a", &[], Some(&k));
        assert_ne!(a, b);
        assert_ne!(a, none);
        assert!(!a.contains("alice"));
    }

    #[test]
    fn components_cannot_collide() {
        let k = KeyConfig {
            query: None,
            headers: vec![http::header::ACCEPT_LANGUAGE],
        };
        let key_of = |lang: &str| {
            let r = req("/a", &[("accept-language", lang)]);
            let input = KeyInput {
                site: "",
                path: "/a",
                query: None,
                headers: &r.headers,
            };
            cache_key(&input, Some(&k))
        };
        assert_ne!(key_of("en").primary_bin(), key_of("de").primary_bin());
    }

    #[test]
    fn listed_names_are_compared_the_way_express_reads_them() {
        let k = KeyConfig {
            query: Some(vec!["include".into()]),
            headers: vec![],
        };
        assert_eq!(primary("/a?incl%75de=x", &[], Some(&k)), "/a?include=x");
        assert_eq!(
            primary("/a?include%5B%5D=x", &[], Some(&k)),
            "/a?include%5B%5D=x"
        );
        assert_eq!(
            primary("/a?include[]=x", &[], Some(&k)),
            "/a?include%5B%5D=x"
        );
        assert_eq!(
            primary("/a?[include]=x", &[], Some(&k)),
            "/a?%5Binclude%5D=x"
        );
        assert_ne!(
            primary("/a?include[]=x", &[], Some(&k)),
            primary("/a?include=x", &[], Some(&k)),
            "an array is not a string to the origin: different entries"
        );
        assert_eq!(primary("/a?token=secret&utm=1", &[], Some(&k)), "/a");
        assert_eq!(
            primary("/a?include=a+b%2Cc", &[], Some(&k)),
            "/a?include=a%20b%2Cc"
        );
        assert_eq!(
            primary("/a?include=2&include=1", &[], Some(&k)),
            "/a?include=2&include=1",
            "repeated names keep their order"
        );
    }

    #[test]
    fn the_site_is_part_of_the_key() {
        let r = req("/a", &[]);
        let input = |site| KeyInput {
            site,
            path: "/a",
            query: None,
            headers: &r.headers,
        };
        let a = cache_key(&input("http://api.example"), None);
        let b = cache_key(&input("http://evil.example"), None);
        let c = cache_key(&input("https://api.example"), None);
        assert_ne!(a.primary_bin(), b.primary_bin());
        assert_ne!(a.primary_bin(), c.primary_bin());
    }

    #[test]
    fn every_key_of_a_path_shares_its_placement() {
        let r = req("/a", &[("accept-language", "de")]);
        let k = KeyConfig {
            query: None,
            headers: vec![http::header::ACCEPT_LANGUAGE],
        };
        let key = |site, path, query| {
            let input = KeyInput {
                site,
                path,
                query,
                headers: &r.headers,
            };
            cache_key(&input, Some(&k)).primary_bin()
        };
        let a = key("http://h", "/items/1", None);
        let b = key("", "/items/1", Some("page=2"));
        assert_ne!(a, b);
        assert_eq!(a[0], placement("/items/1"));
        assert_eq!(b[0], placement("/items/1"));
        assert_eq!(key("", "/items/2", None)[0], placement("/items/2"));
        // stable across builds and processes: instances sharing a cluster must agree
        assert_eq!(placement(""), 0xc5);
        assert_eq!(placement("/items/1"), placement("/items/1"));
        let spread: std::collections::HashSet<u8> = (0..1000)
            .map(|i| placement(&format!("/api/items/{i}")) % 16)
            .collect();
        assert_eq!(spread.len(), 16, "paths spread over every partition");
    }

    #[test]
    fn a_purge_target_names_a_path_only_when_it_holds_one() {
        assert_eq!(target_path("/a/1?x=2", false), Some("/a/1"));
        assert_eq!(target_path("/a/1", false), Some("/a/1"));
        assert_eq!(target_path("/a/1?", true), Some("/a/1"));
        assert_eq!(target_path("/a/1?x", true), Some("/a/1"));
        assert_eq!(target_path("/a/", true), None);
        assert_eq!(target_path("", true), None);
    }

    proptest::proptest! {
        #[test]
        fn keys_never_panic_and_canonical_queries_are_fixed_points(q in "[a-z%+=&\\[\\]0-9A-F._~-]{0,40}") {
            let listed = vec!["a".to_owned(), "include".to_owned()];
            if let Some(c) = canonical_query(&q, &listed) {
                let again = canonical_query(&c, &listed);
                proptest::prop_assert_eq!(again.as_deref(), Some(c.as_str()));
            }
            let r = RequestHeader::build("GET", b"/", None).expect("request");
            let input = KeyInput { site: "http://h", path: "/p", query: Some(&q), headers: &r.headers };
            let _ = cache_key(&input, None);
        }
    }
}
