//! TLS to PostgreSQL (`sslmode` disable, prefer, require, verify-full with
//! rustls) against real clusters with TLS on and off, certificates made
//! here by `openssl`: a CA, and a server certificate for `localhost` only.

mod common;
mod pg_cluster;

use std::{path::Path, process::Command};

use otobot_api::config::Database;
use pg_cluster::Cluster;

/// A CA and a server certificate it signed for DNS name `localhost` (no IP
/// address): `(ca.pem, server.crt, server.key)`, plus another CA's PEM.
struct Certs {
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    server_crt: Vec<u8>,
    server_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ca in ["ca", "other-ca"] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=otobot test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    Certs {
        ca: d.join("ca.pem"),
        other_ca: d.join("other-ca.pem"),
        server_crt: std::fs::read(d.join("server.crt")).unwrap(),
        server_key: std::fs::read(d.join("server.key")).unwrap(),
        _dir: dir,
    }
}

fn tls_cluster(certs: &Certs) -> Cluster {
    Cluster::start(
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        &[
            ("server.crt", &certs.server_crt),
            ("server.key", &certs.server_key),
        ],
    )
}

/// Connects as the CLI does (`--database-url`), and says whether the
/// session is encrypted; `Err` is the connection error, as the CLI shows it.
async fn connect(url: &str) -> Result<bool, String> {
    let db = Database::for_migrations_from(Some(url), |_| None).map_err(|e| format!("{e:#}"))?;
    let client = db.connect().await.map_err(|e| format!("{e:#}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

fn url(host: &str, port: u16, query: &str) -> String {
    format!("postgresql://postgres@{host}:{port}/postgres?{query}")
}

#[tokio::test]
async fn require_and_verify_full_connect_over_tls_and_verify_full_checks_the_name_and_the_ca() {
    let certs = certs();
    let cluster = tls_cluster(&certs);
    let p = cluster.port;
    let ca = certs.ca.display().to_string();
    let other = certs.other_ca.display().to_string();

    assert_eq!(
        connect(&url("127.0.0.1", p, "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        connect(&url("127.0.0.1", p, "sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        connect(&url(
            "localhost",
            p,
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .await,
        Ok(true)
    );
    // The default for a loopback host, and an explicit disable: no TLS.
    assert_eq!(connect(&url("127.0.0.1", p, "")).await, Ok(false));
    assert_eq!(
        connect(&url("localhost", p, "sslmode=disable")).await,
        Ok(false)
    );

    // The certificate is for `localhost`, not for 127.0.0.1.
    let wrong_name = connect(&url(
        "127.0.0.1",
        p,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    let error = wrong_name.expect_err("verify-full accepted a certificate for another name");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // Signed by a CA that is not trusted.
    let wrong_ca = connect(&url(
        "localhost",
        p,
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await;
    let error = wrong_ca.expect_err("verify-full accepted another CA's certificate");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back() {
    let certs = certs();
    let cluster = Cluster::start("ssl = off", &[]);
    let p = cluster.port;
    let error = connect(&url("127.0.0.1", p, "sslmode=require"))
        .await
        .expect_err("require connected without TLS");
    assert!(error.contains("cannot connect"), "{error}");
    let ca = certs.ca.display().to_string();
    connect(&url(
        "localhost",
        p,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("verify-full connected without TLS");
    assert_eq!(
        connect(&url("127.0.0.1", p, "sslmode=prefer")).await,
        Ok(false)
    );
}

#[tokio::test]
async fn the_variables_set_the_mode_and_bad_values_are_refused_naming_them() {
    let certs = certs();
    let cluster = tls_cluster(&certs);
    let ca = certs.ca.display().to_string();
    let port = cluster.port.to_string();
    let vars = |mode: &'static str, root: String, host: &'static str| {
        let port = port.clone();
        move |name: &str| match name {
            "POSTGRES_USER" => Some("postgres".to_owned()),
            "FRONTEND_DB_HOST" => Some(host.to_owned()),
            "FRONTEND_DB_PORT" => Some(port.clone()),
            "FRONTEND_DB_NAME" => Some("postgres".to_owned()),
            "FRONTEND_DB_SSLMODE" => Some(mode.to_owned()),
            "FRONTEND_DB_SSLROOTCERT" => Some(root.clone()),
            _ => None,
        }
    };
    let db =
        Database::for_migrations_from(None, vars("verify-full", ca.clone(), "localhost")).unwrap();
    assert_eq!(db.tls().mode, otobot_api::tls::SslMode::VerifyFull);
    db.connect()
        .await
        .expect("verify-full through the variables");
    let db =
        Database::for_migrations_from(None, vars("verify-full", ca.clone(), "127.0.0.1")).unwrap();
    assert!(db.connect().await.is_err(), "wrong host name accepted");
    // The URL's own sslmode wins over the variable.
    let db = Database::for_migrations_from(
        Some(&url("127.0.0.1", cluster.port, "sslmode=require")),
        vars("verify-full", ca.clone(), "localhost"),
    )
    .unwrap();
    assert_eq!(db.tls().mode, otobot_api::tls::SslMode::Require);

    for (mode, root, expected) in [
        ("verify-ca", ca.clone(), "FRONTEND_DB_SSLMODE must be"),
        (
            "verify-full",
            "/nonexistent/ca.pem".into(),
            "FRONTEND_DB_SSLROOTCERT",
        ),
    ] {
        let error = Database::for_migrations_from(None, vars(mode, root, "localhost"))
            .err()
            .map(|e| format!("{e:#}"))
            .expect("refused");
        assert!(error.contains(expected), "{error}");
    }
    // serve's settings use the same rules.
    let key = common::random_hex32();
    let token = common::random_hex32();
    let serve_vars = |url: String| {
        let (key, token) = (key.clone(), token.clone());
        move |name: &str| match name {
            "DATABASE_URL" => Some(url.clone()),
            "ENCRYPTION_MASTER_KEY" => Some(key.clone()),
            "N8N_INTERNAL_TOKEN" => Some(token.clone()),
            _ => None,
        }
    };
    let error = otobot_api::settings::Settings::from_vars(serve_vars(url(
        "localhost",
        cluster.port,
        "sslmode=verify-ca",
    )))
    .err()
    .expect("verify-ca refused")
    .to_string();
    assert!(error.contains("sslmode must be"), "{error}");
}

#[tokio::test]
async fn serve_and_its_pool_reach_the_database_over_verified_tls() {
    let certs = certs();
    let cluster = tls_cluster(&certs);
    // Only TLS connections may log in as otobot_api.
    let hba = cluster.dir.join("data/pg_hba.conf");
    std::fs::write(
        &hba,
        "hostssl all all 127.0.0.1/32 trust\nhostnossl all postgres 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .unwrap();
    cluster
        .admin()
        .await
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let admin_url = cluster.migrated_database("vault").await;
    let key = common::random_hex32();
    common::register_key(&common::connect(&admin_url).await, 1, &key).await;

    let ca = certs.ca.display().to_string();
    let database_url = format!(
        "postgresql://otobot_api@localhost:{}/vault?sslmode=verify-full&sslrootcert={ca}",
        cluster.port
    );
    let vars: std::collections::HashMap<&str, String> = [
        ("DATABASE_URL", database_url),
        ("ENCRYPTION_MASTER_KEY", key.clone()),
        ("N8N_INTERNAL_TOKEN", common::random_hex32()),
        ("INTERNAL_API_PORT", "0".into()),
        ("DATABASE_POOL_SIZE", "2".into()),
        (
            "AUDIT_CHECKPOINT_FILE",
            cluster.dir.join("checkpoints.jsonl").display().to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let settings = otobot_api::settings::Settings::from_vars(|n| vars.get(n).cloned()).unwrap();
    let app = otobot_api::startup::Application::build(settings)
        .await
        .expect("serve starts over verify-full");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let admin = common::connect(&admin_url).await;
    let sessions: Vec<bool> = admin
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'otobot_api'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !sessions.is_empty() && sessions.iter().all(|s| *s),
        "{sessions:?}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // The same server, asked for the wrong name: no start.
    let mut vars = vars;
    vars.insert(
        "DATABASE_URL",
        format!(
            "postgresql://otobot_api@127.0.0.1:{}/vault?sslmode=verify-full&sslrootcert={ca}",
            cluster.port
        ),
    );
    let settings = otobot_api::settings::Settings::from_vars(|n| vars.get(n).cloned()).unwrap();
    assert!(otobot_api::startup::Application::build(settings)
        .await
        .is_err());
}
