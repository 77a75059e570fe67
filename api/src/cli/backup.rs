//! `otobot backup`, `otobot verify-backup` and `otobot restore`.
//!
//! A backup is a `pg_dump --format=custom` archive of the vault database plus a
//! manifest `FILE.manifest.json` (key versions and their check values, never a
//! key). Restoring loads the data with COPY before the post-data section
//! creates the triggers, so no audit or encryption logic fires.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::{config::Host, Client};

use super::ops::{db_message, keys_from_env, load_keyring, DbArgs};
use crate::config::Database;

/// The manifest's format version.
const FORMAT_VERSION: u32 = 1;

/// Arguments of `otobot backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// The archive to write (mode 0600); the manifest goes to FILE.manifest.json
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Overwrite an existing FILE
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot verify-backup`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The archive written by `otobot backup` (its manifest next to it)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The archive written by `otobot backup`
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The database to restore into (created when missing)
    #[arg(long, value_name = "NAME")]
    target_db: String,
    /// Drop and recreate the target database when it is not empty
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// `FILE.manifest.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub created_at: String,
    pub database: String,
    pub otobot_version: String,
    pub migrations: Vec<MigrationEntry>,
    pub key_versions: Vec<KeyVersion>,
    pub counts: Counts,
    /// SHA-256 (hex) of the archive.
    pub sha256: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MigrationEntry {
    pub version: i32,
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyVersion {
    pub version: i32,
    /// Hex of the check value (an HKDF of the key, never the key).
    pub check_value: String,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub connections: i64,
    pub audit_rows: i64,
}

/// The manifest's path: `FILE.manifest.json`.
fn manifest_path(file: &Path) -> PathBuf {
    let mut name = OsString::from(file.as_os_str());
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// A PostgreSQL client program: `pg_config --bindir`, else the Debian path, else PATH.
fn pg_tool(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    let debian = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if debian.is_file() {
        return debian;
    }
    PathBuf::from(name)
}

/// `pg_dump`/`pg_restore` for `db`, connecting to `dbname`: host, port and user
/// as arguments; the password only in the child's PGPASSWORD, never on the command line.
fn pg_command(tool: &str, db: &Database, dbname: &str) -> Command {
    let config = db.pg_config();
    let mut cmd = Command::new(pg_tool(tool));
    if let Some(host) = config.get_hosts().first() {
        let host = match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        };
        cmd.arg("--host").arg(host);
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg("--port").arg(port.to_string());
    }
    if let Some(user) = config.get_user() {
        cmd.arg("--username").arg(user);
    }
    cmd.arg("--no-password").arg("--dbname").arg(dbname);
    // The same TLS as Otobot's own connections (libpq verifies verify-full itself).
    cmd.env("PGSSLMODE", db.tls().mode.as_str());
    match &db.tls().root_cert {
        Some(root) => cmd.env("PGSSLROOTCERT", root),
        None => cmd.env_remove("PGSSLROOTCERT"),
    };
    match config.get_password() {
        // SECURITY: the child's environment only; never an argument (visible in ps).
        Some(password) => cmd.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref()),
        None => cmd.env_remove("PGPASSWORD"),
    };
    cmd
}

/// Runs `cmd`, failing with its standard error.
fn run_tool(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run {what} ({})",
            cmd.get_program().to_string_lossy()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// SHA-256 (hex) of a file, streamed.
fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The admin connection's database name.
fn admin_dbname(db: &Database) -> Result<String> {
    db.pg_config()
        .get_dbname()
        .map(str::to_owned)
        .or_else(|| db.pg_config().get_user().map(str::to_owned))
        .context("the admin connection names no database")
}

/// A connection to another database of the same cluster, as the same user.
async fn connect_to(db: &Database, dbname: &str) -> Result<Client> {
    let client = db.with_dbname(dbname, "otobot backup").connect().await?;
    client
        .batch_execute("SET TimeZone = 'UTC'")
        .await
        .context("cannot set the session time zone")?;
    Ok(client)
}

/// Refuses database names that would need quoting.
fn check_db_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        bail!("invalid database name {name:?}: use lowercase letters, digits and underscores (at most 63)");
    }
    Ok(())
}

