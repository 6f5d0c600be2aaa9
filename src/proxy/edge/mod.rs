//! The edge: what sidecache does with each client connection around pingora's HTTP server.
//!
//! [`Edge`] is the pingora `ServerApp` of the data-plane listener. pingora hands it every
//! accepted TCP connection, and for the connection's whole life it:
//! - takes one of `server.max_connections` slots, or answers 503 JSON and closes;
//! - reads each request head itself, within `server.header_timeout` (counted from the accept
//!   for the first request, from its first byte for later ones; a late head gets 408 and the
//!   connection is closed), and checks it ([`head`]): size and field count (431), request
//!   line and field syntax, Host and framing (400, 501). A refused request is answered at
//!   once with JSON and `Connection: close` ([`refusal`]) and never reaches pingora, the
//!   request plan or an upstream;
//! - answers a request that can only be a fresh L1 hit itself ([`hit`]), as pingora's fast
//!   path would, without entering pingora;
//! - hands any other checked head to pingora's `HttpProxy` as the session's prefix: pingora
//!   parses the same bytes and never reads a head from the socket itself;
//! - after a response, waits at most `server.keepalive_timeout` for the next request; the
//!   response that uses up `server.max_requests_per_connection` says `Connection: close`;
//! - hands a connection that opens with the HTTP/2 preface (h2c with prior knowledge) to
//!   pingora's h2 server, under the limits that apply to HTTP/2 ([`h2`]).
//!
//! The limits are read from the config snapshot once per connection, so a reload applies to
//! the connections accepted after it.

mod h2;
mod head;
mod hit;
mod refusal;

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as TcpStream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::AsyncReadExt;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::SidecacheProxy;
use crate::config::ConnectionLimits;
use crate::live::Live;
use crate::telemetry::events::{
    ConnectionClosed, ConnectionOpened, ConnectionRefused, InternalEvent, RequestRefused,
};
use crate::telemetry::metrics::{ConnectionRefusal, RequestRefusal};
use h2::H2Connection;
use head::{Head, HeadLimits, Preface};
use refusal::Answer;

/// The buffer a head is first read into: most heads fit, and an allocation this small is
/// served from the allocator's thread cache. It grows by doubling for larger heads.
const HEAD_BUFFER: usize = 1024;

/// A read is given at least this much room.
const MIN_READ: usize = 512;

/// Below this many buffered bytes every read re-checks the head; above it only a read that
/// completes a line does, so a head trickled byte by byte is not parsed once per byte.
const CHECK_EVERY_READ_BELOW: usize = 1024;

/// The data-plane connection handler: limits and head checks around pingora's `HttpProxy`.
pub struct Edge {
    proxy: Arc<HttpProxy<SidecacheProxy>>,
    live: &'static Live,
    /// Open client connections (each holds a [`Slot`]).
    open: AtomicUsize,
    /// Set, and signalled, when the listener stopped (shutdown or upgrade began).
    closing: AtomicBool,
    closing_signal: Notify,
}

impl Edge {
    /// The edge around `proxy` (built with its modules initialised).
    pub(super) fn new(proxy: HttpProxy<SidecacheProxy>, live: &'static Live) -> Edge {
        Edge {
            proxy: Arc::new(proxy),
            live,
            open: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closing_signal: Notify::new(),
        }
    }

    /// Hand a connection that sent the HTTP/2 preface to pingora's h2 server: the preface
    /// (and whatever followed it) is put back in front of the stream first.
    async fn serve_h2(
        &self,
        stream: Stream,
        read: BytesMut,
        limits: &ConnectionLimits,
        shutdown: &ShutdownWatch,
    ) {
        let Ok(mut tcp) = stream.into_any().downcast::<TcpStream>() else {
            tracing::debug!(target: "sidecache::edge",
                "h2c preface on a stream that cannot be rewound; closed");
            return;
        };
        tcp.rewind(&read);
        let app = Arc::new(H2Connection::new(Arc::clone(&self.proxy), limits));
        ServerApp::process_new(&app, tcp, shutdown).await;
    }
}

