//! Which server L2 talks to ([`ServerInfo`], from `INFO server`) and whether sidecache
//! supports it.
//!
//! sidecache runs on Redis 6.2 and later and on Valkey (which reports itself as Redis 7.2
//! too). The floor is Redis 6.2's `ZADD ... GT` in the store script; everything newer that
//! the scripts could use (`PEXPIRE ... NX|GT`, `SET ... GET`, `ZRANGE ... BYSCORE`, functions,
//! sharded pub/sub) is avoided or emulated in Lua. Each L2 connection asks the server once
//! when it opens: an older server is refused (the connection is not used, so nothing is ever
//! written to it) with an error that names its version, and the version is shown by `/ready`
//! and `/admin/stats`.

use std::fmt;

use redis::aio::ConnectionLike;

/// A server version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// `6.2.14` (missing parts are 0; `None` if a part is not a number).
    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().splitn(3, '.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The oldest Redis (by the `redis_version` a server reports) sidecache supports: the store
/// script's `ZADD ... GT` came with 6.2.
pub const OLDEST_SUPPORTED: Version = Version(6, 2, 0);

/// Which server software.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerName {
    Redis,
    Valkey,
}

impl ServerName {
    /// The name as shown by `/ready` and `/admin/stats`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Valkey => "valkey",
        }
    }
}

/// The server behind L2, as its `INFO server` section describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub name: ServerName,
    /// Its own version (Valkey's `valkey_version`).
    pub version: Version,
    /// The Redis version it is compatible with (`redis_version`; Valkey reports 7.2.4).
    pub redis_version: Version,
}

impl ServerInfo {
    /// Read an `INFO server` answer (`None` when it names no `redis_version`).
    pub fn parse(info: &str) -> Option<ServerInfo> {
        let field = |name: &str| {
            info.lines()
                .filter_map(|l| l.trim_end().split_once(':'))
                .find_map(|(k, v)| (k == name).then_some(v))
        };
        let redis_version = Version::parse(field("redis_version")?)?;
        let valkey = field("valkey_version").and_then(Version::parse);
        Some(match valkey {
            Some(version) => ServerInfo {
                name: ServerName::Valkey,
                version,
                redis_version,
            },
            None => ServerInfo {
                name: ServerName::Redis,
                version: redis_version,
                redis_version,
            },
        })
    }

    /// Whether sidecache runs on it.
    pub fn supported(&self) -> bool {
        self.redis_version >= OLDEST_SUPPORTED
    }

    /// `Err` naming the server when it is older than [`OLDEST_SUPPORTED`].
    pub fn check(self) -> Result<ServerInfo, Unsupported> {
        if self.supported() {
            Ok(self)
        } else {
            Err(Unsupported(self))
        }
    }
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name.label(), self.version)
    }
}

/// A server sidecache refuses to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is older than redis {OLDEST_SUPPORTED}, the oldest sidecache supports (its scripts \
     need ZADD GT); L2 stays off until the server is upgraded"
)]
pub struct Unsupported(pub ServerInfo);

/// The texts of an `INFO` answer: one for a single server, one per node from a cluster
/// connection (which asks every master and answers with a map).
fn info_texts(value: redis::Value, out: &mut Vec<String>) {
    match value {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => out.push(s),
        redis::Value::Map(pairs) => {
            for (_, v) in pairs {
                info_texts(v, out);
            }
        }
        redis::Value::Array(items) => {
            for v in items {
                info_texts(v, out);
            }
        }
        _ => {}
    }
}

/// The server an `INFO server` answer describes; of several (a cluster's masters), the
/// oldest, which speaks for all.
fn oldest(answer: redis::Value) -> Option<ServerInfo> {
    let mut texts = Vec::new();
    info_texts(answer, &mut texts);
    texts
        .iter()
        .filter_map(|t| ServerInfo::parse(t))
        .min_by_key(|s| s.redis_version)
}

/// Ask the server(s) behind `conn` what they are. `Ok(None)`: the server refused `INFO`
/// (renamed away or denied by an ACL on some managed offerings) or named no version.
pub async fn probe<C: ConnectionLike + Send>(
    conn: &mut C,
) -> redis::RedisResult<Option<ServerInfo>> {
    match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(answer) => Ok(oldest(answer)),
        Err(e)
            if matches!(
                e.kind(),
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of `INFO server` from the servers the tests run (Debian's Redis 7.0, the
    /// Redis 6.2 and Valkey 9.1 that `./dev` installs).
    const REDIS_7: &str =
        "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n";
    const REDIS_62: &str = "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:40305114\r\n";
    const VALKEY_9: &str = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\nvalkey_release_stage:ga\r\n";

    #[test]
    fn names_and_versions_are_read() {
        let r7 = ServerInfo::parse(REDIS_7).expect("redis 7");
        assert_eq!(
            (r7.name, r7.version),
            (ServerName::Redis, Version(7, 0, 15))
        );
        let r62 = ServerInfo::parse(REDIS_62).expect("redis 6.2");
        assert_eq!(r62.to_string(), "redis 6.2.14");
        let v = ServerInfo::parse(VALKEY_9).expect("valkey");
        assert_eq!(v.to_string(), "valkey 9.1.2");
        assert_eq!(v.redis_version, Version(7, 2, 4));
        assert_eq!(ServerInfo::parse("# Server\r\nuptime:3\r\n"), None);
        assert_eq!(ServerInfo::parse("redis_version:seven\r\n"), None);
        assert_eq!(Version::parse("7"), Some(Version(7, 0, 0)));
    }

    #[test]
    fn servers_older_than_6_2_are_refused_by_name_and_version() {
        for text in [REDIS_7, REDIS_62, VALKEY_9] {
            let s = ServerInfo::parse(text).expect("parses");
            assert_eq!(s.check(), Ok(s));
        }
        let old = ServerInfo::parse("redis_version:6.0.9\r\n").expect("parses");
        let err = old.check().expect_err("6.0 is refused");
        assert!(
            err.to_string()
                .starts_with("redis 6.0.9 is older than redis 6.2.0"),
            "{err}"
        );
        assert!(!ServerInfo::parse("redis_version:5.0.7\r\n")
            .expect("parses")
            .supported());
    }

    #[test]
    fn a_cluster_answer_is_judged_by_its_oldest_master() {
        let answer = redis::Value::Map(vec![
            (
                redis::Value::BulkString(b"127.0.0.1:7000".to_vec()),
                redis::Value::BulkString(REDIS_7.as_bytes().to_vec()),
            ),
            (
                redis::Value::BulkString(b"127.0.0.1:7001".to_vec()),
                redis::Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: REDIS_62.to_owned(),
                },
            ),
        ]);
        assert_eq!(oldest(answer).map(|s| s.version), Some(Version(6, 2, 14)));
    }
}
