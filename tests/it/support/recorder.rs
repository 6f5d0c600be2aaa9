//! A recording upstream: a small raw-TCP HTTP/1.1 origin that keeps every request head it
//! receives exactly as it arrived (method, target, fields in order and spelling) and what
//! became of the request's body, so a test can assert what reached the origin, not only
//! what a client saw.
//!
//! It answers `200` with `{"recorded": N}` (N counts requests from 1), either after reading
//! the whole body ([`AnswerWhen::AfterBody`], keeping the connection), or starting at once
//! after the head ([`AnswerWhen::BeforeBody`]: the header and the first chunk of a chunked
//! body, the rest only once the request body is complete, then closing).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidecache::sync::lock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::raw::owned_fields;

/// How much of each request body the recorder keeps.
pub const KEPT_BODY: usize = 1 << 20;

/// How long one connection may stay silent before the recorder drops it.
const IDLE: Duration = Duration::from_secs(30);

/// When the recorder answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerWhen {
    /// After the whole request body arrived.
    AfterBody,
    /// Start right after the head, before reading the body (as a streaming origin does),
    /// and finish the answer only once the body is complete.
    BeforeBody,
}

/// What became of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Still being read.
    Reading,
    /// Complete as framed (Content-Length reached, or the last chunk).
    Complete,
    /// The connection closed (or failed) before the body was complete.
    Aborted,
}

/// One request as the recorder received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// Header fields in order, names as spelled.
    pub headers: Vec<(String, String)>,
    /// Payload bytes of the body received (chunked framing removed).
    pub body_bytes: usize,
    /// The first [`KEPT_BODY`] bytes of that payload.
    pub body: Vec<u8>,
    pub body_end: BodyEnd,
}

impl Received {
    /// Every value of field `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running recording upstream; dropping it stops the accept loop.
pub struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    accept: JoinHandle<()>,
}

impl Recorder {
    /// Start on a free `127.0.0.1` port.
    pub async fn start(when: AnswerWhen) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let addr = listener.local_addr().expect("recorder addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, when, seen).await;
                });
            }
        });
        Recorder { addr, seen, accept }
    }

    /// The address to configure as an upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.seen).clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }

    /// Wait up to `timeout` until the body of request `index` is no longer being read.
    pub async fn body_end(&self, index: usize, timeout: Duration) -> BodyEnd {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let end = lock(&self.seen)
                .get(index)
                .map_or(BodyEnd::Reading, |r| r.body_end);
            if end != BodyEnd::Reading || tokio::time::Instant::now() >= until {
                return end;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How a request body is framed.
enum Framing {
    Length(usize),
    Chunked,
}

async fn serve(
    mut stream: TcpStream,
    when: AnswerWhen,
    seen: Arc<Mutex<Vec<Received>>>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        let (received, framing, used) = loop {
            if let Some(head) = parse_request(&buf)? {
                break head;
            }
            if !read_more(&mut stream, &mut buf).await? {
                return Ok(());
            }
        };
        buf.drain(..used);
        let index = {
            let mut all = lock(&seen);
            all.push(received);
            all.len() - 1
        };
        let answer = format!("{{\"recorded\":{}}}", index + 1);
        let streaming = when == AnswerWhen::BeforeBody;
        if streaming {
            let (start, _) = answer.split_at(answer.len() - 1);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{start}\r\n",
                start.len()
            );
            write(&mut stream, head.as_bytes()).await?;
        }
        let mut payload = 0;
        let complete = read_body(&mut stream, &mut buf, &framing, &mut payload, |data, n| {
            let mut all = lock(&seen);
            let r = &mut all[index];
            r.body_bytes = n;
            let room = KEPT_BODY.saturating_sub(r.body.len());
            r.body.extend_from_slice(&data[..data.len().min(room)]);
        })
        .await;
        lock(&seen)[index].body_end = if complete {
            BodyEnd::Complete
        } else {
            BodyEnd::Aborted
        };
        if !complete {
            return Ok(());
        }
        if streaming {
            return write(&mut stream, b"1\r\n}\r\n0\r\n\r\n").await;
        }
        let text = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        write(&mut stream, text.as_bytes()).await?;
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Read more bytes into `buf`: `false` at EOF, `Err` on an error or after [`IDLE`].
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut chunk = [0u8; 16 << 10];
    match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("idle".to_owned()),
    }
}

/// Read the body as framed; `true` if it was complete. `progress` sees each piece of
/// payload and the payload length so far.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: &Framing,
    payload: &mut usize,
    mut progress: impl FnMut(&[u8], usize),
) -> bool {
    loop {
        match framing {
            Framing::Length(n) => {
                let n = *n;
                let take = buf.len().min(n - *payload);
                *payload += take;
                progress(&buf[..take], *payload);
                buf.drain(..take);
                if *payload == n {
                    return true;
                }
            }
            Framing::Chunked => loop {
                match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((start, 0))) => {
                        // The last chunk: skip trailers up to the blank line.
                        if let Some(end) = buf[start..].windows(2).position(|w| w == b"\r\n") {
                            if end == 0 {
                                buf.drain(..start + 2);
                                return true;
                            }
                            buf.drain(start..start + end + 2);
                            continue;
                        }
                        break;
                    }
                    Ok(httparse::Status::Complete((start, size))) => {
                        let size = size as usize;
                        if buf.len() < start + size + 2 {
                            break;
                        }
                        *payload += size;
                        progress(&buf[start..start + size], *payload);
                        buf.drain(..start + size + 2);
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return false,
                }
            },
        }
        match read_more(stream, buf).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return false,
        }
    }
}

/// A complete request head at the start of `buf`: what was received, its body framing, and
/// the bytes the head took.
fn parse_request(buf: &[u8]) -> Result<Option<(Received, Framing, usize)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad request head: {e}")),
    };
    let headers = owned_fields(req.headers);
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let framing = if value("transfer-encoding").is_some() {
        Framing::Chunked
    } else {
        Framing::Length(
            value("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    };
    let received = Received {
        method: req.method.unwrap_or("").to_owned(),
        target: req.path.unwrap_or("").to_owned(),
        headers,
        body_bytes: 0,
        body: Vec::new(),
        body_end: BodyEnd::Reading,
    };
    Ok(Some((received, framing, used)))
}
