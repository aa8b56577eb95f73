//! Outbound webhooks (issue 29 item 4, docs/webhooks.md): lifecycle events
//! POSTed to HTTPS endpoints an operator registers, for systems that do not
//! speak NATS.
//!
//! - [`endpoints`]: `POST/GET /v1/webhook-endpoints`,
//!   `GET/PATCH/DELETE /v1/webhook-endpoints/{id}` — an endpoint is a URL
//!   (`https://`, or `http://` to a loopback address), the event names it
//!   wants (or `*`), whether it is enabled, and a signing secret `whsec_…`
//!   generated at registration and shown only in that answer;
//!   `POST /v1/webhook-endpoints/{id}/secret/rotate` replaces the secret,
//!   the old one signing next to the new for
//!   [`endpoints::SECRET_ROTATION_GRACE`] (24 h), as Svix rotates;
//! - [`deliveries`]: `GET /v1/webhook-endpoints/{id}/deliveries` — each
//!   event sent to the endpoint, its status and every attempt (status code,
//!   error, when, next attempt);
//! - [`intake`]: a durable JetStream consumer of the events stream (its own
//!   durable name, [`CONSUMER`]) that turns each event into one delivery
//!   row per matching endpoint, keyed `(endpoint, event id)` so an event
//!   read twice is delivered once, then acks. It only writes rows: a
//!   receiver that is down never holds the events stream, nor provisioning;
//! - [`sender`]: claims due deliveries (`FOR UPDATE SKIP LOCKED`, so
//!   several gateways share the work), POSTs the JSON CloudEvent signed as
//!   Svix signs ([`crate::svix`]; `svix-id` is the event id; during a
//!   rotation's grace window one `v1,` signature per secret) with a bound on
//!   requests in flight and a timeout each, records the attempt, and
//!   schedules the next with exponential backoff until
//!   `LANDLORD_WEBHOOK_GIVE_UP` after the event (`failed`).
//!
//! Settings ([`Settings::from_env`]):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_WEBHOOK_BACKOFF` | `5s` | wait after the first failed attempt; doubled after each |
//! | `LANDLORD_WEBHOOK_BACKOFF_MAX` | `1h` | the longest wait between attempts |
//! | `LANDLORD_WEBHOOK_GIVE_UP` | `24h` | a delivery still failing this long after its event is `failed` |
//! | `LANDLORD_WEBHOOK_TIMEOUT` | `10s` | longest wait for a receiver's answer |
//! | `LANDLORD_WEBHOOK_CONCURRENCY` | `16` | requests in flight at once, per gateway |
//! | `LANDLORD_WEBHOOK_POLL` | `1s` | how often due retries are looked for |
//! | `LANDLORD_WEBHOOK_RETENTION` | `7d` | how long finished deliveries and their attempts are kept |

pub mod deliveries;
pub mod endpoints;
pub mod intake;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use landlord_runtime::http::ExtraRoots;
use landlord_runtime::{ConfigError, Env, Service};

pub use deliveries::{AttemptView, DeliveriesPage, DeliveryStatus, DeliveryView};
pub use endpoints::{
    CreatedEndpoint, EndpointList, EndpointUpdate, EndpointView, NewEndpoint, RotatedSecret, SECRET_ROTATION_GRACE,
};

use crate::state::App;

/// The durable name of the consumer that turns events into deliveries.
pub const CONSUMER: &str = "gateway-webhooks";

/// How deliveries are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// A delivery still failing this long after it was made is `failed`.
    pub give_up_after: Duration,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How often due retries are looked for (new events wake the sender at
    /// once).
    pub poll: Duration,
    /// How long finished deliveries are kept.
    pub retention: Duration,
    /// Trusted for receivers' HTTPS besides the system's roots.
    pub roots: ExtraRoots,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            roots: ExtraRoots::default(),
        }
    }
}

