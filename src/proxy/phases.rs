//! The phases of a request through sidecache, in the order pingora calls them.
//!
//! | phase                    | runs                                 | may change                       |
//! |--------------------------|--------------------------------------|----------------------------------|
//! | `early_request_filter`   | once headers are read                | the request id                   |
//! | `request_filter`         | before anything else                 | answers health/ready/404/413,    |
//! |                          |                                      | and fresh L1 hits (fast path)    |
//! | `request_body_filter`    | per request body chunk               | enforces the body size bound     |
//! | `request_cache_filter`   | before lookup                        | enables the cache (or bypasses)  |
//! | `cache_key_callback`     | when the cache is enabled            | the entry's key                  |
//! | `cache_hit_filter`       | on a hit                             | notes which tier served it       |
//! | `upstream_peer`          | on miss/bypass, before connecting    | which upstream, its timeouts     |
//! | `upstream_request_filter`| before the request goes upstream     | path rewrite, `X-Forwarded-*`    |
//! | `upstream_response_filter`| when upstream headers arrive        | upstream timing and 5xx counting |
//! | `response_cache_filter`  | on a cacheable miss                  | whether and how long to store    |
//! | `cache_vary_filter`      | when a stored response has `Vary`    | the variant hash                 |
//! | `response_filter`        | before headers go to the client      | `X-Cache`, `Cache-Status`, id    |
//! | `fail_to_connect`/`fail_to_proxy` | on upstream failure         | the 502/504 JSON answer          |
//! | `logging`                | last, always                         | metrics, access log, invalidation|

