//! Transactional outbox: messages are written in the transaction that
//! decided them and published after it commits, with their message id as
//! `Nats-Msg-Id`, so a crash between the two neither loses nor doubles a
//! message (the broker drops a repeat inside its duplicate window).
//!
//! The handler that committed publishes its own rows at once
//! ([`Dispatcher`]) and hands their ids to a background task that deletes
//! them in batches ([`cleaner`]). Rows left behind — the process died
//! between commit and publish, or the broker was away — are published by
//! [`sweep`] once they are older than a grace period.
//!
//! The gateway and the orchestrator share the table; each row names its
//! [`Relay`], the service whose sweep publishes it (normally the one that
//! wrote it), and each sweep takes only its own rows: the two bus users
//! may publish different subjects.

use std::time::Duration;

use landlord_contract::{CeType, header, pb};
use landlord_runtime::{Envelope, Publisher};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::state::Relay;

/// A message decided in a transaction, to be published after commit.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub msg_id: String,
    pub ce_type: &'static str,
    pub tenant_key: Option<String>,
    pub correlation_id: Option<String>,
    pub payload: Vec<u8>,
    /// Trace context of the work that decided this message.
    pub trace: Option<(String, Option<String>)>,
}

impl Outgoing {
    pub fn new<M: CeType>(subject: String, msg_id: String, message: &M) -> Self {
        Self {
            subject,
            msg_id,
            ce_type: M::CE_TYPE,
            tenant_key: None,
            correlation_id: None,
            payload: message.encode_to_vec(),
            trace: landlord_runtime::telemetry::current_trace(),
        }
    }

    pub fn about(mut self, tenant_key: &str, saga_id: Option<&str>) -> Self {
        self.tenant_key = Some(tenant_key.to_owned());
        self.correlation_id = saga_id.map(str::to_owned);
        self
    }
}

/// A row written to the outbox, to publish once its transaction commits.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub message: Outgoing,
}

/// The outbox columns of a batch of messages, as arrays for `unnest`.
#[derive(Debug, Default)]
pub struct Columns<'a> {
    pub subjects: Vec<&'a str>,
    pub msg_ids: Vec<&'a str>,
    pub ce_types: Vec<&'a str>,
    pub tenant_keys: Vec<Option<&'a str>>,
    pub correlation_ids: Vec<Option<&'a str>>,
    pub payloads: Vec<&'a [u8]>,
    pub traceparents: Vec<Option<&'a str>>,
    pub tracestates: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    pub fn of(messages: &'a [Outgoing]) -> Self {
        let mut c = Self::default();
        for m in messages {
            c.subjects.push(&m.subject);
            c.msg_ids.push(&m.msg_id);
            c.ce_types.push(m.ce_type);
            c.tenant_keys.push(m.tenant_key.as_deref());
            c.correlation_ids.push(m.correlation_id.as_deref());
            c.payloads.push(&m.payload);
            c.traceparents.push(m.trace.as_ref().map(|(p, _)| p.as_str()));
            c.tracestates.push(m.trace.as_ref().and_then(|(_, s)| s.as_deref()));
        }
        c
    }
}

/// Pairs the ids the outbox insert returned with the messages. Which id
/// belongs to which message does not matter beyond deleting the right set
/// of rows once all are published.
pub fn pending(ids: Vec<i64>, messages: &[Outgoing]) -> Vec<Pending> {
    ids.into_iter().zip(messages.iter().cloned()).map(|(id, message)| Pending { id, message }).collect()
}

/// Writes `messages` into the outbox within `tx`, for `relay` to publish.
pub async fn write(
    tx: &mut Transaction<'static, Postgres>,
    relay: Relay,
    messages: &[Outgoing],
) -> sqlx::Result<Vec<Pending>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let c = Columns::of(messages);
    // One statement for the batch, in the order given.
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate,
                             relay)
         SELECT a, b, c, d, e, f, g, h, $9
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[])
              WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, n)
         ORDER BY n
         RETURNING id",
    )
    .bind(&c.subjects)
    .bind(&c.msg_ids)
    .bind(&c.ce_types)
    .bind(&c.tenant_keys)
    .bind(&c.correlation_ids)
    .bind(&c.payloads)
    .bind(&c.traceparents)
    .bind(&c.tracestates)
    .bind(relay)
    .fetch_all(&mut **tx)
    .await?;
    Ok(pending(ids, messages))
}

