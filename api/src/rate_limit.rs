//! Per-caller rate limiting (GCRA, `governor`): the caller's name for
//! authenticated routes, the client address otherwise. Answers 429 with
//! `Retry-After` and the `RateLimit-*` headers.

use std::{num::NonZeroU32, time::Duration};

use axum::{http::HeaderValue, response::Response};
use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    Quota, RateLimiter,
};

use crate::error::ApiError;

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct RateLimit {
    limiter: Limiter,
    max: u32,
    period: Duration,
}

/// What is left of a caller's allowance, for the response headers.
pub struct Allowance {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

impl RateLimit {
    /// `max` requests per `window`, refilled continuously.
    pub fn new(max: u32, window: Duration) -> Self {
        let max = NonZeroU32::new(max.max(1)).expect("at least 1");
        let period = (window / max.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(max);
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            max: max.get(),
            period,
        }
    }

    pub fn check(&self, key: &str) -> Result<Allowance, ApiError> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Allowance {
                    limit: self.max,
                    remaining,
                    reset: self.period * (self.max - remaining),
                })
            }
            Err(not_until) => Err(ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                limit: self.max,
            }),
        }
    }

    /// Forgets callers whose allowance is full again (bounded memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Allowance {
    pub fn apply(&self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(
                self.reset
                    .as_secs()
                    .max(u64::from(self.remaining < self.limit)),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_limit_is_refused_and_others_are_not() {
        let limit = RateLimit::new(3, Duration::from_secs(900));
        for expected_remaining in [2, 1, 0] {
            assert_eq!(
                limit.check("caller:a").unwrap().remaining,
                expected_remaining
            );
        }
        match limit.check("caller:a") {
            Err(ApiError::RateLimited { retry_after, limit }) => {
                assert_eq!(limit, 3);
                assert!(
                    retry_after > Duration::from_secs(200)
                        && retry_after <= Duration::from_secs(300),
                    "{retry_after:?}"
                );
            }
            _ => panic!("expected 429"),
        }
        assert!(limit.check("caller:b").is_ok());
    }
}
