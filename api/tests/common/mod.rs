//! Test harness: real PostgreSQL (a fresh database per test, dropped at the
//! end) and a real `otobot serve` on port 0.
//! Admin connection: `OTOBOT_TEST_ADMIN_URL` (default
//! `postgresql://postgres@127.0.0.1:5432/postgres`); the API logs in as
//! `otobot_api` with `FRONTEND_DB_PASSWORD` when set.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, str::FromStr};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_postgres::{Client, Config, NoTls};

pub fn admin_url() -> String {
    std::env::var("OTOBOT_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = Config::from_str(url)
        .unwrap()
        .connect(NoTls)
        .await
        .expect("database connection");
    tokio::spawn(connection);
    client
}

pub async fn admin(sql: &str) {
    connect(&admin_url())
        .await
        .batch_execute(sql)
        .await
        .unwrap();
}

/// A fresh, uniquely named database, dropped when this value is.
pub struct TestDb {
    pub name: String,
    /// Superuser URL of this database.
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("otobot_test_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&admin_url()).expect("OTOBOT_TEST_ADMIN_URL is a URL");
        url.set_path(&name);
        Self {
            name,
            url: url.into(),
        }
    }

    /// A fresh database with every real migration applied.
    pub async fn migrated() -> Self {
        // Migrations alter cluster-wide roles: concurrent runs in sibling
        // databases would collide ("tuple concurrently updated").
        static MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let db = Self::new().await;
        let mut client = db.client().await;
        let _one_at_a_time = MIGRATING.lock().await;
        otobot_api::migrate::run(&mut client, &otobot_api::migrate::embedded())
            .await
            .expect("migrations apply");
        db
    }

    /// A superuser connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Where a server on this database appends its audit checkpoints
    /// (`AUDIT_CHECKPOINT_FILE` of [`base_vars`]); removed with the database.
    pub fn checkpoint_file(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-audit-checkpoints.jsonl", self.name))
    }

    /// This database's URL for the API role `otobot_api`, optionally through another port.
    pub fn api_url(&self, port: Option<u16>) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_username("otobot_api").unwrap();
        let password = std::env::var("FRONTEND_DB_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        url.set_password(password.as_deref()).unwrap();
        if let Some(port) = port {
            url.set_host(Some("127.0.0.1")).unwrap();
            url.set_port(Some(port)).unwrap();
        }
        url.into()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.checkpoint_file());
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Its own thread and runtime: a test's runtime may be gone or busy by now.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(admin(&sql))
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("cannot drop database {}", self.name);
        }
    }
}

pub fn random_hex32() -> String {
    use std::fmt::Write;
    let bytes: [u8; 32] = rand_bytes();
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn rand_bytes() -> [u8; 32] {
    let a = uuid::Uuid::new_v4().into_bytes();
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&a);
    out[16..].copy_from_slice(&b);
    out
}

/// The user API's signing secret in tests.
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

pub const CLIENT_1: &str = "c1000000-0000-0000-0000-000000000001";
pub const CLIENT_2: &str = "c2000000-0000-0000-0000-000000000002";
pub const USER_A: &str = "a0000000-0000-0000-0000-00000000000a";
pub const USER_B: &str = "b0000000-0000-0000-0000-00000000000b";
pub const USER_C: &str = "c0000000-0000-0000-0000-00000000000c";

/// Clients 1 (users A, B) and 2 (user C).
pub async fn seed_users(db: &Client) {
    db.batch_execute(&format!(
        "INSERT INTO otobot.clients (id, email, company_name) VALUES
            ('{CLIENT_1}', 'one@example.test', 'Client One'), ('{CLIENT_2}', 'two@example.test', 'Client Two');
         INSERT INTO otobot.users (id, client_id, email, role) VALUES
            ('{USER_A}', '{CLIENT_1}', 'a@example.test', 'user'),
            ('{USER_B}', '{CLIENT_1}', 'b@example.test', 'user'),
            ('{USER_C}', '{CLIENT_2}', 'c@example.test', 'user');"
    ))
    .await
    .unwrap();
}

/// Gives client `id` (an admin login) the argon2id hash of `password`.
pub async fn set_client_password(db: &Client, id: &str, password: &str) {
    let hash = otobot_api::password::hash(password).unwrap();
    db.execute(
        "UPDATE otobot.clients SET password_hash = $1 WHERE id = $2::text::uuid",
        &[&hash, &id],
    )
    .await
    .unwrap();
}

/// Registers key `version` as the owner does (`otobot migrate`), as a superuser
/// on `db`; registering the same key again is a no-op.
pub async fn register_key(db: &Client, version: i32, key_hex: &str) {
    db.execute(
        "SELECT otobot.otobot_register_key($1, decode($2, 'hex'))",
        &[&version, &key_hex],
    )
    .await
    .expect("the key version registers");
}

/// Stores an OAuth connection through the vault's own function, with `key_hex`
/// registered (as version 1) and loaded.
pub async fn store_oauth(
    db: &Client,
    key_hex: &str,
    user: &str,
    service: &str,
    access: &str,
    refresh: &str,
    label: Option<&str>,
) -> uuid::Uuid {
    register_key(db, 1, key_hex).await;
    db.execute(
        "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
        &[&key_hex],
    )
    .await
    .unwrap();
    let user = uuid::Uuid::parse_str(user).unwrap();
    db.query_one(
        "SELECT otobot.store_oauth_connection($1, $2, $3, $4, now() + interval '1 hour', '{email}', 'someone@example.test', $5, 'test', NULL)",
        &[&user, &service, &access, &refresh, &label],
    )
    .await
    .unwrap()
    .get(0)
}

