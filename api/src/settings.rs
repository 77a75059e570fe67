//! Settings of `otobot serve`, read once from the environment.
//!
//! A missing or malformed variable stops start-up with one line naming it.
//! SECURITY: keys and tokens are `secrecy` types: never `Debug`-printed,
//! zeroized on drop; error messages name variables, never their values.

use std::{net::IpAddr, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};
use tokio_postgres::Config;

use crate::config::Database;

/// One master key version.
pub struct MasterKey {
    pub version: i32,
    pub key: SecretBox<[u8; 32]>,
}

/// The keys loaded into every pooled session: the current one encrypts, the
/// old ones only decrypt values not yet rotated.
pub struct KeySet {
    pub current: MasterKey,
    pub old: Vec<MasterKey>,
}

/// A service allowed to call the internal API, named in the audit log.
pub struct InternalToken {
    pub name: String,
    pub token: SecretString,
    /// `trusted`: the token alone releases credentials (the seed's behaviour;
    /// `doctor` warns). Otherwise (`grant`, the default) a credential fetch
    /// must also present a user's grant.
    pub trusted: bool,
}

/// `grant` (default) or `trusted`, as `N8N_INTERNAL_TOKEN_MODE` and the
/// optional third field of an `INTERNAL_TOKENS` entry say.
fn caller_mode(value: Option<&str>, name: &str) -> Result<bool> {
    match value.map(str::trim) {
        None | Some("grant") => Ok(false),
        Some("trusted") => Ok(true),
        Some(_) => err(format!("{name} must be grant or trusted")),
    }
}

/// The user API (ToolJet, the portal): present when `API_JWT_SECRET` is set.
pub struct UserApiSettings {
    pub jwt_secret: SecretBox<Vec<u8>>,
    /// `PUBLIC_URL`: the `iss` of user tokens.
    pub issuer: String,
    pub jwt_ttl_seconds: i64,
    /// Failed logins allowed per account per window (`LOGIN_RATE_LIMIT_MAX_ATTEMPTS`).
    pub login_max_attempts: u32,
    /// Failed logins allowed per client address per window (`LOGIN_RATE_LIMIT_ADDRESS_MAX_ATTEMPTS`).
    pub login_address_max_attempts: u32,
    pub login_window: Duration,
    /// Origins allowed by CORS (`CORS_ALLOWED_ORIGINS`, default `FRONTEND_URL`'s).
    pub cors_origins: Vec<String>,
    /// Base URL of n8n, whose `/webhook/<path>` the trigger route calls.
    pub n8n_webhook_url: String,
    pub n8n_webhook_secret: Option<SecretString>,
    pub trigger_timeout: Duration,
    /// The portal's browser sessions.
    pub portal: PortalSettings,
    /// Lifetime of the run grant the trigger route mints (`RUN_GRANT_TTL_SECONDS`).
    pub run_grant_ttl_seconds: i32,
}

/// Browser sessions of the portal (`/portal/`).
pub struct PortalSettings {
    /// Absolute lifetime of a session (`PORTAL_SESSION_TTL_SECONDS`).
    pub session_ttl_seconds: i32,
    /// A session unused this long ends (`PORTAL_SESSION_IDLE_SECONDS`).
    pub idle_seconds: i32,
    /// Cookies are `Secure` (and `__Host-` prefixed) when `PUBLIC_URL` is https.
    pub secure_cookies: bool,
    /// `PUBLIC_URL`: the `iss` of session tokens.
    pub issuer: String,
}

/// OAuth2: the catalogue, the enabled apps, the callback and the refresher.
pub struct OAuthSettings {
    pub catalogue: crate::oauth::catalogue::Catalogue,
    /// code → (client id, client secret), for providers whose both variables are set.
    pub apps: Vec<(String, String, SecretString)>,
    /// Where the API is reached by browsers (`PUBLIC_URL`): the callback is `<PUBLIC_URL>/api/oauth/callback`.
    pub public_url: String,
    pub frontend_url: String,
    pub failure_webhook: Option<String>,
    pub refresher_enabled: bool,
    pub refresh_interval: Duration,
    pub refresh_concurrency: usize,
    pub fetch_margin_seconds: i32,
    pub lease_seconds: i32,
    /// One deadline for a fetch's whole refresh (`REFRESH_FETCH_DEADLINE_SECONDS`).
    pub fetch_deadline: Duration,
}

