//! The invariants, checked as events arrive (the module doc of `torture.rs` states them).
//!
//! The runner reports what happened with times on one clock (`Instant`s of this process):
//! requests with their start and end, purges and writes with their start and
//! acknowledgement, faults with their start and heal, and the origin's fetches with their
//! arrival. Each check is decided as soon as everything it depends on is known:
//! - a GET (invariants 1 and 4) when it ends: every purge it must honour ended before it
//!   started, and every fault that could extend a purge's bound started before that bound;
//! - an origin fetch (invariant 2) once no earlier-arriving fetch can still be reported and
//!   every operation that could have uncached its URL before it arrived has been recorded;
//! - a purge seen in a log or in `/admin/stats` (invariant 3) against the targets of the
//!   writes launched before it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::support::http::Resp;
use crate::support::versioned_origin::Fetch;

use super::model::{self, Coverage, Target, WriteRequest};

/// How far the origin's `Date` (whole seconds) and the moment an entry is stored may move
/// its expiry before `arrival + lifetime`.
const EXPIRY_SLACK: Duration = Duration::from_millis(1100);

/// How long settled bookkeeping is kept before it is folded (floors) or dropped (openings).
const RETAIN: Duration = Duration::from_secs(90);

/// One broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// 1 to 4, as in the module doc of `torture.rs` (0: the harness itself failed).
    pub invariant: u8,
    /// Milliseconds since the run began.
    pub at_ms: u64,
    /// The URL whose entry broke it, if one did.
    pub url: Option<String>,
    pub what: String,
}

/// Which instances something concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Only(usize),
}

impl Scope {
    fn touches(self, inst: usize) -> bool {
        self == Scope::All || self == Scope::Only(inst)
    }
}

/// A Redis fault's span.
#[derive(Debug, Clone)]
struct FaultSpan {
    id: usize,
    scope: Scope,
    start: Instant,
    heal: Option<Instant>,
}

/// Something that may have uncached the URLs it covers at any moment in `[lo, hi]`.
#[derive(Debug, Clone)]
struct Opening {
    /// `None`: every URL (a fault).
    coverage: Option<Vec<Coverage>>,
    lo: Instant,
    /// `None` while the operation runs.
    hi: Option<Instant>,
}

/// A purge's promise for one URL: once its bound has passed, nothing older than `version`.
#[derive(Debug, Clone)]
struct Floor {
    version: u64,
    purger: usize,
    start: Instant,
    ack: Instant,
    label: String,
}

/// The last origin fetch of a URL (by one instance, or by any).
#[derive(Debug, Clone, Copy)]
struct LastFetch {
    arrived: Instant,
    listener: usize,
}

/// A span in which one instance was let down as designed: its Redis tier failed it (a
/// fill-lock, read or store that timed out, failed, or was skipped by an open breaker), or a
/// wait on another request's fetch ran out (`cache.lock_timeout`). Either lets it fetch
/// without the lock (or tells the lock's waiters to), which the issue allows ("per instance
/// while Redis is down"; "the wait is bounded").
#[derive(Debug, Clone, Copy)]
struct Degraded {
    inst: usize,
    lo: Instant,
    hi: Instant,
}

/// How far a [`Degraded`] span may lie from the fetches it explains: a failure is counted
/// when its request finishes, after its fetch arrived (the origin answers within 300 ms),
/// and a holder's store may fail up to `write_timeout` (2 s) after its fetch.
const DEGRADED_SLACK: Duration = Duration::from_secs(2);

/// A GET's answer, kept a while to explain double fetches.
#[derive(Debug, Clone)]
struct Answered {
    inst: usize,
    end: Instant,
    x_cache: String,
}

/// GETs kept per URL for [`Answered`].
const ANSWERS_KEPT: usize = 256;

/// Handle of an opening whose end is not known yet.
#[derive(Debug, Clone, Copy)]
pub struct OpenId(usize);

/// Handle of a running fault.
#[derive(Debug, Clone, Copy)]
pub struct FaultId {
    fault: usize,
    opening: OpenId,
}

