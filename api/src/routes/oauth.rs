//! Connecting an account with OAuth2: authorization code with PKCE (S256)
//! and a single-use, expiring state stored server-side (hashed) with its
//! encrypted PKCE verifier, bound to the browser that started the flow.
//!
//! `POST …/authorize` (the user's token) answers an Otobot start URL, not the
//! provider's: opening it (single use, two minutes) sets a random browser
//! nonce in an HttpOnly, SameSite=Lax cookie (`__Host-` and Secure on https),
//! creates the state bound to the nonce's hash, and redirects to the
//! provider. The callback stores nothing unless the same browser returns
//! with that cookie: a provider URL sent to a victim carries a state their
//! browser cannot complete.

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Json, Router,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    db,
    error::{ApiError, Result},
    oauth::{catalogue::IdentifierSource, is_nonce, random_nonce},
    request_id,
    state::SharedState,
};

/// `POST /api/tooljet/connections/:service/authorize` (user API).
pub fn user_router() -> Router<SharedState> {
    Router::new().route(
        "/api/tooljet/connections/{service}/authorize",
        post(authorize),
    )
}

/// `GET /api/oauth/start/:token` and `GET /api/oauth/callback` (the browser).
pub fn public_router() -> Router<SharedState> {
    Router::new()
        .route("/api/oauth/start/{token}", get(start))
        .route("/api/oauth/callback", get(callback))
}

/// A start URL lives two minutes: the front end opens it at once.
const START_TTL_SECONDS: i32 = 120;
/// A state lives ten minutes from the start URL (the provider's login and
/// consent); so does the browser cookie.
const STATE_TTL_SECONDS: i32 = 600;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorizeBody {
    label: Option<String>,
    redirect_after: Option<String>,
}

fn sha256(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Whether `url` is on one of the frontend's origins (open-redirect guard).
fn allowed_redirect(state: &SharedState, url: &str) -> bool {
    let mut origins = vec![state.oauth.frontend_url.clone()];
    // The portal, served by this API under PUBLIC_URL.
    if let Some(public) = state.oauth.redirect_uri.strip_suffix("/api/oauth/callback") {
        origins.push(format!("{public}/portal/"));
    }
    if let Some(api) = &state.user_api {
        origins.extend(api.settings.cors_origins.iter().cloned());
    }
    origins.iter().any(|origin| {
        let origin = origin.trim_end_matches('/');
        url == origin
            || url
                .strip_prefix(origin)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
    })
}

async fn authorize(
    State(state): State<SharedState>,
    user: AuthUser,
    Path(service): Path<String>,
    payload: std::result::Result<Json<AuthorizeBody>, JsonRejection>,
) -> Result<Response> {
    let body = match payload {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => AuthorizeBody::default(),
        Err(e) => return Err(ApiError::bad_request("invalid_body", e.body_text())),
    };
    if let Some(r) = &body.redirect_after {
        if !allowed_redirect(&state, r) {
            return Err(ApiError::bad_request(
                "invalid_redirect",
                "redirectAfter must be on the frontend's origin (FRONTEND_URL)",
            ));
        }
    }
    let Some((provider, _)) = state.oauth.provider(&service) else {
        return Err(ApiError::bad_request(
            "provider_not_configured",
            "This service is not an OAuth2 provider configured on this server (<SERVICE>_CLIENT_ID and _CLIENT_SECRET)",
        ));
    };
    if provider.authorization_url.is_none() {
        return Err(ApiError::bad_request(
            "provider_not_configured",
            "This provider has no authorization URL",
        ));
    }
    // SECURITY: 256 random bits; only its SHA-256 is stored. The state and
    // the PKCE verifier are made when a browser opens the start URL.
    let start_token = random_nonce();
    let request_id = request_id::current();
    db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        client
            .execute(
                "SELECT otobot.begin_oauth_start($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &user.id,
                    &service,
                    &sha256(&start_token),
                    &body.label,
                    &body.redirect_after,
                    &START_TTL_SECONDS,
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
            })
    })
    .await?;
    let start_url = format!("{}/api/oauth/start/{start_token}", state.oauth.public_url);
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(START_TTL_SECONDS.into());
    // The seed's shape: the front end opens `authorizationUrl` in the browser.
    Ok(
        Json(json!({ "authorizationUrl": start_url, "expiresAt": expires_at.to_rfc3339() }))
            .into_response(),
    )
}

