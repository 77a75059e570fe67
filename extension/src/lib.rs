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

use error::{OrRaise, OtobotError};

::pgrx::pg_module_magic!(name, version);

extension_sql!(
    r#"
-- Check values of key versions: a one-way HKDF derivation of each key,
-- never the key. The first load of a version records it; later loads must match.
CREATE TABLE @extschema@.key_versions (
    version     integer PRIMARY KEY CHECK (version >= 1),
    check_value bytea NOT NULL CHECK (octet_length(check_value) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.key_versions IS
    'Otobot key check values (HKDF of each master key version, never the key itself).';
REVOKE ALL ON @extschema@.key_versions FROM PUBLIC;
-- Backups (pg_dump) carry the check values, so a restore still rejects a wrong key.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.key_versions', '');
"#,
    name = "key_versions",
    bootstrap
);

fn decrypt_str(ciphertext: &str, aad: &str) -> Result<String, OtobotError> {
    let sealed = crypto::parse(ciphertext)?;
    // The plaintext is only ever in a buffer zeroized on return, and in the
    // one String handed to PostgreSQL.
    keyring::with(|k| {
        crypto::decrypt_with(&k.get(sealed.version)?.cipher, &sealed, aad.as_bytes(), |plain| {
            std::str::from_utf8(plain).map(str::to_owned).map_err(|_| OtobotError::NotUtf8)
        })
    })?
}

fn encrypt_str(plaintext: &str, aad: &str) -> Result<String, OtobotError> {
    keyring::with(|k| {
        let (version, entry) = k.current()?;
        keyring::with_rng(|rng| crypto::encrypt(&entry.cipher, version, rng, plaintext.as_bytes(), aad.as_bytes()))
    })
}

/// Encrypt `plaintext` under the current key version, bound to `aad`
/// (`<connection id>:<column name>`). Returns `version:iv:tag:ciphertext`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_encrypt(plaintext: &str, aad: &str) -> String {
    encrypt_str(plaintext, aad).or_raise()
}

/// Decrypt a stored value with the key version it names, checking `aad`.
#[pg_extern(stable, strict, parallel_unsafe)]
fn otobot_decrypt(ciphertext: &str, aad: &str) -> String {
    decrypt_str(ciphertext, aad).or_raise()
}

/// Decrypt with its own version and encrypt again under the current one
/// (key rotation). A value already under the current version is re-sealed too,
/// with a fresh IV.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn otobot_reencrypt(ciphertext: &str, aad: &str) -> String {
    let plain = zeroize::Zeroizing::new(decrypt_str(ciphertext, aad).or_raise());
    encrypt_str(&plain, aad).or_raise()
}

/// The key version a stored value names (no key needed). For rotation
/// progress and `doctor`.
#[pg_extern(immutable, strict, parallel_safe)]
fn otobot_key_version(ciphertext: &str) -> i32 {
    let version = ciphertext.split(':').next().unwrap_or("");
    crypto::parse_version(version).or_raise() as i32
}

