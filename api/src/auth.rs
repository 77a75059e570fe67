//! Authentication of internal callers by `x-internal-token`.
//!
//! SECURITY: tokens are compared in constant time, as SHA-256 digests (equal
//! lengths whatever was sent), against every configured token, so neither the
//! length nor which caller matched shows in the timing. The header is never
//! logged.

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::InternalToken;

pub const HEADER: &str = "x-internal-token";

/// An authenticated internal caller; its name goes into audit rows.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    /// Configured `trusted`: fetches credentials without a grant.
    pub trusted: bool,
}

pub struct InternalTokens {
    digests: Vec<(Caller, [u8; 32])>,
}

impl InternalTokens {
    pub fn new(tokens: &[InternalToken]) -> Self {
        Self {
            digests: tokens
                .iter()
                .map(|t| {
                    (
                        Caller {
                            name: t.name.clone(),
                            trusted: t.trusted,
                        },
                        Sha256::digest(t.token.expose_secret().as_bytes()).into(),
                    )
                })
                .collect(),
        }
    }

    /// The caller whose token the request carries, if any.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Caller> {
        let sent = headers.get(HEADER)?.as_bytes();
        if sent.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(sent).into();
        let mut found = None;
        for (caller, expected) in &self.digests {
            if bool::from(digest.ct_eq(expected)) {
                found = Some(caller);
            }
        }
        found.cloned()
    }
}

/// A user authenticated by `Authorization: Bearer <JWT>` (ToolJet), or
/// without that header by a portal session (`session::authenticate`).
///
/// The token proves who the caller was when it was issued; each database
/// call then checks the user is still active (a deactivated user's token
/// stops working at once).
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: uuid::Uuid,
    pub client_id: uuid::Uuid,
    pub role: String,
    /// The audit log's `source` for what this user does: `tooljet` (bearer
    /// token) or `portal` (session cookie).
    pub source: &'static str,
}

impl axum::extract::FromRequestParts<crate::state::SharedState> for AuthUser {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::SharedState,
    ) -> Result<Self, Self::Rejection> {
        use crate::error::ApiError;
        let user_api = state.user_api.as_ref().ok_or(ApiError::InvalidToken)?;
        let Some(authorization) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // The portal: a session cookie and its CSRF header.
            return crate::session::authenticate(&parts.headers, state).await;
        };
        let token = Some(authorization)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::InvalidToken)?;
        let claims = user_api
            .jwt
            .verify(token.trim())
            .ok_or(ApiError::InvalidToken)?;
        if claims.role != "admin" && claims.role != "user" {
            return Err(ApiError::InvalidToken);
        }
        Ok(Self {
            id: claims.sub,
            client_id: claims.client_id,
            role: claims.role,
            source: "tooljet",
        })
    }
}
