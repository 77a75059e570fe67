//! The user API for ToolJet and the portal: `Authorization: Bearer <JWT>`.
//! Every route acts as the verified user only; the database re-checks that
//! the user is active and scopes every row to them (or, for an admin, to
//! their client).

use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use std::{collections::HashMap, net::SocketAddr};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{json_text, uuid_param};
use crate::{
    auth::AuthUser,
    db,
    error::{ApiError, Result},
    password, request_id,
    state::{SharedState, UserApi},
};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/api/tooljet/auth/login", post(login))
        .route("/api/tooljet/me", get(me))
        .route("/api/tooljet/services", get(services))
        .route("/api/tooljet/connections", get(connections))
        .route(
            "/api/tooljet/connections/{service}/api-key",
            post(store_api_key),
        )
        .route("/api/tooljet/connections/{id}", delete(delete_connection))
        .route("/api/tooljet/users", get(list_users).post(create_user))
        .route("/api/tooljet/users/{id}", delete(deactivate_user))
        .route("/api/tooljet/workflows/runs", get(workflow_runs))
        .route(
            "/api/tooljet/workflows/{path}/trigger",
            post(trigger_workflow),
        )
}

pub(crate) fn user_api(state: &SharedState) -> Result<&UserApi> {
    state.user_api.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the user API is disabled: API_JWT_SECRET is not set".into())
    })
}

/// One call of a SECURITY DEFINER function returning JSON text; the
/// database's "user not found or inactive" means the token's user is gone.
pub(crate) async fn call(
    state: &SharedState,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<String>> {
    db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let statement = client.prepare_cached(sql).await.map_err(db::map_error)?;
        let row = client.query_one(&statement, params).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::NO_DATA_FOUND) {
                ApiError::InvalidToken
            } else {
                db::map_error(e)
            }
        })?;
        Ok(row.get::<_, Option<String>>(0))
    })
    .await
}

fn body<T>(payload: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    payload.map(|Json(v)| v).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "The request body is not valid JSON for this route: {}",
                e.body_text()
            ),
        )
    })
}

fn valid_email(email: &str) -> bool {
    (3..=320).contains(&email.len())
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

/// A verified login: the user's profile, and who they are.
pub(crate) struct LoggedIn {
    pub id: Uuid,
    pub client_id: Uuid,
    pub role: String,
    pub profile: Value,
}

/// Checks an email and password (failed attempts limited per account and
/// per client address, in PostgreSQL so every replica shares them; audited
/// with `source`), for a bearer token or a portal session. The one login
/// path: ToolJet's and the portal's share one budget.
pub(crate) async fn verify_login(
    state: &SharedState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    payload: std::result::Result<Json<LoginBody>, JsonRejection>,
    source: &'static str,
) -> Result<LoggedIn> {
    let api = user_api(state)?;
    let LoginBody { email, password } = body(payload)?;
    let email = email.trim().to_owned();
    if !valid_email(&email) || password.is_empty() || password.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "email and password are required",
        ));
    }
    // SECURITY: an attempt is reserved before the password is verified and
    // refunded only when it was right: failures count, per account and per
    // address, and concurrent guesses cannot exceed the budget.
    let account_key = hex::encode(sha2::Sha256::digest(email.to_lowercase().as_bytes()));
    let address = state.client_ip(peer, headers).to_string();
    let reservation = reserve_attempt(state, api, &account_key, &address).await?;

    let request_id = request_id::current();
    let account = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let rows = client
            .query(
                "SELECT kind, principal_id, password_hash, is_active FROM otobot.auth_lookup($1)",
                &[&email],
            )
            .await
            .map_err(db::map_error)?;
        Ok(rows.first().map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Uuid>(1),
                r.get::<_, String>(2),
                r.get::<_, bool>(3),
            )
        }))
    })
    .await?;

    // SECURITY: an unknown email costs one hash verification too, and every
    // failure gets the same status and body.
    let stored = account
        .as_ref()
        .map_or_else(|| api.decoy_hash.clone(), |a| a.2.clone());
    let upgrade = account
        .as_ref()
        .is_some_and(|a| password::needs_upgrade(&a.2));
    let (matches, new_hash) = tokio::task::spawn_blocking(move || {
        let matches = password::verify(&password, &stored);
        let new_hash = (matches && upgrade)
            .then(|| password::hash(&password).ok())
            .flatten();
        (matches, new_hash)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("password check task: {e}")))?;

    let Some((kind, principal, _, true)) = account.filter(|_| matches) else {
        call(
            state,
            "SELECT otobot.login_failed($1, $2, $3)::text",
            &[&email, &source, &request_id],
        )
        .await?;
        return Err(ApiError::InvalidCredentials);
    };
    refund_attempt(state, &account_key, &address, reservation).await?;
    let user_text = call(
        state,
        "SELECT otobot.login_succeeded($1, $2, $3, $4, $5)::text",
        &[&kind, &principal, &new_hash, &source, &request_id],
    )
    .await
    .map_err(|e| {
        if matches!(e, ApiError::InvalidToken) {
            ApiError::InvalidCredentials
        } else {
            e
        }
    })?
    .ok_or(ApiError::InvalidCredentials)?;
    let profile: Value =
        serde_json::from_str(&user_text).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = profile["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let client = profile["clientId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok());
    let (Some(id), Some(client_id), Some(role)) = (id, client, profile["role"].as_str()) else {
        return Err(ApiError::Internal(
            "login returned an incomplete profile".into(),
        ));
    };
    Ok(LoggedIn {
        id,
        client_id,
        role: role.to_owned(),
        profile,
    })
}

