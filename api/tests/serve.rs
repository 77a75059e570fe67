//! `otobot serve` end to end: a real server on port 0, a real PostgreSQL with
//! the extension, a fresh migrated database per test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// The body without its per-request id.
fn without_request_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("requestId");
    v
}

async fn audit_rows(
    app: &TestApp,
    action: &str,
) -> Vec<(String, Option<String>, Option<uuid::Uuid>)> {
    app.db
        .client()
        .await
        .query(
            "SELECT source, request_id, client_connection_id FROM otobot.credential_access_logs WHERE action = $1 ORDER BY id",
            &[&action],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_missing_empty_wrong_or_wrong_length_token_gets_the_same_401_body() {
    let app = TestApp::spawn(&[]).await;
    let path = app.url(&format!("/api/internal/user/{USER_A}/credentials/google"));
    let wrong_same_length: String = app.token.chars().rev().collect();
    let mut bodies = Vec::new();
    for token in [
        None,
        Some(""),
        Some(wrong_same_length.as_str()),
        Some("short"),
        Some(&*format!("{}x", app.token)),
    ] {
        let mut request = app.http.get(&path);
        if let Some(token) = token {
            request = request.header("x-internal-token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("x-request-id"));
        bodies.push(without_request_id(body(response).await));
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(
        bodies[0],
        json!({"error": "Invalid or missing internal token", "code": "unauthorized"})
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_input_is_refused_with_400_before_the_database_is_asked() {
    let app = TestApp::spawn(&[]).await;
    let long_service = "g".repeat(200);
    let long_label = "l".repeat(101);
    let cases = [
        (
            "/api/internal/user/not-a-uuid/credentials/google".to_string(),
            "invalid_user_id",
        ),
        (
            format!(
                "/api/internal/user/{}/credentials/google",
                USER_A.replace('-', "")
            ),
            "invalid_user_id",
        ),
        (
            format!("/api/internal/user/{USER_A}/credentials/nosuchservice"),
            "unknown_service",
        ),
        (
            format!("/api/internal/user/{USER_A}/credentials/{long_service}"),
            "unknown_service",
        ),
        (
            format!("/api/internal/user/{USER_A}/credentials/google?connectionId=42"),
            "invalid_connection_id",
        ),
        (
            format!("/api/internal/user/{USER_A}/credentials/google?label={long_label}"),
            "invalid_label",
        ),
        (
            format!("/api/internal/user/{USER_A}/credentials/google?label="),
            "invalid_label",
        ),
        (
            "/api/internal/user/x'%3B--/connections".to_string(),
            "invalid_user_id",
        ),
        (
            "/api/internal/connection-status/123".to_string(),
            "invalid_connection_id",
        ),
    ];
    for (path, code) in &cases {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let b = body(response).await;
        assert_eq!(b["code"], *code, "{path}: {b}");
        assert!(b["error"].as_str().unwrap().len() > 5 && b["requestId"].is_string());
    }
    // No audit row: the database was not asked.
    let n: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.credential_access_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_seed_happy_path_returns_the_exact_shape_and_one_audit_row_per_fetch() {
    let app = TestApp::spawn(&[]).await;
    let db = app.db.client().await;
    let id = store_oauth(
        &db,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.happy-path",
        "1//refresh-happy",
        None,
    )
    .await;
    let grant = app.grant(USER_A, &["google"]).await;

    for n in 1..=2 {
        let request_id = format!("req-happy-{n}");
        let response = app
            .http
            .get(app.url(&format!("/api/internal/user/{USER_A}/credentials/google")))
            .header("x-internal-token", &app.token)
            .header("x-otobot-grant", &grant)
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], request_id.as_str());
        // The tightest limit passed: per (caller, user), 1,200 a minute.
        assert_eq!(response.headers()["ratelimit-limit"], "1200");
        let b = body(response).await;
        assert_eq!(b["connectionId"], id.to_string());
        assert_eq!(b["service"], "google");
        assert_eq!(b["hasCredentials"], true);
        assert_eq!(
            b["credentials"],
            json!({"accessToken": "ya29.happy-path", "tokenType": "Bearer"})
        );
        assert_eq!(b["metadata"]["accountIdentifier"], "someone@example.test");
        assert_eq!(b["metadata"]["tokenExpired"], false);
        assert_eq!(b["metadata"]["scopes"], json!(["email"]));
        assert!(b["metadata"]["expiresAt"].is_string() && b["metadata"].get("label").is_some());
        assert!(
            !b.to_string().contains("refresh-happy"),
            "the refresh token never leaves"
        );
        let reads = audit_rows(&app, "credential_read").await;
        assert_eq!(reads.len(), n, "exactly one audit row per fetch");
        assert_eq!(reads[n - 1], ("n8n".to_owned(), Some(request_id), Some(id)));
    }
    // Pick by label and by connection id.
    let work = store_oauth(
        &db,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.work",
        "r",
        Some("work"),
    )
    .await;
    let b = body(
        app.get_granted(
            &format!("/api/internal/user/{USER_A}/credentials/google?label=work"),
            &grant,
        )
        .await,
    )
    .await;
    assert_eq!(b["credentials"]["accessToken"], "ya29.work");
    let b = body(
        app.get_granted(
            &format!("/api/internal/user/{USER_A}/credentials/google?connectionId={id}"),
            &grant,
        )
        .await,
    )
    .await;
    assert_eq!(b["credentials"]["accessToken"], "ya29.happy-path");
    let b = body(
        app.get_granted(
            &format!("/api/internal/user/{USER_A}/credentials/google?connectionId={work}"),
            &grant,
        )
        .await,
    )
    .await;
    assert_eq!(b["credentials"]["accessToken"], "ya29.work");
    // The sealer chains the reads in the background (once no older
    // transaction anywhere in the cluster is still running).
    db.execute(
        "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
        &[&app.key_hex],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let (ok, checked, problem) = loop {
        let row = db
            .query_one(
                "SELECT ok, checked, problem FROM otobot.verify_audit_chain()",
                &[],
            )
            .await
            .unwrap();
        let result: (bool, i64, Option<String>) = (row.get(0), row.get(1), row.get(2));
        if result.1 >= 6 || started.elapsed() > Duration::from_secs(20) {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ok, "{problem:?}");
    assert!(checked >= 6, "created rows and reads are sealed: {checked}");
    app.stop().await;
}

#[tokio::test]
async fn a_user_without_that_service_gets_404_with_has_credentials_false() {
    let app = TestApp::spawn(&[]).await;
    let grant = app.grant(USER_A, &["slack"]).await;
    let response = app
        .get_granted(
            &format!("/api/internal/user/{USER_A}/credentials/slack"),
            &grant,
        )
        .await;
    assert_eq!(response.status(), 404);
    let b = body(response).await;
    assert_eq!(
        without_request_id(b),
        json!({"error": "Connection not found", "code": "connection_not_found", "hasCredentials": false})
    );
    assert_eq!(audit_rows(&app, "credential_not_found").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn user_a_credential_cannot_be_fetched_with_user_b_id_even_in_the_same_client() {
    let app = TestApp::spawn(&[]).await;
    let id = store_oauth(
        &app.db.client().await,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.only-for-a",
        "r",
        None,
    )
    .await;
    // Each with their own valid grant: a grant does not widen what a user reaches.
    let (grant_b, grant_c) = (
        app.grant(USER_B, &["google"]).await,
        app.grant(USER_C, &["google"]).await,
    );
    for (path, grant) in [
        (
            format!("/api/internal/user/{USER_B}/credentials/google"),
            &grant_b,
        ),
        (
            format!("/api/internal/user/{USER_B}/credentials/google?connectionId={id}"),
            &grant_b,
        ),
        (
            format!("/api/internal/user/{USER_C}/credentials/google?connectionId={id}"),
            &grant_c,
        ),
    ] {
        let response = app.get_granted(&path, grant).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(!response.text().await.unwrap().contains("ya29.only-for-a"));
    }
    let b = body(
        app.get(&format!("/api/internal/user/{USER_B}/connections"))
            .await,
    )
    .await;
    assert_eq!(b["connections"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn connections_and_status_have_the_contract_shapes_and_no_secret() {
    let app = TestApp::spawn(&[]).await;
    let id = store_oauth(
        &app.db.client().await,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.list",
        "1//list",
        Some("main"),
    )
    .await;
    let response = app
        .get(&format!("/api/internal/user/{USER_A}/connections"))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("ya29.list") && !text.contains("1//list"));
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["userId"], USER_A);
    let c = &b["connections"][0];
    for field in [
        "id",
        "service_name",
        "label",
        "account_identifier",
        "status",
        "is_active",
        "token_expires_at",
        "created_at",
    ] {
        assert!(c.get(field).is_some(), "missing {field}: {c}");
    }
    assert_eq!(
        (
            c["service_name"].as_str(),
            c["label"].as_str(),
            c["status"].as_str()
        ),
        (Some("google"), Some("main"), Some("active"))
    );

    let b = body(
        app.get(&format!("/api/internal/connection-status/{id}"))
            .await,
    )
    .await;
    assert_eq!(
        (
            b["id"].as_str(),
            b["service_name"].as_str(),
            b["status"].as_str()
        ),
        (Some(&*id.to_string()), Some("google"), Some("valid"))
    );
    assert!(b["expiresAt"].is_string());
    let response = app
        .get(&format!(
            "/api/internal/connection-status/{}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(body(response).await["code"], "connection_not_found");
    app.stop().await;
}

#[tokio::test]
async fn a_caller_over_its_limit_gets_429_with_headers_and_another_caller_does_not() {
    let other = random_hex32();
    let app = TestApp::spawn(&[
        ("RATE_LIMIT_CALLER_PER_MINUTE", "3"),
        // A trusted caller (the seed's behaviour): no grant needed.
        ("INTERNAL_TOKENS", &format!("tooljet:{other}:trusted")),
    ])
    .await;
    let path = format!("/api/internal/user/{USER_A}/connections");
    for remaining in ["2", "1", "0"] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
    }
    let response = app.get(&path).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["ratelimit-limit"], "3");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert!(response.headers().contains_key("ratelimit-reset"));
    assert_eq!(body(response).await["code"], "rate_limited");

    // Another caller is not limited by n8n's burst, and is named in the audit log.
    store_oauth(
        &app.db.client().await,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.other",
        "r",
        None,
    )
    .await;
    let response = app
        .http
        .get(app.url(&format!("/api/internal/user/{USER_A}/credentials/google")))
        .header("x-internal-token", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(audit_rows(&app, "credential_read").await[0].0, "tooljet");
    app.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi_describe_the_service() {
    let metrics_token = random_hex32();
    let app = TestApp::spawn(&[("METRICS_TOKEN", &metrics_token)]).await;
    let b = body(app.http.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(
        (
            b["status"].as_str(),
            b["service"].as_str(),
            b["keyring"].as_str()
        ),
        (Some("ok"), Some("otobot-internal-api"), Some("ok"))
    );

    store_oauth(
        &app.db.client().await,
        &app.key_hex,
        USER_A,
        "google",
        "ya29.m",
        "r",
        None,
    )
    .await;
    let grant = app.grant(USER_A, &["google"]).await;
    app.get_granted(
        &format!("/api/internal/user/{USER_A}/credentials/google"),
        &grant,
    )
    .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(&metrics_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"otobot_credential_reads_total{caller="n8n",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"route="/api/internal/user/{user_id}/credentials/{service_name}",status="200""#
    ));
    assert!(metrics.contains("otobot_db_pool_connections"));

    let doc = body(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
    for path in [
        "/health",
        "/metrics",
        "/openapi.json",
        "/api/internal/user/{userId}/credentials/{serviceName}",
        "/api/internal/user/{userId}/connections",
        "/api/internal/connection-status/{connectionId}",
        "/api/tooljet/grants",
        "/api/tooljet/grants/{id}",
        "/api/tooljet/workflows/{path}/trigger",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from /openapi.json"
        );
    }
    let credentials = &doc["paths"]["/api/internal/user/{userId}/credentials/{serviceName}"]["get"];
    for status in ["200", "400", "401", "403", "404", "429", "500", "503"] {
        assert!(credentials["responses"].get(status).is_some(), "{status}");
    }
    assert!(credentials["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "x-otobot-grant" && p["in"] == "header"));
    for method in ["get", "post"] {
        assert!(
            doc["paths"]["/api/tooljet/grants"][method].is_object(),
            "{method}"
        );
    }
    assert!(doc["paths"]["/api/tooljet/grants/{id}"]["delete"].is_object());
    assert!(doc["components"]["securitySchemes"]["internal_token"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["GrantRefusedBody"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn a_database_outage_gives_503_within_the_timeout_and_health_recovers() {
    let db = TestDb::migrated().await;
    seed_users(&db.client().await).await;
    let target = {
        let url = url::Url::parse(&db.url).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
    };
    let relay = Relay::start(&target).await;
    let api_url = db.api_url(Some(relay.port));
    let app = TestApp::spawn_on(
        db,
        &[("DATABASE_URL", &api_url), ("DATABASE_TIMEOUT_MS", "1000")],
    )
    .await;
    assert_eq!(
        app.http
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    relay.cut();
    for path in [
        "/health".to_owned(),
        format!("/api/internal/user/{USER_A}/credentials/google"),
    ] {
        let started = Instant::now();
        let response = app.get(&path).await;
        assert_eq!(response.status(), 503, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
        assert_eq!(body(response).await["code"], "service_unavailable");
    }
    app.stop().await;
}
