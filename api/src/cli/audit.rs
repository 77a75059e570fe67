//! `otobot audit verify` and `otobot audit export`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::Client;

use super::ops::{db_message, keys_from_env, load_keyring, DbArgs};
use crate::sealer::{checkpoint_file, read_checkpoints, Checkpoint};

/// `otobot audit …`
#[derive(clap::Subcommand)]
pub enum Command {
    /// Seal pending audit rows, then recompute the keyed chain and check it against the newest
    /// published checkpoint; exit 1 at the first broken link or a truncated tail.
    Verify(VerifyArgs),
    /// Stream audit rows since a date as JSON lines or CSV (for a SIEM), in constant memory.
    Export(ExportArgs),
}

/// Arguments of `otobot audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    /// The sealer's checkpoint file (JSON lines); the chain must reach its newest checkpoint of
    /// this database with the same MAC. Default: AUDIT_CHECKPOINT_FILE, else ./audit-checkpoints.jsonl
    /// (skipped with a warning when that default does not exist)
    #[arg(long, value_name = "FILE")]
    checkpoint_file: Option<PathBuf>,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

/// Arguments of `otobot audit export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// First instant to export (RFC 3339, e.g. 2026-01-31T00:00:00Z)
    #[arg(long)]
    since: DateTime<chrono::FixedOffset>,
    /// Export rows before this instant only (RFC 3339)
    #[arg(long)]
    until: Option<DateTime<chrono::FixedOffset>>,
    /// jsonl: one JSON object per line; csv: with a header line
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write to FILE (mode 0600) instead of standard output
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    db: DbArgs,
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Verify(args) => verify(args).await,
        Command::Export(args) => export(args).await,
    }
}

/// The outcome of a chain verification.
#[derive(Debug, serde::Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub sealed_now: i64,
    pub checked: i64,
    pub broken_seq: Option<i64>,
    pub broken_log_id: Option<i64>,
    pub problem: Option<String>,
    /// The published checkpoint the chain was checked against.
    pub checkpoint_seq: Option<i64>,
}

