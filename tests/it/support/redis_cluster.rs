//! Throw-away Redis Cluster and Sentinel set-ups for tests, on free ports, no persistence.
//!
//! - [`RedisCluster`]: `n` masters (`redis-server --cluster-enabled yes`), joined with
//!   `redis-cli --cluster create`, ready when every node reports `cluster_state:ok`. A node can
//!   be SIGKILLed and started again (it rejoins from its `nodes.conf`), and a slot can be moved
//!   between masters by hand (`CLUSTER SETSLOT` + `MIGRATE`) to provoke `ASK` and `MOVED`.
//! - [`SentinelSet`]: one master, one replica and three sentinels (`redis-server --sentinel`,
//!   the same binary as `redis-sentinel`) with short failure detection, so killing the
//!   master promotes the replica within seconds.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::Flavour;
use super::sidecache::config_opening;

/// A port `p` with `p` and `p + 10000` (the cluster bus) both free.
fn free_cluster_port() -> u16 {
    loop {
        let p = fastrand::u16(20000..40000);
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
}

fn spawn_redis(binary: &Path, args: &[String]) -> Child {
    match Command::new(binary)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "{} not found; install it with `./dev deps`",
                binary.display()
            )
        }
        Err(e) => panic!("failed to start {}: {e}", binary.display()),
    }
}

fn conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_millis(300))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

fn wait_ping(port: u16) {
    poll(
        Duration::from_secs(10),
        &format!("redis on {port} answers PING"),
        || {
            conn(port)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    );
}

/// Poll `check` every 50 ms until it holds, or panic naming `what` after `limit`.
pub fn poll(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One process with its port and data dir.
struct Node {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    /// Its data dir, removed when the node is dropped.
    _dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Node {
    fn start(port: u16, extra: &[&str]) -> Node {
        Node::start_flavour(Flavour::System, port, extra)
    }

    fn start_flavour(flavour: Flavour, port: u16, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut args: Vec<String> = vec![];
        args.extend(
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ]
            .map(String::from),
        );
        args.push(dir.path().display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut n = Node {
            child: None,
            binary: flavour.binary(),
            port,
            _dir: dir,
            args,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        self.child = Some(spawn_redis(&self.binary, &self.args));
        wait_ping(self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters only.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Start `masters` (at least 3) nodes, create the cluster, wait for `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        Self::start_flavour(Flavour::System, masters)
    }

    /// [`Self::start`] with servers of `flavour` (the machine's `redis-cli` joins them).
    pub fn start_flavour(flavour: Flavour, masters: usize) -> Self {
        let nodes: Vec<Node> = (0..masters)
            .map(|_| {
                let port = free_cluster_port();
                Node::start_flavour(
                    flavour,
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (is redis-tools installed?)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes };
        c.wait_ok();
        c
    }

    /// Wait until every running node reports `cluster_state:ok` and agrees on all slots.
    pub fn wait_ok(&self) {
        poll(Duration::from_secs(30), "the cluster is ok", || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                conn(n.port)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| {
                        info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                    })
            })
        });
    }

    /// `redis://127.0.0.1:PORT` of every node (the seeds).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A synchronous connection to node `i`.
    pub fn conn(&self, i: usize) -> redis::Connection {
        conn(self.nodes[i].port).expect("connection to a cluster node")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Start node `i` again on its port; it rejoins from its `nodes.conf` (empty of data).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].spawn();
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn(i))
            .expect("CLUSTER MYID")
    }

    /// The slot of `key` (hash tags respected).
    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.conn(0))
            .expect("CLUSTER KEYSLOT")
    }

    /// The index of the node serving `slot`.
    pub fn owner_of(&self, slot: u16) -> usize {
        let shards: Vec<(u16, u16, Vec<redis::Value>)> = {
            let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut self.conn(0))
                .expect("CLUSTER SLOTS");
            raw.into_iter()
                .filter_map(|v| redis::from_redis_value::<(u16, u16, Vec<redis::Value>)>(v).ok())
                .collect()
        };
        for (from, to, master) in shards {
            if (from..=to).contains(&slot) {
                let port: u16 = redis::from_redis_value(master[1].clone()).expect("port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("owner is one of ours");
            }
        }
        panic!("slot {slot} has no owner");
    }

    /// Lua script runs that succeeded (`EVALSHA` and `EVAL`, less their failed calls, such as
    /// a `NOSCRIPT` before the script is loaded), summed over every running node.
    pub fn script_runs(&self) -> u64 {
        let mut runs = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut self.conn(i))
                .expect("INFO commandstats");
            for line in info.lines() {
                let Some(stats) = line
                    .strip_prefix("cmdstat_evalsha:")
                    .or_else(|| line.strip_prefix("cmdstat_eval:"))
                else {
                    continue;
                };
                let field = |name: &str| -> u64 {
                    stats
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                runs += field("calls") - field("failed_calls");
            }
        }
        runs
    }

    /// Keys matching `pattern` on every running node.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_some() {
                let k: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut self.conn(i))
                    .expect("KEYS");
                all.extend(k);
            }
        }
        all.sort();
        all
    }

    /// Start moving `slot` from its owner to node `to`: mark it importing/migrating and move
    /// its keys, leaving the slot in the migrating state (the old owner answers `ASK` for
    /// keys it no longer has). Returns the old owner.
    pub fn begin_migration(&self, slot: u16, to: usize) -> usize {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} already on node {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let setslot = |node: usize, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(&mut self.conn(node))
                .expect("CLUSTER SETSLOT");
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut self.conn(from))
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut self.conn(from))
                .expect("MIGRATE");
        }
        from
    }

    /// Finish a migration begun by [`RedisCluster::begin_migration`]: every node learns that
    /// node `to` owns `slot` (clients with the old map now get `MOVED`).
    pub fn finish_migration(&self, slot: u16, to: usize) {
        let to_id = self.node_id(to);
        for i in 0..self.nodes.len() {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut self.conn(i))
                .expect("CLUSTER SETSLOT NODE");
        }
        poll(
            Duration::from_secs(10),
            "every node sees the new owner",
            || self.owner_of(slot) == to,
        );
    }
}

