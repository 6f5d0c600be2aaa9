//! Purges across instances: every purge is broadcast on the Redis pub/sub channel
//! `cache.l2.channel` (default `sidecache:purge`) and every other instance drops the entries
//! from its own L1.
//!
//! **Publishing.** [`PurgeService::apply`] (admin API, CLI, invalidate-on-write, RFC 9111
//! unsafe-method invalidation) deletes from L2 once, purges the local L1, then `PUBLISH`es a
//! [`PurgeMessage`] (`PurgeReport::broadcast` says whether that worked).
//! While Redis is unreachable purges still reach the local L1 (and L2 as soon as it is back);
//! only the broadcast is lost, which the gap rule below covers on the other instances.
//!
//! **Message.** Small JSON: `{"v":1,"from":"<instance id>","kind":"url|prefix|tag","target":"..."}`.
//! A message whose `from` is this instance is skipped (the originator already purged L1 and L2).
//! Remote messages purge **L1 only** and count as `sidecache_purges_total{source="remote"}`.
//! Malformed messages and unknown versions are ignored and logged at debug.
//!
//! **Subscriber.** A dedicated (non-multiplexed) Redis connection in `SUBSCRIBE` mode, read by
//! a small blocking thread that never touches the cache; it forwards [`Event`]s to an async
//! task in pingora's runtime ([`run`], started as a background service) that applies them, so
//! big purges yield like any other. The thread reconnects forever with backoff (100 ms doubling
//! to 2 s, reset after a successful subscribe) and never panics. The async task logs once per
//! state change (subscribed / lost), not per failed attempt.
//!
//! **Gap rule.** An instance that was not subscribed may have missed purges, so whenever a
//! subscription is established after a period without one (the connection was lost, or the
//! first attempts at start-up failed while requests were already being served) it **clears its
//! whole L1** after the new `SUBSCRIBE` is confirmed, and counts
//! `sidecache_pubsub_gaps_total`. Entries then come back from L2 (which every purge reached or
//! will reach) or the origin. The very first subscription, made before anything was missed, is
//! not a gap.
//!
//! Limitation: a silently dead TCP connection (no FIN/RST, e.g. a network partition) is only
//! noticed when the OS gives up on it; a Redis restart or crash is noticed at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::sync::watch;

use super::{PurgeKind, PurgeRequest, PurgeService, PurgeSource};
use crate::telemetry::events::{InternalEvent, PubsubLink, PubsubLinkState};

/// Format version of [`PurgeMessage`] this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// First reconnect delay of the subscriber.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Largest reconnect delay of the subscriber.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Received messages waiting to be applied. When it is full the reader thread waits, Redis
/// buffers for it, and a client too far behind is disconnected by Redis, which is a gap: L1
/// is cleared on reconnect, so nothing is lost, only re-fetched.
const RECEIVED_QUEUE: usize = 1024;

/// Bound on connecting and on waiting for the `SUBSCRIBE` confirmation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One purge as broadcast on the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeMessage {
    /// Format version ([`MESSAGE_VERSION`]).
    pub v: u32,
    /// Instance id of the originator.
    pub from: String,
    /// What `target` is.
    pub kind: PurgeKind,
    /// The url, prefix or tag.
    pub target: String,
}

/// Why a received payload was ignored.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a purge message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported purge message version {0}")]
    Version(u32),
}

impl PurgeMessage {
    /// A version-1 message from `from`.
    pub fn new(from: &str, kind: PurgeKind, target: &str) -> Self {
        PurgeMessage {
            v: MESSAGE_VERSION,
            from: from.to_owned(),
            kind,
            target: target.to_owned(),
        }
    }

    /// The JSON text published on the channel.
    pub fn encode(&self) -> Result<String, MessageError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parse a payload received on the channel.
    pub fn decode(payload: &[u8]) -> Result<Self, MessageError> {
        let m: PurgeMessage = serde_json::from_slice(payload)?;
        if m.v != MESSAGE_VERSION {
            return Err(MessageError::Version(m.v));
        }
        Ok(m)
    }
}

/// What to do with one received payload.
#[derive(Debug)]
pub enum Received {
    /// Our own broadcast: already applied locally and in L2.
    Own,
    /// Another instance's purge: apply to L1 only.
    Remote(PurgeMessage),
    /// Not understood: ignore.
    Malformed(MessageError),
}

/// Classify a payload for the instance `own_id`.
pub fn classify(payload: &[u8], own_id: &str) -> Received {
    match PurgeMessage::decode(payload) {
        Ok(m) if m.from == own_id => Received::Own,
        Ok(m) => Received::Remote(m),
        Err(e) => Received::Malformed(e),
    }
}

/// A process-unique id: host name, pid and a random suffix (a restarted process on the same
/// host gets a new id).
pub fn new_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// What the reader thread reports to the async side.
#[derive(Debug)]
pub enum Event {
    /// `SUBSCRIBE` confirmed on a fresh connection.
    Up,
    /// Connecting/subscribing failed or the subscription was lost.
    Down(String),
    /// A message payload.
    Message(Vec<u8>),
}

