//! The API's one error type and its JSON shape:
//! `{"error": "<human message>", "code": "<snake_case>", "requestId": "<id>"}`.
//!
//! SECURITY: 4xx messages describe the caller's mistake; 5xx bodies are
//! generic, the detail goes to the log (never a token, key or password).

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::request_id;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; `code` names what is wrong.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no, empty or wrong credentials. One body for every cause.
    #[error("invalid or missing credentials")]
    Unauthorized,
    /// 404: the credential or connection does not exist for this caller.
    #[error("connection not found")]
    ConnectionNotFound,
    /// 429: over the caller's rate limit; retry after the duration.
    #[error("rate limited")]
    RateLimited { retry_after: Duration, limit: u32 },
    /// 503: the database or the keyring is not usable right now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500: anything else; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// 500: a stored credential did not decrypt (audited by the database).
    #[error("stored credential did not decrypt")]
    DecryptionFailed,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ConnectionNotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::DecryptionFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::ConnectionNotFound => "connection_not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
            Self::DecryptionFailed => "decryption_failed",
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::BadRequest { message, .. } => message.clone(),
            Self::Unauthorized => "Invalid or missing internal token".into(),
            Self::ConnectionNotFound => "Connection not found".into(),
            Self::RateLimited { retry_after, .. } => {
                format!(
                    "Too many requests: retry in {} s",
                    retry_after.as_secs().max(1)
                )
            }
            Self::Unavailable(_) => "Service temporarily unavailable".into(),
            Self::Internal(_) => "Internal server error".into(),
            Self::DecryptionFailed => {
                "The stored credential could not be decrypted; the failure was audited".into()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        match &self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::Unavailable(detail) => tracing::warn!(error = %detail, "service unavailable"),
            Self::DecryptionFailed => {
                tracing::error!("a stored credential failed to decrypt (audited as decrypt_failed)")
            }
            _ => {}
        }
        let mut body = json!({
            "error": self.public_message(),
            "code": self.code(),
            "requestId": request_id,
        });
        if matches!(self, Self::ConnectionNotFound) {
            body["hasCredentials"] = json!(false);
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after, limit } = &self {
            let secs = retry_after.as_secs().max(1);
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            headers.insert("ratelimit-limit", HeaderValue::from(*limit));
            headers.insert("ratelimit-remaining", HeaderValue::from(0));
            headers.insert("ratelimit-reset", HeaderValue::from(secs));
        }
        response
    }
}