/// What the run did, for the report.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub gets: u64,
    pub writes: u64,
    pub purges: u64,
    pub fetches: u64,
    pub faults: u64,
    /// Cluster fault steps skipped because the cluster was not yet whole for long enough.
    pub faults_skipped: u64,
    pub logged_purges: u64,
    /// Violations of invariants 1 to 4, each counted, listed or not (see
    /// [`LISTED_PER_INVARIANT`]).
    pub broken: [u64; 4],
    /// Second fetches in one fill window that a [`Degraded`] span of either instance
    /// explains (reported, never hidden).
    pub degraded_refetches: u64,
    /// Such spans seen.
    pub degraded_spans: u64,
}

/// Violations listed per invariant; more are counted only. Per invariant, so a flood of one
/// kind (a burst of 503s) cannot hide the first violation of another.
pub const LISTED_PER_INVARIANT: usize = 50;

/// The invariants' state.
pub struct Checker {
    epoch: Instant,
    bound: Duration,
    instances: usize,
    faults: Vec<FaultSpan>,
    openings: BTreeMap<usize, Opening>,
    next_opening: usize,
    floors: HashMap<String, Vec<Floor>>,
    /// Per `(url, reader)`: the highest version of floors folded away (bound long past).
    settled: HashMap<(String, usize), u64>,
    last_by_instance: HashMap<(String, usize), LastFetch>,
    last_by_fleet: HashMap<String, LastFetch>,
    write_targets: HashSet<(&'static str, String)>,
    admin_targets: HashSet<(&'static str, String)>,
    answers: HashMap<String, VecDeque<Answered>>,
    degraded: Vec<Degraded>,
    pub counts: Counts,
    pub violations: Vec<Violation>,
}

impl Checker {
    pub fn new(epoch: Instant, bound: Duration, instances: usize) -> Checker {
        Checker {
            epoch,
            bound,
            instances,
            faults: Vec::new(),
            openings: BTreeMap::new(),
            next_opening: 0,
            floors: HashMap::new(),
            settled: HashMap::new(),
            last_by_instance: HashMap::new(),
            last_by_fleet: HashMap::new(),
            write_targets: HashSet::new(),
            admin_targets: HashSet::new(),
            answers: HashMap::new(),
            degraded: Vec::new(),
            counts: Counts::default(),
            violations: Vec::new(),
        }
    }

    /// Milliseconds since the run began.
    pub fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn violate(&mut self, invariant: u8, what: String) {
        self.violate_at(invariant, None, what);
    }

    /// A violation that concerns the entry of `url`.
    fn violate_at(&mut self, invariant: u8, url: Option<&str>, what: String) {
        if self.violations.iter().any(|v| v.what == what) {
            return;
        }
        if let Some(n) = self
            .counts
            .broken
            .get_mut(usize::from(invariant).wrapping_sub(1))
        {
            *n += 1;
        }
        let listed = self
            .violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .count();
        if listed < LISTED_PER_INVARIANT {
            let at_ms = self.ms(Instant::now());
            self.violations.push(Violation {
                invariant,
                at_ms,
                url: url.map(str::to_owned),
                what,
            });
        }
    }

    fn open(&mut self, coverage: Option<Vec<Coverage>>) -> OpenId {
        let id = self.next_opening;
        self.next_opening += 1;
        let lo = Instant::now();
        self.openings.insert(
            id,
            Opening {
                coverage,
                lo,
                hi: None,
            },
        );
        OpenId(id)
    }

    fn close(&mut self, id: OpenId, end: Instant) {
        let hi = end + self.bound;
        if let Some(o) = self.openings.get_mut(&id.0) {
            o.hi = Some(hi);
        }
    }

    /// The harness itself failed (reported as invariant 0).
    pub fn harness_failed(&mut self, what: String) {
        self.violate(0, what);
    }

    // ---- faults ----

    /// A fault begins now, limited to `only` (or every instance).
    pub fn fault_started(&mut self, only: Option<usize>) -> FaultId {
        self.counts.faults += 1;
        let opening = self.open(None);
        let id = self.counts.faults as usize;
        self.faults.push(FaultSpan {
            id,
            scope: only.map_or(Scope::All, Scope::Only),
            start: Instant::now(),
            heal: None,
        });
        FaultId { fault: id, opening }
    }

    /// A fault step was skipped (see `run::fault`).
    pub fn fault_skipped(&mut self) {
        self.counts.faults_skipped += 1;
    }

    /// The fault healed now.
    pub fn fault_healed(&mut self, id: FaultId) {
        let now = Instant::now();
        if let Some(f) = self.faults.iter_mut().find(|f| f.id == id.fault) {
            f.heal = Some(now);
        }
        self.close(id.opening, now);
    }

    // ---- writes and purges (invariant 1's floors, invariant 2's openings) ----

    /// A write is about to be sent; returns its opening.
    pub fn write_started(&mut self, write: &WriteRequest) -> OpenId {
        for (kind, target) in write.allowed_purges() {
            self.write_targets.insert((kind, target));
        }
        let coverage = write
            .purged_paths()
            .into_iter()
            .map(Coverage::Path)
            .collect();
        self.open(Some(coverage))
    }

    /// The write's answer arrived at `end`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_finished(
        &mut self,
        id: OpenId,
        inst: usize,
        write: &WriteRequest,
        start: Instant,
        end: Instant,
        answer: &Result<Resp, String>,
        label: &str,
    ) {
        self.counts.writes += 1;
        self.close(id, end);
        let Some(resp) = self.answered(inst, answer, label, &[200, 201]) else {
            return;
        };
        let bumped = resp
            .json()
            .get("bumped")
            .and_then(|b| b.as_object().cloned())
            .unwrap_or_default();
        let coverage: Vec<Coverage> = write
            .purged_paths()
            .into_iter()
            .map(Coverage::Path)
            .collect();
        for url in model::urls() {
            if !coverage.iter().any(|c| c.covers(&url)) {
                continue;
            }
            let Some(version) = bumped.get(model::path_of(&url)).and_then(|v| v.as_u64()) else {
                continue;
            };
            self.add_floor(&url, version, inst, start, end, label);
        }
    }

    /// An admin purge is about to be sent; returns its opening.
    pub fn purge_started(&mut self, target: &Target) -> OpenId {
        let (kind, value) = target.kind_and_value();
        self.admin_targets.insert((kind, value.to_owned()));
        self.open(Some(vec![target.coverage()]))
    }

    /// The admin purge's answer arrived at `end`; `versions` are those the origin had
    /// just moved to before it was sent.
    #[allow(clippy::too_many_arguments)]
    pub fn purge_finished(
        &mut self,
        id: OpenId,
        inst: usize,
        target: &Target,
        versions: &HashMap<String, u64>,
        start: Instant,
        end: Instant,
        answer: &Result<Resp, String>,
        label: &str,
    ) {
        self.counts.purges += 1;
        self.close(id, end);
        if self.answered(inst, answer, label, &[200]).is_none() {
            return;
        }
        let coverage = target.coverage();
        for url in model::urls() {
            if let (true, Some(v)) = (coverage.covers(&url), versions.get(model::path_of(&url))) {
                self.add_floor(&url, *v, inst, start, end, label);
            }
        }
    }

    fn add_floor(
        &mut self,
        url: &str,
        version: u64,
        purger: usize,
        start: Instant,
        ack: Instant,
        label: &str,
    ) {
        self.floors.entry(url.to_owned()).or_default().push(Floor {
            version,
            purger,
            start,
            ack,
            label: label.to_owned(),
        });
    }

    /// When a floor binds `reader`: its acknowledgement (plus the bound on the other
    /// instances), extended to the heal plus the bound of each fault touching the purging or
    /// the reading instance while the floor did not bind yet. `None`: a fault still runs.
    fn binds_from(&self, f: &Floor, reader: usize) -> Option<Instant> {
        let mut from = f.ack
            + if reader == f.purger {
                Duration::ZERO
            } else {
                self.bound
            };
        loop {
            let mut moved = false;
            for fault in &self.faults {
                let touches = fault.scope.touches(reader) || fault.scope.touches(f.purger);
                let overlaps = fault.start <= from && fault.heal.is_none_or(|h| h >= f.start);
                if !(touches && overlaps) {
                    continue;
                }
                let until = fault.heal? + self.bound;
                if until > from {
                    from = until;
                    moved = true;
                }
            }
            if !moved {
                return Some(from);
            }
        }
    }

    // ---- requests (invariants 1 and 4) ----

    /// The answer if it is one of `ok`; else records a violation of invariant 4 (5xx or no
    /// answer) or a harness error (another status, reported as invariant 4 too: the origin
    /// never refuses).
    fn answered<'r>(
        &mut self,
        inst: usize,
        answer: &'r Result<Resp, String>,
        label: &str,
        ok: &[u16],
    ) -> Option<&'r Resp> {
        match answer {
            Ok(r) if ok.contains(&r.status) => Some(r),
            Ok(r) => {
                let what = format!(
                    "{label}: @{inst} answered {} (X-Cache {}) while the origin was up: {}",
                    r.status,
                    r.x_cache(),
                    r.text().chars().take(300).collect::<String>()
                );
                self.violate(4, what);
                None
            }
            Err(e) => {
                self.violate(4, format!("{label}: @{inst} gave no answer: {e}"));
                None
            }
        }
    }

    /// A data-plane request whose status must be below 500 (flood writes, hot checks).
    pub fn status_seen(&mut self, inst: usize, answer: &Result<Resp, String>, label: &str) {
        let ok: Vec<u16> = (100..500).collect();
        self.answered(inst, answer, label, &ok);
    }

    /// An admin request that must answer 200 (reloads).
    pub fn admin_answered(&mut self, inst: usize, answer: &Result<Resp, String>, label: &str) {
        self.answered(inst, answer, label, &[200]);
    }

    /// A GET of `url` on `inst`, sent at `start`, ended.
    pub fn get_finished(
        &mut self,
        inst: usize,
        url: &str,
        start: Instant,
        answer: &Result<Resp, String>,
        label: &str,
    ) {
        self.counts.gets += 1;
        let Some(resp) = self.answered(inst, answer, label, &[200]) else {
            return;
        };
        let Some(version) = resp.header("x-version").and_then(|v| v.parse::<u64>().ok()) else {
            self.violate(
                4,
                format!("{label}: @{inst} answered {url} without x-version"),
            );
            return;
        };
        let x_cache = resp.x_cache().to_owned();
        let detail = resp
            .header("cache-status")
            .and_then(|c| c.split("detail=").nth(1))
            .map_or(String::new(), |d| format!("({d})"));
        let kept = self.answers.entry(url.to_owned()).or_default();
        if kept.len() >= ANSWERS_KEPT {
            kept.pop_front();
        }
        kept.push_back(Answered {
            inst,
            end: Instant::now(),
            x_cache: format!("{x_cache}{detail}"),
        });
        if let Some(&settled) = self.settled.get(&(url.to_owned(), inst)) {
            if version < settled {
                let what = format!(
                    "{label}: GET {url} on @{inst} at {}ms answered version {version} \
                     (X-Cache {x_cache}); a purge more than {}s old made version {settled} current",
                    self.ms(start),
                    RETAIN.as_secs()
                );
                self.violate_at(1, Some(url), what);
                return;
            }
        }
        let stale = self.floors.get(url).into_iter().flatten().find(|f| {
            f.version > version && self.binds_from(f, inst).is_some_and(|from| start > from)
        });
        if let Some(f) = stale.cloned() {
            let from = self.binds_from(&f, inst).map_or(0, |t| self.ms(t));
            let what = format!(
                "{label}: GET {url} on @{inst} started at {}ms answered version {version} \
                 (X-Cache {x_cache}), but [{}] on @{} (sent {}ms, answered {}ms) had made \
                 version {} current; its bound for @{inst} ended at {from}ms",
                self.ms(start),
                f.label,
                f.purger,
                self.ms(f.start),
                self.ms(f.ack),
                f.version,
            );
            self.violate_at(1, Some(url), what);
        }
    }

    // ---- origin fetches (invariant 2) ----

    /// Fetches in arrival order, each reported once, none arriving before one already
    /// reported.
    pub fn fetched(&mut self, fetches: &[Fetch]) {
        for f in fetches {
            self.counts.fetches += 1;
            let here = LastFetch {
                arrived: f.arrived,
                listener: f.listener,
            };
            if let Some(prev) = self
                .last_by_instance
                .get(&(f.url.clone(), f.listener))
                .copied()
            {
                self.check_refill(&f.url, prev, here, "this instance");
            }
            if let Some(prev) = self.last_by_fleet.get(&f.url).copied() {
                if prev.listener != f.listener {
                    self.check_refill(&f.url, prev, here, "the fleet (fill_lock = true)");
                }
            }
            self.last_by_instance
                .insert((f.url.clone(), f.listener), here);
            self.last_by_fleet.insert(f.url.clone(), here);
        }
    }

    /// Instance `inst` was let down as designed at some moment in `[lo, hi]` (see
    /// [`Degraded`]).
    pub fn degraded(&mut self, inst: usize, lo: Instant, hi: Instant) {
        self.counts.degraded_spans += 1;
        self.degraded.push(Degraded { inst, lo, hi });
    }

    /// `next` fetched `url` again after `prev`: a violation unless something explains it.
    fn check_refill(&mut self, url: &str, prev: LastFetch, next: LastFetch, per: &str) {
        if self.refill_explained(url, prev, next) {
            return;
        }
        let degraded = self.degraded.iter().any(|d| {
            (d.inst == prev.listener || d.inst == next.listener)
                && d.lo <= next.arrived + DEGRADED_SLACK
                && d.hi + DEGRADED_SLACK >= prev.arrived
        });
        if degraded {
            self.counts.degraded_refetches += 1;
        } else {
            self.double_fetch(url, prev, next, per);
        }
    }

    /// Whether something may have uncached `url` between the fetches `prev` and `next`:
    /// its lifetime ran out, or a purge, write or fault overlapped the gap.
    fn refill_explained(&self, url: &str, prev: LastFetch, next: LastFetch) -> bool {
        if let Some(life) = model::min_lifetime(url) {
            if next.arrived + EXPIRY_SLACK >= prev.arrived + life {
                return true;
            }
        }
        self.openings.values().any(|o| {
            let covers = o
                .coverage
                .as_ref()
                .is_none_or(|cs| cs.iter().any(|c| c.covers(url)));
            covers && o.lo <= next.arrived && o.hi.is_none_or(|hi| hi >= prev.arrived)
        })
    }

    fn double_fetch(&mut self, url: &str, prev: LastFetch, next: LastFetch, per: &str) {
        let what = format!(
            "the origin was asked for {url} by @{} at {}ms after @{} had fetched it at {}ms, \
             though nothing could have uncached it in between (no expiry, and no purge, \
             write or fault overlapping the gap or ending less than B before it): two \
             fetches in one fill window of {per}; GETs of it answered from then to 1 s \
             later: {}",
            next.listener,
            self.ms(next.arrived),
            prev.listener,
            self.ms(prev.arrived),
            self.answers_between(url, prev.arrived, next.arrived + Duration::from_secs(1)),
        );
        self.violate_at(2, Some(url), what);
    }

    /// How the GETs of `url` that ended within `[from, to]` were answered, e.g.
    /// `@0 MISS x2, @1 HIT-L2 x3`.
    fn answers_between(&self, url: &str, from: Instant, to: Instant) -> String {
        let mut tally: BTreeMap<(usize, &str), u32> = BTreeMap::new();
        for a in self.answers.get(url).into_iter().flatten() {
            if a.end >= from && a.end <= to {
                *tally.entry((a.inst, a.x_cache.as_str())).or_default() += 1;
            }
        }
        if tally.is_empty() {
            return "none".to_owned();
        }
        let parts: Vec<String> = tally
            .iter()
            .map(|((inst, x), n)| format!("@{inst} {x} x{n}"))
            .collect();
        parts.join(", ")
    }

    // ---- purges seen (invariant 3) ----

    /// A purge instance `inst` reports (its log, or `/admin/stats`, named by `seen_in`).
    pub fn purge_seen(
        &mut self,
        inst: usize,
        source: &str,
        kind: &str,
        target: &str,
        seen_in: &str,
    ) {
        self.counts.logged_purges += 1;
        let key = (kind_label(kind), target.to_owned());
        let allowed = match source {
            "write" => self.write_targets.contains(&key) || is_flood_target(kind, target),
            "remote" => {
                self.write_targets.contains(&key)
                    || self.admin_targets.contains(&key)
                    || is_flood_target(kind, target)
            }
            "admin" | "cli" => self.admin_targets.contains(&key),
            _ => false,
        };
        if !allowed {
            let what = format!(
                "@{inst}'s {seen_in} shows a purge of {kind} {target:?} from source {source}, \
                 which no operation of the harness asked for"
            );
            self.violate(3, what);
        }
    }

    /// The hot entry on `inst` was a hit at `warm` and answered `x_cache` at `check`, while
    /// another instance took a flood of unrelated writes.
    pub fn hot_checked(&mut self, inst: usize, warm: Instant, x_cache: &str, label: &str) {
        if x_cache == "HIT-L1" {
            return;
        }
        let faulted = self
            .faults
            .iter()
            .any(|f| f.scope.touches(inst) && f.heal.is_none_or(|h| h + self.bound >= warm));
        if !faulted {
            let what = format!(
                "{label}: the hot entry {} on @{inst}, a hit at {}ms, answered X-Cache \
                 {x_cache} after the flood on another instance",
                model::HOT_URL,
                self.ms(warm)
            );
            self.violate(3, what);
        }
    }

    // ---- bookkeeping ----

    /// Fold floors whose bound passed long ago and drop openings and faults that ended
    /// long ago (none of them can decide a check any more).
    pub fn prune(&mut self, now: Instant) {
        let Some(horizon) = now.checked_sub(RETAIN) else {
            return;
        };
        let mut floors = std::mem::take(&mut self.floors);
        for (url, list) in floors.iter_mut() {
            let (old, keep): (Vec<Floor>, Vec<Floor>) = list.drain(..).partition(|f| {
                (0..self.instances).all(|r| self.binds_from(f, r).is_some_and(|t| t < horizon))
            });
            *list = keep;
            for f in old {
                for r in 0..self.instances {
                    let v = self.settled.entry((url.clone(), r)).or_insert(0);
                    *v = (*v).max(f.version);
                }
            }
        }
        floors.retain(|_, list| !list.is_empty());
        self.floors = floors;
        self.openings
            .retain(|_, o| o.hi.is_none_or(|hi| hi >= horizon));
        self.degraded.retain(|d| d.hi >= horizon);
        if let Some(long_ago) = horizon.checked_sub(RETAIN) {
            self.faults.retain(|f| f.heal.is_none_or(|h| h >= long_ago));
        }
    }
}

