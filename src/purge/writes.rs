//! Invalidation after writes: RFC 9111 §4.4 (a successful unsafe request invalidates the
//! stored responses for its URL) and routes' `invalidate_on` rules (a write such as
//! `POST /api/concierge/sessions/:id/end` purges that route's entries with the same params).
//!
//! [`PurgeService::after_write`] runs on the request path and never waits on Redis: each
//! purge is recorded and applied to L1 at once (so this instance serves nothing it matches
//! from either tier from then on, and nothing in flight can store it back), and its L2 part
//! (batched Redis delete, broadcast) goes to a bounded queue ([`QUEUE_CAPACITY`]) drained by
//! one worker task running up to [`WORKERS`] purges at a time, started with the first write.
//!
//! **A full queue never drops a purge.** Its L1 part is applied inline as always; its L2
//! part is escalated: from then until it has run, this instance serves nothing from L2 and
//! stores nothing that work begun earlier fetched, and the worker runs one full purge of L2
//! (prefix `""`, every entry) broadcast to every instance, which covers every overflowed
//! purge at once. Each overflow counts as `sidecache_purge_queue_overflows_total`; a queue
//! that fills means Redis is far slower than the writes.

use std::sync::{Mutex, MutexGuard};

use http::header;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::{PurgeKind, PurgeReport, PurgeRequest, PurgeService, PurgeSource};
use crate::cache::key;
use crate::cache::storage::PurgeTicket;
use crate::pattern::fill_path;
use crate::proxy::normalize::{normalize_authority, normalize_path};
use crate::routing::Router;
use crate::telemetry::events::{InternalEvent, PurgeApplied, PurgeQueueOverflow};

/// Purges whose L2 part may wait for the worker.
pub const QUEUE_CAPACITY: usize = 1024;

/// Purges the worker runs at a time.
pub const WORKERS: usize = 4;

/// The purges a successful write to `req` calls for: its exact URL (and its path without the
/// query), every query variant of its path, the URLs its response names in `Location` and
/// `Content-Location` when they are on the same site (RFC 9111 §4.4; `site` is the request's
/// `scheme://authority`), and the entries of each route whose `invalidate_on` matches, with the
/// same params. A prefix always ends with `?`, so `/a/1` never purges `/a/10`.
pub fn purges_after(
    router: &Router,
    req: &RequestHeader,
    resp: Option<&ResponseHeader>,
    site: &str,
) -> Vec<PurgeRequest> {
    let path = req.uri.path();
    let mut urls = vec![key::request_url(req).to_owned()];
    if req.uri.query().is_some() {
        urls.push(path.to_owned());
    }
    let mut prefixes = vec![format!("{path}?")];
    let named = resp.into_iter().flat_map(|r| {
        [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .filter_map(|name| r.headers.get(name)?.to_str().ok())
            .filter_map(|value| same_site_url(value, path, site))
            .collect::<Vec<_>>()
    });
    for url in named {
        let target_path = url.split('?').next().unwrap_or(&url).to_owned();
        prefixes.push(format!("{target_path}?"));
        urls.push(url);
    }
    for m in router.invalidations(&req.method, path) {
        let mut target = String::new();
        fill_path(&m.policy.pattern, &m.params, &mut target);
        prefixes.push(format!("{target}?"));
        urls.push(target);
    }
    urls.sort_unstable();
    urls.dedup();
    prefixes.sort_unstable();
    prefixes.dedup();
    let url = |u| PurgeRequest::new(PurgeKind::Url, u, PurgeSource::Write);
    let prefix = |p| PurgeRequest::new(PurgeKind::Prefix, p, PurgeSource::Write);
    urls.into_iter()
        .map(url)
        .chain(prefixes.into_iter().map(prefix))
        .collect()
}

/// A `Location`/`Content-Location` value as the normalized `path?query` entries are indexed
/// by, when it is on `site` (an absolute URL of the same scheme and authority, a path, or a
/// path relative to the request's `base`); `None` for another site or a refused path.
fn same_site_url(value: &str, base: &str, site: &str) -> Option<String> {
    let value = value.trim();
    let relative = if let Some((scheme, rest)) = value.split_once("://") {
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let mut theirs = format!("{}://", scheme.to_ascii_lowercase());
        normalize_authority(authority, &scheme.to_ascii_lowercase(), &mut theirs).ok()?;
        if theirs != site {
            return None;
        }
        path.to_owned()
    } else if value.starts_with('/') {
        value.to_owned()
    } else {
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{value}")
    };
    let relative = relative.split('#').next().unwrap_or("");
    let (path, query) = match relative.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (relative, None),
    };
    let path = normalize_path(path).ok()?;
    Some(match query {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    })
}

