//! The audit sealer: every `AUDIT_SEAL_INTERVAL_MS` it chains the settled
//! audit rows (`otobot.seal_audit`) and publishes each new chain head outside
//! the database: one JSON line appended to `AUDIT_CHECKPOINT_FILE` (opened
//! `O_APPEND`, fsync'd) and one log line. `otobot audit verify` checks the
//! chain against the newest checkpoint, so deleting sealed rows and rewinding
//! the head inside the database is detected.
//!
//! A checkpoint that cannot be written does not stop sealing (unsealed rows
//! are the ones that can vanish without a trace): the failure is logged as an
//! error at every pass, counted in `otobot_audit_checkpoint_failures`, and
//! reported by `doctor`; the next pass that can write publishes the newest
//! head, which covers every link before it.
//!
//! Residual risk, by design: a superuser of the database can delete audit
//! rows that are not sealed yet (the last `AUDIT_SEAL_INTERVAL_MS`, or longer
//! while sealing lags), and whoever can write the checkpoint file can rewrite
//! the anchor. Keep the file off the database host (a volume of the API's),
//! ship the log lines to a store the DBA cannot edit, and watch the lag.

use std::{
    fs::OpenOptions,
    io::{BufRead, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::{db, state::AppState};

/// Most audit rows one sealing transaction chains.
pub const SEAL_BATCH: i32 = 10_000;

/// Where checkpoints go when `AUDIT_CHECKPOINT_FILE` is not set: the working
/// directory (`scripts/setup.sh` runs the server from the repository root).
pub const DEFAULT_CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";

/// `AUDIT_CHECKPOINT_FILE`, or the default, read through `var`.
pub fn checkpoint_file(var: impl Fn(&str) -> Option<String>) -> PathBuf {
    var("AUDIT_CHECKPOINT_FILE")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CHECKPOINT_FILE), PathBuf::from)
}

/// One published chain head: a line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub database: String,
    pub seq: i64,
    /// The link's HMAC, lowercase hex.
    pub mac: String,
    pub sealed_at: DateTime<Utc>,
    pub key_version: i32,
}

impl Checkpoint {
    /// The MAC as bytes; `None` when the line was not 32 bytes of hex.
    pub fn mac_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.mac).ok().filter(|m| m.len() == 32)
    }
}

/// Appends one checkpoint line and forces it to disk.
pub fn append_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(checkpoint).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    let mut file = options.open(path)?;
    // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
    file.write_all(&line)?;
    file.sync_data()
}

/// What a checkpoint file says about one database.
#[derive(Debug, Default)]
pub struct CheckpointScan {
    /// The checkpoint with the highest sequence number (a later line can
    /// never lower it: appending an old head does not hide a truncation).
    pub newest: Option<Checkpoint>,
    pub lines: usize,
    /// Lines that are not a checkpoint (a torn write, an edit).
    pub malformed: usize,
}

/// Reads every checkpoint of `database` in `path`.
pub fn read_checkpoints(path: &Path, database: &str) -> std::io::Result<CheckpointScan> {
    let file = std::fs::File::open(path)?;
    let mut scan = CheckpointScan::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(&line) {
            Ok(c) if c.mac_bytes().is_some() && c.seq >= 1 => {
                if c.database == database {
                    scan.lines += 1;
                    if scan.newest.as_ref().is_none_or(|n| c.seq > n.seq) {
                        scan.newest = Some(c);
                    }
                }
            }
            _ => scan.malformed += 1,
        }
    }
    Ok(scan)
}

/// The result of one `otobot.seal_audit` call.
#[derive(Debug, Clone)]
pub struct SealPass {
    pub database: String,
    pub sealed: i32,
    pub head: Option<Checkpoint>,
    pub unsealed_rows: i64,
    pub lag_seconds: f64,
}

