//! The one mapping from refusals to the wire: every error an agent or a site can receive is a
//! [`Refusal`], and [`Refusal::status`] / [`Refusal::code`] are the only place where status codes
//! and error codes are chosen (as rustls maps its errors to alerts in one place).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prost::Message;

use crate::envelope::EnvelopeError;
use crate::proto::ErrorResponse;

/// Content type of every protobuf body.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Why a request was refused. The variant decides status and code; the text is for humans and
/// never carries secret material or internal detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not the protobuf message the endpoint expects (400 `malformed`).
    Malformed(String),
    /// The envelope version is not spoken here (400 `unsupported_version`).
    UnsupportedVersion,
    /// The envelope was fine but what it carries is not a valid report (400 `invalid_report`).
    InvalidReport(String),
    /// The key epoch is not held by this relay (401 `unknown_key_epoch`).
    UnknownKeyEpoch,
    /// The AEAD open failed; deliberately no detail (401 `decrypt_failed`).
    DecryptFailed,
    /// The device signature does not verify (401 `bad_signature`).
    BadSignature,
    /// Public key, outer and inner device ids do not agree (401 `identity_mismatch`).
    IdentityMismatch,
    /// The site blocked this device (403 `device_blocked`).
    DeviceBlocked,
    /// Wrong enrollment secret, or enrollment closed (403 `enrollment_refused`).
    EnrollmentRefused,
    /// The body is larger than the listener's limit (413 `too_large`).
    TooLarge { limit: usize },
    /// Created longer ago than the retention age (422 `stale`).
    Stale,
    /// Created further in the future than the allowed clock skew (422 `from_the_future`).
    FromTheFuture,
    /// Too many requests from this peer, e.g. an enrollment flood (429 `rate_limited`).
    RateLimited { retry_after: Duration },
    /// The spool is full or the site is far behind (503 `overloaded`).
    Overloaded { retry_after: Duration },
    /// The request body arrived too slowly (408 `timeout`).
    Timeout,
    /// No such endpoint (404 `not_found`).
    NotFound,
    /// The endpoint exists but the thing it names does not, e.g. an unknown baseline on the
    /// admin API (404 `not_found`).
    NoSuch(String),
    /// The endpoint exists but not with this method (405 `method_not_allowed`).
    MethodNotAllowed,
    /// A site-facing request that does not fit the relay's state, e.g. an ack for another
    /// spool (409 `conflict`).
    Conflict(String),
    /// The admin API was called without a valid bearer token (401 `unauthorized`).
    Unauthorized,
    /// The administrator's role does not allow this route (403 `forbidden`); names the role
    /// needed.
    Forbidden { needed: &'static str },
    /// Something failed inside the server; details are in its log (500 `internal`).
    Internal,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        use Refusal::*;
        match self {
            Malformed(_) | UnsupportedVersion | InvalidReport(_) => StatusCode::BAD_REQUEST,
            UnknownKeyEpoch | DecryptFailed | BadSignature | IdentityMismatch | Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            DeviceBlocked | EnrollmentRefused | Forbidden { .. } => StatusCode::FORBIDDEN,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Stale | FromTheFuture => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            NotFound | NoSuch(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict(_) => StatusCode::CONFLICT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            Malformed(_) => "malformed",
            UnsupportedVersion => "unsupported_version",
            InvalidReport(_) => "invalid_report",
            UnknownKeyEpoch => "unknown_key_epoch",
            DecryptFailed => "decrypt_failed",
            BadSignature => "bad_signature",
            IdentityMismatch => "identity_mismatch",
            DeviceBlocked => "device_blocked",
            EnrollmentRefused => "enrollment_refused",
            TooLarge { .. } => "too_large",
            Stale => "stale",
            FromTheFuture => "from_the_future",
            RateLimited { .. } => "rate_limited",
            Overloaded { .. } => "overloaded",
            Timeout => "timeout",
            NotFound | NoSuch(_) => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict(_) => "conflict",
            Unauthorized => "unauthorized",
            Forbidden { .. } => "forbidden",
            Internal => "internal",
        }
    }

    pub fn message(&self) -> String {
        use Refusal::*;
        match self {
            Malformed(why) => format!("malformed request: {why}"),
            UnsupportedVersion => {
                "envelope version not supported; this relay speaks version 1".into()
            }
            InvalidReport(why) => format!("invalid report: {why}"),
            UnknownKeyEpoch => "key epoch not known to this relay; enroll again".into(),
            DecryptFailed => "the submission could not be decrypted; enroll again".into(),
            BadSignature => "the device signature does not verify".into(),
            IdentityMismatch => "device identity does not match the envelope".into(),
            DeviceBlocked => "this device is blocked by the site".into(),
            EnrollmentRefused => "enrollment refused".into(),
            TooLarge { limit } => format!("request body exceeds the limit of {limit} bytes"),
            Stale => "the submission is older than the site's retention age".into(),
            FromTheFuture => {
                "the submission's creation time is in the future; check the device clock".into()
            }
            RateLimited { .. } => "too many requests; retry later".into(),
            Overloaded { .. } => "the relay cannot take more right now; retry later".into(),
            Timeout => "the request arrived too slowly".into(),
            NotFound => "no such endpoint".into(),
            NoSuch(what) => what.clone(),
            MethodNotAllowed => "method not allowed on this endpoint".into(),
            Conflict(why) => why.clone(),
            Unauthorized => "a valid bearer token is required".into(),
            Forbidden { needed } => format!("this needs an administrator with role {needed}"),
            Internal => "internal error; see the server log".into(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::RateLimited { retry_after } | Refusal::Overloaded { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The complete HTTP response: status, `ErrorResponse` body, and `Retry-After` where the
    /// table lists it.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = ErrorResponse {
            code: self.code().into(),
            message: self.message(),
        }
        .encode_to_vec();
        let mut resp = protobuf_response(self.status(), body);
        if let Some(ra) = self.retry_after() {
            let secs = ra.as_secs().max(1);
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"),
            );
        }
        if matches!(self, Refusal::Timeout) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl Refusal {
    /// The same refusal for a JSON API (the site's admin API): `{"code": …, "message": …}` with
    /// the status and headers of [`Refusal::into_response`]; a 401 also names the scheme.
    pub fn into_json_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "code": self.code(), "message": self.message() });
        let mut resp = json_response(self.status(), &body);
        if let Some(ra) = self.retry_after() {
            let secs = ra.as_secs().max(1);
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"),
            );
        }
        if matches!(self, Refusal::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A response with a JSON body.
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Full<Bytes>> {
    // Serializing the store's plain row types cannot fail; an empty object is the fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

/// Content type of every JSON body.
pub const JSON: &str = "application/json";

impl From<EnvelopeError> for Refusal {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Malformed => Refusal::Malformed("not a valid sealed submission".into()),
            EnvelopeError::UnsupportedVersion => Refusal::UnsupportedVersion,
            EnvelopeError::UnknownKeyEpoch => Refusal::UnknownKeyEpoch,
            EnvelopeError::IdentityMismatch => Refusal::IdentityMismatch,
            EnvelopeError::DecryptFailed => Refusal::DecryptFailed,
            EnvelopeError::BadSignature => Refusal::BadSignature,
        }
    }
}

/// A response with a protobuf body.
pub fn protobuf_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    resp
}

