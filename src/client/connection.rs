//! One keep-alive HTTP/1.1 connection for sidecache's own clients: connects on first use,
//! reuses the connection while the server keeps it open, reads every body to the end (so a
//! proxy finishes storing it), bounds every call by the caller's timeout and reconnects on
//! the next call after an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ClientError, InvalidHeader};

/// The longest response body a call keeps as text ([`Connection::post_json`]); bodies that
/// are only read to the end ([`Connection::get`]) have no limit.
pub const MAX_KEPT_BODY: usize = 1024 * 1024;

/// What a GET returned: the status and the `X-Cache` header, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// The response status code.
    pub status: u16,
    /// The `X-Cache` header value (lossy UTF-8), if the response has one.
    pub x_cache: Option<String>,
}

/// What a POST returned: the status and the body as text (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostResponse {
    /// The response status code.
    pub status: u16,
    /// The whole response body.
    pub body: String,
}

/// Whether a call keeps the response body or only reads it to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyUse {
    Discard,
    Keep,
}

/// One client connection to `host:port`.
pub struct Connection {
    addr: Arc<str>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A not-yet-connected connection to `addr` (`host:port`).
    pub fn new(addr: impl Into<Arc<str>>) -> Self {
        Self {
            addr: addr.into(),
            sender: None,
        }
    }

    /// GETs `path` (origin form, `/a?b`) with `headers` (`Host` defaults to the address),
    /// reading the body to the end within `timeout`.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<GetResponse, ClientError> {
        let req = self.request(Method::GET, path, headers.clone(), Bytes::new())?;
        let (head, _) = self.call(req, BodyUse::Discard, timeout).await?;
        Ok(GetResponse {
            status: head.status.as_u16(),
            x_cache: head
                .headers
                .get("x-cache")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        })
    }

    /// POSTs the JSON `body` to `path` with `headers` (plus `Content-Type:
    /// application/json`), keeping the answer's body (at most [`MAX_KEPT_BODY`] bytes), all
    /// within `timeout`.
    pub async fn post_json(
        &mut self,
        path: &str,
        headers: &HeaderMap,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<PostResponse, ClientError> {
        let mut headers = headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let req = self.request(Method::POST, path, headers, body.into())?;
        let (head, body) = self.call(req, BodyUse::Keep, timeout).await?;
        Ok(PostResponse {
            status: head.status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(&self.addr).map_err(|e| InvalidHeader {
                name: HOST.to_string(),
                reason: e.to_string(),
            })?;
            headers.insert(HOST, host);
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .map_err(ClientError::Request)?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// Sends `req` within `timeout`; on any error (a timeout may leave the connection
    /// mid-response) the connection is dropped and the next call reconnects.
    async fn call(
        &mut self,
        req: Request<Full<Bytes>>,
        body: BodyUse,
        timeout: Duration,
    ) -> Result<(http::response::Parts, Vec<u8>), ClientError> {
        let result = tokio::time::timeout(timeout, self.exchange(req, body))
            .await
            .unwrap_or(Err(ClientError::Timeout));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
        body_use: BodyUse,
    ) -> Result<(http::response::Parts, Vec<u8>), ClientError> {
        let reused = match self.sender.take() {
            Some(mut s) if !s.is_closed() => s.ready().await.is_ok().then_some(s),
            _ => None,
        };
        let sender = match reused {
            Some(s) => self.sender.insert(s),
            None => self.sender.insert(connect(&self.addr).await?),
        };
        let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
        let (head, mut body) = resp.into_parts();
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ClientError::Body)?;
            if body_use == BodyUse::Keep {
                if let Some(data) = frame.data_ref() {
                    if kept.len() + data.len() > MAX_KEPT_BODY {
                        return Err(ClientError::BodyTooLarge(MAX_KEPT_BODY));
                    }
                    kept.extend_from_slice(data);
                }
            }
        }
        Ok((head, kept))
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ClientError::Connect(e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ClientError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "client connection ended with an error");
        }
    });
    Ok(sender)
}
