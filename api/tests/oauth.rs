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

    /// Flips the outage switches of `server.mjs` (`token=ok|fail|hang`,
    /// `hugeExpiresFor=<login>`).
    async fn control(&self, query: &str) {
        let r = reqwest::get(format!("{}/control?{query}", self.url))
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// A counter of `/stats` (0 when absent).
    async fn count(&self, key: &str) -> i64 {
        self.stats().await[key].as_i64().unwrap_or(0)
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
    /// The user's standing grant for testidp, which every fetch presents.
    grant: String,
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
    let public_url = extra
        .iter()
        .find(|(k, _)| *k == "PUBLIC_URL")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| format!("http://127.0.0.1:{app_port}"));
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
    set_client_password(&app.db.client().await, CLIENT_1, "Client-One-Password").await;
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
    let grant = app.grant(&user_id, &["testidp"]).await;
    Setup {
        idp,
        app,
        token,
        user_id,
        grant,
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

/// The callback URL a provider sent a browser to, and that browser (its
/// cookie jar holds the Otobot browser-binding cookie).
struct Callback {
    url: String,
    browser: reqwest::Client,
}

impl Callback {
    /// The same URL, followed by a browser that did not start the flow.
    fn elsewhere(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            browser: browser(),
        }
    }
}

/// `POST …/authorize` as the logged-in user: the Otobot start URL.
async fn start_url(s: &Setup, label: Option<&str>) -> String {
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
        url.starts_with(&s.app.url("/api/oauth/start/")),
        "authorizationUrl is Otobot's start URL: {url}"
    );
    url
}

/// A browser opens a start URL: the provider's authorization URL.
async fn open_start(browser: &reqwest::Client, start: &str) -> String {
    let r = browser.get(start).send().await.unwrap();
    assert_eq!(r.status(), 303, "the start URL redirects to the provider");
    let url = location(&r, "");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    url
}

/// At the provider: login → consent → the callback URL.
async fn login_at_idp(
    s: &Setup,
    browser: &reqwest::Client,
    provider_url: &str,
    login: &str,
) -> String {
    let base = &s.idp.url;
    let r = browser.get(provider_url).send().await.unwrap();
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

/// authorize → start URL → login → consent, all in one browser.
async fn authorize_at_idp(s: &Setup, login: &str) -> Callback {
    authorize_labelled(s, login, None).await
}

async fn authorize_labelled(s: &Setup, login: &str, label: Option<&str>) -> Callback {
    let start = start_url(s, label).await;
    let browser = browser();
    let provider_url = open_start(&browser, &start).await;
    let url = login_at_idp(s, &browser, &provider_url, login).await;
    Callback { url, browser }
}

async fn follow_callback(_s: &Setup, callback: &Callback) -> String {
    let r = callback.browser.get(&callback.url).send().await.unwrap();
    assert_eq!(r.status(), 303, "the callback redirects to the frontend");
    location(&r, "")
}

async fn connections(s: &Setup) -> i64 {
    s.app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.client_connections", &[])
        .await
        .unwrap()
        .get(0)
}

async fn audited(s: &Setup, action: &str) -> i64 {
    s.app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM otobot.credential_access_logs WHERE action = $1",
            &[&action],
        )
        .await
        .unwrap()
        .get(0)
}

