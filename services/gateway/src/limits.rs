//! Request limits and access logs, applied to every API request in one
//! middleware: a token bucket per client address, a deadline for the answer
//! (the body of a stream, once started, is not cut), and one structured log
//! line per request. The body size limit is axum's `DefaultBodyLimit`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    pub timeout: Duration,
    pub rate_per_second: f64,
    pub burst: f64,
}

/// Token buckets by client address.
#[derive(Debug, Clone)]
pub struct Limiter {
    limits: Limits,
    buckets: Arc<Mutex<HashMap<IpAddr, (f64, Instant)>>>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, buckets: Arc::default() }
    }

    /// Takes a token for `client`, or says in how many seconds one is due.
    fn take(&self, client: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() > 100_000 {
            // Forget idle clients rather than grow without bound.
            let full = self.limits.burst / self.limits.rate_per_second;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full);
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.limits.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.limits.rate_per_second).min(self.limits.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.limits.rate_per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Put on an answer of the Clerk webhook whose delivery's signature
/// checked: only those are exempt from the per-address limit.
#[derive(Debug, Clone, Copy)]
pub struct SignatureChecked;

/// The path of the one route limited after the fact (see [`guard`]).
const WEBHOOK: &str = "/v1/webhooks/clerk";

impl Limiter {
    fn refuse(&self, retry_after: u64, what: &str) -> Response {
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "more than {} {what} per second from this client; retry in {retry_after}s",
                self.limits.rate_per_second
            ),
        );
        problem.retry_after = Some(retry_after);
        problem.into_response()
    }
}

pub async fn guard(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Clerk's deliveries come from Svix's few addresses: a per-address
    // limit would refuse a burst of organizations (and Svix would retry only
    // minutes later). So the webhook takes a token only for a delivery whose
    // signature did not check, once the handler has said so: a flood of
    // unsigned or forged deliveries from one address is refused like any
    // other, a signed delivery never is.
    let webhook = path == WEBHOOK;
    let limited = client.filter(|_| !webhook);
    let response = match limited.map(|c| limiter.take(c)) {
        Some(Err(retry_after)) => limiter.refuse(retry_after, "requests"),
        _ => match tokio::time::timeout(limiter.limits.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no answer within {:?}; the request may still take effect", limiter.limits.timeout),
            )
            .into_response(),
        },
    };
    let response = match client {
        Some(client) if webhook && response.extensions().get::<SignatureChecked>().is_none() => {
            match limiter.take(client) {
                Ok(()) => response,
                Err(retry_after) => limiter.refuse(retry_after, "deliveries with a bad or missing signature"),
            }
        }
        _ => response,
    };
    tracing::info!(
        target: "access",
        client = client.map(|c| c.to_string()).unwrap_or_default(),
        %method,
        path,
        status = response.status().as_u16(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_empties_and_says_when_to_come_back() {
        let limiter =
            Limiter::new(Limits { body_bytes: 0, timeout: Duration::from_secs(1), rate_per_second: 1.0, burst: 2.0 });
        let client = IpAddr::from([127, 0, 0, 1]);
        assert!(limiter.take(client).is_ok());
        assert!(limiter.take(client).is_ok());
        assert_eq!(limiter.take(client), Err(1));
        assert!(limiter.take(IpAddr::from([127, 0, 0, 2])).is_ok());
    }
}
