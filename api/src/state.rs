//! State shared by every request.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use deadpool_postgres::Pool;

use crate::{auth::InternalTokens, metrics::Metrics, rate_limit::RateLimit};

pub struct AppState {
    pub pool: Pool,
    pub tokens: InternalTokens,
    /// Per-caller limit of the authenticated routes.
    pub limit: RateLimit,
    /// Per-address limit of the unauthenticated routes (health, metrics).
    pub public_limit: RateLimit,
    pub metrics: Arc<Metrics>,
    /// Service codes known to the database, refreshed in the background.
    pub services: RwLock<Arc<HashSet<String>>>,
    pub refresh_window_seconds: i32,
    pub db_timeout: Duration,
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