/// Reserves a login attempt (see `0013` `reserve_login_attempt`): the
/// window it was counted in, or 429 naming no account.
async fn reserve_attempt(
    state: &SharedState,
    api: &UserApi,
    account: &str,
    address: &str,
) -> Result<i64> {
    let s = &api.settings;
    let window = s.login_window.as_secs() as i32;
    let (max_account, max_address) = (
        s.login_max_attempts as i32,
        s.login_address_max_attempts as i32,
    );
    let row = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        client
            .query_one(
                "SELECT retry_after, limit_hit, window_start FROM otobot.reserve_login_attempt($1, $2, $3, $4, $5)",
                &[&account, &address, &max_account, &max_address, &window],
            )
            .await
            .map_err(db::map_error)
    })
    .await?;
    let retry_after: i32 = row.get(0);
    if retry_after > 0 {
        let limit = match row.get::<_, Option<&str>>(1) {
            Some("address") => s.login_address_max_attempts,
            _ => s.login_max_attempts,
        };
        return Err(ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(retry_after as u64),
            limit,
        });
    }
    Ok(row.get(2))
}

/// Gives a reserved attempt back: the password was right.
async fn refund_attempt(
    state: &SharedState,
    account: &str,
    address: &str,
    window_start: i64,
) -> Result<()> {
    db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        client
            .execute(
                "SELECT otobot.refund_login_attempt($1, $2, $3)",
                &[&account, &address, &window_start],
            )
            .await
            .map_err(db::map_error)
    })
    .await?;
    Ok(())
}

/// `POST /api/tooljet/auth/login` → `{authToken, expiresAt, user}`.
async fn login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    payload: std::result::Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response> {
    let user = verify_login(&state, peer, &headers, payload, "tooljet").await?;
    let (token, exp) = user_api(&state)?
        .jwt
        .issue(user.id, user.client_id, &user.role);
    let expires_at = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    Ok(
        Json(json!({ "authToken": token, "expiresAt": expires_at, "user": user.profile }))
            .into_response(),
    )
}

/// `GET /api/tooljet/me`: the caller's profile.
async fn me(State(state): State<SharedState>, user: AuthUser) -> Result<Response> {
    let profile = call(&state, "SELECT otobot.user_profile($1)::text", &[&user.id]).await?;
    profile
        .map(|p| json_text(StatusCode::OK, p))
        .ok_or(ApiError::InvalidToken)
}

// ---------------------------------------------------------------------------
// Services and connections
// ---------------------------------------------------------------------------

/// `GET /api/tooljet/services`: the catalogue, and whether OAuth is configured for each.
async fn services(State(state): State<SharedState>, _user: AuthUser) -> Result<Response> {
    let list = call(&state, "SELECT otobot.list_services()::text", &[])
        .await?
        .unwrap_or_else(|| "[]".into());
    let mut list: Value =
        serde_json::from_str(&list).map_err(|e| ApiError::Internal(e.to_string()))?;
    for service in list.as_array_mut().into_iter().flatten() {
        let code = service["code"].as_str().unwrap_or_default().to_owned();
        let oauth = service["authType"] == "oauth2" && state.oauth.apps.contains_key(&code);
        service["oauthConfigured"] = json!(oauth);
        service["configured"] = json!(oauth || service["acceptsApiKey"] == true);
    }
    Ok(Json(json!({ "services": list })).into_response())
}

