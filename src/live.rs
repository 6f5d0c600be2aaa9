//! The state the data plane and the admin plane share: the current config snapshot (swapped
//! atomically on reload), the cache tiers, and process facts (start time, in-flight requests).
//!
//! A request loads one [`Snapshot`] at its start and keeps it to the end, so a reload never
//! changes the rules under an in-flight request.
//!
//! Reloads (SIGHUP, the file watcher, `POST /admin/reload`) run one at a time: each reads the
//! file, validates it and swaps it in under one lock, so the reload that finishes last has
//! applied the file as it was when that reload began, never an older version another reload
//! read before it. The lock is the reloads' own: the data plane only loads the snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora_cache::lock::CacheKeyLockImpl;

use crate::cache::key::keyed_query;
use crate::cache::storage::{CoalescingLock, PurgeKind, TieredCache};
use crate::config::{self, Config, ConfigErrors, EnvSource};
use crate::normalize::{normalize_authority, normalize_path, BadPath};
use crate::purge::PurgeService;
use crate::routing::Router;
use crate::telemetry::events::{InternalEvent, ReloadApplied};
use crate::telemetry::metrics::{metrics, Success};
use crate::telemetry::recent::{recent, unix_now, ReloadRecord};

/// One immutable generation of the configuration, compiled for the hot path.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The compiled rewrites and routes, with their metric handles.
    pub router: Router,
}

impl Snapshot {
    /// Compile a validated config.
    pub fn new(config: Config) -> Snapshot {
        Snapshot {
            router: Router::new(&config),
            config: Arc::new(config),
        }
    }

    /// A purge in the form entries are indexed by. A url or prefix has its path normalized as
    /// the data plane normalizes it, and a url whose GET route keys listed query parameters
    /// gets its query canonical as that route keys it. A path purges that path on every host;
    /// an absolute URL of a url purge, with `[cache] key_host`, purges that host only (as the
    /// tag [`site_url_tag`] every entry carries); an absolute URL of a prefix purge is taken
    /// as its path. Tags are as they are. `Err` for a path the data plane would refuse.
    pub fn purge_target(
        &self,
        kind: PurgeKind,
        target: &str,
    ) -> Result<(PurgeKind, String), BadTarget> {
        if kind == PurgeKind::Tag {
            return Ok((kind, target.to_owned()));
        }
        let absolute = ["http://", "https://"].iter().find_map(|scheme| {
            target
                .strip_prefix(scheme)
                .map(|rest| (&scheme[..scheme.len() - 3], rest))
        });
        let (site, relative) = match absolute {
            Some((scheme, rest)) => {
                let (authority, path) = rest
                    .find('/')
                    .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
                let mut site = format!("{scheme}://");
                normalize_authority(authority, scheme, &mut site).map_err(|_| BadTarget::Host)?;
                (Some(site), path)
            }
            None => (None, target),
        };
        let (path, query) = match relative.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (relative, None),
        };
        let path = normalize_path(path)?;
        let query = match kind {
            PurgeKind::Url => {
                let route = self.router.route(&http::Method::GET, &path);
                let key = route.and_then(|m| m.policy.cache.as_ref()).map(|c| &c.key);
                keyed_query(query, key).map(|q| q.into_owned())
            }
            _ => query.map(str::to_owned),
        };
        let url = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        Ok(match site {
            Some(site) if kind == PurgeKind::Url && self.config.cache.key_host => {
                (PurgeKind::Tag, site_url_tag(&site, &url))
            }
            _ => (kind, url),
        })
    }
}

/// Why a purge target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    /// Its path is one the data plane refuses.
    #[error(transparent)]
    Path(#[from] BadPath),
    /// Its absolute URL's host is not a valid authority.
    #[error("the URL's host is not a valid authority")]
    Host,
}

/// The tag every entry stored with a keyed host carries, so a purge of one absolute URL
/// finds that host's entries only: `url:` + site + url (`url:http://api.example/a?b=1`).
/// Config tags may not start with `url:`.
pub fn site_url_tag(site: &str, url: &str) -> String {
    format!("url:{site}{url}")
}

