//! JMAP errors: request-level problem details (RFC 7807, RFC 8620 §3.6.1), method-level
//! errors (§3.6.2) and SetErrors (§5.3). Descriptions are written for the client developer
//! and never carry secrets, key material or internal details.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const PREFIX: &str = "urn:ietf:params:jmap:error:";

/// A request-level error, sent as `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: String,
    pub detail: String,
    pub limit: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn jmap(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind: format!("{PREFIX}{kind}"),
            detail: detail.into(),
            limit: None,
            retry_after: None,
        }
    }

    pub fn not_json(detail: impl Into<String>) -> Problem {
        Problem::jmap(StatusCode::BAD_REQUEST, "notJSON", detail)
    }

    pub fn not_request(detail: impl Into<String>) -> Problem {
        Problem::jmap(StatusCode::BAD_REQUEST, "notRequest", detail)
    }

    pub fn unknown_capability(cap: &str) -> Problem {
        Problem::jmap(
            StatusCode::BAD_REQUEST,
            "unknownCapability",
            format!(
                "the server does not support the capability {:?}",
                cap.chars().take(200).collect::<String>()
            ),
        )
    }

    pub fn limit(limit: &'static str, detail: impl Into<String>) -> Problem {
        let mut p = Problem::jmap(StatusCode::BAD_REQUEST, "limit", detail);
        p.limit = Some(limit);
        if limit == "maxSizeRequest" || limit == "maxSizeUpload" {
            p.status = StatusCode::PAYLOAD_TOO_LARGE;
        }
        if limit.starts_with("maxConcurrent") {
            p.status = StatusCode::TOO_MANY_REQUESTS;
        }
        p
    }

    /// A non-JMAP problem (authentication, not found, rate limiting).
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind: "about:blank".into(),
            detail: detail.into(),
            limit: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": self.kind,
            "status": self.status.as_u16(),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "detail": self.detail,
        });
        if let Some(l) = self.limit {
            body["limit"] = json!(l);
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A method-level error: the response to one method call is `["error", {...}, callId]`.
#[derive(Debug, Clone)]
pub struct MethodError {
    pub kind: &'static str,
    pub description: Option<String>,
}

impl MethodError {
    pub fn new(kind: &'static str, description: impl Into<String>) -> MethodError {
        MethodError {
            kind,
            description: Some(description.into()),
        }
    }
    pub fn invalid_arguments(d: impl Into<String>) -> MethodError {
        MethodError::new("invalidArguments", d)
    }
    pub fn account_not_found() -> MethodError {
        MethodError::new(
            "accountNotFound",
            "the accountId does not name an account you can access",
        )
    }
    pub fn forbidden(d: impl Into<String>) -> MethodError {
        MethodError::new("forbidden", d)
    }
    pub fn server_fail() -> MethodError {
        MethodError::new(
            "serverFail",
            "the server could not complete the call; it was logged, try again later",
        )
    }
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "type": self.kind });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }
}

/// Logs an internal error (without content) and returns a `serverFail`.
pub fn internal(context: &str, e: &dyn std::fmt::Display) -> MethodError {
    tracing::error!(context, error = %e, "JMAP method failed");
    MethodError::server_fail()
}

impl From<sealpost_keystore::Error> for MethodError {
    fn from(e: sealpost_keystore::Error) -> MethodError {
        internal("keystore", &e)
    }
}

/// A SetError for one object of a /set call.
#[derive(Debug, Clone)]
pub struct SetError {
    pub kind: &'static str,
    pub description: String,
    pub properties: Option<Vec<String>>,
    /// For `alreadyExists`: the id of the existing object.
    pub existing_id: Option<String>,
}

impl SetError {
    pub fn new(kind: &'static str, d: impl Into<String>) -> SetError {
        SetError {
            kind,
            description: d.into(),
            properties: None,
            existing_id: None,
        }
    }
    pub fn invalid(props: &[&str], d: impl Into<String>) -> SetError {
        SetError {
            kind: "invalidProperties",
            description: d.into(),
            properties: Some(props.iter().map(|s| s.to_string()).collect()),
            existing_id: None,
        }
    }
    pub fn not_found() -> SetError {
        SetError::new("notFound", "no such object in this account")
    }
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "type": self.kind, "description": self.description });
        if let Some(p) = &self.properties {
            v["properties"] = json!(p);
        }
        if let Some(id) = &self.existing_id {
            v["existingId"] = json!(id);
        }
        v
    }
}

/// Maps a keystore error during one object's write to a SetError; database failures fail
/// the whole method with `serverFail`.
pub fn set_error(e: sealpost_keystore::Error, props: &[&str]) -> Result<SetError, MethodError> {
    use sealpost_keystore::Error as E;
    Ok(match e {
        E::Policy(p) => SetError::invalid(props, format!("key refused: {p}")),
        E::Invalid(m) => SetError::invalid(props, m),
        E::NotFound(_) => SetError::not_found(),
        E::Conflict(m) => SetError::new("alreadyExists", m),
        E::Address(a) => SetError::invalid(props, a.to_string()),
        other => return Err(internal("keystore write", &other)),
    })
}
