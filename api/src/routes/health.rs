//! `/health` (database and keyring usable?) and `/metrics` (Prometheus).
//!
//! SECURITY: `/metrics` names callers, routes and the audit chain's state:
//! on the API's port it answers only a bearer of `METRICS_TOKEN` (compared
//! in constant time, as SHA-256 digests), and is 404 when no token is set;
//! `METRICS_LISTEN_ADDRESS` serves it on a listener of its own (still
//! behind the token when one is set).

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::{db, error::ApiError, request_id, state::SharedState};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// Liveness and readiness: 200 when the database answers and this process's
/// keyring is loaded in its sessions, 503 otherwise.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = super::openapi::HealthResponse),
        (status = 503, description = "Database or keyring unusable", body = super::openapi::ErrorBody),
    )
)]
pub async fn health(State(state): State<SharedState>) -> Response {
    let probe = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one("SELECT otobot.otobot_current_key_version()", &[])
            .await
            .map_err(db::map_error)?;
        Ok::<i32, ApiError>(row.get(0))
    })
    .await;
    match probe {
        Ok(key_version) => Json(json!({
            "status": "ok",
            "service": "otobot-internal-api",
            "version": env!("CARGO_PKG_VERSION"),
            "database": "ok",
            "keyring": "ok",
            "keyVersion": key_version,
        }))
        .into_response(),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "service": "otobot-internal-api",
                    "error": "Database or keyring unavailable",
                    "code": "service_unavailable",
                    "requestId": request_id::current(),
                })),
            )
                .into_response()
        }
    }
}

/// Prometheus text exposition, for a bearer of `METRICS_TOKEN`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus metrics", content_type = "text/plain"),
        (status = 401, description = "Missing or wrong METRICS_TOKEN bearer", body = super::openapi::ErrorBody),
        (status = 404, description = "METRICS_TOKEN is not set: metrics are not served on this port", body = super::openapi::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    match &state.metrics_token {
        None => ApiError::NotFound("route_not_found", "No such route".into()).into_response(),
        Some(expected) if bearer_matches(&headers, expected) => exposition(&state),
        Some(_) => ApiError::InvalidToken.into_response(),
    }
}

/// The router of `METRICS_LISTEN_ADDRESS`: `/metrics` only.
pub fn metrics_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_on_own_listener))
        .fallback(|| async { ApiError::NotFound("route_not_found", "No such route".into()) })
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}

async fn metrics_on_own_listener(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    match &state.metrics_token {
        Some(expected) if !bearer_matches(&headers, expected) => {
            ApiError::InvalidToken.into_response()
        }
        _ => exposition(&state),
    }
}

/// SECURITY: constant time, whatever the length sent.
fn bearer_matches(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return false;
    };
    let sent: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    sent.ct_eq(expected).into()
}

fn exposition(state: &SharedState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.pool),
    )
        .into_response()
}
