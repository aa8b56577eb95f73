//! The harnesses: the orchestrator in process with the scripted worker
//! (`Harness`), or as processes that tests kill and restart (`Processes`),
//! and what the tests share.

use super::*;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const STEPS: [&str; 6] = ["s1", "s2", "s3", "s4", "s5", "welcome"];

/// Five fatal steps and a non-fatal one, all served by the scripted worker
/// of service `work`; s3 answers within 700 ms or is late.
pub(crate) const PLANS: &str = r#"
[defaults]
timeout = "2s"
max_attempts = 3
backoff = ["100ms"]

[plans.standard]
tier = "bridge"
pipeline = "test"

[[pipelines.test]]
name = "s1"
command = "work.create_s1"
compensation = "work.delete_s1"
[[pipelines.test]]
name = "s2"
command = "work.create_s2"
compensation = "work.delete_s2"
[[pipelines.test]]
name = "s3"
command = "work.create_s3"
compensation = "work.delete_s3"
timeout = "700ms"
max_attempts = 2
[[pipelines.test]]
name = "s4"
command = "work.create_s4"
compensation = "work.delete_s4"
[[pipelines.test]]
name = "s5"
command = "work.create_s5"
compensation = "work.delete_s5"
[[pipelines.test]]
name = "welcome"
command = "work.send_welcome"
fatal = false
max_attempts = 1

[[pipelines.purge]]
name = "purge_all"
command = "work.purge"
max_attempts = 0
"#;

pub(crate) struct Harness {
    pub(crate) namespace: Namespace,
    pub(crate) publisher: Publisher,
    pub(crate) broker: landlord_runtime::Broker,
    pub(crate) pool: PgPool,
    pub(crate) stop: CancellationToken,
    pub(crate) metrics: landlord_runtime::Metrics,
    pub(crate) _worker: Process,
}

impl Harness {
    pub(crate) async fn new() -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        Self::on(url, database.url.clone()).await
    }

    /// The orchestrator in process, the scripted worker as a process, on
    /// the broker at `url` and the control-plane database at `database`.
    pub(crate) async fn on(url: String, database: String) -> Result<Self> {
        let namespace = unique_namespace();
        let env = Env::from_pairs([
            ("LANDLORD_NATS_URL", url.clone()),
            ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
            ("LANDLORD_DATABASE_URL", database),
            ("LANDLORD_BACKOFF", "50ms".to_owned()),
        ]);
        let mut service = Service::build(Config::from("orchestrator", &env)?).await?;
        let timing = Timing {
            timer_interval: Duration::from_millis(50),
            relay_poll: Duration::from_millis(100),
            relay_grace: Duration::from_millis(500),
            inbox_retention: Duration::from_secs(3600),
        };
        attach(&mut service, Plans::parse(PLANS).map_err(anyhow::Error::msg)?, timing).await?;
        let stop = service.shutdown_token();
        let publisher = Publisher::new(&service.broker, "test");
        let broker = service.broker.clone();
        let pool = service.database.clone().context("pool")?;
        let metrics = service.metrics.clone();
        tokio::spawn(service.run());
        let worker = Process::start(
            "work",
            &workspace_binary("scripted-worker")?,
            &[],
            &[
                ("LANDLORD_NATS_URL".into(), url),
                ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
                ("LANDLORD_WORKER_SERVICE".into(), "work".into()),
                // Retryable errors go straight back to the orchestrator.
                ("LANDLORD_MAX_DELIVER".into(), "1".into()),
                // A command whose settling was lost (broker outage) comes
                // back soon, to be refused as expired.
                ("LANDLORD_ACK_WAIT".into(), "2s".into()),
            ],
            &scratch_dir("logs")?,
        )?;
        Ok(Self { namespace, publisher, broker, pool, stop, metrics, _worker: worker })
    }

    pub(crate) fn request(key: &str, labels: &[(&str, &str)]) -> pb::TenantRequested {
        pb::TenantRequested {
            idempotency_id: format!("req-{key}"),
            key: key.to_owned(),
            display_name: format!("Tenant {key}"),
            plan: "standard".into(),
            admin: Some(pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: "Ada".into(),
                last_name: "L".into(),
            }),
            domains: vec![format!("{key}.test")],
            source: "test".into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        }
    }

    /// Publishes a request under message id `msg_id`.
    pub(crate) async fn publish(&self, request: &pb::TenantRequested, msg_id: &str) -> Result<()> {
        let subject = match TenantKey::parse(&request.key) {
            Ok(key) => self.namespace.event_subject(&key, EventKind::Requested),
            Err(_) => self.namespace.invalid_key_event_subject(EventKind::Requested),
        };
        self.publisher.publish(subject, request, &Envelope::new(msg_id)).await?;
        Ok(())
    }

    /// Events about `token` (a tenant key or `_invalid`), in order, until one
    /// of `until` arrives.
    pub(crate) async fn events_until(
        &self,
        token: &str,
        until: &[EventKind],
    ) -> Result<Vec<(EventKind, bytes::Bytes)>> {
        let stream = self.broker.jetstream.get_stream(self.namespace.stream_name(StreamKind::Events)).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.v1.events.{token}.*", self.namespace.root()),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut seen = Vec::new();
        loop {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .with_context(|| format!("no terminal event for {token} within {WAIT:?}; saw {:?}", kinds(&seen)))?
                .context("event stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = message.subject.rsplit('.').next().unwrap_or("");
            let kind = EventKind::from_name(name).with_context(|| format!("unknown event {name}"))?;
            seen.push((kind, message.payload.clone()));
            if until.contains(&kind) {
                return Ok(seen);
            }
        }
    }

    /// The first `count` events of `kind` about `token` (`*` for any).
    pub(crate) async fn events(&self, token: &str, kind: EventKind, count: usize) -> Result<Vec<bytes::Bytes>> {
        let stream = self.broker.jetstream.get_stream(self.namespace.stream_name(StreamKind::Events)).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.v1.events.{token}.{}", self.namespace.root(), kind.name()),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut seen = Vec::new();
        while seen.len() < count {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .with_context(|| format!("only {} {} events within {WAIT:?}", seen.len(), kind.name()))?
                .context("event stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            seen.push(message.payload.clone());
        }
        Ok(seen)
    }

    pub(crate) async fn status(&self, key: &str) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT status FROM tenants WHERE key = $1").bind(key).fetch_one(&self.pool).await?)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn kinds(events: &[(EventKind, bytes::Bytes)]) -> Vec<EventKind> {
    events.iter().map(|(k, _)| *k).collect()
}

pub(crate) fn steps_of<M: prost::Message + Default>(
    events: &[(EventKind, bytes::Bytes)],
    kind: EventKind,
    step: impl Fn(&M) -> String,
) -> Vec<String> {
    events.iter().filter(|(k, _)| *k == kind).map(|(_, b)| step(&M::decode(b.clone()).unwrap_or_default())).collect()
}

pub(crate) const TERMINAL: [EventKind; 3] = [EventKind::Activated, EventKind::ProvisioningFailed, EventKind::Cancelled];

/// The orchestrator as separate processes that tests may kill and restart.
pub(crate) struct Processes {
    pub(crate) namespace: Namespace,
    pub(crate) publisher: Publisher,
    pub(crate) broker: landlord_runtime::Broker,
    pub(crate) pool: PgPool,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) logs: std::path::PathBuf,
    pub(crate) orchestrators: Vec<Process>,
    /// Health and metrics port of each orchestrator replica.
    pub(crate) ports: Vec<u16>,
    pub(crate) worker_env: Vec<(String, String)>,
    pub(crate) worker: Process,
}