impl Settings {
    pub fn from_env(env: &Env, roots: ExtraRoots) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let positive = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value = env.duration(var, default)?;
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    var: var.into(),
                    value: "0".into(),
                    problem: "must be more than 0".into(),
                });
            }
            Ok(value)
        };
        let backoff = positive("LANDLORD_WEBHOOK_BACKOFF", defaults.backoff)?;
        let max_backoff = positive("LANDLORD_WEBHOOK_BACKOFF_MAX", defaults.max_backoff)?;
        if max_backoff < backoff {
            return Err(ConfigError::Invalid {
                var: "LANDLORD_WEBHOOK_BACKOFF_MAX".into(),
                value: format!("{}s", max_backoff.as_secs_f64()),
                problem: "must not be shorter than LANDLORD_WEBHOOK_BACKOFF".into(),
            });
        }
        let give_up_after = positive("LANDLORD_WEBHOOK_GIVE_UP", defaults.give_up_after)?;
        if give_up_after > Duration::from_secs(30 * 24 * 3600) {
            return Err(ConfigError::Invalid {
                var: "LANDLORD_WEBHOOK_GIVE_UP".into(),
                value: format!("{}s", give_up_after.as_secs()),
                problem: "must be at most 30 days".into(),
            });
        }
        let concurrency = env.bounded("LANDLORD_WEBHOOK_CONCURRENCY", 16, 1..=1024)?;
        Ok(Self {
            backoff,
            max_backoff,
            give_up_after,
            timeout: positive("LANDLORD_WEBHOOK_TIMEOUT", defaults.timeout)?,
            concurrency: usize::try_from(concurrency).unwrap_or(16),
            poll: positive("LANDLORD_WEBHOOK_POLL", defaults.poll)?,
            retention: positive("LANDLORD_WEBHOOK_RETENTION", defaults.retention)?,
            roots,
        })
    }

    /// The wait after the `failed`-th failed attempt (1 for the first):
    /// `backoff * 2^(failed-1)`, at most `max_backoff`.
    pub fn backoff_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.backoff.saturating_mul(1u32 << doublings).min(self.max_backoff)
    }
}

/// The endpoint registry's routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/webhook-endpoints", get(endpoints::list).post(endpoints::create))
        .route("/v1/webhook-endpoints/{id}", get(endpoints::get).patch(endpoints::update).delete(endpoints::delete))
        .route("/v1/webhook-endpoints/{id}/secret/rotate", post(endpoints::rotate_secret))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(deliveries::list))
}

/// Declares the consumer and starts it, the sender and the pruning of old
/// deliveries on `service`; all stop with its shutdown token.
pub async fn attach(service: &Service, pool: sqlx::PgPool, settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let wake = Arc::new(tokio::sync::Notify::new());
    let consumer = intake::declare(&service.broker).await?;
    let intake = intake::Intake { pool: pool.clone(), namespace: service.broker.namespace.clone(), wake: wake.clone() };
    service.spawn(intake.run(consumer, service.shutdown_token()));
    let sender = sender::Sender::new(pool.clone(), settings.clone(), wake)?;
    service.spawn(sender.run(service.shutdown_token()));
    service.spawn(sender::prune(pool, settings.retention, service.shutdown_token()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_settings_are_checked() {
        let settings = Settings::default();
        let waits: Vec<u64> = (1..=12).map(|n| settings.backoff_after(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(settings.backoff_after(u32::MAX), Duration::from_secs(3600));
        assert_eq!(settings.backoff_after(0), Duration::from_secs(5));
        let set = Env::from_pairs([("LANDLORD_WEBHOOK_BACKOFF", "100ms"), ("LANDLORD_WEBHOOK_BACKOFF_MAX", "1s")]);
        let set = Settings::from_env(&set, ExtraRoots::default()).unwrap();
        assert_eq!((set.backoff, set.max_backoff), (Duration::from_millis(100), Duration::from_secs(1)));
        assert_eq!((set.give_up_after, set.concurrency), (Duration::from_secs(86_400), 16));
        for bad in [
            [("LANDLORD_WEBHOOK_BACKOFF", "0s"), ("X", "")],
            [("LANDLORD_WEBHOOK_BACKOFF", "2h"), ("LANDLORD_WEBHOOK_BACKOFF_MAX", "1h")],
            [("LANDLORD_WEBHOOK_GIVE_UP", "60d"), ("X", "")],
            [("LANDLORD_WEBHOOK_CONCURRENCY", "0"), ("X", "")],
            [("LANDLORD_WEBHOOK_TIMEOUT", "soon"), ("X", "")],
        ] {
            assert!(Settings::from_env(&Env::from_pairs(bad), ExtraRoots::default()).is_err(), "{bad:?}");
        }
    }
}
