//! Helpers shared by the integration tests: a real `redis-server` on a free port (and a real
//! Redis Cluster and Sentinel set-up), the
//! stand-in backend, a recording upstream, a scripted origin, a tiny HTTP client, raw TCP,
//! headless Chromium,
//! background traffic, a TCP delay proxy, a WebSocket echo origin, helpers that drive the
//! storage directly, a harness that runs the real `sidecache` binary, and an origin that
//! versions every resource.

pub mod backend;
pub mod browser;
pub mod delay_proxy;
pub mod http;
pub mod raw;
pub mod recorder;
pub mod redis;
pub mod redis_cluster;
pub mod scripted;
pub mod sidecache;
pub mod storage;
pub mod traffic;
pub mod versioned_origin;
pub mod websocket;