/// Records webhook delivery `svix_id` and writes `message` to the outbox,
/// in one statement and only if that delivery is new: `None` when it was
/// seen before. One round trip, committed on its own — the same effect as
/// a transaction around the two inserts, for a quarter of the round trips
/// (the gateway's Clerk bridge, for deliveries outside the organization
/// flow). Relayed by the gateway, the only service that takes webhooks.
pub async fn write_for_new_delivery(
    pool: &PgPool,
    svix_id: &str,
    event_type: &str,
    message: &Outgoing,
) -> sqlx::Result<Option<Pending>> {
    let (traceparent, tracestate) = match &message.trace {
        Some((parent, state)) => (Some(parent.as_str()), state.as_deref()),
        None => (None, None),
    };
    let ids: Vec<i64> = sqlx::query_scalar(
        "WITH delivery AS (
             INSERT INTO webhook_deliveries (svix_id, event_type) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING svix_id)
         INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate,
                             relay)
         SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM delivery
         RETURNING id",
    )
    .bind(svix_id)
    .bind(event_type)
    .bind(&message.subject)
    .bind(&message.msg_id)
    .bind(message.ce_type)
    .bind(&message.tenant_key)
    .bind(&message.correlation_id)
    .bind(&message.payload)
    .bind(traceparent)
    .bind(tracestate)
    .bind(Relay::Gateway)
    .fetch_all(pool)
    .await?;
    Ok(pending(ids, std::slice::from_ref(message)).pop())
}

fn headers(publisher: &Publisher, message: &Outgoing) -> async_nats::HeaderMap {
    let envelope = Envelope {
        id: message.msg_id.clone(),
        tenant_key: message.tenant_key.clone(),
        correlation_id: message.correlation_id.clone(),
    };
    let mut headers = publisher.headers_for(message.ce_type, &envelope);
    if let Some((traceparent, tracestate)) = &message.trace {
        headers.insert(header::TRACEPARENT, traceparent.as_str());
        if let Some(tracestate) = tracestate {
            headers.insert(header::TRACESTATE, tracestate.as_str());
        }
    }
    headers
}

/// Publishes committed rows and passes their ids on for deletion.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    publisher: Publisher,
    published: mpsc::UnboundedSender<Vec<i64>>,
}

impl Dispatcher {
    pub fn new(publisher: Publisher) -> (Self, mpsc::UnboundedReceiver<Vec<i64>>) {
        let (published, rx) = mpsc::unbounded_channel();
        (Self { publisher, published }, rx)
    }

    /// Publishes `pending`, all sent before any ack is awaited: step
    /// commands first — a worker waits on its command, nobody waits on the
    /// progress events decided with it — each kind in the order given. On
    /// trouble the rows stay and [`sweep`] publishes them later.
    pub async fn dispatch(&self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let (commands, others): (Vec<&Pending>, Vec<&Pending>) =
            pending.iter().partition(|row| row.message.ce_type == pb::StepCommand::CE_TYPE);
        let mut acks = Vec::with_capacity(pending.len());
        for row in commands.into_iter().chain(others) {
            let headers = headers(&self.publisher, &row.message);
            match self
                .publisher
                .send_raw(row.message.subject.clone(), headers, row.message.payload.clone().into())
                .await
            {
                Ok(ack) => acks.push((row.id, ack)),
                Err(error) => {
                    tracing::warn!(%error, "publishing from the outbox failed; the sweep will retry");
                    break;
                }
            }
        }
        let mut done = Vec::with_capacity(acks.len());
        for (id, ack) in acks {
            match ack.await {
                Ok(_) => done.push(id),
                Err(error) => tracing::warn!(%error, "no ack for an outbox message; the sweep will retry"),
            }
        }
        let _ = self.published.send(done);
    }
}

/// How long the ids of published rows are gathered before one DELETE
/// removes them all: well inside the sweep's grace, so the sweep does not
/// see them. Deleting as soon as anything was published cost a DELETE
/// transaction per saga step (or per webhook delivery) — four round trips
/// and as much PostgreSQL work as the step's own transaction, on the same
/// cores (bench/results/api.md, bench/results/saga.md).
pub const CLEAN_WINDOW: Duration = Duration::from_millis(100);

