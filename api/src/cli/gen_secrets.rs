//! `otobot gen-secrets`: a fresh `.env` from `.env.example`, every secret drawn
//! from the operating system's CSPRNG.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use rand::{distributions::Alphanumeric, rngs::OsRng, Rng, RngCore};

/// The documented template, built into the binary.
const TEMPLATE: &str = include_str!("../../../.env.example");

/// Arguments of `otobot gen-secrets`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the configuration
    #[arg(long, short, default_value = ".env", value_name = "FILE")]
    output: PathBuf,
    /// Replace the file if it exists (its secrets are lost: the old master key with them)
    #[arg(long)]
    force: bool,
}

/// How one variable is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 32 random bytes as 64 lowercase hex characters (keys).
    Hex32,
    /// Letters and digits only: safe in URLs, shells and the seed's `tr -d "=/+"` rule.
    Alnum(usize),
}

/// The secrets `gen-secrets` fills, from the seed's phase 3. Anything else in
/// the template keeps its documented value; OAuth client secrets stay empty
/// (a provider is enabled by the operator, with the values its console gives).
const SECRETS: &[(&str, Kind)] = &[
    ("ENCRYPTION_MASTER_KEY", Kind::Hex32),
    ("N8N_INTERNAL_TOKEN", Kind::Alnum(64)),
    ("API_JWT_SECRET", Kind::Alnum(64)),
    ("N8N_WEBHOOK_SECRET", Kind::Alnum(64)),
    ("N8N_JWT_SECRET", Kind::Alnum(64)),
    ("N8N_ENCRYPTION_KEY", Kind::Alnum(64)),
    ("POSTGRES_PASSWORD", Kind::Alnum(32)),
    ("FRONTEND_DB_PASSWORD", Kind::Alnum(32)),
    ("N8N_DB_PASSWORD", Kind::Alnum(32)),
    ("TOOLJET_DB_PASS", Kind::Alnum(32)),
    ("TOOLJET_DB_PASSWORD", Kind::Alnum(32)),
    ("TOOLJET_SECRET_KEY_BASE", Kind::Hex32),
    ("TOOLJET_ENCRYPTION_KEY", Kind::Hex32),
    // SECURITY: the seed reuses the vault's master key here; ToolJet gets its own.
    ("LOCKBOX_MASTER_KEY", Kind::Hex32),
    ("TOOLJET_JWT_SECRET", Kind::Alnum(64)),
    ("PG_PASS", Kind::Alnum(32)),
];

fn generate(kind: Kind) -> String {
    match kind {
        Kind::Hex32 => {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(bytes.as_mut());
            hex::encode(bytes.as_ref())
        }
        Kind::Alnum(len) => OsRng
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect(),
    }
}

/// The template with every known secret filled; returns the text and the names filled.
pub fn render(template: &str) -> (String, Vec<&'static str>) {
    let mut filled = Vec::new();
    let mut out = String::with_capacity(template.len() + 512);
    for line in template.lines() {
        let name = line.split_once('=').map(|(n, _)| n.trim());
        match name.and_then(|n| SECRETS.iter().find(|(s, _)| *s == n)) {
            Some(&(name, kind)) if !line.trim_start().starts_with('#') => {
                out.push_str(name);
                out.push('=');
                out.push_str(&generate(kind));
                filled.push(name);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    (out, filled)
}

pub async fn run(args: Args) -> Result<()> {
    let (text, filled) = render(TEMPLATE);
    write_new(&args.output, text.as_bytes(), args.force)?;
    println!(
        "wrote {} (mode 0600) with {} fresh secrets: {}",
        args.output.display(),
        filled.len(),
        filled.join(", ")
    );
    eprintln!();
    eprintln!("!! ENCRYPTION_MASTER_KEY encrypts every stored credential.");
    eprintln!("!! LOSING IT LOSES EVERY CREDENTIAL: no backup can restore them without it.");
    eprintln!(
        "!! Copy it now into a password manager or a sealed envelope, apart from the database backups."
    );
    eprintln!("!! Never commit {}.", args.output.display());
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600; refuses an existing file unless `force`.
fn write_new(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists: not overwritten (its ENCRYPTION_MASTER_KEY may be the only copy); use --force to replace it",
            path.display()
        );
    }
    // A sibling temporary file, renamed over the target: never a half-written .env.
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // SECURITY: created 0600, never readable by others even for an instant.
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_of_the_template_is_filled_and_the_rest_is_kept() {
        let (text, filled) = render("# comment\nA=1\nENCRYPTION_MASTER_KEY=\nPOSTGRES_PASSWORD=change-me\n# API_JWT_SECRET=\nGOOGLE_CLIENT_SECRET=\n");
        assert_eq!(filled, vec!["ENCRYPTION_MASTER_KEY", "POSTGRES_PASSWORD"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# comment");
        assert_eq!(lines[1], "A=1");
        let key = lines[2].strip_prefix("ENCRYPTION_MASTER_KEY=").unwrap();
        assert_eq!(key.len(), 64);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let password = lines[3].strip_prefix("POSTGRES_PASSWORD=").unwrap();
        assert_eq!(password.len(), 32);
        assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(lines[4], "# API_JWT_SECRET=");
        assert_eq!(lines[5], "GOOGLE_CLIENT_SECRET=");
    }

    #[test]
    fn two_runs_never_give_the_same_secrets() {
        assert_ne!(render(TEMPLATE).0, render(TEMPLATE).0);
    }
}
