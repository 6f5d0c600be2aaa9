//! A stand-in origin that versions every resource, for tests that must tell a fresh answer
//! from a stale one (the torture test).
//!
//! A resource is a path (the query is not part of it: every query variant of a path shows
//! the same version). Every resource starts at version 1.
//! - A write (`POST`, `PUT`, `PATCH`, `DELETE`) bumps its path's version, and also every path
//!   listed in its `x-also-bump` header (comma separated: what the write changes elsewhere,
//!   e.g. the target of an `invalidate_on` rule). With `x-answer-location: PATH` it bumps that
//!   path too and answers `201` with `Location: PATH` (a create). Its body is JSON,
//!   `{"bumped": {PATH: VERSION, ...}}`: the versions it produced.
//! - A `GET` reads the version when it arrives, then waits the configured latency (a slow
//!   render after a quick read: the widest race with writes), and answers `200` with the
//!   JSON body `{"resource", "url", "version", "listener", "fetch"}`, the headers
//!   `x-version` and `x-resource`, and `Cache-Control: public, max-age=N` (for routes in
//!   origin mode; override-mode routes ignore it).
//!
//! It listens on several ports at once, one per client under test, and records every `GET`
//! with the index of the listener it came through, so a test counts origin fetches per
//! instance. [`VersionedOrigin::bump`] changes versions behind every cache's back (what an
//! operator's purge is for).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use sidecache::sync::lock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One `GET` the origin answered.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The listener (instance) it came through.
    pub listener: usize,
    /// Path and query as received.
    pub url: String,
    pub arrived: Instant,
}

/// How the origin answers.
#[derive(Debug, Clone, Copy)]
pub struct OriginOptions {
    /// A `GET` waits a random time in this range before answering.
    pub get_latency: (Duration, Duration),
    /// A write waits a random time in this range before answering.
    pub write_latency: (Duration, Duration),
    /// `max-age` of every `GET` answer.
    pub max_age_secs: u64,
}

#[derive(Default)]
struct State {
    versions: HashMap<String, u64>,
    fetches: Vec<Fetch>,
    requests: u64,
}

/// The running origin; its listeners stop when it drops.
pub struct VersionedOrigin {
    addrs: Vec<SocketAddr>,
    state: Arc<Mutex<State>>,
    accept: Vec<JoinHandle<()>>,
}

impl VersionedOrigin {
    /// Start `listeners` listeners on free `127.0.0.1` ports, sharing one set of versions.
    pub async fn start(listeners: usize, options: OriginOptions) -> VersionedOrigin {
        let state = Arc::new(Mutex::new(State::default()));
        let mut addrs = Vec::new();
        let mut accept = Vec::new();
        for index in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the versioned origin");
            addrs.push(listener.local_addr().expect("origin address"));
            let state = Arc::clone(&state);
            accept.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |req| answer(Arc::clone(&state), index, options, req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }));
        }
        VersionedOrigin {
            addrs,
            state,
            accept,
        }
    }

    /// The address of listener `index`.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.addrs[index]
    }

    /// Bump `paths` behind every cache's back; returns their new versions.
    pub fn bump(&self, paths: &[String]) -> HashMap<String, u64> {
        let mut state = lock(&self.state);
        paths
            .iter()
            .map(|p| (p.clone(), bump_one(&mut state, p)))
            .collect()
    }

    /// The `GET`s answered since the last call, in the order they arrived.
    pub fn take_fetches(&self) -> Vec<Fetch> {
        let mut fetches = std::mem::take(&mut lock(&self.state).fetches);
        fetches.sort_by_key(|f| f.arrived);
        fetches
    }
}

impl Drop for VersionedOrigin {
    fn drop(&mut self) {
        for task in &self.accept {
            task.abort();
        }
    }
}

fn bump_one(state: &mut State, path: &str) -> u64 {
    let v = state.versions.entry(path.to_owned()).or_insert(1);
    *v += 1;
    *v
}

fn random_in((lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_micros() as u64;
    lo + Duration::from_micros(fastrand::u64(0..=span))
}

async fn answer(
    state: Arc<Mutex<State>>,
    listener: usize,
    options: OriginOptions,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let path = parts.uri.path().to_owned();
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_owned());
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let response = if parts.method == Method::GET || parts.method == Method::HEAD {
        let (version, fetch) = {
            let mut s = lock(&state);
            s.requests += 1;
            (s.versions.get(&path).copied().unwrap_or(1), s.requests)
        };
        tokio::time::sleep(random_in(options.get_latency)).await;
        lock(&state).fetches.push(Fetch {
            listener,
            url: url.clone(),
            arrived,
        });
        let body = json!({
            "resource": path, "url": url, "version": version,
            "listener": listener, "fetch": fetch,
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header(
                "cache-control",
                format!("public, max-age={}", options.max_age_secs),
            )
            .header("x-version", version.to_string())
            .header("x-resource", path.as_str())
            .body(Full::new(Bytes::from(body.to_string())))
    } else {
        let location = header("x-answer-location");
        let mut paths = vec![path.clone()];
        paths.extend(
            header("x-also-bump")
                .iter()
                .flat_map(|v| v.split(','))
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
        );
        paths.extend(location.clone());
        let bumped: HashMap<String, u64> = {
            let mut s = lock(&state);
            s.requests += 1;
            paths
                .iter()
                .map(|p| (p.clone(), bump_one(&mut s, p)))
                .collect()
        };
        tokio::time::sleep(random_in(options.write_latency)).await;
        let mut builder = Response::builder()
            .status(if location.is_some() { 201 } else { 200 })
            .header("content-type", "application/json");
        if let Some(location) = &location {
            builder = builder.header("location", location.as_str());
        }
        builder.body(Full::new(Bytes::from(
            json!({ "bumped": bumped }).to_string(),
        )))
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
