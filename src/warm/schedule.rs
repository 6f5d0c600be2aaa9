//! Warming inside the sidecache process: one pass through its own data plane
//! ([`pass`]), and when the next one is due (`[warm] every`, `jitter`; a reload that changes
//! the warm list).
//!
//! The schedule is an interval, not a calendar: each scheduled pass starts `every` plus a
//! random delay of at most `jitter` after the previous one finished, so instances started
//! together drift apart instead of warming the origin in step. The first scheduled pass
//! comes `every` (plus jitter) after start; `on_start` covers start-up.

use std::time::{Duration, Instant};

use crate::config::{Config, WarmConfig};
use crate::telemetry::events::{InternalEvent, WarmFinished};
use crate::telemetry::metrics::WarmTrigger;

use super::{expand, local_target, run, ProgressGate, WarmOptions};

/// How long the next scheduled pass waits after the last one: `every` plus a random part of
/// `jitter` (`pick` maps the jitter in nanoseconds to a value in `0..=jitter`).
pub fn next_delay(every: Duration, jitter: Duration, pick: impl FnOnce(u64) -> u64) -> Duration {
    let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    let extra = if jitter_nanos == 0 {
        0
    } else {
        pick(jitter_nanos).min(jitter_nanos)
    };
    every + Duration::from_nanos(extra)
}

/// A random `0..=max`.
pub fn random_up_to(max: u64) -> u64 {
    fastrand::u64(0..=max)
}

/// Whether in-process warming is on: at start-up or on a schedule. Only then does a reload
/// that changes the warm list warm it (`sidecache warm` users warm when they choose).
pub fn in_process(warm: &WarmConfig) -> bool {
    warm.on_start || warm.every.is_some()
}

/// Whether two configs ask for different warm lists (the URLs and templates, not how fast).
pub fn list_changed(old: &WarmConfig, new: &WarmConfig) -> bool {
    old.urls != new.urls || old.templates != new.templates
}

/// Whether the warm list has anything in it.
pub fn has_list(warm: &WarmConfig) -> bool {
    !warm.urls.is_empty() || !warm.templates.is_empty()
}

/// One warming pass of `config`'s list through this process's data plane, emitting
/// [`WarmFinished`] (metrics, the log line, the status page's last runs). An unreadable
/// ids file is logged and counts as a failed pass.
pub async fn pass(config: &Config, trigger: WarmTrigger) {
    let started = Instant::now();
    let paths = match expand(&config.warm) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(target: "sidecache::warm", trigger = trigger.label(), error = %e,
                "warming skipped");
            let failure = [("(warm list)".to_owned(), e.to_string())];
            WarmFinished {
                trigger,
                fetched: 0,
                already_warm: 0,
                failed: 1,
                failures: &failure,
                elapsed: started.elapsed(),
            }
            .emit();
            return;
        }
    };
    let target = local_target(config.server.listen);
    // At start-up the proxy listener starts beside this task; wait until it accepts.
    while tokio::net::TcpStream::connect(&target).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opts = WarmOptions::from_config(&config.warm, target);
    tracing::info!(target: "sidecache::warm", trigger = trigger.label(), urls = paths.len(),
        concurrency = opts.concurrency, rate_per_second = opts.rate_per_second,
        "warming started");
    let gate = std::sync::Mutex::new(ProgressGate::new(
        1000,
        Duration::from_secs(5),
        Instant::now(),
    ));
    let report = run(paths, &opts, move |r, total| {
        let now = Instant::now();
        if gate.lock().is_ok_and(|mut g| g.should_print(r.done(), now)) {
            tracing::info!(target: "sidecache::warm", "{}", r.progress_line(total));
        }
    })
    .await;
    WarmFinished {
        trigger,
        fetched: report.fetched,
        already_warm: report.already_warm,
        failed: report.failed,
        failures: &report.failures,
        elapsed: report.elapsed,
    }
    .emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(urls: &[&str], every: Option<Duration>) -> WarmConfig {
        WarmConfig {
            every,
            ..crate::warm::tests::config(urls, Vec::new())
        }
    }

    #[test]
    fn the_delay_is_every_plus_at_most_the_jitter() {
        let every = Duration::from_secs(900);
        let jitter = Duration::from_secs(90);
        assert_eq!(next_delay(every, jitter, |_| 0), every);
        assert_eq!(next_delay(every, jitter, |max| max), every + jitter);
        assert_eq!(next_delay(every, jitter, |_| u64::MAX), every + jitter);
        assert_eq!(next_delay(every, Duration::ZERO, |_| 7), every);
        for _ in 0..100 {
            let d = next_delay(every, jitter, random_up_to);
            assert!(d >= every && d <= every + jitter, "{d:?}");
        }
    }

    #[test]
    fn only_the_list_counts_as_a_change() {
        let a = warm(&["/a"], Some(Duration::from_secs(60)));
        let mut faster = a.clone();
        faster.rate_per_second = 500;
        faster.every = Some(Duration::from_secs(5));
        assert!(!list_changed(&a, &faster));
        assert!(list_changed(&a, &warm(&["/a", "/b"], None)));
        assert!(in_process(&a));
        assert!(!in_process(&warm(&["/a"], None)));
        assert!(has_list(&a) && !has_list(&warm(&[], None)));
    }
}
