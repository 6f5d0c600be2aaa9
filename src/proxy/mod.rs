//! The data plane: sidecache's pingora pipeline.
//!
//! [`SidecacheProxy`] implements pingora's `ProxyHttp`; [`phases`] documents each hook in the
//! order pingora calls it. A request's state travels in [`RequestCtx`].

mod fast_path;
pub mod forwarded;
pub mod local;
mod phases;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_http::ResponseHeader;
use pingora_proxy::{HttpProxy, Session};

use crate::cache::policy::{BypassReason, NoStoreReason};
use crate::cache::storage::Tier;
use crate::live::{Live, Snapshot};

/// sidecache's implementation of pingora's proxy phases.
pub struct SidecacheProxy {
    live: &'static Live,
}

impl SidecacheProxy {
    pub fn new(live: &'static Live) -> Self {
        Self { live }
    }
}

/// Build the pingora proxy service (HTTP/1.1, and cleartext HTTP/2 for clients that ask)
/// listening on `listen`.
pub fn service(
    conf: &Arc<ServerConf>,
    live: &'static Live,
    listen: &str,
) -> pingora_core::services::listening::Service<HttpProxy<SidecacheProxy>> {
    let mut proxy = HttpProxy::new(SidecacheProxy::new(live), conf.clone());
    proxy.handle_init_modules();
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    let mut service =
        pingora_core::services::listening::Service::new("sidecache proxy".to_string(), proxy);
    service.add_tcp(listen);
    service
}

/// Per-request state, created in `new_ctx` and dropped after `logging`.
pub struct RequestCtx {
    pub(crate) started: Instant,
    /// The config generation this request runs under (loaded once).
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) request_id: HeaderValue,
    /// Answered by sidecache itself (health, readiness, its own errors before proxying).
    pub(crate) local: bool,
    /// Matched route index.
    pub(crate) route: Option<usize>,
    /// Upstream index chosen by the rewrites.
    pub(crate) upstream: Option<usize>,
    /// Rewritten path (`None`: forward the path unchanged).
    pub(crate) upstream_path: Option<String>,
    pub(crate) bypass: Option<BypassReason>,
    pub(crate) no_store: Option<NoStoreReason>,
    pub(crate) stored: bool,
    pub(crate) hit_tier: Option<Tier>,
    /// Answered from L1 by the fast path, before pingora-cache ran.
    pub(crate) fast_hit: bool,
    /// The key the fast path computed, reused by `cache_key_callback` on a miss.
    pub(crate) cache_key: Option<pingora_cache::CacheKey>,
    pub(crate) upstream_started: Option<Instant>,
    pub(crate) request_body_bytes: u64,
    pub(crate) status: u16,
}

impl RequestCtx {
    /// What varies this request's cache entry: its route's key rules (`None` for unmatched
    /// requests: the whole query, no headers).
    pub(crate) fn key_rules(&self) -> Option<&crate::config::KeyConfig> {
        self.route
            .and_then(|i| self.snapshot.router.routes().get(i))
            .and_then(|r| r.cache.as_ref())
            .map(|c| &c.key)
    }
}

/// Write a small JSON response and finish the request.
pub(crate) async fn respond_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &HeaderValue,
) -> pingora_error::Result<()> {
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
