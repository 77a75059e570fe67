//! `otobot migrate` against a real PostgreSQL: each test gets a fresh database, dropped at the end.
//! Admin connection: `OTOBOT_TEST_ADMIN_URL` (default `postgresql://postgres@127.0.0.1:5432/postgres`).

use std::{process::Command, time::Duration};

mod common;

use common::{admin, TestDb};
use otobot_api::migrate::{self, Error, Migration, State};
use tokio_postgres::Client;

const T1: Migration = Migration {
    version: 1,
    name: "0001_t1.sql",
    sql: "CREATE TABLE t1 (id int);",
};
const T2: Migration = Migration {
    version: 2,
    name: "0002_t2.sql",
    sql: "CREATE TABLE t2 (id int);",
};
const T3: Migration = Migration {
    version: 3,
    name: "0003_t3.sql",
    sql: "CREATE TABLE t3 (id int);",
};

async fn table_exists(client: &Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

async fn recorded(client: &Client) -> Vec<(i32, String, String)> {
    let rows = client
        .query(
            "SELECT version, name, checksum FROM otobot_meta.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn an_empty_database_gets_every_migration_with_its_checksum() {
    let db = TestDb::new().await;
    let mut client = db.client().await;

    let report = migrate::run(&mut client, &[T1, T2]).await.unwrap();

    assert_eq!(report.applied, ["0001_t1.sql", "0002_t2.sql"]);
    assert!(table_exists(&client, "t1").await && table_exists(&client, "t2").await);
    assert_eq!(
        T1.checksum(),
        "515d38afb4c36fdbc7550518d5d516172253fc02915c12e25a6d7b4c3de5da72",
        "sha256sum of the file, lowercase hex"
    );
    assert_eq!(
        recorded(&client).await,
        [
            (1, "0001_t1.sql".into(), T1.checksum()),
            (2, "0002_t2.sql".into(), T2.checksum())
        ]
    );
    let applied_by: String = client
        .query_one(
            "SELECT applied_by FROM otobot_meta.schema_migrations WHERE version = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let current_user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied_by, current_user);
}

#[tokio::test]
async fn running_twice_applies_nothing_the_second_time() {
    let db = TestDb::new().await;
    let mut client = db.client().await;

    migrate::run(&mut client, &[T1, T2]).await.unwrap();
    let second = migrate::run(&mut client, &[T1, T2]).await.unwrap();

    assert_eq!(
        second,
        migrate::Report {
            applied: vec![],
            total: 2
        }
    );
    assert_eq!(recorded(&client).await.len(), 2);
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_is_refused_and_nothing_else_is_applied() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    migrate::run(&mut client, &[T1]).await.unwrap();

    let edited = Migration {
        sql: "CREATE TABLE t1 (id bigint);",
        ..T1
    };
    let error = migrate::run(&mut client, &[edited, T2]).await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "migration 0001_t1.sql was changed after it was applied (checksum mismatch): \
         applied migrations are never edited; add a new migration instead"
    );
    assert!(!table_exists(&client, "t2").await);
    assert_eq!(recorded(&client).await.len(), 1);
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    migrate::run(&mut client, &[T1, T2]).await.unwrap();

    let error = migrate::run(&mut client, &[T1]).await.unwrap_err();

    assert!(matches!(error, Error::Newer { version: 2 }));
    assert_eq!(
        error.to_string(),
        "database is at migration 2, newer than this binary"
    );
}

#[tokio::test]
async fn a_pending_migration_older_than_the_latest_applied_one_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    migrate::run(&mut client, &[T1, T3]).await.unwrap();

    let error = migrate::run(&mut client, &[T1, T2, T3]).await.unwrap_err();

    assert!(
        matches!(
            error,
            Error::OutOfOrder {
                name: "0002_t2.sql",
                latest: 3
            }
        ),
        "{error}"
    );
    assert!(!table_exists(&client, "t2").await);
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_completely_and_named_with_the_postgres_error() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let failing = Migration {
        version: 2,
        name: "0002_broken.sql",
        sql: "CREATE TABLE t2 (id int);\nINSERT INTO t2 VALUES (1);\nINSERT INTO missing VALUES (1);\n",
    };

    let error = migrate::run(&mut client, &[T1, failing, T3])
        .await
        .unwrap_err();

    assert_eq!(
        error.to_string(),
        r#"migration 0002_broken.sql failed at line 3: relation "missing" does not exist"#
    );
    assert!(
        table_exists(&client, "t1").await,
        "the migration before it stays applied"
    );
    assert!(!table_exists(&client, "t2").await && !table_exists(&client, "t3").await);
    assert_eq!(recorded(&client).await.len(), 1);

    // The lock was released: another session can migrate at once.
    let mut other = db.client().await;
    let fixed = Migration {
        sql: "CREATE TABLE t2 (id int);",
        ..failing
    };
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        migrate::run(&mut other, &[T1, fixed, T3]),
    )
    .await
    .expect("the advisory lock is released after a failure")
    .unwrap();
    assert_eq!(report.applied, ["0002_broken.sql", "0003_t3.sql"]);
}

