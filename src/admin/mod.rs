//! The admin plane: a separate listener (default `127.0.0.1:9091`) for operators.
//!
//! | endpoint              | auth            | what                                          |
//! |-----------------------|-----------------|-----------------------------------------------|
//! | `GET /metrics`        | none            | Prometheus text format                        |
//! | `GET /health`, `/ready` | none          | same answers as the data plane                |
//! | `GET /admin/config`   | token off-loopback | running config, secrets redacted           |
//! | `POST /admin/purge`   | token off-loopback | `{"url"}`, `{"prefix"}` or `{"tag"}`, `"soft"` |
//! | `POST /admin/reload`  | token off-loopback | re-read and swap the config file           |
//! | `GET /admin/stats`    | token off-loopback | the status page's figures, versioned JSON ([`stats`]) |
//! | `GET /`, `/status`    | token off-loopback | the status page: one self-contained HTML page polling `/admin/stats` |
//!
//! "Token off-loopback": with `SIDECACHE_ADMIN_TOKEN` set (required when the listener is not
//! on loopback) a request must present it, as `Authorization: Bearer TOKEN` or, so that a
//! browser can open the status page, as the password of HTTP Basic auth (any user name).
//!
//! A web page the operator's browser opens must not be able to use the admin plane
//! ([`browser_guard`]): a `POST` must say `Content-Type: application/json` (an HTML form
//! cannot, and a script on another origin cannot without a CORS preflight, which is never
//! answered) and carry no foreign `Origin` (cross-site request forgery, which a browser
//! holding the status page's Basic credentials would otherwise authenticate); and without a
//! token, `/admin/*` and the status page answer only a `Host` that is an IP literal or
//! `localhost` (DNS rebinding: a page whose own name now resolves to 127.0.0.1 is otherwise
//! same-origin with the listener). Each refusal is a 403 or 415 whose JSON names the hazard.
//!
//! The admin plane reads shared state ([`Live`]) and never reaches into a data-plane request.

pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Config, ProcessEnv};
use crate::health as local;
use crate::live::Live;
use crate::purge::{PurgeKind, PurgeRequest, PurgeSource};
use crate::refusal::{body as refusal_body, status as refusal_status};
use crate::telemetry::events::{InternalEvent, RequestRefused};
use crate::telemetry::metrics::{metrics, RequestRefusal};

/// Largest admin request body (purge JSON).
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Why the admin listener may not start. (A public admin address without a token is a
/// config error: validation refuses it, for `check` and `run` alike.)
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the admin listener now (so a taken port fails start-up with a clear error).
/// With `retry_for`, keep trying that long (a graceful upgrade waits for the old process to
/// release the port).
pub fn bind(addr: SocketAddr, retry_for: Duration) -> Result<std::net::TcpListener, AdminError> {
    let deadline = std::time::Instant::now() + retry_for;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|source| AdminError::Bind { addr, source })?;
                return Ok(l);
            }
            Err(source) if std::time::Instant::now() >= deadline => {
                return Err(AdminError::Bind { addr, source })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Serve the admin API on `listener` until `shutdown` flips to true.
///
/// Each connection gets the data plane's `server.header_timeout` (read when it is accepted)
/// as hyper's header deadline: a head, or the idle wait before one on a kept-alive
/// connection, that takes longer closes the connection.
pub async fn serve(
    listener: std::net::TcpListener,
    live: &'static Live,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let header_timeout = live.snapshot().config.server.limits.header_timeout;
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, live, peer));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "admin connection ended with an error");
                    }
                });
            }
        }
    }
}

