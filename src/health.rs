//! Endpoints sidecache answers itself, never proxied: liveness (`/health`, `/api/health`) and
//! readiness (`/ready`, `/api/ready`). The legacy stack only proxied `/api/*`, so its `/health`
//! 404'd behind the front end; here both spellings are always answered, on the data plane and
//! on the admin listener.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::cache::storage::L2Store;
use crate::live::{Live, WarmState};

/// A locally answered endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEndpoint {
    Health,
    Ready,
}

impl LocalEndpoint {
    /// Which endpoint, if any, this path names (for GET and HEAD).
    pub fn from_path(path: &str) -> Option<LocalEndpoint> {
        match path {
            "/health" | "/api/health" => Some(Self::Health),
            "/ready" | "/api/ready" => Some(Self::Ready),
            _ => None,
        }
    }
}

/// A finished local response: status and JSON body.
pub struct LocalResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Answer a local endpoint.
pub async fn answer(endpoint: LocalEndpoint, live: &Live) -> LocalResponse {
    match endpoint {
        LocalEndpoint::Health => health(live),
        LocalEndpoint::Ready => ready(live).await,
    }
}

/// Liveness: the process is up and serving.
pub fn health(live: &Live) -> LocalResponse {
    let body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": live.uptime_secs(),
    });
    LocalResponse {
        status: 200,
        body: Bytes::from(body.to_string()),
    }
}

/// Readiness: the default upstream (or, without one, every upstream) accepts a TCP connection
/// within its connect timeout, and start-up warming is not holding readiness (it holds it at
/// most `warm.max_ready_delay`; `"warming"` stays true while it continues in the background).
/// Redis is reported (`l2`: up, down, refused for a server older than sidecache supports, or
/// disabled; `l2_server`: its name and version once a connection found them) but never makes
/// sidecache unready: without it requests still work from L1 and the origin.
pub async fn ready(live: &Live) -> LocalResponse {
    let snapshot = live.snapshot();
    let router = &snapshot.router;
    let checked = router
        .upstreams()
        .iter()
        .filter(|u| router.default_upstream().is_none_or(|d| d == u.index))
        .map(|u| &u.config);
    let mut upstreams = serde_json::Map::new();
    let mut down = Vec::new();
    for u in checked {
        let up = tcp_connects(&u.address, u.connect_timeout).await;
        upstreams.insert(u.name.clone(), json!(if up { "up" } else { "down" }));
        if !up {
            down.push(u.name.clone());
        }
    }
    let server = live.cache.l2().and_then(L2Store::server);
    let l2 = match (live.cache.l2_healthy(), server) {
        (None, _) => "disabled",
        (Some(_), Some(s)) if !s.supported() => "refused",
        (Some(true), _) => "up",
        (Some(false), _) => "down",
    };
    let warm = live.warm_state();
    let ready = down.is_empty() && warm != WarmState::Holding;
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "upstreams": upstreams,
        "down": down,
        "l2": l2,
        "l2_server": server.map(|s| s.to_string()),
        "warming": warm != WarmState::Idle,
    });
    LocalResponse {
        status: if ready { 200 } else { 503 },
        body: Bytes::from(body.to_string()),
    }
}

/// Whether `address` accepts a TCP connection within `timeout`.
pub(crate) async fn tcp_connects(address: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}