async fn key_versions(client: &Client) -> Result<Vec<KeyVersion>> {
    let rows = client
        .query(
            "SELECT version, check_value FROM otobot.key_versions ORDER BY version",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read otobot.key_versions: {}", db_message(&e)))?;
    Ok(rows
        .iter()
        .map(|r| KeyVersion {
            version: r.get(0),
            check_value: hex::encode(r.get::<_, Vec<u8>>(1)),
        })
        .collect())
}

async fn counts(client: &Client) -> Result<Counts> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM otobot.client_connections),
                    (SELECT count(*) FROM otobot.credential_access_logs)",
            &[],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot count connections and audit rows: {}",
                db_message(&e)
            )
        })?;
    Ok(Counts {
        connections: row.get(0),
        audit_rows: row.get(1),
    })
}

/// `otobot backup --output FILE`
pub async fn backup(args: BackupArgs) -> Result<()> {
    let output = &args.output;
    if output.exists() && !args.force {
        bail!(
            "{} exists: choose another file or pass --force to overwrite it",
            output.display()
        );
    }
    let db = args.db.database()?;
    let dbname = admin_dbname(&db)?;
    let client = args.db.connect().await?;

    // The manifest's facts, read before the dump (a repeatable snapshot is
    // pg_dump's own; these describe the database as it was backed up).
    let migrations = client
        .query(
            "SELECT version, name, checksum FROM otobot_meta.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read otobot_meta.schema_migrations (run `otobot migrate`): {}",
                db_message(&e)
            )
        })?
        .iter()
        .map(|r| MigrationEntry {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
        })
        .collect();
    let key_versions = key_versions(&client).await?;
    let counts = counts(&client).await?;

    let partial = {
        let mut name = OsString::from(output.as_os_str());
        name.push(".partial");
        PathBuf::from(name)
    };
    let _ = std::fs::remove_file(&partial);
    let mut cmd = pg_command("pg_dump", &db, &dbname);
    cmd.arg("--format=custom").arg("--file").arg(&partial);
    if let Err(error) = run_tool(cmd, "pg_dump") {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", partial.display()))?;
    }
    let sha256 = sha256_file(&partial)?;
    std::fs::rename(&partial, output)
        .with_context(|| format!("cannot write {}", output.display()))?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        database: dbname.clone(),
        otobot_version: env!("CARGO_PKG_VERSION").to_owned(),
        migrations,
        key_versions,
        counts,
        sha256,
    };
    let manifest_file = manifest_path(output);
    std::fs::write(
        &manifest_file,
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .with_context(|| format!("cannot write {}", manifest_file.display()))?;

    println!("✔ backed up database {dbname} to {}", output.display());
    println!(
        "  {} connections, {} audit rows, key versions {}; sha256 {}",
        manifest.counts.connections,
        manifest.counts.audit_rows,
        manifest
            .key_versions
            .iter()
            .map(|k| k.version.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        manifest.sha256
    );
    println!("  manifest: {}", manifest_file.display());
    println!(
        "  the archive holds no key: keep ENCRYPTION_MASTER_KEY (and old keys) safe elsewhere"
    );
    Ok(())
}

fn read_manifest(file: &Path) -> Result<Manifest> {
    let path = manifest_path(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("invalid manifest {}", path.display()))?;
    if manifest.format_version != FORMAT_VERSION {
        bail!(
            "manifest format version {} is not supported (expected {FORMAT_VERSION})",
            manifest.format_version
        );
    }
    Ok(manifest)
}

/// One line of the verification report.
#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, serde::Serialize)]
struct VerifyReport {
    ok: bool,
    file: String,
    scratch_database: Option<String>,
    checks: Vec<Check>,
}

/// `otobot verify-backup FILE`
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let manifest = read_manifest(&args.file)?;
    let mut report = VerifyReport {
        ok: true,
        file: args.file.display().to_string(),
        scratch_database: None,
        checks: Vec::new(),
    };
    let actual = sha256_file(&args.file)?;
    let sha_ok = actual == manifest.sha256;
    report.checks.push(Check {
        name: "sha256",
        ok: sha_ok,
        detail: if sha_ok {
            format!("archive matches the manifest ({actual})")
        } else {
            format!(
                "archive does not match the manifest: {actual}, expected {}",
                manifest.sha256
            )
        },
    });
    if sha_ok {
        let db = args.db.database()?;
        let admin = args.db.connect().await?;
        let scratch = format!("otobot_verify_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {scratch} TEMPLATE template0"))
            .await
            .map_err(|e| anyhow::anyhow!("cannot create {scratch}: {}", db_message(&e)))?;
        report.scratch_database = Some(scratch.clone());
        let result = verify_in(&db, &scratch, &args.file, &manifest, &mut report.checks).await;
        // Always dropped, even on failure.
        let dropped = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
            .await;
        if let Err(error) = result {
            report.checks.push(Check {
                name: "restore",
                ok: false,
                detail: format!("{error:#}"),
            });
        }
        if let Err(e) = dropped {
            report.checks.push(Check {
                name: "cleanup",
                ok: false,
                detail: format!("cannot drop {scratch}: {}", db_message(&e)),
            });
        }
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for check in &report.checks {
            let mark = if check.ok { '✔' } else { '✘' };
            println!("{mark} {}: {}", check.name, check.detail);
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!(
            "backup verification failed: {failed} check(s) failed for {}",
            args.file.display()
        );
    }
    if !args.json {
        println!("✔ backup {} verified", args.file.display());
    }
    Ok(())
}

