//! `otobot migrate`: applies the embedded migrations.

use anyhow::{Context, Result};

use super::ops::register_configured_keys;
use crate::{
    config::Database,
    migrate::{self, State},
};

/// Arguments of `otobot migrate` (which then registers the key versions of
/// ENCRYPTION_MASTER_KEY and ENCRYPTION_OLD_KEYS when they are set).
#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL URL of a superuser; default: MIGRATION_DATABASE_URL, else built from
    /// POSTGRES_USER, POSTGRES_PASSWORD and FRONTEND_DB_{HOST,PORT,NAME}
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// List every migration as applied or pending, and change nothing
    #[arg(long)]
    status: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let mut client = Database::for_migrations(args.database_url.as_deref())?
        .connect()
        .await?;
    let migrations = migrate::embedded();
    if args.status {
        let entries = migrate::status(&client, &migrations).await?;
        if entries.is_empty() {
            println!("no migrations");
        }
        for entry in entries {
            match entry.state {
                State::Applied(at) => println!(
                    "applied  {}  {}",
                    entry.name,
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                State::Pending => println!("pending  {}", entry.name),
                State::Changed => println!(
                    "changed  {}  (checksum mismatch: edited after it was applied)",
                    entry.name
                ),
                State::NotInBinary => {
                    println!("unknown  {}  (applied, but not in this binary)", entry.name)
                }
            }
        }
        return Ok(());
    }
    let report =
        migrate::apply(&mut client, &migrations, |m| println!("applied {}", m.name)).await?;
    if report.applied.is_empty() {
        println!("database is up to date ({} migrations)", report.total);
    }
    // SECURITY: the otobot.* settings exist from each session's start (a
    // restored database has lost this database-level setting).
    let preload: bool = client
        .query_one("SELECT otobot.ensure_session_preload()", &[])
        .await
        .context("cannot set session_preload_libraries for the vault database")?
        .get(0);
    if preload && report.applied.is_empty() {
        println!("the vault database loads the otobot library at session start again");
    }
    // SECURITY: the first registration of a key version decides which key it
    // is; it happens here, as the migrating superuser, never in the API.
    register_configured_keys(&client).await
}
