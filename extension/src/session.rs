//! The vault's session state: the `otobot.*` settings that scope row-level
//! security and steer auditing (which user a call acts for, the caller, the
//! request id, why a token changed, why a connection was deactivated).
//!
//! SECURITY: session state is not an input. Each setting is defined here as
//! superuser-only (`PGC_SUSET`); the migrations grant `SET` on them to
//! `otobot_owner` alone, so only the vault's SECURITY DEFINER functions set
//! them (transaction-local, undone when the function returns), and the API,
//! auditor and DBA roles get "permission denied" whether by `SET`,
//! `set_config()`, or `ALTER ROLE … SET`. A value may come only from a
//! session (`SET`/`set_config`), never from a configuration file, a role or
//! database default, or connection options: those are refused by the check
//! hook, for superusers too. The `otobot` prefix is reserved, so no other
//! `otobot.*` placeholder can be created once the library is loaded.
//!
//! A placeholder a caller set before the library was loaded in its session is
//! re-applied by PostgreSQL when the settings are defined, with the caller's
//! privileges: refused, it is discarded with a WARNING (tested). The vault
//! database preloads the library at session start anyway (migration 0008).

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys};

/// Every `otobot.*` setting the migrations read or write. A migration that
/// needs another one must add it here (the prefix is reserved) and grant
/// `SET` on it to `otobot_owner`.
pub const SETTINGS: [(&CStr, &CStr); 7] = [
    (
        c"otobot.scope",
        c"Otobot: the scope of the current vault call (user, admin, system).",
    ),
    (c"otobot.user_id", c"Otobot: the user the current vault call acts for."),
    (c"otobot.client_id", c"Otobot: the client of that user."),
    (c"otobot.source", c"Otobot: the caller recorded in audit rows."),
    (c"otobot.request_id", c"Otobot: the request id recorded in audit rows."),
    (
        c"otobot.token_change",
        c"Otobot: why the current vault call changes tokens (audit action).",
    ),
    (
        c"otobot.reason",
        c"Otobot: why the current vault call changes a connection (audit detail).",
    ),
];

static VALUES: [GucSetting<Option<CString>>; SETTINGS.len()] =
    [const { GucSetting::<Option<CString>>::new(Some(c"")) }; SETTINGS.len()];

/// SECURITY: a value set in a session (`SET`, `set_config()`, a function's
/// `SET` clause) or the built-in default; never one read from
/// postgresql.conf, `ALTER SYSTEM`, `ALTER ROLE/DATABASE … SET`, or the
/// client's connection options (`-c otobot.scope=system`).
#[pg_guard]
unsafe extern "C-unwind" fn only_from_a_session(
    _newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    matches!(
        source,
        pg_sys::GucSource::PGC_S_DEFAULT | pg_sys::GucSource::PGC_S_SESSION
    )
}

/// Defines the settings and reserves the prefix. Called from `_PG_init`.
pub fn define_settings() {
    let flags = GucFlags::DISALLOW_IN_FILE | GucFlags::DISALLOW_IN_AUTO_FILE;
    for ((name, description), value) in SETTINGS.iter().zip(VALUES.iter()) {
        // SAFETY: the check hook is a #[pg_guard] function that cannot panic.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                name,
                description,
                c"Set only by Otobot's SECURITY DEFINER functions.",
                value,
                GucContext::Suset,
                flags,
                Some(only_from_a_session),
                None,
                None,
            );
        }
    }
    // SAFETY: a NUL-terminated string; PostgreSQL copies it.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"otobot".as_ptr()) };
}
