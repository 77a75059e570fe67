//! `otobot rotate-key` and `retire-key` through the real binary, against a
//! real database, with credential reads running as `otobot_api`.

mod cli_support;
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cli_support::*;
use common::*;
use tokio_postgres::Client;

const USERS: i64 = 20_000;

/// `n` connections (5 per user, services 1 to 5) encrypted under key version 1 with their real
/// associated data, in one statement. Setup only: the per-row audit triggers are skipped.
async fn generate(db: &Client, key1: &str, n: i64) {
    register_key(db, 1, key1).await;
    db.execute(
        "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
        &[&key1],
    )
    .await
    .unwrap();
    db.batch_execute(&format!(
        "SET session_replication_role = replica;
         INSERT INTO otobot.clients (id, email, company_name) VALUES ('{CLIENT_1}', 'one@example.test', 'One');
         INSERT INTO otobot.users (id, client_id, email)
         SELECT md5('user' || u)::uuid, '{CLIENT_1}', 'u' || u || '@example.test' FROM generate_series(1, {USERS}) u;
         WITH ids AS (SELECT gen_random_uuid() AS id, g, (g - 1) / 5 + 1 AS u, (g - 1) % 5 + 1 AS service_id
                      FROM generate_series(1, {n}) g)
         INSERT INTO otobot.client_connections
             (id, client_id, user_id, service_id, credential_type, encrypted_access_token, encrypted_refresh_token)
         SELECT id, '{CLIENT_1}', md5('user' || u)::uuid, service_id, 'oauth2',
                otobot.otobot_encrypt('access-' || g, id::text || ':encrypted_access_token'),
                otobot.otobot_encrypt('refresh-' || g, id::text || ':encrypted_refresh_token')
         FROM ids;
         RESET session_replication_role;"
    ))
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE otobot.client_connections")
        .await
        .unwrap();
}

async fn counts(db: &Client) -> Vec<(i32, i64)> {
    db.query(
        "SELECT key_version, connections FROM otobot.key_version_counts()",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn rotation_env<'a>(
    db: &'a TestDb,
    current: &'a str,
    version: &'a str,
    old: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", current),
        ("ENCRYPTION_KEY_VERSION", version),
        ("ENCRYPTION_OLD_KEYS", old),
    ]
}