/// Restores into `scratch` and runs the checks; an `Err` is a failure to get that far.
async fn verify_in(
    db: &Database,
    scratch: &str,
    file: &Path,
    manifest: &Manifest,
    checks: &mut Vec<Check>,
) -> Result<()> {
    pg_restore(db, scratch, file)?;
    checks.push(Check {
        name: "restore",
        ok: true,
        detail: format!("restored into scratch database {scratch}"),
    });
    let client = connect_to(db, scratch).await?;

    // Before anything that audits: the restore itself must not have written.
    let restored = counts(&client).await?;
    checks.push(Check {
        name: "counts",
        ok: restored == manifest.counts,
        detail: format!(
            "{} connections, {} audit rows (manifest: {}, {})",
            restored.connections,
            restored.audit_rows,
            manifest.counts.connections,
            manifest.counts.audit_rows
        ),
    });

    let restored_keys = key_versions(&client).await?;
    checks.push(Check {
        name: "key check values",
        ok: restored_keys == manifest.key_versions,
        detail: if restored_keys == manifest.key_versions {
            format!("{} key version(s) match the manifest", restored_keys.len())
        } else {
            "the restored key check values differ from the manifest".to_owned()
        },
    });

    let keys = match keys_from_env() {
        Ok(keys) => keys,
        Err(error) => {
            checks.push(Check {
                name: "keyring",
                ok: false,
                detail: format!("{error:#}"),
            });
            return Ok(());
        }
    };
    if let Err(error) = load_keyring(&client, &keys).await {
        checks.push(Check {
            name: "keyring",
            ok: false,
            detail: format!("{error:#}"),
        });
        return Ok(());
    }
    checks.push(Check {
        name: "keyring",
        ok: true,
        detail: "the configured keys match the restored check values".to_owned(),
    });

    // The chain as restored; nothing is sealed first (sealing would write).
    let chain = client
        .query_one(
            "SELECT ok, checked, problem FROM otobot.verify_audit_chain()",
            &[],
        )
        .await;
    checks.push(match chain {
        Ok(row) => {
            let ok: bool = row.get(0);
            let checked: i64 = row.get(1);
            let problem: Option<String> = row.get(2);
            Check {
                name: "audit chain",
                ok,
                detail: if ok {
                    format!("{checked} links verify")
                } else {
                    format!(
                        "broken after {checked} good links: {}",
                        problem.as_deref().unwrap_or("unknown problem")
                    )
                },
            }
        }
        Err(e) => Check {
            name: "audit chain",
            ok: false,
            detail: db_message(&e),
        },
    });

    let secrets = client
        .query_one(
            "SELECT checked, failed, first_failed_connection FROM otobot.verify_secrets('cli', NULL)",
            &[],
        )
        .await;
    checks.push(match secrets {
        Ok(row) => {
            let checked: i64 = row.get(0);
            let failed: i64 = row.get(1);
            let first: Option<uuid::Uuid> = row.get(2);
            Check {
                name: "secrets",
                ok: failed == 0,
                detail: if failed == 0 {
                    format!("{checked} connections decrypt")
                } else {
                    format!(
                        "{failed} of {checked} connections do not decrypt (first: {})",
                        first.map_or_else(|| "?".to_owned(), |id| id.to_string())
                    )
                },
            }
        }
        Err(e) => Check {
            name: "secrets",
            ok: false,
            detail: db_message(&e),
        },
    });
    Ok(())
}

