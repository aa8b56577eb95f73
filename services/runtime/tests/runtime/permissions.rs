//! deploy/nats/accounts.conf against a real nats-server: every service
//! user can do what it needs, and what it must not do is refused — and a
//! refusal shows (a server error, a publish never acknowledged, a lookup
//! that fails), never passes silently.
//!
//! The configuration is the shipped file with its names moved to a fresh
//! namespace and its password variables replaced by test passwords.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use landlord_contract::{Namespace, StreamKind};
use landlord_runtime::config::ConsumerSettings;
use landlord_runtime::fence::Fences;
use landlord_runtime::kv::Bucket;
use landlord_runtime::nats_auth::{NatsAuth, NatsCredentials};
use landlord_runtime::{Broker, KvSecrets, SecretRef, SecretsKey};
use landlord_testkit::{NatsServer, unique_namespace};

use super::stream_settings;

/// How long a refused request waits for the answer that never comes.
const REFUSED: Duration = Duration::from_millis(800);

/// One server with the accounts configuration for this test binary, in one
/// namespace; each test connects its own clients.
struct Secured {
    server: NatsServer,
    namespace: Namespace,
}

async fn secured() -> &'static Secured {
    static SECURED: tokio::sync::OnceCell<Secured> = tokio::sync::OnceCell::const_new();
    SECURED
        .get_or_init(|| async {
            let start = async {
                let namespace = unique_namespace();
                let server = NatsServer::start_with_accounts(&namespace).await?;
                anyhow::Ok(Secured { server, namespace })
            };
            start.await.unwrap_or_else(|e| panic!("{e:#}"))
        })
        .await
}

fn auth(user: &str) -> NatsAuth {
    NatsAuth {
        credentials: NatsCredentials::UserPassword { user: user.to_owned(), password: NatsServer::user_password(user) },
        inbox_prefix: format!("_INBOX_{user}"),
        tls: Default::default(),
    }
}

impl Secured {
    /// `user`'s broker, its JetStream requests given up after [`REFUSED`].
    async fn broker(&self, user: &str) -> Result<Broker> {
        let mut broker = Broker::connect_with(&self.server.url(), user, self.namespace.clone(), &auth(user)).await?;
        broker.jetstream.set_timeout(REFUSED);
        Ok(broker)
    }

    /// A plain client of `user` that keeps the errors the server sends.
    async fn client(&self, user: &str) -> Result<(async_nats::Client, Arc<Mutex<Vec<String>>>)> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let client = auth(user)
            .options()
            .await?
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event
                        && let Ok(mut seen) = seen.lock()
                    {
                        seen.push(error.to_string());
                    }
                }
            })
            .connect(self.server.url())
            .await?;
        Ok((client, errors))
    }

    /// The streams and the fences, as the orchestrator declares them.
    async fn declared(&self) -> Result<Broker> {
        let orchestrator = self.broker("orchestrator").await?;
        orchestrator.declare_streams(&stream_settings()).await?;
        Fences::declare(&orchestrator.jetstream, self.namespace.root(), 1).await?;
        Ok(orchestrator)
    }
}

fn settings() -> ConsumerSettings {
    ConsumerSettings {
        max_deliver: 3,
        max_unsettled: 0,
        ack_wait: Duration::from_secs(5),
        backoff: vec![Duration::from_secs(1)],
        max_in_flight: 4,
        info_interval: Duration::from_secs(15),
    }
}

/// Whether the last message of `subject` in `stream` is `payload` (read as
/// the operator).
async fn holds(s: &Secured, kind: StreamKind, subject: &str, payload: &[u8]) -> Result<bool> {
    let operator = s.broker("operator").await?;
    let stream = operator.jetstream.get_stream(s.namespace.stream_name(kind)).await?;
    Ok(stream.get_last_raw_message_by_subject(subject).await.is_ok_and(|m| m.payload == payload))
}

/// A core publish refused: the server says so.
async fn refused_publish(s: &Secured, user: &str, subject: &str) -> Result<()> {
    let (client, errors) = s.client(user).await?;
    client.publish(subject.to_owned(), Bytes::from_static(b"forbidden")).await?;
    client.flush().await?;
    landlord_testkit::eventually(&format!("the server refusing {user} on {subject}"), Duration::from_secs(5), || {
        let errors = errors.clone();
        let subject = subject.to_owned();
        async move {
            let seen = errors.lock().ok()?;
            seen.iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(&subject))
                .then_some(())
        }
    })
    .await
}

/// A JetStream publish refused: no acknowledgement, and the stream does not
/// hold the message.
async fn refused_js_publish(s: &Secured, user: &str, kind: StreamKind, subject: &str) -> Result<()> {
    let broker = s.broker(user).await?;
    let payload = format!("forbidden {user} {}", uuid::Uuid::new_v4());
    let acked = match broker.jetstream.publish(subject.to_owned(), payload.clone().into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    ensure!(!acked, "{user} published on {subject}");
    ensure!(!holds(s, kind, subject, payload.as_bytes()).await?, "{subject} holds {user}'s message");
    refused_publish(s, user, subject).await
}

async fn fetch_one(consumer: &consumer::PullConsumer) -> Result<jetstream::Message> {
    let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(3)).messages().await?;
    let message = batch.next().await.context("no message")?.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(message)
}

