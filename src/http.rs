//! What the engine asks the shim to send, and what the shim feeds back. Plain data: no I/O here.

use serde::Serialize;
use std::sync::Arc;

pub type RequestId = u32;

/// `Retry-After`: how long an answer asks us to wait before trying again.
pub const RETRY_AFTER: &str = "retry-after";

/// Every header of an answer the core reads: a shim hands over these alone (the rest would only be copied and
/// thrown away on every answer).
pub const HEADERS_READ: [&str; 1] = [RETRY_AFTER];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub enum Method {
    GET,
    POST,
    DELETE,
}

/// One HTTP request to send. `headers` may hold the Fly token: log `log`, never the request itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id: RequestId,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Shared: the pushes of one fan-out carry the same payload.
    #[cfg_attr(test, ts(type = "string | null"))]
    pub body: Option<Arc<str>>,
    /// Abort the request after this long and report `Response::Timeout`.
    #[cfg_attr(test, ts(type = "number"))]
    pub timeout_ms: u64,
    /// The executor may answer this GET with the answer to an identical request received at most this long ago
    /// (0: always send). Set by the engine's policy, e.g. for Machine lists during a burst.
    #[cfg_attr(test, ts(type = "number"))]
    pub reuse_ms: u64,
    /// A redacted one-line description for logs.
    pub log: RequestLog,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "camelCase")]
pub struct RequestLog {
    pub target: String,
    /// `list`, `sync`, `lease`, `restart`, `poll`, `verify`, `release`.
    pub kind: &'static str,
    pub method: Method,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub machine: Option<String>,
    pub attempt: u32,
}

/// A request as it goes on the wire, before the engine gives it an id and a timeout. `headers` may hold a
/// token: never log them.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Arc<str>>,
}

/// What came back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Http { status: u16, headers: Vec<(String, String)>, body: String },
    /// No answer within the request's timeout (the shim aborted it).
    Timeout,
    /// No answer at all: connection refused, DNS, TLS… `message` is for the report.
    Network { message: String },
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Response::Http { headers, .. } => {
                headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
            }
            _ => None,
        }
    }

    /// Convenience for tests and the boundary.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Response::Http {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }
}