/// The provider's authorization URL for a state and PKCE challenge.
fn provider_url(
    state: &SharedState,
    service: &str,
    state_token: &str,
    challenge: &oauth2::PkceCodeChallenge,
) -> Option<String> {
    let (provider, app) = state.oauth.provider(service)?;
    let mut url = url::Url::parse(provider.authorization_url.as_deref()?).ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", &state.oauth.redirect_uri)
            .append_pair("state", state_token);
        if !provider.default_scopes.is_empty() {
            q.append_pair("scope", &provider.scope_param());
        }
        if provider.pkce {
            q.append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method().as_str());
        }
        for (k, v) in &provider.extra_authorize_params {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// `GET /api/oauth/start/:token`: the browser that opens it is the one the
/// authorization is bound to.
async fn start(
    State(state): State<SharedState>,
    Path(start_token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fail = |code: &str, target: Option<&str>| {
        back(&state, target, &[("oauth", "error"), ("error", code)])
    };
    if !is_nonce(&start_token) {
        return fail("invalid_start", None);
    }
    let cookie = state.oauth.browser_cookie;
    // Several flows in one browser share its nonce; a new browser gets one.
    let nonce = cookie.read(&headers).unwrap_or_else(random_nonce);
    let state_token = random_nonce();
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let request_id = request_id::current();
    let opened = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.open_oauth_start($1, $2, $3, $4, $5, $6)",
                &[
                    &sha256(&start_token),
                    &sha256(&state_token),
                    &sha256(&nonce),
                    &verifier.secret(),
                    &STATE_TTL_SECONDS,
                    &request_id,
                ],
            )
            .await
            .map_err(db::map_error)?;
        Ok(row.get::<_, Option<Value>>(0))
    })
    .await;
    let opened = match opened {
        Ok(Some(o)) => o,
        Ok(None) => return fail("invalid_start", None),
        Err(error) => {
            tracing::error!(%error, "opening an OAuth start failed");
            return fail("server_error", None);
        }
    };
    let target = opened["redirectAfter"].as_str();
    if opened["expired"] == true {
        return fail("start_expired", target);
    }
    let service = opened["service"].as_str().unwrap_or_default();
    let Some(url) = provider_url(&state, service, &state_token, &challenge) else {
        return fail("provider_not_configured", target);
    };
    let mut response = Redirect::to(&url).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cookie.set_cookie(&nonce, STATE_TTL_SECONDS.into())) {
        h.append(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Back to the frontend with the outcome in the query string.
fn back(state: &SharedState, target: Option<&str>, params: &[(&str, &str)]) -> Response {
    let base = target
        .filter(|t| allowed_redirect(state, t))
        .unwrap_or(&state.oauth.frontend_url);
    let mut url = match url::Url::parse(base) {
        Ok(u) => u,
        Err(_) => return ApiError::Internal("FRONTEND_URL is not a URL".into()).into_response(),
    };
    url.query_pairs_mut().extend_pairs(params);
    Redirect::to(url.as_str()).into_response()
}

async fn callback(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id::current();
    let fail = |code: &str, target: Option<&str>| {
        back(&state, target, &[("oauth", "error"), ("error", code)])
    };
    let Some(state_token) = query
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= 128)
    else {
        return fail("invalid_state", None);
    };
    // SECURITY: the browser that opened the start URL must come back with
    // its nonce; without it the state is spent and nothing is stored.
    let browser = state
        .oauth
        .browser_cookie
        .read(&headers)
        .map(|nonce| sha256(&nonce));
    // Single use: the state is deleted whatever happens next.
    let consumed = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.consume_oauth_state($1, $2, $3)",
                &[&sha256(state_token), &browser, &request_id],
            )
            .await
            .map_err(db::map_error)?;
        Ok(row.get::<_, Option<Value>>(0))
    })
    .await;
    let pending = match consumed {
        Ok(Some(p)) => p,
        Ok(None) => return fail("invalid_state", None),
        Err(error) => {
            tracing::error!(%error, "consuming an OAuth state failed");
            return fail("server_error", None);
        }
    };
    let target = pending["redirectAfter"].as_str().map(str::to_owned);
    let target = target.as_deref();
    if pending["expired"] == true {
        return fail("state_expired", None);
    }
    if pending["browserMismatch"] == true {
        // Not the browser that started: its redirectAfter is not trusted either.
        tracing::warn!(
            cookie = browser.is_some(),
            "an OAuth callback came without the starting browser's cookie; nothing stored"
        );
        return fail(
            if browser.is_some() {
                "browser_mismatch"
            } else {
                "browser_cookie_missing"
            },
            None,
        );
    }
    let service = pending["service"].as_str().unwrap_or_default().to_owned();
    if let Some(error) = query.get("error") {
        // A provider error (e.g. access_denied) is shown, not swallowed.
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return back(
            &state,
            target,
            &[
                ("oauth", "error"),
                ("error", "provider_error"),
                ("reason", &error),
                ("service", &service),
            ],
        );
    }
    let Some(code) = query
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return fail("missing_code", target);
    };
    let (Some(user_id), Some(verifier)) = (
        pending["userId"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok()),
        pending["codeVerifier"].as_str(),
    ) else {
        return fail("invalid_state", target);
    };
    let Some((provider, app)) = state.oauth.provider(&service) else {
        return fail("provider_not_configured", target);
    };
    let Some(token_url) = provider.token_url.as_deref() else {
        return fail("provider_not_configured", target);
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", state.oauth.redirect_uri.clone()),
    ];
    if provider.pkce {
        form.push(("code_verifier", verifier.to_owned()));
    }
    let tokens = match state
        .oauth
        .token_request(token_url, provider, app, form)
        .await
    {
        Ok(t) => t,
        Err(error) => {
            tracing::warn!(service = %service, %error, "OAuth code exchange failed");
            return fail("token_exchange_failed", target);
        }
    };
    let userinfo = match provider.account_identifier.as_ref().map(|a| a.source) {
        Some(IdentifierSource::Userinfo) => {
            state.oauth.userinfo(provider, &tokens.access_token).await
        }
        _ => None,
    };
    let account = provider.read_account_identifier(&tokens.raw, userinfo.as_ref());
    let label = pending["label"].as_str();
    let access = tokens.access_token.expose_secret();
    let refresh = tokens.refresh_token.as_ref().map(|t| t.expose_secret());
    let scopes = tokens
        .scopes
        .clone()
        .unwrap_or_else(|| provider.default_scopes.clone());
    let stored = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.store_oauth_connection($1, $2, $3, $4, $5, $6, $7, $8, 'oauth', $9)",
                &[
                    &user_id,
                    &service,
                    &access,
                    &refresh,
                    &tokens.expires_at,
                    &scopes,
                    &account,
                    &label,
                    &request_id,
                ],
            )
            .await
            .map_err(db::map_error)?;
        Ok(row.get::<_, Uuid>(0))
    })
    .await;
    match stored {
        Ok(id) => back(
            &state,
            target,
            &[
                ("oauth", "success"),
                ("service", &service),
                ("connectionId", &id.to_string()),
            ],
        ),
        Err(error) => {
            tracing::error!(service = %service, %error, "storing the OAuth connection failed");
            fail("store_failed", target)
        }
    }
}
