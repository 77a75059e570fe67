//! The user API (ToolJet): login, JWT, users, connections, workflow triggers,
//! against a real server and a real database.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/tooljet/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn token_for(app: &TestApp, email: &str, password: &str) -> String {
    let response = login(app, email, password).await;
    assert_eq!(response.status(), 200, "login of {email}");
    let b: Value = response.json().await.unwrap();
    b["authToken"].as_str().unwrap().to_owned()
}

async fn as_user(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.unwrap()
}

/// Client 1 gets an account `one@example.test` / `Client-One-Password` (bcrypt,
/// inserted the seed's way); returns the admin's token.
async fn seed_client_login(app: &TestApp) -> String {
    let hash = bcrypt::hash("Client-One-Password", 10).unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE otobot.clients SET password_hash = $1 WHERE id = $2::text::uuid",
            &[&hash, &CLIENT_1],
        )
        .await
        .unwrap();
    token_for(app, "one@example.test", "Client-One-Password").await
}

#[tokio::test]
async fn the_seed_bcrypt_account_logs_in_and_its_hash_becomes_argon2id() {
    let app = TestApp::spawn(&[]).await;
    // The seed's 7.2, verbatim: a bcrypt hash (cost 10) inserted by SQL.
    let hash = bcrypt::hash("Test123!", 10).unwrap();
    let db = app.db.client().await;
    db.execute("INSERT INTO clients (email, company_name, password_hash) VALUES ('test@otobot.fr', 'Entreprise Test', $1)", &[&hash])
        .await
        .unwrap();

    let response = login(&app, "test@otobot.fr", "Test123!").await;
    assert_eq!(response.status(), 200);
    let b: Value = response.json().await.unwrap();
    assert!(b["authToken"].as_str().unwrap().split('.').count() == 3);
    assert!(b["expiresAt"].is_string());
    assert_eq!(
        (b["user"]["email"].as_str(), b["user"]["role"].as_str()),
        (Some("test@otobot.fr"), Some("admin"))
    );
    assert!(b["user"].get("passwordHash").is_none() && !b.to_string().contains("$2b$"));

    let stored: String = db
        .query_one(
            "SELECT password_hash FROM otobot.clients WHERE email = 'test@otobot.fr'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$argon2id$"), "upgraded: {stored}");
    // And it still logs in, now with argon2id.
    let token = token_for(&app, "test@otobot.fr", "Test123!").await;
    let me: Value = as_user(&app, &token, reqwest::Method::GET, "/api/tooljet/me", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["companyName"], "Entreprise Test");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_look_the_same_and_attempts_are_limited() {
    let app = TestApp::spawn(&[("LOGIN_RATE_LIMIT_MAX_ATTEMPTS", "2")]).await;
    seed_client_login(&app).await; // a success: no budget used
    let unknown = login(&app, "nobody@example.test", "whatever-password").await;
    let wrong = login(&app, "one@example.test", "wrong-password").await;
    assert_eq!(
        (unknown.status(), wrong.status()),
        (
            reqwest::StatusCode::UNAUTHORIZED,
            reqwest::StatusCode::UNAUTHORIZED
        )
    );
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("requestId");
        v
    };
    let (a, b) = (
        strip(unknown.json().await.unwrap()),
        strip(wrong.json().await.unwrap()),
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        json!({"error": "Invalid email or password", "code": "invalid_credentials"})
    );
    // A second failure for one@ uses its budget of 2: even the right password waits.
    assert_eq!(
        login(&app, "one@example.test", "another-wrong-one")
            .await
            .status(),
        401
    );
    let limited = login(&app, "one@example.test", "Client-One-Password").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let failures: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'login_failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 3, "failed logins are audited");
    app.stop().await;
}

