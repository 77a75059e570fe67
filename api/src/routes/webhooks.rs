//! Callbacks from n8n, authenticated like the internal API.

use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Extension, Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    auth::Caller,
    db,
    error::{ApiError, Result},
    request_id,
    state::SharedState,
};

pub fn router() -> Router<SharedState> {
    Router::new().route("/api/webhooks/workflow-complete", post(workflow_complete))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Completion {
    user_id: Uuid,
    workflow_id: String,
    status: String,
    #[serde(default)]
    results: Value,
}

/// `POST /api/webhooks/workflow-complete` `{userId, workflowId, status, results}` → 201.
async fn workflow_complete(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    payload: std::result::Result<Json<Completion>, JsonRejection>,
) -> Result<Response> {
    let Json(c) = payload.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let workflow_ok = !c.workflow_id.is_empty()
        && c.workflow_id.len() <= 128
        && c.workflow_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    let status_ok = !c.status.is_empty()
        && c.status.len() <= 32
        && c.status
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_');
    if !workflow_ok || !status_ok {
        return Err(ApiError::bad_request(
            "invalid_input",
            "workflowId and status are required (status e.g. success, error)",
        ));
    }
    let results = if c.results.is_null() {
        json!({})
    } else {
        c.results
    };
    if results.to_string().len() > 262_144 {
        return Err(ApiError::bad_request(
            "results_too_large",
            "results must be at most 256 KiB of JSON",
        ));
    }
    let request_id = request_id::current();
    let id: i64 = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.record_workflow_run($1, $2, $3, $4, $5, $6)",
                &[
                    &c.user_id,
                    &c.workflow_id,
                    &c.status,
                    &results,
                    &caller.name,
                    &request_id,
                ],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::NO_DATA_FOUND) {
                    ApiError::NotFound("user_not_found", "User not found or inactive".into())
                } else {
                    db::map_error(e)
                }
            })?;
        Ok(row.get(0))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}
