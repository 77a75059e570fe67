//! Keys go only to sessions whose effective logging is verified safe (fail
//! closed), in `serve`'s pool and in the CLI. Each test runs its own
//! PostgreSQL cluster, because the hostile setting is a role's (cluster-wide)
//! and the proof is the server log itself.

mod cli_support;
mod common;
mod pg_cluster;

use std::collections::HashMap;

use pg_cluster::Cluster;

/// Settings of a server on `cluster`'s database `vault` as `otobot_api`.
fn settings(cluster: &Cluster, key_hex: &str) -> otobot_api::settings::Settings {
    let vars: HashMap<&str, String> = [
        ("DATABASE_URL", cluster.url("otobot_api", "vault")),
        ("ENCRYPTION_MASTER_KEY", key_hex.to_owned()),
        ("N8N_INTERNAL_TOKEN", common::random_hex32()),
        ("INTERNAL_API_PORT", "0".to_owned()),
        ("DATABASE_POOL_SIZE", "2".to_owned()),
        ("DATABASE_TIMEOUT_MS", "2000".to_owned()),
        (
            "AUDIT_CHECKPOINT_FILE",
            cluster.dir.join("checkpoints.jsonl").display().to_string(),
        ),
    ]
    .into_iter()
    .collect();
    otobot_api::settings::Settings::from_vars(|n| vars.get(n).cloned()).unwrap()
}

/// A cluster with the vault migrated and `key_hex` registered as version 1.
async fn vault(key_hex: &str) -> (Cluster, tokio_postgres::Client) {
    let cluster = Cluster::start("", &[]);
    let url = cluster.migrated_database("vault").await;
    let admin = common::connect(&url).await;
    common::register_key(&admin, 1, key_hex).await;
    (cluster, admin)
}

/// The key must not be in the log in any form PostgreSQL prints a bytea or text.
fn assert_no_key(log: &str, key_hex: &str) {
    assert!(
        !log.to_lowercase().contains(key_hex),
        "the server log holds the key"
    );
}

#[tokio::test]
async fn serve_refuses_to_start_when_a_role_setting_would_log_its_keys() {
    let key = common::random_hex32();
    let (cluster, admin) = vault(&key).await;
    // Role settings otobot_api cannot override: statements logged, with
    // their parameters (the migration's `log_parameter_max_length = 0` undone).
    admin
        .batch_execute(
            "ALTER ROLE otobot_api SET log_parameter_max_length = -1;
             ALTER ROLE otobot_api SET log_statement = 'all'",
        )
        .await
        .unwrap();

    let error = match otobot_api::startup::Application::build(settings(&cluster, &key)).await {
        Ok(_) => panic!("serve started with a logging session"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("log_statement = all") && error.contains("keys not sent"),
        "{error}"
    );
    assert!(error.contains("ALTER ROLE otobot_api"), "{error}");
    assert!(!error.contains(&key), "{error}");

    let log = cluster.log();
    // The role setting did take effect: the session's own statements are logged...
    assert!(
        log.contains("pg_settings"),
        "no statement was logged:\n{log}"
    );
    // ...its attempt to turn it off was refused...
    assert!(
        log.contains("permission denied to set parameter \"log_statement\""),
        "{log}"
    );
    // ...and no key was ever sent.
    assert!(!log.contains("otobot_load_key"), "{log}");
    assert_no_key(&log, &key);
}

#[tokio::test]
async fn a_session_that_turns_unsafe_after_start_gets_no_key_and_health_says_503() {
    let key = common::random_hex32();
    let (cluster, admin) = vault(&key).await;
    let app = otobot_api::startup::Application::build(settings(&cluster, &key))
        .await
        .expect("serve starts with safe logging");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let health = || async {
        http.get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 200);

    for (name, value) in [
        ("log_min_duration_statement", "0"),
        ("log_statement", "'all'"),
        ("log_transaction_sample_rate", "1"),
    ] {
        let setting = format!("{name} = {value}");
        admin
            .batch_execute(&format!(
                "ALTER ROLE otobot_api SET log_parameter_max_length = -1;
                 ALTER ROLE otobot_api SET {setting};
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'otobot_api'"
            ))
            .await
            .unwrap();
        // The pool replaces its dead sessions; none of the new ones gets a key.
        for _ in 0..3 {
            assert_eq!(health().await, 503, "{setting}");
        }
        admin
            .batch_execute(&format!(
                "ALTER ROLE otobot_api SET log_parameter_max_length = 0;
                 ALTER ROLE otobot_api RESET {name}"
            ))
            .await
            .unwrap();
    }
    // Safe again: new sessions get their keys.
    let mut healthy = false;
    for _ in 0..20 {
        if health().await == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy, "the pool did not recover once logging was safe");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let log = cluster.log();
    assert!(log.contains("duration:"), "nothing was logged:\n{log}");
    assert_no_key(&log, &key);
}

#[tokio::test]
async fn statements_logged_without_their_parameters_are_safe_for_keys() {
    let key = common::random_hex32();
    let (cluster, admin) = vault(&key).await;
    // Everything is logged, but no bind parameter ever is (the migration
    // sets `log_parameter_max_length = 0` on otobot_api).
    admin
        .batch_execute("ALTER ROLE otobot_api SET log_statement = 'all'")
        .await
        .unwrap();
    let app = otobot_api::startup::Application::build(settings(&cluster, &key))
        .await
        .expect("serve starts: parameters are never logged");
    drop(app);
    let log = cluster.log();
    assert!(log.contains("otobot_load_key"), "{log}");
    assert_no_key(&log, &key);
}

#[tokio::test]
async fn the_cli_refuses_to_send_keys_as_a_role_whose_statements_are_logged() {
    let key = common::random_hex32();
    let (cluster, admin) = vault(&key).await;
    // A DBA who is not a superuser, with statement logging on their role.
    admin
        .batch_execute(
            "CREATE ROLE dba_person LOGIN IN ROLE otobot_dba, otobot_auditor;
             ALTER ROLE dba_person SET log_statement = 'all'",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.url("dba_person", "vault");
    for args in [
        vec!["audit", "verify", "--database-url", &url],
        vec!["rotate-key", "--database-url", &url],
    ] {
        let out = cli_support::run_async(
            dir.path(),
            &args,
            &[
                ("ENCRYPTION_MASTER_KEY", &key),
                ("ENCRYPTION_KEY_VERSION", "1"),
            ],
            None,
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("keys not sent") && stderr.contains("log_statement = all"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("ALTER ROLE dba_person"), "{stderr}");
        assert!(!stderr.contains(&key), "{stderr}");
    }
    let log = cluster.log();
    assert!(log.contains("pg_settings"), "{log}");
    assert!(!log.contains("otobot_load_key"), "{log}");
    assert_no_key(&log, &key);
}
