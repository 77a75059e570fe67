//! Refreshing OAuth tokens: on fetch (one refresh per connection at a time,
//! across every API process) and in the background refresher.
//!
//! Exclusivity comes from a lease row (`otobot.refresh_leases`), taken in a
//! short transaction; no transaction or lock is held across the provider
//! call, and a crashed holder's lease simply expires.
//!
//! Every path is bounded: a fetch refreshes at most once and waits no longer
//! than `REFRESH_FETCH_DEADLINE_SECONDS` (the refresh itself runs in its own
//! task and finishes even when the fetch stops waiting, so a rotated refresh
//! token is never dropped); waiting for another process polls with growing
//! pauses; a refresh job that panics is logged and its lease expires.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::{sync::watch, time::Instant};
use uuid::Uuid;

use super::TokenError;
use crate::{
    db,
    error::ApiError,
    state::{AppState, SharedState},
};

/// One leased connection to refresh.
struct Job {
    connection_id: Uuid,
    service: String,
    refresh_token: SecretString,
    /// Consecutive transient failures so far (the back-off doubles with each).
    failures: i64,
}

impl Job {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            connection_id: v.get("connectionId")?.as_str()?.parse().ok()?,
            service: v.get("service")?.as_str()?.to_owned(),
            refresh_token: SecretString::from(v.get("refreshToken")?.as_str()?.to_owned()),
            failures: v.get("failures").and_then(Value::as_i64).unwrap_or(0),
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

/// Calls the provider for a leased job and records the result. The
/// background refresher has no request id (NULL in the audit row).
async fn run_job(state: &AppState, job: Job, request_id: Option<&str>) -> Outcome {
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
            // Exponential back-off: 30 s, 60 s, … up to an hour.
            let backoff = (30i64 << job.failures.clamp(0, 7)).min(3600) as i32;
            tracing::warn!(connection = %job.connection_id, reason = %reason, backoff_s = backoff, "refresh failed; backing off");
            if let Err(error) = fail(state, &job, false, &reason, backoff, request_id).await {
                tracing::error!(connection = %job.connection_id, %error, "recording a failed refresh failed; its lease will expire");
            }
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

/// What one refresh on fetch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// This process held the lease and called the provider.
    Done(Outcome),
    /// Nothing to do: refreshed meanwhile (here or by another process), or
    /// refreshed less than half a margin ago and still valid.
    Fresh,
    /// Transient failures: backing off until the lease row says so.
    BackingOff,
    /// Not an active, refreshable OAuth connection.
    NotRefreshable,
    /// Another process still held the lease when the deadline came.
    Busy,
    /// The deadline came while the refresh was running (it goes on in its task).
    TimedOut,
    /// The database could not be asked.
    Failed,
}

/// Refreshes on fetch running in this process: concurrent fetches of one
/// connection share one task instead of each asking the database.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<Uuid, watch::Receiver<Option<Attempt>>>>);

/// Removes a connection from [`InFlight`] when its task ends, even by a panic.
struct InFlightGuard {
    state: SharedState,
    connection_id: Uuid,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.state.oauth.in_flight.0.lock() {
            map.remove(&self.connection_id);
        }
    }
}

/// Refresh on fetch, bounded by `deadline`: joins this process's refresh of
/// the connection or starts one, and waits for it until the deadline. At
/// most one refresh: the caller re-reads once, whatever this returns.
pub async fn on_fetch(
    state: &SharedState,
    connection_id: Uuid,
    margin_seconds: i32,
    request_id: &str,
    deadline: Instant,
) -> Attempt {
    let mut done = {
        let Ok(mut map) = state.oauth.in_flight.0.lock() else {
            return Attempt::Failed;
        };
        match map.get(&connection_id) {
            Some(running) => running.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                map.insert(connection_id, rx.clone());
                let guard = InFlightGuard {
                    state: state.clone(),
                    connection_id,
                };
                let (state, request_id) = (state.clone(), request_id.to_owned());
                // Its own task: it completes even if this request stops
                // waiting (a provider's answer, with a rotated refresh token,
                // is always stored).
                tokio::spawn(async move {
                    let attempt =
                        refresh_task(&state, connection_id, margin_seconds, &request_id, deadline)
                            .await;
                    drop(guard);
                    let _ = tx.send(Some(attempt));
                });
                rx
            }
        }
    };
    let waited = tokio::time::timeout_at(deadline, async {
        match done.wait_for(Option::is_some).await {
            Ok(attempt) => attempt.unwrap_or(Attempt::Failed),
            // The task died (a panic): logged by the runtime; its lease expires.
            Err(_) => Attempt::Failed,
        }
    })
    .await;
    waited.unwrap_or(Attempt::TimedOut)
}

/// Shortest and longest pause between two looks at another process's refresh.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

async fn refresh_task(
    state: &SharedState,
    connection_id: Uuid,
    margin_seconds: i32,
    request_id: &str,
    deadline: Instant,
) -> Attempt {
    let mut pause = FIRST_PAUSE;
    loop {
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
        let claimed = match claimed {
            Ok(Some(v)) => v,
            Ok(None) => return Attempt::NotRefreshable,
            Err(error) => {
                tracing::warn!(connection = %connection_id, %error, "claiming a refresh failed");
                return Attempt::Failed;
            }
        };
        match claimed.get("status").and_then(Value::as_str) {
            Some("leased") => {
                return match Job::from_json(&claimed) {
                    Some(job) => Attempt::Done(run_job(state, job, Some(request_id)).await),
                    None => Attempt::Failed,
                }
            }
            Some("fresh" | "recent") => return Attempt::Fresh,
            Some("backoff") => return Attempt::BackingOff,
            Some("busy") => {
                // Another process is refreshing: look again after a pause
                // that doubles, never past the deadline.
                if Instant::now() + pause >= deadline {
                    return Attempt::Busy;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            _ => return Attempt::NotRefreshable,
        }
    }
}

/// One pass of the refresher: leases what expires within the window and
/// refreshes it with bounded concurrency, each job in its own task (a job
/// that panics is logged; the others go on). Returns how many it handled.
pub async fn refresh_expiring(state: &SharedState, batch: i32) -> Result<usize, ApiError> {
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
        .map(|job| {
            let state: Arc<AppState> = state.clone();
            let (id, service) = (job.connection_id, job.service.clone());
            async move {
                let joined =
                    tokio::spawn(async move { run_job(&state, job, None).await }).await;
                (id, service, joined)
            }
        })
        .buffer_unordered(state.oauth.refresh_concurrency)
        .for_each(|(id, service, joined)| {
            if let Err(error) = joined {
                state.metrics.refresh(&service, "panicked");
                tracing::error!(connection = %id, panic = error.is_panic(), "a refresh job died; its lease will expire and it will be retried");
            }
            std::future::ready(())
        })
        .await;
    Ok(n)
}
