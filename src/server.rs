//! Process assembly: the pingora `Server` with the proxy service, the admin listener, the
//! config reloader, the purge subscriber, start-up cache warming (`[warm] on_start`) and its
//! schedule (`[warm] every`, and a reload that changes the warm list), and
//! the signal rules (SIGTERM drains within the grace period, SIGINT exits at once, SIGQUIT
//! hands the listening sockets to a new process, SIGHUP reloads).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use tokio::signal::unix::{signal, SignalKind};

use crate::admin;
use crate::config::{Config, ProcessEnv};
use crate::live::{Live, WarmState};
use crate::proxy;
use crate::telemetry::metrics::WarmTrigger;
use crate::warm;

/// How the process was asked to start.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running sidecache (graceful upgrade).
    pub upgrade: bool,
    /// Unix socket the listening sockets are handed over on.
    pub upgrade_sock: Option<PathBuf>,
}

/// How long a process started with `--upgrade` waits for the old one to free the admin port.
const UPGRADE_ADMIN_BIND_WAIT: Duration = Duration::from_secs(120);

/// Default socket for graceful upgrades.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/sidecache_upgrade.sock";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// Run sidecache until it is told to stop. Returns after a graceful or fast shutdown.
pub fn run(config: Config, options: RunOptions) -> Result<(), StartError> {
    // A normal start binds the admin port now, so a taken port fails start-up clearly. During
    // a graceful upgrade the old process keeps that port until it exits, and the new one must
    // first receive the data-plane sockets: the admin service binds it later, retrying.
    let admin_listener = if options.upgrade {
        None
    } else {
        Some(admin::bind(config.server.admin_listen, Duration::ZERO)?)
    };
    let listen = config.server.listen.to_string();
    let grace = config.server.grace_period;
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: options.upgrade_sock.as_deref().map_or_else(
            || DEFAULT_UPGRADE_SOCK.to_owned(),
            |p| p.display().to_string(),
        ),
        max_retries: 1,
        work_stealing: config.server.work_stealing,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let live = Live::new(config);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let proxy_service = proxy::service(&server.configuration, live, &listen);
    server.add_service(proxy_service);
    server.add_service(background_service(
        "admin",
        AdminService {
            live,
            listener: std::sync::Mutex::new(admin_listener),
        },
    ));
    server.add_service(background_service("config reload", ReloadService { live }));
    server.add_service(background_service("l2", L2Service { live }));
    let warm = &live.snapshot().config.warm;
    if warm.on_start && (!warm.urls.is_empty() || !warm.templates.is_empty()) {
        // Hold readiness from here; the service releases it when done or at the deadline.
        live.set_warm_state(WarmState::Holding);
        server.add_service(background_service(
            "warm",
            WarmService {
                live,
                hold_until: std::time::Instant::now() + warm.max_ready_delay,
            },
        ));
    }
    server.add_service(background_service(
        "warm schedule",
        WarmScheduleService { live },
    ));
    tracing::info!(listen = %listen, admin = %live.snapshot().config.server.admin_listen,
        version = env!("CARGO_PKG_VERSION"), "sidecache started");
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { live, grace }),
    });
    Ok(())
}

struct AdminService {
    live: &'static Live,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let bound = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener = match bound {
            Some(l) => l,
            None => {
                let addr = self.live.snapshot().config.server.admin_listen;
                let bind =
                    tokio::task::spawn_blocking(move || admin::bind(addr, UPGRADE_ADMIN_BIND_WAIT));
                match bind.await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "admin listener not started");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "admin bind task failed");
                        return;
                    }
                }
            }
        };
        admin::serve(listener, self.live, shutdown).await;
    }
}

/// Reloads the config on SIGHUP and, with `server.watch`, when the file changes on disk.
struct ReloadService {
    live: &'static Live,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload via /admin/reload only");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seen = self.file_mtime();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received, reloading config");
                    let _ = self.live.reload_from_disk(&ProcessEnv);
                    seen = self.file_mtime();
                }
                _ = tick.tick() => {
                    if !self.live.snapshot().config.server.watch {
                        continue;
                    }
                    let now = self.file_mtime();
                    if now.is_some() && now != seen {
                        seen = now;
                        tracing::info!("config file changed, reloading");
                        let _ = self.live.reload_from_disk(&ProcessEnv);
                    }
                }
            }
        }
    }
}

/// L2's background work, on a thread of its own: opens both L2 connections at start, so the
/// first requests do not wait on a connect (a TLS handshake takes longer than one read
/// timeout), then receives purges broadcast by other instances over Redis pub/sub and
/// applies them to L1 (see `purge::broadcast`). Does nothing without L2.
struct L2Service {
    live: &'static Live,
}

