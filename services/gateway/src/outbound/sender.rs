//! Sends due deliveries and records every attempt.
//!
//! A delivery is claimed by pushing its `next_attempt_at` ahead by a lease
//! (the timeout and a margin) in a short transaction that locks due rows
//! with `FOR UPDATE SKIP LOCKED`: no transaction stays open across a
//! request, several gateways never claim the same row, and a gateway that
//! dies mid-request leaves the row due again when the lease ends (at least
//! once; `svix-id` lets the receiver drop the repeat). At most
//! [`Settings::concurrency`] requests are in flight, each bounded by
//! [`Settings::timeout`], so a receiver that hangs costs one slot for that
//! long and nothing else.
//!
//! While a rotated-out secret is in its grace window
//! ([`super::SECRET_ROTATION_GRACE`]) each attempt is signed with both the
//! current and the previous secret, two `v1,` entries in one header, as
//! Svix does: a receiver holding either accepts it. Which secrets sign is
//! read with the claim, so an attempt after the window carries the current
//! one only.
//!
//! A 2xx answer delivers. Anything else — another status, a refused
//! connection, a timeout, a redirect (not followed) — is a failed attempt:
//! the next is scheduled [`Settings::backoff_after`] later, never past
//! [`Settings::give_up_after`] from the delivery's making; an attempt failing
//! at or after that point marks it `failed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use landlord_runtime::http::{client_builder, describe};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::Settings;
use super::deliveries::DeliveryStatus;
use crate::svix::{SigningSecret, unix_now};

/// The most of a receiver's answer kept with an attempt.
const RESPONSE_KEPT: usize = 1024;

/// Added to the timeout for a claim's lease.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A delivery claimed for one attempt.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: i64,
    event_id: String,
    body: String,
    /// Attempts before this one.
    attempts: i32,
    url: String,
    secret: String,
    /// The secret the last rotation replaced, while its window lasts.
    previous_secret: Option<String>,
}

/// What became of one attempt.
#[derive(Debug)]
struct Outcome {
    delivered: bool,
    status_code: Option<i32>,
    error: Option<String>,
    response: Option<String>,
}

/// The sending loop's state.
#[derive(Debug, Clone)]
pub struct Sender {
    pool: PgPool,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
}

impl Sender {
    pub fn new(pool: PgPool, settings: Arc<Settings>, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let client = client_builder(&settings.roots)
            // A redirect is an answer, not a delivery: following it would
            // send the signed event somewhere nobody registered.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("landlord-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { permits: Arc::new(Semaphore::new(settings.concurrency)), pool, settings, wake, client })
    }

