//! Otobot: the API server and the `otobot` command line around the vault database.

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod grants;
pub mod hardening;
pub mod jwt;
pub mod metrics;
pub mod migrate;
pub mod oauth;
pub mod password;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod sealer;
pub mod session;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
