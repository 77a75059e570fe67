//! `otobot doctor`: the seed's `check-otobot.sh`, as ✔/✘ lines each with a fix.

use std::time::Duration;

use anyhow::{bail, Result};
use tokio_postgres::Client;

use super::{
    audit::{find_anchor, seal_and_verify, Anchor},
    keys::version_counts,
    ops::{db_message, keys_from_env, load_keyring, DbArgs},
};
use crate::settings::{KeySet, Settings};

/// Arguments of `otobot doctor`.
#[derive(clap::Args)]
pub struct Args {
    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(
        &mut self,
        name: &'static str,
        status: Status,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        self.0.push(Check {
            name,
            status,
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }
    fn ok(&mut self, name: &'static str, message: impl Into<String>) {
        self.add(name, Status::Ok, message, None);
    }
    fn fail(&mut self, name: &'static str, message: impl Into<String>, hint: &str) {
        self.add(name, Status::Fail, message, Some(hint));
    }
    fn warn(&mut self, name: &'static str, message: impl Into<String>, hint: &str) {
        self.add(name, Status::Warn, message, Some(hint));
    }
    fn skip(&mut self, name: &'static str, message: impl Into<String>) {
        self.add(name, Status::Skip, message, None);
    }
}

/// Tables whose rows belong to a tenant: row-level security must be enabled and forced.
const TENANT_TABLES: &[&str] = &[
    "clients",
    "users",
    "client_connections",
    "credential_access_logs",
    "grants",
];

/// Settings that must keep otobot_api's statements and parameters out of the server log.
const LOG_SETTINGS: &[(&str, &str)] = &[
    ("log_statement", "none"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_transaction_sample_rate", "0"),
    ("log_parameter_max_length", "0"),
    ("log_parameter_max_length_on_error", "0"),
];

pub async fn run(args: Args) -> Result<()> {
    let mut report = Report::default();
    let settings = match Settings::from_env() {
        Ok(s) => {
            report.ok("configuration", "variables present and well-formed");
            caller_mode_check(&s, &mut report);
            Some(s)
        }
        Err(e) => {
            report.fail(
                "configuration",
                e.to_string(),
                "fix .env (or run `otobot gen-secrets` for a fresh one)",
            );
            None
        }
    };
    let keys = keys_from_env().ok();

    match args.db.connect().await {
        Err(e) => report.fail(
            "database",
            format!("{e:#}"),
            "check MIGRATION_DATABASE_URL or POSTGRES_USER/POSTGRES_PASSWORD/FRONTEND_DB_HOST/PORT/NAME, and that PostgreSQL runs",
        ),
        Ok(client) => {
            report.ok("database", format!("reachable: {}", args.db.database()?.redacted()));
            let lag_warn = settings
                .as_ref()
                .map_or(60, |s| s.audit_seal_lag_warn.as_secs());
            database_checks(&client, keys.as_ref(), lag_warn, &mut report).await;
        }
    }
    if let Some(settings) = &settings {
        match settings.database.connect().await {
            Ok(_) => report.ok(
                "api login",
                format!("otobot_api logs in: {}", settings.database.redacted()),
            ),
            Err(e) => report.fail(
                "api login",
                format!("{e:#}"),
                "check DATABASE_URL or FRONTEND_DB_USER/FRONTEND_DB_PASSWORD and pg_hba.conf",
            ),
        }
        let r = &settings.rate_limits;
        if r.superseded.is_empty() {
            report.ok(
                "rate limits",
                format!(
                    "{} a minute per caller, {} per caller and user, {} per anonymous address; {} trusted prox{}",
                    r.caller_per_minute,
                    r.user_per_minute,
                    r.address_per_minute,
                    r.trusted_proxies.len(),
                    if r.trusted_proxies.len() == 1 { "y" } else { "ies" }
                ),
            );
        } else {
            report.warn(
                "rate limits",
                format!("{} set but superseded and not applied", r.superseded.join(", ")),
                "remove them; RATE_LIMIT_CALLER_PER_MINUTE, RATE_LIMIT_USER_PER_MINUTE and RATE_LIMIT_ADDRESS_PER_MINUTE set the limits",
            );
        }
        let tls = settings.database.tls();
        let hosts = settings.database.pg_config().get_hosts();
        if tls.mode == crate::tls::SslMode::VerifyFull || crate::tls::all_local(hosts) {
            report.ok("database tls", format!("sslmode={}", tls.mode.as_str()));
        } else {
            report.warn(
                "database tls",
                format!(
                    "the database is remote and sslmode={}: its certificate is not verified",
                    tls.mode.as_str()
                ),
                "set FRONTEND_DB_SSLMODE=verify-full and FRONTEND_DB_SSLROOTCERT (or sslmode=verify-full&sslrootcert= in DATABASE_URL)",
            );
        }
    }
    http_checks(&mut report).await;

    let failed = report.0.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "ok": failed == 0, "checks": report.0 })
        );
    } else {
        for c in &report.0 {
            let mark = match c.status {
                Status::Ok => "✔",
                Status::Warn => "!",
                Status::Fail => "✘",
                Status::Skip => "-",
            };
            println!("{mark} {}: {}", c.name, c.message);
            if let Some(hint) = &c.hint {
                println!("    fix: {hint}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// SECURITY: a trusted caller's token alone reads every user's secrets (the
/// seed's behaviour): allowed for a migration period, never silently.
fn caller_mode_check(settings: &Settings, report: &mut Report) {
    let trusted: Vec<&str> = settings
        .internal_tokens
        .iter()
        .filter(|t| t.trusted)
        .map(|t| t.name.as_str())
        .collect();
    if trusted.is_empty() {
        report.ok(
            "caller modes",
            "every internal caller needs a user's grant to read a secret",
        );
    } else {
        report.warn(
            "caller modes",
            format!(
                "trusted caller(s) {}: the token alone reads every user's secrets, without a grant",
                trusted.join(", ")
            ),
            "once the workflows pass grants (the Otobot node's Grant parameter), set N8N_INTERNAL_TOKEN_MODE=grant and drop :trusted from INTERNAL_TOKENS",
        );
    }
}

async fn database_checks(
    client: &Client,
    keys: Option<&KeySet>,
    lag_warn_seconds: u64,
    report: &mut Report,
) {
    // Extension and its version.
    let binary = crate::migrate::EXTENSION_VERSION;
    match client
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'otobot'",
            &[],
        )
        .await
    {
        Ok(Some(row)) if row.get::<_, &str>(0) == binary => {
            report.ok("extension", format!("otobot {binary} installed"))
        }
        Ok(Some(row)) => report.fail(
            "extension",
            format!(
                "otobot {} installed, this binary's migrations expect {binary}",
                row.get::<_, &str>(0)
            ),
            "install the extension package of this release, then run `otobot migrate`",
        ),
        Ok(None) => report.fail(
            "extension",
            "the otobot extension is not installed in this database",
            "install it, then run `otobot migrate`",
        ),
        Err(e) => report.fail("extension", db_message(&e), "check the database"),
    }

    // Migrations.
    let embedded = crate::migrate::embedded();
    match crate::migrate::status(client, &embedded).await {
        Ok(entries) => {
            let not_applied: Vec<String> = entries
                .iter()
                .filter(|e| !matches!(e.state, crate::migrate::State::Applied(_)))
                .map(|e| format!("{} ({:?})", e.name, e.state))
                .collect();
            if not_applied.is_empty() {
                report.ok("migrations", format!("{} applied, current", embedded.len()));
            } else {
                report.fail(
                    "migrations",
                    format!("not current: {}", not_applied.join(", ")),
                    "run `otobot migrate` (or deploy the binary matching the database)",
                );
            }
        }
        Err(e) => report.fail("migrations", e.to_string(), "run `otobot migrate`"),
    }

    // Keys: check values, and every secret's version in the keyring.
    let mut keyring_loaded = false;
    match keys {
        None => report.fail(
            "keys",
            "ENCRYPTION_MASTER_KEY / ENCRYPTION_OLD_KEYS missing or malformed",
            "set them in .env (64 hex characters each)",
        ),
        Some(keys) => {
            // SECURITY: a rolled-back transaction: checking a version never records its check value.
            let checked = async {
                client.batch_execute("BEGIN").await?;
                let r = load_keyring(client, keys).await;
                client.batch_execute("ROLLBACK").await?;
                anyhow::Ok(r)
            }
            .await;
            match checked {
                Ok(Ok(())) => {
                    let versions: Vec<String> = std::iter::once(keys.current.version)
                        .chain(keys.old.iter().map(|k| k.version))
                        .map(|v| v.to_string())
                        .collect();
                    report.ok("keys", format!("key version(s) {} match their check values", versions.join(", ")));
                    keyring_loaded = load_keyring(client, keys).await.is_ok();
                }
                Ok(Err(e)) => report.fail("keys", format!("{e:#}"), "put the keys this database was encrypted with in ENCRYPTION_MASTER_KEY / ENCRYPTION_OLD_KEYS"),
                Err(e) => report.fail("keys", format!("{e:#}"), "check the database"),
            }
            match version_counts(client).await {
                Ok(counts) => {
                    let have = |v: i32| {
                        v == keys.current.version || keys.old.iter().any(|k| k.version == v)
                    };
                    let missing: Vec<String> = counts
                        .iter()
                        .filter(|c| !have(c.key_version))
                        .map(|c| {
                            format!("version {} ({} connections)", c.key_version, c.connections)
                        })
                        .collect();
                    let old: i64 = counts
                        .iter()
                        .filter(|c| c.key_version != keys.current.version)
                        .map(|c| c.connections)
                        .sum();
                    if !missing.is_empty() {
                        report.fail(
                            "secrets",
                            format!(
                                "secrets under key versions the keyring lacks: {}",
                                missing.join(", ")
                            ),
                            "add those versions to ENCRYPTION_OLD_KEYS as version:hex",
                        );
                    } else if old > 0 {
                        report.warn(
                            "secrets",
                            format!("{old} connections still under an old key version"),
                            "run `otobot rotate-key`",
                        );
                    } else {
                        let total: i64 = counts.iter().map(|c| c.connections).sum();
                        report.ok(
                            "secrets",
                            format!(
                                "{total} connections, all under key version {}",
                                keys.current.version
                            ),
                        );
                    }
                }
                Err(e) => report.fail("secrets", format!("{e:#}"), "run `otobot migrate`"),
            }
        }
    }

    grants_checks(client, report).await;
    rls_checks(client, report).await;

    // Audit chain, against the newest checkpoint the sealer published.
    if keyring_loaded {
        let anchor = find_anchor(client, None).await;
        let checkpoint = match &anchor {
            Ok(Anchor::Found(c)) => {
                report.ok(
                    "audit checkpoint",
                    format!(
                        "newest published head: link {} of {}",
                        c.seq,
                        c.sealed_at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                );
                Some(c)
            }
            Ok(Anchor::Missing(why)) => {
                report.warn("audit checkpoint", why.clone(), "run `otobot serve` with AUDIT_CHECKPOINT_FILE on storage the database's administrators cannot write, and run doctor where that file is");
                None
            }
            Err(e) => {
                report.fail(
                    "audit checkpoint",
                    format!("{e:#}"),
                    "check AUDIT_CHECKPOINT_FILE",
                );
                None
            }
        };
        match seal_and_verify(client, checkpoint).await {
            Ok(r) if r.ok => report.ok("audit chain", format!("verified: {} links", r.checked)),
            Ok(r) => report.fail("audit chain", format!("broken at link {}: {}", r.broken_seq.unwrap_or_default(), r.problem.unwrap_or_default()), "investigate now: an audit row was deleted, altered or forged, or sealed links were removed (see sql/audit_queries.sql)"),
            Err(e) => report.fail("audit chain", format!("{e:#}"), "every key version that sealed links must be in ENCRYPTION_OLD_KEYS to verify them"),
        }
    } else {
        report.skip("audit chain", "not verified: the keyring did not load");
    }
    match client.query_one("SELECT unsealed_rows, extract(epoch FROM oldest_unsealed_age)::float8 FROM otobot.audit_seal_lag()", &[]).await {
        Ok(row) => {
            let (rows, age): (i64, Option<f64>) = (row.get(0), row.get(1));
            let age = age.unwrap_or(0.0);
            if age > lag_warn_seconds as f64 {
                report.fail("audit seal lag", format!("{rows} rows unsealed, the oldest for {age:.0} s (AUDIT_SEAL_LAG_WARN_SECONDS = {lag_warn_seconds})"), "is `otobot serve` running? its sealer chains audit rows every second; a long transaction in the vault database (pg_stat_activity) also holds sealing back");
            } else {
                report.ok("audit seal lag", format!("{rows} rows waiting, the oldest for {age:.1} s"));
            }
        }
        Err(e) => report.fail("audit seal lag", db_message(&e), "run `otobot migrate`"),
    }

    session_state_checks(client, report).await;
    logging_checks(client, report).await;
}

/// SECURITY: the otobot.* settings decide scope and auditing; nobody but
/// otobot_owner may set them, and every session loads their definitions.
async fn session_state_checks(client: &Client, report: &mut Report) {
    let sql = "SELECT
        (SELECT count(*) FROM pg_catalog.pg_settings WHERE name LIKE 'otobot.%' AND context <> 'superuser'),
        (SELECT count(*) FROM pg_catalog.pg_settings WHERE name LIKE 'otobot.%'),
        EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) c
                WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
                  AND s.setrole = 0 AND c LIKE 'session_preload_libraries=%otobot%'),
        (SELECT string_agg(DISTINCT a.grantee::regrole::text, ', ')
         FROM pg_catalog.pg_parameter_acl p CROSS JOIN LATERAL aclexplode(p.paracl) a
         WHERE p.parname LIKE 'otobot.%' AND a.grantee <> 'otobot_owner'::regrole
           AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = a.grantee))";
    match client.query_one(sql, &[]).await {
        Ok(row) => {
            let (loose, defined, preloaded, others): (i64, i64, bool, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if defined == 0 || loose > 0 {
                report.fail(
                    "session state",
                    format!("{defined} otobot.* settings defined, {loose} not superuser-only"),
                    "install the extension of this release and run `otobot migrate`",
                );
            } else if let Some(others) = others {
                report.fail("session state", format!("SET on otobot.* settings is granted to {others}"), "REVOKE SET ON PARAMETER otobot.<name> FROM those roles: only otobot_owner may set them");
            } else if !preloaded {
                report.warn(
                    "session state",
                    "the vault database does not preload the otobot library",
                    "run `otobot migrate` (it sets session_preload_libraries for the database)",
                );
            } else {
                report.ok("session state", format!("{defined} otobot.* settings superuser-only, settable by otobot_owner alone, library preloaded"));
            }
        }
        Err(e) => report.fail("session state", db_message(&e), "run `otobot migrate`"),
    }
}

async fn grants_checks(client: &Client, report: &mut Report) {
    let roles: Result<Vec<(String, bool, bool)>, _> = client
        .query("SELECT rolname, rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname IN ('otobot_owner', 'otobot_api', 'otobot_auditor', 'otobot_dba')", &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect());
    match roles {
        Ok(roles) if roles.len() == 4 && roles.iter().all(|r| !r.1 && !r.2) => report.ok("roles", "otobot_owner, otobot_api, otobot_auditor, otobot_dba exist, none superuser or BYPASSRLS"),
        Ok(roles) => report.fail("roles", format!("roles not as designed: {roles:?}"), "run `otobot migrate`; no otobot role may be SUPERUSER or BYPASSRLS"),
        Err(e) => report.fail("roles", db_message(&e), "check the database"),
    }
    // SECURITY: the API must be blind to ciphertext: no privilege on any vault table.
    let api_tables: Result<Vec<String>, _> = client
        .query(
            "SELECT 'otobot.' || c.relname FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'otobot'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
               AND (pg_catalog.has_table_privilege('otobot_api', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
                    OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                               AND NOT a.attisdropped AND pg_catalog.has_column_privilege('otobot_api', c.oid, a.attnum, 'SELECT')))
             ORDER BY 1",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect());
    match api_tables {
        Ok(t) if t.is_empty() => report.ok(
            "api privileges",
            "otobot_api has no privilege on any vault table (blind to ciphertext)",
        ),
        Ok(t) => report.fail(
            "api privileges",
            format!("otobot_api can read or write {}", t.join(", ")),
            "REVOKE ALL ON those tables FROM otobot_api (it must only EXECUTE the API functions)",
        ),
        Err(e) => report.fail("api privileges", db_message(&e), "check the database"),
    }
    let auditor: Result<i64, _> = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid IN ('otobot.client_connections'::regclass, 'otobot.users'::regclass, 'otobot.clients'::regclass)
               AND a.attname IN ('encrypted_access_token', 'encrypted_refresh_token', 'password_hash')
               AND pg_catalog.has_column_privilege('otobot_auditor', a.attrelid, a.attnum, 'SELECT')",
            &[],
        )
        .await
        .map(|r| r.get(0));
    match auditor {
        Ok(0) => report.ok(
            "auditor privileges",
            "otobot_auditor cannot read ciphertext or password hashes",
        ),
        Ok(n) => report.fail(
            "auditor privileges",
            format!("otobot_auditor can read {n} secret column(s)"),
            "REVOKE SELECT on the ciphertext and password_hash columns FROM otobot_auditor",
        ),
        Err(e) => report.fail("auditor privileges", db_message(&e), "check the database"),
    }
    let public: Result<Vec<String>, _> = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
             CROSS JOIN LATERAL pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
             WHERE p.pronamespace = 'otobot'::regnamespace AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'
             ORDER BY 1",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect());
    match public {
        Ok(f) if f.is_empty() => report.ok(
            "public execute",
            "no function of schema otobot is executable by PUBLIC",
        ),
        Ok(f) => report.fail(
            "public execute",
            format!("executable by PUBLIC: {}", f.join(", ")),
            "REVOKE EXECUTE ON FUNCTION … FROM PUBLIC, then grant to the roles that need it",
        ),
        Err(e) => report.fail("public execute", db_message(&e), "check the database"),
    }
}

async fn rls_checks(client: &Client, report: &mut Report) {
    let rows = client
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'otobot'::regnamespace AND c.relkind = 'r'
               AND (c.relname = ANY ($1) OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid))
             ORDER BY 1",
            &[&TENANT_TABLES],
        )
        .await;
    match rows {
        Err(e) => report.fail("row-level security", db_message(&e), "check the database"),
        Ok(rows) => {
            let found: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            let mut bad: Vec<String> = rows
                .iter()
                .filter(|r| !(r.get::<_, bool>(1) && r.get::<_, bool>(2)))
                .map(|r| {
                    format!(
                        "{} ({})",
                        r.get::<_, String>(0),
                        if r.get::<_, bool>(1) {
                            "not forced"
                        } else {
                            "disabled"
                        }
                    )
                })
                .collect();
            bad.extend(
                TENANT_TABLES
                    .iter()
                    .filter(|t| !found.iter().any(|f| f == *t))
                    .map(|t| format!("{t} (missing)")),
            );
            if bad.is_empty() {
                report.ok(
                    "row-level security",
                    format!("enabled and forced on {} tables", found.len()),
                );
            } else {
                report.fail("row-level security", format!("not enabled and forced: {}", bad.join(", ")), "ALTER TABLE otobot.<table> ENABLE ROW LEVEL SECURITY; ALTER TABLE otobot.<table> FORCE ROW LEVEL SECURITY");
            }
        }
    }
}

