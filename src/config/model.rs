//! The typed, validated configuration: what every other module reads.
//!
//! A [`Config`] only exists after [`crate::config::load`] parsed and validated a file, so the
//! values here are already checked and compiled: upstream references are indices, patterns,
//! templates, methods and header names are parsed, durations are positive where they must be.
//! Building the router from a `Config` cannot fail. Nothing here knows about pingora.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::pattern::{Pattern, Template};

/// The targeted field (RFC 9213) sidecache reads its own directives from in origin mode;
/// never sent to clients.
pub const SIDECACHE_CACHE_CONTROL: HeaderName = HeaderName::from_static("sidecache-cache-control");

/// The whole validated configuration of one sidecache process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub proxy: ProxyConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub rewrites: Vec<RewriteConfig>,
    pub routes: Vec<RouteConfig>,
    pub cache: CacheConfig,
    pub warm: WarmConfig,
    /// The file this config came from, if any (used by reload and the file watcher).
    pub source: Option<PathBuf>,
    /// Where each key was read from, for messages about values that are only compared after
    /// validation (a reload's restart-only fields).
    pub lines: KeyLines,
}

/// The line each key path of a config file was read from (`cache.l2.url` -> 42).
///
/// Like the spans of a parsed syntax tree, lines are not part of what a config means: two
/// `KeyLines` always compare equal, so configs read from differently laid-out files do too.
#[derive(Debug, Clone, Default)]
pub struct KeyLines(pub(crate) std::collections::BTreeMap<String, usize>);

impl KeyLines {
    /// The line `path` was read from, if it was in the file.
    pub fn get(&self, path: &str) -> Option<usize> {
        self.0.get(path).copied()
    }
}

impl PartialEq for KeyLines {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Config {
    /// The name of upstream `index` (an index validation produced, so always present).
    pub fn upstream_name(&self, index: usize) -> &str {
        self.upstreams.get(index).map_or("", |u| u.name.as_str())
    }
}

/// `[server]`: listeners and process-level settings. Changing these needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Data-plane listen address. Default `0.0.0.0:8080`; env `SIDECACHE_LISTEN`.
    pub listen: SocketAddr,
    /// Admin listener (metrics, health, purge). Default `127.0.0.1:9091`; env `SIDECACHE_ADMIN_LISTEN`.
    pub admin_listen: SocketAddr,
    /// Worker threads of the proxy service. Default: number of CPUs.
    pub threads: usize,
    /// Share work between threads (tokio's work-stealing scheduler). Default `false`: each
    /// thread serves its own connections in arrival order, which keeps the tail latency fair
    /// at thousands of connections (docs/performance.md, issue 12).
    pub work_stealing: bool,
    /// How long SIGTERM waits for in-flight requests. Default `10s`.
    pub grace_period: Duration,
    /// One log line per proxied request. Default `false`.
    pub access_log: bool,
    /// Largest accepted request body. Default `64MiB`; larger gets 413.
    pub max_request_body_bytes: u64,
    /// Bearer token for `/admin/*` (env `SIDECACHE_ADMIN_TOKEN` only, never in the file).
    pub admin_token: Option<Secret>,
    /// Reload when the config file changes on disk. Default `false`.
    pub watch: bool,
    /// Peers whose `X-Forwarded-For`, `-Host`, `-Proto` and `Forwarded` are believed.
    /// Default: none (not even loopback); from every other peer sidecache sets them itself.
    pub trusted_proxies: Vec<Cidr>,
    /// Accept (and forward, never cache) bodies on GET and HEAD. Default `false`: such
    /// requests are refused with 400 (bodies on every other method are always forwarded).
    pub allow_body_on_safe_methods: bool,
    /// An upgraded connection (a WebSocket) is closed when the origin has sent nothing for
    /// this long (nginx's `proxy_read_timeout` on an upgraded connection); the client's
    /// silence alone never closes it. Default `60s`.
    pub tunnel_idle_timeout: Duration,
    /// Limits of each downstream connection and request head.
    pub limits: ConnectionLimits,
}

