//! The torture test: a randomized, seeded, replayable concurrency and fault test of the
//! promises the cache rests on (issue 19), against real processes only.
//!
//! **Setup.** 2 or 3 real `sidecache` instances on one real Redis (each through its own
//! delay proxy, so a fault can hit one instance's link alone) or on a real 3-master Redis
//! Cluster, all with `cache.l2.fill_lock = true`, in front of one versioned origin
//! (`support::versioned_origin`) that listens once per instance, so it counts fetches per
//! instance. Every write bumps the version of its resource, and every GET answer carries the
//! version (`x-version`). The routes (`torture/model.rs`) cover a `ttl` route, a second `ttl`
//! route purged by `invalidate_on`, an `until-invalidated` session-style route purged by
//! `invalidate_on`, an origin-mode route (`Cache-Control: max-age`) and an untouched hot
//! route; all but the hot one are tagged.
//!
//! **Operations** (`torture/ops.rs`), launched one after another with random gaps and run
//! concurrently: single GETs on random instances; bursts of concurrent GETs of one URL on
//! random instances, all at once or spread over up to 500 ms; writes through random
//! instances (plain, `invalidate_on`, a create answered with `Location`); admin purges by
//! url, prefix and tag (the origin's versions are bumped first, as an operator would purge
//! after changing data behind the cache); config reloads (an equivalent config or another
//! TTL); floods of writes to unrelated, uncacheable paths; and Redis faults, one at a time,
//! each healing after its hold: Redis killed (restarted empty after the hold), restarted,
//! delayed or cut for one instance (standalone), or a cluster master killed and restarted
//! empty (cluster; only once the cluster has been whole again for as long as its last
//! outage, so it is up at least half of the time; a fault step that comes sooner is
//! skipped and counted).
//!
//! **Invariants**, checked continuously (`torture/check.rs`). All times are on one clock:
//! a request's start is just before it is sent, its end when its answer is read. B is the
//! documented propagation bound (`SIDECACHE_TORTURE_BOUND_MS`, default 3 s; the instances
//! run with `cache.l2.purge_poll = "200ms"`, which design.md says bounds convergence once a
//! purge has reached Redis).
//! 1. *A purge wins.* A purge is acknowledged when its answer arrives: an admin purge's
//!    `200`, a write's own response (a write purges its targets before the response
//!    leaves). Let V be, for each URL it covers, the version the origin held when it was
//!    sent (a write: the version it produced). A GET of such a URL that starts after the
//!    acknowledgement on the purging instance, or after the acknowledgement + B on any
//!    other, must answer a version >= V. While a fault touches the purging or the reading
//!    instance (Redis down, restarted, delayed or cut for it) at any time between the purge
//!    being sent and that moment, the moment moves to the fault's heal + B (repeatedly, if
//!    another fault then overlaps).
//! 2. *One origin fetch per fill window.* Two origin fetches of one URL through the same
//!    instance, or through any two instances (`fill_lock = true`), must have something
//!    between them that may have uncached the URL. The conservative window: the later
//!    fetch is explained if it arrived at least the URL's shortest lifetime (over every
//!    config variant) minus 1.1 s after the earlier one (the origin's `Date` has whole
//!    seconds), or if a purge, write or fault covering the URL overlapped the gap: it was
//!    sent before the later fetch arrived and it ended (purge or write answered, fault
//!    healed) less than B before the earlier one arrived. A fault covers every URL, so
//!    from its start to its heal + B neither count applies (more lenient than "per
//!    instance while Redis is down or cut for it": a restarted Redis is empty, and when an
//!    instance's purge subscription comes back the gap rule empties its L1). Nor does it
//!    apply near a *let-down* of either fetching instance (within 2 s): the watcher reads
//!    each instance's metrics every 250 ms, and a rise in its failed Redis reads, fill-lock
//!    operations or stores (timed out, failed, or skipped by an open breaker), or in its
//!    cache lock timeouts, is a span in which Redis was down for it or a bounded wait ran
//!    out, so it fetches without the lock by design. The summary prints how many second
//!    fetches such spans explained, so a run that leans on them shows it.
//! 3. *No client empties the cache.* Every purge an instance reports (its log's `purged`
//!    events, `PurgeApplied`, and the recent purges of `/admin/stats`) with source `write`
//!    names a target of a write the harness made (its url, its path, its `path?` query
//!    variants prefix, its `Location`, or its `invalidate_on` target) or of a flood write;
//!    source `remote` names one of those or an admin purge's target; there is no `prefix ""`
//!    (the harness never asks for one). And the hot entry of every other instance, an L1
//!    hit before a flood, is still an L1 hit after it, unless a fault touched that
//!    instance meanwhile.
//! 4. *No 5xx while the origin is up* (it always is): every data-plane answer is below
//!    500, and every request gets an answer; admin purges and reloads answer 200.
//!
//! **Runs.** CI (`cargo test --test it torture::`) runs a few fixed seeds and one seed from the
//! clock, printed at start, on 2 instances on standalone Redis and a shorter run on the
//! cluster. `./dev torture --ops N --seed S [--cluster] [--instances 2|3]` runs the ignored
//! `long_run` with `SIDECACHE_TORTURE_*` variables (see [`Params::from_env`]); `--history
//! FILE` replays a history file instead. A failure prints the seed, the violations, and the
//! shortest failing history shrinking found within its budget, and writes it to
//! `target/torture/`. A replay repeats the operations exactly (the history holds every
//! random choice) but not the timing of real processes, so a race may need several
//! replays.