/// `GET /api/tooljet/connections[?scope=client]`: own connections, or the
/// whole client's for an admin. Metadata only.
async fn connections(
    State(state): State<SharedState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let whole_client = super::scope_param(&query)?;
    super::user_list(
        &state,
        "connections",
        "SELECT otobot.list_visible_connections($1, $2)::text",
        user.id,
        whole_client,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiKeyBody {
    api_key: String,
    label: Option<String>,
    account_identifier: Option<String>,
}

/// `POST /api/tooljet/connections/:service/api-key` → 201 `{connectionId}`.
async fn store_api_key(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(service): Path<String>,
    payload: std::result::Result<Json<ApiKeyBody>, JsonRejection>,
) -> Result<Response> {
    let b = body(payload)?;
    if service.len() > 63 || !state.knows_service(&service) {
        return Err(ApiError::bad_request(
            "unknown_service",
            "service is not a known service code",
        ));
    }
    let key = b.api_key.trim();
    if key.is_empty() || key.len() > 65536 {
        return Err(ApiError::bad_request(
            "invalid_api_key",
            "apiKey must be 1 to 65536 characters",
        ));
    }
    let request_id = request_id::current();
    let id = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.store_api_key($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &user.id,
                    &service,
                    &key,
                    &b.label,
                    &b.account_identifier,
                    &user.source,
                    &request_id,
                ],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::NO_DATA_FOUND) {
                    ApiError::InvalidToken
                } else {
                    db::map_error(e)
                }
            })?;
        Ok(row.get::<_, Uuid>(0))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "connectionId": id, "service": service })),
    )
        .into_response())
}