/// Bounds of the refresh settings: the same as the database's
/// `otobot.refresh_bounds()` (migration 0010), which refuses any claim
/// beyond them (a test compares the two).
pub const REFRESH_WINDOW_MAX_SECONDS: u64 = 3600;
pub const REFRESH_MARGIN_MAX_SECONDS: u64 = 900;
pub const REFRESH_LEASE_MIN_SECONDS: u64 = 5;
pub const REFRESH_LEASE_MAX_SECONDS: u64 = 300;

/// Configuration of `otobot serve`.
pub struct Settings {
    pub database: Database,
    pub host: IpAddr,
    pub port: u16,
    pub keys: KeySet,
    pub internal_tokens: Vec<InternalToken>,
    pub rate_limits: RateLimitSettings,
    pub refresh_window_seconds: i32,
    pub pool_size: usize,
    /// Upper bound of one database call (pool wait, connect, statement).
    pub db_timeout: Duration,
    pub audit_seal_interval: Duration,
    /// Where the sealer appends each new chain head (`AUDIT_CHECKPOINT_FILE`).
    pub audit_checkpoint_file: std::path::PathBuf,
    /// Seal lag above which the sealer warns (`AUDIT_SEAL_LAG_WARN_SECONDS`).
    pub audit_seal_lag_warn: Duration,
    pub json_logs: bool,
    pub user_api: Option<UserApiSettings>,
    pub oauth: OAuthSettings,
    /// Who may read `/metrics`.
    pub metrics: MetricsSettings,
}

/// Request limits per minute (see `rate_limit.rs`) and whose
/// `X-Forwarded-For` is believed.
pub struct RateLimitSettings {
    /// `RATE_LIMIT_CALLER_PER_MINUTE`: all internal requests of one caller.
    pub caller_per_minute: u32,
    /// `RATE_LIMIT_USER_PER_MINUTE`: one caller's requests about one user; one user's own requests.
    pub user_per_minute: u32,
    /// `RATE_LIMIT_ADDRESS_PER_MINUTE`: anonymous requests from one client address.
    pub address_per_minute: u32,
    /// `TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The seed's variables that were set: accepted, superseded, not applied.
    pub superseded: Vec<&'static str>,
}

/// The seed's limit variables: one budget for everything, far too small for
/// a company (DESIGN.md "Rate limiting"); accepted and ignored, with a warning.
pub const SUPERSEDED_RATE_LIMIT_VARS: &[&str] = &[
    "RATE_LIMIT_MAX_REQUESTS",
    "RATE_LIMIT_WINDOW_MS",
    "RATE_LIMIT_WINDOW_SECONDS",
];

fn rate_limits(
    var: &impl Fn(&str) -> Option<String>,
    number: &impl Fn(&str, u64, u64, u64) -> Result<u64>,
) -> Result<RateLimitSettings> {
    const MAX: u64 = 1_000_000_000;
    Ok(RateLimitSettings {
        caller_per_minute: number("RATE_LIMIT_CALLER_PER_MINUTE", 12_000, 1, MAX)? as u32,
        user_per_minute: number("RATE_LIMIT_USER_PER_MINUTE", 1_200, 1, MAX)? as u32,
        address_per_minute: number("RATE_LIMIT_ADDRESS_PER_MINUTE", 1_200, 1, MAX)? as u32,
        trusted_proxies: match var("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => crate::rate_limit::parse_trusted_proxies(&list).ok_or_else(|| {
                ConfigError(
                    "TRUSTED_PROXIES must be IP addresses or CIDR blocks (10.0.0.0/8), comma-separated"
                        .into(),
                )
            })?,
        },
        superseded: SUPERSEDED_RATE_LIMIT_VARS
            .iter()
            .copied()
            .filter(|name| var(name).is_some())
            .collect(),
    })
}