type AdminResponse = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    live: &'static Live,
    peer: SocketAddr,
) -> Result<AdminResponse, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let head = method == Method::HEAD;
    let local_endpoint = local::LocalEndpoint::from_path(&path);
    let response = match (method.clone(), path.as_str(), local_endpoint) {
        (Method::GET | Method::HEAD, "/metrics", _) => metrics_response(),
        (Method::GET | Method::HEAD, "/" | "/status", _) => {
            let config = &live.snapshot().config;
            match authorize(&req, config).or_else(|| browser_guard(&req, config)) {
                Some(mut denied) => {
                    denied.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static(
                            "Basic realm=\"sidecache admin\", charset=\"UTF-8\"",
                        ),
                    );
                    denied
                }
                None => status_page(),
            }
        }
        (Method::GET | Method::HEAD, _, Some(endpoint)) => {
            let answer = local::answer(endpoint, live).await;
            json_bytes(answer.status, answer.body)
        }
        (_, p, _) if p.starts_with("/admin/") => {
            let snapshot = live.snapshot();
            let refused =
                authorize(&req, &snapshot.config).or_else(|| browser_guard(&req, &snapshot.config));
            if let Some(denied) = refused {
                denied
            } else {
                match (method, p) {
                    (Method::GET, "/admin/config") => {
                        json_value(200, snapshot.config.redacted_json())
                    }
                    (Method::GET, "/admin/stats") => json_value(200, stats::document(live).await),
                    (Method::POST, "/admin/purge") => purge(req, live, peer).await,
                    (Method::POST, "/admin/reload") => reload(live),
                    _ => json_value(405, json!({"error": "method_not_allowed", "path": path})),
                }
            }
        }
        _ => not_found(&path),
    };
    Ok(if head {
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Full::new(Bytes::new()))
    } else {
        response
    })
}

/// The token a request presents: `Bearer TOKEN`, or the password of `Basic` credentials.
fn presented_token(req: &Request<Incoming>) -> Option<Vec<u8>> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.as_bytes().to_vec());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// `None` when allowed; a 401 response otherwise.
fn authorize(req: &Request<Incoming>, config: &Config) -> Option<AdminResponse> {
    let token = config.server.admin_token.as_ref()?;
    let presented = presented_token(req);
    if presented.is_some_and(|p| constant_time_eq(&p, token.expose().as_bytes())) {
        None
    } else {
        Some(json_value(
            401,
            json!({"error": "unauthorized", "hint": "send Authorization: Bearer $SIDECACHE_ADMIN_TOKEN"}),
        ))
    }
}

/// `None` when a request may have come from no web page but the admin plane's own; else the
/// 403 or 415 that names the hazard (see the module docs). Runs after [`authorize`].
fn browser_guard(req: &Request<Incoming>, config: &Config) -> Option<AdminResponse> {
    let headers = req.headers();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if config.server.admin_token.is_none() && host.is_some_and(|h| !is_local_host(h)) {
        return Some(json_value(
            403,
            json!({
                "error": "forbidden_host",
                "hazard": "DNS rebinding: without SIDECACHE_ADMIN_TOKEN the admin plane answers \
                           only a Host that is an IP address or localhost, so a web page whose \
                           name resolves to this listener cannot use it",
            }),
        ));
    }
    if req.method() != Method::POST {
        return None;
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let same = host.is_some_and(|h| {
            let origin = origin.as_bytes();
            [&b"http://"[..], b"https://"]
                .iter()
                .any(|scheme| origin.strip_prefix(*scheme) == Some(h.as_bytes()))
        });
        if !same {
            return Some(json_value(
                403,
                json!({
                    "error": "forbidden_origin",
                    "hazard": "cross-site request forgery: a page on another origin may not \
                               change the cache or the config",
                }),
            ));
        }
    }
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        json_value(
            415,
            json!({
                "error": "unsupported_media_type",
                "hazard": "cross-site request forgery: an HTML form on any web page can send \
                           this POST, but not with Content-Type: application/json",
                "hint": "send Content-Type: application/json",
            }),
        )
    })
}

/// `localhost`, `*.localhost` or an IP literal, with or without a port: names no other
/// party can point at this listener.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The status page (`GET /`, `/status`).
const STATUS_PAGE: &str = include_str!("status.html");

fn status_page() -> AdminResponse {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(http::header::CACHE_CONTROL, "no-store")
        // Self-contained: nothing may load from elsewhere, and it may not be framed.
        .header(
            http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from_static(STATUS_PAGE.as_bytes())))
        .unwrap_or_else(|_| internal_error())
}

fn metrics_response() -> AdminResponse {
    // The families are registered on first use: touch them so a scrape always lists them.
    metrics();
    let families = prometheus::gather();
    let mut buf = Vec::with_capacity(16 * 1024);
    let encoder = prometheus::TextEncoder::new();
    match prometheus::Encoder::encode(&encoder, &families, &mut buf) {
        Ok(()) => Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)
            .body(Full::new(Bytes::from(buf)))
            .unwrap_or_else(|_| internal_error()),
        Err(e) => json_value(
            500,
            json!({"error": "metrics_encoding", "detail": e.to_string()}),
        ),
    }
}

