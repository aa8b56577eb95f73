//! The NATS connection and the JetStream streams and consumers Landlord uses.
//!
//! Streams are declared with `create_or_update_stream`, so the settings from
//! configuration are enforced on every start rather than only on first
//! creation (`get_or_create_stream` would keep whatever is there).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use landlord_contract::{Namespace, StreamKind};

use crate::config::{ConsumerSettings, StreamSettings};

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("cannot declare stream {stream}: {source}")]
    Stream { stream: String, source: jetstream::context::CreateStreamError },
    #[error("cannot declare consumer {consumer} on {stream}: {source}")]
    Consumer { stream: String, consumer: String, source: jetstream::stream::ConsumerError },
}

/// A connected client with its JetStream context and namespace.
#[derive(Debug, Clone)]
pub struct Broker {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub namespace: Namespace,
}

impl Broker {
    /// Connects, retrying the first connection too, and logs every
    /// connection event: a broker that goes away is never silent.
    pub async fn connect(url: &str, name: &str, namespace: Namespace) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected, reconnecting"),
                    async_nats::Event::LameDuckMode => tracing::warn!("nats server entering lame duck mode"),
                    async_nats::Event::SlowConsumer(sid) => tracing::warn!(sid, "nats slow consumer: messages dropped"),
                    other => tracing::warn!(event = %other, "nats connection event"),
                }
            })
            .connect(url)
            .await
            .map_err(|source| BrokerError::Connect { url: url.to_owned(), source })?;
        let jetstream = jetstream::new(client.clone());
        Ok(Self { client, jetstream, namespace })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The configuration a stream must have.
    pub fn stream_config(&self, kind: StreamKind, settings: &StreamSettings) -> stream::Config {
        let (retention, max_age) = match kind {
            StreamKind::Events => (stream::RetentionPolicy::Limits, settings.events_max_age),
            StreamKind::DeadLetter => (stream::RetentionPolicy::Limits, settings.dead_letter_max_age),
            StreamKind::Commands | StreamKind::Results => (stream::RetentionPolicy::WorkQueue, Duration::ZERO),
        };
        stream::Config {
            name: self.namespace.stream_name(kind),
            subjects: vec![self.namespace.stream_subjects(kind)],
            retention,
            max_age,
            num_replicas: settings.replicas,
            duplicate_window: settings.duplicate_window,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Creates the streams, or brings their settings in line.
    pub async fn declare_streams(&self, settings: &StreamSettings) -> Result<()> {
        for kind in StreamKind::ALL {
            let config = self.stream_config(kind, settings);
            let name = config.name.clone();
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|source| BrokerError::Stream { stream: name, source })?;
        }
        Ok(())
    }

    /// Creates or updates a durable pull consumer with explicit acks.
    pub async fn durable_consumer(
        &self,
        kind: StreamKind,
        name: &str,
        filter_subjects: Vec<String>,
        settings: &ConsumerSettings,
    ) -> Result<consumer::PullConsumer> {
        let stream_name = self.namespace.stream_name(kind);
        let error = |source| BrokerError::Consumer { stream: stream_name.clone(), consumer: name.to_owned(), source };
        let (filter_subject, filter_subjects) = match filter_subjects.len() {
            1 => (filter_subjects.into_iter().next().unwrap_or_default(), Vec::new()),
            _ => (String::new(), filter_subjects),
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            // One delivery more than the handler gets: a message whose
            // handler crashed or hung on its last delivery comes back once
            // more, to be dead-lettered (see consume::disposition).
            max_deliver: settings.max_deliver + 1,
            max_ack_pending: i64::try_from(settings.max_in_flight * 4).unwrap_or(i64::MAX),
            filter_subject,
            filter_subjects,
            ..Default::default()
        };
        self.jetstream.create_consumer_on_stream(config, stream_name.as_str()).await.map_err(error)
    }
}