/// Deletes published rows, a `window`'s worth at a time. Losing a delete
/// in a crash (or ids not yet deleted at shutdown) only means the sweep
/// publishes those rows again, and the broker drops them as duplicates: so
/// the delete need not wait for the disk.
pub async fn cleaner(
    pool: PgPool,
    mut published: mpsc::UnboundedReceiver<Vec<i64>>,
    window: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let mut ids = tokio::select! {
            ids = published.recv() => match ids { Some(ids) => ids, None => return },
            () = shutdown.cancelled() => return,
        };
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = shutdown.cancelled() => return,
        }
        while let Ok(more) = published.try_recv() {
            ids.extend(more);
        }
        if ids.is_empty() {
            continue;
        }
        // A durable commit (synchronous_commit as the server has it): a
        // delete lost in a PostgreSQL crash would bring the rows back, and
        // the sweep would publish them again, maybe after the stream's
        // duplicate window. One commit per window costs nothing.
        let deleted = sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&pool);
        if let Err(error) = deleted.await {
            tracing::warn!(%error, "deleting published outbox rows failed; the sweep will publish them again");
        }
    }
}

/// How many rows one sweep transaction publishes.
const BATCH: i64 = 256;

/// Publishes `relay`'s rows older than `grace` every `poll` until
/// `shutdown`: what a crash or a broker outage left behind, from this
/// replica or another of the same service. With
/// a `retention`, also prunes inbox ids older than that (the inbox's owner,
/// the orchestrator, does; the gateway only relays).
pub async fn sweep(
    pool: PgPool,
    publisher: Publisher,
    relay: Relay,
    grace: Duration,
    poll: Duration,
    retention: Option<Duration>,
    shutdown: CancellationToken,
) {
    loop {
        if let Some(retention) = retention
            && let Err(error) = prune_inbox(&pool, retention).await
        {
            tracing::warn!(%error, "pruning the inbox failed; retrying");
        }
        loop {
            match sweep_batch(&pool, &publisher, relay, grace).await {
                Ok(n) if n < BATCH as usize => break,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "outbox sweep failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Deletes inbox ids older than `retention`, a bounded batch at a time.
pub async fn prune_inbox(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let mut pruned = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM inbox WHERE msg_id IN (
                SELECT msg_id FROM inbox WHERE received_at < now() - make_interval(secs => $1) LIMIT 1000)",
        )
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        pruned += n;
        if n < 1000 {
            return Ok(pruned);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] landlord_runtime::publish::PublishError),
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    subject: String,
    msg_id: String,
    ce_type: String,
    tenant_key: Option<String>,
    correlation_id: Option<String>,
    payload: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// Publishes one batch of `relay`'s old rows: all sent before any ack is
/// awaited, rows deleted in the transaction that locked them. Another
/// relay's rows are left alone: its subjects may be ones this service's
/// bus user is refused, and one refused row fails the batch (its ack never
/// comes) after holding every row of it locked.
pub async fn sweep_batch(
    pool: &PgPool,
    publisher: &Publisher,
    relay: Relay,
    grace: Duration,
) -> Result<usize, RelayError> {
    // Durable commit, as the cleaner's: see there.
    let mut tx = pool.begin().await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT id, subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate FROM outbox
         WHERE relay = $3 AND created_at < now() - make_interval(secs => $2)
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .bind(grace.as_secs_f64())
    .bind(relay)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut acks = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let envelope = Envelope { id: row.msg_id, tenant_key: row.tenant_key, correlation_id: row.correlation_id };
        let mut headers = publisher.headers_for(&row.ce_type, &envelope);
        if let Some(traceparent) = &row.traceparent {
            headers.insert(header::TRACEPARENT, traceparent.as_str());
        }
        if let Some(tracestate) = &row.tracestate {
            headers.insert(header::TRACESTATE, tracestate.as_str());
        }
        acks.push(publisher.send_raw(row.subject, headers, row.payload.into()).await?);
        ids.push(row.id);
    }
    for ack in acks {
        ack.await
            .map_err(|source| landlord_runtime::publish::PublishError::Publish { subject: "outbox".into(), source })?;
    }
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ids.len())
}