/// How much one client may hold: header size and count, deadlines, connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// Largest request head (request line and headers). Default `32KiB`; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request. Default `100`; more gets 431.
    pub max_headers: usize,
    /// The whole request head must arrive within this, counted from the connection's accept
    /// (first request) or from its first byte (later requests). Default `10s`; then the
    /// connection is closed.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request. Default `60s`.
    pub keepalive_timeout: Duration,
    /// Requests served on one connection before it is closed (`Connection: close` on the
    /// last). Default `1000`.
    pub max_requests_per_connection: u32,
    /// Open downstream connections at most; past it a new connection gets 503 and is closed.
    /// Default `16384`.
    pub max_connections: usize,
    /// Deadline of reading an admin request body (a purge). Default `10s`.
    pub admin_body_timeout: Duration,
    /// Each write to a client must finish within this (nginx's `send_timeout`), or, for a
    /// large write, within its length at `min_send_rate` if that is longer; else the request
    /// fails and its connection and upstream connection are closed. Default `60s`.
    pub send_timeout: Duration,
    /// The slowest a client may read a large write, in bytes per second (HTTP/1; HTTP/2
    /// streams get `send_timeout` for each flow-control step). `None` (`"off"`): only
    /// `send_timeout`. Default `16KiB` per second.
    pub min_send_rate: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_header_bytes: 32 << 10,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_requests_per_connection: 1000,
            max_connections: 16384,
            admin_body_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            min_send_rate: Some(16 << 10),
        }
    }
}