impl Processes {
    pub(crate) async fn new(replicas: usize) -> Result<Self> {
        Self::with(replicas, &[]).await
    }

    pub(crate) async fn with(replicas: usize, extra: &[(&str, &str)]) -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let namespace = unique_namespace();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let logs = scratch_dir("logs")?;
        let plans = logs.join("plans.toml");
        // Restarts take a moment: s3's tight deadline belongs to the
        // in-process tests only.
        std::fs::write(&plans, PLANS.replace("timeout = \"700ms\"\nmax_attempts = 2", "timeout = \"2s\""))?;
        let broker = landlord_runtime::Broker::connect(&url, "test", namespace.clone()).await?;
        let common = vec![
            ("LANDLORD_NATS_URL".to_owned(), url.clone()),
            ("LANDLORD_NAMESPACE".to_owned(), namespace.root().to_owned()),
        ];
        let mut env = common.clone();
        env.extend([
            ("LANDLORD_DATABASE_URL".to_owned(), database.url.clone()),
            ("LANDLORD_PLANS".to_owned(), plans.display().to_string()),
            ("LANDLORD_TIMER_INTERVAL".to_owned(), "50ms".to_owned()),
            ("LANDLORD_RELAY_POLL".to_owned(), "100ms".to_owned()),
            ("LANDLORD_RELAY_GRACE".to_owned(), "500ms".to_owned()),
            ("LANDLORD_BACKOFF".to_owned(), "50ms".to_owned()),
            ("LANDLORD_ACK_WAIT".to_owned(), "2s".to_owned()),
        ]);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut worker_env = common;
        worker_env.extend([
            ("LANDLORD_WORKER_SERVICE".to_owned(), "work".to_owned()),
            ("LANDLORD_MAX_DELIVER".to_owned(), "1".to_owned()),
            ("LANDLORD_ACK_WAIT".to_owned(), "2s".to_owned()),
        ]);
        let worker = Process::start("work", &workspace_binary("scripted-worker")?, &[], &worker_env, &logs)?;
        let mut this = Self {
            namespace,
            publisher: Publisher::new(&broker, "test"),
            broker,
            pool: PgPool::connect(&database.url).await?,
            env,
            logs,
            orchestrators: Vec::new(),
            ports: Vec::new(),
            worker_env,
            worker,
        };
        for replica in 0..replicas {
            this.ports.push(landlord_testkit::free_port());
            let process = this.start_orchestrator(replica)?;
            this.orchestrators.push(process);
        }
        // The orchestrator declares the streams and applies the migrations.
        eventually("the control-plane schema", WAIT, || async {
            sqlx::query("SELECT 1 FROM outbox LIMIT 1").execute(&this.pool).await.ok().map(|_| ())
        })
        .await?;
        Ok(this)
    }

    pub(crate) fn restart_worker(&mut self) -> Result<()> {
        self.worker.kill();
        self.worker = Process::start("work", &workspace_binary("scripted-worker")?, &[], &self.worker_env, &self.logs)?;
        Ok(())
    }

    pub(crate) fn start_orchestrator(&self, replica: usize) -> Result<Process> {
        let mut env = self.env.clone();
        env.push(("LANDLORD_HTTP_ADDR".to_owned(), format!("127.0.0.1:{}", self.ports[replica])));
        Process::start(
            &format!("orchestrator-{replica}"),
            &workspace_binary("landlord-orchestrator")?,
            &[],
            &env,
            &self.logs,
        )
    }

    pub(crate) async fn publish(&self, request: &pb::TenantRequested, msg_id: &str) -> Result<()> {
        let key = TenantKey::parse(&request.key)?;
        self.publisher
            .publish(self.namespace.event_subject(&key, EventKind::Requested), request, &Envelope::new(msg_id))
            .await?;
        Ok(())
    }

    /// Waits until `count` tenants are ACTIVE, FAILED or CANCELLED.
    pub(crate) async fn wait_terminal(&self, count: i64, timeout: Duration) -> Result<()> {
        let pool = &self.pool;
        eventually(&format!("{count} tenants in a terminal state"), timeout, || async {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM tenants WHERE status IN ('ACTIVE', 'FAILED', 'CANCELLED')")
                    .fetch_one(pool)
                    .await
                    .ok()?;
            (done >= count).then_some(())
        })
        .await
    }

    /// How many events of `kind` each tenant has.
    pub(crate) async fn events_per_tenant(&self, kind: EventKind) -> Result<HashMap<String, u64>> {
        let stream = self.broker.jetstream.get_stream(self.namespace.stream_name(StreamKind::Events)).await?;
        let mut subjects = stream.info_with_subjects(self.namespace.event_filter(None, Some(kind))).await?;
        let mut counts = HashMap::new();
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry?;
            let key = subject.split('.').nth(3).unwrap_or("").to_owned();
            *counts.entry(key).or_default() += count as u64;
        }
        Ok(counts)
    }

    /// Every tenant ended as planned, with its resources in line and every
    /// event it should have, once.
    pub(crate) async fn check_outcomes(&self, expected: &HashMap<String, &str>) -> Result<()> {
        let rows: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT t.key, t.status, (SELECT count(*) FROM resources r WHERE r.tenant_id = t.id AND r.deleted_at IS NULL),
                    t.failure_reason
             FROM tenants t",
        )
        .fetch_all(&self.pool)
        .await?;
        assert_eq!(rows.len(), expected.len(), "one tenant per request");
        for (key, status, live, reason) in rows {
            assert_eq!(Some(status.as_str()), expected.get(&key).copied(), "{key}: {reason:?}");
            let want = if status == "ACTIVE" { 6 } else { 0 };
            assert_eq!(live, want, "{key} ({status}) has {live} live resources");
        }
        let stuck: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE state IN ('running', 'compensating')")
            .fetch_one(&self.pool)
            .await?;
        assert_eq!(stuck, 0, "no saga is stuck");
        // An orchestrator killed between a commit and its publish leaves the
        // rows to the outbox sweep, which publishes them a grace period
        // later: every event is in the stream once the outbox is empty.
        eventually("the outbox to be published", WAIT, || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.pool).await.ok()?;
            (left == 0).then_some(())
        })
        .await?;
        let activated = self.events_per_tenant(EventKind::Activated).await?;
        let failed = self.events_per_tenant(EventKind::ProvisioningFailed).await?;
        let succeeded = self.events_per_tenant(EventKind::StepSucceeded).await?;
        for (key, status) in expected {
            let terminal = activated.get(key).copied().unwrap_or(0) + failed.get(key).copied().unwrap_or(0);
            assert_eq!(terminal, 1, "{key}: exactly one terminal event");
            if *status == "ACTIVE" {
                assert_eq!(succeeded.get(key).copied(), Some(6), "{key}: each step succeeded once");
            }
        }
        Ok(())
    }
}

/// A small deterministic generator: the seed is printed so a failure can be replayed.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}