/// A standing grant of `user` for `services`, valid for a day, made in the
/// database as `POST /api/tooljet/grants` makes one; returns its token.
pub async fn standing_grant(db: &Client, user: &str, services: &[&str]) -> String {
    let token = format!("otg_test{}", random_hex32());
    let hash = otobot_api::grants::hash(token.as_bytes()).to_vec();
    let user = uuid::Uuid::parse_str(user).unwrap();
    let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    db.execute(
        "SELECT otobot.create_standing_grant($1, 'tests', $2, $3, now() + interval '1 day', 'test', NULL)",
        &[&user, &services, &hash],
    )
    .await
    .expect("the grant is created");
    token
}

/// A running `otobot serve` (in this process) on its own migrated database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `METRICS_LISTEN_ADDRESS`'s listener, when configured.
    pub metrics_addr: Option<SocketAddr>,
    pub token: String,
    pub key_hex: String,
    pub db: TestDb,
    pub http: reqwest::Client,
    /// The server's shared state (metrics, pool), read directly by tests.
    pub state: otobot_api::state::SharedState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn base_vars(db: &TestDb, key_hex: &str, token: &str) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db.api_url(None)),
        ("ENCRYPTION_MASTER_KEY", key_hex.to_owned()),
        ("N8N_INTERNAL_TOKEN", token.to_owned()),
        ("INTERNAL_API_PORT", "0".to_owned()),
        ("AUDIT_SEAL_INTERVAL_MS", "100".to_owned()),
        ("DATABASE_POOL_SIZE", "4".to_owned()),
        ("API_JWT_SECRET", JWT_SECRET.to_owned()),
        ("FRONTEND_URL", "http://portal.example.test:8082".to_owned()),
        (
            "AUDIT_CHECKPOINT_FILE",
            db.checkpoint_file().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl TestApp {
    /// Seeds users, then starts the server with the base variables plus `overrides`.
    pub async fn spawn(overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::migrated().await;
        seed_users(&db.client().await).await;
        Self::spawn_on(db, overrides).await
    }

    pub async fn spawn_on(db: TestDb, overrides: &[(&str, &str)]) -> Self {
        let key_hex = random_hex32();
        let token = random_hex32();
        let mut vars = base_vars(&db, &key_hex, &token);
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let settings = otobot_api::settings::Settings::from_vars(|name| vars.get(name).cloned())
            .expect("settings");
        // What `otobot migrate` does with the configured keys. A key that does
        // not match is left for the server's own start-up check to report.
        let _ = otobot_api::cli::ops::register_keyring(&db.client().await, &settings.keys).await;
        let app = otobot_api::startup::Application::build(settings)
            .await
            .expect("server starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let state = app.state();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            token,
            key_hex,
            db,
            http: reqwest::Client::new(),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET with the n8n token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-internal-token", &self.token)
            .send()
            .await
            .unwrap()
    }

    /// GET with the n8n token and a grant (`x-otobot-grant`).
    pub async fn get_granted(&self, path: &str, grant: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-internal-token", &self.token)
            .header("x-otobot-grant", grant)
            .send()
            .await
            .unwrap()
    }

    /// A standing grant of `user` for `services` on this server's database.
    pub async fn grant(&self, user: &str, services: &[&str]) -> String {
        standing_grant(&self.db.client().await, user, services).await
    }

    /// The value of one Prometheus sample of this server (`name` with its labels, if any).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.state
            .metrics
            .render(&self.state.pool)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub async fn stop(self) {
        drop(self.shutdown().await);
    }

    /// Stops the server (its last sealing pass included) and hands back its database.
    pub async fn shutdown(mut self) -> TestDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.db
    }
}

/// A TCP relay to PostgreSQL that the test can cut, to play a database outage.
pub struct Relay {
    pub port: u16,
    task: JoinHandle<()>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.to_owned();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tracked = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(handle);
            }
        });
        Self { port, task, conns }
    }

    /// Drops every relayed connection and stops accepting new ones.
    pub fn cut(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A migrated database with users A, B, C and three OAuth connections under a
/// fresh key version 1; returns the database and the key (hex).
pub async fn seeded_vault() -> (TestDb, String) {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    seed_users(&admin).await;
    let key = random_hex32();
    store_oauth(&admin, &key, USER_A, "google", "at-a", "rt-a", None).await;
    store_oauth(&admin, &key, USER_B, "slack", "at-b", "rt-b", None).await;
    store_oauth(&admin, &key, USER_C, "notion", "at-c", "rt-c", Some("work")).await;
    (db, key)
}

/// Seals with `key` until `n` links exist: rows become sealable once every
/// older transaction of this database has ended.
pub async fn wait_sealed(db: &TestDb, key: &str, n: i64) {
    let client = db.client().await;
    register_key(&client, 1, key).await;
    client
        .execute(
            "SELECT otobot.otobot_load_key(1, decode($1, 'hex'), true)",
            &[&key],
        )
        .await
        .unwrap();
    for _ in 0..600 {
        client
            .execute("SELECT otobot.seal_audit_chain()", &[])
            .await
            .unwrap();
        let links: i64 = client
            .query_one("SELECT count(*) FROM otobot.audit_chain", &[])
            .await
            .unwrap()
            .get(0);
        if links >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("audit rows were not sealable within a minute");
}