/// `/metrics` is served only to a bearer of `METRICS_TOKEN` and/or on a
/// listener of its own (`METRICS_LISTEN_ADDRESS`); with neither, it is 404.
pub struct MetricsSettings {
    pub token: Option<SecretString>,
    pub listen_address: Option<std::net::SocketAddr>,
}

/// A start-up configuration error: one line that names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

type Result<T> = std::result::Result<T, ConfigError>;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(ConfigError(message.into()))
}

/// Minimum length of an internal token: `openssl rand -hex 32` gives 64.
const MIN_TOKEN_LEN: usize = 32;

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads variables through `var`; an empty value counts as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => err(format!(
                        "{name} must be a whole number between {min} and {max}"
                    )),
                },
            }
        };

        let database = api_database(&var)?;
        let host = match var("INTERNAL_API_HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h
                .trim()
                .parse()
                .map_err(|_| ConfigError("INTERNAL_API_HOST must be an IP address".into()))?,
        };
        let port = number("INTERNAL_API_PORT", 3001, 0, 65535)? as u16;

        let current_version = number("ENCRYPTION_KEY_VERSION", 1, 1, i32::MAX as u64)? as i32;
        let Some(master) = var("ENCRYPTION_MASTER_KEY") else {
            return err(
                "ENCRYPTION_MASTER_KEY is not set: it must be 64 hex characters (32 bytes)",
            );
        };
        let current = MasterKey {
            version: current_version,
            key: parse_key(&master).ok_or_else(|| {
                ConfigError("ENCRYPTION_MASTER_KEY must be 64 hex characters (32 bytes)".into())
            })?,
        };
        let mut old = Vec::new();
        for entry in var("ENCRYPTION_OLD_KEYS")
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let bad = || {
                ConfigError("ENCRYPTION_OLD_KEYS must be version:hex pairs, each key 64 hex characters, separated by commas".into())
            };
            let (v, k) = entry.split_once(':').ok_or_else(bad)?;
            let version: i32 = v.trim().parse().ok().filter(|v| *v >= 1).ok_or_else(bad)?;
            if version == current_version || old.iter().any(|k: &MasterKey| k.version == version) {
                return err(format!("ENCRYPTION_OLD_KEYS lists key version {version} twice (or the current ENCRYPTION_KEY_VERSION)"));
            }
            old.push(MasterKey {
                version,
                key: parse_key(k.trim()).ok_or_else(bad)?,
            });
        }

        let mut internal_tokens = Vec::new();
        let Some(n8n) = var("N8N_INTERNAL_TOKEN") else {
            return err("N8N_INTERNAL_TOKEN is not set: the token n8n sends as x-internal-token");
        };
        if n8n.trim().len() < MIN_TOKEN_LEN {
            return err(format!("N8N_INTERNAL_TOKEN must be at least {MIN_TOKEN_LEN} characters (use `openssl rand -hex 32`)"));
        }
        internal_tokens.push(InternalToken {
            name: "n8n".into(),
            token: SecretString::from(n8n.trim().to_owned()),
            trusted: caller_mode(
                var("N8N_INTERNAL_TOKEN_MODE").as_deref(),
                "N8N_INTERNAL_TOKEN_MODE",
            )?,
        });
        for entry in var("INTERNAL_TOKENS")
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let bad = || {
                ConfigError(format!(
                    "INTERNAL_TOKENS must be name:token or name:token:mode entries separated by commas (mode grant or trusted), names of a-z 0-9 _ . - and tokens of at least {MIN_TOKEN_LEN} characters"
                ))
            };
            let (name, token) = entry.split_once(':').ok_or_else(bad)?;
            let name = name.trim();
            let (token, trusted) = match token.rsplit_once(':') {
                Some((t, "trusted")) => (t, true),
                Some((t, "grant")) => (t, false),
                _ => (token, false),
            };
            if !valid_caller_name(name) || token.trim().len() < MIN_TOKEN_LEN {
                return Err(bad());
            }
            if internal_tokens.iter().any(|t| t.name == name) {
                return err(format!(
                    "INTERNAL_TOKENS names the caller {name:?} twice (n8n is N8N_INTERNAL_TOKEN)"
                ));
            }
            internal_tokens.push(InternalToken {
                name: name.to_owned(),
                token: SecretString::from(token.trim().to_owned()),
                trusted,
            });
        }
        for (i, a) in internal_tokens.iter().enumerate() {
            if internal_tokens[..i]
                .iter()
                .any(|b| b.token.expose_secret() == a.token.expose_secret())
            {
                return err(format!("INTERNAL_TOKENS: the token of {:?} is also used by another caller; each caller needs its own", a.name));
            }
        }

        Ok(Self {
            database,
            host,
            port,
            keys: KeySet { current, old },
            internal_tokens,
            rate_limits: rate_limits(&var, &number)?,
            refresh_window_seconds: number(
                "REFRESH_WINDOW_SECONDS",
                600,
                0,
                REFRESH_WINDOW_MAX_SECONDS,
            )? as i32,
            pool_size: number("DATABASE_POOL_SIZE", 16, 1, 1000)? as usize,
            db_timeout: Duration::from_millis(number("DATABASE_TIMEOUT_MS", 5000, 100, 600_000)?),
            audit_seal_interval: Duration::from_millis(number(
                "AUDIT_SEAL_INTERVAL_MS",
                1000,
                50,
                3_600_000,
            )?),
            audit_checkpoint_file: crate::sealer::checkpoint_file(var),
            audit_seal_lag_warn: Duration::from_secs(audit_seal_lag_warn_seconds(&number)?),
            json_logs: match var("LOG_FORMAT").as_deref().map(str::trim) {
                None | Some("text") => false,
                Some("json") => true,
                Some(_) => return err("LOG_FORMAT must be text or json"),
            },
            user_api: user_api(&var, &number)?,
            oauth: oauth(&var, &number)?,
            metrics: metrics(&var)?,
        })
    }
}

