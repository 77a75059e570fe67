//! `otobot rotate-key` and `otobot retire-key`: online master-key rotation.
//!
//! Rotation re-encrypts every stored secret to the current key version
//! (`ENCRYPTION_KEY_VERSION`) in short transactions of `--batch` rows, each
//! claimed with `FOR UPDATE SKIP LOCKED` by `otobot.rotate_batch()`: API reads
//! never wait, a crash or Ctrl-C loses at most the batch in flight (rolled
//! back), and a rerun continues where the last one stopped.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;
use uuid::Uuid;

use super::ops::{
    db_message, keys_from_env, load_keyring, register_keyring, stdout_is_tty, DbArgs,
};
use crate::settings::KeySet;

/// Arguments of `otobot rotate-key`.
#[derive(clap::Args)]
pub struct RotateArgs {
    /// Connections re-encrypted per transaction (1 to 100000)
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    batch: i32,
    /// Sessions working in parallel, each on its own range of ids (1 to 32)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=32))]
    jobs: u8,
    /// Print how many secrets each key version encrypts, and change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `otobot retire-key`.
#[derive(clap::Args)]
pub struct RetireArgs {
    /// The key version no secret may use any more
    #[arg(long)]
    version: i32,
    #[command(flatten)]
    db: DbArgs,
}

/// One row of `otobot.key_version_counts()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VersionCount {
    pub key_version: i32,
    pub connections: i64,
    pub access_tokens: i64,
    pub refresh_tokens: i64,
}

/// Secrets per key version (no key needed).
pub async fn version_counts(client: &Client) -> Result<Vec<VersionCount>> {
    let rows = client
        .query(
            "SELECT key_version, connections, access_tokens, refresh_tokens FROM otobot.key_version_counts()",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot count secrets per key version: {}", db_message(&e)))?;
    Ok(rows
        .iter()
        .map(|r| VersionCount {
            key_version: r.get(0),
            connections: r.get(1),
            access_tokens: r.get(2),
            refresh_tokens: r.get(3),
        })
        .collect())
}

/// Connections holding a secret under another version than `current` (an upper bound).
fn pending(counts: &[VersionCount], current: i32) -> i64 {
    counts
        .iter()
        .filter(|c| c.key_version != current)
        .map(|c| c.connections)
        .sum()
}

fn print_counts(counts: &[VersionCount], keys: &KeySet) {
    if counts.is_empty() {
        println!("no stored secret");
    }
    for c in counts {
        let role = if c.key_version == keys.current.version {
            "current"
        } else if keys.old.iter().any(|k| k.version == c.key_version) {
            "old, decrypt-only"
        } else {
            "NOT IN THE KEYRING"
        };
        println!(
            "key version {:>3} ({role}): {} connections, {} access tokens, {} refresh tokens",
            c.key_version, c.connections, c.access_tokens, c.refresh_tokens
        );
    }
}

/// Refuses to start when some secret uses a version the keyring lacks.
fn check_keyring_covers(counts: &[VersionCount], keys: &KeySet) -> Result<()> {
    let missing: Vec<String> = counts
        .iter()
        .filter(|c| {
            c.key_version != keys.current.version
                && !keys.old.iter().any(|k| k.version == c.key_version)
        })
        .map(|c| format!("{} ({} connections)", c.key_version, c.connections))
        .collect();
    if !missing.is_empty() {
        bail!(
            "secrets are encrypted under key version(s) {} that the keyring lacks: add them to ENCRYPTION_OLD_KEYS as version:hex",
            missing.join(", ")
        );
    }
    Ok(())
}

/// A session for rotation: the keyring loaded, UTC, a bounded statement time.
async fn session(db: &DbArgs, keys: &KeySet) -> Result<Client> {
    let client = db.connect().await?;
    client
        .batch_execute("SET application_name = 'otobot rotate-key'; SET statement_timeout = '5min'")
        .await
        .context("cannot configure the rotation session")?;
    load_keyring(&client, keys).await?;
    Ok(client)
}

/// Inclusive id ranges splitting the uuid space in `n`.
fn ranges(n: u8) -> Vec<(Uuid, Uuid)> {
    let n = u128::from(n.max(1));
    let span = u128::MAX / n;
    (0..n)
        .map(|i| {
            let from = i * span;
            let to = if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * span - 1
            };
            (Uuid::from_u128(from), Uuid::from_u128(to))
        })
        .collect()
}

/// One pass of one worker over its range; returns the rows it rotated.
async fn rotate_range(
    client: &Client,
    (mut from, to): (Uuid, Uuid),
    batch: i32,
    request_id: &str,
    progress: &ProgressBar,
    stop: &AtomicBool,
) -> Result<u64> {
    let statement = client
        .prepare("SELECT rotated, last_id FROM otobot.rotate_batch($1, $2, $3, 'cli', $4)")
        .await
        .map_err(|e| anyhow::anyhow!("cannot prepare rotation: {}", db_message(&e)))?;
    let mut total = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let row = client
            .query_one(&statement, &[&batch, &from, &to, &request_id])
            .await
            .map_err(|e| anyhow::anyhow!("rotation batch failed: {}", db_message(&e)))?;
        let rotated: i32 = row.get(0);
        let last: Option<Uuid> = row.get(1);
        total += rotated as u64;
        progress.inc(rotated as u64);
        match last {
            Some(last) if last.as_u128() < to.as_u128() => {
                from = Uuid::from_u128(last.as_u128() + 1)
            }
            _ => break,
        }
    }
    Ok(total)
}