mod check;
mod fleet;
mod model;
mod ops;
mod run;
mod shrink;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use check::Violation;
use fleet::Fleet;
use ops::{Shape, Step};
use run::{Outcome, Settings};

/// Steps in flight at once, at most.
const IN_FLIGHT: usize = 24;

/// What one torture run is.
#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    ops: usize,
    shape: Shape,
    bound: Duration,
    shrink_budget: Duration,
    /// Replay this history file instead of generating one.
    history: Option<PathBuf>,
    /// Run every step even after a violation, and do not shrink.
    keep_going: bool,
    /// Hunt this invariant only: stop at and shrink its first violation (the others are
    /// still reported). `None`: whichever breaks first.
    only: Option<u8>,
    /// Gaps between steps are multiplied by this.
    pace: f64,
}

impl Params {
    /// A CI run of `ops` steps from `seed`.
    fn ci(seed: u64, ops: usize, shape: Shape) -> Params {
        Params {
            seed,
            ops,
            shape,
            bound: env_ms("SIDECACHE_TORTURE_BOUND_MS").unwrap_or(Duration::from_secs(3)),
            shrink_budget: env_secs("SIDECACHE_TORTURE_SHRINK_SECS")
                .unwrap_or(Duration::from_secs(20)),
            history: None,
            keep_going: std::env::var("SIDECACHE_TORTURE_KEEP_GOING").is_ok_and(|v| v == "1"),
            only: None,
            pace: 1.0,
        }
    }

    /// A long run: `SIDECACHE_TORTURE_OPS` (default 10,000), `_SEED` (default: the
    /// clock), `_CLUSTER` (`1`), `_INSTANCES` (2 or 3, default 2), `_HISTORY` (a file to
    /// replay), `_BOUND_MS` (B, default 3000), `_SHRINK_SECS` (default 600), `_KEEP_GOING`
    /// (`1`: run every step after a violation, list them all, do not shrink), `_INVARIANT`
    /// (hunt only this one: stop at and shrink its first violation), `_PACE` (gaps between
    /// steps multiplied by it, default 1); `_L2` adds
    /// `[cache.l2]` lines to every instance's config.
    fn from_env() -> Params {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let instances = var("SIDECACHE_TORTURE_INSTANCES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        assert!(
            (2..=3).contains(&instances),
            "SIDECACHE_TORTURE_INSTANCES must be 2 or 3"
        );
        Params {
            seed: var("SIDECACHE_TORTURE_SEED")
                .map(|s| s.parse().expect("SIDECACHE_TORTURE_SEED is a number"))
                .unwrap_or_else(clock_seed),
            ops: var("SIDECACHE_TORTURE_OPS")
                .map(|s| s.parse().expect("SIDECACHE_TORTURE_OPS is a number"))
                .unwrap_or(10_000),
            shape: Shape {
                instances,
                cluster: var("SIDECACHE_TORTURE_CLUSTER").is_some_and(|v| v == "1"),
            },
            bound: env_ms("SIDECACHE_TORTURE_BOUND_MS").unwrap_or(Duration::from_secs(3)),
            shrink_budget: env_secs("SIDECACHE_TORTURE_SHRINK_SECS")
                .unwrap_or(Duration::from_secs(600)),
            history: var("SIDECACHE_TORTURE_HISTORY").map(PathBuf::from),
            keep_going: var("SIDECACHE_TORTURE_KEEP_GOING").is_some_and(|v| v == "1"),
            only: var("SIDECACHE_TORTURE_INVARIANT")
                .map(|v| v.parse().expect("SIDECACHE_TORTURE_INVARIANT is 1 to 4")),
            pace: var("SIDECACHE_TORTURE_PACE")
                .map(|v| v.parse().expect("SIDECACHE_TORTURE_PACE is a number"))
                .unwrap_or(1.0),
        }
    }

