//! WebSockets through sidecache, as nginx's usual Node config passes them (`proxy_set_header
//! Upgrade $http_upgrade; Connection $connection_upgrade`): the handshake reaches the origin
//! with its upgrade, the 101 comes back, frames are echoed both ways by a real echo origin;
//! a tunnel is never cached, holds a `max_connections` slot for its life, closes when the
//! origin is silent for `tunnel_idle_timeout`, and shows in the metrics. Ordinary traffic
//! runs beside it without an error.

use crate::support;

use std::time::{Duration, Instant};

use support::backend::start_backend;
use support::http::{get, metric};
use support::raw::RawConn;
use support::sidecache::{Sidecache, SidecacheOptions};
use support::traffic::Traffic;
use support::websocket::{accept_key, frame, read_frame, EchoOrigin, BINARY, CLOSE, TEXT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
max_connections = 6
tunnel_idle_timeout = "3s"

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"

[[upstreams]]
name = "echo"
address = "ECHO"
read_timeout = "1s"

[[rewrites]]
source = "/ws/:path*"
destination = "echo"

[[routes]]
name = "sockets"
match = "GET /ws/:path*"
ttl = "60s"
"#;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Open a WebSocket through sidecache: the stream after a checked 101, and its leftover bytes.
async fn open(sc: &Sidecache, path: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(sc.listen_addr()).await.expect("connect");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: api.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let (status, headers, used) = loop {
        if let Some(parsed) = support::raw::parse_head(&buf).expect("an HTTP response") {
            break parsed;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut chunk),
        )
        .await
        .expect("a 101 in time")
        .expect("read");
        assert!(n > 0, "closed before the handshake's answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(field("upgrade").as_deref(), Some("websocket"));
    assert!(field("connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")));
    assert_eq!(field("sec-websocket-accept"), Some(accept_key(KEY)));
    buf.drain(..used);
    (stream, buf)
}

/// Send a frame and read its echo.
async fn echo(stream: &mut TcpStream, buf: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    stream
        .write_all(&frame(opcode, payload, Some(MASK)))
        .await
        .expect("send frame");
    let (op, echoed) = read_frame(stream, buf, false).await.expect("an echo");
    assert_eq!((op, echoed.len()), (opcode, payload.len()));
    assert_eq!(echoed, payload, "echoed intact");
}

async fn scrape(sc: &Sidecache, series: &str) -> f64 {
    metric(&get(&sc.admin_url("/metrics"), &[]).await.text(), series)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_is_tunnelled_frames_echoed_never_cached_and_counted() {
    let backend = start_backend(std::time::Duration::ZERO).await;
    let origin = EchoOrigin::start().await;
    let config = CONFIG.replace("ECHO", &origin.addr().to_string());
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let listen = sc.listen_addr();
    let traffic = Traffic::start(1, move |_, i| {
        format!("http://{listen}/api/events/{}/context", i % 20)
    });

    let (mut ws, mut buf) = open(&sc, "/ws/chat").await;
    // What the origin received: the handshake, upgrade and all, and the forwarded fields.
    let seen = origin
        .handshakes()
        .pop()
        .expect("the handshake reached the origin");
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/ws/chat")
    );
    assert_eq!(seen.header_all("upgrade"), ["websocket"]);
    let connection = seen.header_all("connection");
    assert!(
        connection.len() == 1 && connection[0].eq_ignore_ascii_case("upgrade"),
        "{connection:?}"
    );
    assert_eq!(seen.header_all("sec-websocket-key"), [KEY]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["api.example"]);
    assert_eq!(scrape(&sc, "sidecache_tunnels_open").await, 1.0);

    echo(&mut ws, &mut buf, TEXT, b"hello").await;
    echo(&mut ws, &mut buf, BINARY, &vec![7u8; 300]).await;
    // Longer than the origin's 1 s read_timeout apart: a tunnel is not a request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    echo(&mut ws, &mut buf, BINARY, &big).await;
    echo(&mut ws, &mut buf, CLOSE, &1000u16.to_be_bytes()).await;
    drop(ws);

    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&sc, "sidecache_tunnels_open").await != 0.0 {
        assert!(Instant::now() < deadline, "the tunnel closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = get(&sc.admin_url("/metrics"), &[]).await.text();
    assert_eq!(metric(&metrics, "sidecache_tunnels_total"), 1.0);
    let to_origin = metric(
        &metrics,
        "sidecache_tunnel_bytes_total{direction=\"to_origin\"}",
    );
    let to_client = metric(
        &metrics,
        "sidecache_tunnel_bytes_total{direction=\"to_client\"}",
    );
    assert!(
        to_origin > 70_000.0 && to_client > 70_000.0,
        "{to_origin} {to_client}"
    );
    assert_eq!(
        metric(&metrics, "sidecache_tunnel_duration_seconds_count"),
        1.0
    );

    // Never cached, though the route would cache a GET: a second handshake reaches the
    // origin again, and a plain GET is not served a stored 101.
    let (ws, _) = open(&sc, "/ws/chat").await;
    drop(ws);
    assert_eq!(origin.handshakes().len(), 2);
    let mut plain = RawConn::connect(sc.listen_addr()).await;
    plain
        .send(b"GET /ws/chat HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .await;
    let r = plain
        .response(Duration::from_secs(5))
        .await
        .expect("an answer")
        .expect_response("plain GET");
    assert_eq!(
        (r.status, r.json()["upgraded"].as_bool()),
        (200, Some(false))
    );
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnels_hold_connection_slots_and_close_when_the_origin_is_silent() {
    let backend = start_backend(std::time::Duration::ZERO).await;
    let origin = EchoOrigin::start().await;
    let config = CONFIG.replace("ECHO", &origin.addr().to_string());
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&sc, "sidecache_connections_open").await != 0.0 {
        assert!(Instant::now() < deadline, "start-up connections closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Six tunnels fill max_connections = 6: the next connection is refused.
    let mut tunnels = Vec::new();
    for i in 0..6 {
        tunnels.push(open(&sc, &format!("/ws/t{i}")).await);
    }
    let mut seventh = RawConn::connect(sc.listen_addr()).await;
    let r = seventh
        .response(Duration::from_secs(2))
        .await
        .expect("an answer")
        .expect_response("past max_connections");
    assert_eq!(r.status, 503);
    // The echo origin says nothing unless spoken to: after tunnel_idle_timeout (3 s) every
    // tunnel is closed, and its slot given back.
    for (mut ws, mut buf) in tunnels {
        let end = read_frame(&mut ws, &mut buf, false).await;
        assert!(end.is_err(), "closed by sidecache, not answered: {end:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&sc, "sidecache_tunnels_open").await != 0.0 {
        assert!(Instant::now() < deadline, "tunnels closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ws, _) = open(&sc, "/ws/again").await;
    drop(ws);
}
