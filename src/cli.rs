//! The command line: `sidecache [run]`, `check`, `demo`, `bench`, `warm`, `purge`.
//!
//! Argument parsing and dispatch only: the client commands are [`crate::bench::command`],
//! [`crate::warm::command`] and [`crate::purge::command`], the `check` summary is
//! [`config::summary::render`].
//!
//! Exit codes: 0 success, 1 runtime failure (or a failed bench verdict), 64 bad config or
//! usage (EX_USAGE).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::CommandStatus;
use crate::config::{self, Config, ConfigErrors, EnvSource, ProcessEnv};
use crate::purge::{PurgeCommand, PurgeKind};
use crate::server::{self, RunOptions};
use crate::telemetry::logging::{self, LogFormat};
use crate::{bench, purge, warm};

/// Exit code for a bad config (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// sidecache: a caching sidecar reverse proxy for an unchanged HTTP API.
///
/// Runs the proxy by default. Health is answered at /health and /api/health, metrics on the
/// admin listener at /metrics.
#[derive(Debug, Parser)]
#[command(name = "sidecache", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        global = true,
        env = "SIDECACHE_CONFIG",
        default_value = "config/sidecache.toml"
    )]
    pub config: PathBuf,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "SIDECACHE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Take over the listening sockets of a running sidecache (zero-downtime upgrade).
    #[arg(long)]
    pub upgrade: bool,
    /// Unix socket used to hand listening sockets over during an upgrade.
    #[arg(long, env = "SIDECACHE_UPGRADE_SOCK")]
    pub upgrade_sock: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config and print a summary; exit 0 when valid, 64 when not.
    Check,
    /// Run the proxy with config/demo.toml in front of a built-in stand-in of the legacy API.
    Demo(DemoArgs),
    /// Measure URLs like the legacy benchmarkProduction.js: latency percentiles, X-Cache mix,
    /// PASS/FAIL against budgets (exit 1 on FAIL).
    Bench(BenchArgs),
    /// Pre-fill the cache: request the `[warm]` URLs through a running sidecache (exit 1 if
    /// any request failed).
    Warm(WarmArgs),
    /// Purge cached entries through a running sidecache's admin API.
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Data-plane base URL of the sidecache to warm (default: `server.listen` of --config).
    #[arg(long)]
    pub target: Option<String>,
    /// Parallel requests (default: `warm.concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests per second at most (default: `warm.rate_per_second`).
    #[arg(long)]
    pub rate_per_second: Option<u32>,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print progress every this many requests (and at least every second).
    #[arg(long, default_value_t = 100)]
    pub progress_every: usize,
    /// Machine-readable summary on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Artificial latency of every stand-in API call.
    #[arg(long, default_value = "150ms", value_parser = parse_duration)]
    pub delay: Duration,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// URL to measure (repeatable).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Requests per URL.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// FAIL when a URL's p95 exceeds this.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub p95_budget: Duration,
    /// FAIL when a URL's error rate exceeds this (`1%` or `0.01`).
    #[arg(long, default_value = "1%")]
    pub max_error_rate: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (plots, verdict, parameters) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Admin base URL of the running sidecache.
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    pub admin: String,
    /// Bearer token (needed when the admin listener is not on loopback).
    #[arg(long, env = "SIDECACHE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Purge every variant of this path+query.
    #[arg(long, group = "target")]
    pub url: Option<String>,
    /// Purge every entry whose URL starts with this.
    #[arg(long, group = "target")]
    pub prefix: Option<String>,
    /// Purge every entry carrying this tag.
    #[arg(long, group = "target")]
    pub tag: Option<String>,
    /// Purge softly: mark the entries stale, serve them stale for [cache] soft_purge_grace
    /// while one background fetch per key refreshes them.
    #[arg(long)]
    pub soft: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s).map_err(|e| e.to_string())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        None | Some(Command::Run) => run(&cli.config, &ProcessEnv, &cli),
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo(ref args)) => demo(args, &cli),
        Some(Command::Bench(ref args)) => bench(args),
        Some(Command::Warm(ref args)) => warm(&cli.config, args),
        Some(Command::Purge(ref args)) => purge(args),
    }
}

