//! The two connections (entries, purges): opened at start and whenever one is missing, vetted
//! (the server's version), and every operation run on them under a timeout and a breaker.

use super::*;

/// Which connection and breaker an operation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    Entries,
    Purges,
}

/// How a connect in flight ended (`None` while it runs).
pub(super) type ConnectOutcome = Option<Result<L2Connection, Arc<redis::RedisError>>>;

/// The shortest deadline a connect gets, whatever the write timeout: a TLS handshake on a
/// loaded host can take longer than one read timeout, and nothing waits on it but the
/// operations, each under its own timeout.
pub(super) const CONNECT_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);

/// Ask a new connection's server what it is (under `timeout`), note it in `known`, and
/// refuse a server sidecache does not support. A server that will not say is used.
pub(super) async fn vet(
    conn: &mut L2Connection,
    known: &ArcSwapOption<ServerInfo>,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let found = tokio::time::timeout(timeout, server_info::probe(conn))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "redis INFO timed out")))??;
    let before = known.swap(found.map(Arc::new));
    if before.as_deref() != found.as_ref() || before.is_none() {
        L2ServerChanged { server: found }.emit();
    }
    match found.map(ServerInfo::check) {
        Some(Err(refused)) => Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "unsupported server",
            refused.to_string(),
        ))),
        _ => Ok(()),
    }
}

/// Cluster only: give every partition without state the home slot's generation, before the
/// connection serves any operation (see `lua/seed.lua`). A partition it cannot reach is left
/// to the store's own seeding (`-2`), which refuses that one write.
pub(super) async fn seed_partitions(conn: &mut L2Connection, layout: &Layout, timeout: Duration) {
    let home = [
        format!("{}purge", layout.home),
        format!("{}tombs", layout.home),
    ];
    let seeding = async {
        let generation: u64 = GENERATION
            .run(conn, &GENERATION.command(&[&home[0], &home[1]]))
            .await?;
        let mut seeded = 0u32;
        for part in &layout.parts {
            let mut cmd = SEED.command(&[&format!("{part}purge"), &format!("{part}tombs")]);
            cmd.arg(generation);
            let fresh: i64 = SEED.run(conn, &cmd).await?;
            seeded += u32::from(fresh == 1);
        }
        Ok::<_, redis::RedisError>(seeded)
    };
    match tokio::time::timeout(timeout, seeding).await {
        Ok(Ok(seeded)) if seeded > 0 => tracing::debug!(seeded, "redis cluster partitions seeded"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "redis cluster partitions not seeded"),
        Err(_) => tracing::debug!("redis cluster partition seeding timed out"),
    }
}

/// One lane's connection, opened at start and on first use, and dropped when it must be
/// found again.
///
/// A connect runs in a task of its own that every operation needing it waits on, each for
/// no longer than its own timeout. Running it inside the first operation instead would let
/// that operation's deadline (50 ms by default) abort a slower handshake again and again, so
/// a `rediss://` store behind a slow link would never connect at all.
#[derive(Default)]
pub(super) struct ConnectionSlot {
    current: ArcSwapOption<L2Connection>,
    /// The connect in flight or the last one's outcome, so concurrent first uses share one.
    pending: std::sync::Mutex<Option<watch::Receiver<ConnectOutcome>>>,
}

impl L2Store {
    pub(super) fn slot(&self, lane: Lane) -> &Arc<ConnectionSlot> {
        match lane {
            Lane::Entries => &self.conn,
            Lane::Purges => &self.purge_conn,
        }
    }

    /// Start opening both connections now, so the first requests find them open (a TLS
    /// handshake is slower than one read timeout). Returns at once; needs a Tokio runtime.
    pub fn connect_in_background(&self) {
        for lane in [Lane::Entries, Lane::Purges] {
            if self.slot(lane).current.load().is_none() {
                // Dropping the receiver leaves the connect running in its task.
                drop(self.start_connect(lane));
            }
        }
    }

