//! The fleet under test: the versioned origin (one listener per instance), Redis (one
//! server behind one delay proxy per instance, or a 3-master cluster) and the `sidecache`
//! instances, all real processes; and the faults applied to it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidecache::sync::lock;

use crate::support::delay_proxy::{DelayProxy, Direction};
use crate::support::redis::RedisServer;
use crate::support::redis_cluster::{toml_list, RedisCluster};
use crate::support::sidecache::{config_opening, Sidecache, SidecacheOptions};
use crate::support::versioned_origin::{OriginOptions, VersionedOrigin};

use super::model;
use super::ops::{Fault, Held, Shape, CLUSTER_NODES};

/// How the origin answers: slow enough GETs that misses overlap (the stampede window).
pub const ORIGIN: OriginOptions = OriginOptions {
    get_latency: (Duration::from_millis(20), Duration::from_millis(300)),
    write_latency: (Duration::from_millis(0), Duration::from_millis(30)),
    max_age_secs: model::PAGE_MAX_AGE_SECS,
};

/// `cache.l2.purge_poll` of every instance: another instance that missed a purge's
/// broadcast drops what it removed at the latest this long after the purge reached Redis,
/// so B (the bound of invariant 1) can be a few times this.
pub const PURGE_POLL: &str = "200ms";

/// Extra `[cache.l2]` lines for every instance, from `SIDECACHE_TORTURE_L2` (e.g.
/// `purge_backlog = 64`), each `;`-separated part on its own line.
pub fn extra_l2_lines() -> String {
    std::env::var("SIDECACHE_TORTURE_L2")
        .map(|v| v.split(';').map(|l| format!("{}\n", l.trim())).collect())
        .unwrap_or_default()
}

/// Where Redis is.
enum Store {
    Standalone {
        redis: Arc<Mutex<RedisServer>>,
        /// One per instance: the instance's only way to Redis.
        proxies: Vec<DelayProxy>,
    },
    Cluster(Arc<Mutex<RedisCluster>>),
}

/// The running fleet; every process stops when it drops.
pub struct Fleet {
    pub shape: Shape,
    pub origin: VersionedOrigin,
    store: Store,
    instances: Vec<Sidecache>,
    /// Each instance's `[cache.l2]` location lines (the rest of the config is shared).
    l2_lines: Vec<String>,
}

