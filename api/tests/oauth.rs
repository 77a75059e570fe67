//! OAuth2 against a real OAuth2/OpenID Connect server (oidc-provider, on
//! loopback): the browserless authorization flow, refresh on fetch, rotation,
//! revoked grants, forged/replayed/expired states, concurrent refreshers.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

const CLIENT_ID: &str = "otobot-test";
const CLIENT_SECRET: &str = "otobot-test-client-secret-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The oidc-provider process; killed when dropped.
struct IdP {
    url: String,
    child: Child,
}

impl IdP {
    fn start(
        redirect_uri: &str,
        access_ttl: u32,
        refresh_delay_ms: u32,
        pre_token_delay_ms: u32,
    ) -> Self {
        let port = free_port();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/oauth-server");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "run `npm ci` in tests/oauth-server (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", redirect_uri)
            .env("ACCESS_TTL", access_ttl.to_string())
            .env("REFRESH_DELAY_MS", refresh_delay_ms.to_string())
            .env("PRE_TOKEN_DELAY_MS", pre_token_delay_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ready"),
            "oidc-provider did not start: {line}"
        );
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// The catalogue entry that points Otobot at this server.
    fn catalogue(&self) -> String {
        format!(
            r#"[testidp]
display_name = "Test IdP"
auth_type = "oauth2"
accepts_api_key = false
authorization_url = "{u}/auth"
token_url = "{u}/token"
revoke_url = "{u}/token/revocation"
revoke_auth = "client_basic"
userinfo_url = "{u}/me"
default_scopes = ["openid", "email", "offline_access"]
extra_authorize_params = {{ prompt = "consent" }}
pkce = true
token_auth_method = "client_secret_basic"
account_identifier = {{ source = "userinfo", field = "email" }}
refresh_token_rotates = true
token_expires = true
docs = "https://github.com/panva/node-oidc-provider"
"#,
            u = self.url
        )
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/stats", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for IdP {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app and an IdP that know each other, plus a logged-in user of client 1.
struct Setup {
    idp: IdP,
    app: TestApp,
    token: String,
    user_id: String,
    _catalogue: tempfile_path::TempFile,
}

mod tempfile_path {
    /// A file removed when dropped.
    pub struct TempFile(pub std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn setup(access_ttl: u32, refresh_delay_ms: u32, extra: &[(&str, &str)]) -> Setup {
    setup_with(access_ttl, refresh_delay_ms, 0, extra).await
}

async fn setup_with(
    access_ttl: u32,
    refresh_delay_ms: u32,
    pre_token_delay_ms: u32,
    extra: &[(&str, &str)],
) -> Setup {
    let app_port = free_port();
    let public_url = format!("http://127.0.0.1:{app_port}");
    let idp = IdP::start(
        &format!("{public_url}/api/oauth/callback"),
        access_ttl,
        refresh_delay_ms,
        pre_token_delay_ms,
    );
    let path = std::env::temp_dir().join(format!(
        "otobot-providers-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, idp.catalogue()).unwrap();
    let port = app_port.to_string();
    let mut vars = vec![
        ("INTERNAL_API_PORT", port.as_str()),
        ("PUBLIC_URL", public_url.as_str()),
        ("OAUTH_PROVIDERS_FILE", path.to_str().unwrap()),
        ("TESTIDP_CLIENT_ID", CLIENT_ID),
        ("TESTIDP_CLIENT_SECRET", CLIENT_SECRET),
        ("REFRESHER_ENABLED", "false"),
        ("REFRESH_MARGIN_SECONDS", "1"),
    ];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn(&vars).await;
    let hash = otobot_api::password::hash("Client-One-Password").unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE otobot.clients SET password_hash = $1 WHERE id = $2::text::uuid",
            &[&hash, &CLIENT_1],
        )
        .await
        .unwrap();
    let login: Value = app
        .http
        .post(app.url("/api/tooljet/auth/login"))
        .json(&json!({"email": "one@example.test", "password": "Client-One-Password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["authToken"].as_str().unwrap().to_owned();
    let user_id = login["user"]["id"].as_str().unwrap().to_owned();
    Setup {
        idp,
        app,
        token,
        user_id,
        _catalogue: tempfile_path::TempFile(path),
    }
}

/// A browser: one cookie jar, no redirect following.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response, base: &str) -> String {
    let l = r
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect: {}", r.status()))
        .to_str()
        .unwrap();
    if l.starts_with("http") {
        l.to_owned()
    } else {
        format!("{base}{l}")
    }
}

/// authorize → login → consent → the callback URL the provider sends the browser to.
async fn authorize_at_idp(s: &Setup, login: &str) -> String {
    authorize_labelled(s, login, None).await
}

async fn authorize_labelled(s: &Setup, login: &str, label: Option<&str>) -> String {
    let r = s
        .app
        .http
        .post(s.app.url("/api/tooljet/connections/testidp/authorize"))
        .bearer_auth(&s.token)
        .json(&json!({ "label": label }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = r.json::<Value>().await.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    let browser = browser();
    let base = &s.idp.url;
    let r = browser.get(&url).send().await.unwrap();
    let interaction = location(&r, base);
    let r = browser
        .post(&interaction)
        .form(&[("prompt", "login"), ("login", login), ("password", "any")])
        .send()
        .await
        .unwrap();
    let r = browser.get(location(&r, base)).send().await.unwrap();
    let consent = location(&r, base);
    let r = browser
        .post(&consent)
        .form(&[("prompt", "consent")])
        .send()
        .await
        .unwrap();
    let r = browser.get(location(&r, base)).send().await.unwrap();
    let callback = location(&r, base);
    assert!(
        callback.contains("/api/oauth/callback?") && callback.contains("code="),
        "{callback}"
    );
    callback
}

async fn follow_callback(_s: &Setup, callback: &str) -> String {
    let r = browser().get(callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "the callback redirects to the frontend");
    location(&r, "")
}

async fn fetch(s: &Setup) -> reqwest::Response {
    s.app
        .get(&format!(
            "/api/internal/user/{}/credentials/testidp",
            s.user_id
        ))
        .await
}

async fn stored_tokens(s: &Setup) -> (String, Option<String>) {
    let db = s.app.db.client().await;
    db.execute(
        "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
        &[&s.app.key_hex],
    )
    .await
    .unwrap();
    let v: Value = db
        .query_one("SELECT otobot.reveal_credential(id, 'test: compare stored tokens') FROM otobot.client_connections WHERE is_active LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    (
        v["accessToken"].as_str().unwrap().to_owned(),
        v["refreshToken"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn the_whole_flow_stores_encrypted_tokens_that_the_internal_route_serves() {
    let s = setup(60, 0, &[]).await;
    let callback = authorize_at_idp(&s, "alice").await;
    let back = follow_callback(&s, &callback).await;
    assert!(
        back.starts_with("http://portal.example.test:8082")
            && back.contains("oauth=success")
            && back.contains("connectionId="),
        "{back}"
    );

    let r = fetch(&s).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["hasCredentials"], true);
    assert_eq!(b["metadata"]["accountIdentifier"], "alice@example.test");
    assert_eq!(b["metadata"]["tokenExpired"], false);
    let access = b["credentials"]["accessToken"].as_str().unwrap().to_owned();
    assert!(access.len() > 20);
    let row = s.app.db.client().await
        .query_one("SELECT encrypted_access_token, encrypted_refresh_token, scopes FROM otobot.client_connections", &[])
        .await
        .unwrap();
    let (enc_access, enc_refresh): (String, Option<String>) = (row.get(0), row.get(1));
    assert!(!enc_access.contains(&access) && enc_access.split(':').count() == 4);
    assert!(
        enc_refresh.is_some(),
        "offline_access with prompt=consent gives a refresh token"
    );
    let (_, refresh) = stored_tokens(&s).await;
    assert!(
        !b.to_string().contains(refresh.as_deref().unwrap()),
        "the refresh token never leaves"
    );

    // The same callback again is a replay: refused, nothing stored.
    let again = follow_callback(&s, &callback).await;
    assert!(
        again.contains("oauth=error") && again.contains("error=invalid_state"),
        "{again}"
    );
    // Reconnecting the same account updates the connection.
    let callback = authorize_at_idp(&s, "alice").await;
    assert!(follow_callback(&s, &callback)
        .await
        .contains("oauth=success"));
    let n: i64 = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.client_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "no duplicate for the same account");
    assert_eq!(s.idp.stats().await["authorization_code"], 2);
    s.app.stop().await;
}

#[tokio::test]
async fn forged_expired_and_denied_states_store_nothing() {
    let s = setup(60, 0, &[]).await;
    let forged = format!(
        "{}/api/oauth/callback?state=forged-state-value&code=abc",
        s.app.url("")
    );
    assert!(follow_callback(&s, &forged)
        .await
        .contains("error=invalid_state"));
    let missing = format!("{}/api/oauth/callback?code=abc", s.app.url(""));
    assert!(follow_callback(&s, &missing)
        .await
        .contains("error=invalid_state"));

    // An expired state.
    let callback = authorize_at_idp(&s, "bob").await;
    s.app
        .db
        .client()
        .await
        .execute(
            "UPDATE otobot.oauth_states SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert!(follow_callback(&s, &callback)
        .await
        .contains("error=state_expired"));

    // A provider error is shown, and the state is spent.
    let r = s
        .app
        .http
        .post(s.app.url("/api/tooljet/connections/testidp/authorize"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let url = r.json::<Value>().await.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = format!(
        "{}/api/oauth/callback?state={state}&error=access_denied",
        s.app.url("")
    );
    let back = follow_callback(&s, &denied).await;
    assert!(
        back.contains("error=provider_error") && back.contains("reason=access_denied"),
        "{back}"
    );

    let n: i64 = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.client_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing stored");
    // redirectAfter must stay on the frontend.
    let r = s
        .app
        .http
        .post(s.app.url("/api/tooljet/connections/testidp/authorize"))
        .bearer_auth(&s.token)
        .json(&json!({"redirectAfter": "https://evil.example/steal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_on_concurrent_fetches_and_the_rotated_refresh_token_is_kept(
) {
    let s = setup(2, 800, &[]).await;
    let callback = authorize_at_idp(&s, "carol").await;
    follow_callback(&s, &callback).await;
    let (access_1, refresh_1) = stored_tokens(&s).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (a, b) = tokio::join!(fetch(&s), fetch(&s));
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    for v in [&a, &b] {
        assert_eq!(v["hasCredentials"], true, "{v}");
        assert_eq!(
            v["metadata"]["tokenExpired"], false,
            "never a dead token handed out as valid"
        );
        assert_ne!(v["credentials"]["accessToken"], access_1.as_str());
    }
    assert_eq!(
        a["credentials"]["accessToken"],
        b["credentials"]["accessToken"]
    );
    assert_eq!(
        s.idp.stats().await["refresh_token"],
        1,
        "exactly one refresh at the server"
    );
    let (access_2, refresh_2) = stored_tokens(&s).await;
    assert_eq!(a["credentials"]["accessToken"], access_2.as_str());
    assert_ne!(refresh_2, refresh_1, "the rotated refresh token is stored");

    // Again: the stored (rotated) refresh token works, the old one was never reused.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let v: Value = fetch(&s).await.json().await.unwrap();
    assert_eq!(v["hasCredentials"], true, "{v}");
    assert_eq!(s.idp.stats().await["refresh_token"], 2);
    let refreshed: i64 = s
        .app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'tokens_refreshed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refreshed, 2, "each refresh is audited");
    s.app.stop().await;
}

#[tokio::test]
async fn a_revoked_grant_expires_the_connection_notifies_once_and_is_never_served_as_valid() {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorder = seen.clone();
    let hook = axum::Router::new().route(
        "/refresh-failed",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/refresh-failed", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    let s = setup(2, 0, &[("REFRESH_FAILURE_WEBHOOK_URL", &hook_url)]).await;
    let callback = authorize_at_idp(&s, "dave").await;
    follow_callback(&s, &callback).await;
    let (_, refresh) = stored_tokens(&s).await;
    // The user revokes the grant at the provider.
    let r = reqwest::Client::new()
        .post(format!("{}/token/revocation", s.idp.url))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("token", refresh.unwrap()),
            ("token_type_hint", "refresh_token".into()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let r = fetch(&s).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["code"].as_str(), v["hasCredentials"].as_bool()),
        (Some("connection_expired"), Some(false)),
        "{v}"
    );
    assert_eq!(v["metadata"]["tokenExpired"], true);
    assert!(v.get("credentials").is_none());
    let id = v["connectionId"].as_str().unwrap().to_owned();
    let status: Value = s
        .app
        .get(&format!("/api/internal/connection-status/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "expired");
    // A second fetch does not call the provider again.
    assert_eq!(fetch(&s).await.status(), 404);
    assert_eq!(s.idp.stats().await["refresh_token"], 1);

    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one webhook call");
    assert_eq!(calls[0]["connectionId"], id.as_str());
    assert_eq!(calls[0]["userId"], s.user_id.as_str());
    assert_eq!(calls[0]["service"], "testidp");
    assert_eq!(calls[0]["reason"], "invalid_grant");
    let audited: i64 = s
        .app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'refresh_failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    s.app.stop().await;
}

/// `otobot refresher --once` for this setup's database, IdP and keys.
fn refresher_command(s: &Setup, extra: &[(&str, &str)]) -> Command {
    let mut vars = base_vars(&s.app.db, &s.app.key_hex, &s.app.token);
    vars.insert(
        "OAUTH_PROVIDERS_FILE".into(),
        s._catalogue.0.to_str().unwrap().to_owned(),
    );
    vars.insert("TESTIDP_CLIENT_ID".into(), CLIENT_ID.into());
    vars.insert("TESTIDP_CLIENT_SECRET".into(), CLIENT_SECRET.into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_otobot"));
    command
        .args(["refresher", "--once"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .envs(&vars)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn a_refresher_killed_mid_refresh_loses_nothing_and_the_next_run_completes_it() {
    // The IdP holds every token request 3 s before processing it.
    let s = setup_with(2, 0, 3000, &[]).await;
    let callback = authorize_at_idp(&s, "erin").await;
    assert!(follow_callback(&s, &callback)
        .await
        .contains("oauth=success"));
    let (_, refresh_before) = stored_tokens(&s).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let mut first = refresher_command(&s, &[("REFRESH_LEASE_SECONDS", "8")])
        .spawn()
        .unwrap();
    let db = s.app.db.client().await;
    let started = std::time::Instant::now();
    loop {
        let leased: i64 = db
            .query_one("SELECT count(*) FROM otobot.refresh_leases", &[])
            .await
            .unwrap()
            .get(0);
        if leased == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the refresher never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().unwrap(); // SIGKILL, mid-refresh
    first.wait().unwrap();
    let (_, refresh_after_kill) = stored_tokens(&s).await;
    assert_eq!(
        refresh_after_kill, refresh_before,
        "nothing lost, nothing half-written"
    );

    // The lease expires; the next run completes the refresh.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let out = refresher_command(&s, &[("REFRESH_LEASE_SECONDS", "8")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, refresh_final) = stored_tokens(&s).await;
    assert_ne!(
        refresh_final, refresh_before,
        "refreshed, with the rotated refresh token stored"
    );
    let row = db
        .query_one(
            "SELECT status, last_refreshed_at IS NOT NULL FROM otobot.client_connections",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0).as_str(), row.get::<_, bool>(1)),
        ("active", true)
    );
    assert_eq!(
        s.idp.stats().await["refresh_token"],
        1,
        "the killed attempt never reached the provider's processing"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn two_refresher_processes_refresh_each_connection_exactly_once() {
    let s = setup(2, 300, &[]).await;
    // Five connections, each with its own refresh token.
    let mut connected = 0;
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        let callback = authorize_labelled(&s, name, Some(name)).await;
        if follow_callback(&s, &callback)
            .await
            .contains("oauth=success")
        {
            connected += 1;
        }
    }
    // The same user, five labelled accounts.
    let n: i64 = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.client_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((connected, n), (5, 5));
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let spawn = || refresher_command(&s, &[]).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        s.idp.stats().await["refresh_token"],
        5,
        "each connection refreshed exactly once"
    );
    let fresh: i64 = s.app.db.client().await
        .query_one("SELECT count(*) FROM otobot.client_connections WHERE last_refreshed_at IS NOT NULL AND status = 'active'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fresh, 5);
    s.app.stop().await;
}
