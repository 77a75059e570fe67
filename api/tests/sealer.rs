//! The audit sealer: chain heads published outside the database, a horizon
//! that ignores other databases' transactions, lag measured, and a
//! checkpoint failure that is loud without stopping sealing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use otobot_api::sealer::{read_checkpoints, Checkpoint};
use tokio_postgres::Client;

/// Waits until `f` holds, polling every 50 ms, for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn checkpoints(db: &TestDb) -> Vec<Checkpoint> {
    std::fs::read_to_string(db.checkpoint_file())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a checkpoint"))
        .collect()
}

async fn links(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM otobot.audit_chain", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_sealer_appends_each_new_chain_head_to_the_checkpoint_file() {
    let app = TestApp::spawn(&[]).await;
    let admin = app.db.client().await;
    store_oauth(&admin, &app.key_hex, USER_A, "google", "at-a", "rt-a", None).await;
    store_oauth(&admin, &app.key_hex, USER_B, "slack", "at-b", "rt-b", None).await;
    eventually(30, "a checkpoint of link 2", || async {
        checkpoints(&app.db).last().is_some_and(|c| c.seq >= 2)
    })
    .await;
    store_oauth(&admin, &app.key_hex, USER_C, "notion", "at-c", "rt-c", None).await;
    eventually(30, "a checkpoint of link 3", || async {
        checkpoints(&app.db).last().is_some_and(|c| c.seq >= 3)
    })
    .await;

    let lines = checkpoints(&app.db);
    // One line per new head, in order; each names this database and the link's real MAC.
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq), "{lines:?}");
    for c in &lines {
        assert_eq!(c.database, app.db.name);
        assert_eq!(c.key_version, 1);
        let mac: Vec<u8> = admin
            .query_one(
                "SELECT mac FROM otobot.audit_chain WHERE seq = $1",
                &[&c.seq],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(hex::encode(mac), c.mac, "link {}", c.seq);
    }
    let scan = read_checkpoints(&app.db.checkpoint_file(), &app.db.name).unwrap();
    assert_eq!(scan.newest.unwrap().seq, 3);
    assert_eq!(scan.malformed, 0);
    // The file is not world-readable.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.db.checkpoint_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "{mode:o}");
    }
    assert_eq!(app.metric("otobot_audit_chain_head_seq"), Some(3.0));
    assert_eq!(app.metric("otobot_audit_unsealed_rows"), Some(0.0));
    app.stop().await;
}

#[tokio::test]
async fn a_transaction_in_another_database_does_not_stall_sealing_and_one_in_this_database_does() {
    let vault = TestDb::migrated().await;
    let other = TestDb::new().await;
    let admin = vault.client().await;
    seed_users(&admin).await;
    let key = random_hex32();
    store_oauth(&admin, &key, USER_A, "google", "at-a", "rt-a", None).await;

    // A long transaction in another database of the cluster (n8n's, in the compose stack).
    let elsewhere = other.client().await;
    elsewhere.batch_execute("BEGIN").await.unwrap();
    let held: String = elsewhere
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    store_oauth(&admin, &key, USER_B, "slack", "at-b", "rt-b", None).await;
    // It holds the cluster's xmin back (what sealing used to wait for)...
    let xmin_held: bool = admin
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) <= $1::text::xid8",
            &[&held],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        xmin_held,
        "the other database's transaction holds the cluster xmin"
    );
    // ...but not this database's sealing.
    let sealed: i32 = admin
        .query_one("SELECT sealed FROM otobot.seal_audit(100)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sealed, 2,
        "both rows sealed despite the other database's transaction"
    );

    // A transaction of this database with an xid may still write a row below
    // the next ones: sealing waits for it.
    let here = vault.client().await;
    here.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    store_oauth(&admin, &key, USER_C, "notion", "at-c", "rt-c", None).await;
    let row = admin
        .query_one(
            "SELECT sealed, unsealed_rows FROM otobot.seal_audit(100)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i64>(1)),
        (0, 1),
        "a row newer than a running transaction of this database waits"
    );
    here.batch_execute("COMMIT").await.unwrap();
    let sealed: i32 = admin
        .query_one("SELECT sealed FROM otobot.seal_audit(100)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed, 1);
    assert_eq!(links(&admin).await, 3);
    elsewhere.batch_execute("COMMIT").await.unwrap();
    let ok: bool = admin
        .query_one("SELECT ok FROM otobot.verify_audit_chain()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ok);
}

#[tokio::test]
async fn seal_lag_is_measured_and_an_unwritable_checkpoint_file_does_not_stop_sealing() {
    let db = TestDb::migrated().await;
    seed_users(&db.client().await).await;
    let app = TestApp::spawn_on(
        db,
        &[
            (
                "AUDIT_CHECKPOINT_FILE",
                "/nonexistent-otobot-dir/checkpoints.jsonl",
            ),
            ("AUDIT_SEAL_LAG_WARN_SECONDS", "1"),
        ],
    )
    .await;
    let admin = app.db.client().await;
    store_oauth(&admin, &app.key_hex, USER_A, "google", "at-a", "rt-a", None).await;
    eventually(30, "the row sealed without a checkpoint", || async {
        links(&admin).await == 1
    })
    .await;
    eventually(10, "the checkpoint failure counted", || async {
        app.metric("otobot_audit_checkpoint_failures_total")
            .is_some_and(|n| n >= 1.0)
    })
    .await;

    // A transaction of the vault database holds sealing back: the lag grows.
    let holder = app.db.client().await;
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    store_oauth(&admin, &app.key_hex, USER_B, "slack", "at-b", "rt-b", None).await;
    eventually(30, "a lag above one second", || async {
        app.metric("otobot_audit_seal_lag_seconds")
            .is_some_and(|s| s > 1.0)
            && app.metric("otobot_audit_unsealed_rows") == Some(1.0)
    })
    .await;
    holder.batch_execute("COMMIT").await.unwrap();
    eventually(30, "the lag back to zero", || async {
        app.metric("otobot_audit_unsealed_rows") == Some(0.0)
            && app.metric("otobot_audit_seal_lag_seconds") == Some(0.0)
    })
    .await;
    assert_eq!(links(&admin).await, 2);
    app.stop().await;
}
