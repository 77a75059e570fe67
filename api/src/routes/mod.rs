//! The HTTP routes: `router()` of each module, assembled here.

pub mod health;
pub mod internal;
pub mod openapi;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::{self, Next},
    response::Response,
    Router,
};

use crate::{auth::Caller, error::ApiError, metrics, request_id, state::SharedState};

pub fn router(state: SharedState) -> Router {
    let internal = internal::router().route_layer(middleware::from_fn_with_state(
        state.clone(),
        internal_guard,
    ));
    let public = health::router()
        .merge(openapi::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), public_guard));
    Router::new()
        .merge(internal)
        .merge(public)
        .fallback(|| async { ApiError::bad_request("route_not_found", "No such route") })
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Authenticated routes: the caller's token, then the caller's rate limit.
/// Requests without a valid token are limited per client address, so
/// guessing tokens is throttled too.
async fn internal_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.tokens.authenticate(request.headers());
    let key = match &caller {
        Some(Caller(name)) => format!("caller:{name}"),
        None => format!("ip:{}", peer.ip()),
    };
    let allowance = state.limit.check(&key)?;
    let caller = caller.ok_or(ApiError::Unauthorized)?;
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    allowance.apply(&mut response);
    Ok(response)
}

/// Unauthenticated routes: limited per client address.
async fn public_guard(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let allowance = state.public_limit.check(&format!("ip:{}", peer.ip()))?;
    let mut response = next.run(request).await;
    allowance.apply(&mut response);
    Ok(response)
}