    /// The lane's connect in flight, or a new one if none is.
    pub(super) fn start_connect(&self, lane: Lane) -> Option<watch::Receiver<ConnectOutcome>> {
        let topology = self.topology.clone()?;
        let slot = self.slot(lane);
        let mut pending = crate::sync::lock(&slot.pending);
        if let Some(rx) = pending.as_ref().filter(|rx| rx.borrow().is_none()) {
            return Some(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        *pending = Some(rx.clone());
        drop(pending);
        let timeout = self.write_timeout().max(CONNECT_TIMEOUT_FLOOR);
        let slot = Arc::clone(slot);
        let server = Arc::clone(&self.server);
        let seed = (lane == Lane::Entries && self.partitioned()).then(|| Arc::clone(&self.layout));
        tokio::spawn(async move {
            let outcome = match topology.connect(timeout).await {
                Ok(mut conn) => match vet(&mut conn, &server, timeout).await {
                    Ok(()) => {
                        if let Some(layout) = seed {
                            seed_partitions(&mut conn, &layout, timeout).await;
                        }
                        Ok(conn)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match &outcome {
                Ok(conn) => slot.current.store(Some(Arc::new(conn.clone()))),
                Err(e) => tracing::debug!(error = %e, "redis connect failed"),
            }
            tx.send_replace(Some(outcome.map_err(Arc::new)));
        });
        Some(rx)
    }

    pub(super) async fn connection(&self, lane: Lane) -> redis::RedisResult<L2Connection> {
        if let Some(c) = self.slot(lane).current.load_full() {
            return Ok((*c).clone());
        }
        let invalid = || {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "invalid redis settings",
            ))
        };
        let mut rx = self.start_connect(lane).ok_or_else(invalid)?;
        let outcome = rx.wait_for(Option::is_some).await.map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "redis connect abandoned"))
        })?;
        match outcome.as_ref() {
            Some(Ok(conn)) => Ok(conn.clone()),
            Some(Err(e)) => Err(redis::RedisError::from((
                e.kind(),
                "redis connect failed",
                e.to_string(),
            ))),
            None => Err(invalid()),
        }
    }

    /// After a failure (`opened`: the one that opened the lane's breaker): under Sentinel,
    /// forget the connection so the next operation asks the sentinels where the master is
    /// now; on a cluster, forget it when the breaker opens. The cluster client repairs its
    /// own connections, but after masters restarted over and over (the torture test's
    /// faults) it was seen to stop serving for good: every operation of both instances timed
    /// out for minutes while the cluster answered, until the purge backlog filled. A fresh
    /// client, at most once per breaker cycle, reads the slots anew.
    pub(super) fn failed(&self, lane: Lane, opened: bool) {
        let sentinel = self
            .topology
            .as_deref()
            .is_some_and(Topology::follows_failover);
        if sentinel || (opened && self.partitioned()) {
            self.slot(lane).current.store(None);
        }
    }

    /// Run one logical entry operation (may be several commands) through the entry breaker,
    /// `timeout` and metrics. `Err` carries how it ended (`Skipped`, `Timeout`, `Error`).
    pub async fn run<T, F, Fut>(&self, op: L2Op, timeout: Duration, f: F) -> Result<T, L2Result>
    where
        F: FnOnce(L2Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_in(Lane::Entries, op, timeout, f).await
    }

    pub(super) async fn run_in<T, F, Fut>(
        &self,
        lane: Lane,
        op: L2Op,
        timeout: Duration,
        f: F,
    ) -> Result<T, L2Result>
    where
        F: FnOnce(L2Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let breaker = match lane {
            Lane::Entries => &self.breaker,
            Lane::Purges => &self.purge_breaker,
        };
        if !breaker.allow() {
            L2Operation {
                op,
                result: L2Result::Skipped,
                elapsed: Duration::ZERO,
                error: None,
            }
            .emit();
            return Err(L2Result::Skipped);
        }
        let start = Instant::now();
        let res = tokio::time::timeout(timeout, async {
            let conn = self.connection(lane).await?;
            f(conn).await
        })
        .await;
        let elapsed = start.elapsed();
        let (result, error) = match &res {
            Ok(Ok(_)) => (L2Result::Ok, None),
            Ok(Err(e)) => (L2Result::Error, Some(e)),
            Err(_) => (L2Result::Timeout, None),
        };
        if result == L2Result::Ok {
            breaker.on_success();
        } else {
            let opened = breaker.on_failure();
            self.failed(lane, opened);
        }
        L2Operation {
            op,
            result,
            elapsed,
            error,
        }
        .emit();
        match res {
            Ok(Ok(v)) => Ok(v),
            _ => Err(result),
        }
    }
}
