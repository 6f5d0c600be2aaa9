//! Where sidecache's keys live in Redis: the key names, and on a cluster the partitions
//! they are spread over (see the layout in `super`'s docs).

use super::*;

/// Layout version segment of every key this build writes to a standalone Redis (or one
/// under Sentinel).
pub const KEY_VERSION: &str = "v2:";

/// Layout version segment of every key this build writes to a Redis Cluster. `v3` places an
/// entry in the partition of its path ([`crate::cache::key::placement`]); `v2` placed it by
/// its hash, so a `v2` entry could sit in any partition and only a purge of all 16 reached it.
/// The two never share keys (see the runbook's upgrade note).
pub const CLUSTER_KEY_VERSION: &str = "v3:";

/// Hash-tagged partitions the keys are spread over on a Redis Cluster: enough to spread
/// over a dozen masters or so, few enough that a purge's one call per partition stays cheap.
pub const CLUSTER_PARTITIONS: usize = 16;

/// Redis Cluster's key slot of a hash tag (CRC16/XMODEM mod 16384, as `CLUSTER KEYSLOT`).
pub fn key_slot(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in tag.bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The hash tag of partition `i`: the first `p{i}.{j}` whose slot lies in the `i`-th of
/// [`CLUSTER_PARTITIONS`] equal slot ranges, so evenly split clusters get even partitions.
pub(super) fn partition_tag(i: usize) -> String {
    let range = 16384 / CLUSTER_PARTITIONS;
    (0u32..)
        .map(|j| format!("p{i:02}.{j}"))
        .find(|t| usize::from(key_slot(t)) / range == i)
        .unwrap_or_else(|| format!("p{i:02}"))
}

/// Where the keys live: the home of the purge generation and the partitions of entries and
/// their indexes (standalone: one prefix for all).
pub(super) struct Layout {
    pub(super) home: String,
    pub(super) parts: Vec<String>,
}

impl Layout {
    pub(super) fn new(prefix: &str, cluster: bool) -> Self {
        if !cluster {
            let base = format!("{prefix}{KEY_VERSION}");
            return Layout {
                home: base.clone(),
                parts: vec![base],
            };
        }
        let base = format!("{prefix}{CLUSTER_KEY_VERSION}");
        Layout {
            home: format!("{base}{{home}}:"),
            parts: (0..CLUSTER_PARTITIONS)
                .map(|i| format!("{base}{{{}}}:", partition_tag(i)))
                .collect(),
        }
    }

    /// The partition prefix of an entry key: that of its first byte, its path's placement
    /// (see [`crate::cache::storage::storage_key`]).
    pub(super) fn part(&self, key: &[u8; 16]) -> &str {
        self.part_of(key[0])
    }

    fn part_of(&self, placement: u8) -> &String {
        &self.parts[usize::from(placement) % self.parts.len()]
    }

    /// The partitions a purge must visit: the one of the path its target confines it to (a
    /// url, or a prefix holding `?`), else every one.
    pub(super) fn parts_for(&self, kind: PurgeKind, target: &str) -> &[String] {
        let path = match kind {
            PurgeKind::Url => crate::cache::key::target_path(target, false),
            PurgeKind::Prefix => crate::cache::key::target_path(target, true),
            PurgeKind::Tag => None,
        };
        match path {
            Some(path) if self.parts.len() > 1 => {
                std::slice::from_ref(self.part_of(crate::cache::key::placement(path)))
            }
            _ => &self.parts,
        }
    }
}

impl L2Store {
    /// Whether the keys are spread over cluster partitions.
    pub(super) fn partitioned(&self) -> bool {
        self.layout.parts.len() > 1
    }

    /// `{prefix}v2:e:{hex}` for an entry key (on a cluster, in its partition).
    pub fn entry_key(&self, key: &[u8; 16]) -> String {
        format!("{}e:{}", self.layout.part(key), hex(key))
    }

    /// `{prefix}v2:url:{url}` (on a cluster, partition 0's).
    pub fn url_key(&self, url: &str) -> String {
        format!("{}url:{}", self.layout.parts[0], url)
    }

    /// `{prefix}v2:tag:{tag}` (on a cluster, partition 0's).
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}tag:{}", self.layout.parts[0], tag)
    }

    /// `{prefix}v2:urls` (on a cluster, partition 0's).
    pub fn urls_key(&self) -> String {
        format!("{}urls", self.layout.parts[0])
    }

    /// `{prefix}v2:urls:expiry` (on a cluster, partition 0's).
    pub fn url_expiry_key(&self) -> String {
        format!("{}urls:expiry", self.layout.parts[0])
    }

    /// `{prefix}v2:purge`, the purge generation's hash (on a cluster, the home slot's).
    pub fn purge_state_key(&self) -> String {
        format!("{}purge", self.layout.home)
    }

    /// `{prefix}v2:tombs` (on a cluster, the home slot's, which stays empty).
    pub fn tombstones_key(&self) -> String {
        format!("{}tombs", self.layout.home)
    }

    /// `{prefix}v2:lock:{hex}`: the cross-instance fill lock of an entry key, beside the
    /// entry (the same partition on a cluster).
    pub fn fill_lock_key(&self, key: &[u8; 16]) -> String {
        format!("{}lock:{}", self.layout.part(key), hex(key))
    }

    /// Every partition's key prefix (standalone: the one prefix).
    pub fn partition_prefixes(&self) -> &[String] {
        &self.layout.parts
    }

    /// `{prefix}v2:purges:finished` (on a cluster, the home slot's): the finished-purge log.
    pub fn finished_log_key(&self) -> String {
        format!("{}purges:finished", self.layout.home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_redis() {
        // CLUSTER KEYSLOT values from Redis
        assert_eq!(key_slot("123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot(""), 0);
    }

    #[test]
    fn cluster_partitions_spread_over_the_slot_range() {
        let layout = Layout::new("sc:", true);
        assert_eq!(layout.parts.len(), CLUSTER_PARTITIONS);
        let range = 16384 / CLUSTER_PARTITIONS;
        for (i, part) in layout.parts.iter().enumerate() {
            let tag = part
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(tag, _)| tag)
                .expect("hash tag");
            assert_eq!(usize::from(key_slot(tag)) / range, i, "{part}");
            assert!(part.starts_with("sc:v3:{"), "{part}");
        }
        assert_eq!(layout.home, "sc:v3:{home}:");
        let standalone = Layout::new("sc:", false);
        assert_eq!(standalone.parts_for(PurgeKind::Url, "/a/1"), ["sc:v2:"]);
        assert_eq!(standalone.parts, ["sc:v2:"]);
        assert_eq!(standalone.home, "sc:v2:");
    }

    #[test]
    fn a_purge_of_one_path_visits_its_partition_alone() {
        let layout = Layout::new("sc:", true);
        let home = layout.part_of(crate::cache::key::placement("/a/1"));
        let key = |path: &str| {
            let mut k = [7u8; 16];
            k[0] = crate::cache::key::placement(path);
            k
        };
        assert_eq!(layout.part(&key("/a/1")), home);
        for (kind, target) in [
            (PurgeKind::Url, "/a/1"),
            (PurgeKind::Url, "/a/1?x=2"),
            (PurgeKind::Prefix, "/a/1?"),
            (PurgeKind::Prefix, "/a/1?x="),
        ] {
            assert_eq!(
                layout.parts_for(kind, target),
                std::slice::from_ref(home),
                "{kind:?} {target}"
            );
        }
        assert_eq!(
            layout.parts_for(PurgeKind::Prefix, "/a/").len(),
            CLUSTER_PARTITIONS
        );
        assert_eq!(
            layout.parts_for(PurgeKind::Tag, "/a/1").len(),
            CLUSTER_PARTITIONS
        );
    }
}