/// The uncacheable-key memory: 16 shards of [`PREDICTOR_KEYS_PER_SHARD`] keys (an LRU each),
/// about 65,000 keys and a few MB at most.
pub type UncacheablePredictor = pingora_cache::predictor::Predictor<16>;

/// Keys each predictor shard remembers.
pub const PREDICTOR_KEYS_PER_SHARD: usize = 4096;

/// Shared process state. Lives for the whole process (`&'static`).
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    /// The cache tiers (pingora needs `&'static` storage).
    pub cache: &'static TieredCache,
    /// Purges of both tiers, and their broadcast to other instances.
    pub purges: &'static PurgeService,
    /// Per-process request coalescing (pingora's lock, re-checking L1 when it grants a fill).
    pub cache_lock: &'static CacheKeyLockImpl,
    /// Keys whose last response could not be stored: their next requests skip the cache lock
    /// and the storage lookup (Varnish's hit-for-miss), until a response is storable again.
    pub predictor: &'static UncacheablePredictor,
    started: Instant,
    in_flight: AtomicUsize,
    /// Where reloads read from.
    config_path: Option<PathBuf>,
    /// Held by a reload from reading its config to swapping it in (see the module docs).
    reloading: Mutex<()>,
    /// Start-up warming state, see [`WarmState`].
    warm: AtomicU8,
}

/// Start-up warming as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmState {
    /// Not warming (never started, or finished).
    Idle = 0,
    /// Warming and holding readiness (`/ready` answers 503).
    Holding = 1,
    /// Still warming, but `max_ready_delay` has passed: ready anyway.
    Background = 2,
}