async fn logging_checks(client: &Client, report: &mut Report) {
    // What an otobot_api session gets: database+role settings, then role, then
    // database, then the server's.
    let sql = "WITH s AS (
            SELECT split_part(cfg, '=', 1) AS name, substr(cfg, strpos(cfg, '=') + 1) AS value,
                   CASE WHEN d.setdatabase <> 0 AND d.setrole <> 0 THEN 1 WHEN d.setrole <> 0 THEN 2 ELSE 3 END AS rank
            FROM pg_catalog.pg_db_role_setting d
            CROSS JOIN LATERAL unnest(d.setconfig) AS cfg
            WHERE d.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'otobot_api'))
              AND d.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))
              AND NOT (d.setrole = 0 AND d.setdatabase = 0))
        SELECT n.name,
               COALESCE((SELECT s.value FROM s WHERE s.name = n.name ORDER BY s.rank LIMIT 1),
                        (SELECT reset_val FROM pg_catalog.pg_settings p WHERE p.name = n.name)) AS effective
        FROM unnest($1::text[]) AS n(name)";
    let names: Vec<&str> = LOG_SETTINGS
        .iter()
        .map(|(n, _)| *n)
        .chain([
            "auto_explain.log_min_duration",
            "shared_preload_libraries",
            "session_preload_libraries",
        ])
        .collect();
    let rows = match client.query(sql, &[&names]).await {
        Ok(rows) => rows,
        Err(e) => return report.fail("statement logging", db_message(&e), "check the database"),
    };
    let value = |name: &str| -> Option<String> {
        rows.iter()
            .find(|r| r.get::<_, &str>(0) == name)
            .and_then(|r| r.get::<_, Option<String>>(1))
    };
    let mut bad = Vec::new();
    for (name, safe) in LOG_SETTINGS {
        let v = value(name).unwrap_or_default();
        let ok = match *name {
            "log_statement" => v == "none" || v == "ddl",
            _ => v == *safe,
        };
        if !ok {
            bad.push(format!("{name} = {v}"));
        }
    }
    let preload = format!(
        "{},{}",
        value("shared_preload_libraries").unwrap_or_default(),
        value("session_preload_libraries").unwrap_or_default()
    );
    if preload.contains("auto_explain")
        && value("auto_explain.log_min_duration").as_deref() != Some("-1")
    {
        bad.push("auto_explain is loaded and may log otobot_api's statements".into());
    }
    if bad.is_empty() {
        report.ok(
            "statement logging",
            "otobot_api's statements and parameters are never logged",
        );
    } else {
        report.fail(
            "statement logging",
            format!("otobot_api sessions would log: {}", bad.join(", ")),
            "ALTER ROLE otobot_api SET log_statement = 'none'; … SET log_min_duration_statement = -1; … SET log_parameter_max_length = 0; … SET log_parameter_max_length_on_error = 0; … SET auto_explain.log_min_duration = -1",
        );
    }
}

