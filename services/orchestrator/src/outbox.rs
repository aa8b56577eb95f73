//! Transactional outbox: messages are written in the transaction that
//! decided them and published afterwards by [`relay`], with their message id
//! as `Nats-Msg-Id`, so a crash between the two neither loses nor doubles a
//! message (the broker drops a repeat inside its duplicate window).

use std::sync::Arc;
use std::time::Duration;

use landlord_contract::{CeType, header};
use landlord_runtime::{Envelope, Publisher};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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

/// Writes `messages` into the outbox within `tx`.
pub async fn write(tx: &mut Transaction<'static, Postgres>, messages: &[Outgoing]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut subjects = Vec::with_capacity(messages.len());
    let mut ids = Vec::with_capacity(messages.len());
    let mut types = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut correlations = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    let mut parents = Vec::with_capacity(messages.len());
    let mut states = Vec::with_capacity(messages.len());
    for m in messages {
        parents.push(m.trace.as_ref().map(|(p, _)| p.as_str()));
        states.push(m.trace.as_ref().and_then(|(_, s)| s.as_deref()));
        subjects.push(m.subject.as_str());
        ids.push(m.msg_id.as_str());
        types.push(m.ce_type);
        keys.push(m.tenant_key.as_deref());
        correlations.push(m.correlation_id.as_deref());
        payloads.push(m.payload.as_slice());
    }
    // One statement for the batch; `unnest` keeps the order given.
    sqlx::query(
        "INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[],
                              $8::text[])",
    )
    .bind(&subjects)
    .bind(&ids)
    .bind(&types)
    .bind(&keys)
    .bind(&correlations)
    .bind(&payloads)
    .bind(&parents)
    .bind(&states)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many rows one relay transaction publishes.
const BATCH: i64 = 256;

/// Publishes the outbox until `shutdown`: right after `wake` is notified
/// (this process committed something) and every `poll` otherwise (rows left
/// by other replicas or by a crash).
pub async fn relay(pool: PgPool, publisher: Publisher, wake: Arc<Notify>, poll: Duration, shutdown: CancellationToken) {
    loop {
        loop {
            match relay_batch(&pool, &publisher).await {
                Ok(n) if n < BATCH as usize => break,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
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

/// Publishes one batch: all sent before any ack is awaited, rows deleted in
/// the same transaction that locked them.
pub async fn relay_batch(pool: &PgPool, publisher: &Publisher) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    // Forgetting a delete in a crash only means publishing those rows again,
    // which the broker drops as duplicates: no need to wait for the flush.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT id, subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate FROM outbox
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
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