#[tokio::test]
async fn forged_expired_alg_none_and_wrong_secret_tokens_are_refused() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = TestApp::spawn(&[]).await;
    let good = seed_client_login(&app).await;
    let claims = |exp: i64| json!({"sub": USER_A, "client_id": CLIENT_1, "role": "admin", "iat": 0, "exp": exp});
    let far = chrono::Utc::now().timestamp() + 3600;
    let wrong_secret = encode(
        &Header::default(),
        &claims(far),
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef012345"),
    )
    .unwrap();
    let expired = encode(
        &Header::default(),
        &claims(chrono::Utc::now().timestamp() - 5),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let b64 = |s: &str| {
        use std::fmt::Write;
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims(far).to_string())
    );
    let mut tampered = good.clone();
    let dot = tampered.find('.').unwrap();
    tampered.replace_range(
        dot + 2..dot + 3,
        if &tampered[dot + 2..dot + 3] == "A" {
            "B"
        } else {
            "A"
        },
    );
    for token in [
        wrong_secret,
        expired,
        none,
        tampered,
        "garbage".into(),
        String::new(),
    ] {
        let response = as_user(
            &app,
            &token,
            reqwest::Method::GET,
            "/api/tooljet/connections",
            None,
        )
        .await;
        assert_eq!(response.status(), 401, "token {token:?}");
    }
    let response = app
        .http
        .get(app.url("/api/tooljet/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no token");
    assert_eq!(
        as_user(
            &app,
            &good,
            reqwest::Method::GET,
            "/api/tooljet/connections",
            None
        )
        .await
        .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn users_see_and_change_only_their_own_and_admins_only_their_client() {
    let app = TestApp::spawn(&[]).await;
    let admin1 = seed_client_login(&app).await;
    // The admin creates two users of client 1.
    for email in ["u1@example.test", "u2@example.test"] {
        let r = as_user(
            &app,
            &admin1,
            reqwest::Method::POST,
            "/api/tooljet/users",
            Some(json!({"email": email, "password": "a-long-password-1", "role": "user"})),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    let dup = as_user(
        &app,
        &admin1,
        reqwest::Method::POST,
        "/api/tooljet/users",
        Some(json!({"email": "u1@example.test", "password": "a-long-password-1"})),
    )
    .await;
    assert_eq!(dup.status(), 409, "{:?}", dup.text().await);
    let u1 = token_for(&app, "u1@example.test", "a-long-password-1").await;
    let u2 = token_for(&app, "u2@example.test", "a-long-password-1").await;

    // u1 stores an API key; u2 cannot delete it (404), the admin can see it.
    let r = as_user(
        &app,
        &u1,
        reqwest::Method::POST,
        "/api/tooljet/connections/notion/api-key",
        Some(json!({"apiKey": "secret_notion_u1", "label": "wiki"})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        as_user(
            &app,
            &u2,
            reqwest::Method::DELETE,
            &format!("/api/tooljet/connections/{id}"),
            None
        )
        .await
        .status(),
        404
    );
    let mine: Value = as_user(
        &app,
        &u2,
        reqwest::Method::GET,
        "/api/tooljet/connections",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(mine["connections"], json!([]));
    let all: Value = as_user(
        &app,
        &admin1,
        reqwest::Method::GET,
        "/api/tooljet/connections?scope=client",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(all["connections"].as_array().unwrap().len(), 1);
    assert!(!all.to_string().contains("secret_notion_u1"));
    assert_eq!(
        as_user(
            &app,
            &u1,
            reqwest::Method::GET,
            "/api/tooljet/connections?scope=client",
            None
        )
        .await
        .status(),
        403
    );

    // A plain user cannot manage users.
    assert_eq!(
        as_user(&app, &u1, reqwest::Method::GET, "/api/tooljet/users", None)
            .await
            .status(),
        403
    );

    // An admin of client 2 cannot touch client 1.
    set_client_password(&app.db.client().await, CLIENT_2, "Client-Two-Password").await;
    let admin2 = token_for(&app, "two@example.test", "Client-Two-Password").await;
    assert_eq!(
        as_user(
            &app,
            &admin2,
            reqwest::Method::DELETE,
            &format!("/api/tooljet/connections/{id}"),
            None
        )
        .await
        .status(),
        404
    );
    let u1_id = as_user(&app, &u1, reqwest::Method::GET, "/api/tooljet/me", None)
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        as_user(
            &app,
            &admin2,
            reqwest::Method::DELETE,
            &format!("/api/tooljet/users/{u1_id}"),
            None
        )
        .await
        .status(),
        404
    );
    let listed: Value = as_user(
        &app,
        &admin2,
        reqwest::Method::GET,
        "/api/tooljet/users",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(!listed.to_string().contains("u1@example.test"));
    // u1's standing grant, from before the deactivation.
    let u1_grant = app.grant(&u1_id, &["notion"]).await;

    // The right admin deactivates u1: their token stops working, their connection goes.
    assert_eq!(
        as_user(
            &app,
            &admin1,
            reqwest::Method::DELETE,
            &format!("/api/tooljet/users/{u1_id}"),
            None
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        as_user(
            &app,
            &u1,
            reqwest::Method::GET,
            "/api/tooljet/connections",
            None
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        login(&app, "u1@example.test", "a-long-password-1")
            .await
            .status(),
        401
    );
    let r = app
        .get_granted(
            &format!("/api/internal/user/{u1_id}/credentials/notion"),
            &u1_grant,
        )
        .await;
    assert_eq!(r.status(), 404, "a grant does not outlive its user");
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_stored_through_the_route_is_fetched_unchanged_and_stored_as_ciphertext() {
    let app = TestApp::spawn(&[]).await;
    let admin = seed_client_login(&app).await;
    let me: Value = as_user(&app, &admin, reqwest::Method::GET, "/api/tooljet/me", None)
        .await
        .json()
        .await
        .unwrap();
    let key = "secret_AbC123-internal-integration-token";
    let r = as_user(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/tooljet/connections/notion/api-key",
        Some(json!({"apiKey": key, "accountIdentifier": "workspace-1"})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let refused = as_user(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/tooljet/connections/google/api-key",
        Some(json!({"apiKey": key})),
    )
    .await;
    assert_eq!(refused.status(), 400);

    // The user's standing grant, made through the route, lets n8n fetch it.
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let created: Value = as_user(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/tooljet/grants",
        Some(json!({"workflow": "notion sync", "services": ["notion"], "expiresAt": expires})),
    )
    .await
    .json()
    .await
    .unwrap();
    let fetched: Value = app
        .get_granted(
            &format!(
                "/api/internal/user/{}/credentials/notion",
                me["id"].as_str().unwrap()
            ),
            created["grant"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        fetched["credentials"],
        json!({"apiKey": key, "tokenType": "api_key"})
    );
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT encrypted_access_token, encrypted_refresh_token FROM otobot.client_connections",
            &[],
        )
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert!(!stored.contains(key) && stored.split(':').count() == 4 && stored.starts_with("1:"));
    assert!(row.get::<_, Option<String>>(1).is_none());
    let audited: i64 = app.db.client().await
        .query_one("SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'connection_created' AND source = 'tooljet'", &[])
        .await.unwrap().get(0);
    assert_eq!(audited, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_trigger_sends_the_verified_user_id_even_when_the_body_lies() {
    // A stand-in for n8n's webhook that records what it receives.
    type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let n8n = axum::Router::new().route(
        "/webhook/{path}",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let recorder = recorder.clone();
                async move {
                    let secret = headers
                        .get("x-webhook-secret")
                        .map(|v| v.to_str().unwrap().to_owned());
                    recorder.lock().unwrap().push((body, secret));
                    (
                        axum::http::StatusCode::ACCEPTED,
                        axum::Json(json!({"executionId": "42", "ok": true})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let n8n_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, n8n).await.unwrap() });

    let app = TestApp::spawn(&[
        ("N8N_WEBHOOK_URL", &n8n_url),
        ("N8N_WEBHOOK_SECRET", "webhook-secret-0123456789abcdef"),
    ])
    .await;
    let admin = seed_client_login(&app).await;
    let me: Value = as_user(&app, &admin, reqwest::Method::GET, "/api/tooljet/me", None)
        .await
        .json()
        .await
        .unwrap();
    let r = as_user(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/tooljet/workflows/sync-drive/trigger",
        Some(json!({"userId": USER_C, "clientId": CLIENT_2, "folder": "Reports"})),
    )
    .await;
    assert_eq!(r.status(), 202, "n8n's status is relayed");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"executionId": "42", "ok": true})
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (body, secret) = &seen[0];
    assert_eq!(
        body["userId"], me["id"],
        "the verified user, not the body's"
    );
    assert_eq!(body["clientId"], me["clientId"]);
    assert_eq!(body["folder"], "Reports");
    assert_eq!(secret.as_deref(), Some("webhook-secret-0123456789abcdef"));

    let bad = as_user(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/tooljet/workflows/..%2Fadmin/trigger",
        Some(json!({})),
    )
    .await;
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn n8n_reports_a_completed_run_and_the_user_sees_it() {
    let app = TestApp::spawn(&[]).await;
    let admin = seed_client_login(&app).await;
    let me: Value = as_user(&app, &admin, reqwest::Method::GET, "/api/tooljet/me", None)
        .await
        .json()
        .await
        .unwrap();
    let done = app
        .http
        .post(app.url("/api/webhooks/workflow-complete"))
        .header("x-internal-token", &app.token)
        .json(&json!({"userId": me["id"], "workflowId": "sync-drive", "status": "success", "results": {"files": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    let unauthenticated = app
        .http
        .post(app.url("/api/webhooks/workflow-complete"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let runs: Value = as_user(
        &app,
        &admin,
        reqwest::Method::GET,
        "/api/tooljet/workflows/runs",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(runs["runs"][0]["workflowId"], "sync-drive");
    assert_eq!(runs["runs"][0]["results"], json!({"files": 3}));
    app.stop().await;
}

#[tokio::test]
async fn cors_allows_the_frontend_origin_only_without_credentials() {
    let app = TestApp::spawn(&[]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                app.url("/api/tooljet/connections"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("http://portal.example.test:8082").await.unwrap();
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "http://portal.example.test:8082"
    );
    assert!(ok
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}