/// `DELETE /api/tooljet/connections/:id`: the owner, or an admin of the same
/// client; anyone else gets 404.
async fn delete_connection(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = uuid_param(&id, "id", "invalid_id")?;
    let request_id = request_id::current();
    // Revoke at the provider first, where the catalogue says how; a failed
    // revocation still deactivates, and says so.
    let tokens = call(
        &state,
        "SELECT otobot.tokens_for_revocation($1, $2, $3)::text",
        &[&id, &user.id, &request_id],
    )
    .await?;
    let mut revocation = json!(null);
    if let Some(tokens) = tokens.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        let service = tokens["service"].as_str().unwrap_or_default();
        let token = tokens["refreshToken"]
            .as_str()
            .or_else(|| tokens["accessToken"].as_str());
        revocation = match (state.oauth.provider(service), token) {
            (Some((provider, app)), Some(token)) => {
                match state.oauth.revoke(provider, app, token).await {
                    Ok(true) => json!({ "revoked": true }),
                    Ok(false) => {
                        json!({ "revoked": false, "reason": "the provider has no revocation endpoint" })
                    }
                    Err(error) => json!({ "revoked": false, "reason": error }),
                }
            }
            _ => {
                json!({ "revoked": false, "reason": "the provider is not configured on this server" })
            }
        };
    }
    let done = call(
        &state,
        "SELECT otobot.deactivate_connection($1, $2, $3, $4)::text",
        &[&id, &user.id, &user.source, &request_id],
    )
    .await?;
    match done.as_deref() {
        Some("true") => Ok(Json(
            json!({ "id": id, "deactivated": true, "revocation": revocation }),
        )
        .into_response()),
        _ => Err(ApiError::NotFound(
            "connection_not_found",
            "Connection not found".into(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Users (admins, their own client only)
// ---------------------------------------------------------------------------

fn require_admin(user: &AuthUser) -> Result<()> {
    if user.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::Forbidden("Only an admin may manage users".into()))
    }
}

async fn list_users(State(state): State<SharedState>, user: AuthUser) -> Result<Response> {
    require_admin(&user)?;
    let list = call(&state, "SELECT otobot.list_users($1)::text", &[&user.id]).await?;
    Ok(json_text(
        StatusCode::OK,
        format!(r#"{{"users":{}}}"#, list.unwrap_or_else(|| "[]".into())),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "user".into()
}

async fn create_user(
    State(state): State<SharedState>,
    user: AuthUser,
    payload: std::result::Result<Json<NewUser>, JsonRejection>,
) -> Result<Response> {
    require_admin(&user)?;
    let NewUser {
        email,
        password: secret,
        role,
    } = body(payload)?;
    let email = email.trim().to_owned();
    if !valid_email(&email) {
        return Err(ApiError::bad_request(
            "invalid_email",
            "email is not a valid address",
        ));
    }
    if secret.chars().count() < 12 || secret.len() > 1024 {
        return Err(ApiError::bad_request(
            "weak_password",
            "password must be at least 12 characters",
        ));
    }
    if role != "admin" && role != "user" {
        return Err(ApiError::bad_request(
            "invalid_role",
            "role must be admin or user",
        ));
    }
    let hash = tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
    let request_id = request_id::current();
    let id = call(
        &state,
        "SELECT otobot.create_user($1, NULL, $2, $3, $4, $5, $6)::text",
        &[&user.id, &email, &hash, &role, &user.source, &request_id],
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "email": email, "role": role, "clientId": user.client_id })),
    )
        .into_response())
}

async fn deactivate_user(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    require_admin(&user)?;
    let target = uuid_param(&id, "id", "invalid_id")?;
    let request_id = request_id::current();
    let done = call(
        &state,
        "SELECT otobot.deactivate_user($1, $2, $3, $4)::text",
        &[&user.id, &target, &user.source, &request_id],
    )
    .await?;
    match done.as_deref() {
        Some("true") => Ok(Json(json!({ "id": target, "deactivated": true })).into_response()),
        _ => Err(ApiError::NotFound(
            "user_not_found",
            "User not found".into(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------

async fn workflow_runs(State(state): State<SharedState>, user: AuthUser) -> Result<Response> {
    let list = call(
        &state,
        "SELECT otobot.list_workflow_runs($1, 50)::text",
        &[&user.id],
    )
    .await?;
    Ok(json_text(
        StatusCode::OK,
        format!(r#"{{"runs":{}}}"#, list.unwrap_or_else(|| "[]".into())),
    ))
}

fn valid_slug(path: &str) -> bool {
    let b = path.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c))
}

/// `POST /api/tooljet/workflows/:path/trigger[?services=a,b]`: mints a run
/// grant for the caller and calls n8n's webhook with the caller's verified
/// `userId`, `clientId` and the grant (`otobotGrant`), whatever the body
/// claims; relays n8n's status and JSON.
#[utoipa::path(
    post,
    path = "/api/tooljet/workflows/{path}/trigger",
    tag = "workflows",
    security(("bearer" = [])),
    params(
        ("path" = String, Path, description = "The n8n webhook path (1–100 characters of a-z A-Z 0-9 - _)"),
        ("services" = Option<String>, Query, description = "Comma-separated service codes the run grant covers (default: every service)"),
    ),
    request_body(content = Object, description = "Parameters for the workflow; userId, clientId, otobotGrant and otobotGrantExpiresAt are set by Otobot"),
    responses(
        (status = 200, description = "n8n's answer, relayed (its status too)"),
        (status = 400, description = "Invalid path, services or body", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid user token", body = super::openapi::ErrorBody),
        (status = 502, description = "n8n could not be reached", body = super::openapi::ErrorBody),
        (status = 504, description = "n8n did not answer in time", body = super::openapi::ErrorBody),
    )
)]
pub async fn trigger_workflow(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    payload: std::result::Result<Json<Value>, JsonRejection>,
) -> Result<Response> {
    let api = user_api(&state)?;
    if !valid_slug(&path) {
        return Err(ApiError::bad_request(
            "invalid_workflow_path",
            "path must be 1 to 100 characters of a-z A-Z 0-9 - _",
        ));
    }
    let services: Option<Vec<String>> = match query.get("services") {
        None => None,
        Some(list) => {
            let codes: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if codes.is_empty()
                || codes.len() > 100
                || codes.iter().any(|c| !state.knows_service(c))
            {
                return Err(ApiError::bad_request(
                    "invalid_services",
                    "services must be known service codes separated by commas",
                ));
            }
            Some(codes)
        }
    };
    let mut params = match payload {
        Ok(Json(Value::Object(map))) => map,
        Err(JsonRejection::MissingJsonContentType(_)) => serde_json::Map::new(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "The body must be a JSON object of parameters",
            ))
        }
    };
    // The run grant, for the verified user (who must still be active: the
    // database checks, the token alone is not enough).
    let grant = crate::grants::generate();
    let hash = grant.hash.to_vec();
    let request_id = request_id::current();
    let minted = call(
        &state,
        "SELECT otobot.mint_run_grant($1, $2, $3, $4, $5, $6, $7)::text",
        &[
            &user.id,
            &path,
            &services,
            &hash,
            &api.settings.run_grant_ttl_seconds,
            &user.source,
            &request_id,
        ],
    )
    .await?
    .ok_or(ApiError::InvalidToken)?;
    let minted: Value =
        serde_json::from_str(&minted).map_err(|e| ApiError::Internal(e.to_string()))?;

    // SECURITY: identity and consent come from the verified token, never from the body.
    params.insert("userId".into(), json!(user.id));
    params.insert("clientId".into(), json!(user.client_id));
    params.insert("otobotGrant".into(), json!(grant.token.expose_secret()));
    params.insert("otobotGrantExpiresAt".into(), minted["expiresAt"].clone());
    let url = format!("{}/webhook/{}", api.settings.n8n_webhook_url, path);
    let mut request = api
        .http
        .post(&url)
        .json(&Value::Object(params))
        .header(request_id::HEADER, request_id::current());
    if let Some(secret) = &api.settings.n8n_webhook_secret {
        request = request.header("x-webhook-secret", secret.expose_secret());
    }
    let response = request.send().await.map_err(|e| ApiError::Upstream {
        timeout: e.is_timeout(),
        // SECURITY: reqwest errors name the URL, which holds no secret.
        detail: e.to_string(),
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let text = response.text().await.map_err(|e| ApiError::Upstream {
        timeout: e.is_timeout(),
        detail: e.to_string(),
    })?;
    let relayed =
        serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({ "response": text }));
    Ok((status, Json(relayed)).into_response())
}
