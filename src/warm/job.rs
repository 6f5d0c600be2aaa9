//! One warming request as a [`Job`] of the client pool: GET the path with the warming
//! headers and classify the answer.

use std::time::Duration;

use http::header::{HeaderValue, HOST, USER_AGENT};
use http::HeaderMap;

use super::Outcome;
use crate::client::pool::Job;
use crate::client::{ClientError, Connection};

/// `User-Agent` of warming requests, so they are recognisable in logs.
const AGENT: &str = concat!("sidecache-warm/", env!("CARGO_PKG_VERSION"));

/// Warms one path per job on the worker's connection to the target.
pub(super) struct WarmJob {
    headers: HeaderMap,
    timeout: Duration,
}

impl WarmJob {
    /// Warming requests naming `host` (`host[:port]`), each bounded by `timeout`.
    pub(super) fn new(host: &str, timeout: Duration) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(host) = HeaderValue::from_str(host) {
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        Self { headers, timeout }
    }
}

impl Job for WarmJob {
    type Item = String;
    type Output = Outcome;

    /// GETs `path` and classifies the answer; every failure is an outcome, never a panic.
    async fn run(&self, conn: &mut Connection, path: &String) -> Outcome {
        match conn.get(path, &self.headers, self.timeout).await {
            Ok(r) => Outcome::classify(r.status, r.x_cache.as_deref()),
            Err(ClientError::Timeout) => {
                Outcome::Failed(format!("timeout after {:?}", self.timeout))
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}
