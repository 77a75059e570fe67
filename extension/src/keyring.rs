//! The per-backend keyring: key versions loaded by the API into its pooled
//! sessions. Keys live only in this backend's memory.
//!
//! SECURITY: keys never touch a GUC, a table, a log line or an error. Entries
//! are zeroized when replaced, when unloaded, and at backend exit.

use std::cell::RefCell;

use pgrx::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::{self, KEY_LEN};
use crate::error::OtobotError;

pub struct KeyEntry {
    pub cipher: crypto::Cipher,
    /// HMAC key of the audit chain, derived from this version's master key.
    pub mac_key: Zeroizing<[u8; 32]>,
}

#[derive(Default)]
pub struct Keyring {
    /// Few entries (one per key version): a vector beats a map here.
    entries: Vec<(u32, KeyEntry)>,
    current: Option<u32>,
}

impl Keyring {
    pub fn get(&self, version: u32) -> Result<&KeyEntry, OtobotError> {
        if self.entries.is_empty() {
            return Err(OtobotError::NoKeyLoaded);
        }
        self.entries
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, e)| e)
            .ok_or(OtobotError::UnknownKeyVersion(version))
    }

    pub fn current(&self) -> Result<(u32, &KeyEntry), OtobotError> {
        if self.entries.is_empty() {
            return Err(OtobotError::NoKeyLoaded);
        }
        let v = self.current.ok_or(OtobotError::NoCurrentKey)?;
        Ok((v, self.get(v)?))
    }

    fn insert(&mut self, version: u32, entry: KeyEntry, is_current: bool) {
        // Dropping the replaced entry zeroizes its MAC key (Zeroizing), its
        // GHASH key (crypto::Cipher) and its AES round keys (the `aes`
        // crate's `zeroize` feature, enabled in Cargo.toml).
        self.entries.retain(|(v, _)| *v != version);
        self.entries.push((version, entry));
        self.entries.sort_by_key(|(v, _)| *v);
        if is_current {
            self.current = Some(version);
        } else if self.current == Some(version) {
            self.current = None;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.current = None;
    }

    pub fn versions(&self) -> Vec<(u32, bool)> {
        self.entries.iter().map(|(v, _)| (*v, Some(*v) == self.current)).collect()
    }
}

thread_local! {
    // `const`: no lazy-initialisation check on each access (every encrypt and decrypt).
    static KEYRING: RefCell<Keyring> = const { RefCell::new(Keyring { entries: Vec::new(), current: None }) };
    static RNG: RefCell<Option<(i32, ChaCha20Rng)>> = const { RefCell::new(None) };
    static EXIT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn with<R>(f: impl FnOnce(&Keyring) -> R) -> R {
    KEYRING.with(|k| f(&k.borrow()))
}

/// Run `f` with this backend's IV generator.
///
/// SECURITY: a ChaCha20 CSPRNG seeded from the OS. The seed is tied to the
/// backend's pid: a state inherited across fork() (a library preloaded in the
/// postmaster) would repeat IVs in two backends, which breaks GCM, so a pid
/// change reseeds.
pub fn with_rng<R>(f: impl FnOnce(&mut ChaCha20Rng) -> R) -> R {
    // SAFETY: MyProcPid is a plain int set by PostgreSQL at backend start.
    let pid = unsafe { pg_sys::MyProcPid };
    RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some((p, _)) if *p == pid) {
            let mut seed = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(seed.as_mut());
            *slot = Some((pid, ChaCha20Rng::from_seed(*seed)));
        }
        f(&mut slot.as_mut().expect("seeded above").1)
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn wipe_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    let _ = KEYRING.try_with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            k.clear()
        }
    });
}

fn ensure_exit_hook() {
    EXIT_HOOK.with(|done| {
        if !done.get() {
            // SAFETY: registers a plain callback for this backend's exit.
            unsafe { pg_sys::on_proc_exit(Some(wipe_at_exit), pg_sys::Datum::from(0)) };
            done.set(true);
        }
    });
}

/// Compare `check` with the value recorded for `version`; record it if the
/// version is new. Race-safe: the insert never overwrites, then we re-read.
fn check_or_record(version: u32, check: &[u8; 32]) -> Result<(), OtobotError> {
    const READ: &str = "SELECT (SELECT check_value FROM otobot.key_versions WHERE version = $1)";
    let v = version as i32;
    let read = || -> Result<Option<Vec<u8>>, OtobotError> {
        Spi::get_one_with_args::<Vec<u8>>(READ, &[v.into()]).map_err(|_| OtobotError::KeyCheckStore(version))
    };
    let stored = match read()? {
        Some(s) => s,
        None => {
            Spi::run_with_args(
                "INSERT INTO otobot.key_versions (version, check_value) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                &[v.into(), check.to_vec().into()],
            )
            .map_err(|_| OtobotError::KeyCheckStore(version))?;
            read()?.ok_or(OtobotError::KeyCheckStore(version))?
        }
    };
    // SECURITY: constant-time comparison of the check values.
    if stored.len() == check.len() && bool::from(stored.as_slice().ct_eq(check)) {
        Ok(())
    } else {
        Err(OtobotError::KeyCheckMismatch(version))
    }
}

/// Verify `key` against the database's check value, then hold it.
pub fn load(version: i32, key: &[u8], is_current: bool) -> Result<(), OtobotError> {
    if version < 1 {
        return Err(OtobotError::BadKeyVersion(version));
    }
    if key.len() != KEY_LEN {
        return Err(OtobotError::BadKeyLength(version));
    }
    let mut master = Zeroizing::new([0u8; KEY_LEN]);
    master.copy_from_slice(key);
    let version = version as u32;
    check_or_record(version, &crypto::key_check(&master))?;
    let entry = KeyEntry {
        cipher: crypto::new_cipher(&master),
        mac_key: crypto::derive(&master, crypto::LABEL_AUDIT_CHAIN),
    };
    ensure_exit_hook();
    KEYRING.with(|k| k.borrow_mut().insert(version, entry, is_current));
    Ok(())
}

pub fn unload() {
    KEYRING.with(|k| k.borrow_mut().clear());
}