use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::{
    CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use super::forwarded::{self, REQUEST_ID};
use super::local::{self, LocalEndpoint};
use super::{fast_path, respond_json, RequestCtx, SidecacheProxy};
use crate::cache::key;
use crate::cache::policy::{self, EffectivePolicy};
use crate::cache::status::CacheOutcome;
use crate::cache::storage::{EntryContext, Tier, TieredHit};
use crate::config::CacheMode;
use crate::routing::{fill_braces, RewriteDecision};
use crate::telemetry::metrics::{metrics, MethodLabel, UpstreamErrorKind};

#[async_trait]
impl ProxyHttp for SidecacheProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.live.request_started();
        RequestCtx {
            started: Instant::now(),
            snapshot: self.live.snapshot(),
            request_id: http::HeaderValue::from_static(""),
            local: false,
            route: None,
            upstream: None,
            upstream_path: None,
            bypass: None,
            no_store: None,
            stored: false,
            hit_tier: None,
            fast_hit: false,
            cache_key: None,
            upstream_started: None,
            request_body_bytes: 0,
            status: 0,
        }
    }

    /// Runs first, once the request header is read: fixes the request id.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.request_id = forwarded::request_id(session.req_header());
        Ok(())
    }

    /// Answers what sidecache owns (health, readiness), picks the upstream through the
    /// rewrites (404 JSON when nothing matches and there is no default), matches the cache
    /// route, and rejects oversized bodies early. `Ok(true)` means the response was written.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let path = req.uri.path();
        if req.method == http::Method::GET || req.method == http::Method::HEAD {
            if let Some(endpoint) = LocalEndpoint::from_path(path) {
                ctx.local = true;
                let answer = local::answer(endpoint, self.live).await;
                ctx.status = answer.status;
                respond_json(session, answer.status, answer.body, &ctx.request_id).await?;
                return Ok(true);
            }
        }
        let declared_len = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let max_body = ctx.snapshot.config.server.max_request_body_bytes;
        if declared_len.is_some_and(|n| n > max_body) {
            ctx.local = true;
            ctx.status = 413;
            let body = json!({"error": "request_body_too_large", "limit_bytes": max_body,
                "request_id": ctx.request_id.to_str().unwrap_or("")});
            respond_json(session, 413, Bytes::from(body.to_string()), &ctx.request_id).await?;
            return Ok(true);
        }
        match ctx.snapshot.router.rewrite(path) {
            RewriteDecision::Forward { upstream, path } => {
                ctx.upstream = Some(upstream);
                ctx.upstream_path = path;
            }
            RewriteDecision::NotFound => {
                ctx.local = true;
                ctx.status = 404;
                let body = json!({"error": "not_found", "path": path,
                    "request_id": ctx.request_id.to_str().unwrap_or("")});
                respond_json(session, 404, Bytes::from(body.to_string()), &ctx.request_id).await?;
                return Ok(true);
            }
        }
        ctx.route = ctx
            .snapshot
            .router
            .route(&req.method, path)
            .map(|m| m.policy.index);
        let effective = effective_policy(ctx);
        if let Err(reason) =
            policy::request_decision(session.req_header(), effective, ctx.route.is_some())
        {
            ctx.bypass = Some(reason);
            return Ok(false);
        }
        fast_path::try_l1_hit(session, ctx, self.live).await
    }

    /// Streams the request body through, failing with 413 once it exceeds the bound.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.request_body_bytes += b.len() as u64;
            if ctx.request_body_bytes > ctx.snapshot.config.server.max_request_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// Enables pingora's cache (tiered storage, coalescing lock, object size bound) for
    /// requests `request_filter` found eligible (see [`policy::request_decision`]).
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.bypass.is_some() {
            return Ok(());
        }
        let config = &ctx.snapshot.config;
        let mut overrides = pingora_cache::CacheOptionOverrides::default();
        overrides.wait_timeout = Some(config.cache.lock_timeout);
        session.cache.enable(
            self.live.cache,
            None,
            None,
            Some(self.live.cache_lock),
            Some(overrides),
        );
        let max = config.cache.l1.max_object_bytes;
        session
            .cache
            .set_max_file_size_bytes(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(())
    }

    /// The entry's key: path, query (whole or the route's listed params) and key headers.
    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        if let Some(key) = ctx.cache_key.take() {
            return Ok(key);
        }
        Ok(key::cache_key(session.req_header(), ctx.key_rules()))
    }

    /// Notes which tier served a hit (for `X-Cache` and metrics). Freshness is pingora's call.
    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut pingora_cache::storage::HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        ctx.hit_tier = hit_handler
            .as_any()
            .downcast_ref::<TieredHit>()
            .map(TieredHit::tier);
        Ok(None)
    }

    /// The upstream chosen by the rewrites, with its connect/read/write/idle timeouts.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = ctx
            .upstream
            .and_then(|i| ctx.snapshot.router.upstreams().get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        let mut peer = HttpPeer::new(upstream.address.as_str(), false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.write_timeout);
        peer.options.idle_timeout = Some(upstream.idle_timeout);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Applies the rewrite (path template, prefix strip/add; query unchanged) and adds
    /// `X-Forwarded-For/Proto/Host` and `X-Request-Id`.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(path) = &ctx.upstream_path {
            let uri = match upstream_request.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let uri = uri
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
            upstream_request.set_uri(uri);
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        forwarded::add_forwarded(upstream_request, client_ip, &ctx.request_id)
    }

    /// Records upstream latency (to the response header) and counts 5xx answers.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(start), Some(i)) = (ctx.upstream_started, ctx.upstream) {
            if let Some(u) = ctx.snapshot.router.upstreams().get(i) {
                ctx.snapshot
                    .route_metrics(ctx.route)
                    .record_upstream(i, &u.name, start.elapsed());
                if upstream_response.status.is_server_error() {
                    metrics().upstream_error(&u.name, UpstreamErrorKind::Status5xx);
                }
            }
        }
        Ok(())
    }

    /// Whether the origin's response may be stored, and its freshness (see
    /// [`policy::response_decision`]). Attaches the entry's url, route and tags for purges.
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let snapshot = &ctx.snapshot;
        let route = ctx.route.and_then(|i| snapshot.router.routes().get(i));
        let effective = effective_policy(ctx).unwrap_or(EffectivePolicy {
            mode: CacheMode::Origin,
            route: None,
        });
        match policy::response_decision(resp, effective, SystemTime::now()) {
            Ok(mut meta) => {
                let req = session.req_header();
                let url = key::request_url(req);
                let tags = match (route, effective.route) {
                    (Some(r), Some(c)) if !c.tags.is_empty() => r
                        .pattern
                        .matches(req.uri.path())
                        .map(|params| c.tags.iter().map(|t| fill_braces(t, &params)).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                meta.extensions_mut().insert(EntryContext {
                    url: url.to_owned(),
                    route: route.map_or_else(|| "default".to_owned(), |r| r.name.clone()),
                    tags,
                });
                ctx.stored = true;
                Ok(RespCacheable::Cacheable(meta))
            }
            Err(reason) => {
                ctx.no_store = Some(reason);
                Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                    reason.as_str(),
                )))
            }
        }
    }

    /// Honours the origin's `Vary`: the variant is the hash of the named request headers.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let mut variance = VarianceBuilder::new();
        for name in policy::vary_names(meta.response_header()) {
            let lower = name.to_ascii_lowercase();
            let value = req
                .headers
                .get(lower.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            variance.add_owned_name_value(lower, value);
        }
        variance.finalize()
    }

    /// Stale-while-revalidate is always allowed within the entry's window; stale-if-error
    /// only for upstream failures.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    /// Tells the client what the cache did: `X-Cache`, RFC 9211 `Cache-Status`, and the
    /// request id. Runs for hits and misses alike.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        let outcome = outcome(session, ctx);
        if let Some(x) = outcome.x_cache() {
            upstream_response.insert_header("x-cache", x)?;
        }
        if let Some(cs) = outcome.cache_status(ctx.stored) {
            upstream_response.insert_header("cache-status", cs)?;
        }
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.clone())?;
        Ok(())
    }

    /// New connections are not retried: a refused or timed-out connect answers 502 at once.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        e.set_retry(false);
        e
    }

    /// Answers upstream failures with a small JSON body: 504 for timeouts, 502 otherwise,
    /// and 413/4xx for client errors. Never hangs the client.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let upstream_name = ctx
            .upstream
            .and_then(|i| ctx.snapshot.router.upstreams().get(i))
            .map_or("", |u| u.name.as_str());
        let (code, kind) = classify(e);
        if let Some(kind) = kind {
            if !upstream_name.is_empty() {
                metrics().upstream_error(upstream_name, kind);
            }
        }
        if code > 0 {
            let error = match (code, e.esource()) {
                (413, _) => "request_body_too_large",
                (504, _) => "upstream_timeout",
                (_, ErrorSource::Upstream) => "upstream_unavailable",
                (400..=499, _) => "bad_request",
                _ => "internal_error",
            };
            let body = json!({"error": error, "upstream": upstream_name,
                "request_id": ctx.request_id.to_str().unwrap_or("")});
            ctx.status = code;
            if let Err(write_err) = respond_json(
                session,
                code,
                Bytes::from(body.to_string()),
                &ctx.request_id,
            )
            .await
            {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Last, for every client request: metrics, the optional access log line, and
    /// invalidation after successful writes.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.live.request_finished();
        if session.subrequest_ctx.is_some() {
            // A background refresh (stale-while-revalidate) pingora ran on its own: not a
            // client request, so no request metrics or access log line.
            return;
        }
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        let outcome = outcome(session, ctx);
        let method = &session.req_header().method;
        let elapsed = ctx.started.elapsed();
        let route_metrics =
            if ctx.local && ctx.upstream.is_none() && ctx.status != 404 && ctx.status != 413 {
                ctx.snapshot.health_metrics()
            } else {
                ctx.snapshot.route_metrics(ctx.route)
            };
        route_metrics.record_request(MethodLabel::from_method(method), status, outcome, elapsed);
        if let Some(waited) = session.cache.lock_duration() {
            route_metrics.record_coalesced();
            if waited >= ctx.snapshot.config.cache.lock_timeout {
                metrics().cache_lock_timeouts.inc();
            }
        }
        if ctx.snapshot.config.server.access_log {
            tracing::info!(
                target: "sidecache::access",
                method = %method,
                path = session.req_header().uri.path(),
                status,
                cache = outcome.label(),
                route = route_metrics.route(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                request_id = ctx.request_id.to_str().unwrap_or(""),
                error = e.map(|e| e.to_string()),
            );
        }
        let unsafe_method = !method.is_safe();
        if unsafe_method && (200..400).contains(&status) && !ctx.local {
            crate::cache::invalidation::after_write(self.live, &ctx.snapshot, session.req_header());
        }
    }
}

/// The cache policy for this request's route (or the default mode for unmatched requests);
/// `None` when caching is off for it.
fn effective_policy(ctx: &RequestCtx) -> Option<EffectivePolicy<'_>> {
    let snapshot = &ctx.snapshot;
    match ctx.route.and_then(|i| snapshot.router.routes().get(i)) {
        Some(r) => r.cache.as_ref().map(|c| EffectivePolicy {
            mode: c.mode,
            route: Some(c),
        }),
        None => snapshot
            .config
            .cache
            .default_mode
            .map(|mode| EffectivePolicy { mode, route: None }),
    }
}

