//! `create-client`, `create-user`, `deactivate-user`, `deactivate-connection`:
//! account administration through the vault's audited functions, source `cli`.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::ops::{db_message, DbArgs};

/// The audit log's `source` of every change made here.
const SOURCE: &str = "cli";
/// Shortest password accepted for a new account.
const MIN_PASSWORD_LEN: usize = 12;

/// How the new account's password is read: never from an argument.
#[derive(clap::Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input instead of a prompt
    #[arg(long)]
    password_stdin: bool,
    /// Create the account without a password (it cannot log in until one is set)
    #[arg(long, conflicts_with = "password_stdin")]
    no_password: bool,
}

/// Arguments of `otobot create-client`.
#[derive(clap::Args)]
pub struct CreateClientArgs {
    /// The company's name
    #[arg(long)]
    company: String,
    /// The client account's login email
    #[arg(long)]
    email: String,
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot create-user`.
#[derive(clap::Args)]
pub struct CreateUserArgs {
    /// The client (company) the user belongs to
    #[arg(long)]
    client_id: Uuid,
    /// The user's login email
    #[arg(long)]
    email: String,
    /// `admin` manages the client's users; `user` only their own connections
    #[arg(long, value_parser = ["admin", "user"], default_value = "user")]
    role: String,
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot deactivate-user`.
#[derive(clap::Args)]
pub struct DeactivateUserArgs {
    /// The user to deactivate (their connections are deactivated too)
    user_id: Uuid,
    /// Why, recorded in the audit log
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot deactivate-connection`.
#[derive(clap::Args)]
pub struct DeactivateConnectionArgs {
    /// The connection to deactivate; workflows can no longer read it
    connection_id: Uuid,
    /// Why, recorded in the audit log
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    db: DbArgs,
}

/// A request id for the audit row, so the operator can find it again.
fn request_id() -> String {
    format!("cli-{}", Uuid::new_v4().simple())
}

fn check_reason(reason: &str) -> Result<()> {
    let len = reason.trim().chars().count();
    if !(3..=500).contains(&len) {
        bail!("--reason must be 3 to 500 characters");
    }
    Ok(())
}

/// The password (hashed with argon2id), or `None` with `--no-password`.
fn password_hash(args: &PasswordArgs) -> Result<Option<String>> {
    if args.no_password {
        return Ok(None);
    }
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to prompt for the password: pipe it with --password-stdin");
        }
        let first = SecretString::from(
            rpassword::prompt_password("Password: ").context("cannot read the password")?,
        );
        let again = SecretString::from(
            rpassword::prompt_password("Password (again): ").context("cannot read the password")?,
        );
        if first.expose_secret() != again.expose_secret() {
            bail!("the two passwords differ");
        }
        first
    };
    if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
        bail!("the password must be at least {MIN_PASSWORD_LEN} characters");
    }
    // The same argon2id scheme `otobot serve` verifies.
    Ok(Some(
        crate::password::hash(password.expose_secret()).map_err(anyhow::Error::msg)?,
    ))
}

pub async fn create_client(args: CreateClientArgs) -> Result<()> {
    let hash = password_hash(&args.password)?;
    let client = args.db.connect().await?;
    let id: Uuid = client
        .query_one(
            "SELECT otobot.create_client($1, $2, $3, $4, $5)",
            &[&args.company, &args.email, &hash, &SOURCE, &request_id()],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the client: {}", db_message(&e)))?
        .get(0);
    println!("created client {id} ({}, {})", args.company, args.email);
    Ok(())
}

pub async fn create_user(args: CreateUserArgs) -> Result<()> {
    let hash = password_hash(&args.password)?;
    let client = args.db.connect().await?;
    let id: Uuid = client
        .query_one(
            "SELECT otobot.create_user(NULL, $1, $2, $3, $4, $5, $6)",
            &[
                &args.client_id,
                &args.email,
                &hash,
                &args.role,
                &SOURCE,
                &request_id(),
            ],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the user: {}", db_message(&e)))?
        .get(0);
    println!(
        "created user {id} ({}, {}) in client {}",
        args.email, args.role, args.client_id
    );
    Ok(())
}

pub async fn deactivate_user(args: DeactivateUserArgs) -> Result<()> {
    check_reason(&args.reason)?;
    let client = args.db.connect().await?;
    let done: bool = client
        .query_one(
            "SELECT otobot.deactivate_user(NULL, $1, $2, $3, $4)",
            &[&args.user_id, &SOURCE, &request_id(), &args.reason.trim()],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot deactivate the user: {}", db_message(&e)))?
        .get(0);
    if !done {
        bail!("user {} not found or already inactive", args.user_id);
    }
    println!(
        "deactivated user {} and their connections (audited)",
        args.user_id
    );
    Ok(())
}

pub async fn deactivate_connection(args: DeactivateConnectionArgs) -> Result<()> {
    check_reason(&args.reason)?;
    let client = args.db.connect().await?;
    let done: bool = client
        .query_one(
            "SELECT otobot.deactivate_connection($1, NULL, $2, $3, $4)",
            &[
                &args.connection_id,
                &SOURCE,
                &request_id(),
                &args.reason.trim(),
            ],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot deactivate the connection: {}", db_message(&e)))?
        .get(0);
    if !done {
        bail!(
            "connection {} not found or already inactive",
            args.connection_id
        );
    }
    println!(
        "deactivated connection {} (audited); revoke the token at the provider too",
        args.connection_id
    );
    Ok(())
}
