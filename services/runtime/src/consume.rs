//! The message loop every service runs on a durable pull consumer.
//!
//! Handlers are small async functions over decoded messages. Everything
//! else happens here, once: decoding, the tracing span (continuing the
//! sender's trace), a bound on messages in flight, ack progress while a
//! handler works, metrics, and the one decision per message — ack, nak with
//! delay, or dead-letter and terminate ([`disposition`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use landlord_contract::{CeType, CloudEvent, Namespace, header};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::ConsumerSettings;
use crate::error::exhausted;
pub use crate::error::{Disposition, ErrorKind, HandlerError, disposition};
use crate::metrics::{ConsumerMetrics, Metrics};
use crate::publish::Publisher;
use crate::telemetry;

/// Where a message came from and how often it was delivered.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub subject: String,
    pub headers: HeaderMap,
    /// CloudEvents attributes, when the sender set them.
    pub event: Option<CloudEvent>,
    pub stream_sequence: u64,
    /// 1 on first delivery.
    pub delivered: u64,
    pub max_deliver: u64,
    /// When a retryable failure of this delivery would be redelivered.
    pub next_retry: std::time::Duration,
}

impl DeliveryInfo {
    /// A first and only delivery with no headers, for calling a
    /// [`crate::StepService`] directly (tests, benchmarks, the audit);
    /// `stream_sequence` gives it its message id (`seq-<n>`).
    pub fn direct(stream_sequence: u64) -> Self {
        Self {
            subject: String::new(),
            headers: HeaderMap::new(),
            event: None,
            stream_sequence,
            delivered: 1,
            max_deliver: 1,
            next_retry: Duration::ZERO,
        }
    }

    /// No redelivery will follow a failure of this one.
    pub fn is_last_delivery(&self) -> bool {
        // (an Unavailable error is retried in place, not redelivered)
        self.delivered >= self.max_deliver
    }

    /// `ce-id`, or a stable stand-in for messages sent without headers.
    pub fn message_id(&self) -> String {
        match &self.event {
            Some(event) => event.id.clone(),
            None => format!("seq-{}", self.stream_sequence),
        }
    }
}

/// A decoded message handed to a [`Handler`].
#[derive(Debug)]
pub struct Delivery<M> {
    pub message: M,
    pub info: DeliveryInfo,
}

/// Handles one kind of message.
pub trait Handler: Send + Sync + 'static {
    type Message: CeType + Clone + Send + Sync + 'static;

    fn handle(&self, delivery: Delivery<Self::Message>) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot start pulling from consumer {consumer}: {source}")]
    Pull { consumer: String, source: jetstream::consumer::StreamError },
}

/// Everything a message task needs, shared by all of them.
struct Shared<H> {
    name: String,
    shutdown: CancellationToken,
    handler: H,
    settings: ConsumerSettings,
    publisher: Publisher,
    namespace: Namespace,
    metrics: ConsumerMetrics,
}

/// Runs `handler` over `consumer` until `shutdown` is cancelled, then stops
/// fetching and waits for the messages in flight to be finished and acked.
pub async fn run<H: Handler>(
    name: String,
    consumer: PullConsumer,
    handler: H,
    settings: ConsumerSettings,
    publisher: Publisher,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ConsumeError> {
    let in_flight = settings.max_in_flight;
    let shared = Arc::new(Shared {
        name: name.clone(),
        shutdown: shutdown.clone(),
        handler,
        namespace: publisher.namespace().clone(),
        settings,
        publisher,
        metrics: metrics.consumer(&name),
    });
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_flight)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|source| ConsumeError::Pull { consumer: name.clone(), source })?;
    let permits = Arc::new(Semaphore::new(in_flight));
    let tasks = TaskTracker::new();
    // Stops with the loop, whatever ends it.
    let watching = shutdown.child_token();
    tasks.spawn(watch_consumer(consumer, shared.metrics.clone(), shared.settings.info_interval, watching.clone()));
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                let shared = shared.clone();
                tasks.spawn(async move {
                    process(&shared, message).await;
                    drop(permit);
                });
            }
            Some(Err(error)) => {
                // Heartbeats missed or the connection dropped: the stream
                // re-issues its pull requests by itself; pause briefly so a
                // broker that is down is not spun on.
                tracing::warn!(consumer = %name, %error, "pulling messages failed");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            None => {
                tracing::error!(consumer = %name, "message stream ended");
                break;
            }
        }
    }
    // Stop fetching; anything fetched but not started is redelivered after
    // ack_wait. Then let the messages in flight finish.
    drop(messages);
    watching.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!(consumer = %name, "consumer stopped");
    Ok(())
}

