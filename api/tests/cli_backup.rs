//! `otobot backup`, `otobot verify-backup` and `otobot restore` through the real binary.

mod cli_support;
mod common;

use std::path::Path;

use cli_support::*;
use common::*;

/// A sealed vault with three connections, backed up to `dir/vault.dump`.
async fn backed_up(dir: &Path) -> (TestDb, String, String) {
    let (db, key) = seeded_vault().await;
    wait_sealed(&db, &key, 3).await;
    let file = dir.join("vault.dump").display().to_string();
    let out = run_async(
        dir,
        &["backup", "--output", &file],
        &[("MIGRATION_DATABASE_URL", db.url.as_str())],
        None,
    )
    .await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("✔ backed up database"),
        "{}",
        stdout(&out)
    );
    (db, key, file)
}

async fn database_exists(name: &str) -> bool {
    connect(&admin_url())
        .await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn backup_writes_a_manifest_without_keys_and_verify_backup_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key, file) = backed_up(dir.path()).await;

    let manifest_text = std::fs::read_to_string(format!("{file}.manifest.json")).unwrap();
    assert!(!manifest_text.contains(&key), "the manifest holds the key");
    let manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["database"], db.name.as_str());
    assert_eq!(manifest["counts"]["connections"], 3);
    let audit_rows = manifest["counts"]["audit_rows"].as_i64().unwrap();
    assert!(audit_rows >= 3, "{manifest}");
    assert_eq!(manifest["key_versions"][0]["version"], 1);
    assert_eq!(
        manifest["key_versions"][0]["check_value"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(!manifest["migrations"].as_array().unwrap().is_empty());
    let archive = std::fs::read(&file).unwrap();
    assert!(!archive.windows(key.len()).any(|w| w == key.as_bytes()));
    assert!(!dir.path().join("vault.dump.partial").exists());

    // No overwrite without --force.
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key.as_str()),
    ];
    let out = run_async(dir.path(), &["backup", "--output", &file], &env, None).await;
    assert_error(&out, "pass --force");

    let out = run_async(dir.path(), &["verify-backup", &file], &env, None).await;
    assert_ok(&out);
    let text = stdout(&out);
    for line in [
        "✔ sha256: archive matches the manifest",
        "✔ restore: restored into scratch database otobot_verify_",
        &format!("✔ counts: 3 connections, {audit_rows} audit rows (manifest: 3, {audit_rows})"),
        "✔ key check values: 1 key version(s) match the manifest",
        "✔ keyring:",
        "✔ audit chain: ",
        "✔ secrets: 3 connections decrypt",
        "✔ backup ",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(!text.contains('✘'), "{text}");

    let out = run_async(dir.path(), &["verify-backup", &file, "--json"], &env, None).await;
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], true);
    let scratch = report["scratch_database"].as_str().unwrap();
    assert!(!database_exists(scratch).await, "{scratch} was not dropped");
    // The verification wrote nothing to the vault itself.
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.credential_access_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, audit_rows);

    // --force overwrites.
    let out = run_async(
        dir.path(),
        &["backup", "--output", &file, "--force"],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
}

#[tokio::test]
async fn verify_backup_refuses_a_tampered_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key, file) = backed_up(dir.path()).await;
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key.as_str()),
    ];
    let out = run_async(dir.path(), &["verify-backup", &file], &env, None).await;
    assert_error(&out, "backup verification failed");
    assert!(
        stdout(&out).contains("✘ sha256: archive does not match the manifest"),
        "{}",
        stdout(&out)
    );
    let out = run_async(
        dir.path(),
        &["restore", &file, "--target-db", "otobot_never_created"],
        &env,
        None,
    )
    .await;
    assert_error(&out, "does not match its manifest");
    assert!(!database_exists("otobot_never_created").await);
}

#[tokio::test]
async fn verify_backup_with_a_wrong_master_key_fails_and_drops_the_scratch_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _key, file) = backed_up(dir.path()).await;
    let wrong = random_hex32();
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", wrong.as_str()),
    ];
    let out = run_async(dir.path(), &["verify-backup", &file], &env, None).await;
    assert_error(&out, "backup verification failed");
    let text = stdout(&out);
    assert!(text.contains("✔ sha256"), "{text}");
    assert!(
        text.contains("✘ keyring: key version 1 does not match"),
        "{text}"
    );

    let out = run_async(dir.path(), &["verify-backup", &file, "--json"], &env, None).await;
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], false);
    let scratch = report["scratch_database"].as_str().unwrap();
    assert!(!database_exists(scratch).await, "{scratch} was not dropped");
}

#[tokio::test]
async fn restore_refuses_a_non_empty_target_without_force_and_restores_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key, file) = backed_up(dir.path()).await;
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key.as_str()),
    ];

    // A non-empty target: refused, untouched; then replaced with --force.
    let occupied = TestDb::new().await;
    occupied
        .client()
        .await
        .batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
        .await
        .unwrap();
    let out = run_async(
        dir.path(),
        &["restore", &file, "--target-db", &occupied.name],
        &env,
        None,
    )
    .await;
    assert_error(&out, "is not empty: pass --force");
    let kept: i64 = occupied
        .client()
        .await
        .query_one("SELECT count(*) FROM precious", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    let out = run_async(
        dir.path(),
        &["restore", &file, "--target-db", &occupied.name, "--force"],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("dropped the non-empty database"),
        "{}",
        stdout(&out)
    );
    let gone: bool = occupied
        .client()
        .await
        .query_one("SELECT to_regclass('public.precious') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone);

    // A fresh target: created, restored; a credential stored before the backup reads back.
    let name = format!("otobot_test_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_path(&name);
    let fresh = TestDb {
        name: name.clone(),
        url: url.into(),
    };
    let out = run_async(
        dir.path(),
        &["restore", &file, "--target-db", &name],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("✔ created database {name}")),
        "{text}"
    );
    assert!(text.contains("✔ restored"), "{text}");
    assert!(text.contains("verify-backup"), "{text}");

    let client = fresh.client().await;
    client
        .execute(
            "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
            &[&key],
        )
        .await
        .unwrap();
    let user = uuid::Uuid::parse_str(USER_A).unwrap();
    let creds: serde_json::Value = client
        .query_one(
            "SELECT otobot.get_user_credentials($1, 'google', NULL, true, NULL, NULL, 'test', NULL)",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(creds["hasCredentials"], true, "{creds}");
    assert_eq!(creds["credentials"]["accessToken"], "at-a", "{creds}");

    // A wrong key cannot read the restored vault.
    let other = fresh.client().await;
    let wrong = random_hex32();
    assert!(other
        .execute(
            "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
            &[&wrong],
        )
        .await
        .is_err());
}
