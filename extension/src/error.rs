//! Errors of the vault core, each mapped to a SQLSTATE.
//!
//! SECURITY: messages name the problem and at most a key version. They never
//! carry a key, an IV, a tag, a plaintext or a ciphertext, because error text
//! reaches clients and server logs.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum OtobotError {
    /// No key is loaded in this session (55000 object_not_in_prerequisite_state).
    #[error("otobot: no encryption key is loaded in this session")]
    NoKeyLoaded,
    /// Keys are loaded, but none is marked current (55000).
    #[error("otobot: no current encryption key version is loaded in this session")]
    NoCurrentKey,
    /// The value was sealed with a version this session does not hold (42704 undefined_object).
    #[error("otobot: unknown key version {0}: it is not loaded in this session")]
    UnknownKeyVersion(u32),
    /// The stored form is not `version:iv:tag:ciphertext` (22P02 invalid_text_representation).
    #[error("otobot: malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The tag does not verify: tampered value, wrong key or wrong associated data (XX001 data_corrupted).
    #[error("otobot: authentication failed: the ciphertext was altered, or its associated data or key does not match")]
    AuthenticationFailed,
    /// The decrypted bytes are not UTF-8 text (22021 character_not_in_repertoire).
    #[error("otobot: the decrypted value is not valid UTF-8 text")]
    NotUtf8,
    /// Plaintext above the size cap (54000 program_limit_exceeded).
    #[error("otobot: plaintext is larger than 1 MiB")]
    PlaintextTooLarge,
    /// The library refused to seal or to draw an IV; not expected (XX000 internal_error).
    #[error("otobot: encryption failed")]
    EncryptionFailed,
    /// A key of the wrong length (22023 invalid_parameter_value).
    #[error("otobot: key version {0} must be exactly 32 bytes")]
    BadKeyLength(i32),
    /// A key version outside 1..=2147483647 (22023).
    #[error("otobot: key version {0} is invalid: versions start at 1")]
    BadKeyVersion(i32),
    /// The key does not match the check value recorded for its version (28000 invalid_authorization_specification).
    #[error("otobot: key check failed for version {0}: this is not the key registered for that version")]
    KeyCheckMismatch(u32),
    /// No check value is registered for this version: loading never registers one (55000).
    #[error("otobot: key version {0} is not registered in this database: run `otobot migrate` with this key in ENCRYPTION_MASTER_KEY (or ENCRYPTION_OLD_KEYS) to register it")]
    KeyNotRegistered(u32),
    /// Reading or recording a key check value failed (XX000).
    #[error("otobot: could not read or record the key check value for version {0}")]
    KeyCheckStore(u32),
}

impl OtobotError {
    pub fn sqlstate(&self) -> pgrx::PgSqlErrorCode {
        use pgrx::PgSqlErrorCode::*;
        match self {
            Self::NoKeyLoaded | Self::NoCurrentKey | Self::KeyNotRegistered(_) => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Self::UnknownKeyVersion(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::Malformed(_) => ERRCODE_INVALID_TEXT_REPRESENTATION,
            Self::AuthenticationFailed => ERRCODE_DATA_CORRUPTED,
            Self::NotUtf8 => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            Self::PlaintextTooLarge => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            Self::BadKeyLength(_) | Self::BadKeyVersion(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::KeyCheckMismatch(_) => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Self::KeyCheckStore(_) | Self::EncryptionFailed => ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raise as a PostgreSQL ERROR (does not return).
    pub fn raise(self) -> ! {
        pgrx::ereport!(ERROR, self.sqlstate(), self.to_string());
    }
}

impl From<otobot_crypto::Error> for OtobotError {
    fn from(e: otobot_crypto::Error) -> Self {
        use otobot_crypto::Error as E;
        match e {
            E::Malformed(what) => Self::Malformed(what),
            E::AuthenticationFailed => Self::AuthenticationFailed,
            E::PlaintextTooLarge => Self::PlaintextTooLarge,
            E::SealFailed => Self::EncryptionFailed,
        }
    }
}

/// Unwrap a result or raise its error as a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, OtobotError> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