#[async_trait]
impl BackgroundService for L2Service {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Some(l2) = self.live.cache.l2() {
            l2.connect_in_background();
        }
        self.live.purges.run_subscriber(shutdown).await;
    }
}

impl ReloadService {
    fn file_mtime(&self) -> Option<SystemTime> {
        let snapshot = self.live.snapshot();
        let path = snapshot.config.source.as_ref()?;
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

/// Warms the cache through this process's own data plane at start-up, holding `/ready` at
/// 503 until warming finishes or `warm.max_ready_delay` has passed, whichever is first.
struct WarmService {
    live: &'static Live,
    hold_until: std::time::Instant,
}

#[async_trait]
impl BackgroundService for WarmService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let live = self.live;
        let release = tokio::spawn({
            let at = self.hold_until;
            async move {
                tokio::time::sleep_until(at.into()).await;
                if live.warm_state() == WarmState::Holding {
                    tracing::warn!(target: "sidecache::warm",
                        "warm.max_ready_delay passed: ready now, warming continues in the background");
                }
                live.release_warm_hold();
            }
        });
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = self.warm() => {}
        }
        release.abort();
        live.set_warm_state(WarmState::Idle);
    }
}

impl WarmService {
    async fn warm(&self) {
        let config = Arc::clone(&self.live.snapshot().config);
        warm::schedule::pass(&config, WarmTrigger::Start).await;
    }
}

/// Re-runs the warm list on `[warm] every` (plus jitter), and when a reload changes the warm
/// list while in-process warming is on (see [`warm::schedule`]). Runs in every process: a
/// reload may turn the schedule on.
struct WarmScheduleService {
    live: &'static Live,
}

/// How often the schedule looks for a reloaded config.
const WARM_RELOAD_CHECK: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for WarmScheduleService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use warm::schedule::{has_list, in_process, list_changed, next_delay, random_up_to};
        let due_after = |c: &Config| {
            c.warm.every.map(|every| {
                tokio::time::Instant::now() + next_delay(every, c.warm.jitter, random_up_to)
            })
        };
        let mut seen = Arc::clone(&self.live.snapshot().config);
        let mut next_due = due_after(&seen);
        let mut tick = tokio::time::interval(WARM_RELOAD_CHECK);
        loop {
            let due_at = next_due;
            let due = async move {
                match due_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let scheduled = tokio::select! {
                _ = shutdown.changed() => return,
                () = due => true,
                _ = tick.tick() => false,
            };
            // A reload since the last look is handled first, whichever woke the loop.
            let current = Arc::clone(&self.live.snapshot().config);
            let reloaded = !Arc::ptr_eq(&current, &seen);
            let rewarm =
                reloaded && list_changed(&seen.warm, &current.warm) && in_process(&current.warm);
            let rescheduled = reloaded
                && (seen.warm.every, seen.warm.jitter) != (current.warm.every, current.warm.jitter);
            seen = current;
            let trigger = match (rewarm, scheduled) {
                (true, _) => WarmTrigger::Reload,
                (false, true) => WarmTrigger::Schedule,
                (false, false) => {
                    if rescheduled {
                        next_due = due_after(&seen);
                    }
                    continue;
                }
            };
            if has_list(&seen.warm) {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = warm::schedule::pass(&seen, trigger) => {}
                }
            }
            next_due = due_after(&seen);
        }
    }
}

/// Signal handling. pingora sleeps the whole grace period after SIGTERM; sidecache exits as
/// soon as no request is in flight (or when the grace period ends, whichever is first).
struct Signals {
    live: &'static Live,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(grace_ms = self.grace.as_millis() as u64, in_flight = self.live.in_flight(),
                    "SIGTERM: draining in-flight requests");
                let live = self.live;
                let grace = self.grace;
                std::thread::spawn(move || drain_then_exit(live, grace));
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                // Not pingora's fast shutdown: it stops the runtimes without first stopping
                // the accept loops, and a no-steal runtime's loop then spins on "Accept()
                // failed" (about 100,000 log lines a second) while the shutdown waits for it,
                // seconds or for ever. Nothing needs flushing (logs go unbuffered to stderr;
                // L1 is memory; Redis writes are acknowledged or lost either way).
                std::process::exit(0)
            }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing listeners to the new process");
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}

/// Exit once nothing is in flight (checked every 20 ms after the listeners stop), or let
/// pingora finish at the end of the grace period.
fn drain_then_exit(live: &'static Live, grace: Duration) {
    let deadline = std::time::Instant::now() + grace;
    std::thread::sleep(Duration::from_millis(100));
    let mut idle_checks = 0;
    while std::time::Instant::now() < deadline {
        if live.in_flight() == 0 {
            idle_checks += 1;
            if idle_checks >= 3 {
                tracing::info!("drained, exiting");
                std::process::exit(0);
            }
        } else {
            idle_checks = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
