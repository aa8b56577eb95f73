//! Self-service sign-up (issue 29 item 1, docs/signup.md): a lead leaves
//! an email, a company name, the wanted tenant key and a plan
//! (`POST /v1/signups`, public); a mail carries a single-use link
//! (`GET /v1/signups/verify?token=…`) whose following requests the tenant
//! exactly once, as `POST /v1/tenants` would (idempotency id
//! `signup:<signup id>`, source `signup`). A form checks a key as the user
//! types with `GET /v1/tenant-keys/{key}`.
//!
//! The link's token is stored only as its SHA-256; it expires after
//! `LANDLORD_SIGNUP_TTL` (default 24 h) and a re-send
//! (`POST /v1/signups/resend`, at most [`Settings::resends`] times) replaces
//! it. The mail is a `notification.send_signup_verification` command written
//! to the outbox with the sign-up. Abandoned sign-ups are pruned a day after
//! they expire ([`prune`]).
//!
//! Settings (read from the process environment when the routes are built):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_SIGNUP_TTL` | `24h` | how long a verification link lives |
//! | `LANDLORD_PUBLIC_URL` | the request's `Host` | the gateway's address as the lead's browser reaches it |

mod create;
mod keys;
mod limit;
mod mail;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use landlord_runtime::Env;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use create::{Resend, SignUp, SignUpAccepted};
pub use keys::KeyAvailability;
use limit::Window;
pub use verify::Verified;

use crate::state::App;

/// How sign-ups behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a verification link lives.
    pub ttl: Duration,
    /// `LANDLORD_PUBLIC_URL`, without a trailing slash; `None`: the
    /// request's `Host` over `http`.
    pub public_url: Option<String>,
    /// Sign-ups and re-sends per client address per hour.
    pub per_address: usize,
    /// Sign-ups per email per hour.
    pub per_email: i64,
    /// Re-sends of one sign-up's mail.
    pub resends: i32,
    /// Key checks per client address per minute.
    pub key_checks: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            public_url: None,
            per_address: 5,
            per_email: 3,
            resends: 3,
            key_checks: 60,
        }
    }
}

impl Settings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let ttl = env.duration("LANDLORD_SIGNUP_TTL", defaults.ttl)?;
        if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 3600) {
            anyhow::bail!("LANDLORD_SIGNUP_TTL must be more than 0 and at most 30 days");
        }
        let public_url = env.raw("LANDLORD_PUBLIC_URL").map(|url| url.trim_end_matches('/').to_owned());
        Ok(Self { ttl, public_url, ..defaults })
    }
}

/// What the sign-up handlers get.
#[derive(Debug, Clone)]
pub(crate) struct Signups {
    app: App,
    settings: Arc<Settings>,
    /// Sign-ups and re-sends by client address, per hour.
    submissions: Window,
    /// Key checks by client address, per minute.
    checks: Window,
}

/// The sign-up routes, with the settings of the process environment (the
/// defaults, logged, if they do not parse).
pub fn routes<S>(app: App) -> Router<S> {
    let settings = Settings::from_env(&Env::process()).unwrap_or_else(|error| {
        tracing::error!(%error, "sign-up settings: using the defaults");
        Settings::default()
    });
    routes_with(app, settings)
}

/// The sign-up routes with the given settings.
pub fn routes_with<S>(app: App, settings: Settings) -> Router<S> {
    let state = Signups {
        app,
        submissions: Window::new(settings.per_address, Duration::from_secs(3600)),
        checks: Window::new(settings.key_checks, Duration::from_secs(60)),
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/v1/signups", post(create::sign_up))
        .route("/v1/signups/resend", post(create::resend))
        .route("/v1/signups/verify", get(verify::verify))
        .route("/v1/tenant-keys/{key}", get(keys::check))
        .with_state(state)
}

/// How often abandoned sign-ups are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes sign-ups never verified whose link expired more than a day ago.
pub async fn prune_once(pool: &PgPool) -> sqlx::Result<u64> {
    let pruned = sqlx::query("DELETE FROM signups WHERE verified_at IS NULL AND expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected();
    Ok(pruned)
}

/// The periodic task that prunes abandoned sign-ups until `shutdown`.
pub async fn prune(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => match prune_once(&pool).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "abandoned sign-ups pruned"),
                Err(error) => tracing::warn!(%error, "pruning abandoned sign-ups failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_defaults_to_a_day_and_is_bounded() {
        let defaults = Settings::from_env(&Env::from_pairs([("X", "")])).unwrap();
        assert_eq!((defaults.ttl, defaults.public_url), (Duration::from_secs(24 * 3600), None));
        let set =
            Env::from_pairs([("LANDLORD_SIGNUP_TTL", "2h"), ("LANDLORD_PUBLIC_URL", "https://signup.example.com/")]);
        let set = Settings::from_env(&set).unwrap();
        assert_eq!(set.ttl, Duration::from_secs(7200));
        assert_eq!(set.public_url.as_deref(), Some("https://signup.example.com"));
        for bad in ["0s", "31d", "soon"] {
            assert!(Settings::from_env(&Env::from_pairs([("LANDLORD_SIGNUP_TTL", bad)])).is_err(), "{bad}");
        }
    }
}