#[tokio::test]
async fn each_service_user_does_what_it_needs() -> Result<()> {
    let s = secured().await;
    let ns = &s.namespace;
    let orchestrator = s.declared().await?;
    orchestrator
        .durable_consumer(
            StreamKind::Events,
            "orchestrator-intake",
            vec![ns.event_filter(None, Some(landlord_contract::EventKind::Requested))],
            &settings(),
        )
        .await?;
    orchestrator
        .durable_consumer(
            StreamKind::Results,
            "orchestrator-results",
            vec![ns.stream_subjects(StreamKind::Results)],
            &settings(),
        )
        .await?;
    for (name, action) in
        [("orchestrator-commands", "cancel"), ("orchestrator-resolve", "resolve"), ("orchestrator-operate", "operate")]
    {
        orchestrator
            .durable_consumer(StreamKind::Commands, name, vec![ns.command_subject("orchestrator", action)], &settings())
            .await?;
    }
    Fences::declare(&orchestrator.jetstream, ns.root(), 1).await?.raise("saga-1", "step-1").await?;

    for service in ["idp", "database", "storage", "notification"] {
        let command = ns.command_subject(service, "create");
        orchestrator.jetstream.publish(command.clone(), Bytes::from_static(b"do it")).await?.await?;
        let worker = s.broker(service).await?;
        worker.declare_streams(&stream_settings()).await.with_context(|| format!("{service} looks the streams up"))?;
        let fences = Fences::declare(&worker.jetstream, ns.root(), 1).await?;
        ensure!(fences.is_raised("saga-1", "step-1").await?, "{service} reads the fences");
        // Before a compensation a worker raises its step's fence.
        fences.raise("saga-2", service).await.with_context(|| format!("{service} raises a fence"))?;
        ensure!(fences.is_raised("saga-2", service).await?, "{service} reads the fence it raised");
        let consumer = worker
            .durable_consumer(StreamKind::Commands, service, vec![ns.service_commands(service)], &settings())
            .await?;
        let message = fetch_one(&consumer).await.with_context(|| format!("{service} fetches its command"))?;
        ensure!(message.subject.as_str() == command, "{service} got {}", message.subject);
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        worker.jetstream.publish(ns.result_subject(service, "create"), Bytes::from_static(b"done")).await?.await?;
        worker.jetstream.publish(ns.dead_letter_subject(&command), Bytes::from_static(b"dead")).await?.await?;
        if service != "storage" {
            let secrets =
                KvSecrets::open(&worker.jetstream, ns.root(), 1, Duration::from_secs(60), SecretsKey::generate()?)
                    .await?;
            let reference = SecretRef::new(service, "tenant-1", "password");
            let stored = secrets.put_if_absent(&reference, "hunter2").await?;
            ensure!(secrets.get(&reference).await?.as_deref() == Some(stored.as_str()), "{service} reads its secret");
        }
        if service == "notification" {
            let ledger = Bucket::new("mail_sent", "test", Duration::from_secs(60))
                .declare(&worker.jetstream, ns.root(), 1)
                .await?;
            ledger.create("cmd-1", Bytes::from_static(b"sent")).await?;
        }
    }
    let results = orchestrator
        .durable_consumer(
            StreamKind::Results,
            "orchestrator-results",
            vec![ns.stream_subjects(StreamKind::Results)],
            &settings(),
        )
        .await?;
    fetch_one(&results)
        .await
        .context("the orchestrator reads results")?
        .ack()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    for user in ["gateway", "platform"] {
        let broker = s.broker(user).await?;
        let key = landlord_contract::TenantKey::parse(&format!("acme-{user}"))?;
        let requested = ns.event_subject(&key, landlord_contract::EventKind::Requested);
        broker.jetstream.publish(requested.clone(), Bytes::from_static(b"please")).await?.await?;
        let events = broker.jetstream.get_stream(ns.stream_name(StreamKind::Events)).await?;
        let ordered = events
            .create_consumer(consumer::pull::OrderedConfig { filter_subject: requested.clone(), ..Default::default() })
            .await?;
        let mut messages = ordered.messages().await?;
        let first = messages.next().await.context("no event")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(first.subject.as_str() == requested, "{user} reads events");
    }
    let gateway = s.broker("gateway").await?;
    gateway.jetstream.publish(ns.command_subject("orchestrator", "cancel"), Bytes::from_static(b"stop")).await?.await?;
    // The console's redrive: a parked command back to its subject.
    gateway.jetstream.publish(ns.command_subject("storage", "create"), Bytes::from_static(b"again")).await?.await?;
    let dlq = gateway.jetstream.get_stream(ns.stream_name(StreamKind::DeadLetter)).await?;
    dlq.get_last_raw_message_by_subject(&ns.dead_letter_subject(&ns.command_subject("storage", "create"))).await?;
    Ok(())
}

