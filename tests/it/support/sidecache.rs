//! Runs the real `sidecache` binary as a child process for end-to-end tests.
//!
//! ```ignore
//! let backend = start_backend(Duration::from_millis(50)).await;
//! let sc = Sidecache::start(
//!     SidecacheOptions::new(r#"
//!         listen = "{listen}"
//!         admin_listen = "{admin}"
//!         [upstream]
//!         address = "{backend}"
//!     "#)
//!     .backend(backend.addr())
//!     .env("RUST_LOG", "debug"),
//! )
//! .await;
//! let r = get(&sc.url("/api/state-machine/diagram"), &[]).await;
//! ```
//!
//! Placeholders substituted in the config text: `{listen}` and `{admin}` become
//! `127.0.0.1:PORT` with free ports, `{backend}` becomes the backend's `IP:PORT` (no
//! scheme). The process runs as `sidecache --config DIR/sidecache.toml` with stdout and
//! stderr captured to files in the same temp dir; it is killed when the handle drops (and
//! its stderr is printed if the test is panicking).

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;

use super::http::{get, request};

/// Path of the binary cargo built for integration tests.
const BUILT_BIN: &str = env!("CARGO_BIN_EXE_sidecache");

/// Path of the binary under test: `SIDECACHE_TEST_BIN` when set (a copy of another build,
/// to run a long test of an older build beside a newer one), else the one cargo built.
pub fn bin() -> String {
    std::env::var("SIDECACHE_TEST_BIN").unwrap_or_else(|_| BUILT_BIN.to_owned())
}

/// How long [`Sidecache::start`] waits for `GET /health` to answer 200.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run: the config template, extra environment and arguments.
#[derive(Debug, Clone, Default)]
pub struct SidecacheOptions {
    /// TOML config text with `{listen}`, `{admin}` and `{backend}` placeholders.
    pub config: String,
    /// Extra environment variables for the child (it also inherits the test's).
    pub env: Vec<(String, String)>,
    /// Address substituted for `{backend}`.
    pub backend: Option<SocketAddr>,
    /// Extra command-line arguments appended after `--config PATH`.
    pub args: Vec<String>,
}

impl SidecacheOptions {
    /// Options with the given config template and nothing else.
    pub fn new(config: impl Into<String>) -> Self {
        Self {
            config: config.into(),
            ..Self::default()
        }
    }

