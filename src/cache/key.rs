//! Cache keys: what makes two requests share one entry.
//!
//! The primary key is the path as the client sent it, then the query (whole, or only the
//! route's listed parameters, sorted), then the values of the route's key headers. Header
//! values are hashed, so credentials named in a key never sit in memory or Redis in clear.
//! Components are separated by `\n`, which cannot appear in a request line, so two different
//! requests never build the same key.

use pingora_cache::key::{hash_key, CacheHashKey};
use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

use crate::config::KeyConfig;
use crate::hex::push_hex;

/// Build the cache key of a request under `key` rules (`None`: unmatched route, whole query).
///
/// The primary hash is computed here once and pinned (`set_primary_bin_override`, the same
/// value pingora would compute), so the L1 probe, the lookup, the cache lock and the miss
/// handler do not each hash the key again.
pub fn cache_key(req: &RequestHeader, key: Option<&KeyConfig>) -> CacheKey {
    let mut primary = String::with_capacity(128);
    write_primary(req, key, &mut primary);
    let mut k = CacheKey::new(primary, "");
    k.set_primary_bin_override(k.primary_bin());
    k
}

/// The URL part of the key (`path?query` as sent), also the entry's purge-by-url identity.
pub fn request_url(req: &RequestHeader) -> &str {
    req.uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |pq| pq.as_str())
}

/// Write the primary key string into `out`.
pub fn write_primary(req: &RequestHeader, key: Option<&KeyConfig>, out: &mut String) {
    out.push_str(req.uri.path());
    let query = req.uri.query();
    match key.and_then(|k| k.query.as_ref()) {
        None => {
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
        }
        Some(listed) => {
            let mut kept: Vec<(&str, &str)> = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .filter(|(name, _)| listed.iter().any(|l| l == name))
                .collect();
            kept.sort_unstable();
            for (i, (name, value)) in kept.iter().enumerate() {
                out.push(if i == 0 { '?' } else { '&' });
                out.push_str(name);
                out.push('=');
                out.push_str(value);
            }
        }
    }
    if let Some(k) = key {
        for name in &k.headers {
            out.push('\n');
            out.push_str(name.as_str());
            out.push(':');
            let mut values = req.headers.get_all(name.as_str()).iter().peekable();
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

    fn primary(uri: &str, headers: &[(&str, &str)], key: Option<&KeyConfig>) -> String {
        let mut s = String::new();
        write_primary(&req(uri, headers), key, &mut s);
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
        let a = cache_key(&req("/a", &[("accept-language", "en")]), Some(&k));
        let b = cache_key(&req("/a", &[("accept-language", "de")]), Some(&k));
        assert_ne!(a.primary_bin(), b.primary_bin());
    }
}
