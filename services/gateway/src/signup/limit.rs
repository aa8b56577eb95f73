//! A sliding window of requests per client address: sign-ups are a few an
//! hour per person, a token bucket sized for API clients would let a bot
//! send hundreds of mails.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::problem::Problem;

#[derive(Debug, Clone)]
pub(super) struct Window {
    limit: usize,
    period: Duration,
    seen: Arc<Mutex<HashMap<IpAddr, VecDeque<Instant>>>>,
}

impl Window {
    pub(super) fn new(limit: usize, period: Duration) -> Self {
        Self { limit, period, seen: Arc::default() }
    }

    /// Counts a request of `client`, or refuses it with 429 and the seconds
    /// until the oldest one leaves the window.
    pub(super) fn take(&self, client: IpAddr, what: &str) -> Result<(), Problem> {
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else { return Ok(()) };
        if seen.len() > 100_000 {
            seen.retain(|_, times| times.back().is_some_and(|at| now.duration_since(*at) < self.period));
        }
        let times = seen.entry(client).or_default();
        while times.front().is_some_and(|at| now.duration_since(*at) >= self.period) {
            times.pop_front();
        }
        if times.len() < self.limit {
            times.push_back(now);
            return Ok(());
        }
        let wait = times.front().map_or(self.period, |at| self.period.saturating_sub(now.duration_since(*at)));
        Err(too_many(format!("more than {} {what} from this address in {:?}", self.limit, self.period), wait))
    }
}

/// 429 with `Retry-After`.
pub(super) fn too_many(detail: String, wait: Duration) -> Problem {
    let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail);
    problem.retry_after = Some(wait.as_secs().max(1));
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_past_its_limit_and_says_when_to_come_back() {
        let window = Window::new(2, Duration::from_secs(3600));
        let client = IpAddr::from([127, 0, 0, 1]);
        assert!(window.take(client, "x").is_ok());
        assert!(window.take(client, "x").is_ok());
        let refused = window.take(client, "x").unwrap_err();
        assert_eq!(refused.status, 429);
        assert!(refused.retry_after.is_some_and(|s| s > 3500 && s <= 3600), "{:?}", refused.retry_after);
        assert!(window.take(IpAddr::from([127, 0, 0, 2]), "x").is_ok());
    }
}
