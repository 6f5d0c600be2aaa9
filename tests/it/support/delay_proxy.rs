//! A real TCP proxy for tests, put in front of a server (e.g. `redis-server`) to hold the
//! bytes of one direction in flight: a delay switched on ([`DelayProxy::delay_on`]) lasts
//! until it is switched off ([`DelayProxy::delay_off`]), when the held bytes go on in order.
//! Each direction has its own switch, for every connection through the proxy, and
//! [`DelayProxy::held`] says how many bytes wait, so a test knows its request (or the answer
//! to it) is in flight before it makes something else happen.
//!
//! [`DelayProxy::cut`] severs the link instead: every connection through the proxy is closed
//! (held bytes are lost) and new ones are closed as soon as they are accepted, until
//! [`DelayProxy::heal`].
//!
//! ```ignore
//! let proxy = DelayProxy::start(redis.addr()).await;   // clients use proxy.redis_url()
//! proxy.delay_on(Direction::ToServer);
//! // ... start a write, wait until proxy.held(Direction::ToServer) > 0, purge elsewhere ...
//! proxy.delay_off(Direction::ToServer);                // the write lands after the purge
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (requests).
    ToServer,
    /// From the server to the client (answers).
    ToClient,
}

/// The switch and the held-bytes count of one direction.
#[derive(Clone)]
struct Gate {
    delayed: watch::Sender<bool>,
    held: Arc<AtomicU64>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            delayed: watch::Sender::new(false),
            held: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A running proxy; dropping it closes the listener and every connection.
pub struct DelayProxy {
    addr: SocketAddr,
    gates: [Gate; 2],
    cut: watch::Sender<bool>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

fn index(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl DelayProxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the delay proxy");
        let addr = listener.local_addr().expect("delay proxy address");
        let gates = [Gate::new(), Gate::new()];
        let cut = watch::Sender::new(false);
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (g, c, t) = (gates.clone(), cut.clone(), Arc::clone(&tasks));
        tasks
            .lock()
            .expect("tasks")
            .spawn(accept(listener, upstream, g, c, t));
        DelayProxy {
            addr,
            gates,
            cut,
            tasks,
        }
    }

    /// `redis://ADDR/`, for a Redis behind the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// From now on, bytes travelling `d` wait in the proxy.
    pub fn delay_on(&self, d: Direction) {
        self.gates[index(d)].delayed.send_replace(true);
    }

    /// The bytes held `d` go on, in order, and new ones pass at once.
    pub fn delay_off(&self, d: Direction) {
        self.gates[index(d)].delayed.send_replace(false);
    }

    /// From now on, no connection passes: open ones are closed, new ones closed on accept.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Connections pass again (after [`DelayProxy::cut`]).
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Bytes read from one side and not yet written to the other, travelling `d`.
    pub fn held(&self, d: Direction) -> u64 {
        self.gates[index(d)].held.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    gates: [Gate; 2],
    cut: watch::Sender<bool>,
    tasks: Arc<Mutex<JoinSet<()>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if *cut.borrow() {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let mut set = tasks.lock().expect("tasks");
        set.spawn(until_cut(
            pump(client_read, server_write, gates[0].clone()),
            cut.subscribe(),
        ));
        set.spawn(until_cut(
            pump(server_read, client_write, gates[1].clone()),
            cut.subscribe(),
        ));
    }
}

/// Run `pump` until it ends or the link is cut (dropping its halves closes the connection).
async fn until_cut(pump: impl std::future::Future<Output = ()>, mut cut: watch::Receiver<bool>) {
    tokio::select! {
        () = pump => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Copy `from` to `to`, holding each chunk while the gate's delay is on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Gate,
) {
    let mut delayed = gate.delayed.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        gate.held.fetch_add(n as u64, Ordering::SeqCst);
        let released = delayed.wait_for(|on| !*on).await.is_ok();
        let written = released && to.write_all(&buf[..n]).await.is_ok();
        gate.held.fetch_sub(n as u64, Ordering::SeqCst);
        if !written {
            break;
        }
    }
    let _ = to.shutdown().await;
}