#[async_trait]
impl ServerApp for Edge {
    /// One client connection, from accept to close (never handed back to pingora).
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let limits = self.live.snapshot().config.server.limits.clone();
        let Some(_slot) = Slot::take(&self.open, limits.max_connections) else {
            let reason = ConnectionRefusal::MaxConnections;
            let digest = stream.get_socket_digest();
            ConnectionRefused {
                reason,
                peer: peer(digest.as_deref()),
            }
            .emit();
            refusal::send(stream, &Answer::overloaded(reason, limits.max_connections)).await;
            return None;
        };
        let closing = self.closing_signal.notified();
        tokio::pin!(closing);
        let mut waits = Waits {
            timer: Timer::new(accepted + limits.header_timeout),
            closing,
            closed: self.closing.load(Ordering::Acquire),
        };
        let mut buf = BytesMut::new();
        let mut first = Some(accepted);
        let mut settings: Option<HttpPersistentSettings> = None;
        let peer_ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Requests answered on this connection so far, by the edge or by pingora.
        let mut requests: u32 = 0;
        loop {
            match read_head(&mut stream, &mut buf, &limits, first.take(), &mut waits).await {
                Arrival::Head => {}
                Arrival::H2 => {
                    self.serve_h2(stream, buf, &limits, shutdown).await;
                    return None;
                }
                Arrival::Refused { reason, head_only } => {
                    let digest = stream.get_socket_digest();
                    RequestRefused {
                        reason,
                        peer: peer(digest.as_deref()),
                    }
                    .emit();
                    refusal::send(stream, &Answer::refused(reason, &limits, head_only)).await;
                    return None;
                }
                Arrival::Silent => {
                    let digest = stream.get_socket_digest();
                    RequestRefused {
                        reason: RequestRefusal::HeaderTimeout,
                        peer: peer(digest.as_deref()),
                    }
                    .emit();
                    return None;
                }
                Arrival::Closed => return None,
            }
            // A fresh L1 hit is answered here, unless it is the connection's last allowed
            // request or shutdown began (pingora answers those with `Connection: close`).
            let last = requests.saturating_add(1) >= limits.max_requests_per_connection;
            if !last && !waits.closed && !*shutdown.borrow() {
                match hit::serve(self.live, &mut stream, &mut buf, &limits, peer_ip).await {
                    hit::Served::Answered => {
                        requests += 1;
                        continue;
                    }
                    hit::Served::Gone => return None,
                    hit::Served::Pass => {}
                }
            }
            requests = requests.saturating_add(1);
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(previous) => previous.apply_to_session(&mut session),
                None => session.set_pipelining_enabled(true),
            }
            // N requests on a connection are N - 1 reuses; the edge's answers count too.
            session.set_keepalive_reuses_remaining(Some(
                limits.max_requests_per_connection.saturating_sub(requests),
            ));
            send_limits(&mut session, &limits);
            session.set_pipelined_prefix(std::mem::take(&mut buf));
            let (next, kept) = self
                .proxy
                .process_new_http(session, shutdown)
                .await?
                .consume();
            stream = next;
            // What the client sent after this request (pipelined) is the start of the next
            // one: read and checked like any head before pingora sees it.
            settings = kept.map(|mut kept| {
                if let Some(ahead) = kept.take_pipelined_prefix() {
                    buf = ahead;
                }
                kept
            });
        }
    }

    /// pingora calls this once the listener stopped (shutdown or upgrade began): kept-alive
    /// connections waiting for their next request are closed, here and in pingora's proxy.
    async fn cleanup(&self) {
        self.closing.store(true, Ordering::Release);
        self.closing_signal.notify_waiters();
        self.proxy.http_cleanup().await;
    }
}

/// How a session writes to a client that reads slowly or not at all: each write must finish
/// within `server.send_timeout`, or for a large one within its length at
/// `server.min_send_rate`, whichever is longer; then the request fails, and its connection
/// (and its upstream connection) are closed.
pub(super) fn send_limits(session: &mut ServerSession, limits: &ConnectionLimits) {
    session.set_write_timeout(Some(limits.send_timeout));
    session.set_min_send_rate(limits.min_send_rate);
}

/// One of the `server.max_connections` slots, given back when the connection ends.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(open: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        ConnectionOpened.emit();
        Some(Slot(open))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        ConnectionClosed.emit();
    }
}

/// What came where a request head was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// A complete head that passed the checks; it is in the buffer.
    Head,
    /// The HTTP/2 connection preface (first request only); it is in the buffer.
    H2,
    /// A refused head, or the part of one that arrived before `header_timeout`.
    Refused {
        reason: RequestRefusal,
        head_only: bool,
    },
    /// Not one byte within `header_timeout` of the accept: closed without an answer.
    Silent,
    /// Nothing more: the client closed, or the keep-alive wait ran out or was cut short by
    /// shutdown.
    Closed,
}

/// A connection's one timer, on pingora's shared timer wheel (10 ms ticks, one timer per tick
/// for all connections, fired by pingora's clock thread): nothing is registered with tokio's
/// time driver, which would otherwise be consulted on every park of a worker.
struct Timer {
    fires: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    /// When it fires (give or take a tick).
    due: Instant,
}