    /// Sets the address substituted for `{backend}`.
    pub fn backend(mut self, addr: SocketAddr) -> Self {
        self.backend = Some(addr);
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// The opening most test configs share: `[server]` on the harness's free ports with 2
/// threads, and `[proxy]` sending everything to one `[[upstreams]]` entry named `backend`
/// at `{backend}`. Each test appends its routes and the rest with [`ConfigOpening::then`].
///
/// ```ignore
/// let config = config_opening().grace_period("2s").then(r#"
/// [[routes]]
/// name = "r"
/// match = "GET /api/x"
/// ttl = "60s"
/// "#);
/// ```
pub fn config_opening() -> ConfigOpening {
    ConfigOpening {
        admin_listen: "{admin}".to_owned(),
        grace_period: "1s",
        upstream: String::new(),
    }
}

/// See [`config_opening`].
#[derive(Debug, Clone)]
pub struct ConfigOpening {
    admin_listen: String,
    grace_period: &'static str,
    upstream: String,
}

impl ConfigOpening {
    /// `server.admin_listen` (default: the `{admin}` free port).
    pub fn admin_listen(mut self, addr: impl Into<String>) -> Self {
        self.admin_listen = addr.into();
        self
    }

    /// `server.grace_period` (default `1s`).
    pub fn grace_period(mut self, period: &'static str) -> Self {
        self.grace_period = period;
        self
    }

    /// A line added to the `backend` upstream, e.g. `read_timeout = "5s"`.
    pub fn upstream(mut self, line: &str) -> Self {
        self.upstream.push_str(line);
        self.upstream.push('\n');
        self
    }

    /// The opening followed by `rest`.
    pub fn then(self, rest: &str) -> String {
        format!(
            "\n[server]\nlisten = \"{{listen}}\"\nadmin_listen = \"{}\"\nthreads = 2\n\
             grace_period = \"{}\"\n\n[proxy]\ndefault_upstream = \"backend\"\n\n\
             [[upstreams]]\nname = \"backend\"\naddress = \"{{backend}}\"\n{}{rest}",
            self.admin_listen, self.grace_period, self.upstream
        )
    }
}

/// A running `sidecache` child process and its temp dir (config and logs).
pub struct Sidecache {
    child: Child,
    dir: TempDir,
    config_path: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: Option<SocketAddr>,
    exit: Option<ExitStatus>,
}

impl Sidecache {
    /// Spawns the proxy and waits until `GET /health` answers 200; panics (with the
    /// captured stderr) if it exits early or is not healthy within [`STARTUP_TIMEOUT`].
    pub async fn start(opts: SidecacheOptions) -> Sidecache {
        match Self::try_start(opts).await {
            Ok(sc) => sc,
            Err(e) => panic!("sidecache did not start: {e}"),
        }
    }

    /// Like [`Sidecache::start`] but returns the failure (with stderr) as `Err`. A start that
    /// lost one of its free ports to another process between picking and binding it (tests
    /// of several worktrees or binaries run at once) is tried again on new ports.
    pub async fn try_start(opts: SidecacheOptions) -> Result<Sidecache, String> {
        let mut attempts = 0;
        loop {
            let mut sc = Self::spawn(opts.clone());
            match sc.wait_healthy(STARTUP_TIMEOUT).await {
                Ok(()) => return Ok(sc),
                Err(e) if e.contains("Address already in use") && attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Spawns the proxy without waiting for it (for tests that expect it to fail).
    pub fn spawn(opts: SidecacheOptions) -> Sidecache {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = free_addr();
        let admin = free_addr();
        let config_path = dir.path().join("sidecache.toml");
        std::fs::write(
            &config_path,
            substitute(&opts.config, listen, admin, opts.backend),
        )
        .expect("write config");
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log");
        let bin = bin();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .args(&opts.args)
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Sidecache {
            child,
            dir,
            config_path,
            listen,
            admin,
            backend: opts.backend,
            exit: None,
        }
    }

    /// Polls `GET /health` until it answers 200, the process exits, or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = self.url("/health");
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                return Err(format!(
                    "exited early with {status}\n--- stderr ---\n{}",
                    self.stderr_text()
                ));
            }
            match super::http::try_request_timeout(
                "GET",
                &url,
                &[],
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await
            {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("status {}: {}", r.status, r.text()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "GET {url} not 200 within {timeout:?} (last: {last})\n--- stderr ---\n{}",
            self.stderr_text()
        ))
    }

    /// The proxy's listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listen address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://LISTEN` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the config and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file with a new template, substituting the same ports and
    /// backend (follow with [`Sidecache::sighup`] or an admin reload). The new file is
    /// renamed over the old, so a reload reads one version or the other, never half of one.
    pub fn rewrite_config(&self, config: &str) {
        let next = self.config_path.with_extension("toml.next");
        std::fs::write(
            &next,
            substitute(config, self.listen, self.admin, self.backend),
        )
        .expect("write the next config");
        std::fs::rename(&next, &self.config_path).expect("rename it over the config");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        self.signal("-INT");
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Sidecache {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- sidecache stderr ({}) ---\n{}",
                self.dir.path().display(),
                self.stderr_text()
            );
        }
    }
}

/// Replaces `{listen}`, `{admin}` and (if given) `{backend}` in a config template.
pub fn substitute(
    template: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: Option<SocketAddr>,
) -> String {
    let mut text = template
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string());
    if let Some(b) = backend {
        text = text.replace("{backend}", &b.to_string());
    }
    text
}

/// A currently free `127.0.0.1` port (bound and released; another process could take it
/// in between, which is acceptable for tests).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind free port");
    l.local_addr().expect("local addr")
}

/// Runs `sidecache ARGS...` to completion (for `check`, `--version`, bad-flag tests).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = bin();
    Command::new(&bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// GET `path` on `sc` (each answer must be 200) until one answers `x_cache`, for up to 20 s.
pub async fn until_x_cache(sc: &Sidecache, path: &str, x_cache: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&sc.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        if r.x_cache() == x_cache {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {x_cache} (last {})",
            r.x_cache()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POST `body` to `sc`'s `/admin/purge`; must answer 200; returns the report.
pub async fn admin_purge(sc: &Sidecache, body: serde_json::Value) -> serde_json::Value {
    let r = request(
        "POST",
        &sc.admin_url("/admin/purge"),
        &[("content-type", "application/json")],
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "purge {body}: {}", r.text());
    r.json()
}

/// POST to `sc`'s `/admin/reload` (as JSON, as the admin plane requires) and return the answer.
pub async fn admin_reload(sc: &Sidecache) -> super::http::Resp {
    request(
        "POST",
        &sc.admin_url("/admin/reload"),
        &[("content-type", "application/json")],
        Bytes::new(),
    )
    .await
}
