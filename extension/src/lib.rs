//! `otobot`: the vault core of Otobot as a PostgreSQL extension.
//!
//! AES-256-GCM with associated data over a per-backend keyring, and the keyed
//! MAC of the audit chain. The schema, roles and SECURITY DEFINER API live in
//! the project's `migrations/`; this crate is only the cryptography.

use pgrx::prelude::*;

mod audit;
mod crypto;
mod error;
mod keyring;
mod session;

use error::{OrRaise, OtobotError};

::pgrx::pg_module_magic!(name, version);

/// Runs once per backend when the library is loaded (at session start: the
/// vault database lists `otobot` in `session_preload_libraries`).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    session::define_settings();
}

extension_sql!(
    r#"
-- Check values of key versions: a one-way HKDF derivation of each key,
-- never the key. Registered by an owner (otobot_register_key); every load
-- must match.
CREATE TABLE @extschema@.key_versions (
    version     integer PRIMARY KEY CHECK (version >= 1),
    check_value bytea NOT NULL CHECK (octet_length(check_value) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    registered_by text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE @extschema@.key_versions IS
    'Otobot key check values (HKDF of each master key version, never the key itself), registered by an owner.';
REVOKE ALL ON @extschema@.key_versions FROM PUBLIC;
-- Backups (pg_dump) carry the check values, so a restore still rejects a wrong key.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.key_versions', '');
"#,
    name = "key_versions",
    bootstrap
);

fn decrypt_str(ciphertext: &str, aad: &str) -> Result<zeroize::Zeroizing<String>, OtobotError> {
    crypto::decrypt_into(ciphertext, aad, |plain| zeroize::Zeroizing::new(plain.to_owned()))
}

/// A `text` value built in PostgreSQL's memory straight from the decryption
/// buffer.
///
/// SECURITY: returning a Rust `String` would leave a plaintext copy in the
/// Rust heap, freed without being wiped, after PostgreSQL copied it. The
/// one copy left is the result datum PostgreSQL itself owns.
struct PlainText(pg_sys::Datum);

impl_sql_translatable!(PlainText, "text");

// SAFETY: the datum is a text varlena palloc'd in the function's memory context.
unsafe impl pgrx::callconv::BoxRet for PlainText {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

impl PlainText {
    fn copy_of(plain: &str) -> Self {
        // SAFETY: copies `len` bytes into a new palloc'd text (the length is
        // at most MAX_PLAINTEXT, well inside i32).
        let text = unsafe { pg_sys::cstring_to_text_with_len(plain.as_ptr().cast(), plain.len() as i32) };
        PlainText(pg_sys::Datum::from(text))
    }
}

/// Encrypt `plaintext` under the current key version, bound to `aad`
/// (`<connection id>:<column name>`). Returns `version:iv:tag:ciphertext`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_encrypt(plaintext: &str, aad: &str) -> String {
    crypto::encrypt(plaintext, aad).or_raise()
}

/// Decrypt a stored value with the key version it names, checking `aad`.
#[pg_extern(stable, strict, parallel_unsafe)]
fn otobot_decrypt(ciphertext: &str, aad: &str) -> PlainText {
    crypto::decrypt_into(ciphertext, aad, PlainText::copy_of).or_raise()
}

/// Decrypt with its own version and encrypt again under the current one
/// (key rotation). A value already under the current version is re-sealed too,
/// with a fresh IV.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_reencrypt(ciphertext: &str, aad: &str) -> String {
    let plain = decrypt_str(ciphertext, aad).or_raise();
    crypto::encrypt(&plain, aad).or_raise()
}

/// The key version a stored value names (no key needed). For rotation
/// progress and `doctor`.
#[pg_extern(immutable, strict, parallel_safe)]
fn otobot_key_version(ciphertext: &str) -> i32 {
    crypto::key_version(ciphertext).or_raise() as i32
}

/// Load one key version into this session's keyring. The key must match the
/// check value registered for its version; an unregistered version is refused
/// with an error naming it and the remedy. `is_current` makes it the version
/// new values are encrypted with.
///
/// SECURITY: SECURITY DEFINER so the caller needs no privilege on
/// `key_versions`; it reads that one table with one fixed, parameterised
/// statement, with a pinned search path. It never writes: first
/// registration is `otobot_register_key`'s, owners only.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn otobot_load_key(version: i32, key: &[u8], is_current: bool) {
    keyring::load(version, key, is_current).or_raise()
}

