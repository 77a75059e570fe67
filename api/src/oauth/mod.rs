//! OAuth2: the provider catalogue, the token endpoint client, and refreshing.

pub mod catalogue;
pub mod refresh;

use std::{collections::HashMap, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use catalogue::{Catalogue, Provider, RevokeAuth, TokenAuthMethod};

/// An enabled provider's OAuth app.
pub struct App {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Everything the OAuth routes and the refresher need.
pub struct OAuth {
    pub catalogue: Catalogue,
    /// Providers with `<CODE>_CLIENT_ID` and `<CODE>_CLIENT_SECRET` set.
    pub apps: HashMap<String, App>,
    pub http: reqwest::Client,
    /// `PUBLIC_URL` + `/api/oauth/callback`.
    pub redirect_uri: String,
    pub frontend_url: String,
    pub failure_webhook: Option<String>,
    /// This process's name on refresh leases.
    pub lease_owner: String,
    /// Fetches refresh a token expiring within this margin first.
    pub fetch_margin_seconds: i32,
    pub refresh_window_seconds: i32,
    pub refresh_interval: Duration,
    pub refresh_concurrency: usize,
    /// Whether `serve` runs the refresher too (`REFRESHER_ENABLED`).
    pub refresher_enabled: bool,
    /// How long a refresh lease lasts (`REFRESH_LEASE_SECONDS`); provider
    /// calls time out well before it ends.
    pub lease_seconds: i32,
}

/// Tokens from a token endpoint response.
pub struct Tokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub scopes: Option<Vec<String>>,
    /// The whole response, for reading the account identifier (never logged).
    pub raw: Value,
}

/// Why a token endpoint call failed.
#[derive(Debug)]
pub enum TokenError {
    /// The grant is dead (`invalid_grant`): reconnecting is the only way.
    Rejected(String),
    /// Anything that may work later (network, 5xx, 429, malformed reply).
    Transient(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "rejected by the provider: {r}"),
            Self::Transient(r) => write!(f, "temporary failure: {r}"),
        }
    }
}

impl OAuth {
    pub fn provider(&self, code: &str) -> Option<(&Provider, &App)> {
        Some((self.catalogue.get(code)?, self.apps.get(code)?))
    }

    /// A token endpoint call (`authorization_code` or `refresh_token` grant),
    /// authenticated as the provider documents.
    pub async fn token_request(
        &self,
        url: &str,
        provider: &Provider,
        app: &App,
        mut form: Vec<(&str, String)>,
    ) -> Result<Tokens, TokenError> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match provider.token_auth_method {
            TokenAuthMethod::ClientSecretBasic => {
                request =
                    request.basic_auth(&app.client_id, Some(app.client_secret.expose_secret()));
            }
            TokenAuthMethod::ClientSecretPost => {
                form.push(("client_id", app.client_id.clone()));
                form.push((
                    "client_secret",
                    app.client_secret.expose_secret().to_owned(),
                ));
            }
        }
        // SECURITY: reqwest errors carry the URL only; the form (code,
        // verifier, refresh token, secret) is never logged or returned.
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Transient(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| TokenError::Transient(e.without_url().to_string()))?;
        let json: Value = serde_json::from_str(&body)
            .or_else(|_| serde_urlencoded_to_json(&body))
            .map_err(|_| TokenError::Transient(format!("HTTP {status}: the reply is not JSON")))?;
        if let Some(error) = json
            .get("error")
            .and_then(Value::as_str)
            .or_else(|| (!status.is_success()).then_some(""))
        {
            let error = if error.is_empty() {
                format!("HTTP {status}")
            } else {
                error.to_owned()
            };
            // SECURITY: only invalid_grant means this grant is dead. Anything
            // else (invalid_client from a misconfigured secret, 5xx, 429) must
            // not expire every connection: it is retried with back-off.
            return Err(if error == "invalid_grant" {
                TokenError::Rejected(error)
            } else {
                TokenError::Transient(error)
            });
        }
        let access_token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::Transient("the reply has no access_token".into()))?;
        let expires_in = json
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
        let scopes = json.get("scope").and_then(Value::as_str).map(|s| {
            s.split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        Ok(Tokens {
            access_token: SecretString::from(access_token.to_owned()),
            refresh_token: json
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(|t| SecretString::from(t.to_owned())),
            expires_at: expires_in
                .filter(|s| *s > 0)
                .map(|s| chrono::Utc::now() + chrono::Duration::seconds(s)),
            scopes,
            raw: json,
        })
    }

    /// The userinfo document, when the catalogue names one.
    pub async fn userinfo(
        &self,
        provider: &Provider,
        access_token: &SecretString,
    ) -> Option<Value> {
        let url = provider.userinfo_url.as_deref()?;
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Revokes a token at the provider; `Ok(false)` when the catalogue has no revocation endpoint.
    pub async fn revoke(
        &self,
        provider: &Provider,
        app: &App,
        token: &str,
    ) -> Result<bool, String> {
        let Some(url) = provider.revoke_url.as_deref() else {
            return Ok(false);
        };
        let mut request = self.http.post(url);
        let mut form = vec![("token", token.to_owned())];
        match provider.revoke_auth.unwrap_or(RevokeAuth::ClientBasic) {
            RevokeAuth::TokenParam => {}
            RevokeAuth::ClientBasic => {
                request =
                    request.basic_auth(&app.client_id, Some(app.client_secret.expose_secret()))
            }
            RevokeAuth::ClientPost => {
                form.push(("client_id", app.client_id.clone()));
                form.push((
                    "client_secret",
                    app.client_secret.expose_secret().to_owned(),
                ));
            }
            // The token goes in the header; the body stays empty.
            RevokeAuth::Bearer => {
                request = request.bearer_auth(token);
                form.clear();
            }
        }
        if !form.is_empty() {
            request = request.form(&form);
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(true)
        } else {
            Err(format!(
                "the provider answered HTTP {}",
                response.status().as_u16()
            ))
        }
    }
}

/// Some providers (GitHub without Accept) answer form-encoded.
fn serde_urlencoded_to_json(body: &str) -> Result<Value, ()> {
    if !body.contains('=') {
        return Err(());
    }
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Ok(Value::Object(map))
}
