//! The edge as an attacker meets it, over raw TCP: malformed and ambiguous request heads are
//! answered at once with JSON and `Connection: close` and never reach an upstream; heads
//! that trickle in are cut off at `header_timeout`; connections past `max_connections` get
//! 503; kept-alive connections end after `keepalive_timeout` or
//! `max_requests_per_connection`; the admin listener has the same header deadline and a body
//! deadline; a chunked body over `max_request_body` stops at the bound. Meanwhile ordinary
//! traffic on other connections sees no error.
//!
//! Every case runs against the real binary, with the stand-in backend for ordinary traffic
//! and a recording upstream (`/rec/...`) for what the hostile requests would reach.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::backend::{start_backend, Backend};
use support::http::{get, metric, try_get, try_request_timeout};
use support::raw::{dechunk, parse_head, Outcome, RawConn};
use support::recorder::{AnswerWhen, BodyEnd, Recorder};
use support::sidecache::{Sidecache, SidecacheOptions};
use support::traffic::Traffic;

/// How soon a refusal must arrive: well inside every `header_timeout` used here, so an
/// answer that only came from the deadline (or never) fails.
const AT_ONCE: Duration = Duration::from_secs(2);

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
max_request_body = "4KiB"
SERVER_EXTRA

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"
connect_timeout = "500ms"
read_timeout = "5s"

[[upstreams]]
name = "recorder"
address = "RECORDER"
connect_timeout = "500ms"
read_timeout = "5s"

[[rewrites]]
source = "/rec/:path*"
destination = "recorder"

[cache]
default_mode = "off"
"#;

/// The stand-in backend, a recording upstream and sidecache in front of both, with
/// `server_extra` added to `[server]`.
async fn start(server_extra: &str, when: AnswerWhen) -> (Backend, Recorder, Sidecache) {
    let backend = start_backend(Duration::ZERO).await;
    let recorder = Recorder::start(when).await;
    let config = CONFIG
        .replace("SERVER_EXTRA", server_extra)
        .replace("RECORDER", &recorder.addr().to_string());
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    (backend, recorder, sc)
}

/// Ordinary requests, on fresh connections, through sidecache to the stand-in backend.
fn ordinary_traffic(sc: &Sidecache) -> Traffic {
    let listen = sc.listen_addr();
    Traffic::start(2, move |w, i| {
        format!("http://{listen}/api/events/{}/context", (w * 1000 + i) % 20)
    })
}

/// Stop the ordinary traffic and assert it was served and never failed.
async fn assert_undisturbed(traffic: Traffic) {
    let (ok, failed) = traffic.stop().await;
    assert!(ok > 0, "ordinary traffic was served");
    assert!(failed.is_empty(), "ordinary traffic failed: {failed:?}");
}

async fn scrape(sc: &Sidecache) -> String {
    get(&sc.admin_url("/metrics"), &[]).await.text()
}

