//! Clients that stop reading: an HTTP/1 client with a zero window, an HTTP/2 client that
//! advertises `SETTINGS_INITIAL_WINDOW_SIZE = 0` over 100 streams. Each must lose its
//! connection after `server.send_timeout`, giving back its `max_connections` slot, and the
//! upstream connections that fed it must be closed; ordinary traffic beside them sees no
//! error.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::backend::start_backend;
use support::http::{get, metric, try_get};
use support::raw::RawConn;
use support::sidecache::{Sidecache, SidecacheOptions};
use support::traffic::Traffic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// An origin whose every answer is an endless chunked body, counting the connections it
/// still has open (a connection ends when a write fails: the proxy closed it).
struct Endless {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Endless {
    async fn start() -> Endless {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&open);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = Self::serve(stream).await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Endless { addr, open, task }
    }

    async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        let piece = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        loop {
            stream.write_all(piece.as_bytes()).await?;
        }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
max_connections = 4
send_timeout = "3s"
min_send_rate = "off"
keepalive_timeout = "2s"

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"

[[upstreams]]
name = "endless"
address = "ENDLESS"

[[rewrites]]
source = "/endless/:path*"
destination = "endless"

[cache]
default_mode = "off"
"#;

async fn start() -> (support::backend::Backend, Endless, Sidecache) {
    start_with(CONFIG).await
}

/// [`start`] with another config (`ENDLESS` is the endless origin's address).
async fn start_with(config: &str) -> (support::backend::Backend, Endless, Sidecache) {
    let backend = start_backend(Duration::ZERO).await;
    let endless = Endless::start().await;
    let config = config.replace("ENDLESS", &endless.addr.to_string());
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    (backend, endless, sc)
}

/// Poll `check` every 50 ms until it holds; panics with `what` after `within`.
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection that asks for an endless body and never reads (a tiny receive buffer, so
/// its window closes at once).
async fn non_reader(sc: &Sidecache) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(sc.listen_addr()).await.expect("connect");
    stream
        .write_all(b"GET /endless/stream HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .await
        .expect("send");
    stream
}

/// Wait (10 s at most) until no client connection holds a slot.
async fn until_idle(sc: &Sidecache) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = get(&sc.admin_url("/metrics"), &[]).await.text();
        if metric(&scrape, "sidecache_connections_open") == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "every slot given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http1_client_that_stops_reading_is_cut_and_its_slot_freed() {
    let (_backend, endless, sc) = start().await;
    until_idle(&sc).await;
    // Every slot taken by clients that never read.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(non_reader(&sc).await);
    }
    until(
        &format!("all reach the origin (so far {})", endless.open()),
        Duration::from_secs(10),
        || endless.open() == 4,
    )
    .await;
    let mut probe = RawConn::connect(sc.listen_addr()).await;
    let full = probe
        .response(Duration::from_secs(2))
        .await
        .expect("an answer")
        .expect_response("past max_connections");
    assert_eq!(full.status, 503, "max_connections reached");
    // After send_timeout both are cut: their upstream connections close, their slots free.
    until(
        "the upstream connections closed",
        Duration::from_secs(20),
        || endless.open() == 0,
    )
    .await;
    until_idle(&sc).await;
    drop(sc);
    // Ordinary traffic beside a new non-reader: never refused, never fails (on an instance
    // with room for the traffic's fresh connections, whose slots come back only when the
    // server has seen each close; on a loaded box several can be closing at once).
    let (_backend, endless, sc) =
        start_with(&CONFIG.replace("max_connections = 4", "max_connections = 16")).await;
    let listen = sc.listen_addr();
    let traffic = Traffic::start(1, move |_, i| {
        format!("http://{listen}/api/events/{}/context", i % 20)
    });
    let _c = non_reader(&sc).await;
    until(
        "the non-reader reaches the origin",
        Duration::from_secs(10),
        || endless.open() == 1,
    )
    .await;
    until("and is cut", Duration::from_secs(20), || {
        endless.open() == 0
    })
    .await;
    let served = traffic.stop_without_failures().await;
    assert!(served > 0);
    assert_eq!(
        try_get(&sc.url("/health"), &[]).await.map(|r| r.status),
        Ok(200)
    );
}

/// A client that pauses reading for longer than a small write takes at `server.min_send_rate`
/// (1 s for 16 KiB) but well within `server.send_timeout` keeps its connection: a write may
/// take the longer of the two (vendor/patches/pingora-core/0003; pingora alone gave the
/// rate's 1 s and cut the client).
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_within_send_timeout_is_not_cut_by_min_send_rate() {
    let config = CONFIG
        .replace("send_timeout = \"3s\"", "send_timeout = \"20s\"")
        .replace("min_send_rate = \"off\"", "min_send_rate = \"16KiB\"");
    let (_backend, endless, sc) = start_with(&config).await;
    let mut stream = non_reader(&sc).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < 256 * 1024 {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {read} bytes");
        read += n;
    }
    // The origin's 16 KiB chunks fill every buffer (a few MB: seconds on a busy machine);
    // the write after them then waits out the rest of the pause.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Then far more than the socket buffers hold (4 MiB each way at most here) must follow.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut more = 0;
    while more < 32 << 20 {
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .expect("32 MiB within 30 s")
            .expect("read");
        assert!(n > 0, "cut after the pause: {more} more bytes, then closed");
        more += n;
    }
    drop(stream);
    until(
        "the upstream connection closed",
        Duration::from_secs(20),
        || endless.open() == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_with_a_zero_window_over_100_streams_is_cut_and_its_slot_freed() {
    // room for the ordinary traffic's fresh connections, whose slots come back only when the
    // server has seen each close (on a loaded box, several can be closing at once)
    let (_backend, endless, sc) =
        start_with(&CONFIG.replace("max_connections = 4", "max_connections = 16")).await;
    let listen = sc.listen_addr();
    let stream = TcpStream::connect(listen).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .adaptive_window(false)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut heads = Vec::new();
    for i in 0..100 {
        let mut sender = sender.clone();
        heads.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://{listen}/endless/s{i}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            // The head arrives (headers are not flow-controlled); the body never can.
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            // Hold the body unread until the stream is reset.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(resp);
            Ok::<u16, String>(status)
        }));
    }
    until(
        "the streams reach the origin",
        Duration::from_secs(20),
        || endless.open() >= 50,
    )
    .await;
    // One slot is this connection's; ordinary traffic uses the others.
    let traffic = Traffic::start(1, move |_, i| {
        format!("http://{listen}/api/events/{}/context", i % 20)
    });
    // After send_timeout every stream is cut, so the origin connections close; the idle
    // connection is then closed after keepalive_timeout, and its slot given back.
    until(
        "every upstream connection closed",
        Duration::from_secs(30),
        || endless.open() == 0,
    )
    .await;
    until("the h2 connection closed", Duration::from_secs(20), || {
        sender.is_closed()
    })
    .await;
    let served = traffic.stop_without_failures().await;
    assert!(served > 0);
    until_idle(&sc).await;
    for head in heads {
        head.abort();
    }
}
