//! The stored form of one cache entry: [`StoredEntry`], the meta fields decoded, the header
//! compacted to its exact size, the body shared as `Bytes`. L1 keeps these values; L2 keeps
//! their encoding (`super::codec`).

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

use super::EntryContext;

/// Extra lifetime kept after the last moment pingora could still use an entry.
pub const SLACK: Duration = Duration::from_secs(5);

/// One complete cache entry: meta fields already decoded, body as shared `Bytes`.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub fresh_until: SystemTime,
    pub created: SystemTime,
    /// `CacheMeta::epoch()` (updated time or epoch override); restored as an epoch override
    /// when it differs from `created`, so age and `fresh_sec` survive a round trip.
    pub epoch: SystemTime,
    pub swr: u32,
    pub sie: u32,
    pub header: ResponseHeader,
    pub variance: Option<[u8; 16]>,
    pub ctx: EntryContext,
    pub body: Bytes,
    /// Approximate size of the header block in bytes (for the L1 weigher).
    pub header_bytes: usize,
    /// A soft purge made it stale (see [`StoredEntry::softened`]); its refresh is a
    /// background fetch that one instance of the fleet makes.
    pub soft_purged: bool,
}

impl StoredEntry {
    /// Capture the fields of `meta` plus the body and context.
    pub fn from_meta(meta: &CacheMeta, ctx: EntryContext, body: Bytes) -> Self {
        let header = compact(meta.response_header());
        let header_bytes = header_size(&header);
        StoredEntry {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            swr: meta.stale_while_revalidate_sec(),
            sie: meta.stale_if_error_sec(),
            header,
            variance: meta.variance(),
            ctx,
            body,
            header_bytes,
            soft_purged: false,
        }
    }

    /// This entry purged softly at `at`: stale from then on (never fresher than it was), and
    /// servable stale (while one request refreshes it) for `grace` after `at` at most; `None`
    /// when it may not be served stale ([`EntryContext::soft_purgeable`]), so a soft purge
    /// removes it instead, or when it was stored at or after `at` (its refresh: nothing to
    /// purge).
    pub fn softened(&self, at: SystemTime, grace: Duration) -> Option<StoredEntry> {
        if !self.ctx.soft_purgeable || self.created >= at {
            return None;
        }
        let fresh_until = self.fresh_until.min(at);
        let until = at + grace;
        let swr = until
            .duration_since(fresh_until)
            .unwrap_or_default()
            .as_secs();
        Some(StoredEntry {
            fresh_until,
            swr: u32::try_from(swr).unwrap_or(u32::MAX),
            soft_purged: true,
            ..self.clone()
        })
    }

    /// Same body and context, freshness and header from `meta` (a 304 revalidation).
    pub fn with_meta(&self, meta: &CacheMeta) -> Self {
        let mut e = StoredEntry::from_meta(meta, self.ctx.clone(), self.body.clone());
        if e.variance.is_none() {
            e.variance = self.variance;
        }
        e
    }

    /// Rebuild a `CacheMeta` (≈0.5 µs: no deserialization).
    ///
    /// Known approximation: `updated()` reads as `created()` and `provenance()` as `created()`;
    /// the epoch (what age and freshness use) is preserved through an epoch override.
    pub fn to_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.swr,
            self.sie,
            self.header.clone(),
        );
        if let Some(v) = self.variance {
            m.set_variance_key(v);
        }
        if self.epoch != self.created {
            m.set_epoch_override(self.epoch);
        }
        m
    }

    /// A copy of the stored header with room for `spare` more lines and no more: a
    /// `clone()` followed by inserts doubles both of its maps (the values and the
    /// case-preserving names), and a copy kept in L1 would then cost more than the entry's
    /// own header. Case, order, reason phrase and version are kept; names and values are
    /// shared with the stored header.
    pub fn header_with_room(&self, spare: usize) -> ResponseHeader {
        let h = &self.header;
        rebuild(h, spare, |out| {
            if h.has_case() {
                for (name, value) in h.case_header_iter() {
                    out.append_header(name.clone(), value.clone())?;
                }
            } else {
                for (name, value) in &h.headers {
                    out.append_header(name.clone(), value.clone())?;
                }
            }
            Ok(())
        })
        .unwrap_or_else(|| h.clone())
    }

    /// Last moment the entry is of any use: fresh_until + max(swr, sie) + [`SLACK`].
    pub fn deadline(&self) -> SystemTime {
        self.fresh_until + Duration::from_secs(u64::from(self.swr.max(self.sie))) + SLACK
    }

    /// Time left until [`Self::deadline`], `None` when already past.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        match self.deadline().duration_since(now) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => None,
        }
    }
}

/// A copy of `h` whose names and values live in one buffer of their exact size.
///
/// pingora parses an origin's header into slices of its read buffer (4 KiB at least, often
/// with the start of the body in it), so a stored clone would keep that whole buffer alive
/// for as long as the entry lives, unseen by L1's weigher: in a flood of small entries
/// that was more memory than the entries themselves.
fn compact(h: &ResponseHeader) -> ResponseHeader {
    let copy = rebuild(h, 0, |out| {
        if h.has_case() {
            let mut buf = BytesMut::with_capacity(
                h.case_header_iter()
                    .map(|(n, v)| n.as_slice().len() + v.len())
                    .sum(),
            );
            for (name, value) in h.case_header_iter() {
                buf.extend_from_slice(name.as_slice());
                buf.extend_from_slice(value.as_bytes());
            }
            let mut rest = buf.freeze();
            for (name, value) in h.case_header_iter() {
                let name_bytes = rest.split_to(name.as_slice().len());
                let value_bytes = rest.split_to(value.len());
                out.append_header(name_bytes, shared_value(value, value_bytes))?;
            }
        } else {
            let mut buf = BytesMut::with_capacity(h.headers.values().map(|v| v.len()).sum());
            for value in h.headers.values() {
                buf.extend_from_slice(value.as_bytes());
            }
            let mut rest = buf.freeze();
            for (name, value) in &h.headers {
                let value_bytes = rest.split_to(value.len());
                out.append_header(name.clone(), shared_value(value, value_bytes))?;
            }
        }
        Ok(())
    });
    // Kept as a clone: a clone's buckets are exactly as many as its lines (a map built for
    // n lines has room for about 1.5 n), and its names and values still share the buffer.
    copy.map_or_else(|| h.clone(), |out| out.clone())
}

/// A header like `h` (status, version, reason phrase, case-keeping or not) built for its
/// lines plus `spare`, filled by `lines`. `None` if any step fails: every name and value was
/// valid in `h`, so callers fall back to a plain clone, which is right, only larger.
fn rebuild(
    h: &ResponseHeader,
    spare: usize,
    lines: impl FnOnce(&mut ResponseHeader) -> pingora_error::Result<()>,
) -> Option<ResponseHeader> {
    let size = Some(h.headers.len() + spare);
    let mut out = if h.has_case() {
        ResponseHeader::build(h.status, size)
    } else {
        ResponseHeader::build_no_case(h.status, size)
    }
    .ok()?;
    out.set_version(h.version);
    out.set_reason_phrase(h.get_reason_phrase()).ok()?;
    lines(&mut out).ok()?;
    Some(out)
}

/// `bytes` (a copy of `value`'s) as a header value, with `value`'s sensitivity.
fn shared_value(value: &http::HeaderValue, bytes: Bytes) -> http::HeaderValue {
    let mut v = http::HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| value.clone());
    v.set_sensitive(value.is_sensitive());
    v
}

pub(super) fn header_size(h: &ResponseHeader) -> usize {
    h.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 16)
        .sum::<usize>()
        + 32
}
