//! Request routing and handlers of the stand-in backend.
//!
//! Test-control endpoints (no artificial delay unless asked):
//! - `ANY /test/echo`: JSON `{method, path, query, headers, body_bytes}` of the request as
//!   seen (headers by lowercase name; a string, or an array when repeated).
//! - `GET /test/respond?status=..&cache-control=..&set-cookie=..&vary=..&etag=..&last-modified=..&expires=..&age=..&h=Name:Value&delay_ms=..&body=..`:
//!   answers with exactly those status and headers (`set-cookie` and `h` are repeatable;
//!   other parameters are ignored, so `?v=2` busts caches). A request whose
//!   `If-None-Match` matches `etag` gets a 304. The JSON body carries a per-URL
//!   `generation` that increments on every 2xx/4xx/5xx answer with a body.
//! - `GET /test/big?bytes=N` (default 1 MiB): N bytes of [`pattern_byte`](super::pattern_byte)
//!   streamed in 64 KiB chunks.
//! - `POST /test/upload`: reads the body as a stream, answers `{"bytes":N,"sha":HEX}` with
//!   the [`Fnv64`] checksum.
//! - `GET /test/slow?ms=N`: sleeps N ms before the headers.
//! - `GET /test/stall`: headers (Content-Length 1024) and then never a body.
//! - `GET /test/count`: `{"total":N,"paths":{path:N}}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, IF_NONE_MATCH};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{json_bytes, payloads, DemoBody, Fnv64, Shared};

/// Largest request body the JSON endpoints buffer (uploads stream and have no limit).
const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

/// Default size of `/test/big` when `bytes` is absent.
const DEFAULT_BIG_BYTES: u64 = 1024 * 1024;

/// Answers one request; never fails (bad input becomes a 4xx JSON answer).
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<DemoBody> {
    let path = req.uri().path().to_owned();
    shared.stats.record(&path);
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;

    match segs.as_slice() {
        ["api", "state-machine", "diagram"] if get => {
            api_delay(&shared).await;
            json_response(StatusCode::OK, shared.diagram.clone())
        }
        ["api", "state-machine", "metadata"] if get => {
            api_delay(&shared).await;
            json_response(StatusCode::OK, shared.metadata.clone())
        }
        ["api", "contractors", id, "bundle"] if get => {
            api_delay(&shared).await;
            let generation = shared.next_generation(&format!("bundle:{id}"));
            json_value(StatusCode::OK, &payloads::contractor_bundle(id, generation))
        }
        ["api", "contractors", id] if method == Method::PUT => {
            let id = id.to_string();
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(reject) => return reject.into_response(),
            };
            api_delay(&shared).await;
            json_value(
                StatusCode::OK,
                &json!({"id": id, "updated": true, "contractor": body}),
            )
        }
        ["api", "events", id, "context"] if get => {
            api_delay(&shared).await;
            json_value(StatusCode::OK, &payloads::event_context(id))
        }
        ["api", "events"] if method == Method::POST => {
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(reject) => return reject.into_response(),
            };
            api_delay(&shared).await;
            json_value(StatusCode::CREATED, &body)
        }
        ["api", "concierge", "sessions", id, "state"] if get => {
            api_delay(&shared).await;
            let generation = shared.next_generation(&format!("session:{id}"));
            json_value(StatusCode::OK, &payloads::session_state(id, generation))
        }
        ["api", "concierge", "sessions", _id, "end"] if method == Method::POST => {
            // Drain the (usually empty) body so the connection stays reusable.
            let _ = Limited::new(req.into_body(), MAX_JSON_BODY).collect().await;
            api_delay(&shared).await;
            json_value(StatusCode::OK, &json!({"ended": true}))
        }
        ["test", "echo"] => echo(req).await,
        ["test", "respond"] if get => respond(&shared, req).await,
        ["test", "big"] if get => {
            let params = parse_query(req.uri().query());
            match param_u64(&params, "bytes", DEFAULT_BIG_BYTES) {
                Ok(n) => with_type(
                    Response::new(DemoBody::Pattern {
                        offset: 0,
                        remaining: n,
                    }),
                    "application/octet-stream",
                ),
                Err(reject) => reject.into_response(),
            }
        }
        ["test", "upload"] if method == Method::POST || method == Method::PUT => upload(req).await,
        ["test", "slow"] if get => {
            let params = parse_query(req.uri().query());
            match param_u64(&params, "ms", 0) {
                Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    json_value(StatusCode::OK, &json!({"slept_ms": ms}))
                }
                Err(reject) => reject.into_response(),
            }
        }
        ["test", "stall"] if get => with_type(
            Response::new(DemoBody::Stall { len: 1024 }),
            "application/json",
        ),
        ["test", "count"] if get => json_value(
            StatusCode::OK,
            &json!({"total": shared.stats.total(), "paths": shared.stats.snapshot()}),
        ),
        _ => json_value(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "path": path}),
        ),
    }
}

async fn api_delay(shared: &Shared) {
    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// `/test/echo`: the request as the backend saw it.
async fn echo(req: Request<Incoming>) -> Response<DemoBody> {
    let (parts, body) = req.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(many) => Value::Array(many),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    let body_bytes = match count_body(body).await {
        Ok((n, _)) => n,
        Err(reject) => return reject.into_response(),
    };
    json_value(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_bytes": body_bytes,
        }),
    )
}

