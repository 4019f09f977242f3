//! Scripted misbehaviour of the token endpoints: what an outage, a throttle or a broken proxy looks like on
//! the wire.

use std::time::Duration;

/// One misbehaviour, applied to one token request instead of (or on top of) the normal answer.
///
/// Queue them with [`FakeIdentity::push_faults`](super::FakeIdentity::push_faults) or keep one on with
/// [`FakeIdentity::set_persistent_fault`](super::FakeIdentity::set_persistent_fault).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and body (JSON bodies are sent as `application/json`), and a `Retry-After`
    /// header when given.
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body, sent as is.
        body: String,
        /// `Retry-After` value (seconds or an HTTP date), if any.
        retry_after: Option<String>,
    },
    /// Answer normally, after this delay.
    Delay(Duration),
    /// Read the request and never answer; the connection stays open until the client gives up.
    NoResponse,
    /// Close the connection without answering.
    Close,
    /// 200 whose body is not JSON.
    Malformed,
    /// 500 with an HTML error page, as a proxy or a web server in front of the endpoint sends.
    Html,
    /// 200 with a body of this many bytes, streamed out in chunks.
    Oversized(usize),
    /// 200 whose `Content-Length` promises more bytes than are sent before the connection closes.
    Truncated,
    /// Send the headers of the normal answer, then trickle its body out over this duration.
    SlowBody(Duration),
    /// 307 redirect to this URL (clients must not follow it with the request's secrets).
    Redirect(String),
    /// 200 with exactly this JSON: missing fields, wrong types, whatever the test needs.
    Json(serde_json::Value),
}

impl Fault {
    /// `status` with a small Azure-like JSON error body and no `Retry-After`.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            body: error_body(status),
            retry_after: None,
        }
    }

    /// 200 with this token in IMDS's response shape (every number a string), valid for `lifetime`: a
    /// token the test built itself (another audience, an expired one…) handed out as a real one.
    pub fn token(jwt: &str, lifetime: std::time::Duration, resource: &str) -> Fault {
        let now = crate::jwt::epoch_secs(std::time::SystemTime::now());
        let secs = lifetime.as_secs();
        Fault::Json(serde_json::json!({
            "access_token": jwt,
            "refresh_token": "",
            "expires_in": secs.to_string(),
            "expires_on": (now + secs).to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }))
    }

    /// 429 with `Retry-After: retry_after_secs`.
    pub fn throttled(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            body: error_body(429),
            retry_after: Some(retry_after_secs.to_string()),
        }
    }
}

/// IMDS's throttling, as the emulator applies it: token requests above `per_second` in any one-second
/// window are answered 429 with `Retry-After: retry_after_secs` (throttled requests do not count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Token requests answered normally per second.
    pub per_second: u32,
    /// The `Retry-After` of a throttled answer, in seconds.
    pub retry_after_secs: u64,
}

impl RateLimit {
    /// `per_second` token requests answered normally each second; the others get 429 with
    /// `Retry-After: retry_after_secs`.
    pub fn new(per_second: u32, retry_after_secs: u64) -> RateLimit {
        RateLimit {
            per_second,
            retry_after_secs,
        }
    }
}

fn error_body(status: u16) -> String {
    let description = match status {
        404 | 410 => "The managed identity endpoint is being updated; retry later",
        429 => "Too many requests",
        500 => "Failed to retrieve token from the Active directory",
        503 => "Service unavailable",
        _ => "Injected failure",
    };
    serde_json::json!({
        "error": format!("http_{status}"),
        "error_description": description,
    })
    .to_string()
}

/// How the numbers of a token response (`expires_in`, `expires_on`, `not_before`, `ext_expires_in`) are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NumberFormat {
    /// As the real endpoint sends them: strings from managed-identity endpoints, numbers from Entra, a
    /// date for `expires_on` from the legacy 2017-09-01 App Service API.
    #[default]
    AsSpec,
    /// Every number as a JSON string of digits.
    Strings,
    /// Every number as a JSON number.
    Numbers,
    /// `expires_on` as a legacy date (`"11/23/2026 15:04:05 +00:00"`); other numbers as the spec.
    Dates,
}