impl Fleet {
    pub async fn start(shape: Shape) -> Fleet {
        let origin = VersionedOrigin::start(shape.instances, ORIGIN).await;
        let (store, l2_lines) = if shape.cluster {
            let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(CLUSTER_NODES))
                .await
                .expect("start the cluster");
            let line = format!(
                "mode = \"cluster\"\nnodes = {}\n",
                toml_list(&cluster.urls())
            );
            (
                Store::Cluster(Arc::new(Mutex::new(cluster))),
                vec![line; shape.instances],
            )
        } else {
            let redis = tokio::task::spawn_blocking(RedisServer::start)
                .await
                .expect("start redis");
            let mut proxies = Vec::new();
            for _ in 0..shape.instances {
                proxies.push(DelayProxy::start(redis.addr()).await);
            }
            let lines = proxies
                .iter()
                .map(|p| format!("url = {:?}\n", p.redis_url()))
                .collect();
            (
                Store::Standalone {
                    redis: Arc::new(Mutex::new(redis)),
                    proxies,
                },
                lines,
            )
        };
        let mut fleet = Fleet {
            shape,
            origin,
            store,
            instances: Vec::new(),
            l2_lines,
        };
        for i in 0..shape.instances {
            let options = SidecacheOptions::new(fleet.config(i, 0))
                .backend(fleet.origin.addr(i))
                .env("RUST_LOG", rust_log())
                .env("SIDECACHE_LOG_FORMAT", "json");
            fleet.instances.push(Sidecache::start(options).await);
        }
        fleet
    }

    /// Instance `i`'s config with the `items` TTL variant `variant`.
    pub fn config(&self, i: usize, variant: usize) -> String {
        let items_ttl = model::ITEM_TTLS[variant];
        let detail_ttl = model::DETAIL_TTL.as_secs();
        config_opening().then(&format!(
            r#"
[[routes]]
name = "items"
match = "GET /api/items/:id"
ttl = "{items_ttl}"
tags = ["item:{{id}}"]

[[routes]]
name = "item_detail"
match = "GET /api/items/:id/detail"
ttl = "{detail_ttl}s"
tags = ["item:{{id}}"]
invalidate_on = ["PUT /api/items/:id", "PATCH /api/items/:id", "DELETE /api/items/:id"]

[[routes]]
name = "sessions"
match = "GET /api/sessions/:id/state"
ttl = "until-invalidated"
tags = ["session:{{id}}"]
invalidate_on = ["POST /api/sessions/:id/end"]

[[routes]]
name = "pages"
match = "GET /pages/:id"
mode = "origin"
tags = ["page:{{id}}"]

[[routes]]
name = "hot"
match = "GET /hot/:id"
ttl = "until-invalidated"

[cache]
key_host = false

[cache.l1]
max_bytes = "64MiB"

[cache.l2]
{l2}prefix = "torture:"
fill_lock = true
channel_secret = "torture-test-channel-secret"
timeout = "500ms"
write_timeout = "2s"
breaker_failures = 3
breaker_cooldown = "300ms"
purge_poll = "{PURGE_POLL}"
{extra}"#,
            l2 = self.l2_lines[i],
            extra = extra_l2_lines(),
        ))
    }

    pub fn instance(&self, i: usize) -> &Sidecache {
        &self.instances[i]
    }

    /// Where instance `i` writes its log (JSON lines).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.instances[i].dir().join("stderr.log")
    }

    /// Copy the last `tail` bytes of every instance's log to `dir` (`instance-N.log`).
    pub fn keep_logs(&self, dir: &std::path::Path, tail: u64) {
        use std::io::{Read, Seek, SeekFrom};
        let _ = std::fs::create_dir_all(dir);
        for i in 0..self.instances.len() {
            let Ok(mut file) = std::fs::File::open(self.log_path(i)) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            let mut bytes = Vec::new();
            if file.seek(SeekFrom::Start(len.saturating_sub(tail))).is_ok()
                && file.read_to_end(&mut bytes).is_ok()
            {
                let _ = std::fs::write(dir.join(format!("instance-{i}.log")), bytes);
            }
        }
    }

    /// Apply `fault`, wait `hold`, heal it. Blocking parts run off the runtime.
    pub async fn fault(&self, fault: Fault, hold: Duration) {
        match (&self.store, fault) {
            (Store::Standalone { redis, .. }, Fault::RedisDown) => {
                let r = Arc::clone(redis);
                blocking(move || lock(&r).kill()).await;
                tokio::time::sleep(hold).await;
                let r = Arc::clone(redis);
                blocking(move || lock(&r).restart()).await;
            }
            (Store::Standalone { redis, .. }, Fault::RedisRestart) => {
                let r = Arc::clone(redis);
                blocking(move || lock(&r).restart()).await;
            }
            (Store::Standalone { proxies, .. }, Fault::Delay { inst, held }) => {
                let dirs: &[Direction] = match held {
                    Held::Requests => &[Direction::ToServer],
                    Held::Answers => &[Direction::ToClient],
                    Held::Both => &[Direction::ToServer, Direction::ToClient],
                };
                for d in dirs {
                    proxies[inst].delay_on(*d);
                }
                tokio::time::sleep(hold).await;
                for d in dirs {
                    proxies[inst].delay_off(*d);
                }
            }
            (Store::Standalone { proxies, .. }, Fault::Cut { inst }) => {
                proxies[inst].cut();
                tokio::time::sleep(hold).await;
                proxies[inst].heal();
            }
            (Store::Cluster(cluster), Fault::NodeDown { node }) => {
                let c = Arc::clone(cluster);
                blocking(move || lock(&c).kill(node)).await;
                tokio::time::sleep(hold).await;
                let c = Arc::clone(cluster);
                blocking(move || {
                    let mut c = lock(&c);
                    c.restart(node);
                    c.wait_ok();
                })
                .await;
            }
            (_, fault) => panic!("fault {fault:?} does not apply to this fleet"),
        }
    }
}

/// The instances' `RUST_LOG`: `SIDECACHE_TORTURE_RUST_LOG`, else what the purge check
/// needs (write purges are logged at debug).
fn rust_log() -> String {
    let wanted = std::env::var("SIDECACHE_TORTURE_RUST_LOG").unwrap_or_default();
    let base = if wanted.is_empty() { "info" } else { &wanted };
    format!("{base},sidecache::purge=debug")
}

async fn blocking(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking fault step");
}