/// Reads random users' Google credentials as otobot_api until `stop`; counts reads and failures.
fn spawn_reader(
    url: String,
    key1: String,
    key2: String,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = connect(&url).await;
        api.execute(
            "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), false)",
            &[&key1],
        )
        .await
        .unwrap();
        api.execute(
            "SELECT otobot.otobot_load_key(2, decode($1, 'hex'), true)",
            &[&key2],
        )
        .await
        .unwrap();
        let read = api
            .prepare("SELECT otobot.get_user_credentials(md5('user' || $1::text)::uuid, 'google', NULL, true, NULL, NULL, 'test', NULL)")
            .await
            .unwrap();
        let mut u: i64 = 1;
        while !stop.load(Ordering::SeqCst) {
            u = (u * 7919 + 13) % USERS + 1;
            let ok = match api.query_one(&read, &[&u.to_string()]).await {
                Ok(row) => {
                    let v: serde_json::Value = row.get(0);
                    v["hasCredentials"] == true
                        && v["credentials"]["accessToken"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("access-"))
                }
                Err(_) => false,
            };
            reads.fetch_add(1, Ordering::Relaxed);
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_100k_secrets_online_survives_kill_9_and_no_read_fails() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    generate(&admin, &key1, 100_000).await;
    let old = format!("1:{key1}");
    let env = rotation_env(&db, &key2, "2", &old);
    let dir = tempfile::tempdir().unwrap();
    // The readers load version 2 before rotate-key would register it.
    register_key(&admin, 2, &key2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = spawn_reader(
        db.api_url(None),
        key1.clone(),
        key2.clone(),
        stop.clone(),
        reads.clone(),
        failures.clone(),
    );

    // First run: killed with SIGKILL part-way.
    let mut child = command(
        dir.path(),
        &["rotate-key", "--batch", "500", "--jobs", "1"],
        &env,
    )
    .spawn()
    .unwrap();
    let started = Instant::now();
    loop {
        let c = counts(&admin).await;
        let moved = c.iter().find(|(v, _)| *v == 2).map_or(0, |c| c.1);
        if moved >= 5_000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rotation ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rotation does not progress: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = counts(&admin).await;
    assert_eq!(partial.len(), 2, "{partial:?}");
    assert!(partial[0].1 > 0 && partial[1].1 > 0, "{partial:?}");

    // The rerun continues and finishes.
    let out = run_async(dir.path(), &["rotate-key"], &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("to key version 2"),
        "{}",
        stdout(&out)
    );
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    let (reads, failures) = (
        reads.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    assert!(reads > 50, "only {reads} reads");
    assert_eq!(
        failures, 0,
        "{failures} of {reads} reads failed during the rotation"
    );

    assert_eq!(counts(&admin).await, vec![(2, 100_000)]);

    // Every secret decrypts with the new key alone: the old one can go.
    let fresh = db.client().await;
    fresh
        .execute(
            "SELECT otobot.otobot_load_key(2, decode($1, 'hex'), true)",
            &[&key2],
        )
        .await
        .unwrap();
    let row = fresh
        .query_one("SELECT checked, failed FROM otobot.verify_secrets()", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (100_000, 0));

    // Re-encryption is not a change: no per-row audit, updated_at untouched; one row per batch.
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE action = 'key_rotation_batch'),
                    count(*) FILTER (WHERE action NOT IN ('key_rotation_batch', 'secrets_verified', 'credential_read')),
                    coalesce(sum((detail->>'connections')::int) FILTER (WHERE action = 'key_rotation_batch'), 0)
             FROM otobot.credential_access_logs",
            &[],
        )
        .await
        .unwrap();
    let (batches, others, rotated): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(batches >= 100_000 / 2000, "{batches} batch rows");
    assert_eq!(
        others, 0,
        "no per-row audit of re-encryption: {others} other rows"
    );
    // The batch killed mid-way rolled back with its audit row: the sum is exactly the rows moved.
    assert_eq!(rotated, 100_000);
    let touched: i64 = admin
        .query_one(
            "SELECT count(*) FROM otobot.client_connections WHERE updated_at <> created_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(touched, 0);

    // Nothing left: a third run has nothing to do; the old version retires.
    let out = run_async(dir.path(), &["rotate-key"], &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("nothing to rotate"),
        "{}",
        stdout(&out)
    );
    let out = run_async(dir.path(), &["retire-key", "--version", "1"], &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("key version 1 is retired"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn dry_run_counts_per_version_and_changes_nothing() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    generate(&admin, &key1, 300).await;
    let old = format!("1:{key1}");
    let dir = tempfile::tempdir().unwrap();
    let out = run_async(
        dir.path(),
        &["rotate-key", "--dry-run"],
        &rotation_env(&db, &key2, "2", &old),
        None,
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("key version   1 (old, decrypt-only): 300 connections, 300 access tokens, 300 refresh tokens"), "{text}");
    assert!(
        text.contains("300 connections would be re-encrypted to key version 2"),
        "{text}"
    );
    assert_eq!(counts(&admin).await, vec![(1, 300)]);
}

#[tokio::test]
async fn rotation_refuses_a_wrong_or_missing_old_key() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    generate(&admin, &key1, 10).await;
    let dir = tempfile::tempdir().unwrap();

    // The old key is not the one that encrypted version 1.
    let wrong = format!("1:{}", random_hex32());
    let out = run_async(
        dir.path(),
        &["rotate-key"],
        &rotation_env(&db, &key2, "2", &wrong),
        None,
    )
    .await;
    let line = assert_error(&out, "key version 1 does not match");
    assert!(!line.contains(&key1) && !line.contains(&wrong[2..]));

    // No old key at all: secrets under version 1 could not be decrypted.
    let out = run_async(
        dir.path(),
        &["rotate-key"],
        &rotation_env(&db, &key2, "2", ""),
        None,
    )
    .await;
    assert_error(&out, "ENCRYPTION_OLD_KEYS");
    assert_eq!(counts(&admin).await, vec![(1, 10)]);
}

#[tokio::test]
async fn retire_key_refuses_a_version_still_in_use_or_current() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    generate(&admin, &key1, 3).await;
    let old = format!("1:{key1}");
    let env = rotation_env(&db, &key2, "2", &old);
    let dir = tempfile::tempdir().unwrap();

    let out = run_async(dir.path(), &["retire-key", "--version", "1"], &env, None).await;
    assert_error(&out, "key version 1 still encrypts 3 connection(s)");
    let out = run_async(dir.path(), &["retire-key", "--version", "2"], &env, None).await;
    assert_error(&out, "is the current ENCRYPTION_KEY_VERSION");
    let retired: i64 = admin
        .query_one("SELECT count(*) FROM otobot.retired_key_versions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(retired, 0);
}

#[tokio::test]
async fn rotate_key_registers_its_new_version_before_any_session_loads_it() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    generate(&admin, &key1, 5).await;
    let api = connect(&db.api_url(None)).await;
    let load2 = "SELECT otobot.otobot_load_key(2, decode($1, 'hex'), true)";
    let error = api
        .execute(load2, &[&key2])
        .await
        .expect_err("version 2 is not registered yet");
    assert!(
        error
            .as_db_error()
            .unwrap()
            .message()
            .contains("key version 2 is not registered"),
        "{error}"
    );
    // The API role cannot register it itself.
    let error = api
        .execute(
            "SELECT otobot.otobot_register_key(2, decode($1, 'hex'))",
            &[&key2],
        )
        .await
        .expect_err("otobot_api must not register");
    assert_eq!(error.as_db_error().unwrap().code().code(), "42501");

    let old = format!("1:{key1}");
    let dir = tempfile::tempdir().unwrap();
    let out = run_async(
        dir.path(),
        &["rotate-key"],
        &rotation_env(&db, &key2, "2", &old),
        None,
    )
    .await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("registered key version 2"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(&key2) && !stderr(&out).contains(&key2));
    api.execute(load2, &[&key2])
        .await
        .expect("registered by rotate-key");
    assert_eq!(counts(&admin).await, vec![(2, 5)]);

    // Another key under version 2 is refused from then on, naming the version.
    let other = random_hex32();
    let out = run_async(
        dir.path(),
        &["rotate-key"],
        &rotation_env(&db, &other, "2", &old),
        None,
    )
    .await;
    assert_error(&out, "key version 2 does not match");
}
