//! Raw TCP for tests that send what no HTTP client would: bytes exactly as given, the answer
//! read by hand, a close told apart from an answer. Every wait is bounded.
//!
//! ```ignore
//! let mut conn = RawConn::connect(sc.listen_addr()).await;
//! conn.send(b"GET / HTTP/1.1\r\n\r\n").await;
//! let r = conn.response(Duration::from_secs(2)).await.expect("an answer");
//! assert_eq!(r.status, 400);
//! assert!(conn.closed_within(Duration::from_secs(2)).await);
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound of connecting and of each write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header fields in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What came back on a raw connection.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A complete response.
    Response(RawResponse),
    /// The connection was closed (EOF or reset) before a complete response.
    Closed,
}

impl Outcome {
    /// The response; panics if the connection was closed instead.
    pub fn expect_response(self, what: &str) -> RawResponse {
        match self {
            Outcome::Response(r) => r,
            Outcome::Closed => panic!("{what}: the connection closed without a response"),
        }
    }
}

/// One client connection speaking raw bytes.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet consumed by a response.
    buf: Vec<u8>,
}

impl RawConn {
    /// Connect to `addr`; panics if that fails within [`IO_TIMEOUT`].
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect {addr}: timed out"))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send `bytes`; `Err` if the peer closed or the write did not finish in [`IO_TIMEOUT`].
    pub async fn try_send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write timed out".to_owned()),
        }
    }

    /// Send `bytes`; panics on failure.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("send: {e}");
        }
    }

    /// Read one response (its body framed by Content-Length, chunked, or the close).
    /// `Err` when nothing complete arrived within `timeout` (the connection stayed open).
    pub async fn response(&mut self, timeout: Duration) -> Result<Outcome, String> {
        self.read_response(timeout, false).await
    }

    /// Like [`Self::response`] for the answer to a HEAD request (no body follows).
    pub async fn head_response(&mut self, timeout: Duration) -> Result<Outcome, String> {
        self.read_response(timeout, true).await
    }

    /// Read and drop everything until the peer closes: `true` if it did within `timeout`.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut sink = [0u8; 4096];
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut sink)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Read until the bytes received (and not yet consumed) contain `needle`; `Err` if the
    /// connection closed or `timeout` passed first.
    pub async fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + timeout;
        let mut chunk = [0u8; 16 << 10];
        while !self.buf.windows(needle.len()).any(|w| w == needle) {
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return Err("closed".to_owned()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(format!("{needle:?} not received within {timeout:?}")),
            }
        }
        Ok(())
    }

    /// Everything received (and not yet consumed) until the peer closed; `Err` if it did not
    /// close within `timeout`.
    pub async fn received_until_close(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let until = tokio::time::Instant::now() + timeout;
        let mut chunk = [0u8; 16 << 10];
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return Ok(std::mem::take(&mut self.buf)),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(format!("still open after {timeout:?}")),
            }
        }
    }

    /// Send `piece` once per `every` (whatever the peer answers is read and dropped) until
    /// the peer closes or `until`: the moment it closed, or `None` if it stayed open.
    pub async fn trickle(
        &mut self,
        piece: &[u8],
        every: Duration,
        until: std::time::Instant,
    ) -> Option<std::time::Instant> {
        let until = tokio::time::Instant::from_std(until);
        let mut sink = [0u8; 4096];
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                read = self.stream.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return Some(std::time::Instant::now()),
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    if self.stream.write_all(piece).await.is_err() {
                        return Some(std::time::Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(until) => return None,
            }
        }
    }

    async fn read_response(&mut self, timeout: Duration, head: bool) -> Result<Outcome, String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((response, used)) = parse_response(&self.buf, head)? {
                self.buf.drain(..used);
                return Ok(Outcome::Response(response));
            }
            let mut chunk = [0u8; 16 << 10];
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return Ok(self.closed()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    return Err(format!(
                        "no complete response within {timeout:?} (read so far: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
            }
        }
    }

    /// At the close: a close-delimited response if one was under way, else `Closed`.
    fn closed(&mut self) -> Outcome {
        match parse_head(&self.buf) {
            Ok(Some((status, headers, len)))
                if !headers.iter().any(|(n, _)| {
                    n.eq_ignore_ascii_case("content-length")
                        || n.eq_ignore_ascii_case("transfer-encoding")
                }) =>
            {
                let body = self.buf[len..].to_vec();
                self.buf.clear();
                Outcome::Response(RawResponse {
                    status,
                    headers,
                    body,
                })
            }
            _ => Outcome::Closed,
        }
    }
}

/// Send `bytes` on a new connection to `addr` and read one response (within 5 s); panics
/// if none comes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let what = String::from_utf8_lossy(bytes).into_owned();
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes).await;
    conn.response(IO_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{what:?}: {e}"))
        .expect_response(&what)
}

type Head = (u16, Vec<(String, String)>, usize);

/// The status, fields and length of a complete response head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((
            resp.code.unwrap_or(0),
            owned_fields(resp.headers),
            len,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!(
            "not an HTTP response ({e}): {:?}",
            String::from_utf8_lossy(buf)
        )),
    }
}

/// Parsed header fields as owned `(name, value)` pairs, in order (values lossily UTF-8).
pub fn owned_fields(fields: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// A complete response at the start of `buf`, and the bytes it took.
fn parse_response(buf: &[u8], head: bool) -> Result<Option<(RawResponse, usize)>, String> {
    let Some((status, headers, len)) = parse_head(buf)? else {
        return Ok(None);
    };
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let done = |body: Vec<u8>, used| {
        let response = RawResponse {
            status,
            headers: headers.clone(),
            body,
        };
        Ok(Some((response, used)))
    };
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return done(Vec::new(), len);
    }
    if field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return match dechunk(&buf[len..])? {
            Some((body, used)) => done(body, len + used),
            None => Ok(None),
        };
    }
    match field("content-length") {
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {v:?}"))?;
            if buf.len() >= len + n {
                done(buf[len..len + n].to_vec(), len + n)
            } else {
                Ok(None)
            }
        }
        // Close-delimited: complete only at the close (see `RawConn::closed`).
        None => Ok(None),
    }
}

/// A complete chunked body at the start of `buf` (payload, bytes used), trailers skipped.
pub fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete((start, size))) => (start, size as usize),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(format!("bad chunk at {at}")),
        };
        at += start;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}