/// An IP network such as `10.0.0.0/8` or `::1/128` (a bare address is a single host).
///
/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is stored as the IPv4 network it
/// names (`10.0.0.0/8`), so the prefix always fits the address family it is applied to: a
/// peer's address is compared in its canonical form too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    /// At most 32 for an IPv4 network, 128 for IPv6 (an invariant `parse` keeps).
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix` or a bare address. An IPv4-mapped IPv6 address is taken as the
    /// IPv4 address it maps, with its prefix less 96 (a mapped prefix under 96 spans more
    /// than IPv4 and is refused).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        use std::net::IpAddr;
        let bad = || {
            format!(
                "invalid CIDR {s:?}: expected e.g. \"10.0.0.0/8\", \"::1/128\" or \"127.0.0.1\""
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let parsed: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if parsed.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        let mapped = match parsed {
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            IpAddr::V4(_) => None,
        };
        match mapped {
            Some(v4) => {
                let prefix = prefix.checked_sub(96).ok_or_else(|| {
                    format!(
                        "invalid CIDR {s:?}: an IPv4-mapped network needs a prefix of at least \
                         96 (write the IPv4 network, e.g. \"{v4}/8\")"
                    )
                })?;
                Ok(Cidr {
                    network: IpAddr::V4(v4),
                    prefix,
                })
            }
            None => Ok(Cidr {
                network: parsed,
                prefix,
            }),
        }
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        if width != addr_width {
            return false;
        }
        // A prefix wider than the family would be a broken invariant: match nothing rather
        // than everything.
        let Some(host_bits) = width.checked_sub(u32::from(self.prefix)) else {
            return false;
        };
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0)
            & if width == 32 {
                u128::from(u32::MAX)
            } else {
                u128::MAX
            };
        net & mask == addr & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `[proxy]`: what happens to requests that no rewrite matches.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Upstream (index into [`Config::upstreams`]) for unmatched requests, path unchanged.
    /// `None`: unmatched requests get a 404 JSON.
    pub default_upstream: Option<usize>,
}

/// `[[upstreams]]`: one named origin.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name, used in rewrites, metrics labels and error bodies.
    pub name: String,
    /// `host:port` (env `SIDECACHE_UPSTREAM_<NAME>` overrides; NAME upper-cased, `-` as `_`).
    pub address: String,
    /// TCP connect timeout. Default `1s`.
    pub connect_timeout: Duration,
    /// Time to wait for each read from the upstream (headers or body chunk). Default `60s`
    /// (nginx's `proxy_read_timeout`); a route's `timeout` overrides it.
    pub read_timeout: Duration,
    /// Time to wait for each write to the upstream. Default `30s`.
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection stays pooled. Default `60s`.
    pub idle_timeout: Duration,
}

/// `[[rewrites]]`: Next.js-style `source` -> `destination` rule. Ordered; first match wins.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteConfig {
    /// Path pattern, e.g. `/api/:path*`.
    pub source: Pattern,
    /// The upstream (index into [`Config::upstreams`]).
    pub upstream: usize,
    /// Destination path template, e.g. `/api/:path*` (uses only the source's params); `None`
    /// keeps the path as it is.
    pub path: Option<Pattern>,
    /// Remove this literal prefix from the path before forwarding (after templating).
    pub strip_prefix: Option<String>,
    /// Prepend this literal prefix to the path before forwarding (after stripping).
    pub add_prefix: Option<String>,
}

/// `[[routes]]`: a cache policy for the requests that match it. Ordered; first match wins.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Metric label and log name. Unique; `[a-z0-9_]+`; not `default` or `health`.
    pub name: String,
    /// Methods this route matches. A route listing GET also matches HEAD.
    pub methods: Vec<Method>,
    /// Path pattern (same syntax as rewrite sources), matched against the request's path as the
    /// client sent it (before rewriting).
    pub pattern: Pattern,
    /// `None` for `cache = false`: matching requests bypass the cache.
    pub cache: Option<RouteCacheConfig>,
    /// How long the upstream may take to answer (each read of its response) for this
    /// route's requests, instead of its upstream's `read_timeout`: long polls. Default none.
    pub timeout: Option<Duration>,
}

/// The caching half of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCacheConfig {
    /// Default `Override` when `ttl` is set, `Origin` otherwise.
    pub mode: CacheMode,
    /// Freshness in override mode (required there); ignored in origin mode.
    pub ttl: Option<Ttl>,
    /// Upper bound on any entry's fresh lifetime for this route (required bound for
    /// `until-invalidated`, default `24h` there).
    pub max_ttl: Option<Duration>,
    /// Serve stale while one request refreshes. Default `0s`.
    pub stale_while_revalidate: Duration,
    /// Serve stale when the origin errors. Default `0s`.
    pub stale_if_error: Duration,
    /// What varies an entry besides the path.
    pub key: KeyConfig,
    /// Tag templates like `contractor:{id}`, filled from the path's named params (every name
    /// is one the route's pattern captures).
    pub tags: Vec<Template>,
    /// Statuses that may be stored. Default `[200, 203, 204, 301, 404]`.
    pub statuses: Vec<u16>,
    /// TTL for 404 in override mode. Default `30s` (capped by `ttl`).
    pub negative_ttl: Duration,
    /// Writes that purge this route's entries with the same params,
    /// e.g. `POST /api/concierge/sessions/:id/end`.
    pub invalidate_on: Vec<MethodPattern>,
    /// Honour the client's request `Cache-Control` (and `Pragma: no-cache`) directives on
    /// this route; `None`: as `[cache] honor_request_directives` says.
    pub honor_request_directives: Option<bool>,
    /// With `key.query`, also send the query parameters the key leaves out to the upstream.
    /// Default `false`: the upstream receives only the keyed parameters, so nothing the key
    /// ignores can change the stored response.
    pub forward_unkeyed_query: bool,
}

impl RouteCacheConfig {
    /// Statuses stored when a route lists none, and for unmatched (origin-mode) requests.
    pub const DEFAULT_STATUSES: [u16; 5] = [200, 203, 204, 301, 404];
}

/// A `"GET,HEAD /path/:id"` style matcher, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodPattern {
    pub methods: Vec<Method>,
    pub pattern: Pattern,
}

impl MethodPattern {
    /// The matcher as it is written in the config (`"GET,HEAD /path/:id"`).
    pub fn to_config_string(&self) -> String {
        matcher_string(&self.methods, &self.pattern)
    }
}

/// Methods and a pattern as a config writes them: `"GET,HEAD /path/:id"`.
pub fn matcher_string(methods: &[Method], pattern: &Pattern) -> String {
    let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
    format!("{} {pattern}", methods.join(","))
}

/// How a route decides freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The route's TTL decides freshness even without origin cache headers.
    Override,
    /// RFC 9111 shared-cache semantics from the origin's headers.
    Origin,
}

impl CacheMode {
    /// Every mode, in the order the config's error messages list them.
    pub const ALL: [CacheMode; 2] = [Self::Override, Self::Origin];

    /// The config value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Override => "override",
            Self::Origin => "origin",
        }
    }

    /// The mode a config value names.
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.label() == s)
    }
}

/// Route freshness lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Fixed(Duration),
    /// Fresh until purged (bounded by `max_ttl`).
    UntilInvalidated,
}

/// `key = { query = [...], headers = [...] }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyConfig {
    /// `None`: the whole query string is part of the key. `Some(list)`: only these params, sorted.
    pub query: Option<Vec<String>>,
    /// Request headers whose values are part of the key. Naming `authorization` or `cookie`
    /// here is what allows caching requests that carry them (values hashed).
    pub headers: Vec<HeaderName>,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// For requests matching no route: `Origin` (default) or `None` for `"off"`.
    pub default_mode: Option<CacheMode>,
    /// Key entries by scheme and host (lower-cased, default port dropped) too. Default
    /// `true`; `false` only for a sidecar that serves one host (then any Host shares entries).
    pub key_host: bool,
    /// Targeted Cache-Control fields (RFC 9213) honoured in origin mode, first present and
    /// valid one wins over `Cache-Control`. Default `["Sidecache-Cache-Control",
    /// "CDN-Cache-Control"]`; `Sidecache-Cache-Control` never reaches clients.
    pub targeted_cache_control: Vec<HeaderName>,
    /// Honour request `Cache-Control` directives (`max-age`, `min-fresh`, `max-stale`,
    /// `no-cache`, `no-store`, `only-if-cached`, and `Pragma: no-cache`) for requests no route
    /// matches, and by default on routes. Default `true`.
    pub honor_request_directives: bool,
    /// How long a request waits for another's in-flight fetch of the same key. Default `5s`.
    pub lock_timeout: Duration,
    /// How long a soft-purged entry may still be served stale, counted from the purge, while
    /// one background fetch refreshes it. Default `60s`.
    pub soft_purge_grace: Duration,
    /// The response header whose space- or comma-separated keys tag the stored entry beside
    /// the route's `tags` (`Surrogate-Key`, `Cache-Tag`, `xkey`), and which never reaches a
    /// client. `None` (the default): off.
    pub surrogate_key_header: Option<HeaderName>,
    pub l1: L1Config,
    /// `None`: no Redis, L1 only.
    pub l2: Option<L2Config>,
}

