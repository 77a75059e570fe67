//! The API's database pool, role `otobot_api`.
//!
//! Every new pooled session gets the keyring before first use: the current
//! key and the decrypt-only ones, each sent as a bind parameter of
//! `otobot_load_key($1, $2, $3)`, never in SQL text.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{
    HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use secrecy::ExposeSecret;
use tokio_postgres::{error::SqlState, NoTls};

use crate::{
    error::ApiError,
    settings::{KeySet, Settings},
};

const LOAD_KEY: &str = "SELECT otobot.otobot_load_key($1, $2, $3)";

/// Loads the keyring into one session: the old versions, then the current
/// one, each as bind parameters. On failure, the version that did not load.
pub async fn load_keys(
    client: &tokio_postgres::Client,
    keys: &KeySet,
) -> Result<(), (i32, tokio_postgres::Error)> {
    let all = keys
        .old
        .iter()
        .map(|k| (k, false))
        .chain(std::iter::once((&keys.current, true)));
    for (key, current) in all {
        client
            .execute(
                LOAD_KEY,
                &[&key.version, &key.key.expose_secret().as_slice(), &current],
            )
            .await
            .map_err(|e| (key.version, e))?;
    }
    Ok(())
}

/// Builds the pool. Sessions use UTC and a statement timeout, and load the
/// keyring when created.
pub fn pool(settings: &Settings, keys: Arc<KeySet>) -> Pool {
    let mut config = settings.database.pg_config().clone();
    let statement_ms = settings.db_timeout.as_millis();
    config.options(format!(
        "-c TimeZone=UTC -c statement_timeout={statement_ms}"
    ));
    config.connect_timeout(settings.db_timeout);
    config.keepalives_idle(Duration::from_secs(30));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.db_timeout))
        .create_timeout(Some(settings.db_timeout))
        .recycle_timeout(Some(settings.db_timeout))
        .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            let keys = keys.clone();
            Box::pin(async move {
                load_keys(client, &keys)
                    .await
                    .map_err(|(_, e)| HookError::Backend(e))
            })
        }))
        .build()
        .expect("a Tokio runtime is configured")
}

/// Why a session could not be made ready, for start-up messages.
pub fn describe_pool_error(error: &PoolError) -> String {
    match error {
        PoolError::PostCreateHook(HookError::Backend(e)) => match e.as_db_error() {
            Some(db) if db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!(
                "{} (ENCRYPTION_MASTER_KEY or ENCRYPTION_OLD_KEYS is not the key this database's values were encrypted with)",
                db.message()
            ),
            Some(db) if db.code() == &SqlState::UNDEFINED_FUNCTION || db.code() == &SqlState::INVALID_SCHEMA_NAME => format!(
                "the otobot extension is missing from the database: run `otobot migrate` ({})",
                db.message()
            ),
            Some(db) => format!("loading the keyring failed: {}", db.message()),
            None => format!("loading the keyring failed: {e}"),
        },
        PoolError::Backend(e) => match e.as_db_error() {
            Some(db) => format!("cannot connect to the database: {}", db.message()),
            None => format!("cannot connect to the database: {e}"),
        },
        PoolError::Timeout(_) => "timed out connecting to the database".into(),
        other => other.to_string(),
    }
}

/// A pooled session, or 503.
pub async fn client(pool: &Pool) -> Result<Object, ApiError> {
    pool.get()
        .await
        .map_err(|e| ApiError::Unavailable(describe_pool_error(&e)))
}

/// Maps a database error to the API's error: unavailability is 503, a
/// refused argument 400, the rest 500 (logged, not returned).
pub fn map_error(error: tokio_postgres::Error) -> ApiError {
    let Some(db) = error.as_db_error() else {
        return ApiError::Unavailable(format!("database connection: {error}"));
    };
    let code = db.code().code();
    match code {
        // no key loaded, statement timeout, connection and resource classes
        "55000" | "57014" | "57P01" | "57P02" | "57P03" | "53300" => {
            ApiError::Unavailable(db.message().to_owned())
        }
        c if c.starts_with("08") => ApiError::Unavailable(db.message().to_owned()),
        // SECURITY: our functions' argument errors name the problem, not a value.
        "22023" | "P0002" | "23502" | "23514" | "22001" => {
            ApiError::bad_request("invalid_input", db.message().trim_start_matches("otobot: "))
        }
        "23505" => ApiError::Conflict("This already exists (e.g. the email is in use)".into()),
        "42501" => ApiError::Forbidden(db.message().trim_start_matches("otobot: ").to_owned()),
        _ => ApiError::Internal(format!("{code}: {}", db.message())),
    }
}

/// Runs `f` within the database timeout; a slow database is 503, not a hang.
pub async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| Err(ApiError::Unavailable("database call timed out".into())))
}
