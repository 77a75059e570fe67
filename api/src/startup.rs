//! Building and running `otobot serve`: settings → pool (keyring checked)
//! → state → router → listener; background sealer and catalogue refresh;
//! graceful shutdown.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    auth::InternalTokens,
    db,
    metrics::Metrics,
    rate_limit::{Limits, RateLimiter},
    routes,
    sealer::Sealer,
    settings::Settings,
    state::{AppState, SharedState},
};

pub struct Application {
    listener: TcpListener,
    /// `METRICS_LISTEN_ADDRESS`: `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    state: SharedState,
    sealer: Sealer,
}

async fn load_services(state: &AppState) -> Result<HashSet<String>, crate::error::ApiError> {
    let client = db::client(&state.pool).await?;
    let row = client
        .query_one("SELECT otobot.list_services()", &[])
        .await
        .map_err(db::map_error)?;
    let list: serde_json::Value = row.get(0);
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .collect())
}

/// Connects (loading and checking every key version), syncs the provider
/// catalogue and builds the shared state. Fails with one clear message when a
/// key does not match the database.
pub async fn build_state(settings: &mut Settings) -> Result<SharedState> {
    let keys = Arc::new(std::mem::replace(
        &mut settings.keys,
        crate::settings::KeySet {
            current: placeholder_key(),
            old: Vec::new(),
        },
    ));
    let tls = settings.database.tls();
    if tls.mode != crate::tls::SslMode::VerifyFull
        && !crate::tls::all_local(settings.database.pg_config().get_hosts())
    {
        // SECURITY: keys and decrypted tokens cross this connection.
        tracing::warn!(
            sslmode = tls.mode.as_str(),
            "the database is remote and its certificate is not verified: set FRONTEND_DB_SSLMODE=verify-full and FRONTEND_DB_SSLROOTCERT"
        );
    }
    let pool = db::pool(settings, keys);
    // Open one session now: a wrong key or a missing extension stops start-up.
    drop(
        pool.get()
            .await
            .map_err(|e| anyhow!(db::describe_pool_error(&e)))?,
    );

    let state = Arc::new(AppState {
        pool,
        tokens: InternalTokens::new(&settings.internal_tokens),
        limiter: RateLimiter::new(
            Limits {
                caller: settings.rate_limits.caller_per_minute,
                user: settings.rate_limits.user_per_minute,
                address: settings.rate_limits.address_per_minute,
            },
            format!(
                "otobot-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
        ),
        trusted_proxies: std::mem::take(&mut settings.rate_limits.trusted_proxies),
        metrics: Arc::new(Metrics::default()),
        metrics_token: settings.metrics.token.as_ref().map(|t| {
            use secrecy::ExposeSecret;
            use sha2::Digest;
            sha2::Sha256::digest(t.expose_secret().as_bytes()).into()
        }),
        services: RwLock::new(Arc::new(HashSet::new())),
        refresh_window_seconds: settings.refresh_window_seconds,
        db_timeout: settings.db_timeout,
        user_api: settings.user_api.take().map(user_api).transpose()?,
        oauth: oauth(settings)?,
    });
    // The catalogue is the source of truth for the services table.
    let client = db::client(&state.pool).await.map_err(|e| anyhow!("{e}"))?;
    let synced: i32 = client
        .query_one(
            "SELECT otobot.sync_services($1)",
            &[&state.oauth.catalogue.services_json()],
        )
        .await
        .context("cannot sync the provider catalogue into otobot.services")?
        .get(0);
    drop(client);
    let services = load_services(&state)
        .await
        .map_err(|e| anyhow!("cannot read the service catalogue: {e}"))?;
    tracing::info!(
        services = services.len(),
        synced,
        oauth_enabled = state.oauth.apps.len(),
        "service catalogue loaded"
    );
    *state.services.write().expect("not poisoned") = Arc::new(services);
    Ok(state)
}

fn oauth(settings: &mut Settings) -> Result<crate::oauth::OAuth> {
    let o = &mut settings.oauth;
    let catalogue = std::mem::replace(
        &mut o.catalogue,
        crate::oauth::catalogue::Catalogue::load(None).context("catalogue")?,
    );
    let apps = std::mem::take(&mut o.apps)
        .into_iter()
        .map(|(code, client_id, client_secret)| {
            (
                code,
                crate::oauth::App {
                    client_id,
                    client_secret,
                },
            )
        })
        .collect();
    let suffix: u32 = rand::random();
    Ok(crate::oauth::OAuth {
        catalogue,
        apps,
        http: reqwest::Client::builder()
            // Some providers (GitHub) refuse requests without a User-Agent.
            .user_agent(concat!("otobot/", env!("CARGO_PKG_VERSION")))
            // A provider call always ends before its refresh lease does.
            .timeout(Duration::from_secs(15.min(o.lease_seconds as u64 - 2)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?,
        redirect_uri: format!("{}/api/oauth/callback", o.public_url),
        frontend_url: o.frontend_url.clone(),
        failure_webhook: o.failure_webhook.clone(),
        lease_owner: format!("otobot-{}-{suffix:08x}", std::process::id()),
        fetch_margin_seconds: o.fetch_margin_seconds,
        refresh_window_seconds: settings.refresh_window_seconds,
        refresh_interval: o.refresh_interval,
        refresh_concurrency: o.refresh_concurrency,
        refresher_enabled: o.refresher_enabled,
        lease_seconds: o.lease_seconds,
        fetch_deadline: o.fetch_deadline,
        in_flight: Default::default(),
        public_url: o.public_url.clone(),
        browser_cookie: crate::oauth::BrowserCookie::for_public_url(&o.public_url),
    })
}

impl Application {
    /// Builds the state (see [`build_state`]), then binds the port.
    pub async fn build(mut settings: Settings) -> Result<Self> {
        let state = build_state(&mut settings).await?;
        if !settings.rate_limits.superseded.is_empty() {
            tracing::warn!(
                set = settings.rate_limits.superseded.join(", "),
                "these seed variables are superseded and not applied: requests are limited by \
                 RATE_LIMIT_CALLER_PER_MINUTE, RATE_LIMIT_USER_PER_MINUTE and RATE_LIMIT_ADDRESS_PER_MINUTE, \
                 failed logins by LOGIN_RATE_LIMIT_MAX_ATTEMPTS and LOGIN_RATE_LIMIT_ADDRESS_MAX_ATTEMPTS"
            );
        }
        if state.user_api.is_none() {
            tracing::warn!("API_JWT_SECRET is not set: the user API (/api/tooljet) is disabled");
        }
        if !state.oauth.apps.is_empty() && !state.oauth.browser_cookie.secure {
            // SECURITY: browsers refuse __Host- and Secure cookies over plain
            // http; the binding cookie then goes without them (development only).
            tracing::warn!(
                cookie = state.oauth.browser_cookie.name(),
                "PUBLIC_URL is not https: the OAuth browser-binding cookie is sent without __Host- and Secure; use https in production"
            );
        }
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let metrics_listener =
            match settings.metrics.listen_address {
                None => None,
                Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                    format!("cannot listen on {address} (METRICS_LISTEN_ADDRESS)")
                })?),
            };
        if metrics_listener.is_none() && state.metrics_token.is_none() {
            tracing::info!(
                "/metrics is off: set METRICS_TOKEN or METRICS_LISTEN_ADDRESS to serve it"
            );
        }
        Ok(Self {
            listener,
            metrics_listener,
            state,
            sealer: Sealer::new(
                settings.audit_seal_interval,
                settings.audit_checkpoint_file.clone(),
                settings.audit_seal_lag_warn,
            ),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/metrics` listens on its own, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serves until `shutdown` completes; in-flight requests finish, then the
    /// audit rows of this process are sealed one last time.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let address = self.local_addr();
        let background = tokio::spawn(background(self.state.clone(), self.sealer, stop_rx.clone()));
        let refresher = self
            .state
            .oauth
            .refresher_enabled
            .then(|| tokio::spawn(refresher(self.state.clone(), stop_rx.clone())));
        let metrics_server = self.metrics_listener.map(|listener| {
            let mut stop = stop_rx.clone();
            let app = routes::health::metrics_router(self.state.clone());
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "metrics listening (METRICS_LISTEN_ADDRESS)");
            }
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await
            })
        });
        tracing::info!(%address, "otobot serve listening");
        let app =
            routes::router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server error")?;
        let _ = stop_tx.send(true);
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        let sealer = background.await;
        if let Some(refresher) = refresher {
            let _ = refresher.await;
        }
        if let Ok(mut sealer) = sealer {
            sealer.run_once(&self.state).await;
        }
        tracing::info!("otobot serve stopped");
        Ok(())
    }
}

fn user_api(settings: crate::settings::UserApiSettings) -> Result<crate::state::UserApi> {
    use secrecy::ExposeSecret;
    Ok(crate::state::UserApi {
        jwt: crate::jwt::JwtKeys::new(
            settings.jwt_secret.expose_secret(),
            settings.jwt_ttl_seconds,
            &settings.issuer,
        ),
        decoy_hash: crate::password::decoy(),
        portal: crate::session::SessionKeys::new(
            settings.jwt_secret.expose_secret(),
            &settings.portal,
        ),
        http: reqwest::Client::builder()
            .timeout(settings.trigger_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?,
        settings,
    })
}

fn placeholder_key() -> crate::settings::MasterKey {
    crate::settings::MasterKey {
        version: 0,
        key: secrecy::SecretBox::new(Box::new([0u8; 32])),
    }
}

/// The refresher: every interval, refreshes what expires within the window
/// (a full batch means more wait: go on at once).
pub async fn refresher(state: SharedState, mut stop: watch::Receiver<bool>) {
    const BATCH: i32 = 100;
    let mut tick = tokio::time::interval(state.oauth.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(owner = %state.oauth.lease_owner, "token refresher running");
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => loop {
                // Each pass in its own task: a panic ends that pass, never
                // the refresher (it is logged, and the next tick goes on).
                let pass = tokio::spawn({
                    let state = state.clone();
                    async move { crate::oauth::refresh::refresh_expiring(&state, BATCH).await }
                });
                match pass.await {
                    Ok(Ok(n)) if n > 0 && !*stop.borrow() => continue,
                    Ok(Ok(_)) => break,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "refresher pass failed; will retry");
                        break;
                    }
                    Err(error) => {
                        tracing::error!(panic = error.is_panic(), "a refresher pass died; the refresher goes on at the next interval");
                        break;
                    }
                }
            },
        }
    }
}

/// The audit sealer (every `AUDIT_SEAL_INTERVAL_MS`, see [`crate::sealer`]),
/// the service catalogue refresh and the rate limiter's housekeeping.
/// Returns the sealer for the last pass at shutdown.
async fn background(
    state: SharedState,
    mut sealer: Sealer,
    mut stop: watch::Receiver<bool>,
) -> Sealer {
    let mut seal = tokio::time::interval(sealer.interval);
    let mut limits = tokio::time::interval(Duration::from_secs(1));
    limits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow = tokio::time::interval(Duration::from_secs(30));
    seal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return sealer,
            _ = seal.tick() => sealer.run_once(&state).await,
            _ = limits.tick() => sync_limits(&state).await,
            _ = slow.tick() => {
                match load_services(&state).await {
                    Ok(services) if !services.is_empty() => {
                        if let Ok(mut s) = state.services.write() { *s = Arc::new(services) }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "service catalogue refresh failed"),
                }
            }
        }
    }
}

/// Exchanges request counts with the other replicas (see `rate_limit.rs`).
/// A failure leaves each replica limiting on its own counts until the next.
async fn sync_limits(state: &AppState) {
    let result = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        state.limiter.sync(&client).await.map_err(db::map_error)
    })
    .await;
    use std::sync::atomic::Ordering;
    match result {
        Ok(()) => state
            .limiter
            .exchange_failing
            .store(false, Ordering::Relaxed),
        Err(error) => {
            if !state.limiter.exchange_failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "rate limit exchange with the other replicas failed; each replica limits on its own counts until it works again");
            }
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
