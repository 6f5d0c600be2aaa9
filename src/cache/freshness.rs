//! RFC 9111 freshness arithmetic: which cache directives apply to a response (Cache-Control,
//! or a targeted field per RFC 9213), how old a response already is when it arrives, and how
//! long it stays fresh.
//!
//! The age model maps onto pingora-cache's `CacheMeta` epoch: a stored response's epoch is
//! `response_time − corrected_initial_age` and `fresh_until = epoch + freshness_lifetime`, so
//! `now − epoch` is RFC 9111's `current_age` everywhere an `Age` is sent (pingora's hits,
//! stale hits, the L1 fast path, entries read back from L2).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName};
use http::HeaderMap;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_http::ResponseHeader;

/// Largest delta-seconds value (RFC 9111 §1.2.2): larger ones are taken as this.
pub const DELTA_MAX: u64 = 1 << 31;

/// Heuristic freshness: this fraction of the time since `Last-Modified` (§4.2.2: "a typical
/// setting of this fraction might be 10%")…
pub const HEURISTIC_FRACTION: f64 = 0.1;
/// …and never more than this.
pub const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// Statuses that are heuristically cacheable (RFC 9110 §15.1); 206 is among them there, but
/// sidecache never stores partial content.
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

pub use crate::config::SIDECACHE_CACHE_CONTROL;

/// When a response arrived, for its age (§4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// When the response header arrived.
    pub response_time: SystemTime,
    /// From sending the request to `response_time`.
    pub response_delay: Duration,
}

impl Received {
    /// A response that arrived now, after `delay`.
    pub fn now(delay: Duration) -> Self {
        Received {
            response_time: SystemTime::now(),
            response_delay: delay,
        }
    }
}

/// The cache directives that apply to a response: the first valid, non-empty targeted field in
/// `targets` order (RFC 9213 §2.2; it replaces `Cache-Control` and `Expires`), else
/// `Cache-Control`.
pub struct Directives {
    pub cc: Option<CacheControl>,
    /// A targeted field was chosen (then `Expires` is ignored).
    pub targeted: bool,
}

impl Directives {
    /// The directives of `resp` for a cache that honours the fields in `targets`.
    pub fn of(resp: &ResponseHeader, targets: &[HeaderName]) -> Self {
        for name in targets {
            if valid_targeted_field(&resp.headers, name) {
                return Directives {
                    cc: CacheControl::from_headers_named(name.as_str(), &resp.headers),
                    targeted: true,
                };
            }
        }
        Directives {
            cc: CacheControl::from_resp_headers(resp),
            targeted: false,
        }
    }

    /// Whether the directives forbid serving the response stale (§4.2.4): `no-cache` in any
    /// form, `must-revalidate`, `proxy-revalidate`, `s-maxage`.
    pub fn forbid_stale(&self) -> bool {
        self.cc.as_ref().is_some_and(|cc| {
            cc.has_key("no-cache")
                || cc.must_revalidate()
                || cc.proxy_revalidate()
                || cc.has_key("s-maxage")
        })
    }

    /// `no-cache` in either form: every reuse needs revalidation first (§5.2.2.4; the
    /// qualified form is handled as the unqualified one, as the RFC notes caches often do).
    pub fn no_cache(&self) -> bool {
        self.cc.as_ref().is_some_and(|cc| cc.has_key("no-cache"))
    }
}

/// A targeted field is a Structured Field Dictionary; an empty or invalid one is ignored
/// (RFC 9213 §2.1), and so is one whose delta-seconds directives are not integers.
fn valid_targeted_field(headers: &HeaderMap, name: &HeaderName) -> bool {
    let lines: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    if lines.is_empty() {
        return false;
    }
    let joined = lines.join(&b", "[..]);
    let Ok(dict) = sfv::Parser::parse_dictionary(&joined) else {
        return false;
    };
    !dict.is_empty()
        && dict.iter().all(|(key, entry)| match entry {
            sfv::ListEntry::Item(item) => match key.as_str() {
                "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
                    matches!(item.bare_item, sfv::BareItem::Integer(n) if n >= 0)
                }
                _ => !matches!(item.bare_item, sfv::BareItem::Boolean(false)),
            },
            sfv::ListEntry::InnerList(_) => false,
        })
}