/// The cache outcome of this request, from pingora's cache phase and what the policy decided.
fn outcome(session: &Session, ctx: &RequestCtx) -> CacheOutcome {
    if ctx.local {
        return CacheOutcome::Local;
    }
    if ctx.fast_hit {
        return CacheOutcome::HitL1;
    }
    match session.cache.phase() {
        CachePhase::Hit => match ctx.hit_tier {
            Some(Tier::L2) => CacheOutcome::HitL2,
            _ => CacheOutcome::HitL1,
        },
        CachePhase::Stale | CachePhase::StaleUpdating => CacheOutcome::Stale,
        CachePhase::Revalidated => CacheOutcome::Revalidated,
        CachePhase::RevalidatedNoCache(_) => CacheOutcome::Uncacheable,
        CachePhase::Miss | CachePhase::Expired => {
            if ctx.no_store.is_some() {
                CacheOutcome::Uncacheable
            } else {
                CacheOutcome::Miss
            }
        }
        CachePhase::Disabled(NoCacheReason::NeverEnabled) | CachePhase::Bypass => {
            CacheOutcome::Bypass
        }
        CachePhase::Disabled(_) => {
            if ctx.bypass.is_some() {
                CacheOutcome::Bypass
            } else {
                CacheOutcome::Uncacheable
            }
        }
        CachePhase::Uninit | CachePhase::CacheKey => CacheOutcome::Bypass,
    }
}

/// HTTP status and upstream error kind for a proxying failure.
fn classify(e: &Error) -> (u16, Option<UpstreamErrorKind>) {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => (*code, None),
        ConnectTimedout => (502, Some(UpstreamErrorKind::Connect)),
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
            (502, Some(UpstreamErrorKind::Connect))
        }
        ReadTimedout | WriteTimedout => match e.esource() {
            ErrorSource::Upstream => (504, Some(UpstreamErrorKind::Timeout)),
            _ => (0, None),
        },
        ReadError | WriteError | ConnectionClosed => match e.esource() {
            ErrorSource::Upstream => (502, Some(UpstreamErrorKind::Reset)),
            ErrorSource::Downstream => (0, None),
            _ => (500, None),
        },
        _ => match e.esource() {
            ErrorSource::Upstream => (502, Some(UpstreamErrorKind::Reset)),
            ErrorSource::Downstream => (400, None),
            _ => (500, None),
        },
    }
}
