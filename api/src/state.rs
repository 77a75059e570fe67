//! State shared by every request.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use deadpool_postgres::Pool;

use crate::{
    auth::InternalTokens, jwt::JwtKeys, metrics::Metrics, rate_limit::RateLimiter,
    settings::UserApiSettings,
};

/// State of the user API (present when `API_JWT_SECRET` is set).
pub struct UserApi {
    pub jwt: JwtKeys,
    /// Verified against when an email is unknown, so timing tells nothing.
    pub decoy_hash: String,
    /// Outbound calls (n8n webhooks).
    pub http: reqwest::Client,
    pub settings: UserApiSettings,
    /// The portal's session cookies and CSRF tokens.
    pub portal: crate::session::SessionKeys,
}

pub struct AppState {
    pub pool: Pool,
    pub tokens: InternalTokens,
    /// Request limits (per caller, per caller and user, per user, per address).
    pub limiter: RateLimiter,
    /// `TRUSTED_PROXIES`: whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of `METRICS_TOKEN`; `None`: `/metrics` is 404 on the API's port.
    pub metrics_token: Option<[u8; 32]>,
    /// Service codes known to the database, refreshed in the background.
    pub services: RwLock<Arc<HashSet<String>>>,
    pub refresh_window_seconds: i32,
    pub db_timeout: Duration,
    pub user_api: Option<UserApi>,
    pub oauth: crate::oauth::OAuth,
}

impl AppState {
    /// The client's address (see [`crate::rate_limit::client_ip`]).
    pub fn client_ip(
        &self,
        peer: std::net::SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        crate::rate_limit::client_ip(peer.ip(), headers, &self.trusted_proxies)
    }

    pub fn knows_service(&self, code: &str) -> bool {
        self.services
            .read()
            .map(|s| s.contains(code))
            .unwrap_or(false)
    }
}

pub type SharedState = Arc<AppState>;
