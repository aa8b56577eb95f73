//! Dead letters, as operators read and act on them: what the console's
//! `/console/dlq` and the CLI's `landlord dlq` share.
//!
//! The consumer ([`crate::consume`]) parks a message it could not handle on
//! the dead-letter stream: the original message with `landlord-dlq-*`
//! headers saying where it came from, why, after how many deliveries, for
//! which consumer. Here a dead letter is listed (oldest first, filtered by
//! its original subject), decoded to JSON by its CloudEvents type,
//! redriven — published again on its original subject with its original
//! headers and a message id of its own (`redrive.<stream>.<sequence>`, so
//! the broker does not drop it as a duplicate, and a redrive repeated after
//! a crash is one message), then removed — or discarded.

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use landlord_contract::{header, pb};
use prost::Message as _;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {0} does not say where it came from")]
    NoOrigin(u64),
    #[error("dead letter {0} was not removed")]
    NotRemoved(u64),
    #[error("the dead-letter stream: {0}")]
    Nats(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn nats(error: impl std::fmt::Display) -> Error {
    Error::Nats(error.to_string())
}

/// A dead letter: the parked message and what its headers say.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub sequence: u64,
    /// When it was parked (RFC 3339).
    pub time: String,
    /// The subject it was consumed from.
    pub subject: String,
    pub reason: String,
    pub deliveries: Option<u64>,
    pub consumer: String,
    /// The tenant key (the CloudEvents `subject`).
    pub tenant: String,
    /// The saga (the correlation id), when it has one.
    pub saga: String,
    /// The CloudEvents type, e.g. `landlord.v1.StepCommand`.
    pub ce_type: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

fn attribute(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

impl DeadLetter {
    pub fn of(message: &StreamMessage) -> Self {
        let h = &message.headers;
        Self {
            sequence: message.sequence,
            time: message.time.format(&Rfc3339).unwrap_or_default(),
            subject: attribute(h, header::DLQ_SUBJECT),
            reason: attribute(h, header::DLQ_REASON),
            deliveries: attribute(h, header::DLQ_DELIVERIES).parse().ok(),
            consumer: attribute(h, header::DLQ_CONSUMER),
            tenant: attribute(h, header::SUBJECT),
            saga: attribute(h, header::CORRELATION_ID),
            ce_type: attribute(h, header::TYPE),
            headers: h.clone(),
            payload: message.payload.clone(),
        }
    }

    /// What a list shows of it.
    pub fn summary(&self) -> Value {
        json!({
            "sequence": self.sequence, "time": self.time, "subject": self.subject, "reason": self.reason,
            "deliveries": self.deliveries, "consumer": self.consumer, "tenant": self.tenant, "saga": self.saga,
            "type": self.ce_type,
        })
    }

    /// Every header, values joined with ", ".
    pub fn header_map(&self) -> Value {
        self.headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The payload decoded by its CloudEvents type, when it is one of the
    /// messages a consumer can park; else its size and type.
    pub fn decoded(&self) -> Value {
        decoded(&self.ce_type, &self.payload)
            .unwrap_or_else(|| json!({"undecoded_bytes": self.payload.len(), "type": self.ce_type}))
    }
}

fn tenant_spec(t: Option<&pb::TenantSpec>) -> Value {
    t.map_or(Value::Null, |t| {
        json!({"tenant_id": t.tenant_id, "key": t.key, "display_name": t.display_name, "plan": t.plan,
               "tier": t.tier, "domains": t.domains, "labels": t.labels})
    })
}

fn decoded(ce_type: &str, payload: &[u8]) -> Option<Value> {
    match ce_type.rsplit('.').next()? {
        "StepCommand" => pb::StepCommand::decode(payload).ok().map(|m| {
            json!({"saga_id": m.saga_id, "step": m.step, "compensate": m.compensate, "attempt": m.attempt,
                   "tenant": tenant_spec(m.tenant.as_ref()), "inputs": m.inputs, "params": m.params,
                   "resources": m.resources.len()})
        }),
        "CancelSaga" => pb::CancelSaga::decode(payload).ok().map(|m| {
            json!({"tenant_key": m.tenant_key, "reason": m.reason, "requested_by": m.requested_by, "saga_id": m.saga_id})
        }),
        "OperationRequested" => pb::OperationRequested::decode(payload).ok().map(|m| {
            json!({"saga_id": m.saga_id, "tenant_id": m.tenant_id, "tenant_key": m.tenant_key, "operation": m.operation,
                   "idempotency_id": m.idempotency_id, "requested_by": m.requested_by, "reason": m.reason})
        }),
        "TenantRequested" => pb::TenantRequested::decode(payload).ok().map(|m| {
            json!({"idempotency_id": m.idempotency_id, "key": m.key, "display_name": m.display_name, "plan": m.plan,
                   "tier": m.tier, "domains": m.domains, "source": m.source, "labels": m.labels, "retry_of": m.retry_of})
        }),
        "StepResult" => pb::StepResult::decode(payload).ok().map(|m| {
            json!({"saga_id": m.saga_id, "step": m.step, "compensate": m.compensate, "attempt": m.attempt,
                   "command_id": m.command_id, "outcome": format!("{:?}", m.outcome)})
        }),
        _ => None,
    }
}

/// Dead letter `sequence`.
pub async fn get(stream: &Stream, sequence: u64) -> Result<DeadLetter> {
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(DeadLetter::of(&message)),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Err(Error::NotFound(sequence)),
        Err(e) => Err(nats(e)),
    }
}

/// Dead letters whose original subject contains `subject`, oldest first,
/// at most `limit`.
pub async fn list(stream: &mut Stream, subject: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
    let state = stream.info().await.map_err(nats)?.state.clone();
    let mut found = Vec::new();
    if state.messages == 0 {
        return Ok(found);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let letter = match get(stream, sequence).await {
            Ok(letter) => letter,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        if subject.is_none_or(|s| letter.subject.contains(s)) {
            found.push(letter);
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}

/// Publishes dead letter `sequence` of stream `stream_name` on its
/// original subject, then removes it; the subject it went to.
pub async fn redrive(
    jetstream: &async_nats::jetstream::Context,
    stream: &Stream,
    stream_name: &str,
    sequence: u64,
) -> Result<String> {
    let letter = get(stream, sequence).await?;
    if letter.subject.is_empty() {
        return Err(Error::NoOrigin(sequence));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name = name.to_string();
        if name.starts_with("landlord-dlq-") || name == header::NATS_MSG_ID {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.as_str());
        }
    }
    headers.insert(header::NATS_MSG_ID, format!("redrive.{stream_name}.{sequence}").as_str());
    let ack = jetstream.publish_with_headers(letter.subject.clone(), headers, letter.payload).await.map_err(nats)?;
    ack.await.map_err(nats)?;
    discard(stream, sequence).await?;
    Ok(letter.subject)
}

/// Removes dead letter `sequence`.
pub async fn discard(stream: &Stream, sequence: u64) -> Result<()> {
    match stream.delete_message(sequence).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::NotRemoved(sequence)),
        Err(e) => Err(nats(e)),
    }
}
