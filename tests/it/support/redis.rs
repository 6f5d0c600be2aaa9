//! A real, throw-away `redis-server` process for tests (never the machine's shared 6379).
//!
//! Starts on a free 127.0.0.1 port with no persistence in a temp dir, waits for PING, and can be
//! SIGKILLed and restarted on the same port. Dropping it kills the process.
//!
//! [`Flavour`] picks the server: the machine's `redis-server` (Debian's), the oldest Redis
//! sidecache supports (6.2) or Valkey. `./dev` installs the last two (see `./dev help`) and
//! exports their paths; a test run without `./dev` finds them where it puts them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server a [`RedisServer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `redis-server` on PATH (Debian's package: 7.0 on bookworm).
    System,
    /// Redis 6.2, the oldest sidecache supports (`SIDECACHE_TEST_REDIS_62`).
    Redis62,
    /// Valkey (`SIDECACHE_TEST_VALKEY`).
    Valkey,
}

impl Flavour {
    /// The server binary: the variable `./dev` sets, else where `./dev` installs it.
    pub fn binary(self) -> PathBuf {
        let (var, installed) = match self {
            Flavour::System => return PathBuf::from("redis-server"),
            Flavour::Redis62 => ("SIDECACHE_TEST_REDIS_62", "redis-6.2-server"),
            Flavour::Valkey => ("SIDECACHE_TEST_VALKEY", "valkey-server"),
        };
        let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".test-servers/bin")
                .join(installed)
        });
        assert!(
            path.exists(),
            "{self:?} server not found at {} ({var} unset or wrong); `./dev deps` installs it",
            path.display()
        );
        path
    }

    /// The server's name as sidecache reports it, and a prefix of its version.
    pub fn reported(self) -> (&'static str, &'static str) {
        match self {
            Flavour::System => ("redis", "7."),
            Flavour::Redis62 => ("redis", "6.2."),
            Flavour::Valkey => ("valkey", "9."),
        }
    }
}

/// One multi-threaded `#[tokio::test]` per [`Flavour`], each awaiting `$run(flavour)`:
/// `flavour_tests!(run: on_redis_7, on_redis_6_2, on_valkey);`.
#[macro_export]
macro_rules! flavour_tests {
    ($run:ident: $redis_7:ident, $redis_6_2:ident, $valkey:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $redis_7() {
            $run($crate::support::redis::Flavour::System).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $redis_6_2() {
            $run($crate::support::redis::Flavour::Redis62).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $valkey() {
            $run($crate::support::redis::Flavour::Valkey).await;
        }
    };
}

/// One `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    flavour: Flavour,
    port: u16,
    /// With [`RedisServer::start_tls`]: the TLS port (the plain port stays open for the
    /// harness's own inspection).
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers PING.
    pub fn start() -> Self {
        Self::start_flavour(Flavour::System)
    }

    /// [`Self::start`] with the server of `flavour`.
    pub fn start_flavour(flavour: Flavour) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut s = RedisServer {
            child: None,
            flavour,
            port: free_port(),
            tls_port: None,
            dir,
        };
        s.spawn();
        s
    }

    /// Start a server that also serves TLS on a second free port, with a throw-away CA and a
    /// server certificate for 127.0.0.1 made by `openssl` in its temp dir ([`Self::ca_file`]).
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl on PATH (Debian package openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sidecache test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n")
            .expect("write san.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let mut s = RedisServer {
            child: None,
            flavour: Flavour::System,
            port: free_port(),
            tls_port: Some(free_port()),
            dir,
        };
        s.spawn();
        s
    }

    /// The CA that signed a [`Self::start_tls`] server's certificate (PEM).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `rediss://127.0.0.1:{tls_port}/` of a [`Self::start_tls`] server.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/")
    }

    fn spawn(&mut self) {
        let binary = self.flavour.binary();
        let mut cmd = Command::new(&binary);
        if let Some(tls_port) = self.tls_port {
            let file = |name: &str| self.dir.path().join(name);
            cmd.arg("--tls-port")
                .arg(tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .arg("--tls-auth-clients")
                .arg("no");
        }
        let child = cmd
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{} not found; install it with `./dev deps`",
                binary.display()
            ),
            Err(e) => panic!("failed to start {}: {e}", binary.display()),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.try_conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(200))
    }

    /// `redis://127.0.0.1:{port}/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `127.0.0.1:{port}`, e.g. for a proxy in front of it.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL the server (no graceful shutdown) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on unix
            let _ = c.wait();
        }
    }

    /// Kill (if running) and start again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A synchronous connection for raw inspection.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("raw redis connection")
    }

    /// SET `key` to raw bytes (e.g. garbage) with no TTL.
    pub fn set_raw(&self, key: &str, value: &[u8]) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.conn())
            .expect("raw SET");
    }

    /// Keys matching a glob pattern.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut k: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .expect("raw KEYS");
        k.sort();
        k
    }

    /// How many clients are connected to the TLS port of a [`Self::start_tls`] server.
    pub fn tls_clients(&self) -> usize {
        let port = self.tls_port.expect("started with start_tls");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.conn())
            .expect("raw CLIENT LIST");
        let laddr = format!(" laddr=127.0.0.1:{port} ");
        list.lines().filter(|l| l.contains(&laddr)).count()
    }

    /// Wait (up to 10 s) until at least `n` clients are connected to the TLS port.
    pub fn wait_for_tls_clients(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.tls_clients() < n {
            assert!(
                Instant::now() < deadline,
                "{} TLS clients connected, expected {n}",
                self.tls_clients()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Does `key` exist?
    pub fn exists(&self, key: &str) -> bool {
        let n: u64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut self.conn())
            .expect("raw EXISTS");
        n > 0
    }

    /// Remaining TTL of `key` in ms (-1 no TTL, -2 missing).
    pub fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.conn())
            .expect("raw PTTL")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
