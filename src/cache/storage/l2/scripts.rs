//! The Lua scripts (`../lua/`), each sent by `EVALSHA` and loaded when Redis lacks it.

use super::*;

/// A Lua script called by `EVALSHA`, loaded on first use and again whenever Redis has
/// forgotten it (restart, `SCRIPT FLUSH`).
pub(super) struct Lua(redis::Script);

impl Lua {
    /// The `EVALSHA` command with `keys`; append the arguments.
    pub(super) fn command(&self, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.0.get_hash()).arg(keys.len()).arg(keys);
        cmd
    }

    /// Run `cmd` (built by [`Lua::command`]), loading the script if Redis does not have it.
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        c: &mut L2Connection,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match cmd.query_async(c).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                self.0.prepare_invoke().load_async(c).await?;
                cmd.query_async(c).await
            }
            other => other,
        }
    }
}

macro_rules! lua {
    ($file:literal) => {
        LazyLock::new(|| {
            Lua(redis::Script::new(concat!(
                include_str!("../lua/prelude.lua"),
                include_str!(concat!("../lua/", $file))
            )))
        })
    };
}

pub(super) static GENERATION: LazyLock<Lua> = lua!("generation.lua");
pub(super) static STORE: LazyLock<Lua> = lua!("store.lua");
pub(super) static PURGE: LazyLock<Lua> = lua!("purge.lua");
pub(super) static ADVANCE: LazyLock<Lua> = lua!("advance.lua");
pub(super) static UNLOCK: LazyLock<Lua> = lua!("unlock.lua");
pub(super) static FILL: LazyLock<Lua> = lua!("fill.lua");
pub(super) static FINISHED: LazyLock<Lua> = lua!("finished.lua");
pub(super) static FINISHED_SINCE: LazyLock<Lua> = lua!("finished_since.lua");
pub(super) static SEED: LazyLock<Lua> = lua!("seed.lua");
