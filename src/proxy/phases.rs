//! The phases of a request through sidecache, in the order pingora calls them.
//!
//! | phase                    | runs                                 | may change                       |
//! |--------------------------|--------------------------------------|----------------------------------|
//! | `early_request_filter`   | once headers are read                | the request id                   |
//! | `request_filter`         | before anything else                 | resolves the plan; answers       |
//! |                          |                                      | health/ready/404/413 and fresh   |
//! |                          |                                      | L1 hits (fast path)              |
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
//!
//! Every phase after `request_filter` reads the request's [`Plan`] and records what happened
//! in [`Progress`]; none looks the route, the upstream or the policy up again.

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

use super::events::{RequestFinished, UpstreamFailed, UpstreamResponded};
use super::forwarded;
use super::plan::{self, LocalAnswer, Plan};
use super::response_head::{self, Verdict};
use super::{error_body, fast_path, respond_json, Progress, RequestCtx, SidecacheProxy, Tunnel};
use crate::cache::freshness::{self, Directives, Received};
use crate::cache::policy::{self, BypassReason, DirectiveVerdict, NoStoreReason, ResponseContext};
use crate::cache::status::{CacheOutcome, Detail};
use crate::cache::storage::{L1Probe, Tier, TieredHit};
use crate::cache::surrogate;
use crate::config::CacheMode;
use crate::health as local;
use crate::normalize;
use crate::telemetry::events::{
    InternalEvent, PurgeBacklogFull, SurrogateKeysDropped, TunnelClosed, TunnelOpened,
};
use crate::telemetry::metrics::UpstreamErrorKind;

