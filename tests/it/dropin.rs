//! Drop-in compatibility: requests an Express API behind nginx's usual Node config serves
//! today must work through sidecache too, each sent over a raw socket and checked at the
//! origin, with ordinary traffic beside it that must see no error.
//!
//! - bodies on every method but GET and HEAD reach the origin intact; a body on GET gets an
//!   answer the client can read, not a reset;
//! - a route's `timeout` lets a long poll outlast the upstream's read timeout;
//! - pipelined requests are answered in order, each head checked like any other.

use crate::support;

use std::time::Duration;

use support::backend::{start_backend, Backend};
use support::raw::{exchange, RawConn};
use support::recorder::{AnswerWhen, BodyEnd, Recorder};
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{Sidecache, SidecacheOptions};
use support::traffic::Traffic;

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
SERVER_EXTRA

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"

[[upstreams]]
name = "recorder"
address = "RECORDER"

[[upstreams]]
name = "scripted"
address = "SCRIPTED"
read_timeout = "1s"

[[rewrites]]
source = "/rec/:path*"
destination = "recorder"

[[rewrites]]
source = "/poll/:path*"
destination = "scripted"

[[routes]]
name = "long_poll"
match = "GET /poll/long"
cache = false
timeout = "3s"

[cache]
default_mode = "off"
"#;

/// Everything a test here needs: the stand-in backend (ordinary traffic), a recording
/// upstream on `/rec/...`, a scripted one on `/poll/...`, and sidecache in front of them,
/// with `server_extra` in `[server]`; ordinary traffic already running.
struct Rig {
    _backend: Backend,
    recorder: Recorder,
    scripted: ScriptedOrigin,
    sc: Sidecache,
    traffic: Traffic,
}

impl Rig {
    async fn start(server_extra: &str) -> Rig {
        let backend = start_backend(Duration::ZERO).await;
        let recorder = Recorder::start(AnswerWhen::AfterBody).await;
        let scripted = ScriptedOrigin::start().await;
        let config = CONFIG
            .replace("SERVER_EXTRA", server_extra)
            .replace("RECORDER", &recorder.addr().to_string())
            .replace("SCRIPTED", &scripted.addr().to_string());
        let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
        let listen = sc.listen_addr();
        let traffic = Traffic::start(2, move |w, i| {
            format!("http://{listen}/api/events/{}/context", (w * 1000 + i) % 20)
        });
        Rig {
            _backend: backend,
            recorder,
            scripted,
            sc,
            traffic,
        }
    }

