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
    /// 401: a user route without a valid, unexpired token of an active user.
    #[error("invalid or expired user token")]
    InvalidToken,
    /// 401: login with an unknown email or a wrong password (one body for both).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 403: authenticated, but not allowed (e.g. not an admin).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: the named thing does not exist for this caller.
    #[error("not found: {1}")]
    NotFound(&'static str, String),
    /// 409: conflicts with existing data (e.g. an email already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 502 / 504: n8n's webhook could not be reached, or did not answer in time.
    #[error("workflow call failed: {detail}")]
    Upstream { timeout: bool, detail: String },
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
    /// 403: a credential fetch without a grant, by a caller that needs one (audited).
    #[error("grant required")]
    GrantRequired,
    /// 403: the grant presented is unknown, another user's, expired, revoked,
    /// or does not cover the service; `reason` says which (audited).
    #[error("grant invalid: {reason}")]
    GrantInvalid { reason: String },
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
            Self::Unauthorized | Self::InvalidToken | Self::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) | Self::GrantRequired | Self::GrantInvalid { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound(..) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { timeout: false, .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectionNotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::DecryptionFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized | Self::InvalidToken => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(code, _) => code,
            Self::Conflict(_) => "conflict",
            Self::Upstream { timeout: true, .. } => "workflow_timeout",
            Self::Upstream { timeout: false, .. } => "workflow_unreachable",
            Self::ConnectionNotFound => "connection_not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
            Self::DecryptionFailed => "decryption_failed",
            Self::GrantRequired => "grant_required",
            Self::GrantInvalid { .. } => "grant_invalid",
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::BadRequest { message, .. } => message.clone(),
            Self::Unauthorized => "Invalid or missing internal token".into(),
            Self::InvalidToken => "Invalid or expired token".into(),
            Self::InvalidCredentials => "Invalid email or password".into(),
            Self::Forbidden(message) | Self::NotFound(_, message) | Self::Conflict(message) => {
                message.clone()
            }
            Self::Upstream { timeout: true, .. } => "The workflow did not answer in time".into(),
            Self::Upstream { timeout: false, .. } => {
                "The workflow service could not be reached".into()
            }
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
            Self::GrantRequired => "A grant is required to read this user's credentials: send the \
                otobotGrant that Otobot's trigger passed to the workflow in the x-otobot-grant header \
                (in the Otobot node: Grant = {{ $json.body.otobotGrant }}), or, for a scheduled \
                workflow, a standing grant the user created (POST /api/tooljet/grants)"
                .into(),
            Self::GrantInvalid { reason } => {
                let why = match reason.as_str() {
                    "expired" => "it has expired (a run grant lives RUN_GRANT_TTL_SECONDS): trigger the workflow again through Otobot, or ask the user for a new standing grant",
                    "revoked" => "it was revoked: ask the user for a new grant",
                    "service_not_covered" => "it does not cover this service: ask the user for a grant that names it",
                    "other_user" => "it belongs to another user: pass the grant that came with this user's run",
                    _ => "it is unknown: pass the otobotGrant of this run, or a standing grant, unchanged",
                };
                format!("The grant does not allow this fetch: {why}")
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
        match &self {
            Self::ConnectionNotFound | Self::GrantRequired => body["hasCredentials"] = json!(false),
            Self::GrantInvalid { reason } => {
                body["hasCredentials"] = json!(false);
                body["reason"] = json!(reason);
            }
            _ => {}
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
