//! Prometheus metrics: requests and latency by route and status, credential
//! reads by outcome, database pool usage. Served at `/metrics`.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The matched route template, left on the response for the access log.
#[derive(Clone)]
pub struct RouteLabel(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    service: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    caller: String,
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram>,
    credential_reads: Family<ReadLabels, Counter>,
    refreshes: Family<RefreshLabels, Counter>,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
    audit: AuditMetrics,
}

/// The sealer's view of the audit chain.
#[derive(Default)]
struct AuditMetrics {
    unsealed_rows: Gauge,
    seal_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    head_seq: Gauge,
    seal_failures: Counter,
    checkpoint_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("otobot");
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        let credential_reads = Family::<ReadLabels, Counter>::default();
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "credential_reads",
            "Credential fetches by caller and outcome",
            credential_reads.clone(),
        );
        registry.register(
            "token_refreshes",
            "OAuth token refreshes by service and outcome (refreshed, expired, retry)",
            refreshes.clone(),
        );
        let (pool_size, pool_available, pool_waiting) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_available",
            "Idle database connections",
            pool_available.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            pool_waiting.clone(),
        );
        let audit = AuditMetrics::default();
        registry.register(
            "audit_unsealed_rows",
            "Audit rows not yet chained by the sealer (capped at 1,000,000)",
            audit.unsealed_rows.clone(),
        );
        registry.register(
            "audit_seal_lag_seconds",
            "Age of the next audit row waiting to be sealed (0 when none waits)",
            audit.seal_lag_seconds.clone(),
        );
        registry.register(
            "audit_chain_head_seq",
            "Sequence number of the newest sealed audit link",
            audit.head_seq.clone(),
        );
        registry.register(
            "audit_seal_failures",
            "Sealing passes that failed",
            audit.seal_failures.clone(),
        );
        registry.register(
            "audit_checkpoint_failures",
            "Chain heads that could not be appended to AUDIT_CHECKPOINT_FILE",
            audit.checkpoint_failures.clone(),
        );
        Self {
            registry,
            audit,
            requests,
            latency,
            credential_reads,
            refreshes,
            pool_size,
            pool_available,
            pool_waiting,
        }
    }
}

impl Metrics {
    pub fn credential_read(&self, caller: &str, outcome: &'static str) {
        self.credential_reads
            .get_or_create(&ReadLabels {
                caller: caller.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn refresh(&self, service: &str, outcome: &'static str) {
        self.refreshes
            .get_or_create(&RefreshLabels {
                service: service.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The outcome of a sealing pass.
    pub fn audit_sealed(&self, pass: &crate::sealer::SealPass, head_seq: i64) {
        self.audit.unsealed_rows.set(pass.unsealed_rows);
        self.audit.seal_lag_seconds.set(pass.lag_seconds);
        self.audit.head_seq.set(head_seq);
    }

    pub fn audit_seal_failed(&self) {
        self.audit.seal_failures.inc();
    }

    pub fn audit_checkpoint_failed(&self) {
        self.audit.checkpoint_failures.inc();
    }

    /// The text exposition, with the pool gauges refreshed.
    pub fn render(&self, pool: &deadpool_postgres::Pool) -> String {
        let status = pool.status();
        self.pool_size.set(status.size as i64);
        self.pool_available.set(status.available as i64);
        self.pool_waiting.set(status.waiting as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Route-level middleware: counts and times each matched request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route: route.clone(),
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response.extensions_mut().insert(RouteLabel(route));
    response
}