/// Register the check value of a key version (never the key). Returns true
/// when this call registered it, false when the same key already was; a
/// different key for a registered version is refused naming the version.
///
/// SECURITY: first registration decides which key a version is (trust on
/// first use), so EXECUTE is revoked from PUBLIC and granted by the
/// migrations to `otobot_owner` only (superusers always may): `otobot
/// migrate` and `rotate-key` run it, never the API. SECURITY DEFINER (the
/// extension owner, a superuser) only to insert into `key_versions`, with
/// one fixed, parameterised statement and a pinned search path.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn otobot_register_key(version: i32, key: &[u8]) -> bool {
    keyring::register(version, key).or_raise()
}

/// Zeroize and forget every key of this session.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_unload_keys() {
    keyring::unload()
}

/// The versions loaded in this session (never the keys).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_keyring() -> TableIterator<'static, (name!(version, i32), name!(is_current, bool))> {
    TableIterator::new(keyring::with(|k| k.versions()).into_iter().map(|(v, c)| (v as i32, c)))
}

/// The current key version of this session; an error when none is loaded.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_current_key_version() -> i32 {
    keyring::with(|k| k.current().map(|(v, _)| v as i32)).or_raise()
}

/// HMAC-SHA256 of `message` under the audit-chain key of `key_version`.
#[pg_extern(stable, strict, parallel_unsafe)]
fn otobot_audit_mac(key_version: i32, message: &[u8]) -> Vec<u8> {
    if key_version < 1 {
        OtobotError::BadKeyVersion(key_version).raise();
    }
    let mac = audit::mac(key_version as u32, message);
    // SECURITY: the HMAC state (as good as the chain key) stays on the stack otherwise.
    keyring::scrub_stack::<256>();
    mac.or_raise()
}

