//! Shared pieces of the operator commands: the admin connection, the keyring
//! from the environment, and a few output helpers.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::{
    config::Database,
    settings::{KeySet, Settings},
};

/// `--database-url`, shared by every command that talks to the vault database.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DbArgs {
    /// PostgreSQL URL of a superuser (or otobot_dba); default: MIGRATION_DATABASE_URL, else built
    /// from POSTGRES_USER, POSTGRES_PASSWORD and FRONTEND_DB_{HOST,PORT,NAME}
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl DbArgs {
    /// The admin target, as `otobot migrate` resolves it.
    pub fn database(&self) -> Result<Database> {
        Database::for_migrations(self.database_url.as_deref())
    }

    /// One admin connection, in UTC.
    pub async fn connect(&self) -> Result<Client> {
        let client = self.database()?.connect().await?;
        client
            .batch_execute("SET TimeZone = 'UTC'")
            .await
            .context("cannot set the session time zone")?;
        Ok(client)
    }
}

/// The keyring configured in the environment, with `serve`'s rules and messages
/// (ENCRYPTION_MASTER_KEY, ENCRYPTION_KEY_VERSION, ENCRYPTION_OLD_KEYS).
pub fn keys_from_env() -> Result<KeySet> {
    keys_from_vars(|name| std::env::var(name).ok())
}

/// [`keys_from_env`] reading variables through `var`.
pub fn keys_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<KeySet> {
    // Only the key variables reach the parser, so an unrelated setting of
    // `serve` cannot stop an operator command; the token is a placeholder the
    // parser requires and nothing uses.
    let settings = Settings::from_vars(|name| match name {
        "ENCRYPTION_MASTER_KEY" | "ENCRYPTION_KEY_VERSION" | "ENCRYPTION_OLD_KEYS" => var(name),
        "N8N_INTERNAL_TOKEN" => Some("-".repeat(64)),
        _ => None,
    })?;
    Ok(settings.keys)
}

/// Loads `keys` into this session: the old versions decrypt-only, then the current one.
/// Each key is a bind parameter, never SQL text, and none is sent unless the
/// session's logging is verified safe ([`crate::db::ensure_keys_unlogged`]).
pub async fn load_keyring(client: &Client, keys: &KeySet) -> Result<()> {
    crate::db::load_keys(client, keys)
        .await
        .map_err(|e| anyhow::anyhow!(describe_load_error(&e)))
}

/// A key-loading failure as one line naming what to fix.
pub fn describe_load_error(error: &crate::db::KeyLoadError) -> String {
    match error {
        crate::db::KeyLoadError::Key { version, source } => describe_key_error(*version, source),
        other => other.to_string(),
    }
}

/// Registers the check value of every version of `keys` (old ones first),
/// as a superuser or `otobot_owner` may: the first registration of a version
/// decides which key it is, so the API cannot do it. Returns each version and
/// whether this call registered it (false: the same key already was). A
/// different key for a registered version is an error naming it.
pub async fn register_keyring(client: &Client, keys: &KeySet) -> Result<Vec<(i32, bool)>> {
    use secrecy::ExposeSecret;
    // SECURITY: the keys are bind parameters here too: fail closed.
    crate::db::ensure_keys_unlogged(client)
        .await
        .map_err(|e| anyhow::anyhow!(describe_load_error(&e)))?;
    let mut registered = Vec::new();
    for key in keys.old.iter().chain(std::iter::once(&keys.current)) {
        let new: bool = client
            .query_one(
                "SELECT otobot.otobot_register_key($1, $2)",
                &[&key.version, &key.key.expose_secret().as_slice()],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) if db.code().code() == "42501" => anyhow::anyhow!(
                    "registering key version {} needs a superuser or a member of otobot_owner: \
                     run `otobot migrate` (or this command) with MIGRATION_DATABASE_URL of one ({})",
                    key.version,
                    db.message()
                ),
                _ => anyhow::anyhow!(describe_key_error(key.version, &e)),
            })?
            .get(0);
        registered.push((key.version, new));
    }
    Ok(registered)
}

/// Registers the configured key versions (`otobot migrate`, `rotate-key`),
/// printing one line per version; says so and does nothing when
/// ENCRYPTION_MASTER_KEY is not set.
pub async fn register_configured_keys(client: &Client) -> Result<()> {
    if std::env::var("ENCRYPTION_MASTER_KEY").map_or(true, |v| v.trim().is_empty()) {
        println!(
            "no key version registered: ENCRYPTION_MASTER_KEY is not set (otobot serve refuses a key version \
             that was never registered: run `otobot migrate` again with the keys in the environment)"
        );
        return Ok(());
    }
    let keys = keys_from_env()?;
    for (version, new) in register_keyring(client, &keys).await? {
        if new {
            println!("registered key version {version}");
        } else {
            println!("key version {version} is registered");
        }
    }
    Ok(())
}

/// Why a key did not load, naming the version and the variable to fix.
pub fn describe_key_error(version: i32, error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) if db.code().code() == "28000" => format!(
            "key version {version} does not match the check value recorded in this database: \
             ENCRYPTION_MASTER_KEY or ENCRYPTION_OLD_KEYS holds another key than the one this database was encrypted with ({})",
            db.message()
        ),
        Some(db) if matches!(db.code().code(), "42883" | "3F000") => format!(
            "the otobot extension or schema is missing: run `otobot migrate` ({})",
            db.message()
        ),
        Some(db) => format!("loading key version {version} failed: {}", db.message()),
        None => format!("loading key version {version} failed: {error}"),
    }
}

/// A database error as one line: its message (and detail), without the driver's prefix.
pub fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().trim_start_matches("otobot: ").to_owned(),
        None => error.to_string(),
    }
}

/// `true` when stdout is a terminal (progress bars, colours).
pub fn stdout_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}
