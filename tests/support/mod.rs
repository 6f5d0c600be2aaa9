//! Helpers shared by the integration tests: a real `redis-server` on a free port, the
//! stand-in backend, a tiny HTTP client and a harness that runs the real `sidecache` binary.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod backend;
pub mod http;
pub mod redis;
pub mod scripted;
pub mod sidecache;
