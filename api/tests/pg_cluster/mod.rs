//! A throwaway PostgreSQL cluster of its own (initdb in a temporary
//! directory, its own port, its own server log), for tests that change
//! cluster-wide things: role settings, TLS, the log file they then read.
//! Uses the same PostgreSQL installation as the rest of the suite
//! (`OTOBOT_PG_BIN`, else `$PG_CONFIG --bindir`, else Debian's 15), so the
//! installed `otobot` extension is there. As root, the server runs as
//! `postgres` (PostgreSQL refuses root).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    _tmp: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    if let Some(bin) = std::env::var_os("OTOBOT_PG_BIN").filter(|v| !v.is_empty()) {
        return bin.into();
    }
    if let Ok(pg_config) = std::env::var("PG_CONFIG") {
        if let Ok(out) = Command::new(pg_config).arg("--bindir").output() {
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().into();
            }
        }
    }
    "/usr/lib/postgresql/15/bin".into()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new cluster (trust authentication on loopback) with `conf` appended
    /// to postgresql.conf and `files` written into the data directory
    /// (mode 0600, e.g. a server key) before it starts.
    pub fn start(conf: &str, files: &[(&str, &[u8])]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("otobot-pg-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_owned();
        let data = dir.join("data");
        let bin = bin_dir();
        let cluster = Self {
            port: free_port(),
            dir: dir.clone(),
            bin,
            _tmp: tmp,
        };
        cluster.chown(&dir);
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        for (name, content) in files {
            let path = data.join(name);
            std::fs::write(&path, content).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            cluster.chown(&path);
        }
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            config,
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}",
            cluster.port,
            dir.display()
        )
        .unwrap();
        drop(config);
        let log = cluster.log_path();
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        cluster
    }

    fn chown(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            output.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A URL for `user` on `database` over TCP to 127.0.0.1.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// A superuser connection to `postgres`.
    pub async fn admin(&self) -> tokio_postgres::Client {
        connect_plain(&self.url("postgres", "postgres")).await
    }

    /// A database `name` with every migration applied; returns its superuser URL.
    pub async fn migrated_database(&self, name: &str) -> String {
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = self.url("postgres", name);
        let mut client = connect_plain(&url).await;
        otobot_api::migrate::run(&mut client, &otobot_api::migrate::embedded())
            .await
            .expect("migrations apply");
        url
    }
}

async fn connect_plain(url: &str) -> tokio_postgres::Client {
    use std::str::FromStr;
    let mut config = tokio_postgres::Config::from_str(url).unwrap();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects to the test cluster");
    tokio::spawn(connection);
    client
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}
