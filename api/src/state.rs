//! State shared by every request.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use deadpool_postgres::Pool;

use crate::{
    auth::InternalTokens, jwt::JwtKeys, metrics::Metrics, rate_limit::RateLimit,
    settings::UserApiSettings,
};

/// State of the user API (present when `API_JWT_SECRET` is set).
pub struct UserApi {
    pub jwt: JwtKeys,
    /// Login attempts per client address, and per email.
    pub login_by_ip: RateLimit,
    pub login_by_email: RateLimit,
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
    /// Per-caller limit of the authenticated routes.
    pub limit: RateLimit,
    /// Per-address limit of the unauthenticated routes (health, metrics).
    pub public_limit: RateLimit,
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
    pub fn knows_service(&self, code: &str) -> bool {
        self.services
            .read()
            .map(|s| s.contains(code))
            .unwrap_or(false)
    }
}

pub type SharedState = Arc<AppState>;
