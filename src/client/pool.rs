//! The bounded worker pool of the client commands: at most `concurrency` workers, each
//! owning one keep-alive [`Connection`], pull the next item's index from a shared counter,
//! optionally wait for a start slot of a shared [`Pacer`], run the [`Job`] on it and hand
//! the output to the caller's sink through a channel holding at most one output per worker.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::Connection;

/// Where and how fast a [`run`] works.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// `host:port` every worker's connection goes to.
    pub addr: Arc<str>,
    /// Workers, each with its own connection: at least 1, at most one per item.
    pub concurrency: usize,
    /// Job starts per second at most, across all workers; `None` starts them as soon as a
    /// worker is free.
    pub rate_per_second: Option<u32>,
}

/// What a pool does with each item, on the connection of the worker that picked it.
pub trait Job: Send + Sync + 'static {
    /// What one job works on (a path to warm; `()` when every job sends the same request).
    type Item: Send + Sync + 'static;
    /// What one job hands to the sink.
    type Output: Send + 'static;

    /// Runs the job for `item` on the worker's connection.
    fn run(
        &self,
        conn: &mut Connection,
        item: &Self::Item,
    ) -> impl Future<Output = Self::Output> + Send;
}

/// Runs `job` once for every item in `items` and calls `sink` with each item and its
/// output, in completion order, on the calling task. Returns how the workers that did not
/// finish normally (a panic) ended; the item such a worker was on gets no output, the
/// others are picked up by the remaining workers.
pub async fn run<J, S>(
    opts: &PoolOptions,
    items: Arc<[J::Item]>,
    job: J,
    mut sink: S,
) -> Vec<JoinError>
where
    J: Job,
    S: FnMut(&J::Item, J::Output),
{
    let workers = opts.concurrency.max(1).min(items.len());
    let (outputs, mut received) = mpsc::channel(workers.max(1));
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let pacer = opts
        .rate_per_second
        .map(|rate| Arc::new(Mutex::new(Pacer::new(rate))));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let items = Arc::clone(&items);
        let job = Arc::clone(&job);
        let next = Arc::clone(&next);
        let pacer = pacer.clone();
        let outputs = outputs.clone();
        let mut conn = Connection::new(Arc::clone(&opts.addr));
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                if let Some(pacer) = &pacer {
                    let at = pacer.lock().await.reserve(Instant::now());
                    tokio::time::sleep_until(at).await;
                }
                let output = job.run(&mut conn, item).await;
                if outputs.send((index, output)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(outputs);
    while let Some((index, output)) = received.recv().await {
        if let Some(item) = items.get(index) {
            sink(item, output);
        }
    }
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            failed.push(e);
        }
    }
    failed
}

/// Interval pacing for `rate_per_second`: start *n* may happen no earlier than
/// `first + n * interval`; a late start does not bank credit beyond one slot.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for at most `rate_per_second` starts per second (0 is treated as 1).
    pub fn new(rate_per_second: u32) -> Self {
        Self {
            interval: Self::interval_for(rate_per_second),
            next: None,
        }
    }

    /// The spacing between starts for a rate.
    pub fn interval_for(rate_per_second: u32) -> Duration {
        Duration::from_secs(1) / rate_per_second.max(1)
    }

    /// Reserves the next start slot at or after `now`; returns when to start.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(slot + self.interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records when each job started and how many ran at once; never touches the network.
    #[derive(Default)]
    struct Sleeper {
        running: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    impl Job for Arc<Sleeper> {
        type Item = u32;
        type Output = (u32, Instant);

        async fn run(&self, _conn: &mut Connection, item: &u32) -> (u32, Instant) {
            let started = Instant::now();
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            (*item * 10, started)
        }
    }

    fn options(concurrency: usize, rate_per_second: Option<u32>) -> PoolOptions {
        PoolOptions {
            addr: Arc::from("127.0.0.1:1"),
            concurrency,
            rate_per_second,
        }
    }

    async fn run_sleepers(opts: &PoolOptions, n: u32) -> (Arc<Sleeper>, Vec<(u32, u32, Instant)>) {
        let sleeper = Arc::new(Sleeper::default());
        let mut seen = Vec::new();
        let failed = run(
            opts,
            (0..n).collect::<Vec<_>>().into(),
            Arc::clone(&sleeper),
            |item, (output, started)| seen.push((*item, output, started)),
        )
        .await;
        assert!(failed.is_empty());
        seen.sort_by_key(|(item, _, _)| *item);
        (sleeper, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn every_item_runs_once_on_at_most_concurrency_workers() {
        let (sleeper, seen) = run_sleepers(&options(3, None), 10).await;
        let items: Vec<_> = seen.iter().map(|(i, o, _)| (*i, *o)).collect();
        assert_eq!(items, (0..10).map(|i| (i, i * 10)).collect::<Vec<_>>());
        assert_eq!(sleeper.most_at_once.load(Ordering::SeqCst), 3);

        let (sleeper, seen) = run_sleepers(&options(0, None), 3).await;
        assert_eq!(seen.len(), 3, "concurrency 0 still runs one worker");
        assert_eq!(sleeper.most_at_once.load(Ordering::SeqCst), 1);

        let (_, seen) = run_sleepers(&options(4, None), 0).await;
        assert!(seen.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_spaces_starts_across_all_workers() {
        let t0 = Instant::now();
        let (_, seen) = run_sleepers(&options(5, Some(10)), 5).await;
        let mut starts: Vec<Duration> = seen.iter().map(|(_, _, s)| *s - t0).collect();
        starts.sort();
        let want: Vec<Duration> = (0..5).map(|n| Duration::from_millis(100 * n)).collect();
        assert_eq!(starts, want);
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_rest_still_run() {
        struct Fragile;
        impl Job for Fragile {
            type Item = u32;
            type Output = u32;
            async fn run(&self, _conn: &mut Connection, item: &u32) -> u32 {
                if *item == 2 {
                    panic!("job 2 fails");
                }
                *item
            }
        }
        let mut seen = Vec::new();
        let failed = run(
            &options(2, None),
            vec![0, 1, 2, 3, 4].into(),
            Fragile,
            |_, out| seen.push(out),
        )
        .await;
        assert_eq!(failed.len(), 1);
        assert!(failed[0].is_panic());
        seen.sort();
        assert_eq!(seen, [0, 1, 3, 4]);
    }

    #[test]
    fn pacing_spaces_starts_by_the_rate_and_banks_no_credit() {
        assert_eq!(Pacer::interval_for(50), Duration::from_millis(20));
        assert_eq!(Pacer::interval_for(1), Duration::from_secs(1));
        assert_eq!(Pacer::interval_for(0), Duration::from_secs(1));
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        assert_eq!(p.reserve(t0), t0);
        assert_eq!(p.reserve(t0), t0 + Duration::from_millis(100));
        assert_eq!(p.reserve(t0), t0 + Duration::from_millis(200));
        // After an idle second, the next start is immediate, then spaced again (no burst).
        let later = t0 + Duration::from_secs(5);
        assert_eq!(p.reserve(later), later);
        assert_eq!(p.reserve(later), later + Duration::from_millis(100));
        // 100 starts at 50/s take ~2 s.
        let mut p = Pacer::new(50);
        let last = (0..100).map(|_| p.reserve(t0)).last().unwrap();
        assert_eq!(last - t0, Duration::from_millis(20 * 99));
    }
}
