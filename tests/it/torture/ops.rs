//! The operations of a torture run, their generator and their text form.
//!
//! A history is a list of [`Step`]s: wait `gap_ms` after launching the previous step, then
//! launch this one (steps run concurrently, up to a bound). Every random choice is made by
//! the generator from the seed and written into the step (a burst's arrivals come from its
//! own `seed`), so a history replays the same operations in the same order; only the
//! timing of real processes differs from one replay to the next.
//!
//! One step per line: `+GAPms OP ARGS...`, e.g.
//!
//! ```text
//! +12ms get @1 /api/items/3?v=1
//! +0ms burst /api/items/3 n=40 spread=500 seed=81723
//! +30ms write @0 put-item 3 q=1
//! +5ms purge @1 tag item:3
//! +0ms reload @0 ttl=6s
//! +80ms flood @0 n=600
//! +0ms fault delay @1 both hold=900
//! ```

use std::fmt;

use super::model::{self, Target, WriteKind};

/// What the fleet looks like: it decides which instances and faults the generator picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub instances: usize,
    pub cluster: bool,
}

/// Cluster nodes (masters) in the cluster shape.
pub const CLUSTER_NODES: usize = 3;

/// One step of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Wait this long after launching the previous step.
    pub gap_ms: u32,
    pub op: Op,
}

/// Which way the delay proxy holds bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Requests,
    Answers,
    Both,
}

/// A Redis fault; each heals by itself after `hold_ms` (faults never overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Standalone: SIGKILL Redis, start it again (empty) after the hold.
    RedisDown,
    /// Standalone: SIGKILL Redis and start it again at once (empty).
    RedisRestart,
    /// Standalone: instance `inst`'s link to Redis holds bytes for the hold.
    Delay { inst: usize, held: Held },
    /// Standalone: instance `inst`'s link to Redis is cut (connections closed and refused).
    Cut { inst: usize },
    /// Cluster: SIGKILL master `node`, start it again (empty) after the hold.
    NodeDown { node: usize },
}

impl Fault {
    /// The instance the fault is limited to (`None`: every instance).
    pub fn only_instance(self) -> Option<usize> {
        match self {
            Fault::Delay { inst, .. } | Fault::Cut { inst } => Some(inst),
            _ => None,
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// One GET on instance `inst`.
    Get { inst: usize, url: String },
    /// `n` GETs of one URL on random instances, arriving spread over `spread_ms`.
    Burst {
        url: String,
        n: u32,
        spread_ms: u32,
        seed: u64,
    },
    /// A write through instance `inst`.
    Write {
        inst: usize,
        kind: WriteKind,
        id: u32,
        query: usize,
    },
    /// `POST /admin/purge` on instance `inst`, after the origin changed what it covers.
    Purge { inst: usize, target: Target },
    /// Rewrite instance `inst`'s config with the `items` TTL variant, `POST /admin/reload`.
    Reload { inst: usize, variant: usize },
    /// `n` writes to unrelated, uncacheable paths through `inst`, while the other
    /// instances' hot entry must stay a hit.
    Flood { inst: usize, n: u32 },
    /// A Redis fault, healed after `hold_ms`.
    Fault { fault: Fault, hold_ms: u32 },
}

/// Generate `count` steps from `seed` for `shape`. The first `n` steps of a longer history
/// are the history of `n` steps.
pub fn generate(seed: u64, count: usize, shape: Shape) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count).map(|_| step(&mut rng, shape)).collect()
}

fn step(rng: &mut fastrand::Rng, shape: Shape) -> Step {
    let gap_ms = match rng.u32(0..100) {
        0..=59 => rng.u32(0..10),
        60..=94 => rng.u32(10..80),
        _ => rng.u32(80..600),
    };
    Step {
        gap_ms,
        op: op(rng, shape),
    }
}

