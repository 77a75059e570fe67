//! The real `otobot` binary as a process: start-up refusals and what its
//! logs contain.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// `otobot serve` with exactly these variables (nothing inherited but PATH).
fn serve(vars: &std::collections::HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otobot"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn a_wrong_master_key_stops_start_up_naming_the_version() {
    let db = TestDb::migrated().await;
    // Version 1 is registered with one key...
    register_key(&db.client().await, 1, &random_hex32()).await;
    // ...and the server is given another.
    let vars = base_vars(&db, &random_hex32(), &random_hex32());
    let output = serve(&vars).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("key check failed for version 1"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unregistered_key_version_stops_start_up_naming_it_and_otobot_migrate() {
    let db = TestDb::migrated().await;
    let key = random_hex32();
    let mut vars = base_vars(&db, &key, &random_hex32());
    vars.insert("ENCRYPTION_KEY_VERSION".into(), "3".into());
    let output = serve(&vars).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0]
            .contains("key version 3 is not registered in this database: run `otobot migrate`"),
        "{stderr}"
    );
    assert!(!stderr.contains(&key));
    // The API never registered it: the owner's migrate does, then the server starts.
    let registered: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.key_versions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 0);
}

#[tokio::test]
async fn a_malformed_master_key_stops_start_up_with_one_line_naming_the_variable() {
    let db = TestDb::new().await;
    let mut vars = base_vars(&db, "not-hex", &random_hex32());
    let output = serve(&vars).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: ENCRYPTION_MASTER_KEY must be 64 hex characters (32 bytes)"
    );
    vars.remove("N8N_INTERNAL_TOKEN");
    vars.insert("ENCRYPTION_MASTER_KEY".into(), random_hex32());
    let output = serve(&vars).output().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).starts_with("error: N8N_INTERNAL_TOKEN is not set")
    );
}

/// Every form in which a secret could be printed.
fn encodings(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        forms.push(format!("{bytes:?}")); // [1, 2, ...]
        forms.push(
            format!("{:?}", &bytes[..8])
                .trim_end_matches(']')
                .to_owned(),
        );
        forms.push(bytes.iter().map(|b| format!("\\x{b:02x}")).collect());
        forms.push(secret.to_uppercase());
    }
    forms
}

#[tokio::test]
async fn with_trace_logging_no_secret_appears_in_the_logs() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    seed_users(&client).await;
    let key = random_hex32();
    let token = random_hex32();
    let access = format!("ya29.{}", random_hex32());
    let refresh = format!("1//{}", random_hex32());
    store_oauth(&client, &key, USER_A, "google", &access, &refresh, None).await;
    let extra = random_hex32();
    let grant = standing_grant(&client, USER_A, &["google"]).await;

    let mut vars = base_vars(&db, &key, &token);
    vars.insert("RUST_LOG".into(), "trace".into());
    vars.insert("LOG_FORMAT".into(), "json".into());
    vars.insert("INTERNAL_TOKENS".into(), format!("tooljet:{extra}:trusted"));
    let mut child = serve(&vars).spawn().unwrap();

    // The address is in the "listening" line.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut captured = String::new();
    let started = Instant::now();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited: {captured}"
        );
        captured.push_str(&line);
        if line.contains("otobot serve listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["address"].as_str().unwrap().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    };
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        rest
    });

    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let fetch = format!("{base}/api/internal/user/{USER_A}/credentials/google");
    let response = http
        .get(&fetch)
        .header("x-internal-token", &token)
        .header("x-otobot-grant", &grant)
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains(&access));
    // A grant for another service is refused (403, audited), logged without itself.
    let response = http
        .get(format!(
            "{base}/api/internal/user/{USER_A}/credentials/slack"
        ))
        .header("x-internal-token", &token)
        .header("x-otobot-grant", &grant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http
        .get(&fetch)
        .header("x-internal-token", &extra)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let wrong = format!("{}0", &token[1..]);
    assert_eq!(
        http.get(&fetch)
            .header("x-internal-token", &wrong)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    http.get(format!("{base}/api/internal/user/{USER_A}/connections"))
        .header("x-internal-token", &token)
        .send()
        .await
        .unwrap();
    http.get(format!("{base}/health")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // a sealer round

    // Graceful stop on SIGTERM.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM");
    captured.push_str(&reader.join().unwrap());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    captured.push_str(&stdout);

    assert!(
        captured.contains(r#""level":"TRACE""#),
        "trace logging was on:\n{captured}"
    );
    assert!(captured.contains("otobot serve stopped"));
    let password = std::env::var("FRONTEND_DB_PASSWORD").unwrap_or_default();
    let mut secrets = vec![
        key.clone(),
        token.clone(),
        extra.clone(),
        wrong.clone(),
        access.clone(),
        refresh.clone(),
        grant.clone(),
    ];
    if password.len() >= 8 {
        secrets.push(password);
    }
    for secret in &secrets {
        for form in encodings(secret) {
            assert!(
                !captured.contains(&form),
                "a secret appears in the logs as {form:?}"
            );
        }
    }
}