/// Keeps the consumer's broker-side counts (pending, awaiting ack,
/// redelivered) in the metrics: one consumer info request every
/// `interval`, the first at once. A consumer falling behind shows as a
/// growing `landlord_consumer_pending`.
async fn watch_consumer(consumer: PullConsumer, metrics: ConsumerMetrics, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match consumer.get_info().await {
            Ok(info) => metrics.consumer_info(&info),
            Err(error) => tracing::debug!(%error, "reading consumer info for the metrics failed"),
        }
    }
}

async fn process<H: Handler>(shared: &Shared<H>, message: jetstream::Message) {
    let started = Instant::now();
    let _in_flight = shared.metrics.in_flight();
    let headers = message.headers.clone().unwrap_or_default();
    let event = CloudEvent::from_headers(|name| headers.get(name).map(|v| v.as_str())).ok();
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, u64::try_from(info.delivered).unwrap_or(1)),
        Err(_) => (0, 1),
    };
    let info = DeliveryInfo {
        subject: message.subject.to_string(),
        event,
        stream_sequence,
        delivered,
        max_deliver: u64::try_from(shared.settings.max_deliver).unwrap_or(1),
        next_retry: shared.settings.backoff_for(delivered),
        headers,
    };
    let span = tracing::info_span!(
        "handle",
        consumer = %shared.name,
        subject = %info.subject,
        msg_id = %info.message_id(),
        tenant = info.event.as_ref().and_then(|e| e.subject.as_deref()).unwrap_or(""),
        saga = info.event.as_ref().and_then(|e| e.correlation_id.as_deref()).unwrap_or(""),
        delivered,
    );
    let work = async {
        if let Some(disposition) = exhausted(delivered, &shared.settings) {
            shared.metrics.handled(&disposition, None, started.elapsed());
            settle(shared, &message, stream_sequence, delivered, disposition).await;
            return;
        }
        let outcome = match H::Message::decode(message.payload.clone()) {
            Ok(decoded) => {
                let work = until_available(shared, decoded, info);
                with_progress(work, &message, shared.settings.ack_wait).await
            }
            Err(error) => Err(HandlerError::permanent(format!("cannot decode {}: {error}", H::Message::CE_TYPE))),
        };
        let disposition = disposition(&outcome, delivered, &shared.settings);
        shared.metrics.handled(&disposition, outcome.as_ref().err(), started.elapsed());
        settle(shared, &message, stream_sequence, delivered, disposition).await;
    };
    telemetry::continue_trace(&span, message.headers.as_ref(), work.instrument(span.clone())).await;
}