#[tokio::test]
async fn storage_cannot_speak_for_idp_nor_read_secrets() -> Result<()> {
    let s = secured().await;
    let ns = &s.namespace;
    s.declared().await?;
    let idp = s.broker("idp").await?;
    refused_js_publish(s, "storage", StreamKind::Commands, &ns.command_subject("idp", "create_realm")).await?;
    refused_js_publish(s, "storage", StreamKind::Results, &ns.result_subject("idp", "create_realm")).await?;

    let secrets =
        KvSecrets::open(&idp.jetstream, ns.root(), 1, Duration::from_secs(60), SecretsKey::generate()?).await?;
    let reference = SecretRef::new("idp", "tenant-9", "password");
    secrets.put_if_absent(&reference, "hunter2").await?;
    let bucket = landlord_runtime::secrets::BUCKET.name(ns.root());
    for user in ["storage", "platform", "gateway", "orchestrator", "operator"] {
        let broker = s.broker(user).await?;
        ensure!(broker.jetstream.get_key_value(&bucket).await.is_err(), "{user} opened the secrets bucket");
        let stream = format!("KV_{bucket}");
        ensure!(broker.jetstream.get_stream(&stream).await.is_err(), "{user} looked the secrets stream up");
        let consumer =
            broker.jetstream.create_consumer_on_stream(consumer::pull::Config::default(), stream.as_str()).await;
        ensure!(consumer.is_err(), "{user} made a consumer on the secrets");
        refused_publish(s, user, &format!("$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.idp.tenant-9.password")).await?;
    }
    // Nor make a stream it reads source the secrets: stream administration
    // is the orchestrator's alone.
    let storage = s.broker("storage").await?;
    let fences = format!("KV_{}", landlord_runtime::fence::bucket_name(ns.root()));
    let mut config = storage.jetstream.get_stream(&fences).await?.cached_info().config.clone();
    config.sources = Some(vec![jetstream::stream::Source { name: format!("KV_{bucket}"), ..Default::default() }]);
    ensure!(storage.jetstream.update_stream(config).await.is_err(), "storage made the fences source the secrets");
    let orchestrator = s.broker("orchestrator").await?;
    let copied = orchestrator
        .jetstream
        .get_stream(&fences)
        .await?
        .get_last_raw_message_by_subject(&format!("$KV.{bucket}.idp.tenant-9.password"))
        .await;
    ensure!(copied.is_err(), "the fences hold a secret");
    // Nor may storage make a consumer named like its own that reads idp's commands.
    let sneaky =
        storage.durable_consumer(StreamKind::Commands, "storage", vec![ns.service_commands("idp")], &settings()).await;
    ensure!(sneaky.is_err(), "storage made a consumer on idp's commands");
    Ok(())
}

#[tokio::test]
async fn the_platform_user_only_asks_for_tenants() -> Result<()> {
    let s = secured().await;
    let ns = &s.namespace;
    s.declared().await?;
    let key = landlord_contract::TenantKey::parse("globex")?;
    refused_js_publish(s, "platform", StreamKind::Results, &ns.result_subject("storage", "create_bucket")).await?;
    refused_js_publish(s, "platform", StreamKind::Commands, &ns.command_subject("orchestrator", "cancel")).await?;
    refused_js_publish(
        s,
        "platform",
        StreamKind::Events,
        &ns.event_subject(&key, landlord_contract::EventKind::Accepted),
    )
    .await?;
    let platform = s.broker("platform").await?;
    ensure!(platform.declare_streams(&stream_settings()).await.is_err(), "the platform user may not declare streams");
    Ok(())
}

/// What a service's `main` does at start, as its user: the orchestrator
/// first (it owns the streams and the fences), then every other service
/// builds its runtime and declares its consumer; the platform user is no
/// service and cannot start as one.
#[tokio::test]
async fn every_service_starts_as_its_user() -> Result<()> {
    let s = secured().await;
    let ns = &s.namespace;
    let env = |user: &str| {
        let mut pairs = NatsServer::user_env(user);
        pairs.push(("LANDLORD_NATS_URL".into(), s.server.url()));
        pairs.push(("LANDLORD_NAMESPACE".into(), ns.root().to_owned()));
        // The streams' settings of the other tests (stream_settings()).
        pairs.push(("LANDLORD_EVENTS_MAX_AGE".into(), "1h".into()));
        pairs.push(("LANDLORD_DLQ_MAX_AGE".into(), "1h".into()));
        landlord_runtime::Env::from_pairs(pairs)
    };
    for service in ["orchestrator", "gateway", "idp", "database", "storage", "notification"] {
        let config = landlord_runtime::Config::from(service, &env(service))?;
        let built =
            landlord_runtime::Service::build(config).await.with_context(|| format!("{service} starts as its user"))?;
        if !matches!(service, "orchestrator" | "gateway") {
            built
                .broker
                .durable_consumer(StreamKind::Commands, service, vec![ns.service_commands(service)], &settings())
                .await
                .with_context(|| format!("{service} declares its consumer"))?;
        }
        built.shutdown_token().cancel();
    }
    let config = landlord_runtime::Config::from("platform", &env("platform"))?;
    ensure!(landlord_runtime::Service::build(config).await.is_err(), "the platform user started a service");
    Ok(())
}
