//! The stand-in legacy backend: a small hyper 1 server that imitates the legacy Express
//! API sidecache sits in front of. `sidecache demo`, the integration tests and the benches
//! use it as the origin.
//!
//! Like the legacy service it sends **no** cache headers, is slow by a configurable
//! artificial delay (150 ms by default, adjustable live), and has **no** `/api/health` or
//! `/health` (they 404, as in the legacy bug; sidecache answers them itself).
//!
//! API endpoints (each applies the delay):
//! - `GET /api/state-machine/diagram` (~10 KB), `GET /api/state-machine/metadata` (~2 KB)
//! - `GET /api/contractors/:id/bundle` (~5 KB, with the id and a per-id `generation`
//!   counter that increments on every origin fetch), `PUT /api/contractors/:id`
//! - `GET /api/events/:id/context` (~1 KB), `POST /api/events` (201, echoes the JSON body)
//! - `GET /api/concierge/sessions/:id/state` (with `generation`),
//!   `POST /api/concierge/sessions/:id/end` (`{"ended":true}`)
//!
//! Test-control endpoints (no delay unless asked): `/test/echo`, `/test/respond`,
//! `/test/big`, `/test/upload`, `/test/slow`, `/test/stall`, `/test/count`; see
//! [`routes`] for their parameters. Anything else is a 404 `{"error":"not_found","path":..}`.

mod body;
pub mod payloads;
pub mod routes;

pub use body::{pattern_byte, pattern_chunk, DemoBody, Fnv64, BIG_CHUNK};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::sync::lock;

/// The artificial delay of the legacy API endpoints when none is given.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(150);

/// How to start a [`Backend`].
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address to listen on; port 0 picks a free port (see [`Backend::addr`]).
    pub listen: SocketAddr,
    /// Artificial delay applied to every `/api/...` endpoint.
    pub delay: Duration,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            delay: DEFAULT_DELAY,
        }
    }
}

/// Per-path request counters of a [`Backend`]; clones share the same counters.
///
/// Every request is counted under its path (without the query), whatever the outcome.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    total: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
}

impl BackendStats {
    /// Number of requests seen for exactly `path` (no query string) since the last reset.
    pub fn hits(&self, path: &str) -> u64 {
        lock(&self.inner.per_path).get(path).copied().unwrap_or(0)
    }

    /// Number of requests seen on all paths since the last reset.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Ordering::SeqCst)
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        let mut map = lock(&self.inner.per_path);
        map.clear();
        self.inner.total.store(0, Ordering::SeqCst);
    }

    /// A sorted copy of the per-path counters (what `/test/count` reports).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.per_path)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn record(&self, path: &str) {
        let mut map = lock(&self.inner.per_path);
        *map.entry(path.to_owned()).or_insert(0) += 1;
        self.inner.total.fetch_add(1, Ordering::SeqCst);
    }
}

/// State shared by the accept loop and every request handler.
#[derive(Debug)]
pub(crate) struct Shared {
    delay_micros: AtomicU64,
    stats: BackendStats,
    generations: Mutex<HashMap<String, u64>>,
    diagram: Bytes,
    metadata: Bytes,
}

impl Shared {
    fn new(delay: Duration) -> Self {
        Self {
            delay_micros: AtomicU64::new(duration_micros(delay)),
            stats: BackendStats::default(),
            generations: Mutex::new(HashMap::new()),
            diagram: json_bytes(&payloads::diagram()),
            metadata: json_bytes(&payloads::metadata()),
        }
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }

    /// Increments and returns the generation counter of `key` (first fetch is 1).
    pub(crate) fn next_generation(&self, key: &str) -> u64 {
        let mut map = lock(&self.generations);
        let g = map.entry(key.to_owned()).or_insert(0);
        *g += 1;
        *g
    }
}

/// A running (or stopped) stand-in legacy backend.
///
/// Dropping it aborts the accept loop and all connections.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    /// Binds `opts.listen`, spawns the accept loop on the current tokio runtime and returns.
    pub async fn start(opts: BackendOptions) -> std::io::Result<Backend> {
        let listener = bind(opts.listen)?;
        let addr = listener.local_addr()?;
        let backend = Backend {
            addr,
            shared: Arc::new(Shared::new(opts.delay)),
            accept: Mutex::new(None),
            conns: Arc::new(Mutex::new(JoinSet::new())),
        };
        backend.spawn_accept(listener);
        Ok(backend)
    }

    /// The address the backend listens on (the real port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` followed by `path`, for building request URLs.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The per-path request counters.
    pub fn stats(&self) -> &BackendStats {
        &self.shared.stats
    }

    /// The current artificial delay of the `/api/...` endpoints.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Changes the artificial delay; applies to requests that start after the call.
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_micros
            .store(duration_micros(d), Ordering::SeqCst);
    }

    /// Whether the accept loop is running (false after [`Backend::stop`]).
    pub fn is_running(&self) -> bool {
        lock(&self.accept)
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// Stop accepting AND close all open connections (a real outage: clients see
    /// connection refused/reset). Returns once the listener and all sockets are closed.
    pub async fn stop(&self) {
        let accept = lock(&self.accept).take();
        if let Some(handle) = accept {
            handle.abort();
            // The listener is dropped when the aborted task is; wait for that so the
            // port refuses connections when we return.
            let _ = handle.await;
        }
        // The accept loop is gone, so nothing adds to the set any more.
        let mut conns = std::mem::take(&mut *lock(&self.conns));
        conns.shutdown().await;
    }

    /// Start again on the same address after [`Backend::stop`]; a no-op while running.
    pub async fn restart(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.spawn_accept(listener);
        Ok(())
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let conns = Arc::clone(&self.conns);
        let handle = tokio::spawn(accept_loop(listener, shared, conns));
        *lock(&self.accept) = Some(handle);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.accept).take() {
            handle.abort();
        }
        lock(&self.conns).abort_all();
    }
}

/// Starts a backend on a free loopback port with `delay`, on its own thread and runtime, for
/// a caller without a tokio runtime (`sidecache demo`); it runs until the process exits.
/// Returns its address once it listens.
pub fn start_in_background(delay: Duration) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-backend".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let opts = BackendOptions {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    delay,
                };
                match Backend::start(opts).await {
                    Ok(backend) => {
                        let _ = tx.send(Ok(backend.addr()));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Mutex<JoinSet<()>>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(error = %err, "demo backend: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let serve = async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(routes::handle(shared, req).await) }
            });
            let result = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = result {
                tracing::debug!(error = %err, "demo backend: connection ended with error");
            }
        };
        let mut set = lock(&conns);
        // Reap finished connection tasks so the set does not grow without bound.
        while set.try_join_next().is_some() {}
        set.spawn(serve);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets restart() rebind the port while closed connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn json_bytes(v: &serde_json::Value) -> Bytes {
    // Serialising a serde_json::Value cannot fail (all keys are strings).
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
