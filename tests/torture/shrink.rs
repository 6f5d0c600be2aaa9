//! Shrinking a failing history: delta debugging (ddmin, complements only) within a time
//! budget. Each trial replays a candidate on a fresh fleet; a candidate "fails" when the
//! same invariant breaks again, and is then cut to the steps launched before it broke.
//! Concurrency failures do not reproduce every time, so a candidate that passes may still
//! have been needed or not: the result is the shortest history found, not the shortest
//! that exists.

use std::future::Future;
use std::time::Instant;

use super::check::Violation;
use super::ops::Step;

/// The outcome of a shrink.
pub struct Shrunk {
    pub history: Vec<Step>,
    /// The violation the shortest history gave (`None`: no trial failed again).
    pub violation: Option<Violation>,
    pub trials: u32,
}

/// Shrink `history` until `deadline`. `trial` replays a candidate and returns, when the
/// invariant broke again, the violation and how many steps it had launched.
pub async fn shrink<F, Fut>(history: Vec<Step>, deadline: Instant, mut trial: F) -> Shrunk
where
    F: FnMut(Vec<Step>) -> Fut,
    Fut: Future<Output = Option<(Violation, usize)>>,
{
    let mut best = Shrunk {
        history,
        violation: None,
        trials: 0,
    };
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
                candidate.truncate(launched.max(1));
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