fn metrics(var: &impl Fn(&str) -> Option<String>) -> Result<MetricsSettings> {
    let token = match var("METRICS_TOKEN") {
        Some(t) if t.trim().len() < MIN_TOKEN_LEN => {
            return err(format!(
                "METRICS_TOKEN must be at least {MIN_TOKEN_LEN} characters (use `openssl rand -hex 32`)"
            ))
        }
        t => t.map(|t| SecretString::from(t.trim().to_owned())),
    };
    let listen_address = match var("METRICS_LISTEN_ADDRESS") {
        None => None,
        Some(a) => Some(a.trim().parse().map_err(|_| {
            ConfigError(
                "METRICS_LISTEN_ADDRESS must be an IP address and port, e.g. 127.0.0.1:9464".into(),
            )
        })?),
    };
    Ok(MetricsSettings {
        token,
        listen_address,
    })
}

/// `AUDIT_SEAL_LAG_WARN_SECONDS`: above this lag the sealer warns and
/// `doctor` fails (default 60 s; the sealer runs every second).
pub fn audit_seal_lag_warn_seconds(
    number: &impl Fn(&str, u64, u64, u64) -> Result<u64>,
) -> Result<u64> {
    number("AUDIT_SEAL_LAG_WARN_SECONDS", 60, 1, 86_400)
}