impl Live {
    /// Build the process state from the first validated config. Leaks what pingora needs as
    /// `'static`; called once per process.
    pub fn new(config: Config) -> &'static Live {
        let cache: &'static TieredCache = Box::leak(Box::new(TieredCache::new(&config.cache)));
        let purges: &'static PurgeService =
            Box::leak(Box::new(PurgeService::new(cache, &config.cache)));
        let cache_lock: &'static CacheKeyLockImpl = Box::leak(Box::new(CoalescingLock::new(
            cache,
            config.cache.lock_timeout,
        )));
        let predictor: &'static UncacheablePredictor = Box::leak(Box::new(
            UncacheablePredictor::new(PREDICTOR_KEYS_PER_SHARD, None),
        ));
        let config_path = config.source.clone();
        recent().config_loaded(unix_now());
        Box::leak(Box::new(Live {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config)),
            cache,
            purges,
            cache_lock,
            predictor,
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            config_path,
            reloading: Mutex::new(()),
            warm: AtomicU8::new(WarmState::Idle as u8),
        }))
    }

    /// The current snapshot (one atomic load and a refcount increment).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished.
    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests in progress now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The start-up warming state (for `/ready`).
    pub fn warm_state(&self) -> WarmState {
        match self.warm.load(Ordering::Acquire) {
            1 => WarmState::Holding,
            2 => WarmState::Background,
            _ => WarmState::Idle,
        }
    }

    /// Sets the start-up warming state.
    pub fn set_warm_state(&self, state: WarmState) {
        self.warm.store(state as u8, Ordering::Release);
    }

    /// Moves `Holding` to `Background` (the readiness delay ran out); no-op otherwise, so a
    /// warming pass that already finished stays `Idle`.
    pub fn release_warm_hold(&self) {
        let _ = self.warm.compare_exchange(
            WarmState::Holding as u8,
            WarmState::Background as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Validate `new` against the running config and swap it in; on error (including a
    /// change to a [restart-only](config::RESTART_ONLY) setting) the old config keeps serving.
    /// Emits `ReloadApplied` or `ReloadRejected`. Waits for a reload in progress.
    pub fn apply(&self, new: Config) -> Result<(), ConfigErrors> {
        let _reloading = crate::sync::lock(&self.reloading);
        self.swap_in(new)
    }

    /// [`Self::apply`] with the reload lock held.
    fn swap_in(&self, new: Config) -> Result<(), ConfigErrors> {
        let current = self.snapshot();
        if let Err(errors) = config::check_reloadable(&current.config, &new) {
            return Err(self.reload_failed(errors));
        }
        self.cache.reconfigure(&new.cache);
        self.snapshot.store(Arc::new(Snapshot::new(new)));
        ReloadApplied.emit();
        Ok(())
    }

    /// Re-read the config file this process started with and [`Self::apply`] it, after any
    /// reload in progress (the file is read once that one has finished). The result is this
    /// attempt's own.
    pub fn reload_from_disk(&self, env: &dyn EnvSource) -> Result<(), ConfigErrors> {
        let Some(path) = self.config_path.as_deref() else {
            return Err(self.reload_failed(ConfigErrors(vec![config::ConfigError {
                path: "config".into(),
                line: None,
                message: "this process was not started from a config file".into(),
            }])));
        };
        let _reloading = crate::sync::lock(&self.reloading);
        match config::load(path, env) {
            Ok(new) => self.swap_in(new),
            Err(errors) => Err(self.reload_failed(errors)),
        }
    }

    fn reload_failed(&self, errors: ConfigErrors) -> ConfigErrors {
        ReloadRejected { errors: &errors }.emit();
        errors
    }
}

/// A reload was refused; the previous config keeps serving.
pub struct ReloadRejected<'a> {
    pub errors: &'a ConfigErrors,
}

impl InternalEvent for ReloadRejected<'_> {
    fn emit(self) {
        metrics()
            .config_reloads
            .with_label_values(&[Success::Error.label()])
            .inc();
        recent().reload(ReloadRecord {
            at: unix_now(),
            result: Success::Error.label(),
            errors: self.errors.0.len(),
        });
        tracing::error!(
            target: "sidecache::reload",
            result = "error",
            errors = %self.errors.report(),
            "config reload rejected; the previous config keeps serving"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A config whose route `r` lives `ttl_secs`.
    fn version(ttl_secs: u64) -> String {
        format!(
            "[[upstreams]]\nname = \"backend\"\naddress = \"127.0.0.1:5000\"\n\
             [[routes]]\nname = \"r\"\nmatch = \"GET /r/:id\"\nttl = \"{ttl_secs}s\"\n"
        )
    }

    fn live_ttl(live: &Live) -> Option<config::Ttl> {
        live.snapshot().config.routes[0]
            .cache
            .as_ref()
            .and_then(|c| c.ttl)
    }

    /// The environment a reload reads while it validates: it says when the reload got there,
    /// then waits until told to go on (a reload that has read the file, held mid-way).
    struct HeldEnv {
        reached: mpsc::Sender<()>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    impl EnvSource for HeldEnv {
        fn var(&self, _name: &str) -> Option<String> {
            let _ = self.reached.send(());
            let go = crate::sync::lock(&self.go);
            let _ = go.recv();
            None
        }
    }

    /// Reload A reads version 1 of the file and is held while it validates; the file becomes
    /// version 2 and reload B runs. However they interleave, the last to finish applied the
    /// newest file, and each reports its own outcome.
    #[test]
    fn the_reload_that_finishes_last_applied_the_newest_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sidecache.toml");
        std::fs::write(&path, version(1)).expect("write version 1");
        let empty = HashMap::<String, String>::new();
        let live = Live::new(config::load(&path, &empty).expect("version 1 is valid"));

        let (reached_tx, reached) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let held = HeldEnv {
            reached: reached_tx,
            go: Mutex::new(go_rx),
        };
        std::thread::scope(|s| {
            let a = s.spawn(|| live.reload_from_disk(&held));
            reached.recv().expect("reload A validates version 1");
            std::fs::write(&path, version(2)).expect("write version 2");
            let (b_done_tx, b_done) = mpsc::channel();
            let b = s.spawn(move || {
                let outcome = live.reload_from_disk(&empty);
                let _ = b_done_tx.send(());
                outcome
            });
            // B either finishes (reloads are not serialized) or waits behind A; A goes on
            // after either (the wait only bounds how long a serialized B is given)
            let _ = b_done.recv_timeout(Duration::from_millis(300));
            drop(go);
            assert!(a.join().expect("reload A").is_ok());
            assert!(b.join().expect("reload B").is_ok());
        });
        assert_eq!(
            live_ttl(live),
            Some(config::Ttl::Fixed(Duration::from_secs(2))),
            "the live config is an older file than the one on disk"
        );
    }
}