/// `[cache.l1]`: the in-process moka tier.
#[derive(Debug, Clone, PartialEq)]
pub struct L1Config {
    /// Byte budget (headers + body). Default `256MiB`.
    pub max_bytes: u64,
    /// Larger objects stream through uncached. Default `8MiB`.
    pub max_object_bytes: u64,
}

/// `[cache.l2]`: the shared Redis tier.
#[derive(Debug, Clone, PartialEq)]
pub struct L2Config {
    /// Which Redis deployment the tier talks to. Default standalone.
    pub mode: L2Mode,
    /// `redis://[:password@]host:port[/db]`; env `SIDECACHE_REDIS_URL`. Redacted when shown.
    /// Standalone: the server. Sentinel: optional, the master's credentials and db (its host
    /// is not used). Cluster: unused.
    pub url: Secret,
    /// Cluster: seed node URLs (credentials and TLS in them); env `SIDECACHE_REDIS_NODES`
    /// (comma separated). Redacted when shown.
    pub nodes: Vec<Secret>,
    /// Sentinel: the sentinels' URLs; env `SIDECACHE_REDIS_SENTINELS` (comma separated).
    /// Redacted when shown.
    pub sentinels: Vec<Secret>,
    /// Sentinel: the monitored master's name (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// On an L1+L2 miss, take a Redis lock on the key before going to the origin, so a
    /// fleet fetches each key once; other instances wait up to `cache.lock_timeout` for the
    /// entry. Default `false`. Live.
    pub fill_lock: bool,
    /// Bodies longer than this many bytes are stored in Redis zstd-compressed; `None`
    /// (`"off"`): never. Default 4 KiB. Live.
    pub compress_above: Option<u64>,
    /// Key prefix; the format version is appended by the store. Default `sidecache:`.
    pub prefix: String,
    /// Timeout of each Redis read. Default `50ms`.
    pub timeout: Duration,
    /// Timeout of each background Redis write. Default `1s`.
    pub write_timeout: Duration,
    /// Consecutive failures that open the breaker. Default `3`.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe. Default `5s`.
    pub breaker_cooldown: Duration,
    /// How often each instance reads the log of purges other instances finished in Redis,
    /// and applies to its L1 those whose broadcast it never received: the bound on how long
    /// another instance may serve what a purge removed when the broadcast is lost. Default
    /// `1s`. Live.
    pub purge_poll: Duration,
    /// Purges whose Redis part waits (Redis slow or unreachable) kept at most, coalesced per
    /// target and retried until they land. When full, writes to cacheable targets are
    /// refused (503) before they reach the origin. Default 65,536. Live.
    pub purge_backlog: usize,
    /// Pub/sub channel for purges across instances. Default `sidecache:purge`.
    pub channel: String,
    /// Shared secret that signs (HMAC-SHA256) every purge broadcast; received messages
    /// without a valid signature are dropped. Default none (unsigned). File or env
    /// `SIDECACHE_CHANNEL_SECRET`; redacted when shown.
    pub channel_secret: Option<Secret>,
}

