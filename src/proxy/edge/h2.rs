//! HTTP/2 with prior knowledge (h2c): a connection whose first bytes are the preface is handed
//! to pingora's own h2 server, through this per-connection app, which carries the limits
//! that apply to HTTP/2:
//! - `server.keepalive_timeout` closes a connection without an open stream
//!   (`h2_idle_timeout`);
//! - `server.max_headers` and `server.max_header_bytes` (counted as HTTP/2 does, RFC 7541
//!   §4.1: name + value + 32 per field) answer a stream 431 with the edge's JSON body;
//!   the h2 crate itself refuses header lists over 64 KiB (or `max_header_bytes` if larger)
//!   while decoding them;
//! - `server.max_connections` counts the TCP connection once, and pingora's defaults bound
//!   it to 100 concurrent streams.
//!
//! `server.header_timeout` covers the preface only: HTTP/2 has no per-stream head deadline,
//! and a connection with an open stream is not idle. `server.max_requests_per_connection`
//! does not apply (pingora has no stream count per connection).

use std::fmt::Display;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use pingora_proxy::HttpProxy;

use super::refusal::Answer;
use crate::config::ConnectionLimits;
use crate::proxy::SidecacheProxy;
use crate::telemetry::events::{InternalEvent, RequestRefused};
use crate::telemetry::metrics::RequestRefusal;

/// The decoded header-list bound pingora sets by default (`default_h2_options`).
const H2_HEADER_LIST_FLOOR: usize = 64 << 10;

/// RFC 7541's per-field overhead in a header list's size.
const FIELD_OVERHEAD: usize = 32;

/// pingora's h2 server for one connection, under the limits read when it was accepted.
pub(super) struct H2Connection {
    proxy: Arc<HttpProxy<SidecacheProxy>>,
    options: HttpServerOptions,
    limits: ConnectionLimits,
}

impl H2Connection {
    pub(super) fn new(proxy: Arc<HttpProxy<SidecacheProxy>>, limits: &ConnectionLimits) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        options.h2_idle_timeout = Some(limits.keepalive_timeout);
        H2Connection {
            proxy,
            options,
            limits: limits.clone(),
        }
    }
}

#[async_trait]
impl HttpServerApp for H2Connection {
    /// One stream: refused with 431 JSON when its fields are over the limits, else proxied.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let Some(reason) = over_limits(session.req_header(), &self.limits) else {
            super::send_limits(&mut session, &self.limits);
            return self.proxy.process_new_http(session, shutdown).await;
        };
        RequestRefused {
            reason,
            peer: session.client_addr().map(|p| p as &dyn Display),
        }
        .emit();
        let head_only = session.req_header().method == http::Method::HEAD;
        let answer = Answer::refused(reason, &self.limits, head_only);
        if let Ok((header, body)) = answer.to_session() {
            if let Err(e) = session.write_error_response(header, body).await {
                tracing::debug!(target: "sidecache::edge", error = %e, "h2 refusal not sent");
            }
        }
        None
    }

    /// pingora's bounded defaults, with room for `max_header_bytes` if it is larger.
    fn h2_options(&self) -> Option<H2Options> {
        let mut options = default_h2_options();
        let list = self.limits.max_header_bytes.max(H2_HEADER_LIST_FLOOR);
        options.max_header_list_size(u32::try_from(list).unwrap_or(u32::MAX));
        Some(options)
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

/// Which of `server.max_headers` and `server.max_header_bytes` an HTTP/2 request breaks.
fn over_limits(req: &RequestHeader, limits: &ConnectionLimits) -> Option<RequestRefusal> {
    if req.headers.len() > limits.max_headers {
        return Some(RequestRefusal::TooManyHeaders);
    }
    let size: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum();
    (size > limits.max_header_bytes).then_some(RequestRefusal::HeaderTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_count_and_list_size_bounds() {
        let limits = ConnectionLimits {
            max_headers: 3,
            max_header_bytes: 100,
            ..ConnectionLimits::default()
        };
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.append_header("a", "1").expect("header");
        req.append_header("a", "2").expect("header");
        assert_eq!(over_limits(&req, &limits), None);
        req.append_header("b", "x".repeat(40)).expect("header");
        // 3 fields: 2 * (1 + 1 + 32) + (1 + 40 + 32) = 141 bytes.
        assert_eq!(
            over_limits(&req, &limits),
            Some(RequestRefusal::HeaderTooLarge)
        );
        req.append_header("c", "3").expect("header");
        assert_eq!(
            over_limits(&req, &limits),
            Some(RequestRefusal::TooManyHeaders)
        );
    }
}