/// Seals what can be sealed, then verifies, against `checkpoint` when given.
/// The keyring must be loaded.
pub async fn seal_and_verify(
    client: &Client,
    checkpoint: Option<&Checkpoint>,
) -> Result<ChainReport> {
    const BATCH: i32 = 10_000;
    let mut sealed_now = 0i64;
    loop {
        let n: i32 = client
            .query_one("SELECT otobot.seal_audit_chain($1)", &[&BATCH])
            .await
            .map_err(|e| anyhow::anyhow!("cannot seal the audit chain: {}", db_message(&e)))?
            .get(0);
        sealed_now += i64::from(n);
        if n < BATCH {
            break;
        }
    }
    let expected_seq = checkpoint.map(|c| c.seq);
    let expected_mac = checkpoint.and_then(Checkpoint::mac_bytes);
    let row = client
        .query_one(
            "SELECT ok, checked, broken_seq, broken_log_id, problem FROM otobot.verify_audit_chain($1, $2)",
            &[&expected_seq, &expected_mac],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot verify the audit chain: {}", db_message(&e)))?;
    Ok(ChainReport {
        ok: row.get(0),
        sealed_now,
        checked: row.get(1),
        broken_seq: row.get(2),
        broken_log_id: row.get(3),
        problem: row.get(4),
        checkpoint_seq: expected_seq,
    })
}

/// Where the newest checkpoint of this database stands.
pub enum Anchor {
    Found(Checkpoint),
    /// No usable checkpoint, and why (a warning, not an error).
    Missing(String),
}

/// The newest checkpoint of the connected database in `file` (default:
/// AUDIT_CHECKPOINT_FILE). An explicitly named file must exist and hold one.
pub async fn find_anchor(client: &Client, file: Option<&Path>) -> Result<Anchor> {
    let database: String = client
        .query_one("SELECT pg_catalog.current_database()::text", &[])
        .await
        .context("cannot read the database name")?
        .get(0);
    let path = file.map_or_else(
        || checkpoint_file(|n| std::env::var(n).ok()),
        Path::to_owned,
    );
    let scan = match read_checkpoints(&path, &database) {
        Ok(scan) => scan,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.is_none() => {
            return Ok(Anchor::Missing(format!(
                "no checkpoint file at {} (AUDIT_CHECKPOINT_FILE): a truncated audit tail would go unseen",
                path.display()
            )))
        }
        Err(e) => bail!("cannot read the checkpoint file {}: {e}", path.display()),
    };
    match scan.newest {
        Some(c) => Ok(Anchor::Found(c)),
        None if file.is_some() => bail!(
            "{} holds no checkpoint of database {database} ({} malformed lines)",
            path.display(),
            scan.malformed
        ),
        None => Ok(Anchor::Missing(format!(
            "{} holds no checkpoint of database {database}: a truncated audit tail would go unseen",
            path.display()
        ))),
    }
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let keys = keys_from_env()?;
    let client = args.db.connect().await?;
    load_keyring(&client, &keys).await?;
    let anchor = find_anchor(&client, args.checkpoint_file.as_deref()).await?;
    let checkpoint = match &anchor {
        Anchor::Found(c) => Some(c),
        Anchor::Missing(why) => {
            eprintln!("warning: {why}");
            None
        }
    };
    let report = seal_and_verify(&client, checkpoint).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.ok {
        let against = checkpoint.map_or_else(String::new, |c| {
            format!(
                ", up to checkpoint link {} of {}",
                c.seq,
                c.sealed_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        });
        println!(
            "✔ audit chain verified: {} links ({} sealed now){against}",
            report.checked, report.sealed_now
        );
    } else {
        println!(
            "✘ audit chain broken after {} good links: {}",
            report.checked,
            report.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    if !report.ok {
        bail!(
            "audit chain broken at link {}: {}",
            report
                .broken_seq
                .map_or_else(|| "?".to_owned(), |s| s.to_string()),
            report.problem.as_deref().unwrap_or("unknown problem")
        );
    }
    Ok(())
}

/// The exported columns: the row, and its link in the chain when sealed.
const EXPORT_QUERY: &str =
    "SELECT l.id, l.created_at, l.action, l.source, l.client_connection_id, l.user_id,
        l.client_id, l.service_code, l.request_id, l.db_role, l.detail, c.seq AS chain_seq
    FROM otobot.credential_access_logs l
    LEFT JOIN otobot.audit_chain c ON c.log_id = l.id
    WHERE l.created_at >= $1 AND l.created_at < COALESCE($2, 'infinity'::timestamptz)
    ORDER BY l.id";

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            Box::new(std::io::BufWriter::new(
                options
                    .open(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            ))
        }
    })
}

async fn export(args: ExportArgs) -> Result<()> {
    let since = args.since.with_timezone(&Utc);
    let until: Option<DateTime<Utc>> = args.until.map(|u| u.with_timezone(&Utc));
    let mut client = args.db.connect().await?;
    let mut out = open_output(args.output.as_deref())?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .context("cannot start the export transaction")?;
    let mut rows = 0u64;
    match args.format {
        Format::Jsonl => {
            // A server-side portal read 1000 rows at a time: constant memory.
            let statement = tx
                .prepare(&format!(
                    "SELECT pg_catalog.row_to_json(x)::text FROM ({EXPORT_QUERY}) x"
                ))
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the audit log: {}", db_message(&e)))?;
            let portal = tx
                .bind(&statement, &[&since, &until])
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the audit log: {}", db_message(&e)))?;
            loop {
                let batch = tx.query_portal(&portal, 1000).await.map_err(|e| {
                    anyhow::anyhow!("cannot read the audit log: {}", db_message(&e))
                })?;
                if batch.is_empty() {
                    break;
                }
                for row in &batch {
                    out.write_all(row.get::<_, &str>(0).as_bytes())?;
                    out.write_all(b"\n")?;
                }
                rows += batch.len() as u64;
            }
        }
        Format::Csv => {
            // COPY takes no parameters: the bounds are parsed instants, formatted by us.
            let query = EXPORT_QUERY
                .replace("$1", &format!("'{}'::timestamptz", since.to_rfc3339()))
                .replace(
                    "$2",
                    &until.map_or_else(
                        || "NULL::timestamptz".to_owned(),
                        |u| format!("'{}'::timestamptz", u.to_rfc3339()),
                    ),
                );
            let stream = tx
                .copy_out(&format!(
                    "COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"
                ))
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the audit log: {}", db_message(&e)))?;
            pin_mut!(stream);
            let mut newlines = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.context("the audit export was interrupted")?;
                newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                out.write_all(&chunk)?;
            }
            rows = newlines.saturating_sub(1);
        }
    }
    out.flush()?;
    tx.commit().await.ok();
    if let Some(path) = &args.output {
        eprintln!("exported {rows} audit rows to {}", path.display());
    }
    Ok(())
}