fn load_or_report(path: &Path, env: &dyn EnvSource) -> Result<Config, ExitCode> {
    config::load(path, env).map_err(|errors| {
        report_config_errors(path, &errors);
        ExitCode::from(EXIT_CONFIG)
    })
}

fn report_config_errors(path: &Path, errors: &ConfigErrors) {
    eprintln!(
        "sidecache: {} has {} problem(s):\n{}",
        path.display(),
        errors.0.len(),
        errors.report()
    );
}

fn run(path: &Path, env: &dyn EnvSource, cli: &Cli) -> ExitCode {
    let config = match load_or_report(path, env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    start(config, cli)
}

fn start(config: Config, cli: &Cli) -> ExitCode {
    let options = RunOptions {
        upgrade: cli.upgrade,
        upgrade_sock: cli.upgrade_sock.clone(),
    };
    match server::run(config, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidecache: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match load_or_report(path, &ProcessEnv) {
        Ok(config) => {
            print!("{}", config::summary::render(path, &config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// An environment with a few variables set on top of the process environment.
struct OverlayEnv(HashMap<String, String>);
impl EnvSource for OverlayEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().or_else(|| ProcessEnv.var(name))
    }
}

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

fn demo(args: &DemoArgs, cli: &Cli) -> ExitCode {
    let backend = match crate::demo::start_in_background(args.delay) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sidecache demo: cannot start the stand-in backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = OverlayEnv(HashMap::from([(
        "SIDECACHE_UPSTREAM_BACKEND".to_owned(),
        backend.to_string(),
    )]));
    let path = Path::new("config/demo.toml");
    let loaded = if path.exists() {
        config::load(path, &env)
    } else {
        config::parse(DEMO_CONFIG, None, &env)
    };
    let config = match loaded {
        Ok(c) => c,
        Err(errors) => {
            report_config_errors(path, &errors);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listen = config.server.listen;
    let admin = config.server.admin_listen;
    println!(
        "sidecache demo\n  proxy      http://{listen}\n  admin      http://{admin}/metrics\n  \
         stand-in   http://{backend} (the legacy API, {} ms per call)\n\nTry:\n  \
         curl -i http://{listen}/api/contractors/42/bundle   # twice: MISS, then HIT-L1\n  \
         curl -i http://{listen}/api/health                  # answered by sidecache\n  \
         curl -s http://{admin}/metrics | grep sidecache_requests_total\n",
        args.delay.as_millis()
    );
    start(config, cli)
}

fn bench(args: &BenchArgs) -> ExitCode {
    let max_error_rate = match bench::parse_percent(&args.max_error_rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidecache bench: --max-error-rate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let opts = bench::BenchOptions {
        urls: args.urls.clone(),
        iterations: args.iterations,
        concurrency: args.concurrency,
        p95_budget: args.p95_budget,
        max_error_rate,
        timeout: Duration::from_secs(10),
        headers: Vec::new(),
    };
    exit_code(bench::command(&opts, args.json, args.report.as_deref()))
}

fn warm(path: &Path, args: &WarmArgs) -> ExitCode {
    let config = match load_or_report(path, &ProcessEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cmd = warm::WarmCommand {
        target: args.target.clone(),
        concurrency: args.concurrency,
        rate_per_second: args.rate_per_second,
        timeout: args.timeout,
        progress_every: args.progress_every,
        json: args.json,
    };
    exit_code(warm::command(&config, &cmd))
}

fn purge(args: &PurgeArgs) -> ExitCode {
    let (kind, target) = match (&args.url, &args.prefix, &args.tag) {
        (Some(u), _, _) => (PurgeKind::Url, u),
        (_, Some(p), _) => (PurgeKind::Prefix, p),
        (_, _, Some(t)) => (PurgeKind::Tag, t),
        _ => {
            eprintln!("sidecache purge: give one of --url, --prefix or --tag");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    exit_code(purge::command(&PurgeCommand {
        admin: args.admin.clone(),
        token: args.token.clone(),
        kind,
        target: target.clone(),
        soft: args.soft,
    }))
}

/// The exit code of a client command's ending.
fn exit_code(status: CommandStatus) -> ExitCode {
    match status {
        CommandStatus::Succeeded => ExitCode::SUCCESS,
        CommandStatus::Failed => ExitCode::FAILURE,
        CommandStatus::BadUsage => ExitCode::from(EXIT_CONFIG),
    }
}
