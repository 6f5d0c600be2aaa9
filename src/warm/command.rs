//! `sidecache warm`: one warming pass against a running sidecache, with the command line's
//! overrides of `[warm]`, progress on stderr and the summary on stdout.

use std::time::{Duration, Instant};

use super::{expand, local_target, parse_target, run, ProgressGate, WarmError, WarmOptions};
use crate::client::{block_on, CommandStatus};
use crate::config::Config;

/// What `sidecache warm` was asked for; each `None` takes the config's value.
#[derive(Debug, Clone)]
pub struct WarmCommand {
    /// Data-plane base URL (`http://host:port`); `None` is `server.listen` of the config.
    pub target: Option<String>,
    /// Parallel requests instead of `warm.concurrency`.
    pub concurrency: Option<usize>,
    /// Requests per second at most instead of `warm.rate_per_second`.
    pub rate_per_second: Option<u32>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Print progress every this many requests (and at least every second).
    pub progress_every: usize,
    /// Print the summary as JSON.
    pub json: bool,
}

impl WarmCommand {
    /// The paths to warm and how, from `config` with this command's overrides.
    fn plan(&self, config: &Config) -> Result<(Vec<String>, WarmOptions), WarmError> {
        let target = match &self.target {
            Some(t) => parse_target(t)?,
            None => local_target(config.server.listen),
        };
        let paths = expand(&config.warm)?;
        let mut opts = WarmOptions::from_config(&config.warm, target);
        opts.concurrency = self.concurrency.unwrap_or(opts.concurrency).max(1);
        opts.rate_per_second = self.rate_per_second.unwrap_or(opts.rate_per_second).max(1);
        opts.timeout = self.timeout;
        Ok((paths, opts))
    }
}

/// Runs `sidecache warm` with `config`: warms every `[warm]` path and says whether all of
/// them succeeded. A bad target or ids list is reported on stderr as bad usage.
pub fn command(config: &Config, cmd: &WarmCommand) -> CommandStatus {
    let (paths, opts) = match cmd.plan(config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("sidecache warm: {e}");
            return CommandStatus::BadUsage;
        }
    };
    eprintln!(
        "sidecache warm: {} URL(s) via http://{} (concurrency {}, {}/s)",
        paths.len(),
        opts.target,
        opts.concurrency,
        opts.rate_per_second
    );
    let mut gate = ProgressGate::new(cmd.progress_every, Duration::from_secs(1), Instant::now());
    let progress = |r: &super::WarmReport, total: usize| {
        if gate.should_print(r.done(), Instant::now()) {
            eprintln!("{}", r.progress_line(total));
        }
    };
    match block_on(run(paths, &opts, progress)) {
        Ok(report) => {
            if cmd.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            if report.failed == 0 {
                CommandStatus::Succeeded
            } else {
                CommandStatus::Failed
            }
        }
        Err(e) => {
            eprintln!("sidecache warm: {e}");
            CommandStatus::Failed
        }
    }
}
