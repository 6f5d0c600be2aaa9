//! Helpers shared by the integration tests: a real `redis-server` on a free port, the
//! stand-in backend, a tiny HTTP client, a harness that runs the real `sidecache` binary, a
//! TCP delay proxy, and helpers that drive the storage directly.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod backend;
pub mod delay_proxy;
pub mod http;
pub mod redis;
pub mod scripted;
pub mod sidecache;
pub mod storage;
