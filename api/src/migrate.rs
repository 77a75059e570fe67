//! Forward-only SQL migrations: embedded at build time from `migrations/NNNN_description.sql`,
//! applied in version order, each in its own transaction, under a session advisory lock.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::{error::ErrorPosition, Client, GenericClient};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The version of the `otobot` extension the embedded migrations bring a
/// database to (the latest `ALTER EXTENSION otobot UPDATE TO` among them).
pub const EXTENSION_VERSION: &str = "0.2.0";

/// Key of the advisory lock that serialises concurrent runs ("otobot" in ASCII).
const LOCK_KEY: i64 = 0x6f74_6f62_6f74;

const BOOKKEEPING: &str = "
CREATE SCHEMA IF NOT EXISTS otobot_meta;
REVOKE ALL ON SCHEMA otobot_meta FROM PUBLIC;
COMMENT ON SCHEMA otobot_meta IS 'Otobot bookkeeping, outside the vault schema';
CREATE TABLE IF NOT EXISTS otobot_meta.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE otobot_meta.schema_migrations IS 'Migrations applied by otobot migrate; checksum is the SHA-256 (hex) of the file';
";

/// One migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    /// File name, e.g. `0001_schema.sql`.
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the file, lowercase hex, as recorded when it is applied.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql))
    }
}

/// The migrations built into this binary, in version order.
pub fn embedded() -> Vec<Migration> {
    EMBEDDED
        .iter()
        .map(|&(version, name, sql)| Migration { version, name, sql })
        .collect()
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// File names applied by this run, in order; empty when the database was up to date.
    pub applied: Vec<&'static str>,
    /// Number of migrations the database is now at.
    pub total: usize,
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied(DateTime<Utc>),
    Pending,
    /// Applied, but the file has changed since.
    Changed,
    /// Recorded in the database, absent from this binary.
    NotInBinary,
}

/// One line of [`status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: i32,
    pub name: String,
    pub state: State,
}

/// Why a run stopped. Migrations applied before the failing one stay applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration {name} was changed after it was applied (checksum mismatch): applied migrations are never edited; add a new migration instead")]
    Changed { name: &'static str },
    #[error("database is at migration {version}, newer than this binary")]
    Newer { version: i32 },
    #[error("database records migration {version}, which this binary does not have")]
    Unknown { version: i32 },
    #[error("migration {name} is pending but the database is already at migration {latest}: number new migrations after the last applied one")]
    OutOfOrder { name: &'static str, latest: i32 },
    #[error("migration {name} failed{}: {}", at_line(.line), describe(.error))]
    Failed {
        name: &'static str,
        line: Option<usize>,
        error: tokio_postgres::Error,
    },
    #[error("{context}: {}", describe(.error))]
    Database {
        context: &'static str,
        error: tokio_postgres::Error,
    },
}

/// Applies every pending migration; `migrations` must be in increasing version order.
pub async fn run(client: &mut Client, migrations: &[Migration]) -> Result<Report, Error> {
    apply(client, migrations, |_| {}).await
}

/// [`run`], calling `on_applied` after each migration commits.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
    mut on_applied: impl FnMut(&Migration),
) -> Result<Report, Error> {
    debug_assert!(
        migrations.windows(2).all(|w| w[0].version < w[1].version),
        "migrations out of order"
    );
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db("cannot take the migration lock"))?;
    let result = apply_locked(client, migrations, &mut on_applied).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlocked.map_err(db("cannot release the migration lock"))?;
    Ok(report)
}

async fn apply_locked(
    client: &mut Client,
    migrations: &[Migration],
    on_applied: &mut impl FnMut(&Migration),
) -> Result<Report, Error> {
    client
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(db("cannot create otobot_meta.schema_migrations"))?;
    let applied = applied(&*client).await?;
    check(migrations, &applied)?;
    let pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect();
    if let (Some(first), Some(latest)) = (pending.first(), applied.last()) {
        if first.version < latest.version {
            return Err(Error::OutOfOrder {
                name: first.name,
                latest: latest.version,
            });
        }
    }
    let mut report = Report {
        applied: Vec::new(),
        total: migrations.len(),
    };
    for migration in pending {
        apply_one(client, migration).await?;
        on_applied(migration);
        report.applied.push(migration.name);
    }
    Ok(report)
}

