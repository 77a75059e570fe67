//! Standing grants, for scheduled workflows: `POST /api/tooljet/grants`
//! (a user, in their own name), `GET` (own, or `?scope=client` for an admin)
//! and `DELETE /api/tooljet/grants/:id` (its user, or the client's admin).
//! Run grants are minted by the trigger route (`tooljet::trigger_workflow`).
//!
//! SECURITY: the token is shown once, in the 201 answer; the database keeps
//! its SHA-256 only. Who may see or revoke which grant is decided by the
//! database (row-level security on `otobot.grants`), for the verified user.

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

use super::{tooljet::call, uuid_param};
use crate::{
    auth::AuthUser,
    error::{ApiError, Result},
    grants, request_id,
    state::SharedState,
};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/tooljet/grants", get(list).post(create))
        .route("/api/tooljet/grants/{id}", delete(revoke))
}

/// A standing grant to create.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewGrant {
    /// The scheduled workflow it is for (1–100 characters), shown in the audit log.
    pub workflow: String,
    /// Service codes it releases, e.g. ["google"].
    pub services: Vec<String>,
    /// When it ends: at most one year from now.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/tooljet/grants` → 201 with the token, shown this once.
#[utoipa::path(
    post,
    path = "/api/tooljet/grants",
    tag = "grants",
    security(("bearer" = [])),
    request_body = NewGrant,
    responses(
        (status = 201, description = "The grant, with its token (shown once: store it in the scheduled workflow, e.g. an n8n variable)", body = super::openapi::CreatedGrant),
        (status = 400, description = "Invalid workflow, services or expiry (at most one year)", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid user token", body = super::openapi::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    user: AuthUser,
    payload: std::result::Result<Json<NewGrant>, JsonRejection>,
) -> Result<Response> {
    let NewGrant {
        workflow,
        services,
        expires_at,
    } = payload.map(|Json(v)| v).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "The body must be {{\"workflow\", \"services\": [...], \"expiresAt\"}}: {}",
                e.body_text()
            ),
        )
    })?;
    let workflow = workflow.trim().to_owned();
    if workflow.is_empty()
        || workflow.chars().count() > 100
        || workflow.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_workflow",
            "workflow must be 1 to 100 characters",
        ));
    }
    if services.is_empty()
        || services.len() > 100
        || services.iter().any(|s| !state.knows_service(s))
    {
        return Err(ApiError::bad_request(
            "invalid_services",
            "services must list 1 to 100 known service codes",
        ));
    }
    let now = Utc::now();
    if expires_at <= now + chrono::Duration::minutes(1)
        || expires_at > now + chrono::Duration::days(365)
    {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "expiresAt must be between one minute and one year from now",
        ));
    }
    let new = grants::generate();
    let hash = new.hash.to_vec();
    let request_id = request_id::current();
    let grant = call(
        &state,
        "SELECT otobot.create_standing_grant($1, $2, $3, $4, $5, $6, $7)::text",
        &[
            &user.id,
            &workflow,
            &services,
            &hash,
            &expires_at,
            &user.source,
            &request_id,
        ],
    )
    .await?
    .ok_or_else(|| ApiError::Internal("create_standing_grant returned nothing".into()))?;
    let mut grant: Value =
        serde_json::from_str(&grant).map_err(|e| ApiError::Internal(e.to_string()))?;
    grant["grant"] = json!(new.token.expose_secret());
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// `GET /api/tooljet/grants[?scope=client]`: own grants, or the client's for an admin.
#[utoipa::path(
    get,
    path = "/api/tooljet/grants",
    tag = "grants",
    security(("bearer" = [])),
    params(("scope" = Option<String>, Query, description = "own (default) or client (admins)")),
    responses(
        (status = 200, description = "Standing grants in every state and live run grants, newest first; never a token", body = super::openapi::GrantList),
        (status = 400, description = "scope is neither own nor client", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid user token", body = super::openapi::ErrorBody),
        (status = 403, description = "scope=client by someone who is not an admin", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let whole_client = super::scope_param(&query)?;
    if whole_client && user.role != "admin" {
        return Err(ApiError::Forbidden(
            "Only an admin may list the client's grants".into(),
        ));
    }
    super::user_list(
        &state,
        "grants",
        "SELECT otobot.list_grants($1, $2)::text",
        user.id,
        whole_client,
    )
    .await
}

/// `DELETE /api/tooljet/grants/:id`: its user, or an admin of its client;
/// anyone else (and an already revoked grant) gets 404.
#[utoipa::path(
    delete,
    path = "/api/tooljet/grants/{id}",
    tag = "grants",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The grant")),
    responses(
        (status = 200, description = "Revoked: fetches presenting it are refused from now on", body = super::openapi::RevokedGrant),
        (status = 400, description = "id is not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid user token", body = super::openapi::ErrorBody),
        (status = 404, description = "No live grant with this id that the caller may revoke", body = super::openapi::ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = uuid_param(&id, "id", "invalid_id")?;
    let request_id = request_id::current();
    let done = call(
        &state,
        "SELECT otobot.revoke_grant($1, $2, $3, $4)::text",
        &[&id, &user.id, &user.source, &request_id],
    )
    .await?;
    match done.as_deref() {
        Some("true") => Ok(Json(json!({ "id": id, "revoked": true })).into_response()),
        _ => Err(ApiError::NotFound(
            "grant_not_found",
            "Grant not found (or already revoked)".into(),
        )),
    }
}
