//! `otobot migrate` registers the configured key versions: the first
//! registration of a version is the owner's, never the API's.

mod cli_support;
mod common;

use cli_support::*;
use common::*;

#[tokio::test]
async fn migrate_registers_the_configured_key_versions_and_refuses_another_key_for_one() {
    let db = TestDb::migrated().await;
    let (key1, key2) = (random_hex32(), random_hex32());
    let old = format!("1:{key1}");
    let env = [
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_MASTER_KEY", key2.as_str()),
        ("ENCRYPTION_KEY_VERSION", "2"),
        ("ENCRYPTION_OLD_KEYS", old.as_str()),
    ];
    // As after a restore: the database-level preload setting is gone.
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} RESET session_preload_libraries",
            db.name
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_async(dir.path(), &["migrate"], &env, None).await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("the vault database loads the otobot library at session start again"),
        "{text}"
    );
    assert!(
        text.contains("registered key version 1\nregistered key version 2\n"),
        "{text}"
    );
    assert!(!text.contains(&key1) && !text.contains(&key2));

    // Again: nothing new, both already registered with these keys.
    let out = run_async(dir.path(), &["migrate"], &env, None).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("key version 1 is registered\nkey version 2 is registered"),
        "{}",
        stdout(&out)
    );

    // The API role loads what was registered.
    let api = connect(&db.api_url(None)).await;
    for (version, key) in [(1, &key1), (2, &key2)] {
        api.execute(
            "SELECT otobot.otobot_load_key($1, decode($2, 'hex'), false)",
            &[&version, key],
        )
        .await
        .expect("a registered version loads");
    }

    // Another key for a registered version: refused, naming it; nothing changes.
    let wrong = random_hex32();
    let out = run_async(
        dir.path(),
        &["migrate"],
        &[
            env[0],
            ("ENCRYPTION_MASTER_KEY", wrong.as_str()),
            env[2],
            env[3],
        ],
        None,
    )
    .await;
    let line = assert_error(
        &out,
        "key version 2 does not match the check value recorded in this database",
    );
    assert!(!line.contains(&wrong));
    let registered: Vec<(i32, String)> = db
        .client()
        .await
        .query(
            "SELECT version, registered_by FROM otobot.key_versions ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(registered.len(), 2);
    assert!(
        registered.iter().all(|(_, by)| by != "otobot_api"),
        "{registered:?}"
    );
}
