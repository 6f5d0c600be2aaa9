//! A tiny hyper 1 HTTP/1.1 client for tests.
//!
//! - [`get`] / [`request`]: one fresh connection per call; panic on transport errors.
//! - [`try_get`] / [`try_request`]: same, but return `Err(String)` (connection refused,
//!   reset, timeout) for outage tests.
//! - [`get_digest`]: streams a body, keeping only its length and checksum.
//! - [`Client`]: one keep-alive connection reused across calls, for loops.
//! - [`H2Client`]: one HTTP/2 connection with prior knowledge (h2c), streams reused.
//!
//! Every call is bounded by [`TIMEOUT`] (or the given timeout) so a test never hangs.

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sidecache::demo::Fnv64;
use tokio::net::TcpStream;

/// Upper bound of every request made by this module.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A fully read response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// All response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The first value of header `name` (case-insensitive), if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {}: {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `X-Cache` header, or `<none>`.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("<none>")
    }
}

/// The value of one exact series (`name{labels}` as Prometheus prints it) in a `/metrics`
/// scrape; 0 when the series is absent.
pub fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A response whose body was streamed and only measured.
#[derive(Debug, Clone)]
pub struct Digest {
    /// Status code.
    pub status: u16,
    /// All response headers.
    pub headers: HeaderMap,
    /// Body length in bytes.
    pub bytes: u64,
    /// [`Fnv64`] checksum (hex) of the body, comparable with `/test/upload`'s `sha`.
    pub checksum: String,
}

/// GET `url` on a fresh connection; panics on transport errors or after [`TIMEOUT`].
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    request("GET", url, headers, Bytes::new()).await
}

/// Sends `method url` with `body` on a fresh connection; panics on transport errors.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
    try_request(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// GET `url` on a fresh connection, returning transport errors as `Err`.
pub async fn try_get(url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    try_request("GET", url, headers, Bytes::new()).await
}

/// Sends a request on a fresh connection, returning transport errors as `Err`.
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, String> {
    try_request_timeout(method, url, headers, body, TIMEOUT).await
}

/// Like [`try_request`] with an explicit overall timeout.
pub async fn try_request_timeout(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Resp, String> {
    let fut = async {
        let (uri, authority) = parse_url(url)?;
        let mut sender = connect(&authority).await?;
        send(&mut sender, method, &uri, &authority, headers, body).await
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

/// GET `url` on a fresh connection and stream the body, keeping only its length and
/// checksum (for multi-megabyte bodies). Panics on transport errors or after [`TIMEOUT`].
pub async fn get_digest(url: &str, headers: &[(&str, &str)]) -> Digest {
    let fut = async {
        let (uri, authority) = parse_url(url)?;
        let mut sender = connect(&authority).await?;
        let req = build("GET", &uri, &authority, headers, Bytes::new())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, mut body) = resp.into_parts();
        let mut bytes = 0u64;
        let mut sum = Fnv64::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
                sum.update(data);
            }
        }
        Ok::<_, String>(Digest {
            status: parts.status.as_u16(),
            headers: parts.headers,
            bytes,
            checksum: sum.hex(),
        })
    };
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => panic!("GET {url}: {e}"),
        Err(_) => panic!("GET {url}: timed out after {TIMEOUT:?}"),
    }
}

/// A keep-alive client: reuses one connection while it stays open and the authority is
/// the same, reconnecting otherwise.
#[derive(Default)]
pub struct Client {
    conn: Option<(String, SendRequest<Full<Bytes>>)>,
    connections_opened: u64,
}

impl Client {
    /// A client with no connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many TCP connections this client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// GET `url`; panics on transport errors or after [`TIMEOUT`].
    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, Bytes::new()).await
    }

    /// Sends a request; panics on transport errors or after [`TIMEOUT`].
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        self.try_request(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// Sends a request, returning transport errors as `Err` (the connection is then
    /// dropped and the next call reconnects).
    pub async fn try_request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let fut = async {
            let (uri, authority) = parse_url(url)?;
            let reusable = match &mut self.conn {
                Some((a, sender)) if *a == authority && !sender.is_closed() => {
                    sender.ready().await.is_ok()
                }
                _ => false,
            };
            if !reusable {
                self.conn = None;
                let sender = connect(&authority).await?;
                self.connections_opened += 1;
                self.conn = Some((authority.clone(), sender));
            }
            let Some((_, sender)) = self.conn.as_mut() else {
                return Err("no connection".to_owned());
            };
            send(sender, method, &uri, &authority, headers, body).await
        };
        let result = tokio::time::timeout(TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {TIMEOUT:?}")));
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// One cleartext HTTP/2 connection opened with prior knowledge (no upgrade), as h2c clients
/// such as `curl --http2-prior-knowledge` and gRPC speak it.
pub struct H2Client {
    authority: String,
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Client {
    /// Connect to `authority` (`host:port`) and complete the HTTP/2 handshake.
    pub async fn connect(authority: &str) -> Result<H2Client, String> {
        let fut = async {
            let stream = TcpStream::connect(authority)
                .await
                .map_err(|e| format!("connect {authority}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(stream),
            )
            .await
            .map_err(|e| format!("h2 handshake {authority}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(H2Client {
                authority: authority.to_owned(),
                sender,
            })
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| format!("timed out after {TIMEOUT:?}"))?
    }

    /// Send `method path` (with `headers` and `body`) as a new stream on this connection.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let fut = async {
            let method =
                Method::from_bytes(method.as_bytes()).map_err(|e| format!("method: {e}"))?;
            let mut req = Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.authority))
                .body(Full::new(body))
                .map_err(|e| format!("request: {e}"))?;
            for (name, value) in headers {
                let name =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
                let value = HeaderValue::from_str(value).map_err(|e| format!("{name}: {e}"))?;
                req.headers_mut().append(name, value);
            }
            self.sender
                .ready()
                .await
                .map_err(|e| format!("h2 connection: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            read_whole(resp).await
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| format!("timed out after {TIMEOUT:?}"))?
    }

    /// Whether the server closed the connection within `timeout`.
    pub async fn closed_within(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while !self.sender.is_closed() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// GET `path`; panics on a transport error.
    pub async fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("h2 GET {path}: {e}"))
    }
}

/// Splits an `http://host:port/path?query` URL into the URI and `host:port`.
fn parse_url(url: &str) -> Result<(Uri, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// URLs are supported: {url:?}"));
    }
    let host = uri.host().ok_or_else(|| format!("no host in {url:?}"))?;
    let port = uri.port_u16().unwrap_or(80);
    Ok((uri.clone(), format!("{host}:{port}")))
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn build(
    method: &str,
    uri: &Uri,
    authority: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| format!("method: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let h = req.headers_mut();
    h.insert(
        HOST,
        HeaderValue::from_str(authority).map_err(|e| format!("host: {e}"))?,
    );
    let mut replaced_host = false;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("{name}: {e}"))?;
        if name == HOST && !replaced_host {
            h.remove(HOST);
            replaced_host = true;
        }
        h.append(name, value);
    }
    Ok(req)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    uri: &Uri,
    authority: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, String> {
    let req = build(method, uri, authority, headers, body)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    read_whole(resp).await
}

/// A response with its whole body read.
async fn read_whole(resp: hyper::Response<hyper::body::Incoming>) -> Result<Resp, String> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
