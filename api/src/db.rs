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
use tokio_postgres::error::SqlState;

use crate::{
    error::ApiError,
    settings::{KeySet, Settings},
};

const LOAD_KEY: &str = "SELECT otobot.otobot_load_key($1, $2, $3)";

/// Why the keyring was not loaded into a session.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// SECURITY: the session could write a key into the server log, so no
    /// key was sent (fail closed). Names the setting, never a key.
    #[error(
        "keys not sent: a {role} session would log them ({setting} = {value}), a setting this \
         role cannot override; as a superuser run `ALTER ROLE {role} SET {setting} = {safe}` \
         (or remove the database-wide or server-wide setting), then retry"
    )]
    UnsafeLogging {
        role: String,
        setting: &'static str,
        value: String,
        safe: &'static str,
    },
    /// The session's logging settings could not be read.
    #[error("cannot read the session's logging settings: {0}")]
    Check(tokio_postgres::Error),
    /// `otobot_load_key` refused this key version.
    #[error("loading key version {version} failed: {source}")]
    Key {
        version: i32,
        source: tokio_postgres::Error,
    },
}

/// Settings that decide whether a statement's bind parameters (keys, tokens)
/// can reach the server log. The settings the role may change itself are set
/// safe on every session; the others are tried, then verified.
const USER_SETTABLE_SAFE: &str = "SET log_parameter_max_length_on_error = 0; \
     SET debug_print_parse = off; SET debug_print_rewritten = off; SET debug_print_plan = off";

/// `(setting, safe value)`: superuser-only settings that, left unsafe, log
/// statements with their parameters. `auto_explain`/`pgaudit` only count
/// when loaded (or set for this session).
const GUARDED: &[(&str, &str)] = &[
    ("log_statement", "none"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_transaction_sample_rate", "0"),
    ("log_parameter_max_length", "0"),
    ("log_parameter_max_length_on_error", "0"),
    ("debug_print_parse", "off"),
    ("debug_print_rewritten", "off"),
    ("debug_print_plan", "off"),
    ("auto_explain.log_min_duration", "-1"),
    ("pgaudit.log_parameter", "off"),
];

const READ_SETTINGS: &str =
    "SELECT n, COALESCE((SELECT setting FROM pg_catalog.pg_settings WHERE name = n), \
            pg_catalog.current_setting(n, true)), current_user::text \
     FROM unnest($1::text[]) AS n";

/// The first setting (with its value) that would let a statement's bind
/// parameters reach the log, given the effective values `value(name)`.
///
/// SECURITY: keys and tokens are only ever bind parameters. They are logged
/// when a statement is logged with its parameters (`log_statement`,
/// `log_min_duration_statement`, the sampling settings, unless
/// `log_parameter_max_length = 0` drops every parameter from those lines),
/// in an error's context (`log_parameter_max_length_on_error`), in a
/// printed plan (`debug_print_*`, `auto_explain`: a custom plan holds the
/// parameters as constants), or by pgaudit with `log_parameter`.
/// `log_min_error_statement` only adds the statement's text, which carries
/// `$1`, not the value; pg_stat_statements stores normalised text too.
pub fn unsafe_logging_setting<'a>(
    value: impl Fn(&str) -> Option<&'a str>,
) -> Option<(&'static str, String, &'static str)> {
    let is = |name: &str, safe: &[&str]| value(name).is_none_or(|v| safe.contains(&v));
    let parameters_dropped = value("log_parameter_max_length") == Some("0");
    let checks: &[(&'static str, &[&str], &'static str)] = &[
        ("log_statement", &["none", "ddl"], "'none'"),
        ("log_min_duration_statement", &["-1"], "-1"),
        ("log_transaction_sample_rate", &["0"], "0"),
    ];
    if !parameters_dropped {
        for (name, safe, fix) in checks {
            if !is(name, safe) {
                return Some((name, value(name).unwrap_or_default().to_owned(), fix));
            }
        }
        if !is("log_min_duration_sample", &["-1"]) && !is("log_statement_sample_rate", &["0"]) {
            let v = value("log_min_duration_sample").unwrap_or_default();
            return Some(("log_min_duration_sample", v.to_owned(), "-1"));
        }
    }
    let always: &[(&'static str, &[&str], &'static str)] = &[
        ("log_parameter_max_length_on_error", &["0"], "0"),
        ("debug_print_parse", &["off"], "off"),
        ("debug_print_rewritten", &["off"], "off"),
        ("debug_print_plan", &["off"], "off"),
        ("auto_explain.log_min_duration", &["-1"], "-1"),
        ("pgaudit.log_parameter", &["off"], "off"),
    ];
    always
        .iter()
        .find(|(name, safe, _)| !is(name, safe))
        .map(|(name, _, fix)| (*name, value(name).unwrap_or_default().to_owned(), *fix))
}

