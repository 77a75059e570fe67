//! `otobot doctor` through the real binary: ✔ on a healthy install, ✘ with a
//! fix for each broken piece.

mod cli_support;
mod common;

use cli_support::*;
use common::*;

struct Install {
    db: TestDb,
    key: String,
    token: String,
    api_url: String,
}

async fn install() -> Install {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    seed_users(&admin).await;
    let key = random_hex32();
    store_oauth(&admin, &key, USER_A, "google", "at-a", "rt-a", None).await;
    let api_url = db.api_url(None);
    Install {
        db,
        key,
        token: random_hex32(),
        api_url,
    }
}

async fn doctor(i: &Install, key: &str, json: bool) -> std::process::Output {
    doctor_with(i, key, json, &[]).await
}

async fn doctor_with(
    i: &Install,
    key: &str,
    json: bool,
    extra: &[(&str, &str)],
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["doctor"];
    if json {
        args.push("--json");
    }
    run_async(
        dir.path(),
        &args,
        &[
            &[
                ("MIGRATION_DATABASE_URL", i.db.url.as_str()),
                ("DATABASE_URL", i.api_url.as_str()),
                ("ENCRYPTION_MASTER_KEY", key),
                ("N8N_INTERNAL_TOKEN", i.token.as_str()),
            ],
            extra,
        ]
        .concat(),
        None,
    )
    .await
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no {name} line in\n{out}"))
}

#[tokio::test]
async fn doctor_passes_on_a_healthy_install() {
    let i = install().await;
    let out = doctor(&i, &i.key, false).await;
    assert_ok(&out);
    let text = stdout(&out);
    for name in [
        "configuration",
        "caller modes",
        "database",
        "extension",
        "migrations",
        "keys",
        "secrets",
        "roles",
        "api privileges",
        "auditor privileges",
        "public execute",
        "row-level security",
        "audit chain",
        "audit seal lag",
        "session state",
        "statement logging",
        "api login",
    ] {
        assert!(line(&text, name).starts_with('✔'), "{name}:\n{text}");
    }
    assert!(line(&text, "api health").starts_with('-'), "{text}");
    assert!(!text.contains(&i.key) && !stderr(&out).contains(&i.key));
}

#[tokio::test]
async fn doctor_fails_on_a_broken_grant_a_wrong_key_and_unforced_rls() {
    let i = install().await;
    i.db.client()
        .await
        .batch_execute(
            "GRANT SELECT ON otobot.client_connections TO otobot_api;
             ALTER TABLE otobot.client_connections NO FORCE ROW LEVEL SECURITY;
             GRANT EXECUTE ON FUNCTION otobot.otobot_decrypt(text, text) TO PUBLIC;",
        )
        .await
        .unwrap();
    let wrong = random_hex32();
    let out = doctor(&i, &wrong, false).await;
    assert_error(&out, "check(s) failed");
    let text = stdout(&out);
    let grant = line(&text, "api privileges");
    assert!(
        grant.starts_with('✘') && grant.contains("otobot.client_connections"),
        "{text}"
    );
    let rls = line(&text, "row-level security");
    assert!(
        rls.starts_with('✘') && rls.contains("client_connections (not forced)"),
        "{text}"
    );
    let public = line(&text, "public execute");
    assert!(
        public.starts_with('✘') && public.contains("otobot_decrypt"),
        "{text}"
    );
    let keys = line(&text, "keys");
    assert!(
        keys.starts_with('✘') && keys.contains("key version 1 does not match"),
        "{text}"
    );
    assert!(
        text.contains("    fix: REVOKE ALL ON those tables FROM otobot_api"),
        "{text}"
    );
    assert!(!text.contains(&wrong) && !text.contains(&i.key));

    let out = doctor(&i, &wrong, true).await;
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        vec![
            "keys",
            "api privileges",
            "public execute",
            "row-level security"
        ]
    );
}

