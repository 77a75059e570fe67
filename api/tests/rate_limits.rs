//! Rate limits as DESIGN.md "Rate limiting" says (issue 10 items 8 and 9),
//! against a real server and a real database: a company of users behind one
//! ToolJet address and one n8n never sees a 429 in normal use, password
//! guessing stops fast per account, `X-Forwarded-For` is believed only from
//! a trusted proxy, and replicas hold the limits together.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{stream, StreamExt};
use serde_json::json;

/// An argon2id hash with the smallest parameters the verifier accepts: the
/// load tests measure the limiter, not password hashing.
fn cheap_hash(password: &str) -> String {
    use argon2::{password_hash::SaltString, Algorithm, Argon2, Params, PasswordHasher, Version};
    let params = Params::new(8, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(b"otobot-test-salt").unwrap(),
        )
        .unwrap()
        .to_string()
}

/// `n` users of client 1, `load<i>@example.test`, all with `password`; their ids.
async fn many_users(app: &TestApp, n: usize, password: &str) -> Vec<uuid::Uuid> {
    let hash = cheap_hash(password);
    app.db
        .client()
        .await
        .query(
            "INSERT INTO otobot.users (client_id, email, role, password_hash)
             SELECT $1::text::uuid, 'load' || i || '@example.test', 'user', $2
             FROM generate_series(1, $3::int) AS i RETURNING id",
            &[&CLIENT_1, &hash, &(n as i32)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn set_password(app: &TestApp, email: &str, password: &str) {
    app.db
        .client()
        .await
        .execute(
            "UPDATE otobot.users SET password_hash = $1 WHERE email = $2",
            &[&cheap_hash(password), &email],
        )
        .await
        .unwrap();
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    login_via(app, "/api/tooljet/auth/login", email, password, None).await
}

async fn login_via(
    app: &TestApp,
    path: &str,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(path))
        .json(&json!({ "email": email, "password": password }));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_thousand_correct_logins_of_distinct_users_from_one_address_all_succeed() {
    let app = TestApp::spawn(&[]).await;
    many_users(&app, 1000, "load-password").await;
    let started = Instant::now();
    let statuses: Vec<u16> = stream::iter(1..=1000)
        .map(|i| {
            let app = &app;
            async move {
                login(app, &format!("load{i}@example.test"), "load-password")
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "1,000 logins from one address: {ok} × 200 in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(ok, 1000, "statuses other than 200: {:?}", {
        let mut other: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
        other.dedup();
        other
    });
    // Successes used no failure budget.
    let used: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT COALESCE(sum(attempts), 0) FROM otobot.login_attempts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 0);
    app.stop().await;
}

#[tokio::test]
async fn eleven_wrong_passwords_lock_that_account_only_in_every_login_form() {
    let app = TestApp::spawn(&[]).await;
    set_password(&app, "a@example.test", "right-password-a").await;
    set_password(&app, "b@example.test", "right-password-b").await;
    for i in 0..10 {
        let path = if i % 2 == 0 {
            "/api/tooljet/auth/login"
        } else {
            "/api/portal/login"
        };
        let response = login_via(&app, path, "a@example.test", "wrong", None).await;
        assert_eq!(response.status(), 401, "failure {i} via {path}");
    }
    let response = login(&app, "a@example.test", "wrong").await;
    assert_eq!(response.status(), 429, "the 11th failure");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["ratelimit-limit"], "10");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // The right password waits too, in both forms (one budget)...
    for path in ["/api/tooljet/auth/login", "/api/portal/login"] {
        let response = login_via(&app, path, "a@example.test", "right-password-a", None).await;
        assert_eq!(response.status(), 429, "{path}");
    }
    // ...the email's case does not open a new budget...
    assert_eq!(
        login(&app, "A@Example.TEST", "right-password-a")
            .await
            .status(),
        429
    );
    // ...and another account from the same address logs in.
    assert_eq!(
        login(&app, "b@example.test", "right-password-b")
            .await
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_guesses_cannot_exceed_an_accounts_budget() {
    let app = TestApp::spawn(&[]).await;
    set_password(&app, "a@example.test", "right-password-a").await;
    let statuses: Vec<u16> = stream::iter(0..40)
        .map(|_| {
            let app = &app;
            async move {
                login(app, "a@example.test", "guess")
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((verified, limited), (10, 30), "{statuses:?}");
    app.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // The test client connects from 127.0.0.1: here a trusted proxy.
    let app = TestApp::spawn(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
        ("LOGIN_RATE_LIMIT_ADDRESS_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let fail = |i: usize, xff: &'static str| {
        let app = &app;
        async move {
            login_via(
                app,
                "/api/tooljet/auth/login",
                &format!("nobody{i}@example.test"),
                "wrong",
                Some(xff),
            )
            .await
            .status()
            .as_u16()
        }
    };
    for i in 0..3 {
        assert_eq!(fail(i, "203.0.113.5").await, 401);
    }
    assert_eq!(
        fail(3, "203.0.113.5").await,
        429,
        "the client's address is limited"
    );
    // Prepending a fake hop does not escape: the proxy's own hop counts.
    assert_eq!(fail(4, "198.51.100.7, 203.0.113.5").await, 429);
    // Behind a chain of trusted proxies, the rightmost untrusted hop.
    assert_eq!(fail(5, "203.0.113.5, 10.1.2.3").await, 429);
    // Another client behind the same proxy has its own budget.
    assert_eq!(fail(6, "203.0.113.6").await, 401);
    assert_eq!(fail(7, "203.0.113.5, 198.51.100.7").await, 401);
    app.stop().await;

    // Not a trusted proxy: the header is ignored; every attempt is the peer's.
    let app = TestApp::spawn(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ("LOGIN_RATE_LIMIT_ADDRESS_MAX_ATTEMPTS", "3"),
        ("RATE_LIMIT_ADDRESS_PER_MINUTE", "5"),
    ])
    .await;
    for (i, xff) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .into_iter()
        .enumerate()
    {
        let r = login_via(
            &app,
            "/api/tooljet/auth/login",
            &format!("nobody{i}@example.test"),
            "wrong",
            Some(xff),
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    let r = login_via(
        &app,
        "/api/tooljet/auth/login",
        "nobody9@example.test",
        "wrong",
        Some("203.0.113.4"),
    )
    .await;
    assert_eq!(r.status(), 429, "a spoofed header opened a new budget");
    // The same for anonymous requests (4 logins so far, limit 5 a minute).
    let health = |xff: &'static str| {
        app.http
            .get(app.url("/health"))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(health("203.0.113.50").await.unwrap().status(), 200);
    let r = health("203.0.113.51").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn five_thousand_fetches_across_fifty_users_from_one_caller_see_no_429() {
    // A trusted caller (no grant per fetch): this test is about the limits.
    let caller = random_hex32();
    let app = TestApp::spawn(&[
        ("DATABASE_POOL_SIZE", "8"),
        ("INTERNAL_TOKENS", &format!("scheduler:{caller}:trusted")),
    ])
    .await;
    let users = many_users(&app, 50, "unused-password").await;
    let admin = app.db.client().await;
    for user in &users {
        store_oauth(
            &admin,
            &app.key_hex,
            &user.to_string(),
            "google",
            "ya29.load",
            "1//load",
            None,
        )
        .await;
    }
    let started = Instant::now();
    let statuses: Vec<u16> = stream::iter(0..5000)
        .map(|i| {
            let (app, user, caller) = (&app, users[i % 50], &caller);
            async move {
                app.http
                    .get(app.url(&format!("/api/internal/user/{user}/credentials/google")))
                    .header("x-internal-token", caller)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "5,000 fetches, 50 users, one caller: {ok} × 200 in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        5000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 0);
    assert_eq!(ok, 5000);
    app.stop().await;
}

#[tokio::test]
async fn the_per_caller_and_user_limit_triggers_for_that_user_only() {
    let other = random_hex32();
    let app = TestApp::spawn(&[
        ("RATE_LIMIT_USER_PER_MINUTE", "5"),
        ("INTERNAL_TOKENS", &format!("cron:{other}")),
    ])
    .await;
    let path = |user: &str| format!("/api/internal/user/{user}/connections");
    for _ in 0..5 {
        assert_eq!(app.get(&path(USER_A)).await.status(), 200);
    }
    let response = app.get(&path(USER_A)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["ratelimit-limit"], "5");
    // Another user, and another caller for the same user, are not limited.
    assert_eq!(app.get(&path(USER_B)).await.status(), 200);
    let response = app
        .http
        .get(app.url(&path(USER_A)))
        .header("x-internal-token", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_hold_a_request_limit_together() {
    // Both replicas in the same minute window (the estimate is then exact).
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 40 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let limit = [("RATE_LIMIT_USER_PER_MINUTE", "10")];
    let app = TestApp::spawn(&limit).await;
    let mut vars = base_vars(&app.db, &app.key_hex, &app.token);
    vars.insert("RATE_LIMIT_USER_PER_MINUTE".into(), "10".into());
    let settings =
        otobot_api::settings::Settings::from_vars(|name| vars.get(name).cloned()).unwrap();
    let replica = otobot_api::startup::Application::build(settings)
        .await
        .unwrap();
    let replica_addr = replica.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica_task = tokio::spawn(replica.run_until(async {
        let _ = stopped.await;
    }));
    let path = format!("/api/internal/user/{USER_A}/connections");
    for _ in 0..7 {
        assert_eq!(app.get(&path).await.status(), 200);
    }
    // Both replicas exchange their counts every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut admitted = 0;
    loop {
        let status = app
            .http
            .get(format!("http://{replica_addr}{path}"))
            .header("x-internal-token", &app.token)
            .send()
            .await
            .unwrap()
            .status();
        if status == 429 {
            break;
        }
        assert_eq!(status, 200);
        admitted += 1;
        assert!(admitted <= 10, "the replica ignored the other's count");
    }
    assert_eq!(admitted, 3, "10 a minute across both replicas");
    // And the first replica learns of the second's requests too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.get(&path).await.status(), 429);
    let _ = stop.send(());
    replica_task.await.unwrap().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_seeds_limit_variables_are_accepted_warned_about_once_and_not_applied() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::migrated().await;
    seed_users(&db.client().await).await;
    let key = random_hex32();
    register_key(&db.client().await, 1, &key).await;
    let token = random_hex32();
    let mut vars = base_vars(&db, &key, &token);
    vars.insert("RATE_LIMIT_MAX_REQUESTS".into(), "2".into());
    vars.insert("RATE_LIMIT_WINDOW_MS".into(), "900000".into());
    vars.insert("LOG_FORMAT".into(), "json".into());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_otobot"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs(&vars)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut captured = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited: {captured}"
        );
        captured.push_str(&line);
        if line.contains("otobot serve listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["address"].as_str().unwrap().to_owned();
        }
    };
    let warnings: Vec<&str> = captured
        .lines()
        .filter(|l| l.contains("superseded"))
        .collect();
    assert_eq!(warnings.len(), 1, "{captured}");
    for name in [
        "RATE_LIMIT_MAX_REQUESTS",
        "RATE_LIMIT_WINDOW_MS",
        "RATE_LIMIT_CALLER_PER_MINUTE",
        "RATE_LIMIT_USER_PER_MINUTE",
        "LOGIN_RATE_LIMIT_MAX_ATTEMPTS",
    ] {
        assert!(warnings[0].contains(name), "{name}: {}", warnings[0]);
    }
    // The seed's 2 requests are not a budget.
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = http
            .get(format!(
                "http://{addr}/api/internal/user/{USER_A}/connections"
            ))
            .header("x-internal-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let _ = child.kill();
    let _ = child.wait();
}