fn refused_count(scrape: &str, reason: &str) -> f64 {
    metric(
        scrape,
        &format!("sidecache_requests_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Send `bytes` on a new connection and return the answer (which must come at once), after
/// checking it is JSON, says `Connection: close`, and that the connection then closes.
async fn refusal(sc: &Sidecache, what: &str, bytes: &[u8], head: bool) -> (u16, String) {
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(bytes).await;
    let outcome = if head {
        conn.head_response(AT_ONCE).await
    } else {
        conn.response(AT_ONCE).await
    };
    let r = outcome
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .expect_response(what);
    assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert!(
        conn.closed_within(AT_ONCE).await,
        "{what}: closed after the answer"
    );
    let reason = if head {
        assert!(r.body.is_empty(), "{what}: a HEAD answer has no body");
        String::new()
    } else {
        let json = r.json();
        assert!(json["error"].is_string(), "{what}: {json}");
        json["reason"].as_str().unwrap_or("").to_owned()
    };
    (r.status, reason)
}

/// `(what, request bytes, status, reason)` of every head the edge refuses.
fn refused_heads() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let host = "Host: a\r\n";
    let get = |extra: &str| format!("GET /rec/x HTTP/1.1\r\n{host}{extra}\r\n").into_bytes();
    let post = |fields: &str, body: &str| {
        format!("POST /rec/x HTTP/1.1\r\n{host}{fields}\r\n{body}").into_bytes()
    };
    let big = format!("X-Big: {}\r\n", "v".repeat(70 * 1024));
    let many: String = (0..200).map(|i| format!("X-F{i}: v\r\n")).collect();
    vec![
        ("70 KB of header fields", get(&big), 431, "header_too_large"),
        ("200 header fields", get(&many), 431, "too_many_headers"),
        (
            "bad method token",
            b"G@T /rec/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "HTTP/1.2",
            b"GET /rec/x HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "HTTP/2.0 in an HTTP/1 request line",
            b"GET /rec/x HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "lower-case version",
            b"GET /rec/x http/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "no version, under 24 bytes",
            b"GET /rec\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "space in the target",
            b"GET /rec/a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "control byte in the target",
            b"GET /rec/a\x01b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "double space before the target",
            b"GET  /rec/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        (
            "target without a slash",
            b"GET rec/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "bad_target",
        ),
        (
            "asterisk target on GET",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
            "bad_target",
        ),
        (
            "CONNECT",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
            400,
            "bad_target",
        ),
        (
            "bare CR in a value",
            get("X-A: a\rb\r\n"),
            400,
            "malformed_header",
        ),
        (
            "bare CR ending the request line",
            b"GET /rec/x HTTP/1.1\rHost: a\r\n\r\n".to_vec(),
            400,
            "malformed_request_line",
        ),
        ("obs-fold", get("X-A: a\r\n b\r\n"), 400, "malformed_header"),
        (
            "space in a field name",
            get("X A: 1\r\n"),
            400,
            "malformed_header",
        ),
        (
            "@ in a field name",
            get("X@A: 1\r\n"),
            400,
            "malformed_header",
        ),
        (
            "space before the colon",
            get("X-A : 1\r\n"),
            400,
            "malformed_header",
        ),
        (
            "NUL in a value",
            get("X-A: a\x00b\r\n"),
            400,
            "malformed_header",
        ),
        (
            "DEL in a value",
            get("X-A: a\x7fb\r\n"),
            400,
            "malformed_header",
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /rec/x HTTP/1.1\r\nX-A: 1\r\n\r\n".to_vec(),
            400,
            "missing_host",
        ),
        ("two Hosts", get("Host: b\r\n"), 400, "duplicate_host"),
        (
            "two equal Content-Lengths",
            post("Content-Length: 2\r\nContent-Length: 2\r\n", "ab"),
            400,
            "duplicate_content_length",
        ),
        (
            "a Content-Length list",
            post("Content-Length: 2, 2\r\n", "ab"),
            400,
            "duplicate_content_length",
        ),
        (
            "two different Content-Lengths",
            post("Content-Length: 2\r\nContent-Length: 3\r\n", "abc"),
            400,
            "duplicate_content_length",
        ),
        (
            "signed Content-Length",
            post("Content-Length: +2\r\n", "ab"),
            400,
            "invalid_content_length",
        ),
        (
            "negative Content-Length",
            post("Content-Length: -1\r\n", ""),
            400,
            "invalid_content_length",
        ),
        (
            "Content-Length with Transfer-Encoding",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
            "content_length_with_transfer_encoding",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /rec/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            "transfer_encoding_on_http10",
        ),
        (
            "Transfer-Encoding gzip",
            post("Transfer-Encoding: gzip\r\n", ""),
            501,
            "unsupported_transfer_encoding",
        ),
        (
            "Transfer-Encoding gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
            "unsupported_transfer_encoding",
        ),
        (
            "Transfer-Encoding xchunked",
            post("Transfer-Encoding: xchunked\r\n", ""),
            501,
            "unsupported_transfer_encoding",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_ambiguous_heads_are_refused_at_once_and_never_forwarded() {
    let (_backend, recorder, sc) = start("header_timeout = \"10s\"", AnswerWhen::AfterBody).await;
    let traffic = ordinary_traffic(&sc);
    let before = scrape(&sc).await;
    let cases = refused_heads();
    for (what, bytes, status, reason) in &cases {
        assert_eq!(
            refusal(&sc, what, bytes, false).await,
            (*status, (*reason).to_owned()),
            "{what}"
        );
    }
    // A refused HEAD request is answered without a body.
    let (status, _) = refusal(
        &sc,
        "HEAD without Host",
        b"HEAD /rec/x HTTP/1.1\r\n\r\n",
        true,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(recorder.count(), 0, "nothing refused reached the upstream");

    let after = scrape(&sc).await;
    for (_, _, _, reason) in &cases {
        let expected = cases.iter().filter(|c| c.3 == *reason).count() as f64
            + f64::from(u8::from(*reason == "missing_host"));
        assert_eq!(
            refused_count(&after, reason) - refused_count(&before, reason),
            expected,
            "sidecache_requests_refused_total{{reason={reason:?}}}"
        );
    }
    assert_undisturbed(traffic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_heads_reach_the_upstream_as_sent_and_short_ones_are_answered_at_once() {
    let (_backend, recorder, sc) = start("header_timeout = \"10s\"", AnswerWhen::AfterBody).await;
    let traffic = ordinary_traffic(&sc);

    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(b"GET /rec/ok?q=1&r=%20 HTTP/1.1\r\nHost: a\r\nX-Keep: v1\r\nX-Keep: v2\r\n\r\n")
        .await;
    let r = conn
        .response(AT_ONCE)
        .await
        .expect("answer")
        .expect_response("a valid GET");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["recorded"], 1);
    // The same connection serves a POST with a chunked body next.
    conn.send(b"POST /rec/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    let r = conn
        .response(AT_ONCE)
        .await
        .expect("answer")
        .expect_response("a chunked POST");
    assert_eq!(r.status, 200);

    // Under 24 bytes: pingora's h2c detection waited for 24 bytes forever.
    let mut short = RawConn::connect(sc.listen_addr()).await;
    short.send(b"GET /rec/ HTTP/1.0\r\n\r\n").await;
    let r = short
        .response(AT_ONCE)
        .await
        .expect("a short request is answered at once")
        .expect_response("a short HTTP/1.0 GET");
    assert_eq!(r.status, 200);

    let seen = recorder.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/rec/ok?q=1&r=%20");
    assert_eq!(seen[0].header_all("x-keep"), ["v1", "v2"]);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].target, "/rec/up");
    assert_eq!(seen[1].body_bytes, 3);
    assert_eq!(recorder.body_end(1, AT_ONCE).await, BodyEnd::Complete);
    assert_eq!(seen[2].target, "/rec/");
    assert_undisturbed(traffic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_trickled_heads_are_all_cut_off_at_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let (_backend, recorder, sc) = start("header_timeout = \"2s\"", AnswerWhen::AfterBody).await;
    let traffic = ordinary_traffic(&sc);
    let before = scrape(&sc).await;
    let listen = sc.listen_addr();
    let tricklers: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let connected = Instant::now();
                let mut conn = RawConn::connect(listen).await;
                conn.send(b"GET /rec/slow HTTP/1.1\r\nHost: a\r\n").await;
                // Half send a byte at a time, half a whole field at a time.
                let piece: &[u8] = if i % 2 == 0 { b"x" } else { b"X-Slow: v\r\n" };
                let closed = conn
                    .trickle(
                        piece,
                        Duration::from_millis(200),
                        connected + HEADER_TIMEOUT * 3,
                    )
                    .await;
                closed.map(|at| at - connected)
            })
        })
        .collect();
    for (i, t) in tricklers.into_iter().enumerate() {
        let lasted = t.await.expect("trickler").unwrap_or_else(|| {
            panic!(
                "trickler {i} still open {:?} after connecting",
                HEADER_TIMEOUT * 3
            )
        });
        assert!(
            lasted <= HEADER_TIMEOUT + Duration::from_secs(1),
            "trickler {i} was closed only after {lasted:?}"
        );
    }
    assert_eq!(recorder.count(), 0);
    let after = scrape(&sc).await;
    assert_eq!(
        refused_count(&after, "header_timeout") - refused_count(&before, "header_timeout"),
        200.0
    );
    assert_undisturbed(traffic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_max_connections_get_503_and_are_counted() {
    let (_backend, _recorder, sc) = start(
        "max_connections = 4\nheader_timeout = \"10s\"",
        AnswerWhen::AfterBody,
    )
    .await;
    let open = |scrape: &str| metric(scrape, "sidecache_connections_open");
    let wait_open = |n: f64| {
        let sc = &sc;
        async move {
            let until = Instant::now() + Duration::from_secs(5);
            while open(&scrape(sc).await) != n {
                assert!(Instant::now() < until, "never {n} open connections");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_open(0.0).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(RawConn::connect(sc.listen_addr()).await);
    }
    wait_open(4.0).await;

    let mut fifth = RawConn::connect(sc.listen_addr()).await;
    let r = fifth
        .response(AT_ONCE)
        .await
        .expect("the fifth connection is answered at once")
        .expect_response("the fifth connection");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(r.json()["limit"], 4);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(fifth.closed_within(AT_ONCE).await);
    let m = scrape(&sc).await;
    assert_eq!(
        metric(
            &m,
            "sidecache_connections_refused_total{reason=\"max_connections\"}"
        ),
        1.0
    );

    // The held connections still work, and once they close others are served again.
    held[0]
        .send(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let r = held[0].response(AT_ONCE).await.expect("answer");
    assert!(
        matches!(r, Outcome::Response(ref r) if r.status == 200),
        "{r:?}"
    );
    drop(held);
    wait_open(0.0).await;
    let r = try_get(&sc.url("/health"), &[])
        .await
        .expect("served again");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_alive_connections_end_at_the_keepalive_timeout_or_the_request_limit() {
    let (_backend, _recorder, sc) = start(
        "keepalive_timeout = \"1s\"\nmax_requests_per_connection = 3\nheader_timeout = \"10s\"",
        AnswerWhen::AfterBody,
    )
    .await;
    let request = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n";

    // Idle after two requests: closed by the keep-alive timeout (pingora kept it forever).
    let mut idle = RawConn::connect(sc.listen_addr()).await;
    for n in 1..=2 {
        idle.send(request).await;
        let r = idle
            .response(AT_ONCE)
            .await
            .expect("answer")
            .expect_response("a kept-alive request");
        assert_eq!(r.status, 200, "request {n}");
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {n}");
    }
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "an idle kept-alive connection is closed"
    );

    // The third request on a connection is its last: it says so, and the connection ends.
    let mut busy = RawConn::connect(sc.listen_addr()).await;
    for n in 1..=3 {
        busy.send(request).await;
        let r = busy
            .response(AT_ONCE)
            .await
            .expect("answer")
            .expect_response("a request under the limit");
        assert_eq!(r.status, 200, "request {n}");
        let expected = if n == 3 { "close" } else { "keep-alive" };
        assert_eq!(r.header("connection"), Some(expected), "request {n}");
    }
    assert!(busy.closed_within(AT_ONCE).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_idle_kept_alive_connections_and_finishes_requests_in_flight() {
    let (_backend, _recorder, sc) = start("header_timeout = \"10s\"", AnswerWhen::AfterBody).await;
    let mut idle = RawConn::connect(sc.listen_addr()).await;
    idle.send(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = idle.response(AT_ONCE).await.expect("answer");
    assert!(
        matches!(r, Outcome::Response(ref r) if r.status == 200),
        "{r:?}"
    );
    // A request the stand-in backend answers 800 ms later (the grace period is 1 s).
    let url = sc.url("/test/slow?ms=800");
    let slow = tokio::spawn(async move {
        try_request_timeout("GET", &url, &[], Bytes::new(), Duration::from_secs(5)).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sc.sigterm();
    assert!(
        idle.closed_within(Duration::from_secs(3)).await,
        "the idle connection is closed"
    );
    assert!(
        !slow.is_finished(),
        "the idle connection was closed at shutdown, not at exit"
    );
    let r = slow
        .await
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_has_a_header_deadline_and_a_body_deadline() {
    let (_backend, _recorder, sc) = start(
        "header_timeout = \"1s\"\nadmin_body_timeout = \"1s\"",
        AnswerWhen::AfterBody,
    )
    .await;
    let before = scrape(&sc).await;

    let started = Instant::now();
    let mut trickled = RawConn::connect(sc.admin_addr()).await;
    trickled.send(b"GET /health HTTP/1.1\r\nHost: a\r\n").await;
    let closed = trickled
        .trickle(
            b"x",
            Duration::from_millis(100),
            started + Duration::from_secs(5),
        )
        .await;
    assert!(closed.is_some(), "a trickled admin head is cut off");

    let mut stalled = RawConn::connect(sc.admin_addr()).await;
    stalled
        .send(b"POST /admin/purge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"url\":")
        .await;
    let r = stalled
        .response(Duration::from_secs(5))
        .await
        .expect("a stalled purge body is answered")
        .expect_response("a stalled purge body");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["reason"], "admin_body_timeout");
    assert!(stalled.closed_within(AT_ONCE).await);
    let after = scrape(&sc).await;
    assert_eq!(
        refused_count(&after, "admin_body_timeout") - refused_count(&before, "admin_body_timeout"),
        1.0
    );
    // A purge that sends its body in time still works.
    let r = try_request_timeout(
        "POST",
        &sc.admin_url("/admin/purge"),
        &[("content-type", "application/json")],
        Bytes::from_static(br#"{"url":"/rec/x"}"#),
        AT_ONCE,
    )
    .await
    .expect("purge");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A chunked POST to the recorder of `total` payload bytes in 1 KiB chunks.
fn chunked_post(total: usize) -> Vec<u8> {
    let mut out =
        b"POST /rec/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..total / 1024 {
        out.extend_from_slice(b"400\r\n");
        out.extend_from_slice(&[b'x'; 1024]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_the_bound_gets_413_and_the_upstream_request_is_aborted() {
    // max_request_body is 4 KiB; the body is 16 KiB.
    let (_backend, recorder, sc) = start("", AnswerWhen::AfterBody).await;
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(&chunked_post(16 << 10)).await;
    let r = conn
        .response(Duration::from_secs(5))
        .await
        .expect("answer")
        .expect_response("an oversized chunked body");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "request_body_too_large");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(conn.closed_within(AT_ONCE).await);
    assert_eq!(
        recorder.body_end(0, Duration::from_secs(5)).await,
        BodyEnd::Aborted,
        "the upstream never sees the body end"
    );
    assert_eq!(recorder.count(), 1);
    assert!(
        recorder.requests()[0].body_bytes <= 4 << 10,
        "the upstream got at most the bound: {:?}",
        recorder.requests()[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_the_bound_after_the_upstream_answered_closes_the_connection() {
    // The recorder starts its (chunked) answer before reading the body, and would finish it
    // only after the whole body.
    let (_backend, recorder, sc) = start("", AnswerWhen::BeforeBody).await;
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    let request = chunked_post(8 << 10);
    // The head and the first 1 KiB chunk; the upstream's answer starts coming back.
    let head_and_chunk = request.len() - 7 * (1024 + 7) - 5;
    conn.send(&request[..head_and_chunk]).await;
    conn.read_until(b"{\"recorded\":1", Duration::from_secs(5))
        .await
        .expect("the upstream's answer started");
    // Then the rest of the body, past the 4 KiB bound.
    conn.send(&request[head_and_chunk..]).await;
    let received = conn
        .received_until_close(Duration::from_secs(5))
        .await
        .expect("the connection is closed");
    let text = String::from_utf8_lossy(&received);
    let (status, _, head_len) = parse_head(&received)
        .expect("a response")
        .expect("a complete head");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        dechunk(&received[head_len..]).expect("chunked"),
        None,
        "the answer under way is cut off, not completed: {text}"
    );
    assert!(
        !text.contains("request_body_too_large"),
        "nothing appended: {text}"
    );
    assert_eq!(
        recorder.body_end(0, Duration::from_secs(5)).await,
        BodyEnd::Aborted
    );
    assert!(recorder.requests()[0].body_bytes <= 4 << 10);
}
