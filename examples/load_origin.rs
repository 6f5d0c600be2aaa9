//! The origin of the load harness (`benches/load/run.sh`): the stand-in legacy backend
//! (`sidecache::demo::Backend`) on a fixed address with a fixed artificial delay, nothing else.
//!
//! ```text
//! cargo build --release --example load_origin
//! load_origin --listen 127.0.0.1:18000 --delay 0ms
//! ```
//! Origin requests are counted per path at `GET /test/count`; the harness reads it before and
//! after a scenario to get the origin hits (and hence the hit ratio) of every system alike.
//! Runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use sidecache::demo::{Backend, BackendOptions};

fn usage() -> ! {
    eprintln!(
        "usage: load_origin [--listen ADDR] [--delay DURATION]  (e.g. --delay 0ms, 150ms, 1s)"
    );
    std::process::exit(64)
}

fn parse_delay(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

fn main() {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 18000));
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = value.parse().unwrap_or_else(|_| usage()),
            "--delay" => delay = parse_delay(&value).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("load_origin: cannot build runtime: {e}");
            std::process::exit(1)
        });
    rt.block_on(async move {
        let backend = match Backend::start(BackendOptions { listen, delay }).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("load_origin: cannot listen on {listen}: {e}");
                std::process::exit(1)
            }
        };
        eprintln!(
            "load_origin: listening on {} (delay {delay:?})",
            backend.addr()
        );
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("load_origin: cannot install SIGTERM handler: {e}");
                    std::process::exit(1)
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(backend);
    });
}
