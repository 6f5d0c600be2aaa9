//! A keep-alive HTTP/1.1 GET connection for sidecache's own clients (`bench` and `warm`):
//! connects on first use, reuses the connection while the server keeps it open, reads every
//! body to the end (so a proxy finishes storing it), and reconnects after an error.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a GET returned: the status and the `X-Cache` header, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub status: u16,
    pub x_cache: Option<String>,
}

/// One client connection to `host:port`.
pub struct GetConnection {
    addr: Arc<str>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl GetConnection {
    /// A not-yet-connected connection to `addr` (`host:port`).
    pub fn new(addr: impl Into<Arc<str>>) -> Self {
        Self {
            addr: addr.into(),
            sender: None,
        }
    }

    /// GET `path` (origin form, `/a?b`) with `headers` (`Host` defaults to the address).
    /// On error the connection is dropped, and the next call reconnects; the error is a
    /// short kind (`connect: ...`, `http: ...`, `body: ...`). Callers bound it with a timeout
    /// (and should call [`Self::reset`] when the timeout fires mid-response).
    pub async fn get(&mut self, path: &str, headers: &HeaderMap) -> Result<GetResult, String> {
        let result = self.try_get(path, headers).await;
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Forget the connection (e.g. after a timeout left it mid-response).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    async fn try_get(&mut self, path: &str, headers: &HeaderMap) -> Result<GetResult, String> {
        let reusable = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            self.sender = Some(connect(&self.addr).await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err("connect: no connection".to_owned());
        };
        let mut req = Request::get(path)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        *req.headers_mut() = headers.clone();
        if !req.headers().contains_key(HOST) {
            let host = HeaderValue::from_str(&self.addr).map_err(|e| format!("host: {e}"))?;
            req.headers_mut().insert(HOST, host);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
        let status = resp.status().as_u16();
        let x_cache = resp
            .headers()
            .get("x-cache")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| format!("body: {e}"))?;
        }
        Ok(GetResult { status, x_cache })
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "client connection ended with an error");
        }
    });
    Ok(sender)
}
