//! The data plane: sidecache's pingora pipeline.
//!
//! [`edge::Edge`] owns each client connection (limits, deadlines, the head checks) and hands
//! checked requests to pingora's `HttpProxy`, around [`SidecacheProxy`], which implements pingora's `ProxyHttp`; [`phases`] documents each hook in the
//! order pingora calls it. `request_filter` resolves each request once into a [`plan::Plan`]
//! (local answer, bypass, or cache), and every later phase reads that plan; what happened
//! since (a fast hit, the tier of a hit, whether the response was stored) is recorded in
//! [`Progress`]. Both travel in [`RequestCtx`].

pub mod edge;
mod events;
mod fast_path;
pub mod forwarded;
mod phases;
mod plan;
pub mod response_head;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora_core::server::configuration::ServerConf;
use pingora_core::services::listening::Service;
use pingora_http::ResponseHeader;
use pingora_proxy::{HttpProxy, Session};

use crate::cache::freshness::Received;
use crate::cache::policy::NoStoreReason;
use crate::cache::storage::Tier;
use crate::live::{Live, Snapshot};
use plan::Plan;

/// sidecache's implementation of pingora's proxy phases.
pub struct SidecacheProxy {
    live: &'static Live,
}

impl SidecacheProxy {
    pub fn new(live: &'static Live) -> Self {
        Self { live }
    }
}

/// Build the data-plane service listening on `listen`: the [`Edge`](edge::Edge) around
/// pingora's proxy (HTTP/1.1, and cleartext HTTP/2 for clients that start with its preface).
pub fn service(conf: &Arc<ServerConf>, live: &'static Live, listen: &str) -> Service<edge::Edge> {
    let mut proxy = HttpProxy::new(SidecacheProxy::new(live), conf.clone());
    proxy.handle_init_modules();
    let mut service = Service::new("sidecache proxy".to_string(), edge::Edge::new(proxy, live));
    // No L4 read buffer: pingora's default is a zero-filled 64 KiB `BufReader` per client
    // connection, held for the connection's life (10,000 kept-alive connections: 640 MiB of
    // touched pages, the bulk of the RSS measured in docs/performance.md). The edge reads each
    // head into its own small buffer and pingora's session reads into its own, so the
    // `BufReader` only added a copy. Writes keep pingora's one-segment (1,460 byte) buffer.
    service.add_listener(
        ListenerConfig::tcp(listen)
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
    );
    service
}

/// Per-request state, created in `new_ctx` and dropped after `logging`.
pub struct RequestCtx {
    pub(crate) started: Instant,
    /// The config generation this request runs under (loaded once).
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) request_id: HeaderValue,
    /// What sidecache does with this request, decided in `request_filter`.
    pub(crate) plan: Plan,
    /// What has happened to it since.
    pub(crate) progress: Progress,
}

/// What happened to a request after its plan was made.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Answered from L1 by the fast path, before pingora-cache ran.
    pub fast_hit: bool,
    /// The tier a pingora-cache hit came from.
    pub hit_tier: Option<Tier>,
    /// The response was handed to the cache for storing.
    pub stored: bool,
    /// Why the response was not stored.
    pub no_store: Option<NoStoreReason>,
    /// When the upstream request was sent.
    pub upstream_started: Option<Instant>,
    /// When the upstream response header arrived (for its age).
    pub received: Option<Received>,
    /// The origin's 304 to a revalidation, whose fields freshen the stored response.
    pub not_modified: Option<Box<ResponseHeader>>,
    /// Request body bytes seen so far.
    pub request_body_bytes: u64,
    /// The status sent to the client (0 before one was).
    pub status: u16,
    /// The origin switched protocols (101): the connection is a tunnel from then on.
    pub tunnel: Option<Tunnel>,
}

/// What passed through an upgraded connection.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub opened: Instant,
    pub to_origin: u64,
    pub to_client: u64,
}

/// A small JSON body of an error sidecache answers itself:
/// `{"error": kind, <field>: value, "request_id": id}`.
pub(crate) fn error_body(
    kind: &str,
    field: (&str, serde_json::Value),
    request_id: &HeaderValue,
) -> Bytes {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), kind.into());
    body.insert(field.0.into(), field.1);
    body.insert(
        "request_id".into(),
        request_id.to_str().unwrap_or("").into(),
    );
    Bytes::from(serde_json::Value::Object(body).to_string())
}

/// How long, at most, the body of a refused request is read and dropped after its answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// After answering a request whose body was refused unread (a body on GET, a declared body
/// over `max_request_body`): read and drop the body as framed, for at most [`LINGER`] and
/// `max_bytes`, before the connection is closed. Closing a socket with unread bytes makes
/// the kernel send a reset, which destroys the answer in the client's receive buffer while
/// it is still sending (a lingering close, as nginx does). A client that sent `Expect:
/// 100-continue` was not told to send its body and is not waited for.
pub(crate) async fn drain_refused_body(session: &mut Session, max_bytes: u64) {
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue || session.is_body_done() {
        return;
    }
    let drain = async {
        let mut read = 0u64;
        while read <= max_bytes {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len() as u64,
                Ok(None) | Err(_) => return,
            }
        }
    };
    let _ = pingora_timeout::timeout(LINGER, drain).await;
}

/// Write a small JSON response and finish the request.
///
/// Writes nothing when a response header already went out (an upstream answered before a
/// request body failed, e.g. over `max_request_body`): that response cannot be replaced, and
/// the body would be appended to it. The connection is then closed after it.
pub(crate) async fn respond_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &HeaderValue,
) -> pingora_error::Result<()> {
    if session.response_written().is_some() {
        return Ok(());
    }
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(forwarded::REQUEST_ID, request_id.clone())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
