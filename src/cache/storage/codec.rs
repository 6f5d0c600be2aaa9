//! The versioned binary encoding of a [`StoredEntry`] (the entry itself is `super::entry`'s).
//!
//! L1 keeps `StoredEntry` values decoded (a hit rebuilds a `CacheMeta` with `CacheMeta::new`,
//! never deserializes). L2 (Redis) keeps the bytes produced by [`encode`]:
//!
//! ```text
//! magic "SCE1" (4) | format version u8 (=3) | flags u8 (1: soft-purgeable, 2: soft-purged)
//! fresh_until u64 | created u64 | epoch u64        (nanoseconds since the Unix epoch, BE)
//! swr u32 | sie u32 | status u16
//! header count u32, then per header: name len u16, name, value len u32, value
//! variance flag u8 (0/1) [+ 16 bytes]
//! url: len u32 + utf8 | route: len u32 + utf8 | tag count u32, then len u32 + utf8 each
//! body encoding u8 (0 raw, 1 zstd) [+ zstd: decoded len u32]
//! body len u32 | body (must end exactly at the end of the value)
//! ```
//! All integers big-endian. Header names keep the case `ResponseHeader` recorded (titled
//! otherwise) and the order of `ResponseHeader::map`. Any mismatch is a [`DecodeError`]; the
//! caller treats it as a miss and deletes the value.
//!
//! Version 2 (written before soft purges) is the same without the flags byte; version 1
//! (written before compression existed) is version 2 without the body encoding byte, always
//! raw. Both are still read (flags 0: a soft purge removes them), so an upgrade keeps the
//! entries already in Redis. The flags byte sits at a fixed offset (5) so that a soft purge's
//! Lua script (`lua/purge.lua`) can read it and rewrite the freshness fields in place.
//!
//! **Compression.** Bodies longer than `cache.l2.compress_above` (default 4 KiB) are stored
//! zstd-compressed at level [`ZSTD_LEVEL`] when that saves at least an eighth; the decoded
//! length is recorded, and decoding refuses a frame that does not decode to exactly it. The
//! decoded length is a claim read from Redis, so it is checked before anything is allocated
//! for it: it may not exceed the caller's bound (the live `max_object_bytes`: no body larger
//! is ever stored) nor differ from the content size the zstd frame itself declares.
//! zstd over lz4: on the stand-in's JSON payloads it stores
//! markedly less at a cost per byte that stays small next to a Redis round trip (figures in
//! docs/performance.md, `cargo bench --bench hot_path -- l2_compression`), and the library
//! is already built for pingora-cache. L1 keeps bodies decoded, so only L2 reads and writes
//! pay for it.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora_http::{HeaderNameVariant, ResponseHeader};

use super::entry::{header_size, StoredEntry};
use super::EntryContext;