/// `cache.l2.mode`: the kind of Redis deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Mode {
    /// One server (or a managed primary endpoint) at `url`.
    Standalone,
    /// Redis Cluster (or a Valkey cluster) found through `nodes`.
    Cluster,
    /// The master `master_name` as the `sentinels` report it, followed across failovers.
    Sentinel,
}

impl L2Mode {
    /// Every mode, in the order the config's error messages list them.
    pub const ALL: [L2Mode; 3] = [Self::Standalone, Self::Cluster, Self::Sentinel];

    /// The mode a config value names.
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.label() == s)
    }

    /// The config value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

/// `[warm]`: cache warming.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmConfig {
    /// Warm in the background at start-up. Default `false`.
    pub on_start: bool,
    /// Re-run the warm list this often (an interval, at least 1 s). Default: never.
    pub every: Option<Duration>,
    /// Each scheduled run starts up to this much later, at random, so a fleet does not warm
    /// in step. At most `every`. Default: a tenth of `every`.
    pub jitter: Duration,
    /// Parallel warming requests. Default `4`.
    pub concurrency: usize,
    /// Max warming requests per second. Default `50`.
    pub rate_per_second: u32,
    /// Readiness waits for warming at most this long. Default `30s`.
    pub max_ready_delay: Duration,
    /// The `Host` warming requests send (`host[:port]`). With `[cache] key_host = true` the
    /// key holds the host, so set it to the host clients use. Default: the address warmed.
    pub host: Option<String>,
    /// Plain paths to warm.
    pub urls: Vec<String>,
    /// Templated paths with ids.
    pub templates: Vec<WarmTemplate>,
}

/// `[[warm.templates]]`: `template = "/api/contractors/{id}/bundle"` x ids.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmTemplate {
    /// A path with `{id}` (and no other name), e.g. `/api/contractors/{id}/bundle`.
    pub template: Template,
    pub ids: Vec<String>,
    /// One id per line, `#` comments; resolved relative to the config file.
    pub ids_file: Option<PathBuf>,
}

/// A string that never prints itself (Debug and Display show `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
