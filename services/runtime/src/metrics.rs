//! Prometheus metrics of the message loop, served at `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Disposition, ErrorKind, HandlerError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    consumer: String,
    /// `ack`, `retry` or `dead_letter`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    consumer: String,
    /// `retryable` or `permanent`.
    kind: String,
}

type HistogramFamily = Family<ConsumerLabel, Histogram, fn() -> Histogram>;

#[derive(Debug)]
struct Inner {
    /// Behind a lock so that a service can add its own series after start
    /// ([`Metrics::gauge`]).
    registry: std::sync::Mutex<Registry>,
    handled: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Family<ConsumerLabel, Gauge>,
    dead_letters: Family<ConsumerLabel, Counter>,
    pending: Family<ConsumerLabel, Gauge>,
    ack_pending: Family<ConsumerLabel, Gauge>,
    redelivered: Family<ConsumerLabel, Gauge>,
}

/// Cheap to clone; all clones count into the same registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("landlord");
        let handled = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 20)));
        let in_flight = Family::<ConsumerLabel, Gauge>::default();
        registry.register("messages_handled", "Messages handled, by how they were settled", handled.clone());
        registry.register("handler_failures", "Handler errors, by kind", failures.clone());
        registry.register("handler_duration_seconds", "Time from receipt to settlement", latency.clone());
        registry.register("messages_in_flight", "Messages being handled now", in_flight.clone());
        let dead_letters = Family::<ConsumerLabel, Counter>::default();
        registry.register(
            "dead_letters",
            "Messages written to the dead-letter stream by this process, by the consumer that gave up on them",
            dead_letters.clone(),
        );
        // The broker's view of each consumer, refreshed from consumer info
        // every LANDLORD_CONSUMER_INFO_INTERVAL (consume::run).
        let pending = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "consumer_pending",
            "Messages in the stream not yet delivered to the consumer (JetStream num_pending)",
            pending.clone(),
        );
        let ack_pending = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "consumer_ack_pending",
            "Messages delivered to the consumer and not yet acknowledged (JetStream num_ack_pending)",
            ack_pending.clone(),
        );
        let redelivered = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "consumer_redelivered",
            "Messages delivered more than once and not yet acknowledged (JetStream num_redelivered)",
            redelivered.clone(),
        );
        let registry = std::sync::Mutex::new(registry);
        Self {
            inner: Arc::new(Inner {
                registry,
                handled,
                failures,
                latency,
                in_flight,
                dead_letters,
                pending,
                ack_pending,
                redelivered,
            }),
        }
    }

    /// Adds a metric of the service's own as `landlord_<name>` (counters
    /// gain `_total`), with its help text: families with labels,
    /// histograms, anything `prometheus_client` encodes.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.inner.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).register(name, help, metric);
    }

    /// A gauge of the service's own, `landlord_<name>` (e.g. the
    /// orchestrator's count of stuck compensations).
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// Handles on one consumer's series, looked up once so that counting a
    /// message allocates nothing.
    pub(crate) fn consumer(&self, consumer: &str) -> ConsumerMetrics {
        let outcome = |outcome: &str| {
            self.inner
                .handled
                .get_or_create(&OutcomeLabels { consumer: consumer.to_owned(), outcome: outcome.to_owned() })
                .clone()
        };
        let failure = |kind: &str| {
            self.inner
                .failures
                .get_or_create(&FailureLabels { consumer: consumer.to_owned(), kind: kind.to_owned() })
                .clone()
        };
        let label = ConsumerLabel { consumer: consumer.to_owned() };
        // Every series of the consumer exists from its start, at zero: a
        // dashboard or an alert over it has something to read before the
        // first message (or the first dead letter).
        ConsumerMetrics {
            acked: outcome("ack"),
            retried: outcome("retry"),
            dead_lettered: outcome("dead_letter"),
            retryable: failure("retryable"),
            permanent: failure("permanent"),
            latency: self.inner.latency.get_or_create(&label).clone(),
            in_flight: self.inner.in_flight.get_or_create(&label).clone(),
            dead_letters: self.inner.dead_letters.get_or_create(&label).clone(),
            pending: self.inner.pending.get_or_create(&label).clone(),
            ack_pending: self.inner.ack_pending.get_or_create(&label).clone(),
            redelivered: self.inner.redelivered.get_or_create(&label).clone(),
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.inner.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics {
    acked: Counter,
    retried: Counter,
    dead_lettered: Counter,
    retryable: Counter,
    permanent: Counter,
    latency: Histogram,
    in_flight: Gauge,
    dead_letters: Counter,
    pending: Gauge,
    ack_pending: Gauge,
    redelivered: Gauge,
}

impl ConsumerMetrics {
    /// A message was written to the dead-letter stream.
    pub(crate) fn dead_lettered(&self) {
        self.dead_letters.inc();
    }

    /// The broker's counts for the consumer, from its consumer info.
    pub(crate) fn consumer_info(&self, info: &async_nats::jetstream::consumer::Info) {
        self.pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        self.ack_pending.set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
        self.redelivered.set(i64::try_from(info.num_redelivered).unwrap_or(i64::MAX));
    }

    pub(crate) fn handled(&self, disposition: &Disposition, error: Option<&HandlerError>, took: Duration) {
        match disposition {
            Disposition::Ack => self.acked.inc(),
            Disposition::Retry(_) => self.retried.inc(),
            Disposition::DeadLetter(_) => self.dead_lettered.inc(),
        };
        match error.map(|e| e.kind) {
            Some(ErrorKind::Retryable | ErrorKind::Unavailable) => {
                self.retryable.inc();
            }
            Some(ErrorKind::Permanent) => {
                self.permanent.inc();
            }
            None => {}
        }
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts one message in flight until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
