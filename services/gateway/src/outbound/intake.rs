//! The durable consumer that turns lifecycle events into deliveries.
//!
//! Each event becomes one `outbound_deliveries` row per enabled endpoint
//! that wants its type, in one `INSERT … SELECT`, keyed
//! `(endpoint_id, event_id)` with `ON CONFLICT DO NOTHING`: an event read
//! twice — a redelivery after a lost ack, an outbox row republished outside
//! the stream's duplicate window — is delivered once. Then the message is
//! acked. Nothing here waits on a receiver, so the consumer keeps up with
//! the stream whatever the endpoints do; the [`super::sender`] is woken to
//! send.
//!
//! The consumer starts with the events published after it is first
//! declared (`DeliverPolicy::New`): registering the first endpoint does not
//! replay the stream's history to it. Clerk records on the events stream
//! (`events._clerk.*`) are not lifecycle events and are skipped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use landlord_contract::{CloudEvent, Namespace, StreamKind};
use landlord_runtime::Broker;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::CONSUMER;
use super::endpoints::EVERY_EVENT;

/// How long a message may stay unacked before it is redelivered (the
/// handling is two statements).
const ACK_WAIT: Duration = Duration::from_secs(30);

/// CloudEvents version of the JSON bodies (as on the NATS headers).
const SPEC_VERSION: &str = "1.0";
/// The events' data: protobuf, base64 in `data_base64`.
const PROTOBUF_CONTENT_TYPE: &str = "application/protobuf";

/// Wait before a message whose rows could not be written comes back.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Creates (or updates) the durable consumer on the events stream.
pub async fn declare(broker: &Broker) -> anyhow::Result<PullConsumer> {
    let stream = broker.namespace.stream_name(StreamKind::Events);
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("gateway: lifecycle events to outbound webhook deliveries".to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: DeliverPolicy::New,
        filter_subject: broker.namespace.event_filter(None, None),
        max_ack_pending: 1000,
        ..Default::default()
    };
    broker
        .jetstream
        .create_consumer_on_stream(config, stream.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot declare consumer {CONSUMER} on {stream}: {e}"))
}

/// An event as receivers get it: a CloudEvent in the JSON format
/// (`application/cloudevents+json`), the protobuf payload in
/// `data_base64`.
#[derive(Debug, Serialize)]
pub struct JsonCloudEvent<'a> {
    pub specversion: &'static str,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub ty: &'a str,
    pub source: &'a str,
    pub time: &'a str,
    /// The tenant key.
    pub subject: &'a str,
    pub datacontenttype: &'static str,
    /// The saga id, when the event belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<&'a str>,
    /// Extension: the event's name, e.g. `activated`.
    pub landlordevent: &'a str,
    /// Extension: the events stream's sequence (as the SSE feed's `id`).
    pub landlordsequence: u64,
    /// The protobuf message (proto/landlord/v1/events.proto).
    pub data_base64: String,
}

/// What the consumer writes with.
#[derive(Debug, Clone)]
pub struct Intake {
    pub pool: PgPool,
    pub namespace: Namespace,
    /// Told when deliveries were made, so the sender does not wait for its poll.
    pub wake: Arc<Notify>,
}

impl Intake {
    /// Consumes until `shutdown`.
    pub async fn run(self, consumer: PullConsumer, shutdown: CancellationToken) {
        let mut messages = loop {
            match consumer.stream().heartbeat(Duration::from_secs(5)).expires(Duration::from_secs(30)).messages().await
            {
                Ok(messages) => break messages,
                Err(error) => {
                    tracing::warn!(consumer = CONSUMER, %error, "cannot pull events; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => self.handle(message).await,
                Some(Err(error)) => {
                    // The stream re-issues its pull requests by itself.
                    tracing::warn!(consumer = CONSUMER, %error, "pulling events failed");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                None => {
                    tracing::error!(consumer = CONSUMER, "event stream ended");
                    break;
                }
            }
        }
        tracing::info!(consumer = CONSUMER, "webhook intake stopped");
    }

    async fn handle(&self, message: Message) {
        match self.record(&message).await {
            Ok(made) => {
                if made > 0 {
                    self.wake.notify_one();
                }
                if let Err(error) = message.ack().await {
                    // Redelivered after ACK_WAIT; the rows are keyed, so
                    // the second reading makes none.
                    tracing::warn!(consumer = CONSUMER, %error, "ack failed");
                }
            }
            Err(error) => {
                tracing::warn!(consumer = CONSUMER, subject = %message.subject, %error, "cannot record deliveries; redelivering");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    }

    /// Writes the deliveries of one message; how many were new.
    pub async fn record(&self, message: &Message) -> sqlx::Result<u64> {
        let Some((token, kind)) = self.namespace.parse_event_subject(message.subject.as_str()) else {
            return Ok(0);
        };
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let headers = message.headers.clone().unwrap_or_default();
        let attributes = CloudEvent::from_headers(|name| headers.get(name).map(|v| v.as_str())).ok();
        // Every event is published with its attributes; a message without
        // them still gets a stable id.
        let fallback_id = format!("seq-{sequence}");
        let id = attributes.as_ref().map_or(fallback_id.as_str(), |a| a.id.as_str());
        let event = JsonCloudEvent {
            specversion: SPEC_VERSION,
            id,
            ty: attributes.as_ref().map_or("", |a| a.ty.as_str()),
            source: attributes.as_ref().map_or("", |a| a.source.as_str()),
            time: attributes.as_ref().map_or("", |a| a.time.as_str()),
            subject: attributes.as_ref().and_then(|a| a.subject.as_deref()).unwrap_or(token),
            datacontenttype: PROTOBUF_CONTENT_TYPE,
            correlationid: attributes.as_ref().and_then(|a| a.correlation_id.as_deref()),
            landlordevent: kind.name(),
            landlordsequence: sequence,
            data_base64: STANDARD.encode(&message.payload),
        };
        let body = serde_json::to_string(&event).unwrap_or_default();
        let made = sqlx::query(
            "INSERT INTO outbound_deliveries (endpoint_id, event_id, event_type, tenant_key, body, next_attempt_at)
             SELECT id, $1, $2, $3, $4, now() FROM outbound_endpoints
             WHERE enabled AND ($2 = ANY (event_types) OR $5 = ANY (event_types))
             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(id)
        .bind(kind.name())
        .bind(token)
        .bind(&body)
        .bind(EVERY_EVENT)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if made > 0 {
            tracing::debug!(event = id, kind = kind.name(), tenant = token, made, "webhook deliveries made");
        }
        Ok(made)
    }
}
