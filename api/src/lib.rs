//! Otobot: the API server and the `otobot` command line around the vault database.

pub mod cli;
pub mod config;
pub mod migrate;
