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
