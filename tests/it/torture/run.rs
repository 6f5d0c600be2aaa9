//! Runs a history against a fleet: launches each step after its gap (at most
//! [`Settings::in_flight`] at a time), reports every outcome to the [`Checker`], and watches
//! the origin's fetches, the instances' logs and `/admin/stats` meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::support::http::{metric, try_request_timeout, Resp};
use crate::support::versioned_origin::Fetch;

use super::check::{Checker, Counts, Violation};
use super::fleet::Fleet;
use super::model::{self, Target, WriteKind, WriteRequest};
use super::ops::{Fault, Op, Step};

/// Deadline of every request the harness sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An origin fetch is checked once it arrived this long ago: every fetch that arrived
/// before it has answered (and been recorded) by then.
const FETCH_SETTLE: Duration = Duration::from_secs(2);

/// How often the watcher reads the origin, the logs and `/admin/stats`.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Concurrent writers of a flood.
const FLOOD_WRITERS: usize = 32;

/// How a run behaves.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// B: how long after a purge's acknowledgement the other instances may still serve
    /// what it removed.
    pub bound: Duration,
    /// Steps running at once, at most.
    pub in_flight: usize,
    /// Stop launching steps at the first violation of this invariant (`None`: of any).
    pub stop_on: Option<u8>,
    /// Never stop launching steps (to survey every violation a history shows).
    pub keep_going: bool,
    /// Each step's gap is multiplied by this (1: as generated).
    pub pace: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub violations: Vec<Violation>,
    /// Steps launched (all, unless a violation stopped the run).
    pub launched: usize,
    pub elapsed: Duration,
    pub counts: Counts,
}

/// What every step's task shares.
struct Ctx {
    fleet: Arc<Fleet>,
    checker: Mutex<Checker>,
    /// Faults never overlap.
    faults: tokio::sync::Mutex<()>,
    /// One config rewrite and reload at a time per instance.
    reloads: Vec<tokio::sync::Mutex<()>>,
    /// Numbers the flood's paths.
    flood_paths: AtomicU32,
    stop_on: Option<u8>,
    keep_going: bool,
}

impl Ctx {
    fn checker(&self) -> MutexGuard<'_, Checker> {
        sidecache::sync::lock(&self.checker)
    }

    fn stopped(&self) -> bool {
        if self.keep_going {
            return false;
        }
        let c = self.checker();
        c.violations
            .iter()
            .any(|v| self.stop_on.is_none_or(|i| i == v.invariant))
    }
}

/// Run `history` on `fleet`.
pub async fn run(fleet: Arc<Fleet>, history: &[Step], settings: Settings) -> Outcome {
    let epoch = Instant::now();
    let instances = fleet.shape.instances;
    let ctx = Arc::new(Ctx {
        checker: Mutex::new(Checker::new(epoch, settings.bound, instances)),
        faults: tokio::sync::Mutex::new(()),
        reloads: (0..instances)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
        flood_paths: AtomicU32::new(0),
        stop_on: settings.stop_on,
        keep_going: settings.keep_going,
        fleet,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch(Arc::clone(&ctx), stopped));
    let slots = Arc::new(Semaphore::new(settings.in_flight));
    let mut tasks = JoinSet::new();
    let mut launched = 0;
    for (i, step) in history.iter().enumerate() {
        let gap = Duration::from_millis(step.gap_ms.into()).mul_f64(settings.pace);
        tokio::time::sleep(gap).await;
        if ctx.stopped() {
            break;
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (ctx, op, label) = (
            Arc::clone(&ctx),
            step.op.clone(),
            format!("step {i}: {}", step.op),
        );
        tasks.spawn(async move {
            execute(&ctx, &op, &label).await;
            drop(slot);
        });
        launched = i + 1;
        while tasks.try_join_next().is_some() {}
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            ctx.checker()
                .harness_failed(format!("a step's task failed: {e}"));
        }
    }
    // the last write purges' L2 parts (and what they log) finish after their answers
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let mut watcher_state = watcher.await.unwrap_or_default();
    watcher_state.pass(&ctx, true).await;
    let elapsed = epoch.elapsed();
    let c = ctx.checker();
    Outcome {
        violations: c.violations.clone(),
        launched,
        elapsed,
        counts: c.counts.clone(),
    }
}

async fn execute(ctx: &Ctx, op: &Op, label: &str) {
    match op {
        Op::Get { inst, url } => get(ctx, *inst, url, label).await,
        Op::Burst {
            url,
            n,
            spread_ms,
            seed,
        } => burst(ctx, url, *n, *spread_ms, *seed, label).await,
        Op::Write {
            inst,
            kind,
            id,
            query,
        } => write(ctx, *inst, *kind, *id, *query, label).await,
        Op::Purge { inst, target } => purge(ctx, *inst, target, label).await,
        Op::Reload { inst, variant } => reload(ctx, *inst, *variant, label).await,
        Op::Flood { inst, n } => flood(ctx, *inst, *n, label).await,
        Op::Fault { fault, hold_ms } => {
            self::fault(ctx, *fault, Duration::from_millis((*hold_ms).into())).await
        }
    }
}

async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp, String> {
    try_request_timeout(
        method,
        url,
        headers,
        Bytes::copy_from_slice(body.as_bytes()),
        REQUEST_TIMEOUT,
    )
    .await
}

async fn get(ctx: &Ctx, inst: usize, url: &str, label: &str) {
    let full = ctx.fleet.instance(inst).url(url);
    let start = Instant::now();
    let answer = send("GET", &full, &[], "").await;
    ctx.checker().get_finished(inst, url, start, &answer, label);
}

/// `n` GETs of `url` on instances and at offsets (within `spread_ms`) drawn from `seed`.
async fn burst(ctx: &Ctx, url: &str, n: u32, spread_ms: u32, seed: u64, label: &str) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let instances = ctx.fleet.shape.instances;
    let arrivals: Vec<(usize, u32)> = (0..n)
        .map(|_| (rng.usize(0..instances), rng.u32(0..=spread_ms)))
        .collect();
    let gets = arrivals.into_iter().map(|(inst, after)| async move {
        tokio::time::sleep(Duration::from_millis(after.into())).await;
        get(ctx, inst, url, label).await;
    });
    futures_join_all(gets).await;
}

