//! WebSockets for tests (RFC 6455), both ends: an echo origin that completes the opening
//! handshake, records every request head it receives, and echoes each data frame back; and
//! the client's frames (masked, as a client must send them) and handshake. Every wait is
//! bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::raw::owned_fields;

/// RFC 6455 §1.3: appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How long any one read may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Frame opcodes used here.
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{}{GUID}", key.trim())).digest();
    base64::engine::general_purpose::STANDARD.encode(digest.bytes())
}

/// One request head the origin received: method, target, fields in order.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    /// Every value of field `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An echo origin: a request asking for `Upgrade: websocket` gets 101 and its frames
/// echoed; any other request gets `200 {"upgraded":false}` (what an origin whose handshake
/// was stripped on the way answers).
pub struct EchoOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Handshake>>>,
    accept: JoinHandle<()>,
}

impl EchoOrigin {
    pub async fn start() -> EchoOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo origin");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, seen).await;
                });
            }
        });
        EchoOrigin { addr, seen, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request head received so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        sidecache::sync::lock(&self.seen).clone()
    }
}

impl Drop for EchoOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Handshake>>>) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        let (head, used) = loop {
            if let Some(parsed) = parse_request(&buf)? {
                break parsed;
            }
            if !read_more(&mut stream, &mut buf).await? {
                return Ok(());
            }
        };
        buf.drain(..used);
        sidecache::sync::lock(&seen).push(head.clone());
        let upgrade = head
            .header_all("upgrade")
            .first()
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let key = head
            .header_all("sec-websocket-key")
            .first()
            .map(|k| k.to_string());
        let (true, Some(key)) = (upgrade, key) else {
            let body = "{\"upgraded\":false}";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            write(&mut stream, answer.as_bytes()).await?;
            continue;
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        write(&mut stream, answer.as_bytes()).await?;
        // Frames, echoed (unmasked, as a server sends them) until a close.
        loop {
            let (opcode, payload) = read_frame(&mut stream, &mut buf, true).await?;
            write(&mut stream, &frame(opcode, &payload, None)).await?;
            if opcode == CLOSE {
                return Ok(());
            }
        }
    }
}

fn parse_request(buf: &[u8]) -> Result<Option<(Handshake, usize)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => Ok(Some((
            Handshake {
                method: req.method.unwrap_or("").to_owned(),
                target: req.path.unwrap_or("").to_owned(),
                headers: owned_fields(req.headers),
            },
            used,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad request head: {e}")),
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Read more into `buf`: `false` at EOF.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut chunk = [0u8; 16 << 10];
    match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("read timed out".to_owned()),
    }
}

/// One final frame: `opcode`, `payload`, masked with `mask` (a client's) or not.
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Read one frame off `stream` (bytes already read wait in `buf`): its opcode and payload
/// (unmasked). `masked`: the peer is a client, whose frames must be masked.
pub async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    masked: bool,
) -> Result<(u8, Vec<u8>), String> {
    loop {
        if let Some((opcode, payload, used)) = parse_frame(buf, masked)? {
            buf.drain(..used);
            return Ok((opcode, payload));
        }
        if !read_more(stream, buf).await? {
            return Err("closed before a whole frame".to_owned());
        }
    }
}

fn parse_frame(buf: &[u8], masked: bool) -> Result<Option<(u8, Vec<u8>, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 && !masked || buf[1] & 0x80 == 0 && masked {
        return Err(format!("frame mask bit wrong (masked expected: {masked})"));
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    let key = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let key = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(key)
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = match key {
        Some(k) => buf[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
        None => buf[at..at + len].to_vec(),
    };
    Ok(Some((opcode, payload, at + len)))
}
