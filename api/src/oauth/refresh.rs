//! Refreshing OAuth tokens: on fetch (one refresh per connection at a time,
//! across every API process) and in the background refresher.
//!
//! Exclusivity comes from a lease row (`otobot.refresh_leases`), taken in a
//! short transaction; no transaction or lock is held across the provider
//! call, and a crashed holder's lease simply expires.

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use uuid::Uuid;

use super::TokenError;
use crate::{db, error::ApiError, state::AppState};

/// One leased connection to refresh.
struct Job {
    connection_id: Uuid,
    service: String,
    refresh_token: SecretString,
}

impl Job {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            connection_id: v.get("connectionId")?.as_str()?.parse().ok()?,
            service: v.get("service")?.as_str()?.to_owned(),
            refresh_token: SecretString::from(v.get("refreshToken")?.as_str()?.to_owned()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Refreshed,
    /// The provider rejected the grant: the connection is now expired.
    Expired,
    /// A transient failure: backing off.
    Retry,
    /// Another process holds the lease, or the lease was lost.
    Skipped,
}

async fn call_json(
    state: &AppState,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Value>, ApiError> {
    db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let statement = client.prepare_cached(sql).await.map_err(db::map_error)?;
        let row = client
            .query_one(&statement, params)
            .await
            .map_err(db::map_error)?;
        Ok(row.get::<_, Option<Value>>(0))
    })
    .await
}

/// Calls the provider for a leased job and records the result.
async fn run_job(state: &AppState, job: Job, request_id: &str) -> Outcome {
    // The background refresher has no request: NULL, not an empty id.
    let request_id = (!request_id.is_empty()).then_some(request_id);
    let request_id = &request_id;
    let oauth = &state.oauth;
    let owner = oauth.lease_owner.as_str();
    let Some((provider, app)) = oauth.provider(&job.service) else {
        let _ = fail(
            state,
            &job,
            false,
            "provider not configured",
            3600,
            request_id,
        )
        .await;
        return Outcome::Retry;
    };
    let Some(url) = provider.refresh_endpoint() else {
        let _ = fail(
            state,
            &job,
            false,
            "provider has no token endpoint",
            3600,
            request_id,
        )
        .await;
        return Outcome::Retry;
    };
    let form = vec![
        ("grant_type", "refresh_token".to_owned()),
        (
            "refresh_token",
            job.refresh_token.expose_secret().to_owned(),
        ),
    ];
    match oauth.token_request(url, provider, app, form).await {
        Ok(tokens) => {
            let access = tokens.access_token.expose_secret();
            let refresh = tokens.refresh_token.as_ref().map(|t| t.expose_secret());
            let stored = call_json(
                state,
                "SELECT to_jsonb(otobot.complete_refresh($1, $2, $3, $4, $5, $6, $7))",
                &[
                    &job.connection_id,
                    &owner,
                    &access,
                    &refresh,
                    &tokens.expires_at,
                    &tokens.scopes,
                    &request_id,
                ],
            )
            .await;
            match stored {
                Ok(Some(Value::Bool(true))) => {
                    state.metrics.refresh(&job.service, "refreshed");
                    Outcome::Refreshed
                }
                Ok(_) => {
                    tracing::error!(connection = %job.connection_id, "refreshed tokens could not be stored: the lease was lost");
                    Outcome::Skipped
                }
                Err(error) => {
                    tracing::error!(connection = %job.connection_id, %error, "storing refreshed tokens failed");
                    Outcome::Retry
                }
            }
        }
        Err(TokenError::Rejected(reason)) => {
            state.metrics.refresh(&job.service, "expired");
            if let Ok(Some(failure)) = fail(state, &job, true, &reason, 0, request_id).await {
                notify_failure(state, failure).await;
            }
            Outcome::Expired
        }
        Err(TokenError::Transient(reason)) => {
            state.metrics.refresh(&job.service, "retry");
            let failures: i32 = call_json(
                state,
                "SELECT to_jsonb(otobot.refresh_failures($1))",
                &[&job.connection_id],
            )
            .await
            .ok()
            .flatten()
            .and_then(|v| v.as_i64())
            .unwrap_or(0) as i32;
            // Exponential back-off: 30 s, 60 s, … up to an hour.
            let backoff = (30i64 << failures.clamp(0, 7)).min(3600) as i32;
            tracing::warn!(connection = %job.connection_id, reason = %reason, backoff_s = backoff, "refresh failed; will retry");
            let _ = fail(state, &job, false, &reason, backoff, request_id).await;
            Outcome::Retry
        }
    }
}