fn user_api(
    var: &impl Fn(&str) -> Option<String>,
    number: &impl Fn(&str, u64, u64, u64) -> Result<u64>,
) -> Result<Option<UserApiSettings>> {
    let Some(secret) = var("API_JWT_SECRET") else {
        return Ok(None);
    };
    if secret.trim().len() < 32 {
        return err("API_JWT_SECRET must be at least 32 bytes (use `openssl rand -hex 32`)");
    }
    let url = |name: &str, default: &str| -> Result<String> {
        let value = var(name).unwrap_or_else(|| default.to_owned());
        let value = value.trim().trim_end_matches('/').to_owned();
        if !(value.starts_with("http://") || value.starts_with("https://"))
            || value.contains(char::is_whitespace)
        {
            return err(format!("{name} must be an http:// or https:// URL"));
        }
        Ok(value)
    };
    let frontend = url("FRONTEND_URL", "http://localhost:8082")?;
    let public = url("PUBLIC_URL", "http://localhost:3001")?;
    let cors_origins = match var("CORS_ALLOWED_ORIGINS") {
        None => vec![origin_of(&frontend)],
        Some(list) => {
            let mut origins = Vec::new();
            for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if !(o.starts_with("http://") || o.starts_with("https://"))
                    || o.trim_end_matches('/') != origin_of(o)
                {
                    return err("CORS_ALLOWED_ORIGINS must be origins (scheme://host[:port]) separated by commas");
                }
                origins.push(o.trim_end_matches('/').to_owned());
            }
            origins
        }
    };
    Ok(Some(UserApiSettings {
        jwt_secret: SecretBox::new(Box::new(secret.trim().as_bytes().to_vec())),
        issuer: public.clone(),
        jwt_ttl_seconds: number("JWT_TTL_SECONDS", 3600, 60, 86_400)? as i64,
        login_max_attempts: number("LOGIN_RATE_LIMIT_MAX_ATTEMPTS", 10, 1, 100_000)? as u32,
        login_address_max_attempts: number(
            "LOGIN_RATE_LIMIT_ADDRESS_MAX_ATTEMPTS",
            100,
            1,
            1_000_000,
        )? as u32,
        login_window: Duration::from_secs(number(
            "LOGIN_RATE_LIMIT_WINDOW_SECONDS",
            900,
            1,
            86_400,
        )?),
        cors_origins,
        n8n_webhook_url: url("N8N_WEBHOOK_URL", "http://localhost:5678")?,
        n8n_webhook_secret: var("N8N_WEBHOOK_SECRET")
            .map(|s| SecretString::from(s.trim().to_owned())),
        trigger_timeout: Duration::from_secs(number(
            "WORKFLOW_TRIGGER_TIMEOUT_SECONDS",
            30,
            1,
            600,
        )?),
        portal: PortalSettings {
            session_ttl_seconds: number("PORTAL_SESSION_TTL_SECONDS", 28_800, 300, 604_800)? as i32,
            idle_seconds: number("PORTAL_SESSION_IDLE_SECONDS", 1800, 60, 604_800)? as i32,
            secure_cookies: public.starts_with("https://"),
            issuer: public.clone(),
        },
        run_grant_ttl_seconds: number("RUN_GRANT_TTL_SECONDS", 900, 10, 86_400)? as i32,
    }))
}

fn http_url(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: Option<&str>,
) -> Result<Option<String>> {
    let Some(value) = var(name).or_else(|| default.map(str::to_owned)) else {
        return Ok(None);
    };
    let value = value.trim().trim_end_matches('/').to_owned();
    if !(value.starts_with("http://") || value.starts_with("https://"))
        || value.contains(char::is_whitespace)
    {
        return err(format!("{name} must be an http:// or https:// URL"));
    }
    Ok(Some(value))
}

fn oauth(
    var: &impl Fn(&str) -> Option<String>,
    number: &impl Fn(&str, u64, u64, u64) -> Result<u64>,
) -> Result<OAuthSettings> {
    use crate::oauth::catalogue::Catalogue;
    let extra = match var("OAUTH_PROVIDERS_FILE") {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path.trim())
                .map_err(|e| ConfigError(format!("OAUTH_PROVIDERS_FILE cannot be read: {e}")))?,
        ),
    };
    let catalogue = Catalogue::load(extra.as_deref())
        .map_err(|e| ConfigError(format!("provider catalogue: {e}")))?;
    let apps = catalogue
        .iter()
        .filter_map(|(code, p)| {
            p.client_credentials(code, var)
                .map(|(id, secret)| (code.to_owned(), id, SecretString::from(secret)))
        })
        .collect();
    let refresher_enabled = match var("REFRESHER_ENABLED").as_deref().map(str::trim) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return err("REFRESHER_ENABLED must be true or false"),
    };
    Ok(OAuthSettings {
        catalogue,
        apps,
        public_url: http_url(var, "PUBLIC_URL", Some("http://localhost:3001"))?.unwrap_or_default(),
        frontend_url: http_url(var, "FRONTEND_URL", Some("http://localhost:8082"))?
            .unwrap_or_default(),
        failure_webhook: http_url(var, "REFRESH_FAILURE_WEBHOOK_URL", None)?,
        refresher_enabled,
        refresh_interval: Duration::from_secs(number("REFRESHER_INTERVAL_SECONDS", 30, 1, 3600)?),
        refresh_concurrency: number("REFRESH_CONCURRENCY", 8, 1, 256)? as usize,
        fetch_margin_seconds: number("REFRESH_MARGIN_SECONDS", 60, 0, REFRESH_MARGIN_MAX_SECONDS)?
            as i32,
        lease_seconds: number(
            "REFRESH_LEASE_SECONDS",
            60,
            REFRESH_LEASE_MIN_SECONDS,
            REFRESH_LEASE_MAX_SECONDS,
        )? as i32,
        fetch_deadline: Duration::from_secs(number("REFRESH_FETCH_DEADLINE_SECONDS", 10, 1, 60)?),
    })
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// Caller names go into audit rows (`source`): the database's own rule.
pub fn valid_caller_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn parse_key(hex_key: &str) -> Option<SecretBox<[u8; 32]>> {
    let mut key = SecretBox::new(Box::new([0u8; 32]));
    hex::decode_to_slice(hex_key.trim(), key.expose_secret_mut().as_mut_slice()).ok()?;
    Some(key)
}