extension_sql!(
    r#"
-- SECURITY: nothing of the extension is callable by PUBLIC; the migrations
-- grant each function to the roles that need it.
DO $revoke$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT d.objid::regprocedure
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.classid = 'pg_catalog.pg_proc'::regclass
          AND e.extname = 'otobot'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$revoke$;
COMMENT ON FUNCTION @extschema@.otobot_encrypt(text, text) IS
    'Encrypt under the current key version with AES-256-GCM, bound to the associated data; returns version:iv:tag:ciphertext.';
COMMENT ON FUNCTION @extschema@.otobot_decrypt(text, text) IS
    'Decrypt a version:iv:tag:ciphertext value; fails on a wrong key, a wrong associated data or any alteration.';
COMMENT ON FUNCTION @extschema@.otobot_reencrypt(text, text) IS
    'Re-encrypt a value under the current key version (rotation).';
COMMENT ON FUNCTION @extschema@.otobot_load_key(integer, bytea, boolean) IS
    'Load a registered key version into this session''s keyring after checking it against key_versions.';
COMMENT ON FUNCTION @extschema@.otobot_register_key(integer, bytea) IS
    'Register the check value of a key version (owners only: otobot migrate, rotate-key); true when newly registered.';
"#,
    name = "finalize",
    finalize
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const K1: &str = "'\\x0101010101010101010101010101010101010101010101010101010101010101'::bytea";
    const K2: &str = "'\\x0202020202020202020202020202020202020202020202020202020202020202'::bytea";
    const K3: &str = "'\\x0303030303030303030303030303030303030303030303030303030303030303'::bytea";

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn one(sql: &str) -> String {
        Spi::get_one::<String>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .expect("a value")
    }

    fn fails_with(sql: &str, needle: &str) {
        let r = PgTryBuilder::new(|| Spi::run(sql).map(|_| String::new()).unwrap_or_else(|e| e.to_string()))
            .catch_others(|e| match e {
                pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => {
                    r.message().to_string()
                }
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            })
            .execute();
        assert!(
            r.contains(needle),
            "{sql}: expected an error containing {needle:?}, got {r:?}"
        );
    }

    /// Registers `key` for `version` as this superuser session may.
    fn register(version: i32, key: &str) {
        run(&format!("SELECT otobot.otobot_register_key({version}, {key})"));
    }

    fn load(version: i32, key: &str, current: bool) {
        register(version, key);
        run(&format!("SELECT otobot.otobot_load_key({version}, {key}, {current})"));
    }

    #[pg_test]
    fn with_no_key_loaded_encryption_is_a_clear_error() {
        run("SELECT otobot.otobot_unload_keys()");
        fails_with("SELECT otobot.otobot_encrypt('x', 'a')", "no encryption key is loaded");
    }

    #[pg_test]
    fn a_value_round_trips_through_sql() {
        load(1, K1, true);
        let out = one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('ya29.secret', 'c1:encrypted_access_token'), 'c1:encrypted_access_token')");
        assert_eq!(out, "ya29.secret");
        let multibyte = one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('clé ✓ 🔑', 'a'), 'a')");
        assert_eq!(multibyte, "clé ✓ 🔑");
        assert_eq!(
            one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('', 'a'), 'a')"),
            ""
        );
        let v = Spi::get_one::<i32>("SELECT otobot.otobot_key_version(otobot.otobot_encrypt('x', 'a'))").unwrap();
        assert_eq!(v, Some(1));
        let typed = one("SELECT pg_typeof(otobot.otobot_decrypt(otobot.otobot_encrypt('x', 'a'), 'a'))::text");
        assert_eq!(typed, "text");
    }

    #[pg_test]
    fn the_wrong_associated_data_fails_authentication() {
        load(1, K1, true);
        fails_with(
            "SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('s', 'c1:encrypted_access_token'), 'c2:encrypted_access_token')",
            "authentication failed",
        );
    }

    #[pg_test]
    fn a_wrong_key_for_a_registered_version_is_refused_naming_the_version() {
        load(1, K1, true);
        fails_with(
            &format!("SELECT otobot.otobot_load_key(1, {K2}, true)"),
            "key check failed for version 1",
        );
        fails_with(
            &format!("SELECT otobot.otobot_register_key(1, {K2})"),
            "key check failed for version 1",
        );
        // The good key still works after the refused load.
        assert_eq!(
            one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('x','a'),'a')"),
            "x"
        );
    }

    #[pg_test]
    fn loading_an_unregistered_version_is_refused_naming_it_and_the_remedy() {
        fails_with(
            &format!("SELECT otobot.otobot_load_key(7, {K3}, false)"),
            "key version 7 is not registered",
        );
        fails_with(
            &format!("SELECT otobot.otobot_load_key(7, {K3}, false)"),
            "run `otobot migrate`",
        );
        let n = Spi::get_one::<i64>("SELECT count(*) FROM otobot.key_versions WHERE version = 7").unwrap();
        assert_eq!(n, Some(0), "loading must never register");
        let held = Spi::get_one::<i64>("SELECT count(*) FROM otobot.otobot_keyring() WHERE version = 7").unwrap();
        assert_eq!(held, Some(0));
    }

    #[pg_test]
    fn registering_records_the_check_value_once_and_never_the_key() {
        let first = Spi::get_one::<bool>(&format!("SELECT otobot.otobot_register_key(8, {K3})")).unwrap();
        let again = Spi::get_one::<bool>(&format!("SELECT otobot.otobot_register_key(8, {K3})")).unwrap();
        assert_eq!((first, again), (Some(true), Some(false)));
        let r =
            one("SELECT octet_length(check_value) || ' ' || registered_by FROM otobot.key_versions WHERE version = 8");
        assert_eq!(r, format!("32 {}", one("SELECT session_user::text")));
        let leaked =
            Spi::get_one::<bool>(&format!("SELECT bool_or(check_value = {K3}) FROM otobot.key_versions")).unwrap();
        assert_eq!(leaked, Some(false));
        run(&format!("SELECT otobot.otobot_load_key(8, {K3}, false)"));
        fails_with(
            &format!("SELECT otobot.otobot_register_key(8, {K1})"),
            "key check failed for version 8",
        );
        fails_with(
            &format!("SELECT otobot.otobot_register_key(0, {K1})"),
            "versions start at 1",
        );
        fails_with(
            &format!("SELECT otobot.otobot_register_key(9, {K1}::bytea || '\\x00'::bytea)"),
            "must be exactly 32 bytes",
        );
    }

    #[pg_test]
    fn a_role_without_execute_cannot_register_a_key_version() {
        run("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otobot_test_nobody') THEN CREATE ROLE otobot_test_nobody; END IF; END $$");
        run("GRANT USAGE ON SCHEMA otobot TO otobot_test_nobody");
        run("SET ROLE otobot_test_nobody");
        fails_with(
            &format!("SELECT otobot.otobot_register_key(11, {K1})"),
            "permission denied for function otobot_register_key",
        );
        run("RESET ROLE");
        let n = Spi::get_one::<i64>("SELECT count(*) FROM otobot.key_versions WHERE version = 11").unwrap();
        assert_eq!(n, Some(0));
    }

    #[pg_test]
    fn an_old_version_still_decrypts_and_reencrypt_moves_to_the_current_one() {
        load(1, K1, true);
        let old = one("SELECT otobot.otobot_encrypt('legacy-token', 'c:encrypted_access_token')");
        assert!(old.starts_with("1:"));
        load(2, K2, true);
        let current = Spi::get_one::<i32>("SELECT otobot.otobot_current_key_version()").unwrap();
        assert_eq!(current, Some(2));
        assert_eq!(
            one(&format!(
                "SELECT otobot.otobot_decrypt('{old}', 'c:encrypted_access_token')"
            )),
            "legacy-token"
        );
        let moved = one(&format!(
            "SELECT otobot.otobot_reencrypt('{old}', 'c:encrypted_access_token')"
        ));
        assert!(moved.starts_with("2:"), "{moved}");
        assert_eq!(
            one(&format!(
                "SELECT otobot.otobot_decrypt('{moved}', 'c:encrypted_access_token')"
            )),
            "legacy-token"
        );
        let versions =
            one("SELECT string_agg(version || ':' || is_current, ',' ORDER BY version) FROM otobot.otobot_keyring()");
        assert_eq!(versions, "1:false,2:true");
    }

    #[pg_test]
    fn an_unknown_version_and_malformed_values_are_errors() {
        load(1, K1, true);
        let s = one("SELECT otobot.otobot_encrypt('x', 'a')");
        let as_v9 = format!("9{}", &s[1..]);
        fails_with(
            &format!("SELECT otobot.otobot_decrypt('{as_v9}', 'a')"),
            "unknown key version 9",
        );
        fails_with("SELECT otobot.otobot_decrypt('', 'a')", "malformed ciphertext");
        fails_with("SELECT otobot.otobot_decrypt('1:00:00', 'a')", "malformed ciphertext");
        fails_with(
            "SELECT otobot.otobot_decrypt(repeat('1', 3000000), 'a')",
            "malformed ciphertext",
        );
        fails_with(
            &format!("SELECT otobot.otobot_load_key(3, {K1}::bytea || '\\x00'::bytea, true)"),
            "must be exactly 32 bytes",
        );
        fails_with(
            &format!("SELECT otobot.otobot_load_key(0, {K1}, true)"),
            "versions start at 1",
        );
    }

    #[pg_test]
    fn nothing_in_the_extension_is_executable_by_public() {
        let open = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'otobot'
             WHERE p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)",
        )
        .unwrap();
        assert_eq!(open, Some(0));
    }

    #[pg_test]
    fn load_and_register_are_security_definer_with_a_pinned_search_path() {
        for f in ["otobot_load_key", "otobot_register_key"] {
            let r = one(&format!(
                "SELECT prosecdef::text || ' ' || array_to_string(proconfig, ',') FROM pg_proc WHERE proname = '{f}'"
            ));
            assert!(r.starts_with("true search_path=pg_catalog"), "{f}: {r}");
        }
        let parallel = one("SELECT string_agg(DISTINCT proparallel::text, '') FROM pg_proc WHERE proname IN ('otobot_encrypt','otobot_decrypt','otobot_reencrypt','otobot_load_key','otobot_register_key','otobot_audit_mac')");
        assert_eq!(parallel, "u");
    }

    #[pg_test]
    fn the_audit_mac_depends_on_the_key_version() {
        load(1, K1, true);
        load(2, K2, false);
        let same = Spi::get_one::<bool>("SELECT otobot.otobot_audit_mac(1, 'row') = otobot.otobot_audit_mac(1, 'row')")
            .unwrap();
        let differ =
            Spi::get_one::<bool>("SELECT otobot.otobot_audit_mac(1, 'row') <> otobot.otobot_audit_mac(2, 'row')")
                .unwrap();
        assert_eq!((same, differ), (Some(true), Some(true)));
        fails_with("SELECT otobot.otobot_audit_mac(5, 'row')", "unknown key version 5");
    }

    #[pg_test]
    fn a_backend_that_handled_a_key_cannot_be_dumped() {
        load(1, K1, true);
        assert!(
            !crate::keyring::is_dumpable(),
            "PR_SET_DUMPABLE must be 0 once a key is loaded"
        );
    }

    #[pg_test]
    fn every_otobot_setting_is_superuser_only_and_kept_out_of_files() {
        let settings = one(
            "SELECT string_agg(name || ':' || context, ',' ORDER BY name) FROM pg_settings WHERE name LIKE 'otobot.%'",
        );
        assert_eq!(
            settings,
            "otobot.client_id:superuser,otobot.reason:superuser,otobot.request_id:superuser,otobot.scope:superuser,\
             otobot.source:superuser,otobot.token_change:superuser,otobot.user_id:superuser"
        );
        for (name, _) in crate::session::SETTINGS {
            let name = name.to_str().unwrap();
            assert_eq!(
                one(&format!("SELECT current_setting('{name}')")),
                "",
                "{name} starts empty"
            );
        }
    }

    #[pg_test]
    fn the_otobot_prefix_is_reserved() {
        fails_with("SET otobot.made_up = 'x'", "invalid configuration parameter name");
        fails_with(
            "SELECT set_config('otobot.scope_override', 'system', true)",
            "invalid configuration parameter name",
        );
    }

    #[pg_test]
    fn a_role_may_set_an_otobot_setting_only_when_granted() {
        run("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otobot_test_caller') THEN CREATE ROLE otobot_test_caller; END IF; END $$");
        run("SET ROLE otobot_test_caller");
        fails_with(
            "SET otobot.scope = 'system'",
            "permission denied to set parameter \"otobot.scope\"",
        );
        fails_with(
            "SET LOCAL otobot.token_change = 'key_rotation'",
            "permission denied to set parameter",
        );
        fails_with(
            "SELECT set_config('otobot.reason', 'spoofed', true)",
            "permission denied to set parameter",
        );
        run("RESET ROLE");
        // What the migrations grant otobot_owner, so its SECURITY DEFINER functions can set them.
        run("GRANT SET ON PARAMETER otobot.reason TO otobot_test_caller");
        run("SET ROLE otobot_test_caller");
        run("SELECT set_config('otobot.reason', 'granted', true)");
        assert_eq!(one("SELECT current_setting('otobot.reason')"), "granted");
        run("RESET ROLE");
        run("REVOKE SET ON PARAMETER otobot.reason FROM otobot_test_caller");
    }

    #[pg_test]
    fn role_and_database_defaults_of_otobot_settings_are_refused_even_for_a_superuser() {
        run("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otobot_test_caller') THEN CREATE ROLE otobot_test_caller; END IF; END $$");
        fails_with(
            "ALTER ROLE otobot_test_caller SET otobot.scope = 'system'",
            "invalid value for parameter \"otobot.scope\"",
        );
        fails_with(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET otobot.token_change = %L', current_database(), 'key_rotation'); END $$",
            "invalid value for parameter \"otobot.token_change\"",
        );
        // A superuser in a session still may (that is how the migrations' tests set a scope by hand).
        run("SELECT set_config('otobot.scope', 'system', true)");
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
