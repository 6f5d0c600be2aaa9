//! Purges across instances: every purge is broadcast on the Redis pub/sub channel
//! `cache.l2.channel` (default `sidecache:purge`) and every other instance drops the entries
//! from its own L1.
//!
//! **Publishing.** [`PurgeService::apply`] (admin API, CLI, invalidate-on-write, RFC 9111
//! unsafe-method invalidation) purges the local L1, deletes from L2 once, logs the finished
//! purge, then `PUBLISH`es a [`PurgeMessage`] (`PurgeReport::broadcast` says whether that
//! worked). While Redis is unreachable purges still reach the local L1, and wait in the
//! backlog until Redis takes them; then they are logged and published. A lost broadcast is
//! repaired by the finished-purge log ([`super::catch_up`]), a lost subscription by the gap
//! rule below.
//!
//! **Message.** Small JSON: `{"v":2,"from":"<instance id>","kind":"url|prefix|tag",
//! "target":"...","gen":<generation>}`, where `gen` is the generation Redis gave the purge:
//! its identity. A message whose `from` is this instance is skipped (the originator already
//! purged L1 and L2). Remote messages purge **L1 only**, once per generation (whether the
//! message or the log brings it first, see [`super::applied`]), and count as
//! `sidecache_purges_total{source="remote"}`. Malformed messages and unknown versions are
//! dropped. Version 1 messages (no `gen`, from a build before it) are applied while no secret
//! is set, and dropped as `replayable` when one is.
//!
//! **Signed messages.** With `cache.l2.channel_secret` set, every message is published as the
//! lower-case hex HMAC-SHA256 of the JSON under the secret, a `.`, then the JSON
//! ([`ChannelKey`]), and a received message whose signature is missing or does not verify
//! (constant-time) is dropped: whoever can PUBLISH on the Redis cannot purge or clear
//! another instance's L1. Instances with different secrets, or one with and one without,
//! ignore each other. Without a secret, messages are plain JSON as before. Every dropped
//! message counts as `sidecache_purge_messages_dropped_total{reason}` (`malformed`,
//! `unsigned`, `bad_signature`) and is logged at debug only, so a flood cannot fill the log.
//!
//! **Replay window.** Whoever can read the channel can capture a signed message and publish it
//! again. A message is applied once per generation, and one whose generation is older than
//! [`super::applied::REPLAY_WINDOW`] (10 minutes, on Redis's clock, against the newest
//! generation this instance has seen) is dropped, so a capture cannot empty the caches again
//! later (counted as `replayed`).
//!
//! **Cluster and Sentinel.** On a Redis Cluster purges use classic `PUBLISH`/`SUBSCRIBE`, not
//! sharded `SPUBLISH`: a classic message is forwarded over the cluster bus to every node, so
//! the subscriber may sit on any node and needs no slot map, and purges are rare enough that
//! the bus fan-out costs nothing (sharded pub/sub only pays off for many busy channels). The
//! subscriber connects to one seed and moves to the next after a failure. Under Sentinel each
//! (re)connect asks the sentinels for the current master, so after a failover the subscriber
//! resubscribes there (and the gap rule below clears L1, since messages may have been lost).
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

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::sync::watch;

use super::{PurgeKind, PurgeRequest, PurgeService, PurgeSource};
use crate::cache::storage::topology::SubscribeTarget;
use crate::hex::hex;
use crate::telemetry::events::{InternalEvent, PubsubLink, PubsubLinkState, PurgeMessageDropped};
use crate::telemetry::metrics::MessageDrop;

/// Format version of [`PurgeMessage`] this build writes.
pub const MESSAGE_VERSION: u32 = 2;

/// The older format this build still reads (no `gen`).
pub const MESSAGE_VERSION_1: u32 = 1;

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
    /// The generation Redis gave the purge (absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen: Option<u64>,
    /// A soft purge (absent: hard, as every message before soft purges).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

impl PurgeMessage {
    /// The purge this received message asks for, from another instance. A soft purge is
    /// dated by its generation (Redis's clock, microseconds), never later than now.
    pub fn into_request(self) -> PurgeRequest {
        let mut request = PurgeRequest::new(self.kind, self.target, PurgeSource::Remote);
        request.origin = Some(self.from);
        if self.soft {
            let now = std::time::SystemTime::now();
            let at = self
                .gen
                .map(|g| std::time::UNIX_EPOCH + std::time::Duration::from_micros(g))
                .map_or(now, |at| at.min(now));
            request = request.soft(at);
        }
        request
    }
}

