//! Stampede client of the load harness (`benches/load/run.sh`, scenario 6).
//!
//! Opens N connections first, then sends one `GET PATH` on each at the same instant and
//! reports how long each took to get its full response, as one JSON line:
//! `{"requests":N,"ok":..,"errors":..,"p50_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..}`.
//! wrk cannot do this: it keeps re-sending on each connection, so the 500 first answers
//! drown in later hits.
//!
//! ```text
//! load_stampede --addr 127.0.0.1:18080 --path /test/respond?delay_ms=150&v=1 -n 500
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

fn usage() -> ! {
    eprintln!("usage: load_stampede --addr HOST:PORT --path PATH [-n N]");
    std::process::exit(64)
}

/// Reads one HTTP/1.1 response with a Content-Length body; true when the status is 2xx.
async fn read_response(s: &mut TcpStream) -> std::io::Result<bool> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(head.starts_with("http/1.1 2") || head.starts_with("http/1.0 2"));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

fn main() {
    let mut addr: Option<SocketAddr> = None;
    let mut path: Option<String> = None;
    let mut n: usize = 500;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--addr" => addr = value.parse().ok(),
            "--path" => path = Some(value),
            "-n" => n = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(addr), Some(path)) = (addr, path) else {
        usage()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("load_stampede: cannot build runtime: {e}");
            std::process::exit(1)
        });
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: load_stampede\r\n\r\n"
    ));
    let (ok, errors, mut lat) = rt.block_on(async move {
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let barrier = Arc::clone(&barrier);
            let request = Arc::clone(&request);
            tasks.push(tokio::spawn(async move {
                let conn = TcpStream::connect(addr).await;
                barrier.wait().await;
                let mut s = conn.ok()?;
                let start = Instant::now();
                s.write_all(request.as_bytes()).await.ok()?;
                let fut = read_response(&mut s);
                match tokio::time::timeout(Duration::from_secs(30), fut).await {
                    Ok(Ok(true)) => Some(start.elapsed().as_secs_f64() * 1000.0),
                    _ => None,
                }
            }));
        }
        let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(n));
        for t in tasks {
            match t.await.ok().flatten() {
                Some(ms) => {
                    ok += 1;
                    lat.push(ms);
                }
                None => errors += 1,
            }
        }
        (ok, errors, lat)
    });
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"requests\":{n},\"ok\":{ok},\"errors\":{errors},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().copied().unwrap_or(0.0)
    );
}
