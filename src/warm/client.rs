//! The warming HTTP/1.1 client: one keep-alive connection per worker, reconnecting after an
//! error, each request bounded by a timeout and its body read to the end (so the proxy
//! finishes storing it).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST, USER_AGENT};
use http::HeaderMap;

use super::Outcome;
use crate::http_client::GetConnection;

/// `User-Agent` of warming requests, so they are recognisable in logs.
const AGENT: &str = concat!("sidecache-warm/", env!("CARGO_PKG_VERSION"));

/// One worker's connection to the target.
pub(super) struct Conn {
    conn: GetConnection,
    headers: HeaderMap,
}

impl Conn {
    /// A not-yet-connected connection to `target` (`host:port`).
    pub(super) fn new(target: Arc<str>) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(host) = HeaderValue::from_str(&target) {
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        Self {
            conn: GetConnection::new(target),
            headers,
        }
    }

    /// GETs `path` and classifies the answer; never panics, never returns early without an
    /// outcome.
    pub(super) async fn warm(&mut self, path: &str, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.conn.get(path, &self.headers)).await {
            Ok(Ok(r)) => Outcome::classify(r.status, r.x_cache.as_deref()),
            Ok(Err(reason)) => Outcome::Failed(reason),
            Err(_) => {
                self.conn.reset();
                Outcome::Failed(format!("timeout after {timeout:?}"))
            }
        }
    }
}
