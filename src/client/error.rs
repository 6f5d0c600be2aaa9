//! What can go wrong in sidecache's own clients: a [`ClientError`] per failed call, and the
//! two input errors ([`InvalidUrl`], [`InvalidHeader`]) callers report before sending.

/// Why a call of a [`Connection`](super::Connection) got no complete answer.
///
/// `Display` is a short kind (`connect: connection refused`, `timeout`, `http: ...`)
/// because `bench` and `warm` group failures by it. A 4xx or 5xx status is an answer, not
/// an error of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL to send to is unusable.
    #[error(transparent)]
    InvalidUrl(#[from] InvalidUrl),
    /// A header to send is not valid HTTP.
    #[error(transparent)]
    InvalidHeader(#[from] InvalidHeader),
    /// The request could not be built (e.g. the path is not a valid request target).
    #[error("request: {0}")]
    Request(http::Error),
    /// The TCP connection could not be opened.
    #[error("connect: {0}")]
    Connect(std::io::ErrorKind),
    /// The HTTP/1.1 handshake on a new connection failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    /// Sending the request or reading the response head failed.
    #[error("http: {0}")]
    Http(hyper::Error),
    /// Reading the response body failed.
    #[error("body: {0}")]
    Body(hyper::Error),
    /// A body the caller keeps was longer than the limit (in bytes).
    #[error("body over {0} bytes")]
    BodyTooLarge(usize),
    /// The call did not finish within the caller's timeout.
    #[error("timeout")]
    Timeout,
}

/// A URL that is not `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {reason}")]
pub struct InvalidUrl {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A request header whose name or value is not valid HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid header {name:?}: {reason}")]
pub struct InvalidHeader {
    /// The header name as given.
    pub name: String,
    /// What is wrong with it (never the value, which may be a secret).
    pub reason: String,
}
