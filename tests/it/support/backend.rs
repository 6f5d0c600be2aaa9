//! Starting the stand-in legacy backend ([`sidecache::demo::Backend`]) in tests.

use std::net::SocketAddr;
use std::time::Duration;

pub use sidecache::demo::{Backend, BackendOptions, Fnv64};

/// Starts a stand-in backend on `127.0.0.1` with a free port and the given `/api` delay.
pub async fn start_backend(delay: Duration) -> Backend {
    Backend::start(BackendOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        delay,
    })
    .await
    .expect("start demo backend")
}

/// The FNV-1a checksum (hex) of the first `len` bytes of the `/test/big` pattern, as
/// [`super::http::get_digest`] reports it for a `/test/big?bytes=LEN` download.
pub fn big_pattern_checksum(len: u64) -> String {
    let mut sum = Fnv64::new();
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(1 << 20) as usize;
        sum.update(&sidecache::demo::pattern_chunk(offset, n));
        offset += n as u64;
    }
    sum.hex()
}