impl Timer {
    fn new(due: Instant) -> Timer {
        Timer {
            fires: Box::pin(pingora_timeout::sleep(
                due.saturating_duration_since(Instant::now()),
            )),
            due,
        }
    }
}

/// What a connection waits on besides its socket, kept for the connection's whole life: a
/// kept-alive request then arms no timer and registers no waiter of its own.
struct Waits<'a, 'n> {
    /// Due at or before the current deadline: when it fires early, it is re-armed (so an
    /// idle connection re-arms it once per deadline, not once per request).
    timer: Timer,
    /// Completes when the listener stops ([`Edge::cleanup`]).
    closing: Pin<&'a mut Notified<'n>>,
    /// The listener had already stopped when the connection began.
    closed: bool,
}

impl Waits<'_, '_> {
    /// Make sure the timer fires no later than `deadline`.
    fn arm(&mut self, deadline: Instant) {
        if self.timer.due > deadline {
            self.timer = Timer::new(deadline);
        }
    }
}

/// Read one request head into `buf`. `accepted`: the first request of a connection accepted
/// then (its head is due `header_timeout` after it, and it may be the HTTP/2 preface);
/// `None`: a later request, which may keep the connection idle `keepalive_timeout`, and is
/// then due `header_timeout` after its first bytes.
///
/// Shutdown ends only the idle wait between requests (as pingora's own keep-alive wait
/// does): a client that just connected, or is sending a head, is about to send a request and
/// gets its answer (with `Connection: close`) within the same deadlines.
async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &ConnectionLimits,
    accepted: Option<Instant>,
    waits: &mut Waits<'_, '_>,
) -> Arrival {
    let bounds = HeadLimits {
        max_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    // Bytes of a pipelined request already read with the one before: checked before any read.
    let mut ahead = buf.len();
    let (mut deadline, mut started) = match accepted {
        Some(at) => (at + limits.header_timeout, true),
        None if ahead > 0 => (Instant::now() + limits.header_timeout, true),
        None if waits.closed => return Arrival::Closed,
        None => (Instant::now() + limits.keepalive_timeout, false),
    };
    waits.arm(deadline);
    loop {
        if ahead > 0 {
            let read = std::mem::take(&mut ahead);
            match check_read(buf, read, bounds) {
                Head::Complete => return Arrival::Head,
                Head::Refused { reason, head_only } => {
                    return Arrival::Refused { reason, head_only }
                }
                Head::Partial => continue,
            }
        }
        if buf.capacity() == 0 {
            *buf = BytesMut::with_capacity(HEAD_BUFFER);
        } else if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(buf.capacity());
        }
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buf) => read,
            () = waits.timer.fires.as_mut() => {
                if Instant::now() < deadline {
                    waits.timer = Timer::new(deadline);
                    continue;
                }
                return match (started, buf.is_empty()) {
                    (false, _) => Arrival::Closed,
                    (true, true) => Arrival::Silent,
                    (true, false) => Arrival::Refused {
                        reason: RequestRefusal::HeaderTimeout,
                        head_only: false,
                    },
                };
            }
            () = waits.closing.as_mut(), if !started => {
                waits.closed = true;
                return Arrival::Closed;
            }
        };
        let read = match read {
            Ok(0) | Err(_) => return Arrival::Closed,
            Ok(n) => n,
        };
        if accepted.is_some() {
            match head::preface(buf) {
                Preface::Complete => return Arrival::H2,
                Preface::Undecided => continue,
                Preface::No => {}
            }
        }
        match check_read(buf, read, bounds) {
            Head::Complete => return Arrival::Head,
            Head::Refused { reason, head_only } => return Arrival::Refused { reason, head_only },
            Head::Partial if !started => {
                started = true;
                deadline = Instant::now() + limits.header_timeout;
                waits.arm(deadline);
            }
            Head::Partial => {}
        }
    }
}

/// Check the head in `buf` after `read` more bytes arrived at its end.
fn check_read(buf: &[u8], read: usize, bounds: HeadLimits) -> Head {
    let recheck = buf.len() < CHECK_EVERY_READ_BELOW || buf[buf.len() - read..].contains(&b'\n');
    if recheck {
        head::check(buf, bounds)
    } else if buf.len() > bounds.max_bytes {
        // No line ended, so the head did not either: it is too large already.
        Head::Refused {
            reason: RequestRefusal::HeaderTooLarge,
            head_only: false,
        }
    } else {
        Head::Partial
    }
}

/// The peer address of a connection, for a log line.
fn peer(digest: Option<&pingora_core::protocols::SocketDigest>) -> Option<&dyn Display> {
    digest
        .and_then(|d| d.peer_addr())
        .map(|p| p as &dyn Display)
}
