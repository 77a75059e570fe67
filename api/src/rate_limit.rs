//! Request rate limits, as DESIGN.md "Rate limiting" says: internal routes
//! per caller (a ceiling sized for a busy n8n) and per (caller, target user);
//! user routes per user; anonymous requests per client address. Logins are
//! limited apart, on failures only, in PostgreSQL (`routes/tooljet.rs`
//! `verify_login`, migration 0013).
//!
//! Each key is counted in fixed one-minute windows read as a sliding window
//! (the previous minute weighted by the part of it still inside the last 60
//! seconds, plus the current minute). Counting is in memory; about once a
//! second [`RateLimiter::sync`] sends this replica's counts to PostgreSQL and
//! reads the other replicas' (`otobot.rate_limit_exchange`), so several
//! replicas hold the limits together, within that second.
//!
//! The client address is the TCP peer, unless the peer is one of
//! `TRUSTED_PROXIES`: then the rightmost `X-Forwarded-For` hop that is not
//! a trusted proxy ([`client_ip`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    http::{HeaderMap, HeaderValue},
    response::Response,
};
use ipnet::IpNet;

use crate::error::ApiError;

/// Length of a counting window.
pub const WINDOW_SECONDS: u64 = 60;

/// Requests per minute allowed for each kind of key.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// All internal requests of one caller (`c:<caller>`).
    pub caller: u32,
    /// One caller's requests about one user (`cu:<caller>:<user>`), and one
    /// user's own requests on the user routes (`u:<user>`).
    pub user: u32,
    /// Anonymous requests from one client address (`a:<ip>`).
    pub address: u32,
}

/// A limit key: what is counted.
pub fn caller_key(caller: &str) -> String {
    format!("c:{caller}")
}
pub fn caller_user_key(caller: &str, user: &uuid::Uuid) -> String {
    format!("cu:{caller}:{user}")
}
pub fn user_key(user: &uuid::Uuid) -> String {
    format!("u:{user}")
}
pub fn address_key(ip: IpAddr) -> String {
    format!("a:{ip}")
}

#[derive(Default, Debug)]
struct Counter {
    /// Index of the current window (Unix seconds / WINDOW_SECONDS).
    window: i64,
    local_cur: u64,
    local_prev: u64,
    others_cur: u64,
    others_prev: u64,
    /// Changed since the last exchange.
    dirty: bool,
}

impl Counter {
    fn roll(&mut self, window: i64) {
        if window == self.window {
            return;
        }
        if window == self.window + 1 {
            self.local_prev = self.local_cur;
            self.others_prev = self.others_cur;
        } else {
            self.local_prev = 0;
            self.others_prev = 0;
        }
        self.local_cur = 0;
        self.others_cur = 0;
        self.window = window;
    }

    fn estimate(&self, fraction: f64) -> f64 {
        (self.local_prev + self.others_prev) as f64 * (1.0 - fraction)
            + (self.local_cur + self.others_cur) as f64
    }
}

pub struct RateLimiter {
    limits: Limits,
    counters: Mutex<HashMap<String, Counter>>,
    /// This process, in the shared table.
    replica: String,
    /// The last exchange failed (warn once per streak).
    pub exchange_failing: std::sync::atomic::AtomicBool,
}

