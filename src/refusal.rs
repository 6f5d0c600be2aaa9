//! What sidecache answers when it refuses a request before routing it (a head the edge
//! refuses, an admin body that never arrived): the status and the small JSON body of each
//! [`RequestRefusal`]. Shared by the data plane's edge and the admin listener.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::config::ConnectionLimits;
use crate::telemetry::metrics::RequestRefusal;

/// The status a refused request is answered with.
pub fn status(reason: RequestRefusal) -> StatusCode {
    match reason {
        RequestRefusal::HeaderTooLarge | RequestRefusal::TooManyHeaders => {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        }
        RequestRefusal::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
        RequestRefusal::HeaderTimeout | RequestRefusal::AdminBodyTimeout => {
            StatusCode::REQUEST_TIMEOUT
        }
        RequestRefusal::MalformedRequestLine
        | RequestRefusal::BadTarget
        | RequestRefusal::MalformedHeader
        | RequestRefusal::MissingHost
        | RequestRefusal::DuplicateHost
        | RequestRefusal::HostDiffersFromTarget
        | RequestRefusal::DuplicateContentLength
        | RequestRefusal::InvalidContentLength
        | RequestRefusal::ContentLengthWithTransferEncoding
        | RequestRefusal::TransferEncodingOnHttp10 => StatusCode::BAD_REQUEST,
    }
}

/// The JSON body of a refused request: `{"error": kind, "reason": label}`, plus the bound it
/// broke as `"limit"` (bytes, fields or milliseconds) when there is one.
pub fn body(reason: RequestRefusal, limits: &ConnectionLimits) -> Bytes {
    let error = match status(reason) {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_header_too_large",
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        _ => "bad_request",
    };
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let limit = match reason {
        RequestRefusal::HeaderTooLarge => Some(limits.max_header_bytes as u64),
        RequestRefusal::TooManyHeaders => Some(limits.max_headers as u64),
        RequestRefusal::HeaderTimeout => Some(millis(limits.header_timeout)),
        RequestRefusal::AdminBodyTimeout => Some(millis(limits.admin_body_timeout)),
        _ => None,
    };
    let value = match limit {
        Some(limit) => json!({"error": error, "reason": reason.label(), "limit": limit}),
        None => json!({"error": error, "reason": reason.label()}),
    };
    Bytes::from(value.to_string())
}
