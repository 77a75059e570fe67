//! `otobot audit verify` and `otobot audit export` through the real binary.

mod cli_support;
mod common;

use cli_support::*;
use common::*;

#[tokio::test]
async fn audit_verify_seals_then_verifies_and_reports_a_tampered_row() {
    let (db, key) = seeded_vault().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key.as_str()),
    ];

    wait_sealed(&db, &key, 3).await;
    let out = run_async(dir.path(), &["audit", "verify"], &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("✔ audit chain verified: 3 links"),
        "{}",
        stdout(&out)
    );

    let out = run_async(dir.path(), &["audit", "verify", "--json"], &env, None).await;
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["checked"], 3);

    // Someone with database access edits a sealed row behind the trigger's back.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE otobot.credential_access_logs DISABLE TRIGGER credential_access_logs_append_only;
             UPDATE otobot.credential_access_logs SET source = 'forged' WHERE id = (SELECT min(id) + 1 FROM otobot.credential_access_logs);
             ALTER TABLE otobot.credential_access_logs ENABLE TRIGGER credential_access_logs_append_only;",
        )
        .await
        .unwrap();
    let out = run_async(dir.path(), &["audit", "verify"], &env, None).await;
    assert_error(&out, "audit chain broken at link 2");
    assert!(
        stdout(&out).contains("✘ audit chain broken after 1 good links"),
        "{}",
        stdout(&out)
    );

    // Without the right key nothing can be verified (or forged).
    let wrong = random_hex32();
    let out = run_async(
        dir.path(),
        &["audit", "verify"],
        &[
            ("MIGRATION_DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_MASTER_KEY", wrong.as_str()),
        ],
        None,
    )
    .await;
    assert_error(&out, "key version 1 does not match");
}

#[tokio::test]
async fn audit_export_streams_jsonl_and_csv_since_a_date() {
    let (db, _key) = seeded_vault().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("MIGRATION_DATABASE_URL", db.url.as_str())];

    let out = run_async(
        dir.path(),
        &["audit", "export", "--since", "2000-01-01T00:00:00Z"],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["action"] == "connection_created" && l["source"] == "test"));
    assert!(lines[0]["id"].as_i64() < lines[1]["id"].as_i64());
    assert!(lines[0].get("chain_seq").is_some() && lines[0].get("detail").is_some());

    let out = run_async(
        dir.path(),
        &[
            "audit",
            "export",
            "--since",
            "2000-01-01T00:00:00+02:00",
            "--format",
            "csv",
            "--output",
            "audit.csv",
        ],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("exported 3 audit rows"),
        "{}",
        stderr(&out)
    );
    let csv = std::fs::read_to_string(dir.path().join("audit.csv")).unwrap();
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next().unwrap(),
        "id,created_at,action,source,client_connection_id,user_id,client_id,service_code,request_id,db_role,detail,chain_seq"
    );
    assert_eq!(csv_lines.count(), 3);

    let out = run_async(
        dir.path(),
        &["audit", "export", "--since", "2999-01-01T00:00:00Z"],
        &env,
        None,
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out), "");

    let out = run_async(
        dir.path(),
        &["audit", "export", "--since", "yesterday"],
        &env,
        None,
    )
    .await;
    assert_error(&out, "--since");
}

/// Deletes the sealed rows after link `keep` and rewinds the head to it, as a
/// superuser with the triggers off: the attack the checkpoint file catches.
async fn truncate_sealed_tail(db: &TestDb, keep: i64) {
    db.client()
        .await
        .batch_execute(&format!(
            "BEGIN;
             SET LOCAL session_replication_role = replica;
             DELETE FROM otobot.credential_access_logs WHERE id IN (SELECT log_id FROM otobot.audit_chain WHERE seq > {keep});
             DELETE FROM otobot.audit_chain WHERE seq > {keep};
             UPDATE otobot.audit_chain_head h
             SET last_seq = {keep}, last_mac = c.mac, cursor_xid = l.xid, cursor_id = l.id
             FROM otobot.audit_chain c JOIN otobot.credential_access_logs l ON l.id = c.log_id
             WHERE c.seq = {keep};
             COMMIT;"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn audit_verify_detects_a_truncated_sealed_tail_against_the_checkpoint_file() {
    let db = TestDb::migrated().await;
    seed_users(&db.client().await).await;
    let app = TestApp::spawn_on(db, &[]).await;
    let admin = app.db.client().await;
    for (user, service) in [(USER_A, "google"), (USER_B, "slack"), (USER_C, "notion")] {
        store_oauth(&admin, &app.key_hex, user, service, "at", "rt", None).await;
    }
    store_oauth(&admin, &app.key_hex, USER_A, "github", "at", "rt", None).await;
    let file = app.db.checkpoint_file();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("\"seq\":4,")
    {
        assert!(started.elapsed().as_secs() < 30, "no checkpoint of link 4");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let key = app.key_hex.clone();
    let file_arg = file.display().to_string();
    let db = app.shutdown().await;
    let db_url = db.url.clone();

    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MIGRATION_DATABASE_URL", db_url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key.as_str()),
    ];
    let with_file = ["audit", "verify", "--checkpoint-file", file_arg.as_str()];
    let out = run_async(dir.path(), &with_file, &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains(
            "✔ audit chain verified: 4 links (0 sealed now), up to checkpoint link 4 of "
        ),
        "{}",
        stdout(&out)
    );

    // A superuser removes the two newest sealed rows and rewinds the head.
    truncate_sealed_tail(&db, 2).await;

    // Without the checkpoint, the database alone cannot tell (a warning says so).
    let out = run_async(dir.path(), &["audit", "verify"], &env, None).await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("warning: no checkpoint file at audit-checkpoints.jsonl"),
        "{}",
        stderr(&out)
    );
    // With it (named, or from AUDIT_CHECKPOINT_FILE): caught.
    let out = run_async(dir.path(), &with_file, &env, None).await;
    assert_error(
        &out,
        "audit chain broken at link 3: the chain ends at link 2 but a checkpoint published link 4",
    );
    let out = run_async(
        dir.path(),
        &["audit", "verify", "--json"],
        &[env[0], env[1], ("AUDIT_CHECKPOINT_FILE", file_arg.as_str())],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["checked"], 2);
    assert_eq!(report["checkpoint_seq"], 4);

    // A named file that does not exist, or holds nothing for this database, is an error.
    let out = run_async(
        dir.path(),
        &["audit", "verify", "--checkpoint-file", "missing.jsonl"],
        &env,
        None,
    )
    .await;
    assert_error(&out, "cannot read the checkpoint file missing.jsonl");
    std::fs::write(dir.path().join("other.jsonl"), "{\"database\":\"elsewhere\",\"seq\":1,\"mac\":\"00\",\"sealed_at\":\"2026-01-01T00:00:00Z\",\"key_version\":1}\n").unwrap();
    let out = run_async(
        dir.path(),
        &["audit", "verify", "--checkpoint-file", "other.jsonl"],
        &env,
        None,
    )
    .await;
    assert_error(&out, "holds no checkpoint of database");
}
