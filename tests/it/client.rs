//! The client toolkit (`sidecache::client`) against the stand-in backend over real sockets:
//! answers with their status and `X-Cache`, typed errors, recovery after an outage or a
//! timeout, and the JSON POST of `sidecache purge`.

use crate::support;

use std::time::Duration;

use http::HeaderMap;
use sidecache::client::{header_map, ClientError, Connection, GetResponse, MAX_KEPT_BODY};
use support::backend::start_backend;

const BOUND: Duration = Duration::from_secs(10);

/// A GET without extra headers, bounded by [`BOUND`].
async fn get(conn: &mut Connection, path: &str) -> Result<GetResponse, ClientError> {
    conn.get(path, &HeaderMap::new(), BOUND).await
}

#[tokio::test]
async fn get_reports_status_and_x_cache_and_an_error_status_is_an_answer() {
    let b = start_backend(Duration::ZERO).await;
    let mut conn = Connection::new(b.addr().to_string());
    let hit = get(&mut conn, "/test/respond?h=X-Cache:HIT-L2")
        .await
        .expect("answer");
    assert_eq!((hit.status, hit.x_cache.as_deref()), (200, Some("HIT-L2")));
    let down = get(&mut conn, "/test/respond?status=503")
        .await
        .expect("a 503 is an answer");
    assert_eq!((down.status, down.x_cache), (503, None));
    assert_eq!(b.stats().hits("/test/respond"), 2);
}

#[tokio::test]
async fn an_outage_is_a_connect_error_and_the_next_call_reconnects() {
    let b = start_backend(Duration::ZERO).await;
    let mut conn = Connection::new(b.addr().to_string());
    let path = "/api/state-machine/metadata";
    assert_eq!(get(&mut conn, path).await.expect("up").status, 200);
    b.stop().await;
    let err = get(&mut conn, path).await.expect_err("backend is down");
    assert!(
        matches!(err, ClientError::Connect(_) | ClientError::Http(_)),
        "{err:?}"
    );
    let err = get(&mut conn, path)
        .await
        .expect_err("backend is still down");
    assert!(
        matches!(
            err,
            ClientError::Connect(std::io::ErrorKind::ConnectionRefused)
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "connect: connection refused");
    b.restart().await.expect("restart");
    assert_eq!(get(&mut conn, path).await.expect("back up").status, 200);
}

#[tokio::test]
async fn a_timeout_is_reported_and_the_next_call_starts_afresh() {
    let b = start_backend(Duration::ZERO).await;
    let mut conn = Connection::new(b.addr().to_string());
    let err = conn
        .get("/test/stall", &HeaderMap::new(), Duration::from_millis(100))
        .await
        .expect_err("the body never comes");
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert_eq!(err.to_string(), "timeout");
    // The stalled connection is mid-body; reusing it could never answer.
    let ok = get(&mut conn, "/api/events/1/context")
        .await
        .expect("a fresh connection answers");
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn post_json_sends_the_body_and_headers_and_keeps_the_answer() {
    let b = start_backend(Duration::ZERO).await;
    let mut conn = Connection::new(b.addr().to_string());
    let headers = header_map(&[("authorization".into(), "Bearer t0k".into())]).expect("valid");
    let body = r#"{"tag":"contractor:4"}"#;
    let echo = conn
        .post_json("/test/echo?x=1", &headers, body, BOUND)
        .await
        .expect("answer");
    assert_eq!(echo.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&echo.body).expect("JSON echo");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["body_bytes"], body.len());
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["headers"]["authorization"], "Bearer t0k");
    assert_eq!(seen["headers"]["host"], b.addr().to_string());

    let created = conn
        .post_json("/api/events", &HeaderMap::new(), body, BOUND)
        .await
        .expect("answer on the same connection");
    assert_eq!((created.status, created.body.as_str()), (201, body));
}

#[tokio::test]
async fn a_kept_body_is_bounded() {
    let b = start_backend(Duration::ZERO).await;
    let mut conn = Connection::new(b.addr().to_string());
    // /api/events echoes the JSON it was sent: a string just over the limit.
    let big = serde_json::json!({ "pad": "x".repeat(MAX_KEPT_BODY) }).to_string();
    let err = conn
        .post_json("/api/events", &HeaderMap::new(), big, BOUND)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, ClientError::BodyTooLarge(MAX_KEPT_BODY)),
        "{err:?}"
    );
    let small = conn
        .post_json("/api/events", &HeaderMap::new(), "{}", BOUND)
        .await
        .expect("the next call reconnects");
    assert_eq!((small.status, small.body.as_str()), (201, "{}"));
}
