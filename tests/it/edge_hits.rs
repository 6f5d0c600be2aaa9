//! Fresh L1 hits the edge answers itself, before pingora is entered (`proxy::edge::hit`):
//! the answer pingora's fast path gives, field for field; pipelined hits and misses in
//! order; every answer counted against `server.max_requests_per_connection`, whoever gave
//! it; requests that may carry a body or change the connection left to pingora.

use crate::support;

use std::time::Duration;

use support::backend::start_backend;
use support::raw::RawConn;
use support::sidecache::{config_opening, until_x_cache, Sidecache, SidecacheOptions};

const WAIT: Duration = Duration::from_secs(5);

fn config() -> String {
    config_opening()
        .then(
            r#"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"

[cache]
key_host = false
"#,
        )
        .replace(
            "grace_period = \"1s\"",
            "grace_period = \"1s\"\nmax_requests_per_connection = 4",
        )
}

async fn start() -> (support::backend::Backend, Sidecache) {
    let backend = start_backend(Duration::ZERO).await;
    let sc = Sidecache::start(SidecacheOptions::new(config()).backend(backend.addr())).await;
    for id in [1, 3] {
        until_x_cache(&sc, &format!("/api/contractors/{id}/bundle"), "HIT-L1").await;
    }
    (backend, sc)
}

/// One request on a connection of its own, and its answer.
async fn answer(sc: &Sidecache, request: &str, head: bool) -> support::raw::RawResponse {
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(request.as_bytes()).await;
    let r = if head {
        conn.head_response(WAIT).await
    } else {
        conn.response(WAIT).await
    };
    r.expect("an answer").expect_response(request)
}

/// The fields of `r` but `Age` (a second may pass between two answers), in order.
fn fields(r: &support::raw::RawResponse) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("age"))
        .cloned()
        .collect()
}

/// A request with a `Connection` field is not the edge's: pingora's fast path answers it.
/// Both answers must be the same, field for field and byte for byte of the body.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_hit_is_the_answer_pingora_gives() {
    let (_backend, sc) = start().await;
    for method in ["GET", "HEAD"] {
        let head = method == "HEAD";
        let base = format!(
            "{method} /api/contractors/1/bundle HTTP/1.1\r\nHost: api.example\r\n\
             X-Request-Id: edge-hit-1\r\n"
        );
        let edge = answer(&sc, &format!("{base}\r\n"), head).await;
        let pingora = answer(&sc, &format!("{base}Connection: keep-alive\r\n\r\n"), head).await;
        assert_eq!(edge.status, 200);
        assert_eq!(edge.header("x-cache"), Some("HIT-L1"), "{method}");
        assert_eq!(edge.header("connection"), Some("keep-alive"), "{method}");
        assert!(edge.header("date").is_some(), "{method}");
        assert!(edge.header("age").is_some(), "{method}");
        assert_eq!(edge.status, pingora.status, "{method}");
        assert_eq!(fields(&edge), fields(&pingora), "{method}");
        assert_eq!(edge.body, pingora.body, "{method}");
        if head {
            assert!(edge.body.is_empty());
        } else {
            assert!(!edge.body.is_empty());
        }
    }
}

/// Four requests in one write, on a connection allowed four: two hits the edge answers, a
/// miss pingora fetches, and a hit that is the connection's last, which pingora answers with
/// `Connection: close`. All in order; then the connection ends.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_hits_and_misses_are_answered_in_order_within_the_request_limit() {
    let (_backend, sc) = start().await;
    let get =
        |id: u32| format!("GET /api/contractors/{id}/bundle HTTP/1.1\r\nHost: api.example\r\n\r\n");
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(format!("{}{}{}{}", get(1), get(3), get(2), get(1)).as_bytes())
        .await;
    let expected = [
        (1, "HIT-L1", "keep-alive"),
        (3, "HIT-L1", "keep-alive"),
        (2, "MISS", "keep-alive"),
        (1, "HIT-L1", "close"),
    ];
    for (n, (id, x_cache, connection)) in expected.into_iter().enumerate() {
        let r = conn
            .response(WAIT)
            .await
            .unwrap_or_else(|e| panic!("answer {n}: {e}"))
            .expect_response("pipelined");
        assert_eq!(r.status, 200, "answer {n}");
        assert_eq!(r.header("x-cache"), Some(x_cache), "answer {n}");
        assert_eq!(r.header("connection"), Some(connection), "answer {n}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(&format!("\"svc-{id}-0\"")),
            "answer {n} is contractor {id}'s"
        );
    }
    assert!(
        conn.closed_within(WAIT).await,
        "the fourth request was the last"
    );
}
