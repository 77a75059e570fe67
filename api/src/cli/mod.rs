//! The `otobot` command line: one module per subcommand.

mod accounts;
mod audit;
mod backup;
mod doctor;
mod gen_secrets;
mod keys;
mod migrate;
pub mod ops;
mod refresher;
mod serve;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Otobot, a credential vault for workflow automation.
#[derive(Parser)]
#[command(name = "otobot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and register the configured key versions, or list them with --status.
    Migrate(migrate::Args),
    /// Run the internal API (INTERNAL_API_PORT, default 3001) and the audit sealer.
    Serve(serve::Args),
    /// Run the OAuth token refresher alone (serve runs one too unless REFRESHER_ENABLED=false).
    Refresher(refresher::Args),
    /// Write a fresh .env from .env.example, every secret from the OS CSPRNG.
    GenSecrets(gen_secrets::Args),
    /// Create a client (company) account; the password is prompted or read with --password-stdin.
    CreateClient(accounts::CreateClientArgs),
    /// Create a user of a client; the password is prompted or read with --password-stdin.
    CreateUser(accounts::CreateUserArgs),
    /// Deactivate a user and all their connections (audited, source cli).
    DeactivateUser(accounts::DeactivateUserArgs),
    /// Deactivate one connection, e.g. a token suspected compromised (audited, source cli).
    DeactivateConnection(accounts::DeactivateConnectionArgs),
    /// Re-encrypt every stored secret to ENCRYPTION_KEY_VERSION, online, in batches; resumable.
    RotateKey(keys::RotateArgs),
    /// Record that no secret uses a key version any more (refused while one does).
    RetireKey(keys::RetireArgs),
    /// Verify the keyed audit chain, or export audit rows for a SIEM.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Check the installation: configuration, database, extension, migrations, keys, grants, RLS, audit, logging, services.
    Doctor(doctor::Args),
    /// Back up the vault database (pg_dump custom format) with a manifest of key check values, never a key.
    Backup(backup::BackupArgs),
    /// Restore a backup into a scratch database and prove every secret decrypts and the audit chain verifies.
    VerifyBackup(backup::VerifyArgs),
    /// Restore a backup into a database, refusing a non-empty one without --force.
    Restore(backup::RestoreArgs),
}

impl Command {
    async fn run(self) -> Result<()> {
        match self {
            Command::Migrate(args) => migrate::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Refresher(args) => refresher::run(args).await,
            Command::GenSecrets(args) => gen_secrets::run(args).await,
            Command::CreateClient(args) => accounts::create_client(args).await,
            Command::CreateUser(args) => accounts::create_user(args).await,
            Command::DeactivateUser(args) => accounts::deactivate_user(args).await,
            Command::DeactivateConnection(args) => accounts::deactivate_connection(args).await,
            Command::RotateKey(args) => keys::rotate(args).await,
            Command::RetireKey(args) => keys::retire(args).await,
            Command::Audit(command) => audit::run(command).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::VerifyBackup(args) => backup::verify(args).await,
            Command::Restore(args) => backup::restore(args).await,
        }
    }
}

/// Runs the binary: loads `.env`, parses the arguments, runs the subcommand.
/// Exits 0 on success, 1 on any error, printed as one `error: …` line on stderr.
pub fn main() -> ExitCode {
    // SECURITY: before any secret is read (`.env`, keys), fail closed.
    if let Err(error) = crate::hardening::forbid_core_dumps() {
        eprintln!("error: cannot keep this process out of core dumps (prctl/setrlimit): {error}");
        return ExitCode::FAILURE;
    }
    // Before the runtime starts threads: setting variables is only sound single-threaded.
    if let Err(error) = load_dotenv() {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(cli.command.run()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `./.env` when present, never overriding variables already set.
fn load_dotenv() -> Result<()> {
    match dotenvy::from_path(".env") {
        Ok(()) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        // SECURITY: dotenvy's parse error quotes the offending line, which may hold a secret.
        Err(dotenvy::Error::LineParse(..)) => {
            anyhow::bail!("cannot parse .env: a line is malformed")
        }
        Err(error) => Err(error).context("cannot read .env"),
    }
}