async fn write(ctx: &Ctx, inst: usize, kind: WriteKind, id: u32, query: usize, label: &str) {
    let w = WriteRequest::new(kind, id, query);
    let headers = w.headers();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let full = ctx.fleet.instance(inst).url(&w.url);
    let opening = ctx.checker().write_started(&w);
    let start = Instant::now();
    // GET, HEAD, DELETE and OPTIONS with a body are refused (server.allow_body_on_safe_methods)
    let body = if w.method == "DELETE" { "" } else { "{}" };
    let answer = send(w.method, &full, &headers, body).await;
    let end = Instant::now();
    ctx.checker()
        .write_finished(opening, inst, &w, start, end, &answer, label);
}

/// The operator changed what `target` covers at the origin, then purges it.
async fn purge(ctx: &Ctx, inst: usize, target: &Target, label: &str) {
    let versions: HashMap<String, u64> = ctx.fleet.origin.bump(&target.changed_paths());
    let url = ctx.fleet.instance(inst).admin_url("/admin/purge");
    let opening = ctx.checker().purge_started(target);
    let start = Instant::now();
    let body = target.body().to_string();
    let answer = send("POST", &url, &[("content-type", "application/json")], &body).await;
    let end = Instant::now();
    ctx.checker()
        .purge_finished(opening, inst, target, &versions, start, end, &answer, label);
}

async fn reload(ctx: &Ctx, inst: usize, variant: usize, label: &str) {
    let _one_at_a_time = ctx.reloads[inst].lock().await;
    let sc = ctx.fleet.instance(inst);
    sc.rewrite_config(&ctx.fleet.config(inst, variant));
    let json = [("content-type", "application/json")];
    let answer = send("POST", &sc.admin_url("/admin/reload"), &json, "").await;
    ctx.checker().admin_answered(inst, &answer, label);
}

/// `n` writes to unrelated paths through `inst`; the hot entry of every other instance,
/// a hit before, must be a hit after.
async fn flood(ctx: &Ctx, inst: usize, n: u32, label: &str) {
    let mut warm = Vec::new();
    for other in (0..ctx.fleet.shape.instances).filter(|o| *o != inst) {
        if let Some(at) = hot_hit(ctx, other, label).await {
            warm.push((other, at));
        }
    }
    let next = AtomicU32::new(0);
    let writers = (0..FLOOD_WRITERS).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < n {
            let w = WriteRequest::other(ctx.flood_paths.fetch_add(1, Ordering::Relaxed));
            let answer = send(w.method, &ctx.fleet.instance(inst).url(&w.url), &[], "{}").await;
            ctx.checker().status_seen(inst, &answer, label);
        }
    });
    futures_join_all(writers).await;
    for (other, at) in warm {
        let answer = send(
            "GET",
            &ctx.fleet.instance(other).url(model::HOT_URL),
            &[],
            "",
        )
        .await;
        let mut c = ctx.checker();
        c.status_seen(other, &answer, label);
        if let Ok(r) = &answer {
            c.hot_checked(other, at, r.x_cache(), label);
        }
    }
}

