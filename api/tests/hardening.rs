//! Issue 10, the API's own hardening: `/metrics` protected (token or a
//! listener of its own, 404 otherwise), user and portal tokens bound to this
//! API (`iss` = PUBLIC_URL, `aud`), the real process not dumpable.

mod common;

use common::*;
use serde_json::json;

const PUBLIC_URL: &str = "https://vault.example.test";

#[tokio::test]
async fn without_a_token_or_its_own_listener_metrics_are_not_served() {
    let app = TestApp::spawn(&[]).await;
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    assert!(!body.contains("otobot_"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_answer_only_the_bearer_of_metrics_token() {
    let token = random_hex32();
    let app = TestApp::spawn(&[("METRICS_TOKEN", &token)]).await;
    let get = |auth: Option<String>| {
        let mut r = app.http.get(app.url("/metrics"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [
        None,
        Some(String::new()),
        Some("Bearer ".into()),
        Some(format!("Bearer {}", &token[..63])),
        Some(format!("Bearer {token}0")),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {}", app.token)),
    ] {
        let response = get(auth.clone()).await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert!(!response.text().await.unwrap().contains("otobot_"));
    }
    let response = get(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("otobot_db_pool_connections"));
    app.stop().await;
}

#[tokio::test]
async fn metrics_on_their_own_listener_leave_the_api_port_and_serve_nothing_else() {
    let app = TestApp::spawn(&[("METRICS_LISTEN_ADDRESS", "127.0.0.1:0")]).await;
    let metrics = app.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics, app.addr);
    assert_eq!(
        app.http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the API's port"
    );
    let response = app
        .http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("otobot_http_requests"));
    for path in [
        "/health",
        "/openapi.json",
        &format!("/api/internal/user/{USER_A}/connections"),
    ] {
        let response = app
            .http
            .get(format!("http://{metrics}{path}"))
            .header("x-internal-token", &app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    app.stop().await;

    // Both: the own listener asks for the token too.
    let token = random_hex32();
    let app = TestApp::spawn(&[
        ("METRICS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("METRICS_TOKEN", &token),
    ])
    .await;
    let url = format!("http://{}/metrics", app.metrics_addr.unwrap());
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let response = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

fn payload(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn user_tokens_carry_and_require_this_apis_issuer_and_audience() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = TestApp::spawn(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    set_client_password(&app.db.client().await, CLIENT_1, "Client-One-Password").await;
    let response = app
        .http
        .post(app.url("/api/tooljet/auth/login"))
        .json(&json!({"email": "one@example.test", "password": "Client-One-Password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let issued = body["authToken"].as_str().unwrap().to_owned();
    let claims = payload(&issued);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(PUBLIC_URL), Some("otobot-user-api"))
    );
    let me = |token: String| {
        app.http
            .get(app.url("/api/tooljet/me"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(me(issued).await.unwrap().status(), 200);

    // Signed with the right secret, but not for this API.
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: serde_json::Value| {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    // The issued token's own claims, re-signed: the control.
    let mut base = claims.clone();
    base["iat"] = json!(now);
    base["exp"] = json!(now + 600);
    let mut cases = Vec::new();
    for (field, value) in [
        ("iss", json!("https://other.example.test")),
        ("iss", json!(null)),
        ("aud", json!("otobot-portal-session")),
        ("aud", json!(null)),
    ] {
        let mut c = base.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(field);
        } else {
            c[field] = value.clone();
        }
        cases.push((format!("{field}={value}"), sign(c)));
    }
    for (case, token) in cases {
        assert_eq!(me(token).await.unwrap().status(), 401, "{case}");
    }
    assert_eq!(me(sign(base)).await.unwrap().status(), 200, "the control");
    app.stop().await;
}

#[tokio::test]
async fn portal_session_tokens_carry_this_apis_issuer_and_their_own_audience() {
    let app = TestApp::spawn(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    set_client_password(&app.db.client().await, CLIENT_1, "Client-One-Password").await;
    let response = app
        .http
        .post(app.url("/api/portal/login"))
        .json(&json!({"email": "one@example.test", "password": "Client-One-Password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("otobot_session="))
        .expect("a session cookie")
        .to_owned();
    let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    let claims = payload(value);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(PUBLIC_URL), Some("otobot-portal-session"))
    );
    // A session token is not a bearer token.
    let response = app
        .http
        .get(app.url("/api/tooljet/me"))
        .bearer_auth(value)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}

/// The uid of `nobody` when this test runs as root (the process under test
/// then runs as nobody, so that root-owned `/proc/<pid>` files mean
/// "not dumpable"), else `None` (it runs as us).
fn unprivileged_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    (me == 0).then_some(65534)
}

fn owner_of_proc(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

#[tokio::test]
async fn the_running_serve_process_cannot_be_dumped() {
    use std::os::unix::process::CommandExt;
    let db = TestDb::migrated().await;
    let key = random_hex32();
    register_key(&db.client().await, 1, &key).await;
    let vars = base_vars(&db, &key, &random_hex32());
    let run_as = unprivileged_uid();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_otobot"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs(&vars)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // The control: an ordinary process of the same user.
    let mut control = std::process::Command::new("sleep");
    control.arg("30");
    if let Some(uid) = run_as {
        command.uid(uid).gid(uid);
        control.uid(uid).gid(uid);
    }
    let mut serve = command.spawn().unwrap();
    let mut control = control.spawn().unwrap();
    let user = run_as.unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    });
    // Until it listens (its log line), or at most 10 s.
    let mut alive = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let threads = std::fs::read_to_string(format!("/proc/{}/status", serve.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()));
        if threads.as_deref().is_some_and(|t| t != "1") {
            alive = true;
            break;
        }
    }
    assert!(alive, "otobot serve did not start");
    assert!(serve.try_wait().unwrap().is_none(), "otobot serve exited");
    assert_eq!(
        owner_of_proc(control.id()),
        user,
        "the control is its user's"
    );
    // SECURITY: non-dumpable: the kernel hands its /proc files to root.
    assert_eq!(owner_of_proc(serve.id()), 0, "otobot serve is dumpable");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    let _ = serve.kill();
    let _ = control.kill();
    let _ = serve.wait();
    let _ = control.wait();
}
