//! Purges across instances: every purge is broadcast on the Redis pub/sub channel
//! `cache.l2.channel` (default `sidecache:purge`) and every other instance drops the entries
//! from its own L1.
//!
//! **Publishing.** [`TieredCache`]'s `purge_url/purge_prefix/purge_tag` (admin API,
//! invalidate-on-write, RFC 9111 unsafe-method invalidation) delete from L2 once, purge the
//! local L1, then `PUBLISH` a [`PurgeMessage`] (`PurgeReport::broadcast` says whether that worked).
//! While Redis is unreachable purges still reach the local L1 (and L2 as soon as it is back);
//! only the broadcast is lost, which the gap rule below covers on the other instances.
//!
//! **Message.** Small JSON: `{"v":1,"from":"<instance id>","kind":"url|prefix|tag","target":"..."}`.
//! A message whose `from` is this instance is skipped (the originator already purged L1 and L2).
//! Remote messages purge **L1 only** and count as `sidecache_purges_total{kind="remote"}`.
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

use super::TieredCache;
use crate::telemetry::metrics::metrics;

/// Format version of [`PurgeMessage`] this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// First reconnect delay of the subscriber.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Largest reconnect delay of the subscriber.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Bound on connecting and on waiting for the `SUBSCRIBE` confirmation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a purge targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeKind {
    /// Every variant of exactly this path+query.
    Url,
    /// Every entry whose url starts with this.
    Prefix,
    /// Every entry carrying this tag.
    Tag,
}

impl PurgeKind {
    /// The `kind` label / JSON value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Prefix => "prefix",
            Self::Tag => "tag",
        }
    }
}

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
pub enum Link {
    /// No attempt has finished yet.
    Starting,
    /// Subscribed.
    Up,
    /// Not subscribed (after a loss or failed attempts).
    Down,
}

/// Applies [`Event`]s to a cache: the state machine of the gap rule.
pub struct Subscriber {
    cache: &'static TieredCache,
    channel: String,
    link: Link,
}

impl Subscriber {
    /// A subscriber for `cache` on `channel` that has not connected yet.
    pub fn new(cache: &'static TieredCache, channel: &str) -> Self {
        Subscriber {
            cache,
            channel: channel.to_owned(),
            link: Link::Starting,
        }
    }

    /// The current state.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Apply one event. Returns true when it was a gap (L1 was cleared).
    pub async fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Up => {
                let gap = self.link == Link::Down;
                self.link = Link::Up;
                if gap {
                    self.cache.clear_l1();
                    metrics().pubsub_gaps.inc();
                    tracing::warn!(channel = %self.channel,
                        "purge subscription re-established after a gap; L1 cleared");
                } else {
                    tracing::info!(channel = %self.channel, "purge subscription established");
                }
                gap
            }
            Event::Down(error) => {
                if self.link != Link::Down {
                    tracing::warn!(channel = %self.channel, error = %error,
                        "purge subscription down; purges from other instances are missed until it is back (then L1 is cleared)");
                } else {
                    tracing::debug!(channel = %self.channel, error = %error, "purge subscription still down");
                }
                self.link = Link::Down;
                false
            }
            Event::Message(payload) => {
                match classify(&payload, self.cache.instance_id()) {
                    Received::Own => {}
                    Received::Remote(m) => {
                        let n = self.cache.purge_l1_remote(m.kind, &m.target).await;
                        tracing::debug!(kind = m.kind.label(), target = %m.target, from = %m.from,
                            removed = n, "remote purge applied to L1");
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

/// Run the purge subscriber for `cache` until `shutdown` flips (returns at once without L2).
/// Spawns the blocking reader thread and applies its events in this task.
pub async fn run(cache: &'static TieredCache, mut shutdown: watch::Receiver<bool>) {
    let Some(l2) = cache.l2() else { return };
    let Some(client) = l2.client().cloned() else {
        return;
    };
    let channel = cache.channel().to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let thread_channel = channel.clone();
    let spawned = std::thread::Builder::new()
        .name("sidecache-pubsub".into())
        .spawn(move || reader_loop(&client, &thread_channel, &tx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the purge subscriber thread; purges are not received from other instances");
        return;
    }
    let mut sub = Subscriber::new(cache, &channel);
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
fn reader_loop(client: &redis::Client, channel: &str, tx: &mpsc::UnboundedSender<Event>) {
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
                        if tx.send(Event::Up).is_err() {
                            return;
                        }
                        loop {
                            match ps.get_message() {
                                Ok(msg) => {
                                    let payload = msg.get_payload_bytes().to_vec();
                                    if tx.send(Event::Message(payload)).is_err() {
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
        if tx.send(Event::Down(err)).is_err() {
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