async fn fail(
    state: &AppState,
    job: &Job,
    permanent: bool,
    reason: &str,
    retry_after: i32,
    request_id: &Option<&str>,
) -> Result<Option<Value>, ApiError> {
    call_json(
        state,
        "SELECT otobot.fail_refresh($1, $2, $3, $4, $5, $6)",
        &[
            &job.connection_id,
            &state.oauth.lease_owner,
            &permanent,
            &reason,
            &retry_after,
            &request_id,
        ],
    )
    .await
}

/// POSTs `{connectionId, userId, service, reason}` to `REFRESH_FAILURE_WEBHOOK_URL`.
async fn notify_failure(state: &AppState, failure: Value) {
    let Some(url) = state.oauth.failure_webhook.as_deref() else {
        return;
    };
    let body = json!({
        "connectionId": failure.get("connectionId"),
        "userId": failure.get("userId"),
        "service": failure.get("service"),
        "reason": failure.get("reason"),
    });
    match state.oauth.http.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "the refresh failure webhook answered an error"
        ),
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "the refresh failure webhook could not be reached")
        }
    }
}

/// What a refresh attempt on fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// This process held the lease and called the provider.
    Done(Outcome),
    /// Another process is refreshing it: re-read shortly.
    Busy,
    /// Nothing to do now: already fresh, backing off, or not refreshable.
    NotNow,
}

/// Refresh on fetch: take the lease and refresh. The lease is only granted
/// while the token still expires within `margin_seconds`, re-checked under
/// the connection's row lock, so two fetches never refresh twice.
pub async fn try_refresh(
    state: &AppState,
    connection_id: Uuid,
    margin_seconds: i32,
    request_id: &str,
) -> Attempt {
    let claimed = call_json(
        state,
        "SELECT otobot.claim_refresh($1, $2, $3, $4, $5)",
        &[
            &connection_id,
            &state.oauth.lease_owner,
            &state.oauth.lease_seconds,
            &margin_seconds,
            &request_id,
        ],
    )
    .await;
    match claimed {
        Ok(Some(job)) => match Job::from_json(&job) {
            Some(job) => Attempt::Done(run_job(state, job, request_id).await),
            None => Attempt::NotNow,
        },
        Ok(None) => {
            let failures = call_json(
                state,
                "SELECT to_jsonb(otobot.refresh_failures($1))",
                &[&connection_id],
            )
            .await;
            if failures
                .ok()
                .flatten()
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                > 0
            {
                Attempt::NotNow
            } else {
                Attempt::Busy
            }
        }
        Err(error) => {
            tracing::warn!(%error, "claiming a refresh failed");
            Attempt::NotNow
        }
    }
}

/// One pass of the refresher: leases what expires within the window and
/// refreshes it with bounded concurrency. Returns how many it handled.
pub async fn refresh_expiring(state: &AppState, batch: i32) -> Result<usize, ApiError> {
    let jobs = call_json(
        state,
        "SELECT otobot.claim_expiring($1, $2, $3, $4)",
        &[
            &state.oauth.refresh_window_seconds,
            &batch,
            &state.oauth.lease_owner,
            &state.oauth.lease_seconds,
        ],
    )
    .await?
    .unwrap_or(Value::Null);
    let jobs: Vec<Job> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Job::from_json)
        .collect();
    let n = jobs.len();
    futures_util::stream::iter(jobs)
        .for_each_concurrent(state.oauth.refresh_concurrency, |job| async move {
            run_job(state, job, "").await;
        })
        .await;
    Ok(n)
}