/// Why a received payload was ignored (or a message could not be signed).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a purge message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported purge message version {0}")]
    Version(u32),
    #[error("no signature, and a channel secret is configured")]
    Unsigned,
    #[error("the signature does not match the channel secret")]
    BadSignature,
    #[error("the purge was applied already, or is older than the replay window, or cannot be told apart from a replay")]
    Stale,
}

impl MessageError {
    /// How the drop is counted.
    pub fn drop_reason(&self) -> MessageDrop {
        match self {
            Self::Json(_) | Self::Version(_) => MessageDrop::Malformed,
            Self::Unsigned => MessageDrop::Unsigned,
            Self::BadSignature => MessageDrop::BadSignature,
            Self::Stale => MessageDrop::Replayed,
        }
    }
}

/// Length of the hex signature in front of a signed message.
const SIGNATURE_HEX: usize = 64;

/// Signs and checks purge messages with the shared `cache.l2.channel_secret`.
pub struct ChannelKey {
    secret: Box<[u8]>,
}

impl ChannelKey {
    /// The key for `secret` (its bytes are the HMAC key).
    pub fn new(secret: &str) -> Self {
        ChannelKey {
            secret: secret.as_bytes().into(),
        }
    }

    fn mac(&self, text: &[u8]) -> Result<Hmac<Sha256>, MessageError> {
        // HMAC takes keys of any length; the error cannot happen, and would fail closed
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| MessageError::BadSignature)?;
        mac.update(text);
        Ok(mac)
    }

    /// `text` as published: the hex HMAC-SHA256 of `text`, a `.`, then `text`.
    pub fn sign(&self, text: &str) -> Result<String, MessageError> {
        let tag = self.mac(text.as_bytes())?.finalize().into_bytes();
        Ok(format!("{}.{text}", hex(&tag)))
    }

    /// The message a received `payload` carries, if it is signed with this key.
    pub fn open<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], MessageError> {
        let (Some(signature), Some(b'.')) = (
            payload.get(..SIGNATURE_HEX).and_then(unhex),
            payload.get(SIGNATURE_HEX),
        ) else {
            return Err(MessageError::Unsigned);
        };
        let text = &payload[SIGNATURE_HEX + 1..];
        self.mac(text)?
            .verify_slice(&signature)
            .map_err(|_| MessageError::BadSignature)?;
        Ok(text)
    }
}

/// The bytes of lower- or upper-case hex text (`None` when it is not hex).
fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    text.chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
            _ => None,
        })
        .collect()
}

impl PurgeMessage {
    /// A message from `from` of the purge recorded in Redis with `generation`.
    pub fn new(from: &str, kind: PurgeKind, target: &str, generation: u64) -> Self {
        PurgeMessage {
            v: MESSAGE_VERSION,
            from: from.to_owned(),
            kind,
            target: target.to_owned(),
            gen: Some(generation),
            soft: false,
        }
    }

    /// The JSON text published on the channel.
    pub fn encode(&self) -> Result<String, MessageError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parse a payload received on the channel.
    pub fn decode(payload: &[u8]) -> Result<Self, MessageError> {
        let m: PurgeMessage = serde_json::from_slice(payload)?;
        match (m.v, m.gen) {
            (MESSAGE_VERSION, Some(_)) | (MESSAGE_VERSION_1, _) => Ok(m),
            _ => Err(MessageError::Version(m.v)),
        }
    }
}

/// What to do with one received payload.
#[derive(Debug)]
pub enum Received {
    /// Our own broadcast: already applied locally and in L2.
    Own,
    /// Another instance's purge: apply to L1 only.
    Remote(PurgeMessage),
    /// Not understood, or not validly signed: drop it.
    Malformed(MessageError),
}

/// Classify a payload for the instance `own_id`, which checks signatures with `key` (`None`:
/// messages are unsigned).
pub fn classify(payload: &[u8], own_id: &str, key: Option<&ChannelKey>) -> Received {
    let text = match key.map(|k| k.open(payload)) {
        None => payload,
        Some(Ok(text)) => text,
        Some(Err(e)) => return Received::Malformed(e),
    };
    match PurgeMessage::decode(text) {
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
                let service = self.service;
                match classify(&payload, service.instance_id(), service.channel_key()) {
                    Received::Own => {}
                    Received::Remote(m) => match fresh(service, &m) {
                        Ok(()) => {
                            service.apply(&m.into_request()).await;
                        }
                        Err(reason) => PurgeMessageDropped {
                            reason,
                            error: &MessageError::Stale,
                        }
                        .emit(),
                    },
                    Received::Malformed(e) => PurgeMessageDropped {
                        reason: e.drop_reason(),
                        error: &e,
                    }
                    .emit(),
                }
                false
            }
        }
    }
}