fn pg_restore(db: &Database, dbname: &str, file: &Path) -> Result<()> {
    let mut cmd = pg_command("pg_restore", db, dbname);
    cmd.arg("--exit-on-error").arg(file);
    run_tool(cmd, "pg_restore")
}

/// `otobot restore FILE --target-db NAME [--force]`
pub async fn restore(args: RestoreArgs) -> Result<()> {
    check_db_name(&args.target_db)?;
    let target = &args.target_db;
    let manifest = read_manifest(&args.file)?;
    let actual = sha256_file(&args.file)?;
    if actual != manifest.sha256 {
        bail!(
            "{} does not match its manifest (sha256 {actual}, expected {}): refusing to restore",
            args.file.display(),
            manifest.sha256
        );
    }
    let db = args.db.database()?;
    if admin_dbname(&db)? == *target {
        bail!("the target database {target} is the one this command connects to: choose another, or connect through another database with --database-url");
    }
    let admin = args.db.connect().await?;
    let exists: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
            &[target],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot list databases: {}", db_message(&e)))?
        .get(0);
    if exists {
        let client = connect_to(&db, target).await?;
        let not_empty: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'otobot')
                     OR EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                                WHERE schemaname NOT IN ('pg_catalog', 'information_schema'))",
                &[],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot inspect {target}: {}", db_message(&e)))?
            .get(0);
        drop(client);
        if not_empty && !args.force {
            bail!(
                "the target database {target} is not empty: pass --force to drop and recreate it"
            );
        }
        if not_empty {
            admin
                .batch_execute(&format!("DROP DATABASE {target} WITH (FORCE)"))
                .await
                .map_err(|e| anyhow::anyhow!("cannot drop {target}: {}", db_message(&e)))?;
            println!("✔ dropped the non-empty database {target} (--force)");
            create_db(&admin, target).await?;
        } else {
            println!("✔ database {target} exists and is empty");
        }
    } else {
        create_db(&admin, target).await?;
    }
    pg_restore(&db, target, &args.file)?;
    println!(
        "✔ restored {} ({} from {}, {} connections, {} audit rows) into {target}",
        args.file.display(),
        manifest.database,
        manifest.created_at,
        manifest.counts.connections,
        manifest.counts.audit_rows
    );
    println!("  next: `otobot verify-backup {}` and `otobot doctor` against {target}; point FRONTEND_DB_NAME at it to use it", args.file.display());
    Ok(())
}

async fn create_db(admin: &Client, name: &str) -> Result<()> {
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create {name}: {}", db_message(&e)))?;
    println!("✔ created database {name}");
    Ok(())
}
