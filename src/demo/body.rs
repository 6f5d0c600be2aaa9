//! Response bodies of the stand-in backend, and the deterministic byte pattern and
//! checksum that let tests verify streamed bodies without holding them in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Size of each chunk that `/test/big` writes.
pub const BIG_CHUNK: usize = 64 * 1024;

/// The byte at `offset` of every `/test/big` body: `offset % 251`, so chunks never
/// line up with the pattern period and a dropped or repeated chunk changes the checksum.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Builds the `/test/big` pattern bytes for `[offset, offset + len)`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

/// A streaming FNV-1a 64-bit checksum, the "simple checksum" reported by `/test/upload`.
///
/// Feed it the bytes in any chunking; the result only depends on the byte sequence.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64 {
    state: u64,
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Starts an empty checksum.
    pub fn new() -> Self {
        Self {
            state: Self::OFFSET_BASIS,
        }
    }

    /// Adds `bytes` to the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u64::from(*b);
            self.state = self.state.wrapping_mul(Self::PRIME);
        }
    }

    /// The checksum as 16 lowercase hex digits (the `sha` field of `/test/upload`).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.state)
    }
}

/// The body of every stand-in response: a buffered payload, a generated stream, or a
/// body that never arrives.
#[derive(Debug)]
pub enum DemoBody {
    /// A fully buffered body (taken on first poll).
    Full(Option<Bytes>),
    /// `/test/big`: `remaining` pattern bytes starting at `offset`, generated per chunk.
    Pattern {
        /// Offset of the next byte in the pattern.
        offset: u64,
        /// Bytes still to send.
        remaining: u64,
    },
    /// `/test/stall`: announces `len` bytes and never sends any of them.
    Stall {
        /// The advertised Content-Length.
        len: u64,
    },
}

impl DemoBody {
    /// A buffered body from anything convertible to [`Bytes`].
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        DemoBody::Full(Some(bytes.into()))
    }

    /// An empty body (for 204/304/HEAD-like answers).
    pub fn empty() -> Self {
        DemoBody::Full(None)
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            DemoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Pattern { offset, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let len = (*remaining).min(BIG_CHUNK as u64) as usize;
                let chunk = pattern_chunk(*offset, len);
                *offset += len as u64;
                *remaining -= len as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            // Never ready and never woken: the connection task sits here until the
            // client gives up or the backend is stopped (which aborts the task).
            DemoBody::Stall { .. } => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Full(bytes) => bytes.as_ref().is_none_or(|b| b.is_empty()),
            DemoBody::Pattern { remaining, .. } => *remaining == 0,
            DemoBody::Stall { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            DemoBody::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
            DemoBody::Stall { len } => SizeHint::with_exact(*len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_chunking_independent() {
        let data = pattern_chunk(0, 200_000);
        let mut whole = Fnv64::new();
        whole.update(&data);
        let mut parts = Fnv64::new();
        for c in data.chunks(777) {
            parts.update(c);
        }
        assert_eq!(whole.hex(), parts.hex());
        assert_eq!(Fnv64::new().hex(), "cbf29ce484222325");
    }

    #[test]
    fn pattern_is_offset_consistent() {
        let a = pattern_chunk(0, 1000);
        let b = pattern_chunk(500, 500);
        assert_eq!(&a[500..], &b[..]);
    }
}