async fn apply_one(client: &mut Client, migration: &Migration) -> Result<(), Error> {
    let failed = |line, error| Error::Failed {
        name: migration.name,
        line,
        error,
    };
    let tx = client
        .transaction()
        .await
        .map_err(db("cannot begin a transaction"))?;
    if let Err(error) = tx.batch_execute(migration.sql).await {
        let _ = tx.rollback().await;
        return Err(failed(line_of(migration.sql, &error), error));
    }
    let recorded = async {
        // Each migration starts from the connection's own settings, and its row is written
        // (`applied_by`) as the migrating role, even if the file ran `SET ROLE`.
        tx.batch_execute("RESET ALL; RESET ROLE").await?;
        tx.execute(
            "INSERT INTO otobot_meta.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await?;
        tx.commit().await
    };
    recorded.await.map_err(|error| failed(None, error))
}

/// Every migration of `migrations` and of the database, with its state; changes nothing.
pub async fn status(
    client: &impl GenericClient,
    migrations: &[Migration],
) -> Result<Vec<Entry>, Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('otobot_meta.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(db("cannot read otobot_meta.schema_migrations"))?
        .get(0);
    let applied = if exists {
        applied(client).await?
    } else {
        Vec::new()
    };
    let mut entries: Vec<Entry> = migrations
        .iter()
        .map(|m| {
            let state = match applied.iter().find(|a| a.version == m.version) {
                Some(a) if a.checksum != m.checksum() => State::Changed,
                Some(a) => State::Applied(a.at),
                None => State::Pending,
            };
            Entry {
                version: m.version,
                name: m.name.to_owned(),
                state,
            }
        })
        .collect();
    entries.extend(
        applied
            .into_iter()
            .filter(|a| !migrations.iter().any(|m| m.version == a.version))
            .map(|a| Entry {
                version: a.version,
                name: a.name,
                state: State::NotInBinary,
            }),
    );
    entries.sort_by_key(|e| e.version);
    Ok(entries)
}

/// A row of `otobot_meta.schema_migrations`.
struct Applied {
    version: i32,
    name: String,
    checksum: String,
    at: DateTime<Utc>,
}

async fn applied(client: &impl GenericClient) -> Result<Vec<Applied>, Error> {
    let rows = client
        .query("SELECT version, name, checksum, applied_at FROM otobot_meta.schema_migrations ORDER BY version", &[])
        .await
        .map_err(db("cannot read otobot_meta.schema_migrations"))?;
    Ok(rows
        .iter()
        .map(|row| Applied {
            version: row.get(0),
            name: row.get(1),
            checksum: row.get(2),
            at: row.get(3),
        })
        .collect())
}

/// Refuses a database whose history this binary does not match.
fn check(migrations: &[Migration], applied: &[Applied]) -> Result<(), Error> {
    let newest_known = migrations.last().map_or(0, |m| m.version);
    for recorded in applied {
        match migrations.iter().find(|m| m.version == recorded.version) {
            Some(m) if m.checksum() != recorded.checksum => {
                return Err(Error::Changed { name: m.name })
            }
            Some(_) => {}
            None if recorded.version > newest_known => {
                return Err(Error::Newer {
                    version: applied.last().map_or(recorded.version, |a| a.version),
                })
            }
            None => {
                return Err(Error::Unknown {
                    version: recorded.version,
                })
            }
        }
    }
    Ok(())
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |error| Error::Database { context, error }
}

/// The line of `sql` that PostgreSQL's error points at, when it points into the file.
fn line_of(sql: &str, error: &tokio_postgres::Error) -> Option<usize> {
    match error.as_db_error()?.position()? {
        ErrorPosition::Original(position) => {
            let before = (*position as usize).saturating_sub(1);
            Some(sql.chars().take(before).filter(|&c| c == '\n').count() + 1)
        }
        ErrorPosition::Internal { .. } => None,
    }
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

/// PostgreSQL's message with its detail and hint, on one line.
fn describe(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        return text;
    };
    let mut text = db.message().to_owned();
    if let Some(detail) = db.detail() {
        let _ = write!(text, "; detail: {detail}");
    }
    if let Some(hint) = db.hint() {
        let _ = write!(text, "; hint: {hint}");
    }
    text
}