    /// Stop the ordinary traffic: it must have been served without one error.
    async fn finish(self) {
        self.traffic.stop_without_failures().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_on_delete_and_options_reach_the_origin_intact() {
    let rig = Rig::start("").await;
    let json = br#"{"ids":[1,2,3],"reason":"bulk delete"}"#;
    for method in ["DELETE", "OPTIONS", "PATCH"] {
        let head = format!(
            "{method} /rec/items HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            json.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(json);
        let r = exchange(rig.sc.listen_addr(), &bytes).await;
        assert_eq!(
            r.status,
            200,
            "{method}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let seen = rig.recorder.requests().pop().expect("forwarded");
        assert_eq!(seen.method, method);
        assert_eq!(seen.body_end, BodyEnd::Complete, "{method}");
        assert_eq!(seen.body, json, "{method}: the body arrived intact");
        assert_eq!(seen.header_all("content-length"), [json.len().to_string()]);
    }
    // A chunked DELETE body too.
    let r = exchange(
        rig.sc.listen_addr(),
        b"DELETE /rec/items HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n[1,2]\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        rig.recorder.requests().pop().expect("forwarded").body,
        b"[1,2]"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_body_on_get_gets_a_readable_answer_not_a_reset() {
    let rig = Rig::start("max_request_body = \"32MiB\"").await;
    let before = rig.recorder.count();
    for (method, len, status, error) in [
        ("GET", 10 << 20, 400, "body_not_allowed"),
        ("HEAD", 1 << 20, 400, ""),
        ("GET", 40 << 20, 413, "request_body_too_large"),
    ] {
        let mut conn = RawConn::connect(rig.sc.listen_addr()).await;
        let head = format!(
            "{method} /rec/search HTTP/1.1\r\nHost: api.example\r\nContent-Length: {len}\r\n\r\n"
        );
        conn.send(head.as_bytes()).await;
        // Send the whole body before reading, as a simple client does: sidecache must keep
        // reading it (and dropping it) rather than reset the connection under the answer.
        let body = vec![b'x'; len.min(10 << 20)];
        let sent = conn.try_send(&body).await;
        if len <= 10 << 20 {
            assert!(sent.is_ok(), "{method} {len}: {sent:?}");
        }
        let outcome = if method == "HEAD" {
            conn.head_response(Duration::from_secs(5)).await
        } else {
            conn.response(Duration::from_secs(5)).await
        };
        let r = outcome
            .unwrap_or_else(|e| panic!("{method} {len}: {e}"))
            .expect_response(method);
        assert_eq!(r.status, status, "{method} {len}");
        assert_eq!(r.header("connection"), Some("close"));
        if !error.is_empty() {
            assert_eq!(r.json()["error"], error);
        }
    }
    assert_eq!(
        rig.recorder.count(),
        before,
        "no refused body was forwarded"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_timeout_lets_a_long_poll_outlast_the_upstream_read_timeout() {
    let rig = Rig::start("").await;
    // The upstream's read_timeout is 1s; the long_poll route's timeout is 3s.
    rig.scripted.script(
        "/poll/long",
        [
            Scripted::ok("{\"event\":1}").after(Duration::from_secs(2)),
            Scripted::ok("{\"event\":2}").after(Duration::from_secs(4)),
        ],
    );
    rig.scripted.script(
        "/poll/short",
        [Scripted::ok("{}").after(Duration::from_secs(2))],
    );
    let poll = |path: &str| {
        let addr = rig.sc.listen_addr();
        let head = format!("GET {path} HTTP/1.1\r\nHost: api.example\r\n\r\n");
        async move {
            let mut conn = RawConn::connect(addr).await;
            conn.send(head.as_bytes()).await;
            conn.response(Duration::from_secs(10))
                .await
                .expect("an answer")
                .expect_response("poll")
        }
    };
    let r = poll("/poll/long").await;
    assert_eq!(r.status, 200, "2 s is within the route's 3 s");
    assert_eq!(r.body, b"{\"event\":1}");
    let r = poll("/poll/long").await;
    assert_eq!(r.status, 504, "4 s is past the route's 3 s");
    assert_eq!(r.json()["error"], "upstream_timeout");
    let r = poll("/poll/short").await;
    assert_eq!(r.status, 504, "no route: the upstream's 1 s applies");
    assert_eq!(rig.scripted.hits("/poll/long"), 2);
    rig.finish().await;
}

/// One pipelined request: its bytes and what its answer must say.
struct Pipelined {
    bytes: Vec<u8>,
    /// `Some(n)`: forwarded, the recorder's n-th request; `None`: `/health`.
    recorded: Option<usize>,
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let rig = Rig::start("").await;
    // Two GETs in one write.
    let mut conn = RawConn::connect(rig.sc.listen_addr()).await;
    conn.send(
        b"GET /rec/one HTTP/1.1\r\nHost: api.example\r\n\r\n\
          GET /rec/two HTTP/1.1\r\nHost: api.example\r\n\r\n",
    )
    .await;
    for n in 1..=2 {
        let r = conn
            .response(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("answer {n}: {e}"))
            .expect_response("pipelined");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["recorded"], n, "answer {n} in order");
    }
    let targets: Vec<String> = rig
        .recorder
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/rec/one", "/rec/two"]);

    // Thirty in one write: forwarded GETs, POSTs with bodies and local answers, mixed.
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    let mut forwarded = 2;
    for i in 0..30 {
        let bytes = match i % 3 {
            0 => format!("GET /rec/g{i} HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            1 => format!(
                "POST /rec/p{i} HTTP/1.1\r\nHost: api.example\r\nContent-Length: {}\r\n\r\nbody{i}",
                format!("body{i}").len()
            ),
            _ => "GET /health HTTP/1.1\r\nHost: api.example\r\n\r\n".to_owned(),
        };
        let recorded = (i % 3 != 2).then(|| {
            forwarded += 1;
            forwarded
        });
        batch.extend_from_slice(bytes.as_bytes());
        expected.push(Pipelined {
            bytes: bytes.into_bytes(),
            recorded,
        });
    }
    conn.send(&batch).await;
    for (i, want) in expected.iter().enumerate() {
        let r = conn
            .response(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("answer {i}: {e}"))
            .expect_response("pipelined");
        assert_eq!(r.status, 200, "answer {i}");
        match want.recorded {
            Some(n) => assert_eq!(r.json()["recorded"], n, "answer {i} in order"),
            None => assert_eq!(r.json()["status"], "ok", "answer {i}: /health"),
        }
    }
    let seen = rig.recorder.requests();
    for want in &expected {
        if let Some(n) = want.recorded {
            let head = String::from_utf8_lossy(&want.bytes);
            let target = head.split(' ').nth(1).unwrap_or("");
            assert_eq!(seen[n - 1].target, target);
            if let Some((_, body)) = head.split_once("\r\n\r\n") {
                assert_eq!(seen[n - 1].body, body.as_bytes());
            }
        }
    }

    // A pipelined head is checked like any other: the bad one is refused, after its
    // predecessor's answer, and never forwarded.
    let count = rig.recorder.count();
    let mut conn = RawConn::connect(rig.sc.listen_addr()).await;
    conn.send(
        b"GET /rec/fine HTTP/1.1\r\nHost: api.example\r\n\r\nGET /rec/hostless HTTP/1.1\r\n\r\n",
    )
    .await;
    let first = conn
        .response(Duration::from_secs(5))
        .await
        .expect("an answer")
        .expect_response("first");
    assert_eq!(first.status, 200);
    let second = conn
        .response(Duration::from_secs(5))
        .await
        .expect("an answer")
        .expect_response("second");
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["reason"], "missing_host");
    assert_eq!(rig.recorder.count(), count + 1);
    rig.finish().await;
}
