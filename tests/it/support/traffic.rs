//! Ordinary client traffic in the background, to show that something else (an attack, an
//! upgrade) does not disturb it: workers send GETs, each on a fresh connection, until
//! stopped, and every failure is kept.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::http::try_get;

/// Background workers sending requests until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Start `workers` workers; worker `w` sends its `i`-th GET to `url(w, i)` and counts any
    /// answer but 200, and any transport error, as a failure.
    pub fn start(
        workers: u64,
        url: impl Fn(u64, u64) -> String + Send + Sync + 'static,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let url = Arc::new(url);
        let workers = (0..workers)
            .map(|worker| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match try_get(&url(worker, i), &[]).await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failed
                                .lock()
                                .expect("lock")
                                .push(format!("status {}", r.status)),
                            Err(e) => failed.lock().expect("lock").push(e),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            workers,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop the workers and return (requests answered 200, failures).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("traffic worker");
        }
        let failed = self.failed.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }

    /// Stop the workers and fail the test if any request failed; returns those answered 200.
    pub async fn stop_without_failures(self) -> u64 {
        let (ok, failed) = self.stop().await;
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            ok + failed.len() as u64,
            &failed[..failed.len().min(5)]
        );
        ok
    }
}

/// A flood of anonymous writes: `writers` tasks each `POST {base}/test/echo?w={w}&n={i}` (a
/// path of its own per write, which the default origin mode could have stored, so each
/// queues its url's purge) until `until`, asserting every answer is 200. Returns the writes
/// sent.
pub async fn write_flood(base: &str, writers: u64, until: std::time::Instant) -> u64 {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let base = base.to_owned();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while std::time::Instant::now() < until {
                    let url = format!("{base}/test/echo?w={w}&n={sent}");
                    let body = bytes::Bytes::from_static(b"{}");
                    let r = super::http::try_request("POST", &url, &[], body).await;
                    assert_eq!(r.map(|r| r.status).unwrap_or(0), 200, "{url}");
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("flood writer");
    }
    sent
}