#[tokio::test]
async fn doctor_reports_secrets_under_a_key_version_the_keyring_lacks() {
    let i = install().await;
    // Version 2 is configured as current, version 1 (which encrypted the secret) is forgotten.
    let dir = tempfile::tempdir().unwrap();
    let other = random_hex32();
    let out = run_async(
        dir.path(),
        &["doctor"],
        &[
            ("MIGRATION_DATABASE_URL", i.db.url.as_str()),
            ("DATABASE_URL", i.api_url.as_str()),
            ("ENCRYPTION_MASTER_KEY", other.as_str()),
            ("ENCRYPTION_KEY_VERSION", "2"),
            ("N8N_INTERNAL_TOKEN", i.token.as_str()),
        ],
        None,
    )
    .await;
    assert_error(&out, "check(s) failed");
    let text = stdout(&out);
    let secrets = line(&text, "secrets");
    assert!(
        secrets.starts_with('✘') && secrets.contains("version 1 (1 connections)"),
        "{text}"
    );
}

#[tokio::test]
async fn doctor_fails_on_seal_lag_beyond_its_threshold_and_on_a_chain_short_of_its_checkpoint() {
    let i = install().await;
    wait_sealed(&i.db, &i.key, 1).await;
    let admin = i.db.client().await;
    let mac: Vec<u8> = admin
        .query_one("SELECT mac FROM otobot.audit_chain WHERE seq = 1", &[])
        .await
        .unwrap()
        .get(0);
    // A checkpoint the sealer published for link 2, which the database no longer has.
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = serde_json::json!({
        "database": i.db.name, "seq": 2, "mac": hex::encode(&mac),
        "sealed_at": "2026-01-01T00:00:00Z", "key_version": 1,
    });
    std::fs::write(
        dir.path().join("checkpoints.jsonl"),
        format!("{checkpoint}\n"),
    )
    .unwrap();
    // A transaction of the vault database holds a newer row back for more than a second.
    let holder = i.db.client().await;
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    store_oauth(&admin, &i.key, USER_B, "slack", "at-b", "rt-b", None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = run_async(
        dir.path(),
        &["doctor"],
        &[
            ("MIGRATION_DATABASE_URL", i.db.url.as_str()),
            ("DATABASE_URL", i.api_url.as_str()),
            ("ENCRYPTION_MASTER_KEY", i.key.as_str()),
            ("N8N_INTERNAL_TOKEN", i.token.as_str()),
            ("AUDIT_CHECKPOINT_FILE", "checkpoints.jsonl"),
            ("AUDIT_SEAL_LAG_WARN_SECONDS", "1"),
        ],
        None,
    )
    .await;
    holder.batch_execute("COMMIT").await.unwrap();
    assert_error(&out, "check(s) failed");
    let text = stdout(&out);
    assert!(line(&text, "audit checkpoint").starts_with('✔'), "{text}");
    let chain = line(&text, "audit chain");
    assert!(
        chain.starts_with('✘') && chain.contains("a checkpoint published link 2"),
        "{text}"
    );
    let lag = line(&text, "audit seal lag");
    assert!(
        lag.starts_with('✘') && lag.contains("AUDIT_SEAL_LAG_WARN_SECONDS = 1"),
        "{text}"
    );
}

#[tokio::test]
async fn doctor_warns_while_a_caller_reads_without_grants() {
    let i = install().await;
    let cron = random_hex32();
    let out = doctor_with(
        &i,
        &i.key,
        false,
        &[
            ("N8N_INTERNAL_TOKEN_MODE", "trusted"),
            (
                "INTERNAL_TOKENS",
                &format!("cron:{cron}:trusted,reports:{}", random_hex32()),
            ),
        ],
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    let modes = line(&text, "caller modes");
    assert!(
        modes.starts_with('!') && modes.contains("n8n, cron") && !modes.contains("reports"),
        "{text}"
    );
    assert!(text.contains("N8N_INTERNAL_TOKEN_MODE=grant"), "{text}");
    assert!(!text.contains(&cron));
}