/// What an agent should do with a refusal, as PROTOCOL.md tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    /// Drop the message and log it: resending cannot help.
    Drop,
    /// Send it again smaller (a compliance report with its texts shortened); drop it when it
    /// cannot get smaller.
    Shorten,
    /// Enroll again, then resend.
    Reenroll,
    /// Stop submitting: the site does not want this device.
    Stop,
    /// Keep the message and retry after the given delay (plus jitter).
    RetryLater,
}

/// The agent's side of the table, keyed by the code so that agents act on codes, not statuses.
pub fn agent_action(code: &str) -> AgentAction {
    match code {
        "unknown_key_epoch" | "decrypt_failed" | "bad_signature" | "identity_mismatch" => {
            AgentAction::Reenroll
        }
        "device_blocked" | "enrollment_refused" => AgentAction::Stop,
        // "http_413": a proxy or load balancer in front of the relay refused the body with its
        // own, smaller limit and no ErrorResponse. Retried unchanged it would be refused forever,
        // and the queue behind it would never be sent.
        "too_large" | "http_413" => AgentAction::Shorten,
        "malformed" | "unsupported_version" | "invalid_report" | "stale" | "from_the_future" => {
            AgentAction::Drop
        }
        // rate_limited, overloaded, timeout, internal and anything a newer relay may add.
        _ => AgentAction::RetryLater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of DESIGN section 3, row by row.
    #[test]
    fn error_table() {
        let d = Duration::from_secs(7);
        let rows: Vec<(Refusal, u16, &str)> = vec![
            (Refusal::Malformed("x".into()), 400, "malformed"),
            (Refusal::UnsupportedVersion, 400, "unsupported_version"),
            (Refusal::InvalidReport("x".into()), 400, "invalid_report"),
            (Refusal::UnknownKeyEpoch, 401, "unknown_key_epoch"),
            (Refusal::DecryptFailed, 401, "decrypt_failed"),
            (Refusal::BadSignature, 401, "bad_signature"),
            (Refusal::IdentityMismatch, 401, "identity_mismatch"),
            (Refusal::DeviceBlocked, 403, "device_blocked"),
            (Refusal::EnrollmentRefused, 403, "enrollment_refused"),
            (Refusal::TooLarge { limit: 1 }, 413, "too_large"),
            (Refusal::Stale, 422, "stale"),
            (Refusal::FromTheFuture, 422, "from_the_future"),
            (Refusal::RateLimited { retry_after: d }, 429, "rate_limited"),
            (Refusal::Overloaded { retry_after: d }, 503, "overloaded"),
        ];
        for (r, status, code) in rows {
            assert_eq!(r.status().as_u16(), status, "{code}");
            assert_eq!(r.code(), code);
            let resp = r.clone().into_response();
            assert_eq!(resp.status().as_u16(), status);
            let has_retry = resp.headers().get(header::RETRY_AFTER).is_some();
            assert_eq!(has_retry, status == 429 || status == 503, "{code}");
        }
    }

    #[test]
    fn agent_actions_follow_codes() {
        assert_eq!(agent_action("decrypt_failed"), AgentAction::Reenroll);
        assert_eq!(agent_action("device_blocked"), AgentAction::Stop);
        assert_eq!(agent_action("stale"), AgentAction::Drop);
        assert_eq!(agent_action("too_large"), AgentAction::Shorten);
        assert_eq!(agent_action("http_413"), AgentAction::Shorten);
        assert_eq!(agent_action("overloaded"), AgentAction::RetryLater);
        assert_eq!(agent_action("something_new"), AgentAction::RetryLater);
    }
}
