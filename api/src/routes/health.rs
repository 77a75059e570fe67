//! `/health` (database and keyring usable?) and `/metrics` (Prometheus).

use axum::{
    extract::State,
    http::{header, StatusCode},
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

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.pool),
    )
        .into_response()
}
