//! The portal's server side: its files and headers, browser sessions (cookie,
//! CSRF, logout, expiry, deactivation, replicas) and the access history,
//! against a real server and a real database. The pages themselves are
//! tested in a real browser by tests/portal/run.sh.

mod common;

use common::*;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

const PASSWORD: &str = "portal-password-0123";

/// Users A, B (client 1) and C (client 2) get `PASSWORD`; B becomes client 1's admin.
async fn with_passwords(app: &TestApp) {
    let hash = otobot_api::password::hash(PASSWORD).unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE otobot.users SET password_hash = $1, role = CASE WHEN email = 'b@example.test' THEN 'admin' ELSE 'user' END",
            &[&hash],
        )
        .await
        .unwrap();
}

/// A browser's session: its cookie (`name=value`) and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    body: Value,
}

async fn portal_login(app: &TestApp, email: &str) -> Session {
    let response = app
        .http
        .post(app.url("/api/portal/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "portal login of {email}");
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    Session {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        csrf: body["csrfToken"].as_str().unwrap().to_owned(),
        body,
    }
}

impl Session {
    fn request(
        &self,
        app: &TestApp,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        app.http
            .request(method, app.url(path))
            .header(header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf)
    }

    async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        self.request(app, reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
    }
}

/// A ToolJet bearer token.
async fn bearer(app: &TestApp, email: &str) -> String {
    let r = app
        .http
        .post(app.url("/api/tooljet/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bearer login of {email}");
    r.json::<Value>().await.unwrap()["authToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_portal_is_served_from_the_binary_with_strict_headers_and_the_root_leads_to_it() {
    let app = TestApp::spawn(&[]).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = plain.get(app.url("/")).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()[header::LOCATION], "/portal/");

    let index = app.http.get(app.url("/portal/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(index.text().await.unwrap().contains("js/app.js"));

    let js = app
        .http
        .get(app.url("/portal/js/app.js"))
        .send()
        .await
        .unwrap();
    assert!(js.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let etag = js.headers()[header::ETAG].clone();
    let again = app
        .http
        .get(app.url("/portal/js/app.js"))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    for missing in [
        "/portal/nothing.js",
        "/portal/../Cargo.toml",
        "/portal/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = app.http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_portal_login_sets_an_http_only_strict_cookie_and_gives_a_csrf_token_but_no_bearer_token()
{
    let app = TestApp::spawn(&[]).await;
    with_passwords(&app).await;
    let response = app
        .http
        .post(app.url("/api/portal/login"))
        .json(&json!({ "email": "a@example.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("otobot_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "PUBLIC_URL is http here");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["email"], "a@example.test");
    assert!(
        body.get("authToken").is_none(),
        "no token a script could read"
    );
    assert_eq!(body["csrfToken"].as_str().unwrap().len(), 43);

    // Over https the cookie is Secure and __Host- prefixed.
    let secure = TestApp::spawn(&[("PUBLIC_URL", "https://vault.example.test")]).await;
    with_passwords(&secure).await;
    let r = secure
        .http
        .post(secure.url("/api/portal/login"))
        .json(&json!({ "email": "a@example.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-otobot_session=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );

    // Wrong password: the ToolJet login's 401, and no cookie.
    let r = app
        .http
        .post(app.url("/api/portal/login"))
        .json(&json!({ "email": "a@example.test", "password": "wrong-password-123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let audit: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT action || ':' || source FROM otobot.credential_access_logs WHERE action LIKE 'login%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["login_succeeded:portal", "login_failed:portal"]);
    secure.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_session_cookie_needs_its_csrf_header_and_bearer_tokens_work_as_before() {
    let app = TestApp::spawn(&[]).await;
    with_passwords(&app).await;
    let a = portal_login(&app, "a@example.test").await;
    let me = |cookie: Option<&str>, csrf: Option<&str>| {
        let mut r = app.http.get(app.url("/api/tooljet/me"));
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let ok = me(Some(&a.cookie), Some(&a.csrf)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["email"], "a@example.test");
    // SECURITY: the cookie alone (what a forged cross-site request carries) is refused.
    let r = me(Some(&a.cookie), None).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("x-csrf-token"));
    // Another session's token does not fit.
    let a2 = portal_login(&app, "a@example.test").await;
    assert_eq!(
        me(Some(&a.cookie), Some(&a2.csrf)).await.unwrap().status(),
        403
    );
    // A forged cookie, or a bearer token put in the cookie, is nobody.
    let bearer = bearer(&app, "a@example.test").await;
    let forged = format!("otobot_session={bearer}");
    assert_eq!(
        me(Some(&forged), Some(&a.csrf)).await.unwrap().status(),
        401
    );
    assert_eq!(
        me(Some("otobot_session=abc.def.ghi"), Some(&a.csrf))
            .await
            .unwrap()
            .status(),
        401
    );
    // The session cookie is not a bearer token.
    let value = a.cookie.split_once('=').unwrap().1;
    let r = app
        .http
        .get(app.url("/api/tooljet/me"))
        .bearer_auth(value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // ToolJet's bearer token works unchanged, with no cookie or CSRF header.
    let r = app
        .http
        .get(app.url("/api/tooljet/connections"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A bearer header wins: a bad one is not rescued by a good cookie.
    let r = app
        .http
        .get(app.url("/api/tooljet/me"))
        .bearer_auth("not-a-token")
        .header(header::COOKIE, &a.cookie)
        .header("x-csrf-token", &a.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_on_every_replica_and_a_deactivated_user_loses_theirs_at_once() {
    let app = TestApp::spawn(&[]).await;
    with_passwords(&app).await;
    // A second replica: same database, keys and secrets.
    let vars = base_vars(&app.db, &app.key_hex, &app.token);
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
    let on_replica = |s: &Session| {
        app.http
            .get(format!("http://{replica_addr}/api/tooljet/me"))
            .header(header::COOKIE, &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .send()
    };

    let a = portal_login(&app, "a@example.test").await;
    assert_eq!(
        on_replica(&a).await.unwrap().status(),
        200,
        "sessions are shared"
    );
    // Logout without the CSRF header is refused (and ends nothing).
    let r = app
        .http
        .post(app.url("/api/portal/logout"))
        .header(header::COOKIE, &a.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(on_replica(&a).await.unwrap().status(), 200);
    let r = a
        .request(&app, reqwest::Method::POST, "/api/portal/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        on_replica(&a).await.unwrap().status(),
        401,
        "ended everywhere"
    );
    let r = a.get(&app, "/api/portal/session").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));

    // Admin B deactivates user A: A's other live session dies with the account.
    let a2 = portal_login(&app, "a@example.test").await;
    let b = portal_login(&app, "b@example.test").await;
    let r = b
        .request(
            &app,
            reqwest::Method::DELETE,
            &format!("/api/tooljet/users/{USER_A}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_replica(&a2).await.unwrap().status(), 401);
    let source: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT source FROM otobot.credential_access_logs WHERE action = 'user_deactivated'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        source, "portal",
        "what a portal user does is audited as the portal"
    );

    let _ = stop.send(());
    replica_task.await.unwrap().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_expired_or_idle_session_is_refused_and_the_page_can_recover_its_csrf_token() {
    let app = TestApp::spawn(&[("PORTAL_SESSION_IDLE_SECONDS", "600")]).await;
    with_passwords(&app).await;
    let a = portal_login(&app, "a@example.test").await;
    // A reloaded page gets its profile and CSRF token back from the cookie alone.
    let r = app
        .http
        .get(app.url("/api/portal/session"))
        .header(header::COOKIE, &a.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["csrfToken"], a.csrf.as_str());
    assert_eq!(body["user"]["id"], a.body["user"]["id"]);

    let db = app.db.client().await;
    for (sql, why) in [
        (
            "UPDATE otobot.portal_sessions SET last_seen_at = now() - interval '11 minutes'",
            "idle for longer than the idle timeout",
        ),
        (
            "UPDATE otobot.portal_sessions SET expires_at = now() WHERE ended_at IS NULL",
            "past its lifetime",
        ),
    ] {
        let a = portal_login(&app, "a@example.test").await;
        assert_eq!(a.get(&app, "/api/tooljet/me").await.status(), 200);
        db.execute(sql, &[]).await.unwrap();
        assert_eq!(a.get(&app, "/api/tooljet/me").await.status(), 401, "{why}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_access_history_shows_each_user_their_own_reads_only_an_admin_included() {
    let app = TestApp::spawn(&[]).await;
    with_passwords(&app).await;
    let db = app.db.client().await;
    store_oauth(
        &db,
        &app.key_hex,
        USER_A,
        "google",
        "at-a",
        "rt-a",
        Some("work"),
    )
    .await;
    store_oauth(&db, &app.key_hex, USER_C, "google", "at-c", "rt-c", None).await;
    let (grant_a, grant_c) = (
        app.grant(USER_A, &["google"]).await,
        app.grant(USER_C, &["google"]).await,
    );
    // A fetch without a grant is refused, and shows in the history as such.
    let refused = app
        .http
        .get(app.url(&format!("/api/internal/user/{USER_A}/credentials/google")))
        .header("x-internal-token", &app.token)
        .header("x-request-id", "refused-a")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    for (user, id, grant) in [
        (USER_A, "read-a-1", &grant_a),
        (USER_A, "read-a-2", &grant_a),
        (USER_C, "read-c-1", &grant_c),
    ] {
        let r = app
            .http
            .get(app.url(&format!("/api/internal/user/{user}/credentials/google")))
            .header("x-internal-token", &app.token)
            .header("x-otobot-grant", grant)
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let a = portal_login(&app, "a@example.test").await;
    let page = |session: &Session, query: &str| {
        let path = format!("/api/tooljet/access-history{query}");
        let request = session.request(&app, reqwest::Method::GET, &path);
        request.send()
    };
    let r = page(&a, "?limit=1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let first: Value = r.json().await.unwrap();
    let entry = &first["entries"][0];
    assert_eq!(
        (
            entry["action"].as_str(),
            entry["source"].as_str(),
            entry["requestId"].as_str(),
            entry["service"].as_str(),
            entry["label"].as_str()
        ),
        (
            Some("credential_read"),
            Some("n8n"),
            Some("read-a-2"),
            Some("google"),
            Some("work")
        )
    );
    // Each read names the grant that allowed it, its kind and its workflow.
    let grant_id = entry["grantId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(grant_id).is_ok(), "{entry}");
    assert_eq!(
        (
            entry["grantKind"].as_str(),
            entry["workflow"].as_str(),
            entry["trusted"].as_bool(),
            entry["refusal"].as_str()
        ),
        (Some("standing"), Some("tests"), Some(false), None),
        "{entry}"
    );
    let next = first["nextBefore"].as_i64().unwrap();
    let second: Value = page(&a, &format!("?limit=1&before={next}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["entries"][0]["requestId"], "read-a-1");
    assert_eq!(second["entries"][0]["grantId"], grant_id);
    let next = second["nextBefore"].as_i64().unwrap();
    let third: Value = page(&a, &format!("?limit=1&before={next}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refusal = &third["entries"][0];
    assert_eq!(
        (
            refusal["requestId"].as_str(),
            refusal["action"].as_str(),
            refusal["refusal"].as_str()
        ),
        (
            Some("refused-a"),
            Some("credential_refused"),
            Some("grant_required")
        ),
        "{refusal}"
    );
    assert!(refusal["grantId"].is_null() && refusal["workflow"].is_null());
    assert!(third["nextBefore"].is_null(), "{third}");
    let everything = page(&a, "?kind=all&limit=100")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(everything.contains("connection_created") && everything.contains("login_succeeded"));
    assert!(!everything.contains("read-c-1") && !everything.contains("at-a"));

    // The admin of client 1 sees their own history, not user A's.
    let b = portal_login(&app, "b@example.test").await;
    let admin = page(&b, "?kind=all&limit=100")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !admin.contains("read-a-") && !admin.contains(USER_A),
        "{admin}"
    );
    // The bearer token reads the same history.
    let bearer = bearer(&app, "c@example.test").await;
    let c: Value = app
        .http
        .get(app.url("/api/tooljet/access-history"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["entries"].as_array().unwrap().len(), 1);
    assert_eq!(c["entries"][0]["requestId"], "read-c-1");

    // Validated before the database.
    for (query, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?before=0", "invalid_before"),
        ("?before=x", "invalid_before"),
        ("?kind=secrets", "invalid_kind"),
        ("?service=nope", "unknown_service"),
        (
            "?userId=c0000000-0000-0000-0000-00000000000c",
            "invalid_query",
        ),
    ] {
        let r = page(&a, query).await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code, "{query}");
    }
    assert_eq!(
        app.http
            .get(app.url("/api/tooljet/access-history"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app.stop().await;
}
