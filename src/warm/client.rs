//! The warming HTTP/1.1 client: one keep-alive connection per worker, reconnecting after an
//! error, each request bounded by a timeout and its body read to the end (so the proxy
//! finishes storing it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Outcome;

/// `User-Agent` of warming requests, so they are recognisable in logs.
const AGENT: &str = concat!("sidecache-warm/", env!("CARGO_PKG_VERSION"));

/// One worker's connection to the target.
pub(super) struct Conn {
    target: Arc<str>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    /// A not-yet-connected connection to `target` (`host:port`).
    pub(super) fn new(target: Arc<str>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    /// GETs `path` and classifies the answer; never panics, never returns early without an
    /// outcome.
    pub(super) async fn warm(&mut self, path: &str, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.get(path)).await {
            Ok(Ok((status, x_cache))) => Outcome::classify(status, x_cache.as_deref()),
            Ok(Err(reason)) => {
                self.sender = None;
                Outcome::Failed(reason)
            }
            Err(_) => {
                self.sender = None;
                Outcome::Failed(format!("timeout after {timeout:?}"))
            }
        }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Option<String>), String> {
        let reusable = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            self.sender = Some(connect(&self.target).await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err("connect: no connection".to_owned());
        };
        let req = Request::get(path)
            .header(HOST, &*self.target)
            .header(USER_AGENT, AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
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
        Ok((status, x_cache))
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "warm connection ended with error");
        }
    });
    Ok(sender)
}
