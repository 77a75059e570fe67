//! Session state is not an input, through real logins: the vault database
//! loads the library at session start, so the otobot.* settings exist and
//! are superuser-only before a caller's first statement; values smuggled in
//! the connection options are discarded.

mod common;

use std::str::FromStr;

use common::*;
use tokio_postgres::{Client, Config, NoTls};

async fn login(url: &str, options: &str) -> Client {
    let mut config = Config::from_str(url).unwrap();
    config.options(options);
    let (client, connection) = config.connect(NoTls).await.expect("the login succeeds");
    tokio::spawn(connection);
    client
}

async fn show(client: &Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn refused(client: &Client, sql: &str) -> String {
    let error = client.batch_execute(sql).await.expect_err(sql);
    let db = error.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
    db.message().to_owned()
}

#[tokio::test]
async fn an_api_login_cannot_set_or_smuggle_any_otobot_setting() {
    let db = TestDb::migrated().await;
    let smuggled =
        "-c otobot.scope=system -c otobot.token_change=key_rotation -c otobot.reason=spoofed";
    let api = login(&db.api_url(None), smuggled).await;
    // Defined at session start (session_preload_libraries), before any vault call.
    let context: Vec<String> = api
        .query(
            "SELECT context FROM pg_settings WHERE name LIKE 'otobot.%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(context.len(), 7);
    assert!(context.iter().all(|c| c == "superuser"), "{context:?}");
    for name in ["otobot.scope", "otobot.token_change", "otobot.reason"] {
        assert_eq!(
            show(&api, name).await,
            "",
            "{name} smuggled through the connection options"
        );
    }
    for sql in [
        "SET otobot.scope = 'system'",
        "SET otobot.user_id = 'b0000000-0000-0000-0000-00000000000b'",
        "BEGIN; SET LOCAL otobot.token_change = 'key_rotation'",
        "SELECT set_config('otobot.reason', 'spoofed', true)",
        "ALTER ROLE otobot_api SET otobot.scope = 'system'",
        "SET session_replication_role = replica",
        "SET ROLE otobot_owner",
        "SET SESSION AUTHORIZATION otobot_dba",
    ] {
        let message = refused(&api, sql).await;
        assert!(message.contains("permission denied"), "{sql}: {message}");
        let _ = api.batch_execute("ROLLBACK").await;
    }
    let error = api
        .batch_execute("SET otobot.made_up = 'x'")
        .await
        .expect_err("a new otobot.* name");
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("invalid configuration parameter name"),
        "{message}"
    );

    // A superuser's connection options cannot set them either (refused as a
    // source, not by privilege), nor can role defaults.
    let admin = login(&db.url, "-c otobot.scope=system").await;
    assert_eq!(show(&admin, "otobot.scope").await, "");
    let error = admin
        .batch_execute("ALTER ROLE otobot_api SET otobot.scope = 'system'")
        .await
        .expect_err("a role default");
    assert_eq!(error.as_db_error().unwrap().code().code(), "22023");
}
