//! Grants through the real server: the trigger's run grant, standing grants
//! and their routes, the internal route's 403s, caller modes. A real
//! PostgreSQL with the extension, a real `otobot serve` on port 0, and a real
//! HTTP listener playing n8n's webhook.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

const ADMIN_1: &str = "d0000000-0000-0000-0000-00000000000d";
const ADMIN_2: &str = "e0000000-0000-0000-0000-00000000000e";

/// n8n's webhook, played by a local listener: records every body, answers `{"ok":true}`.
async fn fake_n8n() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let hook = axum::Router::new().route(
        "/webhook/{path}",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    (url, seen)
}

/// The app with users A, B (client 1), C (client 2), admins D (client 1) and
/// E (client 2), and Google connections for A, B and C.
async fn app(extra: &[(&str, &str)]) -> TestApp {
    let app = TestApp::spawn(extra).await;
    let db = app.db.client().await;
    db.batch_execute(&format!(
        "INSERT INTO otobot.users (id, client_id, email, role) VALUES
            ('{ADMIN_1}', '{CLIENT_1}', 'd@example.test', 'admin'),
            ('{ADMIN_2}', '{CLIENT_2}', 'e@example.test', 'admin');"
    ))
    .await
    .unwrap();
    for (user, token) in [
        (USER_A, "ya29.secret-of-a"),
        (USER_B, "ya29.secret-of-b"),
        (USER_C, "ya29.secret-of-c"),
    ] {
        store_oauth(&db, &app.key_hex, user, "google", token, "1//r", None).await;
    }
    app
}

/// A user token signed by the server's own key, as its login route issues one.
fn bearer(app: &TestApp, user: &str) -> String {
    let (client, role) = match user {
        USER_C => (CLIENT_2, "user"),
        ADMIN_1 => (CLIENT_1, "admin"),
        ADMIN_2 => (CLIENT_2, "admin"),
        _ => (CLIENT_1, "user"),
    };
    let api = app.state.user_api.as_ref().unwrap();
    api.jwt
        .issue(
            uuid::Uuid::parse_str(user).unwrap(),
            uuid::Uuid::parse_str(client).unwrap(),
            role,
        )
        .0
}

async fn as_user(
    app: &TestApp,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = app
        .http
        .request(method, app.url(path))
        .bearer_auth(bearer(app, user));
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.unwrap()
}

async fn fetch(app: &TestApp, user: &str, service: &str, grant: Option<&str>) -> reqwest::Response {
    let mut r = app
        .http
        .get(app.url(&format!("/api/internal/user/{user}/credentials/{service}")))
        .header("x-internal-token", &app.token);
    if let Some(grant) = grant {
        r = r.header("x-otobot-grant", grant);
    }
    r.send().await.unwrap()
}

