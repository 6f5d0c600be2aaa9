//! How the L2 store reaches Redis for each `cache.l2.mode`, and the one connection type its
//! operations run on.
//!
//! - **standalone**: a `ConnectionManager` (multiplexed, reconnects itself) to `url`.
//! - **cluster**: redis-rs's async `ClusterConnection` built from the `nodes` seeds. It learns
//!   the slot map, follows `MOVED` (refreshing the map) and `ASK` (one `ASKING` hop), and
//!   reconnects to nodes on its own.
//! - **sentinel**: the sentinels are asked for `master_name`'s address and a
//!   `ConnectionManager` is opened to it. After a failed operation the connection is dropped
//!   ([`Topology::follows_failover`]), so the next attempt asks the sentinels again and lands
//!   on the promoted master instead of reconnecting to the old address forever.
//!
//! The crate's own response timeouts are off: every operation already runs under
//! sidecache's per-call timeout (`cache.l2.timeout` / `write_timeout`), and a second,
//! independent timer inside the connection would only race it and report the same stall
//! twice with different errors. Connecting is bounded (the caller's timeout).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{L2Config, L2Mode};

/// One L2 connection, whatever the mode; cheap to clone (both kinds are multiplexed).
#[derive(Clone)]
pub enum L2Connection {
    /// Standalone or the Sentinel's current master.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for L2Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the Redis tier is, per `cache.l2.mode` (parsed, no I/O).
pub enum Topology {
    Standalone(redis::Client),
    Cluster {
        client: ClusterClient,
        /// The seeds as plain clients, for the purge subscriber.
        seeds: Vec<redis::Client>,
    },
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        /// A second client for the blocking subscriber thread.
        subscriber: Arc<Mutex<SentinelClient>>,
    },
}

fn sentinel_client(cfg: &L2Config) -> RedisResult<SentinelClient> {
    let mut node = SentinelNodeConnectionInfo::default();
    // The master is reached over TLS when `url` says `rediss://` (without a url: when the
    // sentinels do), as a managed Sentinel set serves both over TLS.
    let tls_from = if cfg.url.expose().is_empty() {
        cfg.sentinels.first().map(|s| s.expose())
    } else {
        let info = cfg.url.expose().into_connection_info()?;
        node = node.set_redis_connection_info(info.redis_settings().clone());
        Some(cfg.url.expose())
    };
    if let Some(url) = tls_from {
        if let redis::ConnectionAddr::TcpTls { insecure, .. } = url.into_connection_info()?.addr() {
            node = node.set_tls_mode(if *insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            });
        }
    }
    let sentinels: Vec<&str> = cfg.sentinels.iter().map(|s| s.expose()).collect();
    SentinelClient::build(
        sentinels,
        cfg.master_name.clone(),
        Some(node),
        SentinelServerType::Master,
    )
}

impl Topology {
    /// Parse what `cfg` names (URLs, seeds, sentinels); no I/O.
    pub fn new(cfg: &L2Config) -> RedisResult<Self> {
        Ok(match cfg.mode {
            L2Mode::Standalone => Self::Standalone(redis::Client::open(cfg.url.expose())?),
            L2Mode::Cluster => {
                let nodes: Vec<&str> = cfg.nodes.iter().map(|s| s.expose()).collect();
                let seeds = nodes
                    .iter()
                    .map(|n| redis::Client::open(*n))
                    .collect::<RedisResult<Vec<_>>>()?;
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(cfg.write_timeout.max(Duration::from_millis(100)))
                    .build()?;
                Self::Cluster { client, seeds }
            }
            L2Mode::Sentinel => Self::Sentinel {
                client: tokio::sync::Mutex::new(sentinel_client(cfg)?),
                subscriber: Arc::new(Mutex::new(sentinel_client(cfg)?)),
            },
        })
    }

    /// Keys are spread over hash-tagged partitions (see `l2`'s key layout).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// Whether a failed operation drops the connection so the next one finds the master
    /// again (Sentinel); the other modes reconnect by themselves.
    pub fn follows_failover(&self) -> bool {
        matches!(self, Self::Sentinel { .. })
    }

    /// Open one connection, under `timeout`.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<L2Connection> {
        let single = |client: redis::Client| async move {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(None)
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            client
                .get_connection_manager_with_config(cfg)
                .await
                .map(L2Connection::Single)
        };
        let connecting = async {
            match self {
                Self::Standalone(client) => single(client.clone()).await,
                Self::Cluster { client, .. } => client
                    .get_async_connection()
                    .await
                    .map(L2Connection::Cluster),
                Self::Sentinel { client, .. } => {
                    let master = client.lock().await.async_get_client().await?;
                    single(master).await
                }
            }
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "redis connect timed out",
            ))),
        }
    }

    /// Where the purge subscriber connects.
    pub fn subscriber(&self) -> SubscribeTarget {
        match self {
            Self::Standalone(client) => SubscribeTarget::One(Box::new(client.clone())),
            Self::Cluster { seeds, .. } => SubscribeTarget::Seeds(seeds.clone()),
            Self::Sentinel { subscriber, .. } => SubscribeTarget::Sentinel(subscriber.clone()),
        }
    }
}

/// Where the purge subscriber (a blocking thread) connects on each attempt.
///
/// On a cluster a classic `PUBLISH` is forwarded over the cluster bus to every node, so
/// subscribing to any one node receives every purge; each reconnect moves on to the next
/// seed, so a dead node is left behind. Under Sentinel each attempt asks the sentinels for
/// the master, so after a failover the subscriber lands on the new master.
#[derive(Clone)]
pub enum SubscribeTarget {
    /// Boxed: a TLS-capable client is ten times the size of the other variants.
    One(Box<redis::Client>),
    Seeds(Vec<redis::Client>),
    Sentinel(Arc<Mutex<SentinelClient>>),
}

impl SubscribeTarget {
    /// The client to use on attempt number `attempt` (0, 1, ...).
    pub fn client(&self, attempt: u64) -> RedisResult<redis::Client> {
        match self {
            Self::One(c) => Ok(c.as_ref().clone()),
            Self::Seeds(seeds) => {
                let n = seeds.len().max(1) as u64;
                seeds.get((attempt % n) as usize).cloned().ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no cluster seeds",
                    ))
                })
            }
            Self::Sentinel(s) => {
                let mut s = crate::sync::lock(s);
                s.get_client()
            }
        }
    }
}