/// First bytes of every encoded entry.
pub const MAGIC: &[u8; 4] = b"SCE1";
/// Format version written by this build. [`decode`] reads it, [`FORMAT_V2`] and
/// [`FORMAT_V1`]; anything else is rejected.
pub const FORMAT_VERSION: u8 = 3;
/// The format before soft purges (no flags byte), still read.
pub const FORMAT_V2: u8 = 2;
/// The previous format (no body encoding byte, raw bodies), still read.
pub const FORMAT_V1: u8 = 1;
/// zstd level of compressed bodies (1: the fastest; higher levels gained little on JSON).
pub const ZSTD_LEVEL: i32 = 1;
/// Flag: the entry may be purged softly (served stale while it is refreshed).
pub const FLAG_SOFT_PURGEABLE: u8 = 1;
/// Flag: the entry was purged softly (stale from the purge on; its refresh clears it).
pub const FLAG_SOFT_PURGED: u8 = 2;
const BODY_RAW: u8 = 0;
const BODY_ZSTD: u8 = 1;
/// Why a stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    BadMagic,
    UnknownVersion(u8),
    Truncated,
    Invalid(&'static str),
    /// A compressed body claims to decode to more than the caller's bound.
    Oversized {
        claimed: usize,
        bound: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("bad magic"),
            Self::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            Self::Truncated => f.write_str("truncated"),
            Self::Invalid(what) => write!(f, "invalid {what}"),
            Self::Oversized { claimed, bound } => write!(
                f,
                "compressed body claims {claimed} bytes, more than max_object_bytes ({bound})"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

thread_local! {
    /// This thread's zstd contexts, made on first use and kept. A context made per call was
    /// most of the cost of a small body (the 4.9 KB bundle: compress 22 -> 9 µs, decompress
    /// 20 -> 6 µs, `benches/hot_path.rs` `l2_compression`). A level-1 context holds about
    /// 1 MB at most, so each thread that compresses keeps about that much.
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `body` zstd-compressed at [`ZSTD_LEVEL`] with this thread's context (`None`: failed).
fn zstd_compress(body: &[u8]) -> Option<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return zstd::bulk::compress(body, ZSTD_LEVEL).ok();
        };
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let out = slot.as_mut()?.compress(body).ok();
        if out.is_none() {
            // A failed call may leave the context mid-frame: the next call gets a new one.
            *slot = None;
        }
        out
    })
}

/// `raw` zstd-decompressed into at most `len` bytes with this thread's context (`None`:
/// not a valid frame, or longer than `len`).
fn zstd_decompress(raw: &[u8], len: usize) -> Option<Vec<u8>> {
    ZSTD_DECOMPRESSOR.with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return zstd::bulk::decompress(raw, len).ok();
        };
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        let out = slot.as_mut()?.decompress(raw, len).ok();
        if out.is_none() {
            *slot = None;
        }
        out
    })
}

/// Encode an entry for L2, its body raw.
pub fn encode(e: &StoredEntry) -> Vec<u8> {
    encode_compressed(e, None)
}

/// Encode an entry for L2, its body zstd-compressed when longer than `compress_above` bytes
/// (`None`: never) and compressing saves at least an eighth.
pub fn encode_compressed(e: &StoredEntry, compress_above: Option<u64>) -> Vec<u8> {
    let compressed = compress_above
        .filter(|limit| e.body.len() as u64 > *limit)
        .and_then(|_| zstd_compress(&e.body))
        .filter(|z| z.len() < e.body.len() - e.body.len() / 8);
    let mut out = Vec::with_capacity(64 + e.header_bytes + e.body.len() + e.ctx.url.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(flags(e));
    out.extend_from_slice(&nanos(e.fresh_until).to_be_bytes());
    out.extend_from_slice(&nanos(e.created).to_be_bytes());
    out.extend_from_slice(&nanos(e.epoch).to_be_bytes());
    out.extend_from_slice(&e.swr.to_be_bytes());
    out.extend_from_slice(&e.sie.to_be_bytes());
    out.extend_from_slice(&e.header.status.as_u16().to_be_bytes());
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(e.header.headers.len());
    // `map` yields names with their recorded case (or titled) in insertion order.
    let _ = e.header.map(|name, value| {
        let n = match name {
            HeaderNameVariant::Case(c) => c.as_slice().to_vec(),
            HeaderNameVariant::Titled(t) => t.as_bytes().to_vec(),
        };
        pairs.push((n, value.as_bytes().to_vec()));
        Ok(())
    });
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (n, v) in &pairs {
        out.extend_from_slice(&(n.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&n[..n.len().min(u16::MAX as usize)]);
        put_str(&mut out, v);
    }
    match e.variance {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v);
        }
        None => out.push(0),
    }
    put_str(&mut out, e.ctx.url.as_bytes());
    put_str(&mut out, e.ctx.route.as_bytes());
    out.extend_from_slice(&(e.ctx.tags.len() as u32).to_be_bytes());
    for t in &e.ctx.tags {
        put_str(&mut out, t.as_bytes());
    }
    match &compressed {
        Some(z) => {
            out.push(BODY_ZSTD);
            out.extend_from_slice(&(e.body.len() as u32).to_be_bytes());
            put_str(&mut out, z);
        }
        None => {
            out.push(BODY_RAW);
            put_str(&mut out, &e.body);
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes32()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid(what))
    }
}