async fn new_grant(app: &TestApp, user: &str, workflow: &str, services: &[&str]) -> Value {
    let expires = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let r = as_user(
        app,
        user,
        reqwest::Method::POST,
        "/api/tooljet/grants",
        Some(json!({"workflow": workflow, "services": services, "expiresAt": expires})),
    )
    .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn last_audit(app: &TestApp) -> (String, Option<uuid::Uuid>, Value) {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT action, user_id, detail FROM otobot.credential_access_logs ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn the_trigger_grant_is_bound_to_the_verified_user_whatever_the_body_says() {
    let (n8n, seen) = fake_n8n().await;
    let app = app(&[("N8N_WEBHOOK_URL", &n8n), ("RUN_GRANT_TTL_SECONDS", "120")]).await;
    let forged = "otg_forged-by-the-caller-0000000000000000000000";
    let r = as_user(
        &app,
        USER_A,
        reqwest::Method::POST,
        "/api/tooljet/workflows/drive-sync/trigger",
        Some(json!({"userId": USER_B, "clientId": CLIENT_2, "otobotGrant": forged, "folder": "x"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ok": true}));
    let body = seen.lock().unwrap().pop().expect("n8n was called");
    assert_eq!(body["userId"], USER_A, "the verified user, not the body's");
    assert_eq!(body["clientId"], CLIENT_1);
    assert_eq!(body["folder"], "x", "the caller's parameters pass");
    let grant = body["otobotGrant"].as_str().unwrap().to_owned();
    assert!(
        grant.starts_with("otg_") && grant.len() == 47 && grant != forged,
        "{grant}"
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["otobotGrantExpiresAt"].as_str().unwrap())
            .unwrap()
            .signed_duration_since(chrono::Utc::now())
            .num_seconds();
    assert!(
        (100..=120).contains(&expires),
        "RUN_GRANT_TTL_SECONDS: {expires}"
    );

    // The grant reads A's secret, and only A's.
    let r = fetch(&app, USER_A, "google", Some(&grant)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["credentials"]["accessToken"],
        "ya29.secret-of-a"
    );
    let (action, user, detail) = last_audit(&app).await;
    assert_eq!(
        (action.as_str(), user.unwrap().to_string()),
        ("credential_read", USER_A.to_owned())
    );
    assert_eq!(
        (detail["grant_kind"].as_str(), detail["workflow"].as_str()),
        (Some("run"), Some("drive-sync"))
    );
    for user in [USER_B, USER_C] {
        let r = fetch(&app, user, "google", Some(&grant)).await;
        assert_eq!(r.status(), 403, "{user}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(
            (b["code"].as_str(), b["reason"].as_str()),
            (Some("grant_invalid"), Some("other_user"))
        );
        assert!(!b.to_string().contains("secret-of"));
    }
    // The forged value from the body is no grant at all.
    let r = fetch(&app, USER_A, "google", Some(forged)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "unknown");

    // ?services= narrows the run grant.
    let r = as_user(
        &app,
        USER_A,
        reqwest::Method::POST,
        "/api/tooljet/workflows/notify/trigger?services=slack",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let narrow = seen.lock().unwrap().pop().unwrap()["otobotGrant"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = fetch(&app, USER_A, "google", Some(&narrow)).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "service_not_covered"
    );
    let r = as_user(
        &app,
        USER_A,
        reqwest::Method::POST,
        "/api/tooljet/workflows/notify/trigger?services=nope",
        None,
    )
    .await;
    assert_eq!(r.status(), 400);

    // A deactivated user's trigger mints nothing.
    app.db
        .client()
        .await
        .execute(
            &format!("UPDATE otobot.users SET is_active = false WHERE id = '{USER_B}'"),
            &[],
        )
        .await
        .unwrap();
    let r = as_user(
        &app,
        USER_B,
        reqwest::Method::POST,
        "/api/tooljet/workflows/x/trigger",
        None,
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(seen.lock().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn grants_are_shown_once_and_stored_hashed() {
    let app = app(&[]).await;
    let created = new_grant(&app, USER_A, "nightly report", &["google"]).await;
    let token = created["grant"].as_str().unwrap().to_owned();
    assert!(token.starts_with("otg_") && token.len() == 47);
    assert_eq!(
        (
            created["kind"].as_str(),
            created["workflow"].as_str(),
            created["status"].as_str()
        ),
        (Some("standing"), Some("nightly report"), Some("active"))
    );
    assert_eq!(created["services"], json!(["google"]));

    let listed = as_user(
        &app,
        USER_A,
        reqwest::Method::GET,
        "/api/tooljet/grants",
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        listed.contains("nightly report") && !listed.contains(&token),
        "{listed}"
    );

    let r = fetch(&app, USER_A, "google", Some(&token)).await;
    assert_eq!(r.status(), 200);

    // The database holds the SHA-256 and nothing else of it: not in the
    // grants table, not in the audit log.
    let db = app.db.client().await;
    let hash = otobot_api::grants::hash(token.as_bytes()).to_vec();
    let rows: Vec<String> = db
        .query(
            "SELECT row_to_json(g)::text FROM otobot.grants g WHERE token_hash = $1",
            &[&hash],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows.len(), 1);
    let everything: String = db
        .query_one(
            "SELECT (SELECT string_agg(row_to_json(g)::text, '') FROM otobot.grants g)
                 || (SELECT string_agg(row_to_json(l)::text, '') FROM otobot.credential_access_logs l)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!everything.contains(&token) && !everything.contains(&token[4..]));
    app.stop().await;
}

#[tokio::test]
async fn listing_and_revoking_obey_client_boundaries() {
    let app = app(&[]).await;
    let a = new_grant(&app, USER_A, "a report", &["google"]).await;
    let c = new_grant(&app, USER_C, "c report", &["google"]).await;
    let (a_id, c_id) = (a["id"].as_str().unwrap(), c["id"].as_str().unwrap());
    let list = |user: &'static str, query: &'static str| {
        let app = &app;
        async move {
            let r = as_user(
                app,
                user,
                reqwest::Method::GET,
                &format!("/api/tooljet/grants{query}"),
                None,
            )
            .await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            let workflows: Vec<String> = v["grants"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .map(|g| g["workflow"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (status, workflows)
        }
    };
    assert_eq!(list(USER_A, "").await, (200, vec!["a report".to_owned()]));
    assert_eq!(list(USER_B, "").await, (200, vec![]), "B sees none of A's");
    assert_eq!(
        list(USER_B, "?scope=client").await.0,
        403,
        "a user may not list the client's"
    );
    assert_eq!(
        list(ADMIN_1, "?scope=client").await,
        (200, vec!["a report".to_owned()])
    );
    assert_eq!(
        list(ADMIN_2, "?scope=client").await,
        (200, vec!["c report".to_owned()])
    );
    assert_eq!(list(ADMIN_1, "?scope=all").await.0, 400);

    // Revoking: not B (same client), not client 2's admin; client 1's admin may.
    let revoke = |user: &'static str, id: String| {
        let app = &app;
        async move {
            as_user(
                app,
                user,
                reqwest::Method::DELETE,
                &format!("/api/tooljet/grants/{id}"),
                None,
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(revoke(USER_B, a_id.to_owned()).await, 404);
    assert_eq!(revoke(ADMIN_2, a_id.to_owned()).await, 404);
    assert_eq!(revoke(ADMIN_1, c_id.to_owned()).await, 404);
    assert_eq!(revoke(USER_A, "not-a-uuid".to_owned()).await, 400);
    let token = a["grant"].as_str().unwrap();
    assert_eq!(
        fetch(&app, USER_A, "google", Some(token)).await.status(),
        200
    );
    assert_eq!(revoke(ADMIN_1, a_id.to_owned()).await, 200);
    assert_eq!(
        revoke(ADMIN_1, a_id.to_owned()).await,
        404,
        "already revoked"
    );
    let r = fetch(&app, USER_A, "google", Some(token)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "revoked");
    let (action, _, detail) = last_audit(&app).await;
    assert_eq!(
        (action.as_str(), detail["reason"].as_str()),
        ("credential_refused", Some("revoked"))
    );
    // C's grant is untouched, and C revokes it themselves.
    assert_eq!(
        fetch(&app, USER_C, "google", c["grant"].as_str())
            .await
            .status(),
        200
    );
    assert_eq!(revoke(USER_C, c_id.to_owned()).await, 200);

    // An admin cannot create a grant in someone else's name: the body has no such field.
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let r = as_user(
        &app,
        ADMIN_1,
        reqwest::Method::POST,
        "/api/tooljet/grants",
        Some(json!({"workflow": "w", "services": ["google"], "expiresAt": expires, "userId": USER_A})),
    )
    .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_standing_grant_is_for_known_services_and_at_most_a_year() {
    let app = app(&[]).await;
    let post = |body: Value| {
        let app = &app;
        async move {
            let r = as_user(
                app,
                USER_A,
                reqwest::Method::POST,
                "/api/tooljet/grants",
                Some(body),
            )
            .await;
            let status = r.status().as_u16();
            (
                status,
                r.json::<Value>().await.unwrap()["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        }
    };
    let at = |days: i64| (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339();
    assert_eq!(
        post(json!({"workflow": "w", "services": ["google"], "expiresAt": at(366)})).await,
        (400, "invalid_expiry".into())
    );
    assert_eq!(
        post(json!({"workflow": "w", "services": ["google"], "expiresAt": at(-1)})).await,
        (400, "invalid_expiry".into())
    );
    assert_eq!(
        post(json!({"workflow": "w", "services": ["nope"], "expiresAt": at(1)})).await,
        (400, "invalid_services".into())
    );
    assert_eq!(
        post(json!({"workflow": "w", "services": [], "expiresAt": at(1)})).await,
        (400, "invalid_services".into())
    );
    assert_eq!(
        post(json!({"workflow": " ", "services": ["google"], "expiresAt": at(1)})).await,
        (400, "invalid_workflow".into())
    );
    assert_eq!(
        post(json!({"workflow": "w", "services": ["google"]})).await,
        (400, "invalid_body".into())
    );
    assert_eq!(
        post(json!({"workflow": "w", "services": ["google"], "expiresAt": at(365)}))
            .await
            .0,
        201
    );
    let r = app
        .http
        .post(app.url("/api/tooljet/grants"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no user token");
    app.stop().await;
}

#[tokio::test]
async fn fetches_without_a_valid_grant_get_403_codes_that_say_what_to_do() {
    let app = app(&[]).await;
    let r = fetch(&app, USER_A, "google", None).await;
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["code"].as_str(), b["hasCredentials"].as_bool()),
        (Some("grant_required"), Some(false))
    );
    let message = b["error"].as_str().unwrap();
    assert!(
        message.contains("x-otobot-grant") && message.contains("otobotGrant"),
        "{message}"
    );
    assert_eq!(last_audit(&app).await.0, "credential_refused");

    let a = new_grant(&app, USER_A, "w", &["google"]).await;
    let token = a["grant"].as_str().unwrap();
    // Expired: the database's time runs out (an administrator shortens it).
    app.db
        .client()
        .await
        .execute(
            "UPDATE otobot.grants SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
            &[&otobot_api::grants::hash(token.as_bytes()).to_vec()],
        )
        .await
        .unwrap();
    for (grant, service, reason, hint) in [
        (token, "google", "expired", "trigger the workflow again"),
        ("otg_nothing", "google", "unknown", "unchanged"),
        ("", "google", "", "x-otobot-grant"),
    ] {
        let r = fetch(&app, USER_A, service, Some(grant)).await;
        assert_eq!(r.status(), 403, "{reason}");
        let b: Value = r.json().await.unwrap();
        if reason.is_empty() {
            assert_eq!(b["code"], "grant_required", "an empty header is no grant");
        } else {
            assert_eq!(
                (b["code"].as_str(), b["reason"].as_str()),
                (Some("grant_invalid"), Some(reason))
            );
        }
        assert!(b["error"].as_str().unwrap().contains(hint), "{b}");
        assert!(b["requestId"].is_string());
    }
    assert!(app
        .metric(r#"otobot_credential_reads_total{caller="n8n",outcome="grant_invalid"}"#)
        .is_some_and(|n| n >= 2.0));

    // Metadata routes need no grant (no secret): seed workflow 3 keeps working.
    let r = app
        .get(&format!("/api/internal/user/{USER_A}/connections"))
        .await;
    assert_eq!(r.status(), 200);
    let connection = r.json::<Value>().await.unwrap()["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(&format!("/api/internal/connection-status/{connection}"))
            .await
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn a_trusted_caller_reads_without_a_grant_and_a_grant_mode_caller_does_not() {
    let cron = random_hex32();
    let app = app(&[
        ("N8N_INTERNAL_TOKEN_MODE", "trusted"),
        ("INTERNAL_TOKENS", &format!("cron:{cron}")),
    ])
    .await;
    let r = fetch(&app, USER_B, "google", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["credentials"]["accessToken"],
        "ya29.secret-of-b"
    );
    let (action, _, detail) = last_audit(&app).await;
    assert_eq!(
        (action.as_str(), detail),
        ("credential_read", json!({"trusted": true}))
    );
    // A trusted caller that presents a grant has it checked.
    let r = fetch(&app, USER_B, "google", Some("otg_stale")).await;
    assert_eq!(r.status(), 403);

    let r = app
        .http
        .get(app.url(&format!("/api/internal/user/{USER_B}/credentials/google")))
        .header("x-internal-token", &cron)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cron is in grant mode (the default)");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "grant_required");
    app.stop().await;
}