/// What is left of the tightest limit a request passed, for its headers.
#[derive(Debug)]
pub struct Allowance {
    limit: u32,
    remaining: u32,
    reset: u64,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl RateLimiter {
    pub fn new(limits: Limits, replica: String) -> Self {
        Self {
            limits,
            counters: Mutex::new(HashMap::new()),
            replica,
            exchange_failing: Default::default(),
        }
    }

    fn limit_of(&self, key: &str) -> u32 {
        match key.split_once(':').map(|(kind, _)| kind) {
            Some("c") => self.limits.caller,
            Some("cu") | Some("u") => self.limits.user,
            _ => self.limits.address,
        }
    }

    /// Counts one request against every key, or none of them when one is
    /// over its limit (429 with the longest wait).
    pub fn check(&self, keys: &[String]) -> Result<Allowance, ApiError> {
        self.check_at(keys, now())
    }

    fn check_at(&self, keys: &[String], now: f64) -> Result<Allowance, ApiError> {
        let window = (now / WINDOW_SECONDS as f64).floor() as i64;
        let elapsed = now - (window as f64) * WINDOW_SECONDS as f64;
        let fraction = elapsed / WINDOW_SECONDS as f64;
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut tightest: Option<Allowance> = None;
        let mut refused: Option<(Duration, u32)> = None;
        for key in keys {
            let limit = self.limit_of(key);
            let counter = counters.entry(key.clone()).or_default();
            counter.roll(window);
            let estimate = counter.estimate(fraction);
            if estimate + 1.0 > f64::from(limit) {
                let cur = (counter.local_cur + counter.others_cur) as f64;
                let prev = (counter.local_prev + counter.others_prev) as f64;
                let wait = if cur + 1.0 > f64::from(limit) || prev == 0.0 {
                    WINDOW_SECONDS as f64 - elapsed
                } else {
                    (1.0 - (f64::from(limit) - cur - 1.0) / prev) * WINDOW_SECONDS as f64 - elapsed
                };
                let wait = Duration::from_secs(wait.ceil().max(1.0) as u64);
                if refused.is_none_or(|(w, _)| wait > w) {
                    refused = Some((wait, limit));
                }
                continue;
            }
            let remaining = (f64::from(limit) - estimate - 1.0).floor().max(0.0) as u32;
            if tightest.as_ref().is_none_or(|t| remaining < t.remaining) {
                tightest = Some(Allowance {
                    limit,
                    remaining,
                    reset: (WINDOW_SECONDS as f64 - elapsed).ceil() as u64,
                });
            }
        }
        if let Some((retry_after, limit)) = refused {
            return Err(ApiError::RateLimited { retry_after, limit });
        }
        for key in keys {
            if let Some(counter) = counters.get_mut(key) {
                counter.local_cur += 1;
                counter.dirty = true;
            }
        }
        Ok(tightest.unwrap_or(Allowance {
            limit: self.limits.address,
            remaining: self.limits.address,
            reset: 0,
        }))
    }

    /// Sends this replica's changed counts, takes the others' (see the
    /// module doc), and forgets keys idle for two windows.
    pub async fn sync(&self, client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let window = (now() / WINDOW_SECONDS as f64).floor() as i64;
        let (mut keys, mut windows, mut counts) = (Vec::new(), Vec::new(), Vec::<i64>::new());
        {
            let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded memory even while the database is unreachable.
            counters.retain(|_, c| {
                c.roll(window);
                c.local_cur + c.local_prev + c.others_cur + c.others_prev > 0 || c.dirty
            });
            for (key, counter) in counters.iter_mut() {
                if !std::mem::take(&mut counter.dirty) {
                    continue;
                }
                for (w, n) in [
                    (window, counter.local_cur),
                    (window - 1, counter.local_prev),
                ] {
                    if n > 0 {
                        keys.push(key.clone());
                        windows.push(w * WINDOW_SECONDS as i64);
                        counts.push(n as i64);
                    }
                }
            }
        }
        let rows = client
            .query(
                "SELECT key, window_start, others FROM otobot.rate_limit_exchange($1, $2, $3, $4, $5)",
                &[
                    &self.replica,
                    &(WINDOW_SECONDS as i32),
                    &keys,
                    &windows,
                    &counts,
                ],
            )
            .await?;
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for counter in counters.values_mut() {
            counter.others_cur = 0;
            counter.others_prev = 0;
        }
        for row in rows {
            let (key, start, others): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let counter = counters.entry(key).or_default();
            counter.roll(window);
            match start / WINDOW_SECONDS as i64 - window {
                0 => counter.others_cur = others.max(0) as u64,
                -1 => counter.others_prev = others.max(0) as u64,
                _ => {}
            }
        }
        Ok(())
    }

    /// Keys held in memory (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.counters.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl Allowance {
    /// The `RateLimit-*` headers, unless the response is itself a 429 (a
    /// limit further in, e.g. failed logins, already set its own).
    pub fn apply(&self, response: &mut Response) {
        if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset));
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` hop that is not a trusted proxy
/// (hops to its left were written by the client and prove nothing).
///
/// SECURITY: from an untrusted peer the header is ignored, so a client
/// cannot pick its own bucket. A malformed hop stops the walk: the nearest
/// trusted hop is used, which only a misbehaving proxy can cause.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443` or `1.2.3.4:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    None
}

/// An IPv4 address mapped into IPv6 counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `TRUSTED_PROXIES`: addresses and CIDR blocks, comma-separated.
pub fn parse_trusted_proxies(value: &str) -> Option<Vec<IpNet>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(caller: u32, user: u32, address: u32) -> RateLimiter {
        RateLimiter::new(
            Limits {
                caller,
                user,
                address,
            },
            "test".into(),
        )
    }

    #[test]
    fn a_key_over_its_limit_is_refused_until_the_window_slides_and_others_are_not() {
        let l = limiter(100, 3, 100);
        let a = vec![user_key(&uuid::Uuid::nil())];
        let t = 6000.0 * 60.0 + 30.0;
        for remaining in [2, 1, 0] {
            assert_eq!(l.check_at(&a, t).unwrap().remaining, remaining);
        }
        match l.check_at(&a, t) {
            Err(ApiError::RateLimited { retry_after, limit }) => {
                assert_eq!(limit, 3);
                assert_eq!(retry_after, Duration::from_secs(30));
            }
            other => panic!("expected 429, got {other:?}"),
        }
        let b = vec![user_key(&uuid::Uuid::from_u128(1))];
        assert!(l.check_at(&b, t).is_ok());
        // Half of the next minute later, half of the 3 still count: 1.5 + 1 ≤ 3.
        assert!(l.check_at(&a, t + 60.0).is_ok());
        assert!(l.check_at(&a, t + 60.0).is_err());
        // Two minutes on, all forgotten.
        assert_eq!(l.check_at(&a, t + 150.0).unwrap().remaining, 2);
    }

    #[test]
    fn a_refused_request_counts_against_none_of_its_keys() {
        let l = limiter(10, 1, 10);
        let caller = caller_key("n8n");
        let u1 = caller_user_key("n8n", &uuid::Uuid::nil());
        let t = 120.0;
        assert!(l.check_at(&[caller.clone(), u1.clone()], t).is_ok());
        for _ in 0..5 {
            assert!(l.check_at(&[caller.clone(), u1.clone()], t).is_err());
        }
        // The ceiling saw one request, not six.
        let allowance = l.check_at(std::slice::from_ref(&caller), t).unwrap();
        assert_eq!((allowance.limit, allowance.remaining), (10, 8));
    }

    #[test]
    fn the_client_address_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let trusted = parse_trusted_proxies("10.0.0.0/8, 192.168.1.1").unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 1.2.3.4".parse().unwrap());
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer: the header is ignored.
        assert_eq!(client_ip(ip("8.8.8.8"), &h, &trusted), ip("8.8.8.8"));
        // A trusted peer: the rightmost untrusted hop (10.1.1.1 is a proxy too).
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("1.2.3.4"));
        assert_eq!(
            client_ip(ip("::ffff:192.168.1.1"), &h, &trusted),
            ip("1.2.3.4")
        );
        // No header, or only proxies: the leftmost proxy.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        let mut only = HeaderMap::new();
        only.insert("x-forwarded-for", "10.9.9.9".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.2"), &only, &trusted), ip("10.9.9.9"));
        // A malformed hop written by a proxy stops the walk at that proxy.
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", "1.2.3.4, garbage".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.2"), &bad, &trusted), ip("10.0.0.2"));
        assert_eq!(parse_trusted_proxies("10.0.0.0/33"), None);
        assert_eq!(parse_trusted_proxies("").unwrap(), vec![]);
    }
}