/// The value of `Age` (§5.1): the first member of the first line, digits only; too large is
/// [`DELTA_MAX`]; anything else is no `Age` at all.
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let line = headers.get(header::AGE)?.to_str().ok()?;
    let first = line.split(',').next()?.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(first.parse::<u64>().map_or(DELTA_MAX, |v| v.min(DELTA_MAX)))
}

/// An HTTP-date header's value when there is exactly one and it parses.
pub fn date_header(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?).ok()
}

/// §4.2.3: `max(apparent_age, corrected_age_value)`, where `apparent_age = max(0,
/// response_time − date_value)` and `corrected_age_value = age_value + response_delay`.
///
/// The apparent age is taken in whole seconds, like every other age in RFC 9111: `Date` has
/// one-second resolution, so a response sent just now would otherwise look up to a second
/// old (and a `max-age=1` response stale on arrival).
pub fn corrected_initial_age(headers: &HeaderMap, rx: Received) -> Duration {
    let apparent = date_header(headers, &header::DATE)
        .and_then(|d| rx.response_time.duration_since(d).ok())
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    let corrected = Duration::from_secs(age_value(headers).unwrap_or(0)) + rx.response_delay;
    apparent.max(corrected).min(Duration::from_secs(DELTA_MAX))
}

/// How long a response is fresh, and where that comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// The origin said so: `s-maxage`, `max-age`, `no-cache` (zero) or `Expires − Date`.
    Explicit(Duration),
    /// A fraction of the time since `Last-Modified` (§4.2.2).
    Heuristic(Duration),
}

impl Lifetime {
    /// The duration, whichever its origin.
    pub fn duration(self) -> Duration {
        match self {
            Self::Explicit(d) | Self::Heuristic(d) => d,
        }
    }
}

/// The freshness lifetime of `resp` under `directives` (§4.2.1), or `None` when it has none.
///
/// `no-cache` is a lifetime of zero; `s-maxage` beats `max-age`; `Expires` counts only
/// without either (and without a targeted field) and is measured against the origin's own
/// `Date` (§5.3: several `Expires` lines or an invalid one mean already stale); otherwise a
/// heuristically cacheable status with `Last-Modified` gets the heuristic.
pub fn lifetime(resp: &ResponseHeader, directives: &Directives) -> Option<Lifetime> {
    if let Some(cc) = &directives.cc {
        if directives.no_cache() {
            return Some(Lifetime::Explicit(Duration::ZERO));
        }
        if let Some(secs) = cc.fresh_duration() {
            return Some(Lifetime::Explicit(secs));
        }
    }
    if !directives.targeted && resp.headers.contains_key(header::EXPIRES) {
        let expires = date_header(&resp.headers, &header::EXPIRES);
        let date = date_header(&resp.headers, &header::DATE);
        let fresh = match (expires, date) {
            (Some(e), Some(d)) => e.duration_since(d).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        return Some(Lifetime::Explicit(fresh));
    }
    heuristic(resp).map(Lifetime::Heuristic)
}

/// §4.2.2: [`HEURISTIC_FRACTION`] of `Date − Last-Modified`, at most [`HEURISTIC_MAX`], for
/// heuristically cacheable statuses only.
fn heuristic(resp: &ResponseHeader) -> Option<Duration> {
    if !HEURISTIC_STATUSES.contains(&resp.status.as_u16()) {
        return None;
    }
    let modified = date_header(&resp.headers, &header::LAST_MODIFIED)?;
    let date = date_header(&resp.headers, &header::DATE)?;
    let since = date.duration_since(modified).ok()?;
    Some(since.mul_f64(HEURISTIC_FRACTION).min(HEURISTIC_MAX))
}

/// The stale-while-revalidate and stale-if-error windows the origin gives (zero when its
/// directives forbid serving stale).
pub fn origin_stale_windows(directives: &Directives) -> (Duration, Duration) {
    if directives.forbid_stale() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let Some(cc) = &directives.cc else {
        return (Duration::ZERO, Duration::ZERO);
    };
    (
        cc.serve_stale_while_revalidate_duration()
            .unwrap_or_default(),
        cc.serve_stale_if_error_duration().unwrap_or_default(),
    )
}

/// Header fields a 304 may not change in the stored response (§4.3.4 and §3.2): the ones the
/// stored body depends upon (`Content-Length`, `-Encoding`, `-Range`, `Transfer-Encoding`), the
/// variant it is stored as (`Vary`), `Set-Cookie` (never shared), and `Age` (recomputed).
const NOT_FRESHENED: [HeaderName; 7] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
    header::VARY,
    header::SET_COOKIE,
    header::AGE,
];

