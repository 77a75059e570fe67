//! The internal API n8n calls, authenticated by `x-internal-token`. Each
//! handler validates its input, then makes one call of a SECURITY DEFINER
//! function: one database round trip.

use std::collections::HashMap;

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    response::{IntoResponse, Response},
    routing::get,
    Extension, Router,
};
use uuid::Uuid;

use super::{json_text, uuid_param};
use crate::{
    auth::Caller,
    db,
    error::{ApiError, Result},
    request_id,
    state::SharedState,
};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route(
            "/api/internal/user/{user_id}/credentials/{service_name}",
            get(credentials),
        )
        .route("/api/internal/user/{user_id}/connections", get(connections))
        .route(
            "/api/internal/connection-status/{connection_id}",
            get(connection_status),
        )
}

const GET_CREDENTIALS: &str =
    "SELECT r->>'code', r::text FROM otobot.get_user_credentials($1, $2, $3, $4, $5, $6, $7, $8, $9) AS r";

/// Fetch a user's decrypted credential for a service (audited).
#[utoipa::path(
    get,
    path = "/api/internal/user/{userId}/credentials/{serviceName}",
    tag = "internal",
    security(("internal_token" = [])),
    params(
        ("userId" = Uuid, Path, description = "The user whose credential is fetched"),
        ("serviceName" = String, Path, description = "A known service code, e.g. google"),
        ("connectionId" = Option<Uuid>, Query, description = "Pick one connection among several"),
        ("label" = Option<String>, Query, description = "Pick a connection by label (1–100 characters)"),
        ("x-otobot-grant" = Option<String>, Header, description = "The user's grant: the otobotGrant the trigger sent with the run, or a standing grant. Required unless the caller's token is configured trusted"),
    ),
    responses(
        (status = 200, description = "The credential", body = super::openapi::CredentialsResponse),
        (status = 400, description = "Invalid user id, service, connection id or label", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong x-internal-token", body = super::openapi::ErrorBody),
        (status = 403, description = "grant_required (no grant) or grant_invalid (unknown, another user's, expired, revoked, or not covering the service: see reason); audited as credential_refused", body = super::openapi::GrantRefusedBody),
        (status = 404, description = "No active connection: hasCredentials is false", body = super::openapi::NotFoundBody),
        (status = 429, description = "Rate limited; see Retry-After", body = super::openapi::ErrorBody),
        (status = 500, description = "Internal error, or the stored value failed to decrypt (audited)", body = super::openapi::ErrorBody),
        (status = 503, description = "Database or keyring unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn credentials(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((user_id, service)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let user_id = uuid_param(&user_id, "userId", "invalid_user_id")?;
    if service.len() > 63 || !state.knows_service(&service) {
        return Err(ApiError::bad_request(
            "unknown_service",
            "serviceName is not a known service code",
        ));
    }
    let Query(query) = query
        .map_err(|_| ApiError::bad_request("invalid_query", "The query string is malformed"))?;
    let connection_id = query
        .get("connectionId")
        .map(|v| uuid_param(v, "connectionId", "invalid_connection_id"))
        .transpose()?;
    let label = query.get("label").map(String::as_str);
    if label.is_some_and(|l| l.is_empty() || l.chars().count() > 100) {
        return Err(ApiError::bad_request(
            "invalid_label",
            "label must be 1 to 100 characters",
        ));
    }
    // SECURITY: only the hash travels to the database, which checks it.
    let grant = crate::grants::presented(&headers).map(|h| h.to_vec());
    let request_id = request_id::current();
    let fetch = |margin: Option<i32>| {
        let (state, service, caller, request_id, grant) =
            (&state, &service, &caller, &request_id, &grant);
        async move {
            db::within(state.db_timeout, async {
                let client = db::client(&state.pool).await?;
                let statement = client
                    .prepare_cached(GET_CREDENTIALS)
                    .await
                    .map_err(db::map_error)?;
                let row = client
                    .query_one(
                        &statement,
                        &[
                            &user_id,
                            service,
                            grant,
                            &caller.trusted,
                            &connection_id,
                            &label,
                            &caller.name,
                            request_id,
                            &margin,
                        ],
                    )
                    .await
                    .map_err(db::map_error)?;
                Ok((row.get::<_, Option<String>>(0), row.get::<_, String>(1)))
            })
            .await
        }
    };
    // An access token that expires within the margin is refreshed first:
    // at most one refresh per request, shared with every other fetch of
    // this connection in this process, and one deadline for all of it.
    let margin = state.oauth.fetch_margin_seconds;
    let deadline = tokio::time::Instant::now() + state.oauth.fetch_deadline;
    let (mut code, mut body) = fetch(Some(margin)).await?;
    if code.as_deref() == Some("refresh_required") {
        let id = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["connectionId"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
            });
        if let Some(id) = id {
            let attempt =
                crate::oauth::refresh::on_fetch(&state, id, margin, &request_id, deadline).await;
            tracing::debug!(connection = %id, ?attempt, "refresh on fetch");
        }
        // Whatever there is now, flagged (metadata.tokenExpired).
        (code, body) = fetch(None).await?;
    }
    match code.as_deref() {
        None => {
            state.metrics.credential_read(&caller.name, "ok");
            Ok(json_text(axum::http::StatusCode::OK, body))
        }
        Some("connection_not_found") => {
            state.metrics.credential_read(&caller.name, "not_found");
            Err(ApiError::ConnectionNotFound)
        }
        Some("connection_expired") => {
            state.metrics.credential_read(&caller.name, "expired");
            let mut v: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
            v["error"] = "Connection expired: the account must be reconnected".into();
            v["requestId"] = request_id.clone().into();
            Ok((axum::http::StatusCode::NOT_FOUND, axum::Json(v)).into_response())
        }
        Some("grant_required") => {
            state
                .metrics
                .credential_read(&caller.name, "grant_required");
            Err(ApiError::GrantRequired)
        }
        Some("grant_invalid") => {
            state.metrics.credential_read(&caller.name, "grant_invalid");
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .filter(|r| {
                    [
                        "unknown",
                        "other_user",
                        "expired",
                        "revoked",
                        "service_not_covered",
                    ]
                    .contains(&r.as_str())
                })
                .unwrap_or_else(|| "unknown".into());
            Err(ApiError::GrantInvalid { reason })
        }
        Some("decryption_failed") => {
            state
                .metrics
                .credential_read(&caller.name, "decryption_failed");
            Err(ApiError::DecryptionFailed)
        }
        Some(other) => Err(ApiError::Internal(format!(
            "unexpected result code {other}"
        ))),
    }
}

/// List a user's connections (metadata only, never secrets).
#[utoipa::path(
    get,
    path = "/api/internal/user/{userId}/connections",
    tag = "internal",
    security(("internal_token" = [])),
    params(("userId" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's connections", body = super::openapi::ConnectionsResponse),
        (status = 400, description = "userId is not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong x-internal-token", body = super::openapi::ErrorBody),
        (status = 429, description = "Rate limited", body = super::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn connections(
    State(state): State<SharedState>,
    Path(user_id): Path<String>,
) -> Result<Response> {
    let user_id = uuid_param(&user_id, "userId", "invalid_user_id")?;
    let body = one_text(
        &state,
        "SELECT otobot.list_user_connections($1)::text",
        &[&user_id],
    )
    .await?
    .unwrap_or_else(|| "{}".into());
    Ok(json_text(axum::http::StatusCode::OK, body))
}

/// A connection's status: valid, refresh_needed, expired or revoked.
#[utoipa::path(
    get,
    path = "/api/internal/connection-status/{connectionId}",
    tag = "internal",
    security(("internal_token" = [])),
    params(("connectionId" = Uuid, Path, description = "The connection")),
    responses(
        (status = 200, description = "The status", body = super::openapi::StatusResponse),
        (status = 400, description = "connectionId is not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong x-internal-token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such connection", body = super::openapi::NotFoundBody),
        (status = 429, description = "Rate limited", body = super::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn connection_status(
    State(state): State<SharedState>,
    Path(connection_id): Path<String>,
) -> Result<Response> {
    let connection_id = uuid_param(&connection_id, "connectionId", "invalid_connection_id")?;
    let body = one_text(
        &state,
        "SELECT otobot.connection_status($1, $2)::text",
        &[&connection_id, &state.refresh_window_seconds],
    )
    .await?;
    body.map(|b| json_text(axum::http::StatusCode::OK, b))
        .ok_or(ApiError::ConnectionNotFound)
}

/// One statement (prepared once per session) returning one text value.
async fn one_text(
    state: &SharedState,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<String>> {
    db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let statement = client.prepare_cached(sql).await.map_err(db::map_error)?;
        let row = client
            .query_one(&statement, params)
            .await
            .map_err(db::map_error)?;
        Ok(row.get(0))
    })
    .await
}
