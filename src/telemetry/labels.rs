//! The label values of sidecache's metric families: enums of static names (`label_enum!`),
//! so a label is never a free-form string and every family's label set is bounded and listed
//! (`ALL`). Re-exported by [`super::metrics`], which holds the registry and the handles.

crate::labels::label_enum! {
    /// What started a warming pass.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum WarmTrigger {
        /// `[warm] on_start = true`.
        Start => "start",
        /// `[warm] every`: the schedule came round.
        Schedule => "schedule",
        /// A reload changed the warm list.
        Reload => "reload",
    }
    /// The metric label value.
    fn label;
}

/// Request methods as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl MethodLabel {
    pub const COUNT: usize = 8;
    pub fn from_method(m: &http::Method) -> Self {
        match *m {
            http::Method::GET => Self::Get,
            http::Method::HEAD => Self::Head,
            http::Method::POST => Self::Post,
            http::Method::PUT => Self::Put,
            http::Method::PATCH => Self::Patch,
            http::Method::DELETE => Self::Delete,
            http::Method::OPTIONS => Self::Options,
            _ => Self::Other,
        }
    }
    pub const fn label(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "other",
        }
    }
}

/// `1xx` .. `5xx` as a bounded label (anything else counts as `5xx`).
pub const fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The `status` label of each status class (see [`status_class_index`]).
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

crate::labels::label_enum! {
    /// Redis operations.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum L2Op {
        Get => "get",
        Set => "set",
        Del => "del",
        /// One batch of a purge (the first also records its tombstone).
        Purge => "purge",
        Publish => "publish",
        /// Taking or releasing a cross-instance fill lock (`cache.l2.fill_lock`).
        Lock => "lock",
        /// Reading the finished-purge log (the purges other instances finished).
        PurgeLog => "purge_log",
    }
    fn label;
}

/// How a Redis operation ended. `Skipped`: the breaker was open, nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Result {
    Ok,
    Error,
    Timeout,
    Skipped,
}
impl L2Result {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Skipped => "skipped",
        }
    }
}

crate::labels::label_enum! {
    /// Why an upstream request failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum UpstreamErrorKind {
        Connect => "connect",
        Timeout => "timeout",
        Reset => "reset",
        Status5xx => "status_5xx",
    }
    fn label;
}

/// Why an L1 entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCause {
    /// The byte budget was full.
    Size,
    /// Its lifetime ran out.
    Expired,
    /// Replaced by a newer write.
    Replaced,
    /// Purged or invalidated.
    Explicit,
}
impl EvictionCause {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Expired => "expired",
            Self::Replaced => "replaced",
            Self::Explicit => "explicit",
        }
    }
}

crate::labels::label_enum! {
    /// Whether something worked: the `result` label of reloads and purge broadcasts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Success {
        Ok => "ok",
        Error => "error",
    }
    fn label;
}

crate::labels::label_enum! {
    /// What a warming request found: the `result` label of `sidecache_warm_urls_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum WarmUrlResult {
        /// The origin was called.
        Fetched => "fetched",
        /// Already in L1 or L2.
        AlreadyWarm => "already_warm",
        /// A status outside 2xx/3xx, a timeout or a transport error.
        Failed => "failed",
    }
    fn label;
}

crate::labels::label_enum! {
    /// Why a received purge broadcast was dropped: the `reason` label of
    /// `sidecache_purge_messages_dropped_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum MessageDrop {
        /// Not a purge message this build reads (bad JSON, unknown version).
        Malformed => "malformed",
        /// A secret is configured and the message carries no signature.
        Unsigned => "unsigned",
        /// A secret is configured and the signature does not match it.
        BadSignature => "bad_signature",
        /// Its purge was applied already (a duplicate, or a replay within the replay window), or
        /// it is older than the replay window.
        Replayed => "replayed",
        /// A secret is configured and the message is of the old format, which carries no
        /// generation, so a replay could not be told apart.
        Replayable => "replayable",
    }
    fn label;
}

crate::labels::label_enum! {
    /// Why a client connection was refused before any of its bytes were read: the `reason` label
    /// of `sidecache_connections_refused_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ConnectionRefusal {
        /// `server.max_connections` connections were already open (answered 503).
        MaxConnections => "max_connections",
    }
    fn label;
}

crate::labels::label_enum! {
    /// Which way an upgraded connection's bytes went: the `direction` label of
    /// `sidecache_tunnel_bytes_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TunnelDirection {
        /// From the client to the origin.
        ToOrigin => "to_origin",
        /// From the origin to the client.
        ToClient => "to_client",
    }
    fn label;
}

crate::labels::label_enum! {
    /// Why a request was refused before routing (or its connection closed before its head was
    /// complete): the `reason` label of `sidecache_requests_refused_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RequestRefusal {
        /// The head is over `server.max_header_bytes` (431).
        HeaderTooLarge => "header_too_large",
        /// More header fields than `server.max_headers` (431).
        TooManyHeaders => "too_many_headers",
        /// A bad method token or an unsupported or malformed version (400).
        MalformedRequestLine => "malformed_request_line",
        /// A request target that is neither origin-form, absolute-form nor `OPTIONS *` (400).
        BadTarget => "bad_target",
        /// A bare CR, obs-fold, an invalid name character or a control byte in a field (400).
        MalformedHeader => "malformed_header",
        /// HTTP/1.1 without `Host` (400).
        MissingHost => "missing_host",
        /// More than one `Host` (400).
        DuplicateHost => "duplicate_host",
        /// An absolute-form target whose authority is not the `Host` sent beside it (400).
        HostDiffersFromTarget => "host_differs_from_target",
        /// More than one `Content-Length`, equal or not, in fields or in a list (400).
        DuplicateContentLength => "duplicate_content_length",
        /// A `Content-Length` that is not a decimal number (400).
        InvalidContentLength => "invalid_content_length",
        /// `Content-Length` together with `Transfer-Encoding` (400).
        ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
        /// `Transfer-Encoding` in an HTTP/1.0 request (400).
        TransferEncodingOnHttp10 => "transfer_encoding_on_http10",
        /// A `Transfer-Encoding` other than exactly `chunked` (501).
        UnsupportedTransferEncoding => "unsupported_transfer_encoding",
        /// The head did not arrive within `server.header_timeout` (408, then closed).
        HeaderTimeout => "header_timeout",
        /// An admin request body did not arrive within `server.admin_body_timeout` (408).
        AdminBodyTimeout => "admin_body_timeout",
    }
    fn label;
}