/// One sealing transaction on a session with the keyring loaded.
pub async fn seal(client: &tokio_postgres::Client) -> Result<SealPass, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_catalog.current_database()::text, s.sealed, s.head_seq, s.head_mac,
                    s.head_key_version, s.head_sealed_at, s.unsealed_rows, s.oldest_unsealed_seconds
             FROM otobot.seal_audit($1) AS s",
            &[&SEAL_BATCH],
        )
        .await?;
    let database: String = row.get(0);
    let head_seq: i64 = row.get(2);
    let head_mac: Option<Vec<u8>> = row.get(3);
    let head_key_version: Option<i32> = row.get(4);
    let head_sealed_at: Option<DateTime<Utc>> = row.get(5);
    let head = match (head_seq, head_mac, head_key_version, head_sealed_at) {
        (seq, Some(mac), Some(key_version), Some(sealed_at)) if seq > 0 => Some(Checkpoint {
            database: database.clone(),
            seq,
            mac: hex::encode(mac),
            sealed_at,
            key_version,
        }),
        _ => None,
    };
    Ok(SealPass {
        database,
        sealed: row.get(1),
        head,
        unsealed_rows: row.get(6),
        lag_seconds: row.get(7),
    })
}

/// The sealer of `otobot serve`.
pub struct Sealer {
    pub interval: Duration,
    checkpoint_file: PathBuf,
    lag_warn: Duration,
    /// The highest sequence number published by this process.
    published_seq: i64,
    last_lag_warning: Option<Instant>,
}

impl Sealer {
    pub fn new(interval: Duration, checkpoint_file: PathBuf, lag_warn: Duration) -> Self {
        Self {
            interval,
            checkpoint_file,
            lag_warn,
            published_seq: 0,
            last_lag_warning: None,
        }
    }

    /// One pass: seal, publish the head if it moved, record the lag. Returns
    /// how many rows were sealed, `None` when sealing failed (retried next pass).
    pub async fn pass(&mut self, state: &AppState) -> Option<i32> {
        let result = db::within(state.db_timeout, async {
            let client = db::client(&state.pool).await?;
            seal(&client).await.map_err(db::map_error)
        })
        .await;
        let pass = match result {
            Ok(pass) => pass,
            Err(error) => {
                state.metrics.audit_seal_failed();
                tracing::warn!(%error, "audit sealing failed; will retry");
                return None;
            }
        };
        state
            .metrics
            .audit_sealed(&pass, pass.head.as_ref().map_or(0, |h| h.seq));
        if let Some(head) = pass.head.as_ref().filter(|h| h.seq > self.published_seq) {
            self.publish(state, head);
        }
        self.watch_lag(&pass);
        Some(pass.sealed)
    }

    fn publish(&mut self, state: &AppState, head: &Checkpoint) {
        tracing::info!(
            database = %head.database,
            seq = head.seq,
            mac = %head.mac,
            key_version = head.key_version,
            "audit chain sealed"
        );
        match append_checkpoint(&self.checkpoint_file, head) {
            Ok(()) => self.published_seq = head.seq,
            Err(error) => {
                state.metrics.audit_checkpoint_failed();
                tracing::error!(
                    path = %self.checkpoint_file.display(),
                    %error,
                    seq = head.seq,
                    "cannot append the audit checkpoint: a truncated audit tail would go unseen until a checkpoint is written (check AUDIT_CHECKPOINT_FILE)"
                );
            }
        }
    }

    fn watch_lag(&mut self, pass: &SealPass) {
        if pass.lag_seconds <= self.lag_warn.as_secs_f64() {
            self.last_lag_warning = None;
            return;
        }
        // Loud but not a flood: once a minute while it lasts.
        if self
            .last_lag_warning
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last_lag_warning = Some(Instant::now());
        tracing::warn!(
            unsealed_rows = pass.unsealed_rows,
            lag_seconds = pass.lag_seconds,
            threshold_seconds = self.lag_warn.as_secs(),
            "audit sealing lags: unsealed audit rows can be deleted without a trace; look for a long transaction in the vault database (pg_stat_activity) or a failing sealer"
        );
    }

    /// Seals until a pass leaves nothing ready (a full batch means more wait).
    pub async fn run_once(&mut self, state: &AppState) {
        while self.pass(state).await == Some(SEAL_BATCH) {}
    }
}
