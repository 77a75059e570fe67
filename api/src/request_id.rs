//! `x-request-id`: accepted from the caller when well-formed, generated
//! otherwise; returned on every response, written into audit rows and into
//! every log line of the request (through its tracing span).

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, or an empty string outside a request.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The database accepts request ids of 1–128 characters of this set.
pub fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(&b))
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    // SECURITY: the span records the route template, never the headers, the
    // path's values, the query string or the body.
    let span = tracing::info_span!("request", request_id = %id, %method);
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let route = response
        .extensions()
        .get::<crate::metrics::RouteLabel>()
        .map_or("unmatched", |r| r.0.as_str());
    span.in_scope(|| {
        tracing::info!(
            %route,
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "request"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
