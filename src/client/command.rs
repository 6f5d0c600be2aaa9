//! What the client commands share at the binary's edge: a runtime to run on
//! ([`block_on`]) and how they ended ([`CommandStatus`], which the CLI turns into an exit
//! code).

use std::future::Future;

/// How a client command (`bench`, `warm`, `purge`) ended; it has already told the user why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    /// Everything it was asked to do was done (and within budget).
    Succeeded,
    /// It ran but something failed: a request, a budget, the answer, or the runtime.
    Failed,
    /// It could not start: its options or config do not make sense.
    BadUsage,
}

/// Runs a client command's future to completion on a fresh multi-threaded runtime.
pub fn block_on<F: Future>(f: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}