/// A write's purge whose L1 part is done, waiting for its L2 part.
struct Queued {
    request: PurgeRequest,
    ticket: PurgeTicket<'static>,
    l1_removed: u64,
}

/// The bounded queue of write purges' L2 parts, and the escalation for when it is full.
#[derive(Default)]
pub(super) struct WriteQueue {
    /// The worker's queue, created (and the worker started) by the first write.
    sender: Mutex<Option<mpsc::Sender<Queued>>>,
    /// The unsettled "everything" purge an overflow recorded, until the worker takes it.
    escalation: Mutex<Option<PurgeTicket<'static>>>,
    /// Wakes the worker for an escalation.
    escalated: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // plain data: a panicking holder cannot leave it inconsistent
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PurgeService {
    /// Purge what a successful write to `req` (answered by `resp`, from the client's `site`)
    /// invalidates: L1 now, L2 and the broadcast by the worker (see the module docs). Never
    /// blocks on Redis.
    pub fn after_write(
        &'static self,
        router: &Router,
        req: &RequestHeader,
        resp: Option<&ResponseHeader>,
        site: &str,
    ) {
        for purge in purges_after(router, req, resp, site) {
            self.invalidate(purge);
        }
    }

    /// One write purge: recorded and applied to L1 now; its L2 part queued, or escalated
    /// when the queue is full.
    fn invalidate(&'static self, request: PurgeRequest) {
        let l2_part = self.cache.l2().is_some();
        let ticket = self
            .cache
            .record_purge(request.kind, &request.target, l2_part);
        let l1_removed = self.cache.purge_l1_now(request.kind, &request.target);
        if !l2_part {
            drop(ticket);
            let report = PurgeReport {
                l1_removed,
                l2_ok: true,
                ..PurgeReport::default()
            };
            PurgeApplied {
                request: &request,
                report: &report,
                instance: self.instance_id(),
            }
            .emit();
            return;
        }
        let job = Queued {
            request,
            ticket,
            l1_removed,
        };
        if let Err(job) = self.enqueue(job) {
            self.escalate();
            // settled only once the escalation holds L2 back
            drop(job);
        }
    }

    /// Hand `job` to the worker (starting it if there is none, or its runtime is gone);
    /// gives it back when the queue is full or no worker can run.
    fn enqueue(&'static self, job: Queued) -> Result<(), Queued> {
        let mut sender = lock(&self.writes.sender);
        if sender.as_ref().is_none_or(mpsc::Sender::is_closed) {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return Err(job);
            };
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            runtime.spawn(self.run_writes(rx));
            *sender = Some(tx);
        }
        match sender.as_ref() {
            Some(tx) => tx.try_send(job).map_err(|e| e.into_inner()),
            None => Err(job),
        }
    }

    /// A write purge's L2 part did not fit the queue: hold back L2 on this instance until
    /// one full purge of L2 has run (see the module docs).
    fn escalate(&'static self) {
        let mut escalation = lock(&self.writes.escalation);
        let first = escalation.is_none();
        if first {
            *escalation = Some(self.cache.record_purge(PurgeKind::Prefix, "", true));
        }
        drop(escalation);
        PurgeQueueOverflow { escalated: first }.emit();
        self.writes.escalated.notify_one();
    }

    /// The worker: runs queued L2 parts (and escalations first), [`WORKERS`] at a time.
    async fn run_writes(&'static self, mut rx: mpsc::Receiver<Queued>) {
        let mut running = JoinSet::new();
        loop {
            let room = running.len() < WORKERS;
            tokio::select! {
                biased;
                () = self.writes.escalated.notified(), if room => {
                    if let Some(ticket) = lock(&self.writes.escalation).take() {
                        let everything = PurgeRequest::new(PurgeKind::Prefix, "", PurgeSource::Write);
                        running.spawn(async move { self.finish(&everything, ticket, 0).await; });
                    }
                }
                job = rx.recv(), if room => match job {
                    Some(job) => {
                        running.spawn(async move {
                            self.finish(&job.request, job.ticket, job.l1_removed).await;
                        });
                    }
                    None => break,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }
}
