//! The `otobot` command line: one module per subcommand.

mod migrate;
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
    /// Apply pending database migrations, or list them with --status.
    Migrate(migrate::Args),
    /// Run the internal API (INTERNAL_API_PORT, default 3001) and the audit sealer.
    Serve(serve::Args),
}

impl Command {
    async fn run(self) -> Result<()> {
        match self {
            Command::Migrate(args) => migrate::run(args).await,
            Command::Serve(args) => serve::run(args).await,
        }
    }
}

/// Runs the binary: loads `.env`, parses the arguments, runs the subcommand.
/// Exits 0 on success, 1 on any error, printed as one `error: …` line on stderr.
pub fn main() -> ExitCode {
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