/// The kind label as a `'static` string (`url`, `prefix`, `tag`).
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "url" => "url",
        "prefix" => "prefix",
        "tag" => "tag",
        _ => "unknown",
    }
}

/// A target one of the flood's writes (`POST /api/other/N`) may purge.
fn is_flood_target(kind: &str, target: &str) -> bool {
    let Some(rest) = target.strip_prefix("/api/other/") else {
        return false;
    };
    let n = match kind {
        "url" => rest,
        "prefix" => match rest.strip_suffix('?') {
            Some(n) => n,
            None => return false,
        },
        _ => return false,
    };
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::HeaderMap;

    use super::super::model::{Target, WriteKind, WriteRequest};
    use super::*;

    const B: Duration = Duration::from_millis(300);

    fn answer(version: u64) -> Result<Resp, String> {
        let mut headers = HeaderMap::new();
        headers.insert("x-version", version.to_string().parse().expect("header"));
        headers.insert("x-cache", "HIT-L1".parse().expect("header"));
        Ok(Resp {
            status: 200,
            headers,
            body: Bytes::from_static(
                b"{\"bumped\":{\"/api/items/1\":2,\"/api/items/1/detail\":2}}",
            ),
        })
    }

    /// A checker where instance 0 wrote `PUT /api/items/1` (version 2) between `sent` and
    /// `acked`.
    fn after_a_write() -> (Checker, Instant) {
        let mut c = Checker::new(Instant::now(), B, 2);
        let w = WriteRequest::new(WriteKind::PutItem, 1, 0);
        let id = c.write_started(&w);
        let sent = Instant::now();
        let acked = sent + Duration::from_millis(10);
        c.write_finished(id, 0, &w, sent, acked, &answer(2), "write");
        (c, acked)
    }

    #[test]
    fn an_old_version_after_the_bound_breaks_invariant_1() {
        let (mut c, acked) = after_a_write();
        let url = "/api/items/1/detail";
        c.get_finished(
            0,
            url,
            acked - Duration::from_millis(1),
            &answer(1),
            "before",
        );
        c.get_finished(1, url, acked + B / 2, &answer(1), "within B elsewhere");
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.get_finished(
            0,
            url,
            acked + Duration::from_millis(1),
            &answer(1),
            "purger",
        );
        c.get_finished(1, url, acked + B * 2, &answer(1), "after B");
        c.get_finished(1, url, acked + B * 2, &answer(2), "fresh");
        let broke: Vec<u8> = c.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(broke, [1, 1], "{:?}", c.violations);
    }

    #[test]
    fn a_flood_of_one_invariant_does_not_hide_another() {
        let mut c = Checker::new(Instant::now(), B, 2);
        for i in 0..80 {
            c.violate(4, format!("503 number {i}"));
        }
        c.violate(1, "a stale answer".to_owned());
        assert_eq!(c.counts.broken, [1, 0, 0, 80]);
        let listed: Vec<u8> = c.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(listed.len(), LISTED_PER_INVARIANT + 1);
        assert_eq!(listed.last(), Some(&1));
    }

    #[test]
    fn a_fault_on_the_reader_moves_the_bound_to_its_heal() {
        let (mut c, acked) = after_a_write();
        let fault = c.fault_started(Some(1));
        c.get_finished(1, "/api/items/1", acked + B * 2, &answer(1), "fault runs");
        c.fault_healed(fault);
        let healed = Instant::now();
        c.get_finished(1, "/api/items/1", healed + B / 2, &answer(1), "healing");
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.get_finished(1, "/api/items/1", healed + B * 2, &answer(1), "healed");
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    fn fetch(listener: usize, url: &str, arrived: Instant) -> Fetch {
        Fetch {
            listener,
            url: url.to_owned(),
            arrived,
        }
    }

    #[test]
    fn a_second_fetch_needs_something_that_uncached_the_url() {
        let mut c = Checker::new(Instant::now(), B, 2);
        let t = Instant::now();
        let url = "/api/sessions/1/state";
        c.fetched(&[
            fetch(0, url, t),
            fetch(1, url, t + Duration::from_millis(50)),
        ]);
        assert_eq!(c.violations.len(), 1, "the fleet fetched twice");
        let purge = c.purge_started(&Target::Tag("session:1".into()));
        c.fetched(&[fetch(1, url, Instant::now())]);
        assert_eq!(c.violations.len(), 1, "a purge explains the third");
        c.purge_finished(
            purge,
            0,
            &Target::Tag("session:1".into()),
            &Default::default(),
            t,
            Instant::now(),
            &answer(1),
            "purge",
        );
        let later = Instant::now() + B * 2;
        c.fetched(&[fetch(0, "/api/items/2", t), fetch(0, "/api/items/2", later)]);
        assert_eq!(c.violations.len(), 2, "an item within its lifetime");
        let expired = t + model::ITEM_TTL_MIN;
        c.fetched(&[fetch(0, "/api/items/2", expired)]);
        assert_eq!(c.violations.len(), 2, "an item after its lifetime");
    }

    #[test]
    fn a_let_down_explains_a_second_fetch_only_near_it_and_on_its_instance() {
        let mut c = Checker::new(Instant::now(), B, 3);
        let t = Instant::now();
        let ms = Duration::from_millis;
        let url = "/api/sessions/1/state";
        // instance 2's lock read timed out long before: explains nothing now
        c.degraded(2, t, t + ms(100));
        let later = t + DEGRADED_SLACK * 3;
        c.fetched(&[fetch(0, url, later), fetch(1, url, later + ms(50))]);
        assert_eq!(c.violations.len(), 1, "a span far away explains nothing");
        // instance 1 was let down just then: its own second fetch is explained, and counted
        let now = later + ms(100);
        c.degraded(1, now, now + ms(250));
        c.fetched(&[fetch(1, url, now + ms(60))]);
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert_eq!(c.counts.degraded_refetches, 1);
        // instance 0's second fetch: the fleet pair (after @1's) is explained by @1's
        // let-down, but its own pair (after its fetch at `later`) is not
        c.fetched(&[fetch(0, url, now + ms(100))]);
        assert_eq!(c.violations.len(), 2, "{:?}", c.violations);
        assert!(c.violations[1].what.contains("this instance"));
        assert_eq!(c.counts.degraded_refetches, 2);
    }

    #[test]
    fn a_purge_beyond_the_writes_targets_breaks_invariant_3() {
        let mut c = Checker::new(Instant::now(), B, 2);
        c.write_started(&WriteRequest::new(WriteKind::EndSession, 2, 0));
        c.purge_seen(0, "write", "url", "/api/sessions/2/state", "log");
        c.purge_seen(0, "write", "prefix", "/api/sessions/2/end?", "log");
        c.purge_seen(1, "remote", "prefix", "/api/sessions/2/state?", "log");
        c.purge_seen(0, "write", "prefix", "/api/other/17?", "log");
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.purge_seen(0, "write", "prefix", "", "log");
        c.purge_seen(1, "remote", "tag", "session:2", "log");
        let broke: Vec<u8> = c.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(broke, [3, 3], "{:?}", c.violations);
    }
}