/// The API's connection, role `otobot_api`: `DATABASE_URL`, else built from
/// `FRONTEND_DB_USER` (default `otobot_api`), `FRONTEND_DB_PASSWORD`,
/// `FRONTEND_DB_HOST`, `FRONTEND_DB_PORT`, `FRONTEND_DB_NAME`.
fn api_database(var: &impl Fn(&str) -> Option<String>) -> Result<Database> {
    let (mut url_mode, mut url_root) = (None, None);
    let config = match var("DATABASE_URL") {
        Some(url) => {
            let (url, mode) = crate::tls::take_param(&url, "sslmode");
            let (url, root) = crate::tls::take_param(&url, "sslrootcert");
            (url_mode, url_root) = (mode, root);
            // SECURITY: tokio-postgres parse errors name the option, never its value.
            Config::from_str(&url)
                .map_err(|_| ConfigError("DATABASE_URL is not a valid PostgreSQL URL".into()))?
        }
        None => {
            let port = match var("FRONTEND_DB_PORT") {
                None => 5432,
                Some(p) => p
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError("FRONTEND_DB_PORT must be a port number".into()))?,
            };
            let mut config = Config::new();
            config
                .user(var("FRONTEND_DB_USER").unwrap_or_else(|| "otobot_api".into()))
                .host(var("FRONTEND_DB_HOST").unwrap_or_else(|| "127.0.0.1".into()))
                .port(port)
                .dbname(var("FRONTEND_DB_NAME").unwrap_or_else(|| "otobot_frontend".into()));
            if let Some(password) = var("FRONTEND_DB_PASSWORD") {
                config.password(password);
            }
            config
        }
    };
    let tls = crate::tls::from_settings(url_mode, url_root, var, config.get_hosts())
        .map_err(ConfigError)?;
    Ok(Database::from_config(config, tls, "otobot serve"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const TOKEN: &str = "n8n-token-0123456789abcdef0123456789abcdef";

    fn settings(vars: &[(&str, &str)]) -> Result<Settings> {
        let mut all: HashMap<String, String> = [
            ("ENCRYPTION_MASTER_KEY", KEY),
            ("N8N_INTERNAL_TOKEN", TOKEN),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in vars {
            all.insert(k.to_string(), v.to_string());
        }
        Settings::from_vars(|name| all.get(name).cloned())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        match settings(vars) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_follow_the_seed() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 3001);
        let r = &s.rate_limits;
        assert_eq!(
            (r.caller_per_minute, r.user_per_minute, r.address_per_minute),
            (12_000, 1_200, 1_200)
        );
        assert!(r.trusted_proxies.is_empty() && r.superseded.is_empty());
        assert_eq!(s.keys.current.version, 1);
        assert_eq!(s.internal_tokens[0].name, "n8n");
        assert_eq!(
            s.database.redacted(),
            "postgresql://otobot_api@127.0.0.1:5432/otobot_frontend"
        );
    }

    #[test]
    fn a_malformed_master_key_names_the_variable_and_the_expected_form() {
        for bad in [
            "abc",
            &KEY[..63],
            &format!("{KEY}00"),
            &KEY.replace('a', "g"),
        ] {
            assert_eq!(
                error(&[("ENCRYPTION_MASTER_KEY", bad)]),
                "ENCRYPTION_MASTER_KEY must be 64 hex characters (32 bytes)"
            );
        }
        assert!(
            error(&[("ENCRYPTION_MASTER_KEY", "")]).starts_with("ENCRYPTION_MASTER_KEY is not set")
        );
    }

    #[test]
    fn the_user_api_is_on_with_a_long_enough_jwt_secret() {
        assert!(settings(&[]).unwrap().user_api.is_none());
        assert!(error(&[("API_JWT_SECRET", "too-short")])
            .starts_with("API_JWT_SECRET must be at least 32 bytes"));
        let s = settings(&[
            ("API_JWT_SECRET", TOKEN),
            ("FRONTEND_URL", "https://app.example.test/portal/"),
        ])
        .unwrap();
        let u = s.user_api.unwrap();
        assert_eq!(u.cors_origins, vec!["https://app.example.test"]);
        assert_eq!((u.jwt_ttl_seconds, u.login_max_attempts), (3600, 10));
        assert!(error(&[
            ("API_JWT_SECRET", TOKEN),
            ("CORS_ALLOWED_ORIGINS", "https://a.test/path")
        ])
        .starts_with("CORS_ALLOWED_ORIGINS"));
    }

    #[test]
    fn old_keys_and_extra_callers_are_parsed() {
        let other = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
        let s = settings(&[
            ("ENCRYPTION_KEY_VERSION", "3"),
            ("ENCRYPTION_OLD_KEYS", &format!("1:{other}, 2:{KEY}")),
            ("INTERNAL_TOKENS", "tooljet:tooljet-token-0123456789abcdef0123456789,cron:cron-token-0123456789abcdef0123456789ab"),
        ])
        .unwrap();
        assert_eq!(s.keys.current.version, 3);
        assert_eq!(
            s.keys.old.iter().map(|k| k.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(s.keys.old[0].key.expose_secret()[0], 0xff);
        assert_eq!(
            s.internal_tokens
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            vec!["n8n", "tooljet", "cron"]
        );
        assert!(
            s.internal_tokens.iter().all(|t| !t.trusted),
            "grant is the default mode"
        );
    }

    #[test]
    fn caller_modes_are_grant_by_default_and_trusted_only_when_said() {
        let s = settings(&[
            ("N8N_INTERNAL_TOKEN_MODE", "trusted"),
            ("INTERNAL_TOKENS", "legacy:legacy-token-0123456789abcdef0123456789:trusted,cron:cron-token-0123456789abcdef0123456789ab:grant,plain:plain-token-0123456789abcdef0123456789ab"),
        ])
        .unwrap();
        let modes: Vec<(&str, bool, &str)> = s
            .internal_tokens
            .iter()
            .map(|t| (t.name.as_str(), t.trusted, t.token.expose_secret()))
            .collect();
        assert_eq!(
            modes,
            vec![
                ("n8n", true, TOKEN),
                ("legacy", true, "legacy-token-0123456789abcdef0123456789"),
                ("cron", false, "cron-token-0123456789abcdef0123456789ab"),
                ("plain", false, "plain-token-0123456789abcdef0123456789ab"),
            ]
        );
        assert!(!settings(&[]).unwrap().internal_tokens[0].trusted);
        assert_eq!(
            error(&[("N8N_INTERNAL_TOKEN_MODE", "open")]),
            "N8N_INTERNAL_TOKEN_MODE must be grant or trusted"
        );
    }

    #[test]
    fn the_run_grant_lifetime_defaults_to_fifteen_minutes_within_bounds() {
        let ttl = |v: &[(&str, &str)]| {
            settings(&[&[("API_JWT_SECRET", TOKEN)], v].concat())
                .map(|s| s.user_api.unwrap().run_grant_ttl_seconds)
        };
        assert_eq!(ttl(&[]).unwrap(), 900);
        assert_eq!(ttl(&[("RUN_GRANT_TTL_SECONDS", "60")]).unwrap(), 60);
        for bad in ["0", "9", "86401", "soon"] {
            assert!(ttl(&[("RUN_GRANT_TTL_SECONDS", bad)])
                .err()
                .unwrap()
                .to_string()
                .starts_with("RUN_GRANT_TTL_SECONDS"));
        }
    }

    #[test]
    fn malformed_values_are_refused_naming_the_variable_without_the_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("ENCRYPTION_OLD_KEYS", "1:zz", "ENCRYPTION_OLD_KEYS"),
            ("ENCRYPTION_OLD_KEYS", &format!("1:{KEY}"), "twice"),
            ("ENCRYPTION_KEY_VERSION", "0", "ENCRYPTION_KEY_VERSION"),
            (
                "N8N_INTERNAL_TOKEN",
                "short-secret",
                "N8N_INTERNAL_TOKEN must be at least 32",
            ),
            (
                "INTERNAL_TOKENS",
                "Bad Name:0123456789abcdef0123456789abcdef",
                "INTERNAL_TOKENS",
            ),
            ("INTERNAL_TOKENS", &format!("other:{TOKEN}"), "also used"),
            (
                "RATE_LIMIT_CALLER_PER_MINUTE",
                "lots",
                "RATE_LIMIT_CALLER_PER_MINUTE",
            ),
            ("TRUSTED_PROXIES", "10.0.0.0/8,proxy", "TRUSTED_PROXIES"),
            ("INTERNAL_API_PORT", "70000", "INTERNAL_API_PORT"),
            (
                "DATABASE_URL",
                "postgresql://u:hunter2@h:port/db",
                "DATABASE_URL",
            ),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ];
        for (name, value, expected) in cases {
            let e = error(&[(name, value)]);
            assert!(e.contains(expected), "{name}={value}: {e}");
            assert!(
                !e.contains("hunter2")
                    && !e.contains("short-secret")
                    && !e.contains("0123456789abcdef"),
                "{e}"
            );
        }
        assert!(error(&[("N8N_INTERNAL_TOKEN", "")]).starts_with("N8N_INTERNAL_TOKEN is not set"));
    }

    #[test]
    fn the_seeds_rate_limit_variables_are_accepted_but_superseded() {
        let s = settings(&[
            ("RATE_LIMIT_MAX_REQUESTS", "100"),
            ("RATE_LIMIT_WINDOW_MS", "900000"),
        ])
        .unwrap();
        assert_eq!(
            s.rate_limits.superseded,
            vec!["RATE_LIMIT_MAX_REQUESTS", "RATE_LIMIT_WINDOW_MS"]
        );
        assert_eq!(s.rate_limits.caller_per_minute, 12_000, "not applied");
    }

    #[test]
    fn refresh_settings_beyond_the_database_bounds_are_refused() {
        for (name, value) in [
            ("REFRESH_WINDOW_SECONDS", "3601"),
            ("REFRESH_WINDOW_SECONDS", "86400"),
            ("REFRESH_MARGIN_SECONDS", "901"),
            ("REFRESH_LEASE_SECONDS", "4"),
            ("REFRESH_LEASE_SECONDS", "301"),
            ("REFRESH_FETCH_DEADLINE_SECONDS", "0"),
            ("REFRESH_FETCH_DEADLINE_SECONDS", "61"),
        ] {
            assert!(error(&[(name, value)]).starts_with(name), "{name}={value}");
        }
        let s = settings(&[
            ("REFRESH_WINDOW_SECONDS", "3600"),
            ("REFRESH_MARGIN_SECONDS", "900"),
            ("REFRESH_LEASE_SECONDS", "300"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.refresh_window_seconds,
                s.oauth.fetch_margin_seconds,
                s.oauth.lease_seconds
            ),
            (3600, 900, 300)
        );
        assert_eq!(s.oauth.fetch_deadline, Duration::from_secs(10));
    }
}
