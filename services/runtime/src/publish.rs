//! Publishing with the CloudEvents headers, `Nats-Msg-Id` and trace context,
//! waiting for the stream's acknowledgement.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use landlord_contract::{CeType, CloudEvent, Event, Namespace, TenantKey};

use crate::broker::Broker;
use crate::telemetry;

pub type Result<T, E = PublishError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing to {subject} failed: {source}")]
    Publish { subject: String, source: jetstream::context::PublishError },
}

impl PublishError {
    /// Publishing fails when the broker is unreachable or slow: always worth
    /// another try.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// What a message is about; becomes its CloudEvents attributes.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `ce-id` and `Nats-Msg-Id`. Give a deterministic id when a repeat of
    /// the same logical message must be de-duplicated by the broker.
    pub id: String,
    /// `ce-subject`: the tenant key.
    pub tenant_key: Option<String>,
    /// The saga id.
    pub correlation_id: Option<String>,
}

impl Envelope {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into(), ..Self::default() }
    }

    /// A fresh, time-ordered id.
    pub fn random() -> Self {
        Self::new(uuid::Uuid::now_v7().to_string())
    }

    pub fn tenant(mut self, key: impl Into<String>) -> Self {
        self.tenant_key = Some(key.into());
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// The broker's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The stream already had this `Nats-Msg-Id` inside its duplicate window.
    pub duplicate: bool,
}

/// Publishes Landlord messages on behalf of one service.
#[derive(Debug, Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
    namespace: Namespace,
    source: String,
}

impl Publisher {
    pub fn new(broker: &Broker, service: &str) -> Self {
        Self {
            jetstream: broker.jetstream.clone(),
            namespace: broker.namespace.clone(),
            source: format!("landlord/{service}"),
        }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Headers for `M` under `envelope`, with the current trace context.
    pub fn headers<M: CeType>(&self, envelope: &Envelope) -> HeaderMap {
        self.headers_for(M::CE_TYPE, envelope)
    }

    /// Headers for a message of CloudEvents type `ce_type` (e.g. one read
    /// back from an outbox).
    pub fn headers_for(&self, ce_type: &str, envelope: &Envelope) -> HeaderMap {
        let event = CloudEvent {
            id: envelope.id.clone(),
            ty: ce_type.to_owned(),
            source: self.source.clone(),
            time: now_rfc3339(),
            subject: envelope.tenant_key.clone(),
            correlation_id: envelope.correlation_id.clone(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in event.to_headers() {
            headers.insert(name, value);
        }
        telemetry::inject_current(&mut headers);
        headers
    }

    /// Publishes `message` on `subject` and waits until the stream has it.
    pub async fn publish<M: CeType>(&self, subject: String, message: &M, envelope: &Envelope) -> Result<Published> {
        let headers = self.headers::<M>(envelope);
        self.publish_raw(subject, headers, Bytes::from(message.encode_to_vec())).await
    }

    /// Publishes a lifecycle event on `landlord.v1.events.<key>.<event>`.
    pub async fn publish_event<E: Event>(&self, key: &TenantKey, event: &E, envelope: &Envelope) -> Result<Published> {
        let subject = self.namespace.event_subject(key, E::KIND);
        self.publish(subject, event, envelope).await
    }

    /// Sends without waiting; await the returned future for the ack. Lets a
    /// caller keep many publishes in flight.
    pub async fn send_raw(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<PublishAckFuture> {
        self.jetstream
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|source| PublishError::Publish { subject, source })
    }

    /// Publishes prepared headers and payload (outbox relays, dead letters).
    pub async fn publish_raw(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<Published> {
        let ack = self.send_raw(subject.clone(), headers, payload).await?;
        let ack = ack.await.map_err(|source| PublishError::Publish { subject, source })?;
        Ok(Published { sequence: ack.sequence, duplicate: ack.duplicate })
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