/// Runs the handler until it gets past an [`ErrorKind::Unavailable`]
/// error, backing off in between (the caller keeps the message with ack
/// progress, so neither the delivery count nor the dead-letter stream sees
/// an outage), or until shutdown.
async fn until_available<H: Handler>(
    shared: &Shared<H>,
    message: H::Message,
    info: DeliveryInfo,
) -> Result<(), HandlerError> {
    let mut tries: u64 = 0;
    loop {
        let delivery = Delivery { message: message.clone(), info: info.clone() };
        let outcome = shared.handler.handle(delivery).await;
        let Err(error) = &outcome else { return outcome };
        if error.kind != ErrorKind::Unavailable || shared.shutdown.is_cancelled() {
            return outcome;
        }
        tries = tries.saturating_add(1);
        let delay = shared.settings.backoff_for(tries);
        tracing::warn!(%error, delay_ms = delay.as_millis() as u64, tries, "infrastructure unavailable; keeping the message and trying again");
        tokio::select! {
            () = shared.shutdown.cancelled() => return outcome,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs the handler, telling the broker "still working" every half ack_wait
/// so long work is not redelivered to someone else.
async fn with_progress<F: Future<Output = Result<(), HandlerError>>>(
    work: F,
    message: &jetstream::Message,
    ack_wait: Duration,
) -> Result<(), HandlerError> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + ack_wait / 2, ack_wait / 2);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(%error, "sending ack progress failed");
                }
            }
        }
    }
}

async fn settle<H: Handler>(
    shared: &Shared<H>,
    message: &jetstream::Message,
    sequence: u64,
    delivered: u64,
    disposition: Disposition,
) {
    let result = match disposition {
        Disposition::Ack => message.ack().await,
        Disposition::Retry(delay) => {
            tracing::info!(delay_ms = delay.as_millis() as u64, "retryable error, redelivering later");
            message.ack_with(AckKind::Nak(Some(delay))).await
        }
        Disposition::DeadLetter(reason) => {
            tracing::warn!(%reason, "dead-lettering message");
            match dead_letter(shared, message, sequence, delivered, &reason).await {
                Ok(()) => {
                    shared.metrics.dead_lettered();
                    message.ack_with(AckKind::Term).await
                }
                Err(error) => {
                    // Never drop a message we could not park: try again later.
                    tracing::error!(%error, "dead-letter publish failed, redelivering later");
                    message.ack_with(AckKind::Nak(Some(shared.settings.backoff_for(delivered)))).await
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::warn!(%error, "acknowledging message failed; it will be redelivered");
    }
}

async fn dead_letter<H: Handler>(
    shared: &Shared<H>,
    message: &jetstream::Message,
    sequence: u64,
    delivered: u64,
    reason: &str,
) -> Result<(), crate::publish::PublishError> {
    let stream = message.info().map(|i| i.stream.to_owned()).unwrap_or_default();
    let original = message.headers.clone().unwrap_or_default();
    let subject = message.subject.as_str();
    let headers = dead_letter_headers(&original, subject, &stream, &shared.name, sequence, delivered, reason);
    shared
        .publisher
        .publish_raw(shared.namespace.dead_letter_subject(subject), headers, message.payload.clone())
        .await
        .map(|_| ())
}

/// The original headers plus where the message came from and why it is
/// parked. The dead letter gets its own message id, so parking the same
/// message twice is de-duplicated.
pub(crate) fn dead_letter_headers(
    original: &HeaderMap,
    subject: &str,
    stream: &str,
    consumer: &str,
    sequence: u64,
    delivered: u64,
    reason: &str,
) -> HeaderMap {
    let mut headers = original.clone();
    // Header values cannot hold line breaks.
    let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    headers.insert(header::NATS_MSG_ID, format!("dlq.{stream}.{sequence}").as_str());
    headers.insert(header::DLQ_REASON, reason.as_str());
    headers.insert(header::DLQ_SUBJECT, subject);
    headers.insert(header::DLQ_STREAM, stream);
    headers.insert(header::DLQ_CONSUMER, consumer);
    headers.insert(header::DLQ_SEQUENCE, sequence.to_string().as_str());
    headers.insert(header::DLQ_DELIVERIES, delivered.to_string().as_str());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reason_has_no_line_breaks() {
        let headers = dead_letter_headers(&HeaderMap::new(), "a.b", "S", "c", 7, 1, "line\r\nbreak");
        assert_eq!(headers.get(header::DLQ_REASON).map(|v| v.as_str()), Some("line  break"));
        assert_eq!(headers.get(header::NATS_MSG_ID).map(|v| v.as_str()), Some("dlq.S.7"));
    }
}