/// The body of `POST /admin/purge`: exactly one of `url`, `prefix` or `tag`, and who sends
/// it (`"source": "cli"` from `sidecache purge`; `admin` when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    source: Option<BodySource>,
    /// Purge softly: mark stale and refresh in the background (see [`PurgeRequest::soft_at`]).
    #[serde(default)]
    soft: bool,
}

/// The sources an admin client may name.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BodySource {
    Admin,
    Cli,
}

impl PurgeBody {
    /// The purge this body asks for, or `None` unless exactly one target is given.
    fn into_request(self) -> Option<PurgeRequest> {
        let source = match self.source {
            Some(BodySource::Cli) => PurgeSource::Cli,
            Some(BodySource::Admin) | None => PurgeSource::Admin,
        };
        let request = match (self.url, self.prefix, self.tag) {
            (Some(t), None, None) => PurgeRequest::new(PurgeKind::Url, t, source),
            (None, Some(t), None) => PurgeRequest::new(PurgeKind::Prefix, t, source),
            (None, None, Some(t)) => PurgeRequest::new(PurgeKind::Tag, t, source),
            _ => return None,
        };
        Some(match self.soft {
            true => request.soft(std::time::SystemTime::now()),
            false => request,
        })
    }
}

/// `POST /admin/purge`. The body must arrive within `server.admin_body_timeout`, else 408
/// and the connection is closed.
async fn purge(req: Request<Incoming>, live: &'static Live, peer: SocketAddr) -> AdminResponse {
    let limits = live.snapshot().config.server.limits.clone();
    let collect = Limited::new(req.into_body(), MAX_ADMIN_BODY).collect();
    let body = match tokio::time::timeout(limits.admin_body_timeout, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return json_value(413, json!({"error": "body_too_large"})),
        Err(_) => {
            let reason = RequestRefusal::AdminBodyTimeout;
            RequestRefused {
                reason,
                peer: Some(&peer),
            }
            .emit();
            let mut response = json_bytes(
                refusal_status(reason).as_u16(),
                refusal_body(reason, &limits),
            );
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let parsed: PurgeBody = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_value(
                400,
                json!({"error": "invalid_json", "detail": e.to_string()}),
            )
        }
    };
    let Some(mut request) = parsed.into_request() else {
        return json_value(
            400,
            json!({"error": "invalid_purge", "hint": "send exactly one of {\"url\": ...}, {\"prefix\": ...} or {\"tag\": ...}"}),
        );
    };
    match live.snapshot().purge_target(request.kind, &request.target) {
        Ok((kind, target)) => {
            request.kind = kind;
            request.target = target;
        }
        Err(why) => {
            return json_value(
                400,
                json!({"error": "bad_path", "detail": why.to_string(), "target": request.target}),
            )
        }
    }
    let report = live.purges.apply(&request).await;
    json_value(
        200,
        json!({
            "purged": request.kind.label(),
            "target": request.target,
            "soft": request.soft_at.is_some(),
            "removed_local": report.l1_removed,
            "removed_l2": report.l2_removed,
            "l2_ok": report.l2_ok,
            "broadcast": report.broadcast,
            "retrying": report.retrying,
        }),
    )
}

fn reload(live: &'static Live) -> AdminResponse {
    match live.reload_from_disk(&ProcessEnv) {
        Ok(()) => json_value(200, json!({"result": "ok"})),
        Err(errors) => {
            let list: Vec<Value> = errors
                .0
                .iter()
                .map(|e| json!({"path": e.path, "line": e.line, "message": e.message}))
                .collect();
            json_value(
                422,
                json!({"result": "error", "errors": list, "detail": "the previous config keeps serving"}),
            )
        }
    }
}

fn not_found(path: &str) -> AdminResponse {
    json_value(404, json!({"error": "not_found", "path": path}))
}

fn json_value(status: u16, v: Value) -> AdminResponse {
    json_bytes(status, Bytes::from(v.to_string()))
}

fn json_bytes(status: u16, body: Bytes) -> AdminResponse {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Full::new(body))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"internal\"}")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
