//! The command line: `sidecache [run]`, `check`, `demo`, `bench`, `warm`, `purge`.
//!
//! Exit codes: 0 success, 1 runtime failure (or a failed bench verdict), 64 bad config or
//! usage (EX_USAGE).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigErrors, EnvSource, ProcessEnv};
use crate::server::{self, RunOptions};
use crate::telemetry::logging::{self, LogFormat};

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
            print!("{}", summary(path, &config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The one-screen summary `sidecache check` prints.
pub fn summary(path: &Path, c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{}: OK", path.display());
    let _ = writeln!(
        s,
        "listen {}  admin {}  threads {}  grace {:?}",
        c.server.listen, c.server.admin_listen, c.server.threads, c.server.grace_period
    );
    let _ = writeln!(s, "\nupstreams:");
    for u in &c.upstreams {
        let _ = writeln!(
            s,
            "  {:<16} {:<24} connect {:?}, read {:?}",
            u.name, u.address, u.connect_timeout, u.read_timeout
        );
    }
    let _ = writeln!(s, "\nrewrites (first match wins):");
    for r in &c.rewrites {
        let _ = writeln!(
            s,
            "  {:<32} -> {}:{}",
            r.source.source(),
            c.upstream_name(r.upstream),
            r.path.as_ref().map_or("(same path)", |p| p.source())
        );
    }
    match c.proxy.default_upstream {
        Some(u) => {
            let _ = writeln!(
                s,
                "  (unmatched)                      -> {}",
                c.upstream_name(u)
            );
        }
        None => {
            let _ = writeln!(s, "  (unmatched)                      -> 404");
        }
    }
    let _ = writeln!(s, "\nroutes (first match wins):");
    for r in &c.routes {
        let what = match &r.cache {
            None => "cache off".to_owned(),
            Some(rc) => {
                let ttl = match rc.ttl {
                    Some(config::Ttl::Fixed(d)) => format!("ttl {d:?}"),
                    Some(config::Ttl::UntilInvalidated) => {
                        format!(
                            "until-invalidated (max {:?})",
                            rc.max_ttl.unwrap_or_default()
                        )
                    }
                    None => "origin headers".to_owned(),
                };
                format!("{:?} {ttl}", rc.mode).to_lowercase()
            }
        };
        let methods: Vec<&str> = r.methods.iter().map(http::Method::as_str).collect();
        let _ = writeln!(
            s,
            "  {:<20} {} {:<40} {what}",
            r.name,
            methods.join(","),
            r.pattern.source()
        );
    }
    let l2 = c.cache.l2.as_ref().map_or_else(
        || "off (L1 only)".to_owned(),
        |l2| format!("redis, timeout {:?}", l2.timeout),
    );
    let _ = writeln!(
        s,
        "\ncache: default mode {:?}, L1 {} MiB (objects <= {} KiB), L2 {l2}",
        c.cache.default_mode,
        c.cache.l1.max_bytes / (1024 * 1024),
        c.cache.l1.max_object_bytes / 1024
    );
    s
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
    let backend = match start_demo_backend(args.delay) {
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

/// Start the stand-in legacy backend on its own runtime thread; returns its address.
fn start_demo_backend(delay: Duration) -> std::io::Result<std::net::SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-backend".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let opts = crate::demo::BackendOptions {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    delay,
                };
                match crate::demo::Backend::start(opts).await {
                    Ok(backend) => {
                        let _ = tx.send(Ok(backend.addr()));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

fn block_on<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}

fn bench(args: &BenchArgs) -> ExitCode {
    let max_error_rate = match crate::bench::parse_percent(&args.max_error_rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidecache bench: --max-error-rate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let opts = crate::bench::BenchOptions {
        urls: args.urls.clone(),
        iterations: args.iterations,
        concurrency: args.concurrency,
        p95_budget: args.p95_budget,
        max_error_rate,
        timeout: Duration::from_secs(10),
        headers: Vec::new(),
    };
    match block_on(crate::bench::run(&opts)) {
        Ok(Ok(report)) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1))
        }
        Ok(Err(e)) => {
            eprintln!("sidecache bench: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("sidecache bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn warm(path: &Path, args: &WarmArgs) -> ExitCode {
    let config = match load_or_report(path, &ProcessEnv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let target = match &args.target {
        Some(t) => match crate::warm::parse_target(t) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sidecache warm: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => crate::warm::local_target(config.server.listen),
    };
    let paths = match crate::warm::expand(&config.warm) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sidecache warm: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut opts = crate::warm::WarmOptions::from_config(&config.warm, target);
    opts.concurrency = args.concurrency.unwrap_or(opts.concurrency).max(1);
    opts.rate_per_second = args.rate_per_second.unwrap_or(opts.rate_per_second).max(1);
    opts.timeout = args.timeout;
    eprintln!(
        "sidecache warm: {} URL(s) via http://{} (concurrency {}, {}/s)",
        paths.len(),
        opts.target,
        opts.concurrency,
        opts.rate_per_second
    );
    let gate = std::sync::Mutex::new(crate::warm::ProgressGate::new(
        args.progress_every,
        Duration::from_secs(1),
        std::time::Instant::now(),
    ));
    let progress = move |r: &crate::warm::WarmReport, total: usize| {
        let now = std::time::Instant::now();
        if gate.lock().is_ok_and(|mut g| g.should_print(r.done(), now)) {
            eprintln!("{}", r.progress_line(total));
        }
    };
    match block_on(crate::warm::run(paths, &opts, progress)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("sidecache warm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn purge(args: &PurgeArgs) -> ExitCode {
    let body = match (&args.url, &args.prefix, &args.tag) {
        (Some(u), _, _) => serde_json::json!({ "url": u }),
        (_, Some(p), _) => serde_json::json!({ "prefix": p }),
        (_, _, Some(t)) => serde_json::json!({ "tag": t }),
        _ => {
            eprintln!("sidecache purge: give one of --url, --prefix or --tag");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let url = format!("{}/admin/purge", args.admin.trim_end_matches('/'));
    match block_on(post_json(&url, body.to_string(), args.token.as_deref())) {
        Ok(Ok((status, text))) => {
            println!("{text}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("sidecache purge: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn post_json(url: &str, body: String, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let uri: http::Uri = url.parse().map_err(std::io::Error::other)?;
    let authority = uri
        .authority()
        .ok_or_else(|| std::io::Error::other("URL has no host"))?
        .clone();
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    .map_err(|_| std::io::Error::other("connect timed out"))??;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = http::Request::post(uri.path())
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(std::io::Error::other)?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| std::io::Error::other("request timed out"))?
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