    /// Sends until `shutdown`, then lets the requests in flight finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            // This loop is the only one taking permits: those free now stay free.
            let free = self.permits.available_permits() + 1;
            match self.claim(free).await {
                Ok(claimed) if claimed.is_empty() => {
                    drop(permit);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll) => {}
                    }
                }
                Ok(claimed) => {
                    let mut first = Some(permit);
                    for delivery in claimed {
                        let permit = match first.take() {
                            Some(permit) => permit,
                            None => match self.permits.clone().try_acquire_owned() {
                                Ok(permit) => permit,
                                Err(_) => break,
                            },
                        };
                        let span = tracing::info_span!("webhook", delivery = delivery.id, event = %delivery.event_id, url = %delivery.url, attempt = delivery.attempts + 1);
                        tasks.spawn(self.clone().attempt(delivery, permit).instrument(span));
                    }
                }
                Err(error) => {
                    drop(permit);
                    tracing::warn!(%error, "cannot claim webhook deliveries");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.settings.poll) => {}
                    }
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!("webhook sender stopped");
    }

    /// Claims up to `limit` due deliveries of enabled endpoints.
    async fn claim(&self, limit: usize) -> sqlx::Result<Vec<Claimed>> {
        let lease = (self.settings.timeout + LEASE_MARGIN).as_secs_f64();
        sqlx::query_as(
            "UPDATE outbound_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
             FROM outbound_endpoints e
             WHERE e.id = d.endpoint_id AND d.id IN (
                 SELECT q.id FROM outbound_deliveries q JOIN outbound_endpoints qe ON qe.id = q.endpoint_id
                 WHERE q.status = 'pending' AND q.next_attempt_at <= now() AND qe.enabled
                 ORDER BY q.next_attempt_at LIMIT $1
                 FOR UPDATE OF q SKIP LOCKED)
             RETURNING d.id, d.event_id, d.body, d.attempts, e.url, e.secret,
                       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret",
        )
        .bind(i64::try_from(limit).unwrap_or(1))
        .bind(lease)
        .fetch_all(&self.pool)
        .await
    }

    /// One attempt at `delivery`, recorded.
    async fn attempt(self, delivery: Claimed, _permit: OwnedSemaphorePermit) {
        let attempted_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let outcome = self.post(&delivery).await;
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        match &outcome.error {
            None => tracing::info!(duration_ms, "webhook delivered"),
            Some(error) => tracing::warn!(duration_ms, error, "webhook attempt failed"),
        }
        if let Err(error) = self.record(&delivery, attempted_at, duration_ms, outcome).await {
            // The lease ends and the delivery is tried again.
            tracing::warn!(%error, "cannot record a webhook attempt");
        }
    }

    async fn post(&self, delivery: &Claimed) -> Outcome {
        let failed =
            |error: String| Outcome { delivered: false, status_code: None, error: Some(error), response: None };
        let secret = match SigningSecret::parse(&delivery.secret) {
            Ok(secret) => secret,
            Err(problem) => return failed(format!("the endpoint's signing secret is not usable: {problem}")),
        };
        let timestamp = unix_now();
        let mut signature = secret.sign(&delivery.event_id, timestamp, delivery.body.as_bytes());
        // A previous secret that no longer parses only loses its own signature.
        if let Some(previous) = delivery.previous_secret.as_deref().and_then(|p| SigningSecret::parse(p).ok()) {
            signature.push(' ');
            signature.push_str(&previous.sign(&delivery.event_id, timestamp, delivery.body.as_bytes()));
        }
        let timestamp = timestamp.to_string();
        let request = self
            .client
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json")
            .header("svix-id", &delivery.event_id)
            .header("svix-timestamp", &timestamp)
            .header("svix-signature", &signature)
            // The same signature under the Standard Webhooks names, which
            // Svix sends too.
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", &signature)
            .body(delivery.body.clone());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return failed(format!("no answer within {:?}", self.settings.timeout));
            }
            Err(error) => return failed(describe(&error)),
        };
        let status = response.status();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                // The status decides; an answer cut short is only less to show.
                Ok(None) | Err(_) => break,
            }
        }
        kept.truncate(RESPONSE_KEPT);
        let text = String::from_utf8_lossy(&kept).into_owned();
        Outcome {
            delivered: status.is_success(),
            status_code: Some(i32::from(status.as_u16())),
            error: (!status.is_success()).then(|| format!("answered {status}")),
            response: (!text.is_empty()).then_some(text),
        }
    }

    /// The attempt, and the delivery's new status and next attempt.
    async fn record(
        &self,
        delivery: &Claimed,
        attempted_at: OffsetDateTime,
        duration_ms: i32,
        outcome: Outcome,
    ) -> sqlx::Result<()> {
        let failed_so_far = u32::try_from(delivery.attempts).unwrap_or(0).saturating_add(1);
        let backoff = self.settings.backoff_after(failed_so_far).as_secs_f64();
        let give_up = self.settings.give_up_after.as_secs_f64();
        let mut tx = self.pool.begin().await?;
        // Only a pending delivery is updated: an attempt that overran its
        // lease may race a second one, and "delivered" is final.
        let updated: Option<(i32, String)> = sqlx::query_as(
            "UPDATE outbound_deliveries SET
                 attempts = attempts + 1,
                 status = CASE WHEN $2 THEN $5
                               WHEN now() >= created_at + make_interval(secs => $4) THEN $6
                               ELSE $7 END,
                 next_attempt_at = CASE WHEN $2 OR now() >= created_at + make_interval(secs => $4) THEN NULL
                                        ELSE least(now() + make_interval(secs => $3),
                                                   created_at + make_interval(secs => $4)) END,
                 finished_at = CASE WHEN $2 OR now() >= created_at + make_interval(secs => $4) THEN now() END
             WHERE id = $1 AND status = $7
             RETURNING attempts, status",
        )
        .bind(delivery.id)
        .bind(outcome.delivered)
        .bind(backoff)
        .bind(give_up)
        .bind(DeliveryStatus::Delivered.as_str())
        .bind(DeliveryStatus::Failed.as_str())
        .bind(DeliveryStatus::Pending.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        // Deleted with its endpoint meanwhile, or finished by a racing attempt.
        let Some((attempt, status)) = updated else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO outbound_attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(delivery.id)
        .bind(attempt)
        .bind(attempted_at)
        .bind(duration_ms)
        .bind(outcome.status_code)
        .bind(&outcome.error)
        .bind(&outcome.response)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if status == DeliveryStatus::Failed.as_str() {
            tracing::warn!(attempts = attempt, "webhook delivery given up");
        }
        Ok(())
    }
}

/// How often finished deliveries past their retention are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Removes deliveries finished more than `retention` ago (their attempts
/// with them).
pub async fn prune_once(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM outbound_deliveries
         WHERE status <> 'pending' AND finished_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Forgets the secrets rotated out whose window has ended: they sign
/// nothing any more, and a key kept is a key that can leak.
pub async fn forget_expired_secrets(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE outbound_endpoints SET previous_secret = NULL, previous_secret_until = NULL
         WHERE previous_secret_until <= now()",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The periodic pruning, until `shutdown`.
pub async fn prune(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                match prune_once(&pool, retention).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "finished webhook deliveries pruned"),
                    Err(error) => tracing::warn!(%error, "pruning webhook deliveries failed"),
                }
                match forget_expired_secrets(&pool).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "rotated-out webhook secrets forgotten"),
                    Err(error) => tracing::warn!(%error, "forgetting rotated-out webhook secrets failed"),
                }
            }
        }
    }
}