/// One master, one replica and three sentinels watching it as `master_name`.
pub struct SentinelSet {
    master: Node,
    replica: Node,
    sentinels: Vec<Node>,
    pub master_name: String,
}

impl SentinelSet {
    /// Start the set and wait until every sentinel knows the replica and the other sentinels.
    pub fn start() -> Self {
        let master_name = "sc-master".to_string();
        let master = Node::start(free_cluster_port(), &[]);
        let replica_of = master.port.to_string();
        let replica = Node::start(
            free_cluster_port(),
            &[
                "--replicaof",
                "127.0.0.1",
                &replica_of,
                "--replica-priority",
                "100",
            ],
        );
        let sentinels = (0..3)
            .map(|_| {
                let port = free_cluster_port();
                let dir = tempfile::tempdir().expect("temp dir for sentinel");
                let conf = dir.path().join("sentinel.conf");
                write_sentinel_conf(&conf, port, &master_name, master.port);
                let mut n = Node {
                    child: None,
                    binary: Flavour::System.binary(),
                    port,
                    args: vec![conf.display().to_string(), "--sentinel".to_string()],
                    _dir: dir,
                };
                n.spawn();
                n
            })
            .collect();
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            master_name,
        };
        poll(
            Duration::from_secs(30),
            "the sentinels see the replica and each other",
            || {
                set.sentinels.iter().all(|s| {
                    conn(s.port)
                        .and_then(|mut c| {
                            redis::cmd("SENTINEL")
                                .arg("MASTER")
                                .arg(&set.master_name)
                                .query::<std::collections::HashMap<String, String>>(&mut c)
                        })
                        .is_ok_and(|m| {
                            m.get("num-slaves").map(String::as_str) == Some("1")
                                && m.get("num-other-sentinels").map(String::as_str) == Some("2")
                        })
                })
            },
        );
        set
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port the sentinels currently name as the master.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let mut c = conn(s.port).ok()?;
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master_name)
                .query(&mut c)
                .ok()?;
            Some(port)
        })
    }

    /// Wait until the replica has caught up with the master (`master_link_status:up`).
    pub fn wait_replica_synced(&self) {
        poll(Duration::from_secs(20), "the replica is in sync", || {
            conn(self.replica.port)
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|i| i.contains("master_link_status:up"))
        });
    }

    /// SIGKILL the original master.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// Wait until the sentinels name the replica as master and it accepts writes.
    pub fn wait_failover(&self) {
        let replica = self.replica.port;
        poll(Duration::from_secs(30), "the replica is promoted", || {
            self.master_port() == Some(replica)
                && conn(replica)
                    .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c))
                    .is_ok_and(|r| {
                        r.first()
                            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                            .as_deref()
                            == Some("master")
                    })
        });
    }

    /// A synchronous connection to the current master.
    pub fn master_conn(&self) -> redis::Connection {
        conn(self.master_port().expect("a master")).expect("connection to the master")
    }
}

fn write_sentinel_conf(path: &Path, port: u16, name: &str, master_port: u16) {
    let text = format!(
        "port {port}\nbind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
         sentinel parallel-syncs {name} 1\n"
    );
    std::fs::write(path, text).expect("write sentinel.conf");
}

/// A sidecache config for the L2 tests: the stand-in's contractor bundles cached 5 minutes
/// (tagged `contractor:{id}`), L1 of `l1_max_bytes` (TOML value; `0` disables it), and the
/// `[cache.l2]` settings `l2` (mode and where) with short timeouts and a quick breaker.
pub fn l2_config(l1_max_bytes: &str, l2: &str) -> String {
    config_opening().then(&format!(
        r#"
[[routes]]
name = "contractor_bundle"
match = "GET /api/contractors/:id/bundle"
ttl = "5m"
tags = ["contractor:{{id}}"]

[cache]
key_host = false

[cache.l1]
max_bytes = {l1_max_bytes}

[cache.l2]
{l2}
timeout = "300ms"
write_timeout = "1s"
breaker_failures = 3
breaker_cooldown = "300ms"
"#
    ))
}

/// `["a", "b"]` as a TOML array of strings.
pub fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `/api/contractors/{id}/bundle`.
pub fn bundle(id: u64) -> String {
    format!("/api/contractors/{id}/bundle")
}