pub async fn rotate(args: RotateArgs) -> Result<()> {
    let keys = Arc::new(keys_from_env()?);
    let current = keys.current.version;
    if args.dry_run {
        // Counting needs no key: nothing is registered or loaded.
        let counts = version_counts(&args.db.connect().await?).await?;
        check_keyring_covers(&counts, &keys)?;
        print_counts(&counts, &keys);
        println!(
            "{} connections would be re-encrypted to key version {current} (dry run: nothing changed)",
            pending(&counts, current)
        );
        return Ok(());
    }
    // SECURITY: a new key version is registered here, by the operator's
    // superuser (or otobot_owner) session, before any session loads it.
    for (version, new) in register_keyring(&args.db.connect().await?, &keys).await? {
        if new {
            println!("registered key version {version}");
        }
    }
    let control = session(&args.db, &keys).await?;
    let counts = version_counts(&control).await?;
    check_keyring_covers(&counts, &keys)?;
    let todo = pending(&counts, current);
    if todo == 0 {
        println!("every stored secret is already under key version {current}: nothing to rotate");
        return Ok(());
    }
    println!(
        "re-encrypting {todo} connections to key version {current} ({} sessions, batches of {})",
        args.jobs, args.batch
    );

    let progress = if stdout_is_tty() {
        let bar = ProgressBar::new(todo as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} connections  {per_sec}  ETA {eta}  {elapsed}",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    // Ctrl-C: each session finishes (commits) its batch in flight, then stops.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        })
    };

    let request_id = format!("rotate-{}", Uuid::new_v4().simple());
    let mut sessions = Vec::new();
    for _ in 0..args.jobs {
        sessions.push(Arc::new(session(&args.db, &keys).await?));
    }
    let started = Instant::now();
    let mut done = 0u64;
    let mut idle_passes = 0;
    let result: Result<()> = async {
        loop {
            let mut tasks = Vec::new();
            for (client, range) in sessions.iter().zip(ranges(args.jobs)) {
                let (client, progress, stop, request_id) =
                    (client.clone(), progress.clone(), stop.clone(), request_id.clone());
                let batch = args.batch;
                tasks.push(tokio::spawn(async move {
                    rotate_range(&client, range, batch, &request_id, &progress, &stop).await
                }));
            }
            let mut pass = 0;
            for task in tasks {
                pass += task.await.context("a rotation session panicked")??;
            }
            done += pass;
            if stop.load(Ordering::SeqCst) {
                bail!(
                    "interrupted after {done} connections: every finished batch is committed; rerun `otobot rotate-key` to continue"
                );
            }
            let left = pending(&version_counts(&control).await?, current);
            if left == 0 {
                return Ok(());
            }
            // Rows a writer held locked were skipped: take them in another pass.
            idle_passes = if pass == 0 { idle_passes + 1 } else { 0 };
            if idle_passes >= 20 {
                bail!("{left} connections stayed locked by other sessions: rerun `otobot rotate-key` later");
            }
            progress.set_length(done + left as u64);
            tokio::time::sleep(Duration::from_millis(if pass == 0 { 250 } else { 0 })).await;
        }
    }
    .await;
    interrupted.abort();
    progress.finish_and_clear();
    result?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rotated {done} connections to key version {current} in {seconds:.1} s ({:.0} connections/s)",
        done as f64 / seconds.max(1e-9)
    );
    let olds: Vec<String> = keys.old.iter().map(|k| k.version.to_string()).collect();
    if !olds.is_empty() {
        println!(
            "no secret uses key version(s) {} any more: `otobot retire-key --version N` records it",
            olds.join(", ")
        );
    }
    Ok(())
}

pub async fn retire(args: RetireArgs) -> Result<()> {
    let keys = keys_from_env()?;
    if args.version == keys.current.version {
        bail!(
            "key version {} is the current ENCRYPTION_KEY_VERSION: rotate to a new key first",
            args.version
        );
    }
    let client = args.db.connect().await?;
    let request_id = format!("cli-{}", Uuid::new_v4().simple());
    let links: i64 = client
        .query_one(
            "SELECT otobot.retire_key_version($1, 'cli', $2)",
            &[&args.version, &request_id],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", db_message(&e)))?
        .get(0);
    println!(
        "key version {} is retired: no stored secret uses it; it can leave ENCRYPTION_OLD_KEYS (restart otobot serve after)",
        args.version
    );
    if links > 0 {
        println!(
            "note: {links} audit-chain links were sealed with key version {v}; `otobot audit verify` needs that key to check them. \
             Archive it offline with your key backups (or keep it in ENCRYPTION_OLD_KEYS) instead of destroying it.",
            v = args.version
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_uuid_space_without_overlap() {
        for n in 1..=5u8 {
            let r = ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0.as_u128(), 0);
            assert_eq!(r[r.len() - 1].1.as_u128(), u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1.as_u128() + 1, w[1].0.as_u128());
            }
        }
    }
}