/// The decoded length a compressed body claims, once it is known to be worth allocating:
/// within `bound` and equal to the content size its zstd frame declares (when it does).
fn checked_decoded_len(frame: &[u8], claimed: usize, bound: usize) -> Result<usize, DecodeError> {
    if claimed > bound {
        return Err(DecodeError::Oversized { claimed, bound });
    }
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(declared)) if declared != claimed as u64 => {
            Err(DecodeError::Invalid("compressed body length"))
        }
        Ok(_) => Ok(claimed),
        Err(_) => Err(DecodeError::Invalid("compressed body")),
    }
}

/// Decode bytes produced by [`encode`] or [`encode_compressed`] (or a version 1 value). A
/// raw body is a zero-copy slice of `raw`; a compressed one may decode to at most `max_body`
/// bytes (a larger claim is an error, and nothing is allocated for it).
pub fn decode(raw: Bytes, max_body: usize) -> Result<StoredEntry, DecodeError> {
    let mut r = Reader { buf: &raw, pos: 0 };
    if r.take(4).map_err(|_| DecodeError::BadMagic)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION && version != FORMAT_V2 && version != FORMAT_V1 {
        return Err(DecodeError::UnknownVersion(version));
    }
    let flags = match version {
        FORMAT_VERSION => r.u8()?,
        _ => 0,
    };
    let fresh_until = from_nanos(r.u64()?);
    let created = from_nanos(r.u64()?);
    let epoch = from_nanos(r.u64()?);
    let swr = r.u32()?;
    let sie = r.u32()?;
    let status = r.u16()?;
    let count = r.u32()? as usize;
    // every header needs at least 6 bytes: reject absurd counts before allocating
    if count > raw.len() / 6 + 1 {
        return Err(DecodeError::Truncated);
    }
    let mut header =
        ResponseHeader::build(status, Some(count)).map_err(|_| DecodeError::Invalid("status"))?;
    for _ in 0..count {
        let nlen = r.u16()? as usize;
        let name = r.take(nlen)?;
        let value = r.bytes32()?;
        let name = std::str::from_utf8(name).map_err(|_| DecodeError::Invalid("header name"))?;
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| DecodeError::Invalid("header value"))?;
        header
            .append_header(name.to_owned(), value)
            .map_err(|_| DecodeError::Invalid("header name"))?;
    }
    let variance = match r.u8()? {
        0 => None,
        1 => Some(r.arr::<16>()?),
        _ => return Err(DecodeError::Invalid("variance flag")),
    };
    let url = r.string("url")?;
    let route = r.string("route")?;
    let ntags = r.u32()? as usize;
    if ntags > raw.len() / 4 + 1 {
        return Err(DecodeError::Truncated);
    }
    let mut tags = Vec::with_capacity(ntags);
    for _ in 0..ntags {
        tags.push(r.string("tag")?);
    }
    let (encoding, decoded_len) = match version {
        FORMAT_V1 => (BODY_RAW, 0),
        _ => match r.u8()? {
            BODY_RAW => (BODY_RAW, 0),
            BODY_ZSTD => (BODY_ZSTD, r.u32()? as usize),
            _ => return Err(DecodeError::Invalid("body encoding")),
        },
    };
    let blen = r.u32()? as usize;
    let start = r.pos;
    r.take(blen)?;
    if r.pos != raw.len() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    let body = match encoding {
        BODY_ZSTD => {
            let frame = &raw[start..start + blen];
            let decoded_len = checked_decoded_len(frame, decoded_len, max_body)?;
            let decoded = zstd_decompress(frame, decoded_len)
                .ok_or(DecodeError::Invalid("compressed body"))?;
            if decoded.len() != decoded_len {
                return Err(DecodeError::Invalid("compressed body length"));
            }
            Bytes::from(decoded)
        }
        _ => raw.slice(start..start + blen),
    };
    let header_bytes = header_size(&header);
    Ok(StoredEntry {
        fresh_until,
        created,
        epoch,
        swr,
        sie,
        header,
        variance,
        ctx: EntryContext {
            url,
            route,
            tags,
            soft_purgeable: flags & FLAG_SOFT_PURGEABLE != 0,
        },
        body,
        header_bytes,
        soft_purged: flags & FLAG_SOFT_PURGED != 0,
    })
}