/// GET the hot entry on `inst` until it is an L1 hit (a few tries); when it became one.
async fn hot_hit(ctx: &Ctx, inst: usize, label: &str) -> Option<Instant> {
    let url = ctx.fleet.instance(inst).url(model::HOT_URL);
    for _ in 0..5 {
        let answer = send("GET", &url, &[], "").await;
        let at = Instant::now();
        ctx.checker().status_seen(inst, &answer, label);
        if answer.as_ref().is_ok_and(|r| r.x_cache() == "HIT-L1") {
            return Some(at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Run one fault. Faults never overlap: a standalone fault waits for the one under way.
///
/// A cluster master's outage is different. Killing it takes the whole cluster down (every
/// slot must be served), and it is whole again only seconds after the restart, longer than
/// the gap between fault steps. Queued, those outages ran back to back and the cluster was
/// whole in 0 of 40 samples: a fleet that can never reach Redis must end up refusing
/// writes once its bounded purge backlogs fill, whatever it does. So a master is killed
/// only when the cluster has been whole for as long as its last outage lasted (up at least
/// half of the time), and a fault step that arrives before that is skipped and counted.
async fn fault(ctx: &Ctx, fault: Fault, hold: Duration) {
    let whole_again_first = matches!(fault, Fault::NodeDown { .. });
    let _one_at_a_time = if whole_again_first {
        let Ok(guard) = ctx.faults.try_lock() else {
            ctx.checker().fault_skipped();
            return;
        };
        guard
    } else {
        ctx.faults.lock().await
    };
    let started = Instant::now();
    let id = ctx.checker().fault_started(fault.only_instance());
    ctx.fleet.fault(fault, hold).await;
    ctx.checker().fault_healed(id);
    if whole_again_first {
        tokio::time::sleep(started.elapsed()).await;
    }
}

/// Await every future, concurrently, on this task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(
    futures: impl IntoIterator<Item = F>,
) {
    let mut all: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        all.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if all.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// What the watcher has read so far.
#[derive(Default)]
struct Watcher {
    /// Fetches reported by the origin, not yet old enough to check.
    pending: Vec<Fetch>,
    /// Bytes of each instance's log already read.
    log_read: Vec<u64>,
    /// Per instance: when its metrics were last read, and its count of let-downs then.
    let_downs: Vec<Option<(Instant, f64)>>,
    passes: u64,
}

async fn watch(ctx: Arc<Ctx>, mut stopped: tokio::sync::watch::Receiver<bool>) -> Watcher {
    let mut w = Watcher::default();
    loop {
        let stop = tokio::select! {
            _ = stopped.wait_for(|s| *s) => true,
            () = tokio::time::sleep(WATCH_EVERY) => false,
        };
        if stop {
            return w;
        }
        w.pass(&ctx, false).await;
    }
}

impl Watcher {
    /// Check what arrived since the last pass; with `last`, everything.
    async fn pass(&mut self, ctx: &Ctx, last: bool) {
        self.passes += 1;
        self.let_downs(ctx).await;
        self.fetches(ctx, last);
        self.logs(ctx);
        if last || self.passes % 8 == 0 {
            self.stats(ctx).await;
        }
        ctx.checker().prune(Instant::now());
    }

    fn fetches(&mut self, ctx: &Ctx, last: bool) {
        self.pending.extend(ctx.fleet.origin.take_fetches());
        self.pending.sort_by_key(|f| f.arrived);
        let settled = Instant::now().checked_sub(FETCH_SETTLE);
        let ready = match (last, settled) {
            (true, _) => self.pending.len(),
            (false, Some(t)) => self.pending.partition_point(|f| f.arrived < t),
            (false, None) => 0,
        };
        let ready: Vec<Fetch> = self.pending.drain(..ready).collect();
        ctx.checker().fetched(&ready);
    }

    /// The `purged` events of each instance's log since the last pass.
    fn logs(&mut self, ctx: &Ctx) {
        self.log_read.resize(ctx.fleet.shape.instances, 0);
        for inst in 0..ctx.fleet.shape.instances {
            let path = ctx.fleet.log_path(inst);
            let Some(lines) = read_lines_from(&path, &mut self.log_read[inst]) else {
                continue;
            };
            let mut c = ctx.checker();
            for line in lines.lines() {
                if let Some(p) = purge_line(line) {
                    c.purge_seen(inst, &p.source, &p.kind, &p.target, "log");
                }
            }
        }
    }

    /// Each instance's count of let-downs (see `check::Degraded`): Redis reads, fill-lock
    /// operations and stores that did not succeed, and cache lock waits that timed out. A
    /// rise since the last reading is a span the checker may explain a second fetch by.
    async fn let_downs(&mut self, ctx: &Ctx) {
        self.let_downs.resize(ctx.fleet.shape.instances, None);
        for inst in 0..ctx.fleet.shape.instances {
            let url = ctx.fleet.instance(inst).admin_url("/metrics");
            let Ok(r) = send("GET", &url, &[], "").await else {
                continue;
            };
            let now = Instant::now();
            let count = let_down_count(&String::from_utf8_lossy(&r.body));
            if let Some((then, before)) = self.let_downs[inst] {
                if count > before {
                    ctx.checker().degraded(inst, then, now);
                }
            }
            self.let_downs[inst] = Some((now, count));
        }
    }

    /// The recent purges of each instance's `/admin/stats`.
    async fn stats(&mut self, ctx: &Ctx) {
        for inst in 0..ctx.fleet.shape.instances {
            let url = ctx.fleet.instance(inst).admin_url("/admin/stats");
            let Ok(r) = send("GET", &url, &[], "").await else {
                continue;
            };
            let Ok(stats) = serde_json::from_slice::<Value>(&r.body) else {
                continue;
            };
            let purges = stats.get("purges").and_then(Value::as_array).cloned();
            let mut c = ctx.checker();
            for p in purges.unwrap_or_default() {
                let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                c.purge_seen(
                    inst,
                    &field("source"),
                    &field("kind"),
                    &field("target"),
                    "/admin/stats",
                );
            }
        }
    }
}

/// The sum of `sidecache_l2_operations_total` for the operations a fill depends on (`get`,
/// `lock`, `set`) with a result other than `ok`, and of `sidecache_cache_lock_timeouts_total`.
fn let_down_count(scrape: &str) -> f64 {
    let mut count = metric(scrape, "sidecache_cache_lock_timeouts_total");
    for op in ["get", "lock", "set"] {
        for result in ["error", "timeout", "skipped"] {
            let series =
                format!("sidecache_l2_operations_total{{op=\"{op}\",result=\"{result}\"}}");
            count += metric(scrape, &series);
        }
    }
    count
}

/// Read the whole lines of `path` after byte `*offset`, moving it past them. Long runs
/// write gigabytes of log: what was read is given back to the file system (a hole punched
/// up to [`LOG_KEPT`] before the offset), so the file stays sparse.
fn read_lines_from(path: &std::path::Path, offset: &mut u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    file.seek(SeekFrom::Start(*offset)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let end = bytes.iter().rposition(|b| *b == b'\n')? + 1;
    bytes.truncate(end);
    *offset += end as u64;
    punch_hole(&file, offset.saturating_sub(LOG_KEPT) / 4096 * 4096);
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// How much of a log before the read offset stays on disk (for the report of a failure).
pub const LOG_KEPT: u64 = 32 << 20;

/// Give back the first `len` bytes of `file` to the file system (they then read as zeros).
fn punch_hole(file: &std::fs::File, len: u64) {
    #[cfg(target_os = "linux")]
    if len > 0 {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
        // SAFETY: fallocate on an open descriptor we own; failure only leaves the bytes.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                len,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
}

/// A `PurgeApplied` log line's fields.
struct PurgeLine {
    kind: String,
    source: String,
    target: String,
}

/// The fields of a JSON log line whose message is `purged`. The event's field `target` and
/// the log record's own `target` (`sidecache::purge`) share a key; the field comes first.
fn purge_line(line: &str) -> Option<PurgeLine> {
    if !line.contains("\"purged\"") {
        return None;
    }
    let pairs = json_pairs(line)?;
    let first = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    if first("message").as_deref() != Some("purged") {
        return None;
    }
    Some(PurgeLine {
        kind: first("kind")?,
        source: first("source")?,
        target: first("target")?,
    })
}

/// The top-level members of a JSON object in order, duplicates kept.
fn json_pairs(line: &str) -> Option<Vec<(String, Value)>> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry::<String, Value>()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, Pairs).ok()
}
