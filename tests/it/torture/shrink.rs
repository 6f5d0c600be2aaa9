//! Shrinking a failing history within a time budget: first the steps that concern the
//! violation's entry alone (its path's GETs, the writes and purges that reach it, and every
//! fault, flood and reload), then delta debugging (ddmin, complements only). Each trial replays a candidate on a fresh fleet; a candidate "fails" when the
//! same invariant breaks again, and is then cut to the steps launched before it broke.
//! Concurrency failures do not reproduce every time, so a candidate that passes may still
//! have been needed or not: the result is the shortest history found, not the shortest
//! that exists.

use std::future::Future;
use std::time::Instant;

use super::check::Violation;
use super::model::{path_of, WriteRequest};
use super::ops::{Op, Step};

/// Whether `op` may matter to the entry of `url`: a GET of its path, a write or purge that
/// reaches it, or anything that touches every entry (faults, floods, reloads).
fn concerns(op: &Op, url: &str) -> bool {
    let path = path_of(url);
    match op {
        Op::Get { url: u, .. } | Op::Burst { url: u, .. } => path_of(u) == path,
        Op::Write {
            kind, id, query, ..
        } => WriteRequest::new(*kind, *id, *query)
            .purged_paths()
            .iter()
            .any(|p| p == path),
        Op::Purge { target, .. } => target.coverage().covers(url),
        Op::Reload { .. } | Op::Flood { .. } | Op::Fault { .. } => true,
    }
}

/// The outcome of a shrink.
pub struct Shrunk {
    pub history: Vec<Step>,
    /// The violation the shortest history gave (`None`: no trial failed again).
    pub violation: Option<Violation>,
    pub trials: u32,
}

/// Shrink `history` until `deadline`; `url` is the entry the violation concerns, if any.
/// `trial` replays a candidate and returns, when the invariant broke again, the violation
/// and how many steps it had launched.
pub async fn shrink<F, Fut>(
    history: Vec<Step>,
    url: Option<&str>,
    deadline: Instant,
    mut trial: F,
) -> Shrunk
where
    F: FnMut(Vec<Step>) -> Fut,
    Fut: Future<Output = Option<(Violation, usize)>>,
{
    let mut best = Shrunk {
        history,
        violation: None,
        trials: 0,
    };
    if let Some(url) = url {
        let focused: Vec<Step> = best
            .history
            .iter()
            .filter(|s| concerns(&s.op, url))
            .cloned()
            .collect();
        if focused.len() < best.history.len() {
            best.trials += 1;
            if let Some((violation, launched)) = trial(focused.clone()).await {
                best.history = focused[..launched.clamp(1, focused.len())].to_vec();
                best.violation = Some(violation);
                println!(
                    "torture: shrink trial 1 (the steps concerning {url}) failed again with {} steps",
                    best.history.len()
                );
            }
        }
    }
    let mut parts = 2usize;
    while best.history.len() >= 2 && Instant::now() < deadline {
        let len = best.history.len();
        let chunk = len.div_ceil(parts);
        let mut reduced = false;
        for start in (0..len).step_by(chunk) {
            if Instant::now() >= deadline {
                break;
            }
            let mut candidate = best.history[..start].to_vec();
            candidate.extend_from_slice(&best.history[(start + chunk).min(len)..]);
            best.trials += 1;
            if let Some((violation, launched)) = trial(candidate.clone()).await {
                candidate.truncate(launched.clamp(1, candidate.len()));
                println!(
                    "torture: shrink trial {} failed again with {} steps",
                    best.trials,
                    candidate.len()
                );
                best.history = candidate;
                best.violation = Some(violation);
                parts = (parts - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if parts >= len {
                break;
            }
            parts = (parts * 2).min(len);
        }
    }
    best
}