/// `/test/respond`: a response with exactly the status and headers the query asks for.
async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<DemoBody> {
    let uri = req.uri().to_string();
    let params = parse_query(req.uri().query());
    let mut status = StatusCode::OK;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut etag: Option<String> = None;
    let mut delay_ms = 0u64;
    let mut body_text: Option<String> = None;
    for (key, value) in &params {
        match key.as_str() {
            "status" => match value
                .parse::<u16>()
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                Some(s) if s.as_u16() >= 200 => status = s,
                _ => return bad_request(&format!("invalid status {value:?}")),
            },
            "etag" => {
                etag = Some(value.clone());
                headers.push((key.clone(), value.clone()));
            }
            "cache-control" | "set-cookie" | "vary" | "last-modified" | "expires" | "age" => {
                headers.push((key.clone(), value.clone()))
            }
            "h" => match value.split_once(':') {
                Some((name, v)) => headers.push((name.trim().to_owned(), v.trim().to_owned())),
                None => return bad_request(&format!("h={value:?} is not Name:Value")),
            },
            "delay_ms" => match value.parse() {
                Ok(ms) => delay_ms = ms,
                Err(_) => return bad_request(&format!("invalid delay_ms {value:?}")),
            },
            "body" => body_text = Some(value.clone()),
            _ => {}
        }
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }

    let not_modified = match (&etag, req.headers().get(IF_NONE_MATCH)) {
        (Some(tag), Some(inm)) => etag_matches(tag, &String::from_utf8_lossy(inm.as_bytes())),
        _ => false,
    };
    // 204 and 304 never carry a body (RFC 9110), whatever the query asked for.
    let has_body =
        !not_modified && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let mut resp = if not_modified {
        let mut r = Response::new(DemoBody::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if !has_body {
        let mut r = Response::new(DemoBody::empty());
        *r.status_mut() = status;
        r
    } else {
        let generation = shared.next_generation(&format!("respond:{uri}"));
        json_value(
            status,
            &json!({"url": uri, "status": status.as_u16(), "generation": generation, "body": body_text}),
        )
    };
    let user_sets_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if user_sets_type {
        resp.headers_mut().remove(CONTENT_TYPE);
    }
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return bad_request(&format!("invalid header {name:?}: {value:?}"));
        };
        resp.headers_mut().append(name, value);
    }
    resp
}

/// Weak comparison of `etag` against an `If-None-Match` list (RFC 9110 13.1.2).
fn etag_matches(etag: &str, if_none_match: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == ours)
}

/// `/test/upload`: streams the body through the checksum without buffering it.
async fn upload(req: Request<Incoming>) -> Response<DemoBody> {
    match count_body(req.into_body()).await {
        Ok((bytes, sum)) => json_value(StatusCode::OK, &json!({"bytes": bytes, "sha": sum.hex()})),
        Err(reject) => reject.into_response(),
    }
}

/// Reads a body frame by frame, returning its length and checksum.
async fn count_body(mut body: Incoming) -> Result<(u64, Fnv64), Reject> {
    let mut n = 0u64;
    let mut sum = Fnv64::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Reject::bad_request(format!("reading body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
            sum.update(data);
        }
    }
    Ok((n, sum))
}

/// Buffers a (bounded) JSON request body; an empty body reads as `null`.
async fn read_json(req: Request<Incoming>) -> Result<Value, Reject> {
    let bytes = Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| Reject::bad_request(format!("reading body: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| Reject {
        error: "invalid_json",
        detail: e.to_string(),
    })
}

/// Splits and percent-decodes a query string (`+` is a space), keeping order and repeats.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; malformed escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn param_u64(params: &[(String, String)], name: &str, default: u64) -> Result<u64, Reject> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => v
            .parse()
            .map_err(|_| Reject::bad_request(format!("invalid {name} {v:?}"))),
    }
}

/// Why a request was refused with a 400; becomes `{"error":..,"detail":..}`.
#[derive(Debug)]
struct Reject {
    error: &'static str,
    detail: String,
}

impl Reject {
    fn bad_request(detail: String) -> Self {
        Reject {
            error: "bad_request",
            detail,
        }
    }

    fn into_response(self) -> Response<DemoBody> {
        json_value(
            StatusCode::BAD_REQUEST,
            &json!({"error": self.error, "detail": self.detail}),
        )
    }
}

fn bad_request(detail: &str) -> Response<DemoBody> {
    json_value(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "detail": detail}),
    )
}

fn json_value(status: StatusCode, value: &Value) -> Response<DemoBody> {
    json_response(status, json_bytes(value))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<DemoBody> {
    let mut resp = with_type(Response::new(DemoBody::full(body)), "application/json");
    *resp.status_mut() = status;
    resp
}

/// Adds the content type and the Express banner header every legacy response carries.
fn with_type(mut resp: Response<DemoBody>, content_type: &'static str) -> Response<DemoBody> {
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-powered-by", HeaderValue::from_static("Express"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes_and_keeps_repeats() {
        let q = parse_query(Some(
            "set-cookie=a%3Db&h=X-A:1&h=X-B:2&body=hello+world&bad=%zz&t=%",
        ));
        assert_eq!(q[0], ("set-cookie".into(), "a=b".into()));
        assert_eq!(q[1], ("h".into(), "X-A:1".into()));
        assert_eq!(q[2], ("h".into(), "X-B:2".into()));
        assert_eq!(q[3], ("body".into(), "hello world".into()));
        assert_eq!(q[4], ("bad".into(), "%zz".into()));
        assert_eq!(q[5], ("t".into(), "%".into()));
    }

    #[test]
    fn etag_comparison_is_weak() {
        assert!(etag_matches("\"v1\"", "\"v1\""));
        assert!(etag_matches("\"v1\"", "W/\"v1\""));
        assert!(etag_matches("\"v1\"", "\"v0\", \"v1\""));
        assert!(etag_matches("\"v1\"", "*"));
        assert!(!etag_matches("\"v1\"", "\"v2\""));
    }
}