#[async_trait]
impl ProxyHttp for SidecacheProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.live.request_started();
        RequestCtx {
            started: Instant::now(),
            snapshot: self.live.snapshot(),
            request_id: http::HeaderValue::from_static(""),
            plan: Plan::Undecided,
            progress: Progress::default(),
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

    /// Resolves the request into its plan ([`plan::resolve`]: local answer, bypass or cache)
    /// and writes what needs no upstream: sidecache's own endpoints and refusals, and fresh L1
    /// hits (the fast path). `Ok(true)` means the response was written.
    ///
    /// Hazard: everything the plan holds is what later phases key, store and forward by;
    /// deciding here from anything but the request and the snapshot leads to cache poisoning.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let has_body = !session.is_body_empty();
        let resolved = match plan::prepare(session.req_header_mut(), peer, &ctx.snapshot.config) {
            Ok(prepared) => plan::resolve(
                session.req_header(),
                &ctx.snapshot,
                self.live.cache,
                prepared,
                has_body,
            ),
            Err(refusal) => Plan::Local(refusal).into(),
        };
        ctx.plan = resolved.plan;
        if let Some(entry) = resolved.fresh_hit {
            fast_path::answer(session, ctx, &entry).await?;
            return Ok(true);
        }
        let Plan::Local(answer) = ctx.plan else {
            return Ok(false);
        };
        let (status, body) = match answer {
            LocalAnswer::Health | LocalAnswer::Ready => {
                let endpoint = if answer == LocalAnswer::Health {
                    local::LocalEndpoint::Health
                } else {
                    local::LocalEndpoint::Ready
                };
                let a = local::answer(endpoint, self.live).await;
                (a.status, a.body)
            }
            LocalAnswer::NotFound => {
                let path = json!(session.req_header().uri.path());
                (
                    404,
                    error_body("not_found", ("path", path), &ctx.request_id),
                )
            }
            LocalAnswer::BodyTooLarge => {
                let limit = json!(ctx.snapshot.config.server.max_request_body_bytes);
                let body = error_body(
                    "request_body_too_large",
                    ("limit_bytes", limit),
                    &ctx.request_id,
                );
                (413, body)
            }
            LocalAnswer::BadPath(why) => {
                let detail = ("detail", json!(why.to_string()));
                (400, error_body("bad_path", detail, &ctx.request_id))
            }
            LocalAnswer::BadHost => {
                let detail = ("detail", json!("the host is not a valid authority"));
                (400, error_body("bad_host", detail, &ctx.request_id))
            }
            LocalAnswer::BodyNotAllowed => {
                let method = ("method", json!(session.req_header().method.as_str()));
                (400, error_body("body_not_allowed", method, &ctx.request_id))
            }
        };
        if !answer.is_endpoint() {
            // A refused request's connection is not reused: its body, if any, was not read.
            session.set_keepalive(None);
        }
        ctx.progress.status = status;
        respond_json(session, status, body, &ctx.request_id).await?;
        if !answer.is_endpoint() {
            let bound = ctx.snapshot.config.server.max_request_body_bytes;
            super::drain_refused_body(session, bound).await;
        }
        Ok(true)
    }

    /// Streams the request body through, failing with 413 once it exceeds the bound; a
    /// tunnel's bytes (after a 101) are only counted.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(tunnel) = &mut ctx.progress.tunnel {
            tunnel.to_origin += body.as_ref().map_or(0, |b| b.len() as u64);
            return Ok(());
        }
        if let Some(b) = body {
            ctx.progress.request_body_bytes += b.len() as u64;
            if ctx.progress.request_body_bytes > ctx.snapshot.config.server.max_request_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// Enables pingora's cache (tiered storage, coalescing lock, object size bound) for a
    /// [`Plan::Cache`]; every other plan leaves it off.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if !matches!(ctx.plan, Plan::Cache { .. }) {
            return Ok(());
        }
        let config = &ctx.snapshot.config;
        let mut overrides = pingora_cache::CacheOptionOverrides::default();
        overrides.wait_timeout = Some(config.cache.lock_timeout);
        overrides.max_lock_retries = Some(crate::cache::storage::coalescing_lock::MAX_LOCK_RETRIES);
        session.cache.enable(
            self.live.cache,
            None,
            Some(self.live.predictor),
            Some(self.live.cache_lock),
            Some(overrides),
        );
        let max = config.cache.l1.max_object_bytes;
        session
            .cache
            .set_max_file_size_bytes(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(())
    }

    /// The entry's key, as the plan built it (see [`crate::cache::key`]).
    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match &mut ctx.plan {
            Plan::Cache { cache, .. } => cache.key.take(),
            _ => None,
        }
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache enabled without a key"))
    }

    /// Notes which tier served a hit (for `X-Cache` and metrics), and applies the client's
    /// request directives (RFC 9111 §5.2.1): `no-cache`, `max-age` and `min-fresh` force a
    /// revalidation, `max-stale` lets a stale entry be used when its own directives allow
    /// stale. Otherwise freshness is pingora's call. A background refresh (a subrequest
    /// carrying the client's headers) is never subject to them.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut pingora_cache::storage::HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        let hit = hit_handler.as_any().downcast_ref::<TieredHit>();
        ctx.progress.hit_tier = hit.map(TieredHit::tier);
        let soft_purged = hit.is_some_and(TieredHit::soft_purged);
        let Plan::Cache { cache, .. } = &ctx.plan else {
            return Ok(None);
        };
        if session.subrequest_ctx.is_some() {
            // the background refresh of a soft-purged entry: one instance of the fleet
            // fetches; elsewhere it ends here, its clients served the stale copy
            if soft_purged
                && !is_fresh
                && !self
                    .live
                    .cache
                    .refresh_soft(session.cache.cache_key())
                    .await
            {
                // pingora releases the write lock the parent handed over only when the
                // subrequest goes on to the origin: release it here, or it dangles
                if let Some(sub) = session.subrequest_ctx.as_mut() {
                    sub.release_write_lock();
                }
                return Ok(Some(pingora_cache::ForcedFreshness::ForceFresh));
            }
            return Ok(None);
        }
        if !cache.directives.constrain_reuse() {
            return Ok(None);
        }
        let stored = Directives::of(
            meta.response_header(),
            &ctx.snapshot.config.cache.targeted_cache_control,
        );
        let verdict = cache.directives.verdict(
            meta.age(),
            meta.fresh_until(),
            stored.forbid_stale(),
            SystemTime::now(),
        );
        Ok(verdict.map(|v| match v {
            DirectiveVerdict::Revalidate => pingora_cache::ForcedFreshness::ForceExpired,
            DirectiveVerdict::ServeStale => pingora_cache::ForcedFreshness::ForceFresh,
        }))
    }

    /// A request that says `only-if-cached` and was not answered from the cache gets 504 and
    /// never reaches the origin (RFC 9111 §5.2.1.7). A write that would purge cached entries
    /// while the purge backlog is full gets 503 and never reaches the origin either: the
    /// shared cache could not be told about it, so other instances would go on serving what
    /// it changed (see [`crate::purge::backlog`]).
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let purges = &self.live.purges;
        if !purges.accepts_writes()
            && crate::purge::writes::may_purge(&ctx.snapshot.router, session.req_header())
        {
            PurgeBacklogFull {
                waiting: purges.backlog_len(),
            }
            .emit();
            let body = error_body(
                "purge_backlog_full",
                (
                    "detail",
                    json!("the shared cache cannot be told about writes now (Redis is slow or unreachable); retry later"),
                ),
                &ctx.request_id,
            );
            ctx.progress.status = 503;
            // the request body is not read: the connection cannot carry another request, and
            // the body is drained (bounded) so the client can read the answer
            session.set_keepalive(None);
            respond_json(session, 503, body, &ctx.request_id).await?;
            let bound = ctx.snapshot.config.server.max_request_body_bytes;
            super::drain_refused_body(session, bound).await;
            return Ok(false);
        }
        let only_if_cached =
            matches!(&ctx.plan, Plan::Cache { cache, .. } if cache.directives.only_if_cached);
        if !only_if_cached || session.subrequest_ctx.is_some() {
            return Ok(true);
        }
        let body = error_body(
            "not_cached",
            ("detail", json!("only-if-cached")),
            &ctx.request_id,
        );
        ctx.progress.status = 504;
        respond_json(session, 504, body, &ctx.request_id).await?;
        Ok(false)
    }

    /// The plan's upstream, with its connect/read/write/idle timeouts (the read timeout the
    /// matched route's `timeout`, when it has one).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let target = ctx
            .plan
            .target()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream planned"))?;
        let u = &target.upstream.config;
        let mut peer = HttpPeer::new(u.address.as_str(), false, String::new());
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.total_connection_timeout = Some(u.connect_timeout);
        let route_timeout = target.route.as_ref().and_then(|r| r.timeout);
        let read_timeout = match ctx.plan {
            // An upgrade's handshake, then its tunnel: the origin may be silent this long.
            Plan::Bypass {
                reason: BypassReason::Upgrade,
                ..
            } => ctx.snapshot.config.server.tunnel_idle_timeout,
            _ => route_timeout.unwrap_or(u.read_timeout),
        };
        peer.options.read_timeout = Some(read_timeout);
        peer.options.write_timeout = Some(u.write_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        ctx.progress.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Sends the plan's path and query (the normalized request's, or the rewritten path and
    /// the keyed query), and sets `X-Forwarded-For/Proto/Host` (believed only from trusted
    /// proxies) and `X-Request-Id`.
    ///
    /// Hazard: anything the upstream receives that the key does not hold (a query parameter,
    /// a forwarded host) lets one client choose what others are served.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let target = ctx
            .plan
            .target()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream planned"))?;
        if let Some(uri) = &target.uri {
            let uri = uri
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
            upstream_request.set_uri(uri);
        }
        forwarded::add_forwarded(upstream_request, &target.origin, &ctx.request_id)
    }

    /// Records upstream latency (to the response header), counts 5xx answers, and removes the
    /// response's hop-by-hop headers before the cache or the client sees them.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let delay = ctx
            .progress
            .upstream_started
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let received = Received::now(delay);
        ctx.progress.received = Some(received);
        if let Some(target) = ctx.plan.target() {
            UpstreamResponded {
                metrics: target.metrics(&ctx.snapshot.router),
                upstream: &target.upstream,
                elapsed: delay,
                status: upstream_response.status,
            }
            .emit();
        }
        // Before the cache stores the header: what is for this hop only is neither stored nor
        // sent to clients (RFC 9110 §7.6.1).
        // A 101 is never stored, and keeps its upgrade for the client: response_filter
        // finishes it.
        if upstream_response.status != http::StatusCode::SWITCHING_PROTOCOLS {
            normalize::strip_hop_by_hop(upstream_response, &http::header::PROXY_AUTHENTICATE);
        }
        // A response without a valid Date gets the time it was received (RFC 9110 §6.6.1),
        // so its age and Expires − Date are defined.
        if freshness::date_header(&upstream_response.headers, &http::header::DATE).is_none() {
            let date = httpdate::fmt_http_date(received.response_time);
            upstream_response.insert_header(http::header::DATE, date)?;
        }
        if upstream_response.status == http::StatusCode::NOT_MODIFIED
            && session.cache.phase() == CachePhase::Stale
        {
            ctx.progress.not_modified = Some(Box::new(upstream_response.clone()));
        }
        Ok(())
    }

    /// Whether the origin's response may be stored, and its freshness (see
    /// [`policy::response_decision`]). Attaches the plan's entry context (url, route, tags)
    /// for purges.
    ///
    /// Hazard: storing a response that depends on anything the key does not hold (a user's
    /// credentials, a header outside the key and `Vary`) serves it to every other user.
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Plan::Cache { target, cache } = &ctx.plan else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        // After a 304, pingora hands over the stored header with only a few fields merged:
        // freshen it with every field of the 304 instead (RFC 9111 §4.3.4).
        let freshened = ctx.progress.not_modified.as_deref().and_then(|nm| {
            let stored = session.cache.maybe_cache_meta()?;
            Some(freshness::freshen(stored.response_header(), nm))
        });
        let cx = ResponseContext {
            received: ctx
                .progress
                .received
                .unwrap_or_else(|| Received::now(std::time::Duration::ZERO)),
            authorization: cache.authorization,
            targets: &ctx.snapshot.config.cache.targeted_cache_control,
        };
        let resp = freshened.as_ref().unwrap_or(resp);
        let policy = cache.policy(target);
        match policy::response_decision(resp, policy, cx) {
            Ok(mut meta) => {
                let mut entry = cache.entry.clone();
                // a soft purge may serve it stale unless the origin forbids stale (origin
                // mode: override mode ignores the origin's directives)
                entry.soft_purgeable = policy.mode == CacheMode::Override
                    || !Directives::of(resp, cx.targets).forbid_stale();
                if let Some(name) = &ctx.snapshot.config.cache.surrogate_key_header {
                    let dropped = surrogate::add_keys(&resp.headers, name, &mut entry.tags);
                    if dropped > 0 {
                        SurrogateKeysDropped { count: dropped }.emit();
                    }
                    // never kept: it is for this cache only
                    meta.response_header_mut().remove_header(name);
                }
                meta.extensions_mut().insert(entry);
                ctx.progress.stored = true;
                Ok(RespCacheable::Cacheable(meta))
            }
            Err(reason) => {
                ctx.progress.no_store = Some(reason);
                if let Some(probe) = session
                    .cache
                    .maybe_cache_key()
                    .and_then(|k| k.extensions.get::<L1Probe>())
                {
                    probe.answer_not_storable();
                }
                Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                    reason.as_str(),
                )))
            }
        }
    }

    /// Honours the origin's `Vary`: the variant is the hash of every value of each named
    /// request header (in order, after the hop-by-hop headers were removed).
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let mut variance = VarianceBuilder::new();
        for name in policy::vary_names(meta.response_header()) {
            let lower = name.to_ascii_lowercase();
            let mut value = Vec::new();
            for (i, v) in req.headers.get_all(lower.as_str()).iter().enumerate() {
                if i > 0 {
                    value.extend_from_slice(b", ");
                }
                value.extend_from_slice(v.as_bytes());
            }
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

    /// Counts a tunnel's bytes to the client.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(tunnel) = &mut ctx.progress.tunnel {
            tunnel.to_client += body.as_ref().map_or(0, |b| b.len() as u64);
        }
        Ok(None)
    }

    /// Tells the client what the cache did: `X-Cache`, RFC 9211 `Cache-Status` (with the
    /// reason as `detail` when the cache was bypassed or the response not stored), and the
    /// request id. Runs for hits and misses alike.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.progress.status = upstream_response.status.as_u16();
        let (outcome, detail) = outcome(session, ctx);
        if outcome == CacheOutcome::Revalidated {
            // pingora sends no Age after a validation (RFC 9111 §4: a reused response has one).
            if let Some(meta) = session.cache.maybe_cache_meta() {
                upstream_response.insert_header(http::header::AGE, meta.age().as_secs())?;
            }
        }
        let verdict = Verdict {
            outcome,
            stored: ctx.progress.stored,
            detail,
        };
        response_head::finish(
            upstream_response,
            verdict,
            &ctx.request_id,
            ctx.snapshot.config.cache.surrogate_key_header.as_ref(),
        )?;
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && matches!(
                ctx.plan,
                Plan::Bypass {
                    reason: BypassReason::Upgrade,
                    ..
                }
            )
        {
            // A tunnel from now on: the client may be silent as long as it likes (the
            // origin's silence is bounded by tunnel_idle_timeout, set in upstream_peer).
            session.set_read_timeout(None);
            ctx.progress.tunnel = Some(Tunnel {
                opened: Instant::now(),
                to_origin: 0,
                to_client: 0,
            });
            TunnelOpened.emit();
        }
        // A successful write invalidates what it changed before its client can send the next
        // request (RFC 9111 §4.4): L1 now, Redis in the background.
        let req = session.req_header();
        let status = upstream_response.status.as_u16();
        if let Some(target) = ctx.plan.target() {
            if !req.method.is_safe()
                && (200..400).contains(&status)
                && session.subrequest_ctx.is_none()
            {
                self.live.purges.after_write(
                    &ctx.snapshot.router,
                    req,
                    Some(upstream_response),
                    target.origin.site(),
                );
            }
        }
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
        let upstream = ctx.plan.target().map(|t| &t.upstream);
        let (code, kind) = classify(e);
        // An upstream failure (502/504) after the request was read completely leaves the
        // client's connection in a clean state: keep it, as nginx does. A refused or half-read
        // request, or a failure on the client's side, closes it.
        let reusable = e.esource() == &ErrorSource::Upstream
            && (502..=504).contains(&code)
            && session.is_body_done()
            && session.response_written().is_none();
        if let (Some(kind), Some(upstream)) = (kind, upstream) {
            UpstreamFailed { upstream, kind }.emit();
        }
        if code > 0 {
            let error = match (code, e.esource()) {
                (413, _) => "request_body_too_large",
                (504, _) => "upstream_timeout",
                (_, ErrorSource::Upstream) => "upstream_unavailable",
                (400..=499, _) => "bad_request",
                _ => "internal_error",
            };
            let name = upstream.map_or("", |u| u.config.name.as_str());
            let body = error_body(error, ("upstream", json!(name)), &ctx.request_id);
            ctx.progress.status = code;
            if !reusable {
                // Say so in the answer: the connection is closed after it.
                session.set_keepalive(None);
            }
            if let Err(write_err) = respond_json(session, code, body, &ctx.request_id).await {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: reusable,
        }
    }

    /// Last, for every client request: the `RequestFinished` event (metrics and the optional
    /// access log line).
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.live.request_finished();
        if let Some(tunnel) = ctx.progress.tunnel.take() {
            TunnelClosed {
                to_origin: tunnel.to_origin,
                to_client: tunnel.to_client,
                open_for: tunnel.opened.elapsed(),
            }
            .emit();
        }
        if session.subrequest_ctx.is_some() {
            // A background refresh (stale-while-revalidate) pingora ran on its own: not a
            // client request, so no request metrics or access log line.
            return;
        }
        let status = session
            .response_written()
            .map_or(ctx.progress.status, |r| r.status.as_u16());
        let (outcome, detail) = outcome(session, ctx);
        let req = session.req_header();
        let config = &ctx.snapshot.config;
        RequestFinished {
            metrics: ctx.plan.metrics(&ctx.snapshot.router),
            method: &req.method,
            path: req.uri.path(),
            status,
            outcome,
            detail,
            elapsed: ctx.started.elapsed(),
            request_id: ctx.request_id.to_str().unwrap_or(""),
            error: e,
            lock_wait: session.cache.lock_duration(),
            lock_timeout: config.cache.lock_timeout,
            access_log: config.server.access_log,
        }
        .emit();
    }
}