/// Subscription state as seen by the async side (for the gap rule and the logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No attempt has finished yet.
    Starting,
    /// Subscribed.
    Up,
    /// Not subscribed (after a loss or failed attempts).
    Down,
}

/// Applies [`Event`]s to the purge service: the state machine of the gap rule.
pub struct Subscriber {
    service: &'static PurgeService,
    channel: String,
    link: Link,
}

impl Subscriber {
    /// A subscriber for `service` on `channel` that has not connected yet.
    pub fn new(service: &'static PurgeService, channel: &str) -> Self {
        Subscriber {
            service,
            channel: channel.to_owned(),
            link: Link::Starting,
        }
    }

    /// Apply one event. Returns true when it was a gap (L1 was cleared).
    pub async fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Up => {
                let gap = self.link == Link::Down;
                self.link = Link::Up;
                if gap {
                    self.service.cache().clear_l1();
                }
                PubsubLink {
                    channel: &self.channel,
                    state: if gap {
                        PubsubLinkState::UpAfterGap
                    } else {
                        PubsubLinkState::Up
                    },
                    error: None,
                }
                .emit();
                gap
            }
            Event::Down(error) => {
                let state = if self.link == Link::Down {
                    PubsubLinkState::StillDown
                } else {
                    PubsubLinkState::Down
                };
                self.link = Link::Down;
                PubsubLink {
                    channel: &self.channel,
                    state,
                    error: Some(&error),
                }
                .emit();
                false
            }
            Event::Message(payload) => {
                match classify(&payload, self.service.instance_id()) {
                    Received::Own => {}
                    Received::Remote(m) => {
                        let request = PurgeRequest::new(m.kind, m.target, PurgeSource::Remote);
                        self.service.apply(&request).await;
                    }
                    Received::Malformed(e) => {
                        tracing::debug!(error = %e, "ignored malformed purge message");
                    }
                }
                false
            }
        }
    }
}

/// Run the purge subscriber of `service` on `channel` until `shutdown` flips (returns at once
/// without L2). Spawns the blocking reader thread and applies its events in this task.
pub(super) async fn run(
    service: &'static PurgeService,
    channel: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(l2) = service.cache().l2() else {
        return;
    };
    let Some(client) = l2.client().cloned() else {
        return;
    };
    let channel = channel.to_owned();
    let (tx, mut rx) = mpsc::channel(RECEIVED_QUEUE);
    let thread_channel = channel.clone();
    let spawned = std::thread::Builder::new()
        .name("sidecache-pubsub".into())
        .spawn(move || reader_loop(&client, &thread_channel, &tx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the purge subscriber thread; purges are not received from other instances");
        return;
    }
    let mut sub = Subscriber::new(service, &channel);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            ev = rx.recv() => match ev {
                Some(ev) => { sub.on_event(ev).await; }
                None => return,
            },
        }
    }
}

/// The blocking side: connect, `SUBSCRIBE`, forward messages; on any failure back off and
/// start again. Returns only when the async side is gone.
fn reader_loop(client: &redis::Client, channel: &str, tx: &mpsc::Sender<Event>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let err = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Err(e) => e.to_string(),
            Ok(mut con) => {
                let mut ps = con.as_pubsub();
                let subscribed = ps
                    .set_read_timeout(Some(CONNECT_TIMEOUT))
                    .and_then(|()| ps.subscribe(channel))
                    .and_then(|()| ps.set_read_timeout(None));
                match subscribed {
                    Err(e) => e.to_string(),
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        if tx.blocking_send(Event::Up).is_err() {
                            return;
                        }
                        loop {
                            match ps.get_message() {
                                Ok(msg) => {
                                    let payload = msg.get_payload_bytes().to_vec();
                                    if tx.blocking_send(Event::Message(payload)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => break e.to_string(),
                            }
                        }
                    }
                }
            }
        };
        if tx.blocking_send(Event::Down(err)).is_err() {
            return;
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 10));
        std::thread::sleep(backoff + jitter);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip_and_shape() {
        let m = PurgeMessage::new("a-1-ff", PurgeKind::Prefix, "/api/x/");
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            text,
            r#"{"v":1,"from":"a-1-ff","kind":"prefix","target":"/api/x/"}"#
        );
        assert!(matches!(
            PurgeMessage::decode(text.as_bytes()),
            Ok(d) if d == m
        ));
    }

    #[test]
    fn own_remote_and_malformed() {
        let p = br#"{"v":1,"from":"me","kind":"tag","target":"contractor:1"}"#;
        assert!(matches!(classify(p, "me"), Received::Own));
        assert!(
            matches!(classify(p, "other"), Received::Remote(m) if m.kind == PurgeKind::Tag && m.target == "contractor:1")
        );
        for bad in [
            &b"not json"[..],
            br#"{"v":2,"from":"x","kind":"url","target":"/"}"#,
            br#"{"v":1,"from":"x","kind":"everything","target":"/"}"#,
            br#"{"v":1,"kind":"url","target":"/"}"#,
        ] {
            assert!(matches!(classify(bad, "me"), Received::Malformed(_)));
        }
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(new_instance_id(), new_instance_id());
    }
}