#[tokio::test]
async fn a_migration_that_sets_a_role_is_still_recorded_by_the_migrating_role() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let role = format!("otobot_test_role_{}", uuid::Uuid::new_v4().simple());
    let sql = format!("CREATE ROLE {role} NOLOGIN; SET ROLE {role}; SET search_path = pg_catalog;");
    let sets_role = Migration {
        version: 1,
        name: "0001_role.sql",
        sql: Box::leak(sql.into_boxed_str()),
    };

    let result = migrate::run(&mut client, &[sets_role, T2]).await;
    admin(&format!("DROP ROLE IF EXISTS {role}")).await;

    assert_eq!(result.unwrap().applied, ["0001_role.sql", "0002_t2.sql"]);
}

#[tokio::test]
async fn two_concurrent_runs_apply_each_migration_once() {
    let db = TestDb::new().await;
    let (mut a, mut b) = (db.client().await, db.client().await);
    let slow = Migration {
        sql: "CREATE TABLE t1 (id int); SELECT pg_sleep(0.5);",
        ..T1
    };
    let migrations = [slow, T2];

    let (first, second) = tokio::join!(
        migrate::run(&mut a, &migrations),
        migrate::run(&mut b, &migrations)
    );

    let mut applied = [first.unwrap().applied, second.unwrap().applied];
    applied.sort();
    assert_eq!(applied, [vec![], vec!["0001_t1.sql", "0002_t2.sql"]]);
    assert_eq!(recorded(&a).await.len(), 2);
}

#[tokio::test]
async fn status_lists_applied_pending_changed_and_unknown_migrations_without_changing_anything() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let before = migrate::status(&client, &[T1]).await.unwrap();
    assert_eq!(before[0].state, State::Pending);
    assert!(
        !table_exists(&client, "otobot_meta.schema_migrations").await,
        "status creates nothing"
    );

    migrate::run(&mut client, &[T1, T2]).await.unwrap();
    let edited = Migration {
        sql: "CREATE TABLE t1 (id bigint);",
        ..T1
    };
    let entries = migrate::status(&client, &[edited, T3]).await.unwrap();

    let states: Vec<(&str, &State)> = entries
        .iter()
        .map(|e| (e.name.as_str(), &e.state))
        .collect();
    assert_eq!(
        states,
        [
            ("0001_t1.sql", &State::Changed),
            ("0002_t2.sql", &State::NotInBinary),
            ("0003_t3.sql", &State::Pending)
        ]
    );
}

/// Runs the built binary: exit code, stdout, stderr.
fn otobot(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_otobot"))
        .args(args)
        // Keys from a developer's environment would be registered: not here.
        .env_remove("ENCRYPTION_MASTER_KEY")
        .env_remove("ENCRYPTION_OLD_KEYS")
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code(),
        text(output.stdout),
        text(output.stderr),
    )
}

#[tokio::test]
async fn the_binary_applies_the_real_migrations_then_says_the_database_is_up_to_date() {
    let db = TestDb::new().await;
    let count = migrate::embedded().len();

    let (code, stdout, stderr) = otobot(&["migrate", "--database-url", &db.url]);
    assert_eq!(code, Some(0), "first run failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), count + 1, "{stdout}");
    assert!(
        lines[..count]
            .iter()
            .all(|line| line.starts_with("applied ")),
        "{stdout}"
    );
    assert!(
        lines[count].starts_with("no key version registered: ENCRYPTION_MASTER_KEY is not set"),
        "{stdout}"
    );

    let (code, stdout, stderr) = otobot(&["migrate", "--database-url", &db.url]);
    assert_eq!(code, Some(0), "second run failed: {stderr}");
    assert_eq!(
        stdout.lines().next().unwrap_or_default(),
        format!("database is up to date ({count} migrations)")
    );

    let (code, stdout, _) = otobot(&["migrate", "--status", "--database-url", &db.url]);
    assert!(
        code == Some(0) && stdout.lines().all(|line| line.starts_with("applied  ")),
        "{stdout}"
    );
}

#[test]
fn the_binary_exits_1_with_one_error_line_that_masks_the_password() {
    let (code, stdout, stderr) = otobot(&[
        "migrate",
        "--database-url",
        "postgresql://someone:hunter2@127.0.0.1:1/nowhere",
    ]);

    assert_eq!(code, Some(1));
    assert_eq!(stdout, "");
    assert!(
        stderr
            .starts_with("error: cannot connect to postgresql://someone:***@127.0.0.1:1/nowhere: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("hunter2"));
}
