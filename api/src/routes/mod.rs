//! The HTTP routes: `router()` of each module, assembled here.

pub mod grants;
pub mod health;
pub mod internal;
pub mod oauth;
pub mod openapi;
pub mod portal;
pub mod tooljet;
pub mod webhooks;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::{self, Next},
    response::Response,
    Router,
};

use crate::{error::ApiError, metrics, rate_limit, request_id, state::SharedState};

/// A canonical hyphenated UUID, or 400 with `code` naming the parameter.
pub(crate) fn uuid_param(
    value: &str,
    name: &'static str,
    code: &'static str,
) -> Result<uuid::Uuid, ApiError> {
    match uuid::Uuid::try_parse(value) {
        Ok(id) if value.len() == 36 => Ok(id),
        _ => Err(ApiError::bad_request(
            code,
            format!("{name} must be a UUID"),
        )),
    }
}

/// A JSON body the database already serialised, relayed as is.
pub(crate) fn json_text(status: axum::http::StatusCode, body: String) -> Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `?scope=own|client` of a list route: `true` for the whole client (the
/// database decides what each role sees of it), 400 for anything else.
pub(crate) fn scope_param(
    query: &std::collections::HashMap<String, String>,
) -> Result<bool, ApiError> {
    match query.get("scope").map(String::as_str) {
        None | Some("own") => Ok(false),
        Some("client") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_scope",
            "scope must be own or client",
        )),
    }
}

/// A list function of the user routes, `sql` taking `(user id, whole client)`
/// and returning a JSON array (NULL for none), relayed as `{"<key>": [...]}`.
pub(crate) async fn user_list(
    state: &SharedState,
    key: &str,
    sql: &str,
    user: uuid::Uuid,
    whole_client: bool,
) -> Result<Response, ApiError> {
    let list = tooljet::call(state, sql, &[&user, &whole_client]).await?;
    Ok(json_text(
        axum::http::StatusCode::OK,
        format!(r#"{{"{key}":{}}}"#, list.unwrap_or_else(|| "[]".into())),
    ))
}

pub fn router(state: SharedState) -> Router {
    let internal =
        internal::router()
            .merge(webhooks::router())
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                internal_guard,
            ));
    let user = tooljet::router()
        .merge(grants::router())
        .merge(oauth::user_router())
        .merge(portal::user_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), user_guard))
        .layer(cors(&state));
    let public = health::router()
        .merge(openapi::router())
        .merge(oauth::public_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), public_guard));
    Router::new()
        .merge(internal)
        .merge(user)
        .merge(public)
        .merge(portal::public_router())
        .fallback(|| async { ApiError::NotFound("route_not_found", "No such route".into()) })
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Authenticated routes: the caller's token, then its limits: the
/// caller's ceiling, and (caller, user) when the route names a user.
/// Requests without a valid token are limited per client address, so
/// guessing tokens is throttled too.
async fn internal_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(caller) = state.tokens.authenticate(request.headers()) else {
        let ip = state.client_ip(peer, request.headers());
        state.limiter.check(&[rate_limit::address_key(ip)])?;
        return Err(ApiError::Unauthorized);
    };
    let mut keys = vec![rate_limit::caller_key(&caller.name)];
    if let Some(user) = target_user(request.uri().path()) {
        keys.push(rate_limit::caller_user_key(&caller.name, &user));
    }
    let allowance = state.limiter.check(&keys)?;
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    allowance.apply(&mut response);
    Ok(response)
}

/// The user an internal route is about (`/api/internal/user/<id>/…`).
fn target_user(path: &str) -> Option<uuid::Uuid> {
    let id = path
        .strip_prefix("/api/internal/user/")?
        .split('/')
        .next()?;
    uuid::Uuid::try_parse(id).ok()
}

/// User routes: limited per user (the token's subject) or per client
/// address when there is no valid token.
async fn user_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let subject = state.user_api.as_ref().and_then(|api| {
        let Some(authorization) = request.headers().get(axum::http::header::AUTHORIZATION) else {
            return api.portal.subject(request.headers());
        };
        let token = authorization.to_str().ok()?.strip_prefix("Bearer ")?;
        api.jwt.verify(token.trim()).map(|c| c.sub)
    });
    let key = match subject {
        Some(user) => rate_limit::user_key(&user),
        None => rate_limit::address_key(state.client_ip(peer, request.headers())),
    };
    let allowance = state.limiter.check(&[key])?;
    let mut response = next.run(request).await;
    allowance.apply(&mut response);
    Ok(response)
}

/// CORS for the user API: the configured origins only, no credentials, the
/// methods and headers ToolJet needs.
fn cors(state: &SharedState) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let origins: Vec<HeaderValue> = state
        .user_api
        .iter()
        .flat_map(|api| api.settings.cors_origins.iter())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .allow_credentials(false)
}

/// Unauthenticated routes: limited per client address.
async fn public_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = state.client_ip(peer, request.headers());
    let allowance = state.limiter.check(&[rate_limit::address_key(ip)])?;
    let mut response = next.run(request).await;
    allowance.apply(&mut response);
    Ok(response)
}