fn op(rng: &mut fastrand::Rng, shape: Shape) -> Op {
    let inst = rng.usize(0..shape.instances);
    let urls = model::urls();
    // a few URLs are much hotter than the rest, so keys meet their purges and bursts
    let url = if rng.bool() {
        urls[rng.usize(0..4)].clone()
    } else {
        urls[rng.usize(0..urls.len())].clone()
    };
    match rng.u32(0..1000) {
        0..=419 => Op::Get { inst, url },
        420..=599 | 950..=979 => Op::Burst {
            url,
            n: rng.u32(2..=60),
            spread_ms: if rng.bool() { 0 } else { rng.u32(1..=500) },
            seed: rng.u64(..),
        },
        600..=799 => {
            let kind = WriteKind::ALL[rng.usize(0..WriteKind::ALL.len())];
            Op::Write {
                inst,
                kind,
                id: rng.u32(1..=kind.ids()),
                query: rng.usize(0..model::ITEM_QUERIES.len()),
            }
        }
        800..=909 => Op::Purge {
            inst,
            target: purge_target(rng, &urls),
        },
        910..=934 => Op::Reload {
            inst,
            variant: rng.usize(0..model::ITEM_TTLS.len()),
        },
        935..=949 if shape.instances > 1 => Op::Flood {
            inst,
            n: rng.u32(100..=1200),
        },
        935..=949 => Op::Get { inst, url },
        _ => Op::Fault {
            fault: fault(rng, shape),
            hold_ms: rng.u32(100..=1500),
        },
    }
}

fn purge_target(rng: &mut fastrand::Rng, urls: &[String]) -> Target {
    match rng.u32(0..3) {
        0 => Target::Url(urls[rng.usize(0..urls.len())].clone()),
        1 => {
            let p = model::purge_prefixes();
            Target::Prefix(p[rng.usize(0..p.len())].clone())
        }
        _ => {
            let t = model::purge_tags();
            Target::Tag(t[rng.usize(0..t.len())].clone())
        }
    }
}

fn fault(rng: &mut fastrand::Rng, shape: Shape) -> Fault {
    if shape.cluster {
        return Fault::NodeDown {
            node: rng.usize(0..CLUSTER_NODES),
        };
    }
    let inst = rng.usize(0..shape.instances);
    match rng.u32(0..10) {
        0..=1 => Fault::RedisDown,
        2..=3 => Fault::RedisRestart,
        4..=7 => Fault::Delay {
            inst,
            held: [Held::Requests, Held::Answers, Held::Both][rng.usize(0..3)],
        },
        _ => Fault::Cut { inst },
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}ms {}", self.gap_ms, self.op)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { inst, url } => write!(f, "get @{inst} {url}"),
            Op::Burst {
                url,
                n,
                spread_ms,
                seed,
            } => write!(f, "burst {url} n={n} spread={spread_ms} seed={seed}"),
            Op::Write {
                inst,
                kind,
                id,
                query,
            } => write!(f, "write @{inst} {} {id} q={query}", kind.name()),
            Op::Purge { inst, target } => {
                let (kind, value) = target.kind_and_value();
                write!(f, "purge @{inst} {kind} {value}")
            }
            Op::Reload { inst, variant } => {
                write!(f, "reload @{inst} ttl={}", model::ITEM_TTLS[*variant])
            }
            Op::Flood { inst, n } => write!(f, "flood @{inst} n={n}"),
            Op::Fault { fault, hold_ms } => {
                let what = match fault {
                    Fault::RedisDown => "redis-down".to_owned(),
                    Fault::RedisRestart => "redis-restart".to_owned(),
                    Fault::Delay { inst, held } => {
                        let h = match held {
                            Held::Requests => "requests",
                            Held::Answers => "answers",
                            Held::Both => "both",
                        };
                        format!("delay @{inst} {h}")
                    }
                    Fault::Cut { inst } => format!("cut @{inst}"),
                    Fault::NodeDown { node } => format!("node-down {node}"),
                };
                write!(f, "fault {what} hold={hold_ms}")
            }
        }
    }
}

/// Parse a history written by [`Step`]'s `Display`, one step per line; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_history(text: &str) -> Result<Vec<Step>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse_step(l).map_err(|e| format!("line {}: {e}: {l:?}", i + 1)))
        .collect()
}

fn parse_step(line: &str) -> Result<Step, String> {
    let mut words = line.split_whitespace();
    let gap = words.next().ok_or("empty")?;
    let gap_ms = gap
        .strip_prefix('+')
        .and_then(|g| g.strip_suffix("ms"))
        .and_then(|g| g.parse().ok())
        .ok_or("expected +GAPms")?;
    let name = words.next().ok_or("no op")?;
    let args: Vec<&str> = words.collect();
    Ok(Step {
        gap_ms,
        op: parse_op(name, &args)?,
    })
}