    fn settings(&self, stop_on: Option<u8>) -> Settings {
        Settings {
            bound: self.bound,
            in_flight: IN_FLIGHT,
            stop_on,
            keep_going: self.keep_going,
            pace: self.pace,
        }
    }

    /// The command that replays this run.
    fn replay_command(&self, history: Option<&PathBuf>) -> String {
        let mut shape = format!(
            "{}--instances {}",
            if self.shape.cluster { "--cluster " } else { "" },
            self.shape.instances
        );
        if self.pace != 1.0 {
            shape.push_str(&format!(" --pace {}", self.pace));
        }
        if self.bound != Duration::from_secs(3) {
            shape.push_str(&format!(" --bound-ms {}", self.bound.as_millis()));
        }
        if let Ok(l2) = std::env::var("SIDECACHE_TORTURE_L2") {
            shape.push_str(&format!(" --l2 '{l2}'"));
        }
        match history {
            Some(file) => format!("./dev torture --history {} {shape}", file.display()),
            None => format!(
                "./dev torture --seed {} --ops {} {shape}",
                self.seed, self.ops
            ),
        }
    }
}

fn env_ms(key: &str) -> Option<Duration> {
    std::env::var(key)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

fn env_secs(key: &str) -> Option<Duration> {
    std::env::var(key)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_secs)
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
}

/// Run `params` on a fresh fleet; on a violation shrink it, print the report and return
/// its headline.
async fn torture(params: &Params) -> Result<(), String> {
    let history = match &params.history {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            ops::parse_history(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        }
        None => ops::generate(params.seed, params.ops, params.shape),
    };
    println!(
        "torture: seed {} ({} steps, {} instances, {}, B = {:?}); replay: {}",
        params.seed,
        history.len(),
        params.shape.instances,
        if params.shape.cluster {
            "3-master cluster"
        } else {
            "standalone Redis"
        },
        params.bound,
        params.replay_command(params.history.as_ref()),
    );
    let outcome = run_once(params, &history, params.only).await;
    print_outcome(&outcome);
    let hunted = |v: &&Violation| params.only.is_none_or(|i| i == v.invariant);
    let Some(first) = outcome.violations.iter().find(hunted).cloned() else {
        return match outcome.violations.first() {
            None => Ok(()),
            Some(v) => Err(format!("torture: seed {}: {}", params.seed, describe(v))),
        };
    };
    if params.keep_going {
        for v in &outcome.violations {
            println!("  {}", describe(v));
        }
        return Err(format!(
            "torture: seed {}: {} violations",
            params.seed,
            outcome.violations.len()
        ));
    }
    let failing = history[..outcome.launched.max(1)].to_vec();
    let deadline = Instant::now() + params.shrink_budget;
    println!(
        "torture: invariant {} broke after {} steps; shrinking for at most {:?}",
        first.invariant,
        failing.len(),
        params.shrink_budget
    );
    let shrunk = shrink::shrink(
        failing,
        first.url.as_deref(),
        deadline,
        |candidate| async move {
            let o = run_once(params, &candidate, Some(first.invariant)).await;
            let v = o
                .violations
                .into_iter()
                .find(|v| v.invariant == first.invariant)?;
            Some((v, o.launched))
        },
    )
    .await;
    let shown = shrunk.violation.as_ref().unwrap_or(&first);
    let file = write_history(params, &shrunk.history, shown);
    let mut report = format!(
        "torture: seed {seed}: invariant {inv} broke\n\nviolations of the full run:\n{all}\n\
         shortest history found ({n} steps, {trials} shrink trials), in {file}:\n{steps}\n\
         its violation: {shown}\n(the instances' logs of the last failing run: {logs})\n\n\
         replay the run:      {full}\nreplay the history:  {short}\n",
        logs = logs_dir().display(),
        seed = params.seed,
        inv = first.invariant,
        all = outcome
            .violations
            .iter()
            .map(|v| format!("  {}\n", describe(v)))
            .collect::<String>(),
        n = shrunk.history.len(),
        trials = shrunk.trials,
        file = file.display(),
        steps = shrunk
            .history
            .iter()
            .map(|s| format!("  {s}\n"))
            .collect::<String>(),
        shown = describe(shown),
        full = params.replay_command(params.history.as_ref()),
        short = params.replay_command(Some(&file)),
    );
    if shrunk.violation.is_none() {
        report.push_str("(no shrink trial failed again: the history is the full run's)\n");
    }
    println!("{report}");
    Err(format!(
        "torture: seed {}: invariant {} broke",
        params.seed, first.invariant
    ))
}