async fn http_checks(report: &mut Report) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(h) => h,
        Err(e) => return report.fail("http", e.to_string(), "internal error"),
    };
    let var = |n: &str| {
        std::env::var(n)
            .ok()
            .map(|v| v.trim().trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty())
    };
    let api = var("PUBLIC_URL")
        .or_else(|| var("INTERNAL_API_PORT").map(|p| format!("http://127.0.0.1:{p}")));
    match api {
        None => report.skip("api health", "PUBLIC_URL and INTERNAL_API_PORT not set"),
        Some(base) => match http.get(format!("{base}/health")).send().await {
            Ok(r) if r.status().is_success() => report.ok(
                "api health",
                format!("{base}/health answers {}", r.status()),
            ),
            Ok(r) => report.fail(
                "api health",
                format!("{base}/health answers {}", r.status()),
                "read `otobot serve`'s log: 503 means the database or the keyring is not usable",
            ),
            Err(_) => report.fail(
                "api health",
                format!("{base}/health unreachable"),
                "start `otobot serve` (or fix PUBLIC_URL)",
            ),
        },
    }
    match var("N8N_WEBHOOK_URL") {
        None => report.skip("n8n", "N8N_WEBHOOK_URL not set"),
        Some(base) => match http.get(format!("{base}/healthz")).send().await {
            Ok(r) => report.ok("n8n", format!("{base} reachable ({})", r.status())),
            Err(_) => report.fail(
                "n8n",
                format!("{base} unreachable"),
                "start n8n, or fix N8N_WEBHOOK_URL",
            ),
        },
    }
}
