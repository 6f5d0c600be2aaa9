//! sidecache: a caching sidecar reverse proxy for an unchanged HTTP API.
//!
//! The module tree follows the path of a request:
//! [`config`] (what to do) -> [`routing`] (which upstream, which route policy) ->
//! [`cache`] (policy, key, tiers L1/L2) -> [`proxy`] (the pingora pipeline that ties them
//! together and talks to the upstream). Beside the data plane: [`admin`] (health, metrics,
//! purge, reload) and [`telemetry`] (logs and metrics). [`demo`] is the stand-in legacy
//! backend used by `sidecache demo`, tests and benches; [`bench`](mod@bench), [`warm`] and
//! `sidecache purge` ([`purge::command`]) are clients built on the [`client`] toolkit.
#![forbid(unsafe_code)]
// redis 1.x's cluster futures nest deeper than the default limit allows in the admin handler.
#![recursion_limit = "256"]

pub mod admin;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod health;
pub mod hex;
pub mod labels;
pub mod live;
pub mod normalize;
pub mod outcome;
pub mod pattern;
pub mod proxy;
pub mod purge;
pub mod refusal;
pub mod routing;
pub mod server;
pub mod sync;
pub mod telemetry;
pub mod warm;