async fn fetch(s: &Setup) -> reqwest::Response {
    s.app
        .get_granted(
            &format!("/api/internal/user/{}/credentials/testidp", s.user_id),
            &s.grant,
        )
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
    assert!(follow_callback(&s, &Callback::elsewhere(forged))
        .await
        .contains("error=invalid_state"));
    let missing = format!("{}/api/oauth/callback?code=abc", s.app.url(""));
    assert!(follow_callback(&s, &Callback::elsewhere(missing))
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
    let start = start_url(&s, None).await;
    let browser = browser();
    let url = open_start(&browser, &start).await;
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
    let back = follow_callback(
        &s,
        &Callback {
            url: denied,
            browser,
        },
    )
    .await;
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

// ---------------------------------------------------------------------------
// Issue 10, item 7: the authorization is bound to the browser that started it.
// ---------------------------------------------------------------------------

/// The `Set-Cookie` of a response, as one string.
fn set_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_callback_without_the_starting_browsers_cookie_stores_nothing() {
    let s = setup(60, 0, &[]).await;
    // The attacker's flow: they open the start URL and log in at the
    // provider, then the provider's answer reaches another browser (the
    // victim's, which never opened the start URL).
    let callback = authorize_at_idp(&s, "victim").await;
    let back = follow_callback(&s, &Callback::elsewhere(callback.url.clone())).await;
    assert!(
        back.contains("oauth=error") && back.contains("error=browser_cookie_missing"),
        "{back}"
    );
    assert!(
        back.starts_with("http://portal.example.test:8082"),
        "{back}"
    );
    assert_eq!(connections(&s).await, 0, "nothing stored");
    assert_eq!(
        audited(&s, "oauth_rejected").await,
        1,
        "the rejection is audited"
    );
    assert_eq!(
        s.idp.count("authorization_code").await,
        0,
        "the code was never exchanged"
    );
    // The state is spent: even the starting browser cannot use it now.
    assert!(follow_callback(&s, &callback)
        .await
        .contains("error=invalid_state"));
    assert_eq!(connections(&s).await, 0);
    s.app.stop().await;
}

#[tokio::test]
async fn the_callback_with_another_browsers_cookie_stores_nothing() {
    let s = setup(60, 0, &[]).await;
    // The attacker starts a flow and stops at the provider's URL.
    let attacker = browser();
    let attacker_start = start_url(&s, Some("injected")).await;
    let attacker_provider_url = open_start(&attacker, &attacker_start).await;
    // The victim's browser holds its own Otobot cookie (its own flow).
    let victim = browser();
    let own_start = start_url(&s, None).await;
    open_start(&victim, &own_start).await;
    // The victim follows the attacker's provider URL and logs in.
    let url = login_at_idp(&s, &victim, &attacker_provider_url, "victim").await;
    let back = follow_callback(
        &s,
        &Callback {
            url,
            browser: victim,
        },
    )
    .await;
    assert!(
        back.contains("oauth=error") && back.contains("error=browser_mismatch"),
        "{back}"
    );
    assert_eq!(
        connections(&s).await,
        0,
        "the victim's account is not stored"
    );
    assert_eq!(s.idp.count("authorization_code").await, 0);
    assert_eq!(audited(&s, "oauth_rejected").await, 1);
    s.app.stop().await;
}

#[tokio::test]
async fn a_start_url_is_single_use_and_expires() {
    let s = setup(60, 0, &[]).await;
    let start = start_url(&s, None).await;
    let first = browser();
    let r = first.get(&start).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r);
    assert!(
        cookie.starts_with("otobot_oauth=")
            && cookie.contains("; Path=/")
            && cookie.contains("; HttpOnly")
            && cookie.contains("; SameSite=Lax")
            && !cookie.to_ascii_lowercase().contains("domain="),
        "plain http PUBLIC_URL: the cookie without __Host- and Secure: {cookie}"
    );
    assert_eq!(
        r.headers().get("cache-control").unwrap().to_str().unwrap(),
        "no-store"
    );
    // Opened once: another browser (or the same) gets nothing from it.
    for b in [browser(), first] {
        let r = b.get(&start).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert!(set_cookie(&r).is_empty(), "no cookie for a spent start URL");
        let back = location(&r, "");
        assert!(
            back.starts_with("http://portal.example.test:8082")
                && back.contains("error=invalid_start"),
            "{back}"
        );
    }
    // A start URL expires.
    let start = start_url(&s, None).await;
    s.app
        .db
        .client()
        .await
        .execute(
            "UPDATE otobot.oauth_starts SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let r = browser().get(&start).send().await.unwrap();
    assert!(location(&r, "").contains("error=start_expired"));
    assert!(set_cookie(&r).is_empty());
    // Malformed tokens never reach the database.
    let r = browser()
        .get(s.app.url("/api/oauth/start/not-a-token"))
        .send()
        .await
        .unwrap();
    assert!(location(&r, "").contains("error=invalid_start"));
    let pending: i64 = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM otobot.oauth_states", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1, "only the one start opened made a state");
    s.app.stop().await;
}

#[tokio::test]
async fn with_an_https_public_url_the_cookie_is_host_prefixed_and_secure_and_the_flow_completes() {
    let public = "https://vault.example.test";
    let s = setup(60, 0, &[("PUBLIC_URL", public)]).await;
    let r = s
        .app
        .http
        .post(s.app.url("/api/tooljet/connections/testidp/authorize"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let start = r.json::<Value>().await.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    // The browser reaches PUBLIC_URL; here, the same server over loopback.
    let path = start
        .strip_prefix(public)
        .expect("on PUBLIC_URL")
        .to_owned();
    let b = browser();
    let r = b.get(s.app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r);
    assert!(
        cookie.starts_with("__Host-otobot_oauth=")
            && cookie.contains("; Path=/")
            && cookie.contains("; HttpOnly")
            && cookie.contains("; SameSite=Lax")
            && cookie.ends_with("; Secure")
            && !cookie.to_ascii_lowercase().contains("domain="),
        "{cookie}"
    );
    let nonce = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let provider_url = location(&r, "");
    let callback = login_at_idp(&s, &b, &provider_url, "secure").await;
    let callback_path = callback.strip_prefix(public).unwrap().to_owned();
    // Over https the browser sends the __Host- cookie back; the plain name is not accepted.
    let follow = |cookie: String| {
        let url = s.app.url(&callback_path);
        async move {
            let r = browser()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            location(&r, "")
        }
    };
    let back = follow(format!("otobot_oauth={nonce}")).await;
    assert!(back.contains("error=browser_cookie_missing"), "{back}");
    assert_eq!(connections(&s).await, 0);

    // A new flow, completed with the __Host- cookie.
    let r = s
        .app
        .http
        .post(s.app.url("/api/tooljet/connections/testidp/authorize"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let start = r.json::<Value>().await.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same browser, fresh at the provider (no session there yet).
    let b = browser();
    let r = b
        .get(s.app.url(start.strip_prefix(public).unwrap()))
        .header("cookie", format!("__Host-otobot_oauth={nonce}"))
        .send()
        .await
        .unwrap();
    assert!(
        set_cookie(&r).starts_with(&format!("__Host-otobot_oauth={nonce};")),
        "a browser's nonce is kept across its flows"
    );
    let callback = login_at_idp(&s, &b, &location(&r, ""), "secure").await;
    let callback_path = callback.strip_prefix(public).unwrap().to_owned();
    let follow = |cookie: String| {
        let url = s.app.url(&callback_path);
        async move {
            let r = browser()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            location(&r, "")
        }
    };
    let back = follow(format!("__Host-otobot_oauth={nonce}")).await;
    assert!(back.contains("oauth=success"), "{back}");
    assert_eq!(connections(&s).await, 1);
    s.app.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 10, items 2 and 6: bounded refresh, back-off, checked time arithmetic.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_refresh_bounds_of_the_database_are_the_settings_bounds() {
    use otobot_api::settings::*;
    let db = TestDb::migrated().await;
    let row = db
        .client()
        .await
        .query_one("SELECT * FROM otobot.refresh_bounds()", &[])
        .await
        .unwrap();
    let bounds: Vec<i32> = (0..5).map(|i| row.get(i)).collect();
    assert_eq!(
        bounds,
        vec![
            REFRESH_WINDOW_MAX_SECONDS as i32,
            REFRESH_MARGIN_MAX_SECONDS as i32,
            REFRESH_LEASE_MIN_SECONDS as i32,
            REFRESH_LEASE_MAX_SECONDS as i32,
            1000,
        ]
    );
}

#[tokio::test]
async fn a_token_that_lives_no_longer_than_the_margin_is_refreshed_once_per_fetch_in_bounded_time()
{
    // Tokens live 2 s; the margin is 5 s: every token is "expiring".
    let s = setup(2, 0, &[("REFRESH_MARGIN_SECONDS", "5")]).await;
    let callback = authorize_at_idp(&s, "short").await;
    assert!(follow_callback(&s, &callback)
        .await
        .contains("oauth=success"));

    let started = std::time::Instant::now();
    let r = fetch(&s).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["hasCredentials"], true, "{v}");
    assert_eq!(v["metadata"]["tokenExpired"], false);
    assert_eq!(
        s.idp.count("refresh_token").await,
        1,
        "exactly one refresh at the provider"
    );
    assert!(took < Duration::from_secs(3), "bounded: {took:?}");
    println!("fetch with one refresh: {took:?}");

    // Refreshed less than half a margin ago and still valid: served as is.
    let again: Value = fetch(&s).await.json().await.unwrap();
    assert_eq!(again["credentials"], v["credentials"]);
    assert_eq!(s.idp.count("refresh_token").await, 1);

    // Once it has expired, the next fetch refreshes once more, and only once.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let third: Value = fetch(&s).await.json().await.unwrap();
    assert_eq!(third["hasCredentials"], true);
    assert_ne!(third["credentials"], v["credentials"]);
    assert_eq!(s.idp.count("refresh_token").await, 2);
    assert_eq!(
        audited(&s, "refresh_token_read").await,
        2,
        "each released refresh token is audited"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn a_transient_provider_failure_backs_off_and_nothing_is_tried_until_it_expires() {
    let s = setup(2, 0, &[]).await;
    let callback = authorize_at_idp(&s, "flaky").await;
    follow_callback(&s, &callback).await;
    let (access, _) = stored_tokens(&s).await;
    s.idp.control("token=fail").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    // The provider fails: the current token, flagged, at once.
    let started = std::time::Instant::now();
    let r = fetch(&s).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["hasCredentials"], true, "{v}");
    assert_eq!(v["metadata"]["tokenExpired"], true, "flagged");
    assert_eq!(v["credentials"]["accessToken"], access.as_str());
    assert_eq!(s.idp.count("token_refused").await, 1);

    // Backing off: further fetches never call the provider.
    for _ in 0..5 {
        assert_eq!(fetch(&s).await.status(), 200);
    }
    assert_eq!(s.idp.count("token_refused").await, 1, "back-off engaged");
    let db = s.app.db.client().await;
    async fn backoff(db: &tokio_postgres::Client) -> (String, i32, f64) {
        let row = db
            .query_one(
                "SELECT owner, failures, extract(epoch FROM lease_until - now())::float8 FROM otobot.refresh_leases",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }
    let (owner, failures, left) = backoff(&db).await;
    assert_eq!((owner.as_str(), failures), ("backoff", 1));
    assert!((20.0..=31.0).contains(&left), "30 s: {left}");

    // When the back-off ends, one new attempt; a second failure doubles it.
    db.execute(
        "UPDATE otobot.refresh_leases SET lease_until = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    fetch(&s).await;
    assert_eq!(s.idp.count("token_refused").await, 2);
    let (_, failures, left) = backoff(&db).await;
    assert_eq!(failures, 2);
    assert!((50.0..=61.0).contains(&left), "60 s: {left}");

    // The provider is back and the back-off over: refreshed.
    s.idp.control("token=ok").await;
    db.execute(
        "UPDATE otobot.refresh_leases SET lease_until = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let v: Value = fetch(&s).await.json().await.unwrap();
    assert_eq!(v["metadata"]["tokenExpired"], false, "{v}");
    assert_ne!(v["credentials"]["accessToken"], access.as_str());
    assert_eq!(s.idp.count("refresh_token").await, 1);
    s.app.stop().await;
}

#[tokio::test]
async fn a_fetch_while_the_provider_hangs_returns_within_the_deadline_flagged() {
    // Deadline 2 s; provider calls time out after min(15, lease − 2) = 4 s.
    let s = setup(
        2,
        0,
        &[
            ("REFRESH_FETCH_DEADLINE_SECONDS", "2"),
            ("REFRESH_LEASE_SECONDS", "6"),
        ],
    )
    .await;
    let callback = authorize_at_idp(&s, "hanging").await;
    follow_callback(&s, &callback).await;
    let (access, _) = stored_tokens(&s).await;
    s.idp.control("token=hang").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(fetch(&s), fetch(&s));
    let took = started.elapsed();
    println!("two fetches during a hanging provider: {took:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "within the deadline: {took:?}"
    );
    for r in [a, b] {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["hasCredentials"], true);
        assert_eq!(v["metadata"]["tokenExpired"], true, "flagged: {v}");
        assert_eq!(v["credentials"]["accessToken"], access.as_str());
    }
    assert_eq!(
        s.idp.count("token_held").await,
        1,
        "one provider call for both"
    );

    // The call times out in its own task and backs off; later fetches are quick.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures: i32 = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT failures FROM otobot.refresh_leases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1);
    let started = std::time::Instant::now();
    assert_eq!(fetch(&s).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.idp.count("token_held").await, 1);
    s.app.stop().await;
}

#[tokio::test]
async fn an_absurd_expires_in_is_a_clear_error_and_the_refresher_keeps_refreshing_others() {
    let s = setup(
        60,
        0,
        &[
            ("REFRESHER_ENABLED", "true"),
            ("REFRESHER_INTERVAL_SECONDS", "1"),
            ("REFRESH_WINDOW_SECONDS", "3600"),
        ],
    )
    .await;
    s.idp.control("hugeExpiresFor=huge").await;
    for name in ["huge", "normal"] {
        let callback = authorize_labelled(&s, name, Some(name)).await;
        assert!(follow_callback(&s, &callback)
            .await
            .contains("oauth=success"));
    }
    let db = s.app.db.client().await;
    let refreshed = |label: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT last_refreshed_at IS NOT NULL FROM otobot.client_connections WHERE label = $1",
                &[&label],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    let wait_refreshed = |label: &'static str| async move {
        for _ in 0..100 {
            if refreshed(label).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{label} was not refreshed by the refresher");
    };
    wait_refreshed("normal").await;
    // The absurd answer: an error recorded for that connection, nothing stored.
    let row = db
        .query_one(
            "SELECT l.failures, l.last_error, c.status, c.last_refreshed_at IS NULL
             FROM otobot.refresh_leases l JOIN otobot.client_connections c ON c.id = l.connection_id
             WHERE c.label = 'huge'",
            &[],
        )
        .await
        .unwrap();
    let (failures, error, status, untouched): (i32, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(failures, 1);
    assert!(
        error.contains("expires_in") && error.contains("out of range"),
        "{error}"
    );
    assert_eq!((status.as_str(), untouched), ("active", true));

    // The refresher is alive: a connection made now is refreshed too.
    let callback = authorize_labelled(&s, "later", Some("later")).await;
    assert!(follow_callback(&s, &callback)
        .await
        .contains("oauth=success"));
    wait_refreshed("later").await;
    assert_eq!(s.idp.count("refresh_token").await, 3);
    s.app.stop().await;
}
