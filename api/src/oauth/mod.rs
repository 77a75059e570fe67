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
    /// The whole refresh-on-fetch of one request ends by then
    /// (`REFRESH_FETCH_DEADLINE_SECONDS`).
    pub fetch_deadline: Duration,
    /// Refreshes on fetch running in this process, one per connection.
    pub in_flight: refresh::InFlight,
    /// `PUBLIC_URL`: start URLs are `<PUBLIC_URL>/api/oauth/start/<token>`.
    pub public_url: String,
    /// The cookie that binds an authorization to the browser that started it.
    pub browser_cookie: BrowserCookie,
}

/// The browser-binding cookie: `__Host-otobot_oauth` (Secure) when
/// `PUBLIC_URL` is https; `otobot_oauth` without Secure on plain http
/// (development: browsers refuse `__Host-` and Secure cookies there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowserCookie {
    pub secure: bool,
}

impl BrowserCookie {
    pub fn for_public_url(public_url: &str) -> Self {
        Self {
            secure: public_url.starts_with("https://"),
        }
    }

    pub fn name(self) -> &'static str {
        if self.secure {
            "__Host-otobot_oauth"
        } else {
            "otobot_oauth"
        }
    }

    /// `Set-Cookie` for `nonce`: HttpOnly, SameSite=Lax (sent on the
    /// provider's top-level redirect back), Path=/, no Domain.
    pub fn set_cookie(self, nonce: &str, max_age_seconds: i64) -> String {
        format!(
            "{}={nonce}; Path=/; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax{}",
            self.name(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The nonce this request's `Cookie` headers carry, if well formed.
    pub fn read(self, headers: &axum::http::HeaderMap) -> Option<String> {
        let name = self.name();
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, v)| *k == name && is_nonce(v))
            .map(|(_, v)| v.to_owned())
    }
}

/// 256 random bits, base64url without padding: 43 characters.
pub fn is_nonce(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh 256-bit random value, base64url without padding.
pub fn random_nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The longest access-token lifetime accepted from a provider: ten years.
pub const MAX_EXPIRES_IN_SECONDS: i64 = 10 * 366 * 86_400;

/// The expiry that a token response's `expires_in` gives, with checked
/// arithmetic: absent, null or ≤ 0 → unknown (`None`); not a number, or
/// beyond [`MAX_EXPIRES_IN_SECONDS`] → an error naming the problem.
pub fn expiry_from(
    expires_in: Option<&Value>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    let seconds = match expires_in {
        None | Some(Value::Null) => return Ok(None),
        // Saturating: a number beyond i64 becomes i64::MAX, out of range below.
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| "expires_in is not a number of seconds".to_owned())?;
    if seconds <= 0 {
        return Ok(None);
    }
    if seconds > MAX_EXPIRES_IN_SECONDS {
        return Err(format!(
            "expires_in of {seconds} seconds is out of range (at most ten years)"
        ));
    }
    chrono::Duration::try_seconds(seconds)
        .and_then(|d| now.checked_add_signed(d))
        .map(Some)
        .ok_or_else(|| "expires_in cannot be represented as a date".to_owned())
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
        // SECURITY: checked time arithmetic: an absurd expires_in is an
        // error for this connection, never a panic in the refresher.
        let expires_at = expiry_from(json.get("expires_in"), chrono::Utc::now())
            .map_err(|e| TokenError::Transient(format!("invalid token response: {e}")))?;
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
            expires_at,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_absurd_expires_in_is_an_error_and_never_a_panic() {
        let now = chrono::Utc::now();
        for bad in [
            json!(1_000_000_000_000_000_000i64),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
            json!(MAX_EXPIRES_IN_SECONDS + 1),
            json!("1000000000000000000"),
            json!("soon"),
            json!(true),
        ] {
            assert!(expiry_from(Some(&bad), now).is_err(), "{bad}");
        }
        assert_eq!(
            expiry_from(Some(&json!(3600)), now).unwrap(),
            Some(now + chrono::Duration::seconds(3600))
        );
        assert_eq!(
            expiry_from(Some(&json!("60")), now).unwrap(),
            Some(now + chrono::Duration::seconds(60))
        );
        assert!(expiry_from(Some(&json!(MAX_EXPIRES_IN_SECONDS)), now)
            .unwrap()
            .is_some());
        for unknown in [json!(0), json!(-5), Value::Null] {
            assert_eq!(expiry_from(Some(&unknown), now).unwrap(), None);
        }
        assert_eq!(expiry_from(None, now).unwrap(), None);
    }

    #[test]
    fn the_browser_cookie_is_host_prefixed_and_secure_only_on_https() {
        let https = BrowserCookie::for_public_url("https://vault.example.test");
        let set = https.set_cookie("n", 600);
        assert!(set.starts_with("__Host-otobot_oauth=n; Path=/;"), "{set}");
        assert!(
            set.contains("; HttpOnly")
                && set.contains("; SameSite=Lax")
                && set.ends_with("; Secure")
        );
        assert!(!set.to_ascii_lowercase().contains("domain"));
        let http = BrowserCookie::for_public_url("http://127.0.0.1:3001");
        let set = http.set_cookie("n", 600);
        assert!(
            set.starts_with("otobot_oauth=n;") && !set.contains("Secure"),
            "{set}"
        );

        let nonce = random_nonce();
        assert!(is_nonce(&nonce));
        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            format!("a=b; otobot_oauth=short; __Host-otobot_oauth={nonce}")
                .parse()
                .unwrap(),
        );
        assert_eq!(https.read(&headers), Some(nonce.clone()));
        assert_eq!(http.read(&headers), None, "a malformed value is ignored");
    }
}