/// What the cache did for this request, and why it was not used when it was not: from the
/// plan, what happened since, and pingora's cache phase.
fn outcome(session: &Session, ctx: &RequestCtx) -> (CacheOutcome, Option<Detail>) {
    let progress = &ctx.progress;
    match &ctx.plan {
        Plan::Undecided | Plan::Local(_) => return (CacheOutcome::Local, None),
        Plan::Bypass { reason, .. } => {
            return (CacheOutcome::Bypass, Some(Detail::Bypass(*reason)));
        }
        Plan::Cache { .. } if progress.fast_hit => return (CacheOutcome::HitL1, None),
        Plan::Cache { .. } => {}
    }
    let not_stored = |pingora: Option<&NoCacheReason>| {
        let reason = progress
            .no_store
            .or_else(|| pingora.and_then(NoStoreReason::from_pingora));
        (CacheOutcome::Uncacheable, reason.map(Detail::NoStore))
    };
    match session.cache.phase() {
        CachePhase::Hit => match progress.hit_tier {
            Some(Tier::L2) => (CacheOutcome::HitL2, None),
            _ => (CacheOutcome::HitL1, None),
        },
        CachePhase::Stale | CachePhase::StaleUpdating => (CacheOutcome::Stale, None),
        CachePhase::Revalidated => (CacheOutcome::Revalidated, None),
        CachePhase::RevalidatedNoCache(reason) => not_stored(Some(&reason)),
        CachePhase::Miss | CachePhase::Expired => match progress.no_store {
            Some(_) => not_stored(None),
            None => (CacheOutcome::Miss, None),
        },
        // Predicted uncacheable (the key's last response could not be stored): the response
        // filter still judged this one, and says why it is not stored either.
        CachePhase::Bypass if progress.no_store.is_some() => not_stored(None),
        CachePhase::Disabled(NoCacheReason::NeverEnabled) | CachePhase::Bypass => {
            (CacheOutcome::Bypass, None)
        }
        CachePhase::Disabled(reason) => not_stored(Some(&reason)),
        CachePhase::Uninit | CachePhase::CacheKey => (CacheOutcome::Bypass, None),
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
