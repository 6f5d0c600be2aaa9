//! Surrogate keys: tags an origin declares on its response (`[cache] surrogate_key_header`,
//! e.g. `Surrogate-Key: contractor:42 invoices`), stored beside the route's `tags`, so a tag
//! purge reaches the entry through the same url/tag indexes in L1 and L2 (and on every
//! partition of a Redis Cluster: tags live with their entry's key).
//!
//! Bounded: at most [`MAX_KEYS`] keys of at most [`MAX_KEY_BYTES`] bytes each per response;
//! the rest are dropped and counted (`sidecache_surrogate_keys_dropped_total`, no label: key
//! names never become labels). The header itself never reaches a client
//! ([`crate::proxy`]'s `response_head::finish` removes it from every answer, and it is not
//! kept in the stored copy).

use http::{HeaderMap, HeaderName};

/// Keys taken from one response at most; the rest are dropped.
pub const MAX_KEYS: usize = 64;

/// Longest key taken, in bytes; longer keys are dropped.
pub const MAX_KEY_BYTES: usize = 128;

/// The keys of every `name` line of `headers` (space- or comma-separated), appended to `tags`
/// unless already there, within the bounds. Returns how many keys were dropped: past
/// [`MAX_KEYS`], longer than [`MAX_KEY_BYTES`], or on a line that is not visible ASCII.
pub fn add_keys(headers: &HeaderMap, name: &HeaderName, tags: &mut Vec<String>) -> u64 {
    let mut taken = 0;
    let mut dropped = 0u64;
    for line in headers.get_all(name) {
        let Ok(text) = line.to_str() else {
            dropped += line
                .as_bytes()
                .split(|b| *b == b' ' || *b == b',' || *b == b'\t')
                .filter(|k| !k.is_empty())
                .count() as u64;
            continue;
        };
        for key in text.split([' ', ',', '\t']).filter(|k| !k.is_empty()) {
            if key.len() > MAX_KEY_BYTES || taken >= MAX_KEYS {
                dropped += 1;
                continue;
            }
            taken += 1;
            if !tags.iter().any(|t| t == key) {
                tags.push(key.to_owned());
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("surrogate-key", l.parse().unwrap());
        }
        h
    }

    #[test]
    fn space_and_comma_separated_keys_join_the_route_tags_once() {
        let name = HeaderName::from_static("surrogate-key");
        let mut tags = vec!["contractor:42".to_owned()];
        let dropped = add_keys(
            &headers(&["contractor:42 invoices,  list", "a,b"]),
            &name,
            &mut tags,
        );
        assert_eq!(dropped, 0);
        assert_eq!(tags, ["contractor:42", "invoices", "list", "a", "b"]);
    }

    #[test]
    fn keys_past_the_bounds_are_dropped_and_counted() {
        let name = HeaderName::from_static("surrogate-key");
        let many: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let exact = "y".repeat(MAX_KEY_BYTES);
        let line = format!("{long} {exact} {}", many.join(" "));
        let mut tags = Vec::new();
        let dropped = add_keys(&headers(&[&line]), &name, &mut tags);
        assert_eq!(tags.len(), MAX_KEYS);
        assert_eq!(tags[0], exact);
        assert_eq!(dropped, 1 + (70 + 1 - MAX_KEYS as u64));
        assert!(!tags.contains(&long));
    }

    #[test]
    fn no_header_no_keys() {
        let name = HeaderName::from_static("surrogate-key");
        let mut tags = vec!["t".to_owned()];
        assert_eq!(add_keys(&HeaderMap::new(), &name, &mut tags), 0);
        assert_eq!(tags, ["t"]);
    }
}