/// The stored response freshened with a 304's header fields (§4.3.4): every field of the 304
/// replaces the stored one of that name, except [`NOT_FRESHENED`]; the status stays.
pub fn freshen(stored: &ResponseHeader, not_modified: &ResponseHeader) -> ResponseHeader {
    let mut out = stored.clone();
    let names: Vec<HeaderName> = not_modified
        .headers
        .keys()
        .filter(|n| !NOT_FRESHENED.contains(n))
        .cloned()
        .collect();
    for name in &names {
        out.remove_header(name);
    }
    for name in names {
        for value in not_modified.headers.get_all(&name) {
            // A name and value that were valid in the 304 are valid here.
            let _ = out.append_header(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).expect("response");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn age_values_are_parsed_as_the_rfc_says() {
        let age = |v: &[&str]| {
            let r = resp(200, &v.iter().map(|a| ("age", *a)).collect::<Vec<_>>());
            age_value(&r.headers)
        };
        assert_eq!(age(&["7200"]), Some(7200));
        assert_eq!(age(&["0, 7200"]), Some(0), "the first member counts");
        assert_eq!(age(&["7200", "0"]), Some(7200), "the first line counts");
        assert_eq!(age(&["2147483649"]), Some(DELTA_MAX));
        assert_eq!(age(&["99999999999999999999999"]), Some(DELTA_MAX));
        for bad in ["abc", "-7200", "7200.0", "", " "] {
            assert_eq!(age(&[bad]), None, "{bad:?} is ignored");
        }
    }

    #[test]
    fn the_corrected_initial_age_takes_date_age_and_delay() {
        let now = SystemTime::now();
        let rx = Received {
            response_time: now,
            response_delay: Duration::from_secs(2),
        };
        let r = resp(200, &[("age", "100"), ("date", &date(now))]);
        assert_eq!(
            corrected_initial_age(&r.headers, rx),
            Duration::from_secs(102)
        );
        let old = resp(200, &[("date", &date(now - Duration::from_secs(500)))]);
        let a = corrected_initial_age(&old.headers, rx);
        assert!(
            a >= Duration::from_secs(499) && a <= Duration::from_secs(501),
            "{a:?}"
        );
        let future = resp(200, &[("date", &date(now + Duration::from_secs(500)))]);
        assert_eq!(
            corrected_initial_age(&future.headers, rx),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn expires_counts_from_the_origin_date_and_only_without_max_age() {
        let now = SystemTime::now();
        let life = |h: &[(&str, &str)]| {
            let r = resp(200, h);
            lifetime(&r, &Directives::of(&r, &[])).map(Lifetime::duration)
        };
        let skewed = [
            ("date", date(now - Duration::from_secs(3600))),
            ("expires", date(now - Duration::from_secs(3000))),
        ];
        let skewed: Vec<(&str, &str)> = skewed.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(life(&skewed), Some(Duration::from_secs(600)));
        assert_eq!(
            life(&[("expires", "0")]),
            Some(Duration::ZERO),
            "invalid: stale"
        );
        let two = [("expires", date(now)), ("expires", date(now))];
        let two: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(life(&two), Some(Duration::ZERO), "several lines: stale");
        let both = [
            ("cache-control", "max-age=60".to_owned()),
            ("expires", "0".to_owned()),
        ];
        let both: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(life(&both), Some(Duration::from_secs(60)), "max-age wins");
        assert_eq!(
            life(&[("cache-control", "max-age=5, s-maxage=90")]),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            life(&[("cache-control", "no-cache=\"x\", max-age=60")]),
            Some(Duration::ZERO)
        );
        assert_eq!(life(&[]), None);
    }

    #[test]
    fn heuristics_apply_to_heuristically_cacheable_statuses_only() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let h = [("date", date(now)), ("last-modified", date(now - 10 * day))];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            let r = resp(status, &h);
            assert_eq!(
                lifetime(&r, &Directives::of(&r, &[])),
                Some(Lifetime::Heuristic(day)),
                "{status}"
            );
        }
        for status in [201, 202, 206, 302, 403, 500, 502, 503, 504, 599] {
            let r = resp(status, &h);
            assert_eq!(lifetime(&r, &Directives::of(&r, &[])), None, "{status}");
        }
        let recent = [
            ("date", date(now)),
            ("last-modified", date(now - Duration::from_secs(1000))),
        ];
        let recent: Vec<(&str, &str)> = recent.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = resp(200, &recent);
        assert_eq!(
            lifetime(&r, &Directives::of(&r, &[])),
            Some(Lifetime::Heuristic(Duration::from_secs(100)))
        );
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_when_valid() {
        let targets = [
            SIDECACHE_CACHE_CONTROL,
            HeaderName::from_static("cdn-cache-control"),
        ];
        let r = resp(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
        );
        let d = Directives::of(&r, &targets);
        assert!(d.targeted);
        assert_eq!(
            lifetime(&r, &d),
            Some(Lifetime::Explicit(Duration::from_secs(600)))
        );
        let r = resp(
            200,
            &[
                ("cdn-cache-control", "max-age=600"),
                ("sidecache-cache-control", "max-age=5"),
            ],
        );
        assert_eq!(
            lifetime(&r, &Directives::of(&r, &targets)),
            Some(Lifetime::Explicit(Duration::from_secs(5))),
            "the first target in the list wins"
        );
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =100",
            "max-age=1.5",
            "",
        ] {
            let r = resp(
                200,
                &[
                    ("cache-control", "max-age=1"),
                    ("cdn-cache-control", invalid),
                ],
            );
            let d = Directives::of(&r, &targets);
            assert!(!d.targeted, "{invalid:?} is ignored");
        }
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "private"),
            ],
        );
        let d = Directives::of(&r, &targets);
        assert!(d.targeted && d.cc.as_ref().is_some_and(|c| c.private()));
        let r = resp(200, &[("expires", "0"), ("cdn-cache-control", "public")]);
        assert_eq!(
            lifetime(&r, &Directives::of(&r, &targets)),
            None,
            "Expires is ignored under a targeted field"
        );
    }

    #[test]
    fn stale_is_forbidden_by_the_directives_the_rfc_names() {
        for cc in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "s-maxage=1",
            "no-cache",
            "no-cache=\"a\"",
        ] {
            let r = resp(200, &[("cache-control", cc)]);
            let d = Directives::of(&r, &[]);
            assert!(d.forbid_stale(), "{cc}");
            assert_eq!(
                origin_stale_windows(&d),
                (Duration::ZERO, Duration::ZERO),
                "{cc}"
            );
        }
        let r = resp(
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=30, stale-if-error=60",
            )],
        );
        let d = Directives::of(&r, &[]);
        assert_eq!(
            origin_stale_windows(&d),
            (Duration::from_secs(30), Duration::from_secs(60))
        );
    }

    #[test]
    fn a_304_freshens_every_field_but_the_excepted_ones() {
        let stored = resp(
            200,
            &[
                ("content-length", "5"),
                ("x-a", "1"),
                ("etag", "\"v1\""),
                ("vary", "accept"),
                ("age", "10"),
            ],
        );
        let nm = resp(
            304,
            &[
                ("content-length", "0"),
                ("x-a", "2"),
                ("x-a", "3"),
                ("etag", "\"v2\""),
                ("vary", "*"),
                ("age", "3"),
            ],
        );
        let f = freshen(&stored, &nm);
        assert_eq!(f.status, 200);
        assert_eq!(f.headers["content-length"], "5");
        let xa: Vec<_> = f.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["2", "3"]);
        assert_eq!(f.headers["etag"], "\"v2\"");
        assert_eq!(f.headers["vary"], "accept");
        assert_eq!(f.headers["age"], "10", "Age is recomputed, not copied");
    }
}
