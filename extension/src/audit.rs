//! Keyed MACs for the audit chain.
//!
//! The chain itself (which rows, in which order) is SQL in the migrations;
//! this module only supplies HMAC-SHA256 under a key derived from a master
//! key version (HKDF label `otobot/audit-chain/v1`), so someone who can write
//! the database but lacks the master key cannot recompute a rewritten chain.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::OtobotError;
use crate::keyring;

pub fn mac(key_version: u32, message: &[u8]) -> Result<Vec<u8>, OtobotError> {
    keyring::with(|k| {
        let entry = k.get(key_version)?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(entry.mac_key.as_ref()).expect("HMAC takes any key length");
        m.update(message);
        Ok(m.finalize().into_bytes().to_vec())
    })
}
