//! Typed configuration, read once from the environment at start-up.

use std::{str::FromStr, time::Duration};

use anyhow::{Context, Result};
use tokio_postgres::{config::Host, Client, Config};

use crate::tls::DbTls;

/// A PostgreSQL connection target and its TLS. Its password is never displayed: see [`Database::redacted`].
#[derive(Debug, Clone)]
pub struct Database {
    config: Config,
    tls: DbTls,
}

impl Database {
    /// The connection `otobot migrate` uses, a superuser (migrations create the extension and roles):
    /// `database_url` (the `--database-url` flag), else `MIGRATION_DATABASE_URL`, else built from
    /// `POSTGRES_USER` (default `otobot_admin`), `POSTGRES_PASSWORD` and `FRONTEND_DB_HOST`,
    /// `FRONTEND_DB_PORT`, `FRONTEND_DB_NAME`.
    pub fn for_migrations(database_url: Option<&str>) -> Result<Self> {
        Self::for_migrations_from(database_url, |name| std::env::var(name).ok())
    }

    /// [`Database::for_migrations`] reading variables through `var`; an empty value counts as unset.
    pub fn for_migrations_from(
        database_url: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let (config, url_mode, url_root) = match database_url
            .map(str::to_owned)
            .or_else(|| var("MIGRATION_DATABASE_URL"))
        {
            Some(url) => {
                let (url, mode) = crate::tls::take_param(&url, "sslmode");
                let (url, root) = crate::tls::take_param(&url, "sslrootcert");
                // SECURITY: tokio-postgres parse errors name the option, never its value, so no password leaks.
                let config = Config::from_str(&url)
                    .context("invalid database URL (--database-url or MIGRATION_DATABASE_URL)")?;
                (config, mode, root)
            }
            None => (
                frontend_db(
                    &var,
                    var("POSTGRES_USER").unwrap_or_else(|| "otobot_admin".into()),
                    var("POSTGRES_PASSWORD"),
                )?,
                None,
                None,
            ),
        };
        let tls = crate::tls::from_settings(url_mode, url_root, &var, config.get_hosts())
            .map_err(anyhow::Error::msg)?;
        Ok(Self::from_config(config, tls, "otobot migrate"))
    }

    /// Wraps a connection configuration and its TLS, with an application name and a 10 s connect
    /// timeout by default.
    pub fn from_config(mut config: Config, tls: DbTls, application_name: &str) -> Self {
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.ssl_mode(tls.pg_mode());
        Self { config, tls }
    }

    /// The same target and TLS, on another database of the cluster.
    pub fn with_dbname(&self, dbname: &str, application_name: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(dbname).application_name(application_name);
        Self {
            config,
            tls: self.tls.clone(),
        }
    }

    /// How this connection uses TLS.
    pub fn tls(&self) -> &DbTls {
        &self.tls
    }

    /// The underlying connection configuration.
    pub fn pg_config(&self) -> &Config {
        &self.config
    }

    /// The target as a URL with the password masked, e.g. `postgresql://otobot_admin:***@127.0.0.1:5432/otobot_frontend`.
    pub fn redacted(&self) -> String {
        let c = &self.config;
        // SECURITY: only whether a password is set is shown, never the password.
        let password = if c.get_password().is_some() {
            ":***"
        } else {
            ""
        };
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(path) => path.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect();
        let user = c.get_user().unwrap_or_default();
        let dbname = c.get_dbname().unwrap_or_default();
        format!("postgresql://{user}{password}@{}/{dbname}", hosts.join(","))
    }

    /// Opens one connection (TLS as [`Database::tls`] says) and drives it on the current Tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        let connector = self.tls.connector().map_err(anyhow::Error::msg)?;
        let (client, connection) = self
            .config
            .connect(connector)
            .await
            .with_context(|| format!("cannot connect to {}", self.redacted()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!(%error, "database connection lost");
            }
        });
        Ok(client)
    }
}

/// A connection built from `FRONTEND_DB_HOST`, `FRONTEND_DB_PORT` and `FRONTEND_DB_NAME`.
fn frontend_db(
    var: &impl Fn(&str) -> Option<String>,
    user: String,
    password: Option<String>,
) -> Result<Config> {
    let port = match var("FRONTEND_DB_PORT") {
        Some(port) => port
            .parse()
            .with_context(|| format!("FRONTEND_DB_PORT must be a port number, not {port:?}"))?,
        None => 5432,
    };
    let mut config = Config::new();
    config
        .user(user)
        .host(var("FRONTEND_DB_HOST").unwrap_or_else(|| "127.0.0.1".into()))
        .port(port)
        .dbname(var("FRONTEND_DB_NAME").unwrap_or_else(|| "otobot_frontend".into()));
    if let Some(password) = password {
        config.password(password);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn migrations_db(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Database> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Database::for_migrations_from(flag, |name| vars.get(name).cloned())
    }

    #[test]
    fn without_any_variable_the_migration_target_is_the_local_frontend_database() {
        let db = migrations_db(None, &[]).unwrap();
        assert_eq!(
            db.redacted(),
            "postgresql://otobot_admin@127.0.0.1:5432/otobot_frontend"
        );
    }

    #[test]
    fn the_migration_target_is_built_from_postgres_and_frontend_db_variables() {
        let vars = [
            ("POSTGRES_USER", "admin"),
            ("POSTGRES_PASSWORD", "s3cret"),
            ("FRONTEND_DB_HOST", "db"),
            ("FRONTEND_DB_PORT", "6543"),
            ("FRONTEND_DB_NAME", "vault"),
        ];
        let db = migrations_db(None, &vars).unwrap();
        assert_eq!(db.redacted(), "postgresql://admin:***@db:6543/vault");
        assert_eq!(db.config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn the_flag_wins_over_migration_database_url_which_wins_over_the_parts() {
        let vars = [
            ("MIGRATION_DATABASE_URL", "postgresql://env@h1/a"),
            ("POSTGRES_USER", "parts"),
        ];
        assert_eq!(
            migrations_db(None, &vars).unwrap().redacted(),
            "postgresql://env@h1:5432/a"
        );
        let flag = Some("postgresql://flag:pw@h2:5433/b");
        assert_eq!(
            migrations_db(flag, &vars).unwrap().redacted(),
            "postgresql://flag:***@h2:5433/b"
        );
    }

    #[test]
    fn a_malformed_port_is_refused_naming_the_variable() {
        let error = migrations_db(None, &[("FRONTEND_DB_PORT", "54x")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"FRONTEND_DB_PORT must be a port number, not "54x""#
        );
    }

    #[test]
    fn a_malformed_url_is_refused_without_echoing_the_password() {
        let error = migrations_db(Some("postgresql://u:hunter2@h:notaport/db"), &[]).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.starts_with("invalid database URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let db = migrations_db(Some("postgresql://u:hunter2@h/db"), &[]).unwrap();
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