/// Whether a remote message's purge is to be applied now: once per generation, within the
/// replay window; a version-1 message (no generation) only while messages are unsigned.
fn fresh(service: &PurgeService, m: &PurgeMessage) -> Result<(), MessageDrop> {
    let Some(generation) = m.gen else {
        return match service.channel_key() {
            Some(_) => Err(MessageDrop::Replayable),
            None => Ok(()),
        };
    };
    let now = service.cache().l2().and_then(|l2| l2.seen_generation());
    service
        .applied()
        .note_broadcast(generation, now)
        .map_err(|_| MessageDrop::Replayed)
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
    let Some(target) = l2.subscriber() else {
        return;
    };
    let channel = channel.to_owned();
    let (tx, mut rx) = mpsc::channel(RECEIVED_QUEUE);
    let thread_channel = channel.clone();
    let spawned = std::thread::Builder::new()
        .name("sidecache-pubsub".into())
        .spawn(move || reader_loop(&target, &thread_channel, &tx));
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
/// start again (on a cluster at the next seed, under Sentinel at the master the sentinels
/// name now). Returns only when the async side is gone.
fn reader_loop(target: &SubscribeTarget, channel: &str, tx: &mpsc::Sender<Event>) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0u64;
    loop {
        let client = target.client(attempt);
        attempt += 1;
        let err = match client.and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT)) {
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
        let m = PurgeMessage::new(
            "a-1-ff",
            PurgeKind::Prefix,
            "/api/x/",
            1_700_000_000_000_001,
        );
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            text,
            r#"{"v":2,"from":"a-1-ff","kind":"prefix","target":"/api/x/","gen":1700000000000001}"#
        );
        assert!(matches!(
            PurgeMessage::decode(text.as_bytes()),
            Ok(d) if d == m
        ));
    }

    #[test]
    fn own_remote_and_malformed() {
        let p = br#"{"v":1,"from":"me","kind":"tag","target":"contractor:1"}"#;
        assert!(matches!(classify(p, "me", None), Received::Own));
        assert!(
            matches!(classify(p, "other", None), Received::Remote(m) if m.kind == PurgeKind::Tag && m.target == "contractor:1")
        );
        // version 1 (no gen) is still read
        assert!(matches!(classify(p, "other", None), Received::Remote(m) if m.gen.is_none()));
        for bad in [
            &b"not json"[..],
            br#"{"v":2,"from":"x","kind":"url","target":"/"}"#,
            br#"{"v":3,"from":"x","kind":"url","target":"/","gen":1}"#,
            br#"{"v":1,"from":"x","kind":"everything","target":"/"}"#,
            br#"{"v":1,"kind":"url","target":"/"}"#,
        ] {
            assert!(matches!(classify(bad, "me", None), Received::Malformed(_)));
        }
    }

    #[test]
    fn signed_messages_verify_only_under_their_secret() {
        let key = ChannelKey::new("0123456789abcdef-shared");
        let text = PurgeMessage::new("a-1", PurgeKind::Prefix, "/", 7)
            .encode()
            .unwrap_or_default();
        let signed = key.sign(&text).unwrap_or_default();
        assert_eq!(signed.len(), SIGNATURE_HEX + 1 + text.len());
        assert!(
            matches!(classify(signed.as_bytes(), "b-2", Some(&key)), Received::Remote(m) if m.target == "/")
        );
        let reason = |payload: &[u8], key: Option<&ChannelKey>| match classify(payload, "b-2", key)
        {
            Received::Malformed(e) => Some(e.drop_reason()),
            _ => None,
        };
        // unsigned (today's format) is refused when a secret is set
        assert_eq!(
            reason(text.as_bytes(), Some(&key)),
            Some(MessageDrop::Unsigned)
        );
        // another secret, or a changed message, does not verify
        let other = ChannelKey::new("fedcba9876543210-other");
        let foreign = other.sign(&text).unwrap_or_default();
        assert_eq!(
            reason(foreign.as_bytes(), Some(&key)),
            Some(MessageDrop::BadSignature)
        );
        let tampered = signed.replace("\"/\"", "\"/x\"");
        assert_ne!(tampered, signed);
        assert_eq!(
            reason(tampered.as_bytes(), Some(&key)),
            Some(MessageDrop::BadSignature)
        );
        // and a signed message is not a message to an instance without a secret
        assert_eq!(
            reason(signed.as_bytes(), None),
            Some(MessageDrop::Malformed)
        );
        assert_eq!(unhex(b"0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex(b"0g"), None);
        assert_eq!(unhex(b"abc"), None);
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(new_instance_id(), new_instance_id());
    }
}