/// The flags byte of `e`.
fn flags(e: &StoredEntry) -> u8 {
    let mut f = 0;
    if e.ctx.soft_purgeable {
        f |= FLAG_SOFT_PURGEABLE;
    }
    if e.soft_purged {
        f |= FLAG_SOFT_PURGED;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheMeta;

    /// The body bound the tests decode with (the default `max_object_bytes`).
    const BOUND: usize = 8 << 20;

    fn sample() -> StoredEntry {
        let mut h = ResponseHeader::build(200, None).expect("header");
        h.append_header("Content-Type", "application/json")
            .expect("h");
        h.append_header("x-Mixed-Case", "a").expect("h");
        h.append_header("x-Mixed-Case", "b").expect("h");
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 10, 20, h);
        let ctx = EntryContext {
            url: "/api/x?a=1".into(),
            route: "r".into(),
            tags: vec!["t:1".into(), "t:2".into()],
            ..Default::default()
        };
        StoredEntry::from_meta(&meta, ctx, Bytes::from_static(b"{\"ok\":true}"))
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let d = decode(Bytes::from(encode(&e)), BOUND).expect("decode");
        assert_eq!(d.fresh_until, e.fresh_until);
        assert_eq!(d.created, e.created);
        assert_eq!(d.epoch, e.epoch);
        assert_eq!((d.swr, d.sie), (10, 20));
        assert_eq!(d.header.status, e.header.status);
        assert_eq!(d.ctx.tags, e.ctx.tags);
        assert_eq!(d.ctx.url, e.ctx.url);
        assert_eq!(d.body, e.body);
        let vals: Vec<_> = d.header.headers.get_all("x-mixed-case").iter().collect();
        assert_eq!(vals, vec!["a", "b"]);
        let mut wire = Vec::new();
        d.header.header_to_h1_wire(&mut wire);
        assert!(String::from_utf8_lossy(&wire).contains("x-Mixed-Case: a"));
    }

    #[test]
    fn a_stored_header_does_not_keep_the_parse_buffer() {
        // As pingora parses an origin's header: names and values slice one read buffer.
        let read_buf = Bytes::from(
            b"Content-Type: application/json\r\nx-Mixed-Case: a\r\n{\"body\":1}".repeat(64),
        );
        let mut h = ResponseHeader::build(200, None).expect("header");
        h.append_header(read_buf.slice(0..12), raw(&read_buf, 14..30))
            .expect("h");
        h.append_header(read_buf.slice(32..44), raw(&read_buf, 46..47))
            .expect("h");
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h);
        let e = StoredEntry::from_meta(&meta, EntryContext::default(), Bytes::new());
        drop(meta);
        // The only other owner of the read buffer is this test.
        assert!(
            read_buf.is_unique(),
            "the stored header still points into the read buffer"
        );
        let mut wire = Vec::new();
        e.header.header_to_h1_wire(&mut wire);
        assert_eq!(
            wire,
            b"Content-Type: application/json\r\nx-Mixed-Case: a\r\n"
        );
    }

    fn raw(buf: &Bytes, range: std::ops::Range<usize>) -> http::HeaderValue {
        http::HeaderValue::from_maybe_shared(buf.slice(range)).expect("value")
    }

    #[test]
    fn header_with_room_is_an_exact_copy() {
        let e = sample();
        let copy = e.header_with_room(3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        e.header.header_to_h1_wire(&mut a);
        copy.header_to_h1_wire(&mut b);
        assert_eq!(a, b, "same lines, same case, same order");
        assert_eq!(
            (copy.status, copy.version),
            (e.header.status, e.header.version)
        );
        assert!(copy.headers.capacity() >= e.header.headers.len() + 3);
    }

    #[test]
    fn the_reused_zstd_contexts_survive_bad_input() {
        let a = vec![b'a'; 10_000];
        let b: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let za = zstd_compress(&a).expect("compress");
        let zb = zstd_compress(&b).expect("compress");
        assert_eq!(zstd_decompress(&za, a.len()).as_deref(), Some(&a[..]));
        assert_eq!(
            zstd_decompress(&zb[..zb.len() / 2], b.len()),
            None,
            "truncated"
        );
        assert_eq!(zstd_decompress(&zb, 100), None, "longer than allowed");
        assert_eq!(zstd_decompress(&zb, b.len()).as_deref(), Some(&b[..]));
    }

    #[test]
    fn rejects_garbage() {
        let e = encode(&sample());
        assert_eq!(
            decode(Bytes::from_static(b""), BOUND).err(),
            Some(DecodeError::BadMagic)
        );
        assert_eq!(
            decode(Bytes::from_static(b"garbage!"), BOUND).err(),
            Some(DecodeError::BadMagic)
        );
        let mut v = e.clone();
        v[4] = 9;
        assert_eq!(
            decode(Bytes::from(v), BOUND).err(),
            Some(DecodeError::UnknownVersion(9))
        );
        for cut in [5, 20, 40, e.len() - 1] {
            assert!(
                decode(Bytes::from(e[..cut].to_vec()), BOUND).is_err(),
                "cut {cut}"
            );
        }
        let mut long = e.clone();
        long.push(0);
        assert!(decode(Bytes::from(long), BOUND).is_err());
    }

    /// A version 2 value (no flags byte): what `encode` wrote before soft purges.
    fn encode_v2(e: &StoredEntry) -> Vec<u8> {
        let mut v3 = encode(e);
        v3[4] = FORMAT_V2;
        v3.remove(5);
        v3
    }

    #[test]
    fn version_2_values_are_still_read_and_never_soft_purged() {
        let mut e = sample();
        e.ctx.soft_purgeable = true;
        let d = decode(Bytes::from(encode_v2(&e)), BOUND).expect("v2 decodes");
        assert_eq!(d.ctx.url, e.ctx.url);
        assert_eq!(d.body, e.body);
        assert!(!d.ctx.soft_purgeable && !d.soft_purged);
        let mut soft = e
            .softened(e.created + Duration::from_secs(1), Duration::from_secs(60))
            .unwrap();
        let d = decode(Bytes::from(encode(&soft)), BOUND).expect("v3 decodes");
        assert!(d.ctx.soft_purgeable && d.soft_purged);
        soft.ctx.soft_purgeable = false;
        assert_eq!(encode(&soft)[5], FLAG_SOFT_PURGED);
    }

    #[test]
    fn a_soft_purge_makes_an_entry_stale_for_the_grace_at_most() {
        let mut e = sample();
        let at = e.created + Duration::from_secs(10);
        assert!(
            e.softened(at, Duration::from_secs(60)).is_none(),
            "not purgeable"
        );
        e.ctx.soft_purgeable = true;
        e.fresh_until = e.created + Duration::from_secs(300);
        let s = e.softened(at, Duration::from_secs(60)).unwrap();
        assert_eq!(s.fresh_until, at);
        assert_eq!(s.swr, 60);
        assert!(s.soft_purged);
        // already stale before the purge: its stale window still ends `grace` after it
        e.fresh_until = e.created + Duration::from_secs(4);
        let s = e.softened(at, Duration::from_secs(60)).unwrap();
        assert_eq!(s.fresh_until, e.fresh_until);
        assert_eq!(s.swr, 66);
        // stored at or after the purge (its refresh): left alone
        assert!(e.softened(e.created, Duration::from_secs(60)).is_none());
    }

    /// A version 1 value (no body encoding byte): what `encode` wrote before compression.
    fn encode_v1(e: &StoredEntry) -> Vec<u8> {
        let mut v2 = encode_v2(e);
        v2[4] = FORMAT_V1;
        // drop the body encoding byte, just before the body's length and bytes
        let at = v2.len() - e.body.len() - 4 - 1;
        assert_eq!(v2[at], BODY_RAW);
        v2.remove(at);
        v2
    }

    fn json_body(len: usize) -> Bytes {
        let mut s = String::from("[");
        let mut i = 0;
        while s.len() < len {
            s.push_str(&format!(
                "{{\"id\":{i},\"name\":\"contractor {i}\",\"state\":\"active\",\"tags\":[\"a\",\"b\"]}},"
            ));
            i += 1;
        }
        s.push(']');
        Bytes::from(s)
    }

    #[test]
    fn bodies_above_the_threshold_are_compressed_and_read_back() {
        let mut e = sample();
        e.body = json_body(20_000);
        let raw = encode(&e);
        let small = encode_compressed(&e, Some(4096));
        assert!(
            small.len() * 3 < raw.len(),
            "{} vs {}",
            small.len(),
            raw.len()
        );
        let d = decode(Bytes::from(small), BOUND).expect("decode");
        assert_eq!(d.body, e.body);
        assert_eq!(d.ctx, e.ctx);
        // at or below the threshold, and with compression off: raw
        assert_eq!(encode_compressed(&e, Some(20_000_000)), raw);
        assert_eq!(encode_compressed(&e, None), raw);
        // a body that does not shrink stays raw
        let mut noise = sample();
        noise.body = Bytes::from((0..10_000).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
        assert_eq!(encode_compressed(&noise, Some(16)), encode(&noise));
    }

    #[test]
    fn version_1_values_are_still_read() {
        let e = sample();
        let d = decode(Bytes::from(encode_v1(&e)), BOUND).expect("decode v1");
        assert_eq!(d.body, e.body);
        assert_eq!(d.ctx, e.ctx);
        assert_eq!(d.header.status, e.header.status);
    }

    #[test]
    fn a_bad_compressed_body_is_an_error_not_a_panic() {
        let mut e = sample();
        e.body = json_body(8192);
        let good = encode_compressed(&e, Some(0));
        let at = good.len() - (good.len() - 64).min(40);
        let mut corrupt = good.clone();
        for b in &mut corrupt[at..] {
            *b ^= 0x5a;
        }
        assert!(decode(Bytes::from(corrupt), BOUND).is_err());
        // a decoded length that lies, in a frame that does not declare its own
        let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("compressor");
        c.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false))
            .expect("no content size");
        let z = c.compress(&e.body).expect("compress");
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&z),
            Ok(None)
        ));
        let len = e.body.len() as u32;
        assert_eq!(
            decode(Bytes::from(claiming(&z, len - 1)), BOUND).err(),
            Some(DecodeError::Invalid("compressed body"))
        );
        assert_eq!(
            decode(Bytes::from(claiming(&z, len + 1)), BOUND).err(),
            Some(DecodeError::Invalid("compressed body length"))
        );
        assert_eq!(
            decode(Bytes::from(claiming(&z, len)), BOUND)
                .expect("honest")
                .body,
            e.body
        );
    }

    /// `sample()` with its body replaced by the zstd frame `z` that claims to decode to
    /// `claimed` bytes.
    fn claiming(z: &[u8], claimed: u32) -> Vec<u8> {
        let mut v = encode(&sample());
        let body_at = v.len() - sample().body.len() - 4 - 1;
        v.truncate(body_at);
        v.push(BODY_ZSTD);
        v.extend_from_slice(&claimed.to_be_bytes());
        v.extend_from_slice(&(z.len() as u32).to_be_bytes());
        v.extend_from_slice(z);
        v
    }

    #[test]
    fn a_compressed_body_may_claim_no_more_than_the_bound() {
        let body = json_body(10_000);
        let z = zstd::bulk::compress(&body, ZSTD_LEVEL).expect("compress");
        let len = body.len();
        // a gigabyte claimed by a few bytes is refused before anything is allocated for it
        assert_eq!(
            decode(Bytes::from(claiming(&z, 1 << 30)), BOUND).err(),
            Some(DecodeError::Oversized {
                claimed: 1 << 30,
                bound: BOUND
            })
        );
        // the bound is the caller's: exactly the body fits, one byte less does not
        let exact = Bytes::from(claiming(&z, len as u32));
        assert_eq!(decode(exact.clone(), len).expect("fits").body, body);
        assert_eq!(
            decode(exact, len - 1).err(),
            Some(DecodeError::Oversized {
                claimed: len,
                bound: len - 1
            })
        );
        // within the bound, a claim the frame contradicts is refused before decompressing
        assert_eq!(
            decode(Bytes::from(claiming(&z, (len + 1) as u32)), BOUND).err(),
            Some(DecodeError::Invalid("compressed body length"))
        );
    }

    proptest::proptest! {
        /// Any entry encodes and decodes back to itself (to the nanosecond, every header line
        /// in order, the body byte for byte), and no byte string makes `decode` panic.
        #[test]
        fn decode_inverts_encode(
            fresh in 0u64..4_000_000_000_000_000_000,
            created in 0u64..4_000_000_000_000_000_000,
            epoch in 0u64..4_000_000_000_000_000_000,
            swr: u32,
            sie: u32,
            status in 200u16..600,
            headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,20}"), 0..8),
            variance: Option<[u8; 16]>,
            url in "\\PC{0,30}",
            tags in proptest::collection::vec("\\PC{0,12}", 0..4),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            compress_above in proptest::option::of(0u64..600),
            soft_purgeable: bool,
            soft_purged: bool,
        ) {
            let mut header = ResponseHeader::build(status, None).expect("status");
            for (name, value) in &headers {
                header.append_header(name.clone(), value.trim()).expect("header");
            }
            let e = StoredEntry {
                fresh_until: from_nanos(fresh),
                created: from_nanos(created),
                epoch: from_nanos(epoch),
                swr,
                sie,
                header_bytes: header_size(&header),
                header,
                variance,
                ctx: EntryContext { url, route: "r".into(), tags, soft_purgeable },
                body: Bytes::from(body),
                soft_purged,
            };
            let d = decode(Bytes::from(encode_compressed(&e, compress_above)), BOUND).expect("decodes");
            proptest::prop_assert_eq!(d.fresh_until, e.fresh_until);
            proptest::prop_assert_eq!(d.created, e.created);
            proptest::prop_assert_eq!(d.epoch, e.epoch);
            proptest::prop_assert_eq!((d.swr, d.sie, d.variance), (e.swr, e.sie, e.variance));
            proptest::prop_assert_eq!(d.header.status, e.header.status);
            let lines = |h: &ResponseHeader| {
                h.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect::<Vec<_>>()
            };
            proptest::prop_assert_eq!(lines(&d.header), lines(&e.header));
            proptest::prop_assert_eq!(&d.ctx, &e.ctx);
            proptest::prop_assert_eq!(&d.body, &e.body);
            proptest::prop_assert_eq!(d.soft_purged, e.soft_purged);
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(Bytes::from(raw.clone()), BOUND);
            let mut framed = MAGIC.to_vec();
            framed.push(FORMAT_VERSION);
            framed.extend_from_slice(&raw);
            let _ = decode(Bytes::from(framed), BOUND);
        }
    }
}
