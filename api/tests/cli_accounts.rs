//! Account commands through the real binary, against a real database:
//! every change goes through the vault's functions and is audited as `cli`.

mod cli_support;
mod common;

use cli_support::*;
use common::*;

async fn audit_actions(db: &tokio_postgres::Client) -> Vec<(String, String)> {
    db.query(
        "SELECT action, source FROM otobot.credential_access_logs ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn id_in(stdout: &str, prefix: &str) -> uuid::Uuid {
    let rest = stdout
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("{prefix:?} not in {stdout}"));
    uuid::Uuid::parse_str(&rest[..36]).unwrap()
}

#[tokio::test]
async fn an_operator_creates_a_client_and_a_user_with_passwords_from_stdin() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let vars = [("MIGRATION_DATABASE_URL", db.url.as_str())];

    let out = run_async(
        dir.path(),
        &[
            "create-client",
            "--company",
            "Acme",
            "--email",
            "boss@acme.test",
            "--password-stdin",
        ],
        &vars,
        Some("correct horse battery\n"),
    )
    .await;
    assert_ok(&out);
    let client_id = id_in(&stdout(&out), "created client ");

    let out = run_async(
        dir.path(),
        &[
            "create-user",
            "--client-id",
            &client_id.to_string(),
            "--email",
            "ann@acme.test",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &vars,
        Some("another long password\n"),
    )
    .await;
    assert_ok(&out);
    let user_id = id_in(&stdout(&out), "created user ");

    let admin = db.client().await;
    let row = admin
        .query_one(
            "SELECT password_hash, role, client_id FROM otobot.users WHERE id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    let hash: String = row.get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("another long password"));
    assert_eq!(row.get::<_, String>(1), "admin");
    assert_eq!(row.get::<_, uuid::Uuid>(2), client_id);
    let client_hash: String = admin
        .query_one(
            "SELECT password_hash FROM otobot.clients WHERE id = $1",
            &[&client_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(client_hash.starts_with("$argon2id$"));

    assert_eq!(
        audit_actions(&admin).await,
        vec![
            ("client_created".into(), "cli".into()),
            ("user_created".into(), "cli".into())
        ]
    );
}

#[tokio::test]
async fn passwords_are_never_arguments_and_short_or_missing_ones_are_refused() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let vars = [("MIGRATION_DATABASE_URL", db.url.as_str())];
    let base = [
        "create-client",
        "--company",
        "Acme",
        "--email",
        "x@acme.test",
    ];

    // No --password flag exists.
    let mut args = base.to_vec();
    args.extend(["--password", "hunter2hunter2"]);
    let out = run_async(dir.path(), &args, &vars, None).await;
    assert_error(&out, "unexpected argument '--password'");

    // No terminal and no --password-stdin: refused, nothing created.
    let out = run_async(dir.path(), &base, &vars, None).await;
    assert_error(&out, "--password-stdin");

    let mut args = base.to_vec();
    args.push("--password-stdin");
    let out = run_async(dir.path(), &args, &vars, Some("short\n")).await;
    assert_error(&out, "at least 12 characters");

    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.clients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn incident_commands_deactivate_a_connection_and_a_user_with_their_reason() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    seed_users(&admin).await;
    let key = random_hex32();
    let google = store_oauth(&admin, &key, USER_A, "google", "at-1", "rt-1", None).await;
    let notion = store_oauth(&admin, &key, USER_B, "notion", "at-2", "rt-2", None).await;
    let slack = store_oauth(&admin, &key, USER_B, "slack", "at-3", "rt-3", None).await;
    let dir = tempfile::tempdir().unwrap();
    let vars = [("MIGRATION_DATABASE_URL", db.url.as_str())];

    let out = run_async(
        dir.path(),
        &[
            "deactivate-connection",
            &google.to_string(),
            "--reason",
            "token leaked in a log",
        ],
        &vars,
        None,
    )
    .await;
    assert_ok(&out);
    // A second time: nothing left to do, said as an error.
    let out = run_async(
        dir.path(),
        &[
            "deactivate-connection",
            &google.to_string(),
            "--reason",
            "again",
        ],
        &vars,
        None,
    )
    .await;
    assert_error(&out, "not found or already inactive");

    let out = run_async(
        dir.path(),
        &["deactivate-user", USER_B, "--reason", "left the company"],
        &vars,
        None,
    )
    .await;
    assert_ok(&out);

    let rows = admin
        .query(
            "SELECT client_connection_id, action, source, detail->>'reason' FROM otobot.credential_access_logs
             WHERE action IN ('connection_deactivated', 'user_deactivated') ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(Option<uuid::Uuid>, String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0],
        (
            Some(google),
            "connection_deactivated".into(),
            "cli".into(),
            Some("token leaked in a log".into())
        )
    );
    let mut user_conns: Vec<uuid::Uuid> = got[1..3].iter().map(|g| g.0.unwrap()).collect();
    user_conns.sort();
    let mut expected = vec![notion, slack];
    expected.sort();
    assert_eq!(user_conns, expected);
    assert_eq!(got[3].1, "user_deactivated");
    assert!(got.iter().all(|g| g.2 == "cli"));

    let active: i64 = admin
        .query_one(
            "SELECT count(*) FROM otobot.client_connections WHERE is_active",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 0);
}

#[tokio::test]
async fn an_unreachable_database_is_one_error_line_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_async(
        dir.path(),
        &[
            "deactivate-user",
            USER_A,
            "--reason",
            "test",
            "--database-url",
            "postgresql://otobot_admin:hunter2@127.0.0.1:1/otobot",
        ],
        &[],
        None,
    )
    .await;
    let line = assert_error(&out, "cannot connect");
    assert!(!line.contains("hunter2"), "{line}");
}
