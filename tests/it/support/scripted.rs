//! A scripted origin for HTTP-caching tests: each request to a path gets the next scripted
//! response for that path (status, headers, body), and every request is recorded (method,
//! target, headers), so a test can say exactly what the origin answered and check exactly
//! what it was asked.
//!
//! ```ignore
//! let origin = ScriptedOrigin::start().await;
//! origin.script("/a", [Scripted::ok("one").header("cache-control", "max-age=60")]);
//! ```
//! A path with no script left answers `599` with `{"error":"unscripted"}`, so an unexpected
//! origin request shows up in the test's assertions.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Scripted {
    /// A `200` with `body`.
    pub fn ok(body: &str) -> Self {
        Self::status(200, body)
    }

    /// A response with `status` and `body`.
    pub fn status(status: u16, body: &str) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            delay: Duration::ZERO,
        }
    }

    /// Add a header (repeatable; names keep their order).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the origin received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Scripted>>,
    seen: Vec<Seen>,
}

/// The running origin; stops when dropped.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedOrigin {
    /// Start on a free loopback port.
    pub async fn start() -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted origin");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ScriptedOrigin { addr, state, task }
    }

    /// The address to put in `[[upstreams]] address`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Append responses for `path` (no query), answered in order.
    pub fn script(&self, path: &str, responses: impl IntoIterator<Item = Scripted>) {
        let mut s = self.state.lock().expect("state");
        s.scripts
            .entry(path.to_owned())
            .or_default()
            .extend(responses);
    }

    /// Every request received so far for `path` (no query), in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let s = self.state.lock().expect("state");
        s.seen
            .iter()
            .filter(|r| r.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    /// How many requests `path` (no query) received.
    pub fn hits(&self, path: &str) -> usize {
        self.seen(path).len()
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let seen = Seen {
        method: req.method().as_str().to_owned(),
        target,
        headers: req.headers().clone(),
    };
    let _ = req.into_body().collect().await;
    let next = {
        let mut s = state.lock().expect("state");
        s.seen.push(seen);
        s.scripts.get_mut(&path).and_then(VecDeque::pop_front)
    };
    let Some(scripted) = next else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"unscripted\"}")));
        *r.status_mut() = StatusCode::from_u16(599).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(r);
    };
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    let mut builder = Response::builder().status(scripted.status);
    for (k, v) in &scripted.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if matches!(scripted.status, 204 | 304) {
        Bytes::new()
    } else {
        scripted.body
    };
    Ok(builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
