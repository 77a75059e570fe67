//! Otobot's own portal: its files (embedded in the binary, served under
//! `/portal/`), its browser sessions (`/api/portal/…`) and each user's access
//! history (`/api/tooljet/access-history`, for ToolJet too).
//!
//! The pages call the same user routes as ToolJet (`/api/tooljet/…`),
//! authenticated by the session cookie and its CSRF header instead of a
//! bearer token (see `session`).

use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use std::{collections::HashMap, net::SocketAddr};

use super::{
    json_text,
    tooljet::{call, user_api, verify_login, LoginBody},
};
use crate::{
    auth::AuthUser,
    db,
    error::{ApiError, Result},
    request_id, session,
    state::SharedState,
};

include!(concat!(env!("OUT_DIR"), "/portal_assets.rs"));

/// The portal's files: no rate limit (constant bytes from memory, no
/// database), strict security headers.
pub fn public_router() -> Router<SharedState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .route("/portal/", get(index))
        .route("/portal/{*path}", get(asset))
}

/// Session routes and the access history: behind the user guard.
pub fn user_router() -> Router<SharedState> {
    Router::new()
        .route("/api/portal/login", post(login))
        .route("/api/portal/session", get(current_session))
        .route("/api/portal/logout", post(logout))
        .route("/api/tooljet/access-history", get(access_history))
}

/// SECURITY: only the portal's own scripts and styles run (no inline code,
/// no other origin), it cannot be framed, and it talks to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn security_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn serve_file(path: &str, request: &HeaderMap) -> Response {
    let Some((_, content_type, bytes, etag)) = PORTAL_ASSETS.iter().find(|(p, ..)| *p == path)
    else {
        return ApiError::NotFound("route_not_found", "No such route".into()).into_response();
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == *etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            *bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(header::ETAG, HeaderValue::from_static(etag));
    // Revalidated on each load, so an upgraded binary's files are used at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index(headers: HeaderMap) -> Response {
    serve_file("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_file(&path, &headers)
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `POST /api/portal/login` `{email, password}` → `{user, csrfToken,
/// expiresAt}` and the session cookie. The same checks, limits and audit as
/// the ToolJet login (source `portal`); no token in the body.
async fn login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    payload: std::result::Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response> {
    let api = user_api(&state)?;
    let user = verify_login(&state, peer, &headers, payload, "portal").await?;
    let new = api.portal.issue(user.id);
    let request_id = request_id::current();
    let expires_at = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let row = client
            .query_one(
                "SELECT otobot.start_portal_session($1, $2, $3, $4)",
                &[
                    &user.id,
                    &new.id_hash.as_slice(),
                    &api.portal.ttl_seconds,
                    &request_id,
                ],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::NO_DATA_FOUND) {
                    ApiError::InvalidCredentials
                } else {
                    db::map_error(e)
                }
            })?;
        Ok(row.get::<_, chrono::DateTime<chrono::Utc>>(0))
    })
    .await?;
    let mut response = Json(json!({
        "user": user.profile,
        "csrfToken": new.csrf,
        "expiresAt": expires_at.to_rfc3339(),
    }))
    .into_response();
    no_store(&mut response);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, api.portal.set_cookie(&new.cookie_value));
    Ok(response)
}

/// `GET /api/portal/session` → `{user, csrfToken}` for a live session, else
/// 401 (and the cookie is removed). How a reloaded page gets its CSRF token
/// back: only this origin can read the answer.
async fn current_session(State(state): State<SharedState>, headers: HeaderMap) -> Result<Response> {
    let api = user_api(&state)?;
    let cookie = api.portal.cookie(&headers);
    let user = match &cookie {
        Some(c) => session::actor(&state, &c.id_hash, api.portal.idle_seconds)
            .await?
            .filter(|u| u.id == c.user),
        None => None,
    };
    let (Some(cookie), Some(user)) = (cookie, user) else {
        let mut response = ApiError::InvalidToken.into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, api.portal.clear_cookie());
        return Ok(response);
    };
    let profile = call(&state, "SELECT otobot.user_profile($1)::text", &[&user.id])
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let profile: serde_json::Value =
        serde_json::from_str(&profile).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Json(json!({ "user": profile, "csrfToken": cookie.csrf })).into_response();
    no_store(&mut response);
    Ok(response)
}

/// `POST /api/portal/logout` (with the CSRF header): ends the session in the
/// database, for every replica at once, and removes the cookie. 204.
async fn logout(State(state): State<SharedState>, headers: HeaderMap) -> Result<Response> {
    let api = user_api(&state)?;
    if let Some(cookie) = api.portal.cookie(&headers) {
        if !session::csrf_matches(&headers, &cookie) {
            return Err(ApiError::Forbidden(
                "A portal session needs its CSRF token in the x-csrf-token header".into(),
            ));
        }
        db::within(state.db_timeout, async {
            let client = db::client(&state.pool).await?;
            client
                .execute(
                    "SELECT otobot.end_portal_session($1)",
                    &[&cookie.id_hash.as_slice()],
                )
                .await
                .map_err(db::map_error)
        })
        .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, api.portal.clear_cookie());
    Ok(response)
}

/// `GET /api/tooljet/access-history[?before=ID&limit=N&kind=reads|all&service=CODE]`
/// → `{entries: [...], nextBefore}`: the caller's own audit rows, newest
/// first; `nextBefore` is the `before` of the next page (null at the end).
async fn access_history(
    State(state): State<SharedState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !["before", "limit", "kind", "service"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown parameter {:?}",
                unknown.chars().take(40).collect::<String>()
            ),
        ));
    }
    let before = match query.get("before") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_request("invalid_before", "before must be a positive entry id")
        })?),
    };
    let limit = match query.get("limit") {
        None => 25,
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit must be 1 to 100"))?,
    };
    let reads_only = match query.get("kind").map(String::as_str) {
        None | Some("reads") => true,
        Some("all") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                "kind must be reads or all",
            ))
        }
    };
    let service = query.get("service");
    if let Some(s) = service {
        if s.len() > 63 || !state.knows_service(s) {
            return Err(ApiError::bad_request(
                "unknown_service",
                "service is not a known service code",
            ));
        }
    }
    let page = call(
        &state,
        "SELECT otobot.list_own_access_history($1, $2, $3, $4, $5)::text",
        &[&user.id, &before, &limit, &reads_only, &service],
    )
    .await?
    .ok_or_else(|| ApiError::Internal("access history returned nothing".into()))?;
    let mut response = json_text(StatusCode::OK, page);
    no_store(&mut response);
    Ok(response)
}