fn parse_op(name: &str, args: &[&str]) -> Result<Op, String> {
    let arg = |i: usize| args.get(i).copied().ok_or(format!("missing argument {i}"));
    let inst = |i: usize| -> Result<usize, String> {
        arg(i)?
            .strip_prefix('@')
            .and_then(|n| n.parse().ok())
            .ok_or("expected @INSTANCE".to_owned())
    };
    let named = |i: usize, key: &str| -> Result<String, String> {
        arg(i)?
            .strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .map(str::to_owned)
            .ok_or(format!("expected {key}=VALUE"))
    };
    let number = |i: usize, key: &str| -> Result<u64, String> {
        named(i, key)?
            .parse()
            .map_err(|_| format!("{key} is not a number"))
    };
    Ok(match name {
        "get" => Op::Get {
            inst: inst(0)?,
            url: arg(1)?.to_owned(),
        },
        "burst" => Op::Burst {
            url: arg(0)?.to_owned(),
            n: number(1, "n")? as u32,
            spread_ms: number(2, "spread")? as u32,
            seed: number(3, "seed")?,
        },
        "write" => Op::Write {
            inst: inst(0)?,
            kind: WriteKind::from_name(arg(1)?).ok_or("unknown write kind")?,
            id: arg(2)?.parse().map_err(|_| "bad id")?,
            query: number(3, "q")? as usize,
        },
        "purge" => {
            let value = arg(2)?.to_owned();
            let target = match arg(1)? {
                "url" => Target::Url(value),
                "prefix" => Target::Prefix(value),
                "tag" => Target::Tag(value),
                other => return Err(format!("unknown purge kind {other}")),
            };
            Op::Purge {
                inst: inst(0)?,
                target,
            }
        }
        "reload" => {
            let ttl = named(1, "ttl")?;
            Op::Reload {
                inst: inst(0)?,
                variant: model::ITEM_TTLS
                    .iter()
                    .position(|t| *t == ttl)
                    .ok_or("unknown ttl variant")?,
            }
        }
        "flood" => Op::Flood {
            inst: inst(0)?,
            n: number(1, "n")? as u32,
        },
        "fault" => parse_fault(args)?,
        other => return Err(format!("unknown op {other}")),
    })
}

fn parse_fault(args: &[&str]) -> Result<Op, String> {
    let hold_ms = args
        .last()
        .and_then(|h| h.strip_prefix("hold="))
        .and_then(|h| h.parse().ok())
        .ok_or("expected hold=MS last")?;
    let inst = |s: Option<&&str>| -> Result<usize, String> {
        s.and_then(|s| s.strip_prefix('@'))
            .and_then(|n| n.parse().ok())
            .ok_or("expected @INSTANCE".to_owned())
    };
    let fault = match args.first().copied() {
        Some("redis-down") => Fault::RedisDown,
        Some("redis-restart") => Fault::RedisRestart,
        Some("delay") => Fault::Delay {
            inst: inst(args.get(1))?,
            held: match args.get(2).copied() {
                Some("requests") => Held::Requests,
                Some("answers") => Held::Answers,
                Some("both") => Held::Both,
                _ => return Err("expected requests, answers or both".to_owned()),
            },
        },
        Some("cut") => Fault::Cut {
            inst: inst(args.get(1))?,
        },
        Some("node-down") => Fault::NodeDown {
            node: args
                .get(1)
                .and_then(|n| n.parse().ok())
                .ok_or("expected a node")?,
        },
        _ => return Err("unknown fault".to_owned()),
    };
    Ok(Op::Fault { fault, hold_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_reads_back_as_written() {
        for cluster in [false, true] {
            let shape = Shape {
                instances: 3,
                cluster,
            };
            let history = generate(7, 3000, shape);
            let text: String = history.iter().map(|s| format!("{s}\n")).collect();
            assert_eq!(parse_history(&text), Ok(history));
        }
    }

    #[test]
    fn a_prefix_of_a_history_is_the_shorter_history() {
        let shape = Shape {
            instances: 2,
            cluster: false,
        };
        assert_eq!(generate(9, 1000, shape)[..300], generate(9, 300, shape)[..]);
    }
}