/// Load one key version into this session's keyring. The key must match the
/// check value recorded for its version; the first load of a version records
/// it. `is_current` makes it the version new values are encrypted with.
///
/// SECURITY: SECURITY DEFINER so the caller needs no privilege on
/// `key_versions`; it runs two fixed, parameterised statements on that one
/// table, with a pinned search path.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn otobot_load_key(version: i32, key: &[u8], is_current: bool) {
    keyring::load(version, key, is_current).or_raise()
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
    audit::mac(key_version as u32, message).or_raise()
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
    'Load a key version into this session''s keyring after checking it against key_versions.';
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
        Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).expect("a value")
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
        assert!(r.contains(needle), "{sql}: expected an error containing {needle:?}, got {r:?}");
    }

    #[pg_test]
    fn with_no_key_loaded_encryption_is_a_clear_error() {
        run("SELECT otobot.otobot_unload_keys()");
        fails_with("SELECT otobot.otobot_encrypt('x', 'a')", "no encryption key is loaded");
    }

    #[pg_test]
    fn a_value_round_trips_through_sql() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        let out = one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('ya29.secret', 'c1:encrypted_access_token'), 'c1:encrypted_access_token')");
        assert_eq!(out, "ya29.secret");
        let v = Spi::get_one::<i32>("SELECT otobot.otobot_key_version(otobot.otobot_encrypt('x', 'a'))").unwrap();
        assert_eq!(v, Some(1));
    }

    #[pg_test]
    fn the_wrong_associated_data_fails_authentication() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        fails_with(
            "SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('s', 'c1:encrypted_access_token'), 'c2:encrypted_access_token')",
            "authentication failed",
        );
    }

    #[pg_test]
    fn a_wrong_key_for_a_recorded_version_is_refused_naming_the_version() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        fails_with(&format!("SELECT otobot.otobot_load_key(1, {K2}, true)"), "key check failed for version 1");
        // The good key still works after the refused load.
        assert_eq!(one("SELECT otobot.otobot_decrypt(otobot.otobot_encrypt('x','a'),'a')"), "x");
    }

    #[pg_test]
    fn the_first_load_of_a_version_records_its_check_value() {
        run(&format!("SELECT otobot.otobot_load_key(7, {K3}, false)"));
        let n = Spi::get_one::<i64>("SELECT count(*) FROM otobot.key_versions WHERE version = 7 AND octet_length(check_value) = 32").unwrap();
        assert_eq!(n, Some(1));
        let leaked = Spi::get_one::<bool>(&format!("SELECT bool_or(check_value = {K3}) FROM otobot.key_versions")).unwrap();
        assert_eq!(leaked, Some(false));
    }

    #[pg_test]
    fn an_old_version_still_decrypts_and_reencrypt_moves_to_the_current_one() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        let old = one("SELECT otobot.otobot_encrypt('legacy-token', 'c:encrypted_access_token')");
        assert!(old.starts_with("1:"));
        run(&format!("SELECT otobot.otobot_load_key(2, {K2}, true)"));
        let current = Spi::get_one::<i32>("SELECT otobot.otobot_current_key_version()").unwrap();
        assert_eq!(current, Some(2));
        assert_eq!(one(&format!("SELECT otobot.otobot_decrypt('{old}', 'c:encrypted_access_token')")), "legacy-token");
        let moved = one(&format!("SELECT otobot.otobot_reencrypt('{old}', 'c:encrypted_access_token')"));
        assert!(moved.starts_with("2:"), "{moved}");
        assert_eq!(one(&format!("SELECT otobot.otobot_decrypt('{moved}', 'c:encrypted_access_token')")), "legacy-token");
        let versions = one("SELECT string_agg(version || ':' || is_current, ',' ORDER BY version) FROM otobot.otobot_keyring()");
        assert_eq!(versions, "1:false,2:true");
    }

    #[pg_test]
    fn an_unknown_version_and_malformed_values_are_errors() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        let s = one("SELECT otobot.otobot_encrypt('x', 'a')");
        let as_v9 = format!("9{}", &s[1..]);
        fails_with(&format!("SELECT otobot.otobot_decrypt('{as_v9}', 'a')"), "unknown key version 9");
        fails_with("SELECT otobot.otobot_decrypt('', 'a')", "malformed ciphertext");
        fails_with("SELECT otobot.otobot_decrypt('1:00:00', 'a')", "malformed ciphertext");
        fails_with("SELECT otobot.otobot_decrypt(repeat('1', 3000000), 'a')", "malformed ciphertext");
        fails_with(&format!("SELECT otobot.otobot_load_key(3, {K1}::bytea || '\\x00'::bytea, true)"), "must be exactly 32 bytes");
        fails_with(&format!("SELECT otobot.otobot_load_key(0, {K1}, true)"), "versions start at 1");
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
    fn load_key_is_security_definer_with_a_pinned_search_path() {
        let r = one(
            "SELECT prosecdef::text || ' ' || array_to_string(proconfig, ',') FROM pg_proc WHERE proname = 'otobot_load_key'",
        );
        assert!(r.starts_with("true search_path=pg_catalog"), "{r}");
        let parallel = one("SELECT string_agg(DISTINCT proparallel::text, '') FROM pg_proc WHERE proname IN ('otobot_encrypt','otobot_decrypt','otobot_reencrypt','otobot_load_key','otobot_audit_mac')");
        assert_eq!(parallel, "u");
    }

    #[pg_test]
    fn the_audit_mac_depends_on_the_key_version() {
        run(&format!("SELECT otobot.otobot_load_key(1, {K1}, true)"));
        run(&format!("SELECT otobot.otobot_load_key(2, {K2}, false)"));
        let same = Spi::get_one::<bool>("SELECT otobot.otobot_audit_mac(1, 'row') = otobot.otobot_audit_mac(1, 'row')").unwrap();
        let differ = Spi::get_one::<bool>("SELECT otobot.otobot_audit_mac(1, 'row') <> otobot.otobot_audit_mac(2, 'row')").unwrap();
        assert_eq!((same, differ), (Some(true), Some(true)));
        fails_with("SELECT otobot.otobot_audit_mac(5, 'row')", "unknown key version 5");
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
