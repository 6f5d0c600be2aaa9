//! The answers the edge writes itself, before pingora sees a request: 503 for a connection
//! past `server.max_connections`, 400/408/431/501 for a refused head. Each is a small JSON
//! body (`{"error": kind, "reason": label, ...}`) with `Cache-Control: no-store` and
//! `Connection: close`, and the connection is closed after it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::Stream;
use pingora_http::ResponseHeader;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ConnectionLimits;
use crate::refusal::{body, status};
use crate::telemetry::metrics::{ConnectionRefusal, RequestRefusal};

/// How long writing an answer (and closing the write side) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// After answering, how long the edge keeps reading (and discarding) what the client still
/// sends, and how much at most: closing a socket with unread bytes makes the kernel send a
/// reset, which can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 << 10;

/// One answer the edge writes and then closes the connection after.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    status: StatusCode,
    body: Bytes,
    /// `Retry-After: 1` (the 503 of a full house).
    retry_after: bool,
    /// The request was `HEAD`: the header says how long the body would be, none follows.
    head_only: bool,
    /// Read (and drop) what the client still sends for a moment before closing.
    linger: bool,
}

impl Answer {
    /// The 503 of a connection past `server.max_connections`.
    pub(super) fn overloaded(reason: ConnectionRefusal, max_connections: usize) -> Answer {
        let body =
            json!({"error": "overloaded", "reason": reason.label(), "limit": max_connections});
        Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from(body.to_string()),
            retry_after: true,
            head_only: false,
            linger: true,
        }
    }

    /// The answer to a refused request.
    pub(super) fn refused(
        reason: RequestRefusal,
        limits: &ConnectionLimits,
        head_only: bool,
    ) -> Answer {
        Answer {
            status: status(reason),
            body: body(reason, limits),
            retry_after: false,
            head_only,
            // A late head's sender is slow by definition: no point waiting on it.
            linger: reason != RequestRefusal::HeaderTimeout,
        }
    }

    /// The answer as an HTTP/1.1 response (header and body).
    fn to_h1(&self) -> Vec<u8> {
        let date = get_cached_date();
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Cache-Control: no-store\r\nConnection: close\r\n",
                self.status.as_u16(),
                self.status.canonical_reason().unwrap_or(""),
                self.body.len(),
            )
            .as_bytes(),
        );
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.retry_after {
            out.extend_from_slice(b"Retry-After: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// The answer's header for a session pingora writes (HTTP/2), and its body.
    pub(super) fn to_session(&self) -> pingora_error::Result<(ResponseHeader, Bytes)> {
        let mut header = ResponseHeader::build(self.status, Some(4))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, self.body.len())?;
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        if self.retry_after {
            header.insert_header(http::header::RETRY_AFTER, "1")?;
        }
        let body = if self.head_only {
            Bytes::new()
        } else {
            self.body.clone()
        };
        Ok((header, body))
    }
}

/// Write `answer` on `stream`, close the write side, linger if the answer asks to, and drop
/// the connection. Every step is bounded; a client that does not read loses the answer.
pub(super) async fn send(mut stream: Stream, answer: &Answer) {
    let bytes = answer.to_h1();
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(&mut stream).await
    })
    .await;
    if answer.linger && matches!(written, Ok(Ok(()))) {
        drain(&mut stream).await;
    }
}

/// Read and drop what the client still sends, until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] were read.
async fn drain(stream: &mut Stream) {
    let until = Instant::now() + LINGER;
    let mut sink = vec![0u8; 16 << 10];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(until.into(), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_4xx_or_5xx_status_and_a_json_body_naming_it() {
        let limits = ConnectionLimits::default();
        for reason in RequestRefusal::ALL {
            let status = status(reason);
            assert!(status.is_client_error() || status.is_server_error());
            let body: serde_json::Value =
                serde_json::from_slice(&body(reason, &limits)).expect("json");
            assert_eq!(body["reason"], reason.label());
        }
        let body: serde_json::Value =
            serde_json::from_slice(&body(RequestRefusal::HeaderTooLarge, &limits)).expect("json");
        assert_eq!(body["error"], "request_header_too_large");
        assert_eq!(body["limit"], 32 << 10);
    }

    /// The header text and the JSON body of an HTTP/1 answer.
    fn split(answer: &Answer) -> (String, Option<serde_json::Value>) {
        let text = String::from_utf8(answer.to_h1()).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("blank line");
        let body = (!body.is_empty()).then(|| serde_json::from_str(body).expect("json"));
        (format!("{head}\r\n"), body)
    }

    #[test]
    fn the_h1_answer_closes_and_a_head_answer_has_no_body() {
        let limits = ConnectionLimits::default();
        let (head, body) = split(&Answer::refused(
            RequestRefusal::MissingHost,
            &limits,
            false,
        ));
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(head.contains("\r\nCache-Control: no-store\r\n"), "{head}");
        let length = super::body(RequestRefusal::MissingHost, &limits).len();
        assert!(
            head.contains(&format!("\r\nContent-Length: {length}\r\n")),
            "{head}"
        );
        let body = body.expect("a body");
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["reason"], "missing_host");

        let (head, body) = split(&Answer::refused(RequestRefusal::MissingHost, &limits, true));
        assert!(
            head.contains(&format!("\r\nContent-Length: {length}\r\n")),
            "{head}"
        );
        assert!(body.is_none(), "HEAD gets no body");

        let (head, body) = split(&Answer::overloaded(ConnectionRefusal::MaxConnections, 7));
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
        let body = body.expect("a body");
        assert_eq!(body["error"], "overloaded");
        assert_eq!(body["reason"], "max_connections");
        assert_eq!(body["limit"], 7);
    }
}
