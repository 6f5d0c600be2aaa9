//! What happened lately, for the stats API and the status page: the last purges, the last
//! warming runs and the config's last reload. Each is a small bounded ring behind a mutex
//! that is held only to push or to copy out (never across an await).

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// Purges kept.
pub const PURGES_KEPT: usize = 20;
/// Warming runs kept.
pub const WARM_RUNS_KEPT: usize = 10;
/// A purge target longer than this is kept cut to it (with `…`).
pub const TARGET_KEPT_CHARS: usize = 256;

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One applied purge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeRecord {
    /// Unix time, seconds.
    pub at: f64,
    /// `url`, `prefix` or `tag`.
    pub kind: &'static str,
    /// What was purged (cut to [`TARGET_KEPT_CHARS`]).
    pub target: String,
    /// `admin`, `cli`, `write` or `remote`.
    pub source: &'static str,
    /// `hard` (removed) or `soft` (marked stale, refreshed in the background).
    pub mode: &'static str,
    /// The instance that originated it (this one, or the sender of a received purge).
    pub instance: String,
    pub removed_l1: u64,
    pub removed_l2: u64,
}

/// One finished warming run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmRecord {
    /// Unix time it finished, seconds.
    pub at: f64,
    /// `start`, `schedule` or `reload`.
    pub trigger: &'static str,
    pub fetched: usize,
    pub already_warm: usize,
    pub failed: usize,
    pub duration_seconds: f64,
}

/// The config's last reload attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadRecord {
    /// Unix time, seconds.
    pub at: f64,
    /// `ok` or `error`.
    pub result: &'static str,
    /// How many errors a rejected reload had.
    pub errors: usize,
}

/// The rings.
#[derive(Debug, Default)]
pub struct Recent {
    purges: Mutex<VecDeque<PurgeRecord>>,
    warm_runs: Mutex<VecDeque<WarmRecord>>,
    last_reload: Mutex<Option<ReloadRecord>>,
    /// When the serving config was loaded (start or last applied reload), Unix seconds.
    config_loaded: Mutex<Option<f64>>,
}

fn push<T>(ring: &Mutex<VecDeque<T>>, keep: usize, item: T) {
    if let Ok(mut ring) = ring.lock() {
        if ring.len() >= keep {
            ring.pop_front();
        }
        ring.push_back(item);
    }
}

/// Newest first.
fn copy<T: Clone>(ring: &Mutex<VecDeque<T>>) -> Vec<T> {
    ring.lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

impl Recent {
    /// Keep a purge.
    pub fn purge(&self, mut record: PurgeRecord) {
        if let Some((cut, _)) = record.target.char_indices().nth(TARGET_KEPT_CHARS) {
            record.target.truncate(cut);
            record.target.push('…');
        }
        push(&self.purges, PURGES_KEPT, record);
    }

    /// Keep a warming run.
    pub fn warm_run(&self, record: WarmRecord) {
        push(&self.warm_runs, WARM_RUNS_KEPT, record);
    }

    /// Keep a reload attempt; an applied one also dates the serving config.
    pub fn reload(&self, record: ReloadRecord) {
        if record.result == "ok" {
            self.config_loaded(record.at);
        }
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(record);
        }
    }

    /// The serving config was loaded at `at` (Unix seconds).
    pub fn config_loaded(&self, at: f64) {
        if let Ok(mut loaded) = self.config_loaded.lock() {
            *loaded = Some(at);
        }
    }

    /// The last purges, newest first.
    pub fn purges(&self) -> Vec<PurgeRecord> {
        copy(&self.purges)
    }

    /// The last warming runs, newest first.
    pub fn warm_runs(&self) -> Vec<WarmRecord> {
        copy(&self.warm_runs)
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload.lock().ok().and_then(|r| r.clone())
    }

    /// When the serving config was loaded, if known.
    pub fn config_loaded_at(&self) -> Option<f64> {
        self.config_loaded.lock().ok().and_then(|r| *r)
    }
}

static RECENT: LazyLock<Recent> = LazyLock::new(Recent::default);

/// The process-wide rings.
pub fn recent() -> &'static Recent {
    &RECENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(n: usize) -> PurgeRecord {
        PurgeRecord {
            at: n as f64,
            kind: "url",
            target: format!("/p/{n}"),
            source: "admin",
            mode: "hard",
            instance: "i".into(),
            removed_l1: 1,
            removed_l2: 0,
        }
    }

    #[test]
    fn rings_keep_the_newest_first_and_are_bounded() {
        let r = Recent::default();
        for n in 0..PURGES_KEPT + 5 {
            r.purge(purge(n));
        }
        let kept = r.purges();
        assert_eq!(kept.len(), PURGES_KEPT);
        assert_eq!(kept[0].target, format!("/p/{}", PURGES_KEPT + 4));
        assert_eq!(kept[PURGES_KEPT - 1].target, "/p/5");
    }

    #[test]
    fn long_targets_are_cut() {
        let r = Recent::default();
        let mut p = purge(0);
        p.target = "é".repeat(TARGET_KEPT_CHARS * 2);
        r.purge(p);
        let kept = &r.purges()[0].target;
        assert_eq!(kept.chars().count(), TARGET_KEPT_CHARS + 1);
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn an_applied_reload_dates_the_config_and_a_rejected_one_does_not() {
        let r = Recent::default();
        r.config_loaded(1.0);
        r.reload(ReloadRecord {
            at: 5.0,
            result: "error",
            errors: 2,
        });
        assert_eq!(r.config_loaded_at(), Some(1.0));
        r.reload(ReloadRecord {
            at: 9.0,
            result: "ok",
            errors: 0,
        });
        assert_eq!(r.config_loaded_at(), Some(9.0));
        assert_eq!(r.last_reload().unwrap().result, "ok");
    }
}
