//! `/openapi.json`, generated from the route annotations and these shapes.

use axum::{routing::get, Json, Router};
use serde::Serialize;
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
    Modify, OpenApi, ToSchema,
};
use uuid::Uuid;

use crate::state::SharedState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Otobot internal API", description = "The only door through which a workflow gets a secret."),
    paths(
        super::health::health,
        super::health::metrics,
        super::internal::credentials,
        super::internal::connections,
        super::internal::connection_status,
        super::tooljet::trigger_workflow,
        super::grants::create,
        super::grants::list,
        super::grants::revoke,
        openapi_json,
    ),
    components(schemas(ErrorBody, NotFoundBody, GrantRefusedBody, CredentialsResponse, Credentials, CredentialMetadata,
                       ConnectionsResponse, ConnectionSummary, StatusResponse, HealthResponse,
                       super::grants::NewGrant, GrantView, CreatedGrant, GrantList, RevokedGrant)),
    modifiers(&InternalToken),
)]
pub struct ApiDoc;

struct InternalToken;

impl Modify for InternalToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "internal_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(crate::auth::HEADER))),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(utoipa::openapi::security::Http::new(
                utoipa::openapi::security::HttpAuthScheme::Bearer,
            )),
        );
        // The user routes: `Authorization: Bearer <JWT>` from POST /api/tooljet/auth/login.
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<SharedState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every error: a human message, a stable code, the request id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: String,
    /// e.g. invalid_user_id, unknown_service, unauthorized, rate_limited, service_unavailable
    pub code: String,
    pub request_id: String,
}

/// 404 of a credential fetch: branch on `hasCredentials`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotFoundBody {
    /// "Connection not found"
    pub error: String,
    /// connection_not_found
    pub code: String,
    pub has_credentials: bool,
    pub request_id: String,
}

/// 403 of a credential fetch: no grant, or a grant that does not allow it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantRefusedBody {
    /// What the workflow author should do, e.g. pass the trigger's otobotGrant
    pub error: String,
    /// grant_required or grant_invalid
    pub code: String,
    pub has_credentials: bool,
    /// grant_invalid only: unknown, other_user, expired, revoked or service_not_covered
    pub reason: Option<String>,
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsResponse {
    pub connection_id: Uuid,
    pub service: String,
    pub has_credentials: bool,
    pub credentials: Credentials,
    pub metadata: CredentialMetadata,
}

/// `accessToken` for OAuth2 connections, `apiKey` for API keys. Never the refresh token.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub access_token: Option<String>,
    pub api_key: Option<String>,
    /// Bearer or api_key
    pub token_type: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialMetadata {
    pub account_identifier: Option<String>,
    pub label: Option<String>,
    pub token_expired: bool,
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionsResponse {
    pub user_id: Uuid,
    pub connections: Vec<ConnectionSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionSummary {
    pub id: Uuid,
    pub service_name: String,
    pub label: Option<String>,
    pub account_identifier: Option<String>,
    /// active, expired or revoked
    pub status: String,
    pub is_active: bool,
    pub token_expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub id: Uuid,
    #[serde(rename = "service_name")]
    pub service_name: String,
    /// valid, refresh_needed, expired or revoked
    pub status: String,
    pub expires_at: Option<String>,
    pub is_active: bool,
    pub last_refreshed_at: Option<String>,
    pub user_id: Uuid,
    pub label: Option<String>,
    pub account_identifier: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// ok
    pub status: String,
    /// otobot-internal-api
    pub service: String,
    pub version: String,
    pub database: String,
    pub keyring: String,
    pub key_version: i32,
}

/// A grant as listed: never its token.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_email: Option<String>,
    pub client_id: Uuid,
    /// run or standing
    pub kind: String,
    pub workflow: String,
    pub services: Vec<String>,
    pub created_at: String,
    pub created_by: Uuid,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<Uuid>,
    /// active, expired or revoked
    pub status: String,
}

/// A new standing grant: the listed fields and its token, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedGrant {
    pub id: Uuid,
    /// otg_… — send it as x-otobot-grant (the Otobot node's Grant parameter)
    pub grant: String,
    /// standing
    pub kind: String,
    pub workflow: String,
    pub services: Vec<String>,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedGrant {
    pub id: Uuid,
    pub revoked: bool,
}