/// Makes this session's logging safe for keys, or says which setting is not.
///
/// SECURITY: fail closed. What the role may set is set; the superuser-only
/// settings that are unsafe are tried (a superuser, or a role granted `SET`
/// on them, succeeds; `otobot_api` fails silently, as a non-superuser DBA's
/// `ALTER ROLE … SET log_statement = 'all'` intends); then the effective
/// values are read back and judged. No key is sent before this passes.
pub async fn ensure_keys_unlogged(client: &tokio_postgres::Client) -> Result<(), KeyLoadError> {
    client
        .batch_execute(USER_SETTABLE_SAFE)
        .await
        .map_err(KeyLoadError::Check)?;
    let mut names: Vec<&str> = GUARDED.iter().map(|(n, _)| *n).collect();
    names.push("log_statement_sample_rate");
    let read = || async {
        let rows = client
            .query(READ_SETTINGS, &[&names])
            .await
            .map_err(KeyLoadError::Check)?;
        let role = rows
            .first()
            .map(|r| r.get::<_, String>(2))
            .unwrap_or_default();
        let values: Vec<(String, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok::<_, KeyLoadError>((role, values))
    };
    let judge = |values: &[(String, Option<String>)]| {
        unsafe_logging_setting(|name| {
            values
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_deref())
        })
    };
    let (_, values) = read().await?;
    if judge(&values).is_none() {
        return Ok(());
    }
    for (name, safe) in GUARDED {
        let current = values
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref());
        if current.is_some_and(|v| v != *safe) {
            // Names and values are constants of this file, never input.
            let _ = client
                .batch_execute(&format!("SET {name} = '{safe}'"))
                .await;
        }
    }
    let (role, values) = read().await?;
    match judge(&values) {
        None => Ok(()),
        Some((setting, value, safe)) => Err(KeyLoadError::UnsafeLogging {
            role,
            setting,
            value,
            safe,
        }),
    }
}

/// Loads the keyring into one session, once its logging is verified safe
/// ([`ensure_keys_unlogged`]): the old versions, then the current one, each
/// as bind parameters.
pub async fn load_keys(client: &tokio_postgres::Client, keys: &KeySet) -> Result<(), KeyLoadError> {
    ensure_keys_unlogged(client).await?;
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
            .map_err(|source| KeyLoadError::Key {
                version: key.version,
                source,
            })?;
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
    let tls = settings
        .database
        .tls()
        .connector()
        .expect("checked when the settings were read");
    let manager = Manager::from_config(
        config,
        tls,
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
                load_keys(client, &keys).await.map_err(|e| match e {
                    KeyLoadError::Key { source, .. } | KeyLoadError::Check(source) => {
                        HookError::Backend(source)
                    }
                    unsafe_logging => HookError::Message(unsafe_logging.to_string().into()),
                })
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
        PoolError::PostCreateHook(HookError::Message(message)) => message.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(pairs: &[(&str, &str)]) -> Option<&'static str> {
        unsafe_logging_setting(|name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
            .map(|(name, _, _)| name)
    }

    const DEFAULTS: &[(&str, &str)] = &[
        ("log_statement", "none"),
        ("log_min_duration_statement", "-1"),
        ("log_min_duration_sample", "-1"),
        ("log_statement_sample_rate", "1"),
        ("log_transaction_sample_rate", "0"),
        ("log_parameter_max_length", "-1"),
        ("log_parameter_max_length_on_error", "0"),
        ("debug_print_parse", "off"),
        ("debug_print_rewritten", "off"),
        ("debug_print_plan", "off"),
    ];

    fn with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut all: Vec<_> = DEFAULTS.to_vec();
        for (n, v) in changes {
            all.retain(|(m, _)| m != n);
            all.push((n, v));
        }
        all
    }

    #[test]
    fn postgresql_defaults_are_safe_for_keys() {
        assert_eq!(judge(DEFAULTS), None);
        assert_eq!(judge(&with(&[("log_statement", "ddl")])), None);
    }

    #[test]
    fn each_way_a_bind_parameter_reaches_the_log_is_refused_by_name() {
        for (name, value) in [
            ("log_statement", "all"),
            ("log_statement", "mod"),
            ("log_min_duration_statement", "0"),
            ("log_min_duration_statement", "250ms"),
            ("log_transaction_sample_rate", "0.01"),
            ("log_min_duration_sample", "0"),
            ("log_parameter_max_length_on_error", "-1"),
            ("debug_print_plan", "on"),
            ("auto_explain.log_min_duration", "0"),
            ("pgaudit.log_parameter", "on"),
        ] {
            assert_eq!(judge(&with(&[(name, value)])), Some(name), "{name}={value}");
        }
    }

    #[test]
    fn statement_logging_without_parameters_is_safe_but_plans_and_errors_are_not() {
        let hidden = ("log_parameter_max_length", "0");
        assert_eq!(
            judge(&with(&[
                hidden,
                ("log_statement", "all"),
                ("log_min_duration_statement", "0")
            ])),
            None
        );
        assert_eq!(
            judge(&with(&[hidden, ("auto_explain.log_min_duration", "0")])),
            Some("auto_explain.log_min_duration")
        );
        assert_eq!(
            judge(&with(&[
                hidden,
                ("log_parameter_max_length_on_error", "64B")
            ])),
            Some("log_parameter_max_length_on_error")
        );
        // Sampling at rate 0 samples nothing.
        assert_eq!(
            judge(&with(&[
                ("log_min_duration_sample", "0"),
                ("log_statement_sample_rate", "0")
            ])),
            None
        );
    }
}
