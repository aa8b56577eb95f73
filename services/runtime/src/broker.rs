//! The NATS connection and the JetStream streams and consumers Landlord uses.
//!
//! Streams are declared with `create_or_update_stream`, so the settings from
//! configuration are enforced on every start rather than only on first
//! creation (`get_or_create_stream` would keep whatever is there).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use landlord_contract::{Namespace, StreamKind};

use crate::config::{ConsumerSettings, Env, StreamSettings};
use crate::nats_auth::{AuthError, NatsAuth};

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("LANDLORD_NATS_URL: {url:?} is not a NATS URL: {source}")]
    Url { url: String, source: std::io::Error },
    #[error(transparent)]
    Auth(#[from] AuthError),
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
    /// Connects with the credentials of the process environment
    /// ([`NatsAuth::from_env`]; none set: no authentication).
    pub async fn connect(url: &str, name: &str, namespace: Namespace) -> Result<Self> {
        let auth = NatsAuth::from_env(&Env::process()).map_err(AuthError::from)?;
        Self::connect_with(url, name, namespace, &auth).await
    }

    /// Connects to every server of `url` (comma-separated: the client
    /// reconnects to any of them), retrying the first connection too, and
    /// logs every connection event: a broker that goes away, or refuses
    /// something (a permissions violation), is never silent.
    pub async fn connect_with(url: &str, name: &str, namespace: Namespace, auth: &NatsAuth) -> Result<Self> {
        let servers = server_addrs(url)?;
        let client = auth
            .options()
            .await?
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
                    async_nats::Event::ServerError(error) => tracing::error!(%error, "nats server refused"),
                    other => tracing::warn!(event = %other, "nats connection event"),
                }
            })
            .connect(servers)
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

    /// Creates the streams, or brings their settings in line. A stream
    /// that is already as configured is left alone, so a service whose bus
    /// user may only look streams up (deploy/nats/accounts.conf) starts
    /// once the stream owner declared them.
    pub async fn declare_streams(&self, settings: &StreamSettings) -> Result<()> {
        for kind in StreamKind::ALL {
            let config = self.stream_config(kind, settings);
            let name = config.name.clone();
            if let Ok(stream) = self.jetstream.get_stream(&name).await
                && in_line(&stream.cached_info().config, &config)
            {
                continue;
            }
            let created =
                while_cluster_forms(&name, || self.jetstream.create_or_update_stream(config.clone()), stream_forming)
                    .await;
            created.map_err(|source| BrokerError::Stream { stream: name, source })?;
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
            // more, to be dead-lettered (see error::exhausted).
            max_deliver: settings.deliveries() + 1,
            max_ack_pending: i64::try_from(settings.max_in_flight * 4).unwrap_or(i64::MAX),
            filter_subject,
            filter_subjects,
            ..Default::default()
        };
        let what = format!("{stream_name}/{name}");
        let created = while_cluster_forms(
            &what,
            || self.jetstream.create_consumer_on_stream(config.clone(), stream_name.as_str()),
            |e| {
                use jetstream::stream::ConsumerErrorKind as Kind;
                match e.kind() {
                    Kind::TimedOut => true,
                    Kind::JetStream(e) => forming(&e),
                    _ => false,
                }
            },
        )
        .await;
        created.map_err(error)
    }
}

/// How long a starting service waits for a forming cluster (no meta
/// leader yet, not all peers known, a stream leader being elected) before
/// it gives up on declaring a stream or consumer.
const CLUSTER_FORMING_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a stream could not be created only because the cluster is
/// still forming (or too busy to answer in time).
pub(crate) fn stream_forming(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    match error.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(e) => forming(&e),
        _ => false,
    }
}

/// The JetStream answers of a cluster that is still forming or electing:
/// worth asking again, unlike a refused or invalid configuration.
fn forming(error: &jetstream::Error) -> bool {
    use jetstream::ErrorCode;
    [ErrorCode::CLUSTER_NO_PEERS, ErrorCode::CLUSTER_NOT_AVAILABLE, ErrorCode::INSUFFICIENT_RESOURCES]
        .contains(&error.error_code())
}

/// Runs `attempt` until it succeeds, fails for good (`retry` says no), or
/// [`CLUSTER_FORMING_PATIENCE`] has passed, backing off up to 2 s: a
/// service started together with its NATS cluster declares its streams
/// once the cluster can place them, instead of exiting.
pub(crate) async fn while_cluster_forms<T, E, F, Fut>(
    what: &str,
    mut attempt: F,
    retry: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + CLUSTER_FORMING_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Err(error) if retry(&error) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, what, "JetStream cannot place it yet (cluster forming?); asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            outcome => return outcome,
        }
    }
}

/// The servers of a comma-separated list of URLs.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().map_err(|source| BrokerError::Url { url: u.to_owned(), source }))
        .collect()
}

/// Whether a stream has the settings Landlord declares (the server fills
/// in the rest).
fn in_line(actual: &stream::Config, wanted: &stream::Config) -> bool {
    actual.subjects == wanted.subjects
        && actual.retention == wanted.retention
        && actual.max_age == wanted.max_age
        && actual.num_replicas == wanted.num_replicas
        && actual.duplicate_window == wanted.duplicate_window
        && actual.storage == wanted.storage
        && actual.allow_direct == wanted.allow_direct
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_of_the_list_is_a_server() {
        let servers = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://10.0.0.3:4222").unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].port(), 4223);
        assert!(matches!(server_addrs("nats://host:notaport"), Err(BrokerError::Url { .. })));
    }

    #[tokio::test]
    async fn a_forming_cluster_is_asked_again_and_a_refusal_is_not() {
        let mut tries = 0;
        let placed = while_cluster_forms(
            "stream",
            || {
                tries += 1;
                let answer = if tries < 3 { Err("no suitable peers") } else { Ok(tries) };
                std::future::ready(answer)
            },
            |e| *e == "no suitable peers",
        )
        .await;
        assert_eq!(placed, Ok(3), "placed on the third try");

        let mut tries = 0;
        let refused: Result<(), &str> = while_cluster_forms(
            "stream",
            || {
                tries += 1;
                std::future::ready(Err("invalid configuration"))
            },
            |e| *e == "no suitable peers",
        )
        .await;
        assert_eq!((refused, tries), (Err("invalid configuration"), 1), "a refusal is final at once");
    }

    #[test]
    fn only_a_forming_clusters_answers_are_asked_again() {
        let error = |code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({ "code": 400, "err_code": code, "description": "x" }))
                .expect("a JetStream error")
        };
        assert!(forming(&error(10005)), "no suitable peers");
        assert!(forming(&error(10008)), "cluster not available");
        assert!(!forming(&error(10058)), "stream name in use with another configuration");
    }
}