/// One run of `history` on a fresh fleet (stopped and gone when this returns). The
/// instances' logs of the last run that failed are kept in [`logs_dir`].
async fn run_once(params: &Params, history: &[Step], stop_on: Option<u8>) -> Outcome {
    let fleet = Arc::new(Fleet::start(params.shape).await);
    let outcome = run::run(Arc::clone(&fleet), history, params.settings(stop_on)).await;
    if !outcome.violations.is_empty() {
        fleet.keep_logs(&logs_dir(), run::LOG_KEPT);
    }
    outcome
}

/// `target/torture/`: histories and the logs of the last failing run.
fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/torture")
}

fn logs_dir() -> PathBuf {
    torture_dir().join("last-failure")
}

fn describe(v: &Violation) -> String {
    format!("[invariant {} at {}ms] {}", v.invariant, v.at_ms, v.what)
}

fn print_outcome(o: &Outcome) {
    let secs = o.elapsed.as_secs_f64();
    let c = &o.counts;
    println!(
        "torture: {} steps in {:.1}s ({:.0} steps/s): {} GETs, {} writes, {} admin purges, \
         {} faults ({} skipped), {} origin fetches, {} purges read back; {} second fetches explained by \
         {} spans of Redis or lock let-downs; {} violations (invariants 1-4: {:?}; {} listed)",
        o.launched,
        secs,
        o.launched as f64 / secs.max(0.001),
        c.gets,
        c.writes,
        c.purges,
        c.faults,
        c.faults_skipped,
        c.fetches,
        c.logged_purges,
        c.degraded_refetches,
        c.degraded_spans,
        c.broken.iter().sum::<u64>(),
        c.broken,
        o.violations.len()
    );
}

/// Write `history` to `target/torture/`, headed by how it was found.
fn write_history(params: &Params, history: &[Step], violation: &Violation) -> PathBuf {
    let dir = torture_dir();
    let _ = std::fs::create_dir_all(&dir);
    let shape = if params.shape.cluster {
        "cluster"
    } else {
        "standalone"
    };
    let file = dir.join(format!(
        "seed{}-{shape}-{}i-inv{}.history",
        params.seed, params.shape.instances, violation.invariant
    ));
    let mut text = format!(
        "# torture history: seed {}, shrunk from {}\n# {}\n",
        params.seed,
        params.replay_command(params.history.as_ref()),
        describe(violation).replace('\n', " ")
    );
    for s in history {
        text.push_str(&format!("{s}\n"));
    }
    if let Err(e) = std::fs::write(&file, text) {
        println!("torture: could not write {}: {e}", file.display());
    }
    file
}

/// Run each seed in turn and fail with the first failure's headline (with
/// `SIDECACHE_TORTURE_KEEP_GOING=1`, after every seed has run).
async fn ci(shape: Shape, ops: usize, fixed_seeds: &[u64]) {
    let clock = clock_seed();
    println!("torture: seeds {fixed_seeds:?} and {clock} (from the clock)");
    let mut failed = Vec::new();
    for seed in fixed_seeds.iter().copied().chain([clock]) {
        let params = Params::ci(seed, ops, shape);
        if let Err(headline) = torture(&params).await {
            failed.push(headline);
            if !params.keep_going {
                break;
            }
        }
    }
    if !failed.is_empty() {
        panic!(
            "{} (the report above says how to replay it)",
            failed.join("; ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_redis_keeps_the_promises() {
    let shape = Shape {
        instances: 2,
        cluster: false,
    };
    ci(shape, 400, &[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_keeps_the_promises() {
    let shape = Shape {
        instances: 2,
        cluster: true,
    };
    ci(shape, 100, &[3]).await;
}

/// `./dev torture`: one long run configured by `SIDECACHE_TORTURE_*` (see
/// [`Params::from_env`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run with ./dev torture"]
async fn long_run() {
    let params = Params::from_env();
    if let Err(headline) = torture(&params).await {
        panic!("{headline} (the report above says how to replay it)");
    }
}
