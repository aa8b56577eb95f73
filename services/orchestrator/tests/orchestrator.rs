//! The orchestrator against a real nats-server and PostgreSQL, with the
//! scripted worker (a test double for the real workers) as a separate
//! process. Each test has its own namespace and database.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use landlord_contract::{EventKind, Namespace, StreamKind, TenantKey, pb};
use landlord_orchestrator::{Plans, Timing, attach};
use landlord_runtime::{Config, Env, Envelope, Publisher, Service};
#[path = "orchestrator/fencing.rs"]
mod fencing;
#[path = "orchestrator/intake.rs"]
mod intake;
#[path = "orchestrator/schema.rs"]
mod schema;

use landlord_testkit::{NatsServer, Postgres, Process, eventually, scratch_dir, unique_namespace, workspace_binary};
use prost::Message as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const STEPS: [&str; 6] = ["s1", "s2", "s3", "s4", "s5", "welcome"];

/// Five fatal steps and a non-fatal one, all served by the scripted worker
/// of service `work`; s3 answers within 700 ms or is late.
const PLANS: &str = r#"
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
"#;

struct Harness {
    namespace: Namespace,
    publisher: Publisher,
    broker: landlord_runtime::Broker,
    pool: PgPool,
    stop: CancellationToken,
    metrics: landlord_runtime::Metrics,
    _worker: Process,
}

impl Harness {
    async fn new() -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        Self::on(url, database.url.clone()).await
    }

    /// The orchestrator in process, the scripted worker as a process, on
    /// the broker at `url` and the control-plane database at `database`.
    async fn on(url: String, database: String) -> Result<Self> {
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

    fn request(key: &str, labels: &[(&str, &str)]) -> pb::TenantRequested {
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
    async fn publish(&self, request: &pb::TenantRequested, msg_id: &str) -> Result<()> {
        let subject = match TenantKey::parse(&request.key) {
            Ok(key) => self.namespace.event_subject(&key, EventKind::Requested),
            Err(_) => self.namespace.invalid_key_event_subject(EventKind::Requested),
        };
        self.publisher.publish(subject, request, &Envelope::new(msg_id)).await?;
        Ok(())
    }

    /// Events about `token` (a tenant key or `_invalid`), in order, until one
    /// of `until` arrives.
    async fn events_until(&self, token: &str, until: &[EventKind]) -> Result<Vec<(EventKind, bytes::Bytes)>> {
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
    async fn events(&self, token: &str, kind: EventKind, count: usize) -> Result<Vec<bytes::Bytes>> {
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

    async fn status(&self, key: &str) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT status FROM tenants WHERE key = $1").bind(key).fetch_one(&self.pool).await?)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn kinds(events: &[(EventKind, bytes::Bytes)]) -> Vec<EventKind> {
    events.iter().map(|(k, _)| *k).collect()
}

fn steps_of<M: prost::Message + Default>(
    events: &[(EventKind, bytes::Bytes)],
    kind: EventKind,
    step: impl Fn(&M) -> String,
) -> Vec<String> {
    events.iter().filter(|(k, _)| *k == kind).map(|(_, b)| step(&M::decode(b.clone()).unwrap_or_default())).collect()
}

const TERMINAL: [EventKind; 3] = [EventKind::Activated, EventKind::ProvisioningFailed, EventKind::Cancelled];

#[tokio::test]
async fn happy_path_runs_the_steps_in_order_and_activates_the_tenant() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("happy", &[]), "m-happy").await?;
    let events = h.events_until("happy", &TERMINAL).await?;
    let mut expected = vec![EventKind::Requested, EventKind::Accepted, EventKind::ProvisioningStarted];
    for _ in STEPS {
        expected.extend([EventKind::StepStarted, EventKind::StepSucceeded]);
    }
    expected.push(EventKind::Activated);
    assert_eq!(kinds(&events), expected);
    let started = steps_of::<pb::StepStarted>(&events, EventKind::StepStarted, |e| e.step.clone());
    assert_eq!(started, STEPS);
    let percents: Vec<u32> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepSucceeded)
        .map(|(_, b)| pb::StepSucceeded::decode(b.clone()).unwrap_or_default().progress.unwrap_or_default().percent)
        .collect();
    assert_eq!(percents, [16, 33, 50, 66, 83, 100]);
    let activated = pb::TenantActivated::decode(events.last().context("activated")?.1.clone())?;
    assert_eq!(activated.resources.len(), 6);
    let progress = activated.progress.context("progress")?;
    assert!(
        progress.steps.iter().all(|s| s.state == pb::StepState::Succeeded as i32 && s.attempts == 1),
        "{progress:?}"
    );

    assert_eq!(h.status("happy").await?, "ACTIVE");
    let resources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resources WHERE deleted_at IS NULL").fetch_one(&h.pool).await?;
    assert_eq!(resources, 6);
    eventually("the outbox to be drained", WAIT, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&h.pool).await.ok()?;
        (left == 0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn applied_message_ids_leave_the_inbox_after_the_retention() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("pruned", &[]), "m-pruned").await?;
    h.events_until("pruned", &TERMINAL).await?;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox").fetch_one(&h.pool).await?;
    assert_eq!(kept, 1 + STEPS.len() as i64, "the request and one result per step");
    // Age all but one id past the retention.
    sqlx::query(
        "UPDATE inbox SET received_at = now() - interval '2 hours'
         WHERE msg_id <> (SELECT min(msg_id) FROM inbox)",
    )
    .execute(&h.pool)
    .await?;
    let pruned = landlord_orchestrator::outbox::prune_inbox(&h.pool, Duration::from_secs(3600)).await?;
    assert_eq!(pruned, STEPS.len() as u64);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox").fetch_one(&h.pool).await?;
    assert_eq!(left, 1);
    Ok(())
}

#[tokio::test]
async fn the_requests_trace_continues_through_the_outbox_to_the_workers_and_the_events() -> Result<()> {
    let h = Harness::new().await?;
    let request = Harness::request("traced", &[]);
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let key = TenantKey::parse("traced")?;
    let mut headers = h.publisher.headers::<pb::TenantRequested>(&Envelope::new("m-traced"));
    headers.insert("traceparent", format!("00-{trace_id}-eee19b7ec3c1b174-01").as_str());
    h.publisher
        .publish_raw(h.namespace.event_subject(&key, EventKind::Requested), headers, request.encode_to_vec().into())
        .await?;
    h.events_until("traced", &TERMINAL).await?;
    let stream = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    for kind in [EventKind::Accepted, EventKind::StepSucceeded, EventKind::Activated] {
        let subject = h.namespace.event_subject(&key, kind);
        let message = stream.get_last_raw_message_by_subject(&subject).await?;
        let traceparent = message.headers.get("traceparent").map(|v| v.as_str().to_owned()).unwrap_or_default();
        assert!(traceparent.contains(trace_id), "{} carries the request's trace: {traceparent:?}", kind.name());
    }
    Ok(())
}

#[tokio::test]
async fn a_permanent_failure_at_step_k_compensates_steps_before_it_in_reverse() -> Result<()> {
    let h = Harness::new().await?;
    for k in 1..=5 {
        let label = format!("script.s{k}");
        h.publish(&Harness::request(&format!("fail-at-{k}"), &[(&label, "permanent")]), &format!("m-{k}")).await?;
    }
    for k in 1..=5usize {
        let key = format!("fail-at-{k}");
        let events = h.events_until(&key, &TERMINAL).await?;
        let last = events.last().context("terminal")?;
        assert_eq!(last.0, EventKind::ProvisioningFailed, "{key}: {:?}", kinds(&events));
        let failed = pb::ProvisioningFailed::decode(last.1.clone())?;
        assert_eq!(failed.failed_step, format!("s{k}"));
        assert!(failed.reason.contains("scripted permanent failure"), "{}", failed.reason);
        let compensated = steps_of::<pb::StepCompensated>(&events, EventKind::StepCompensated, |e| e.step.clone());
        // The failed step too: it may have done part of its work.
        let expected: Vec<String> = (1..=k).rev().map(|j| format!("s{j}")).collect();
        assert_eq!(compensated, expected, "{key}");
        assert_eq!(h.status(&key).await?, "FAILED");
        let (step, reason): (String, String) =
            sqlx::query_as("SELECT failed_step, failure_reason FROM tenants WHERE key = $1")
                .bind(&key)
                .fetch_one(&h.pool)
                .await?;
        assert_eq!(step, format!("s{k}"));
        assert!(reason.contains("permanent"));
    }
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM resources WHERE deleted_at IS NULL").fetch_one(&h.pool).await?;
    assert_eq!(live, 0, "every resource was compensated");
    Ok(())
}

#[tokio::test]
async fn a_non_fatal_step_failure_is_reported_and_the_tenant_still_activates() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("mailless", &[("script.welcome", "permanent")]), "m-mailless").await?;
    let events = h.events_until("mailless", &TERMINAL).await?;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::Activated));
    let failed: Vec<pb::StepFailed> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepFailed)
        .map(|(_, b)| pb::StepFailed::decode(b.clone()).unwrap_or_default())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].step, "welcome");
    assert!(!failed[0].fatal && !failed[0].will_retry);
    assert!(!kinds(&events).contains(&EventKind::CompensationStarted));
    Ok(())
}

#[tokio::test]
async fn a_retryable_failure_twice_then_success_compensates_nothing() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("flaky", &[("script.s2", "fail-attempts:2")]), "m-flaky").await?;
    let events = h.events_until("flaky", &TERMINAL).await?;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::Activated));
    let retries: Vec<bool> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepFailed)
        .map(|(_, b)| pb::StepFailed::decode(b.clone()).unwrap_or_default().will_retry)
        .collect();
    assert_eq!(retries, [true, true]);
    assert!(!kinds(&events).contains(&EventKind::CompensationStarted));
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM saga_steps WHERE name = 's2'").fetch_one(&h.pool).await?;
    assert_eq!(attempts, 3);
    Ok(())
}

#[tokio::test]
async fn a_worker_that_never_answers_is_redriven_then_compensated() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("silent", &[("script.s3", "sleep:600000")]), "m-silent").await?;
    let events = h.events_until("silent", &TERMINAL).await?;
    let failed = pb::ProvisioningFailed::decode(events.last().context("terminal")?.1.clone())?;
    assert_eq!(failed.failed_step, "s3");
    assert!(failed.reason.starts_with("timeout"), "{}", failed.reason);
    let compensated = steps_of::<pb::StepCompensated>(&events, EventKind::StepCompensated, |e| e.step.clone());
    assert_eq!(compensated, ["s3", "s2", "s1"], "the step that timed out too: its command may still run");
    let redrives: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'step_redriven'").fetch_one(&h.pool).await?;
    assert_eq!(redrives, 2, "each of the two attempts was re-driven once before counting as failed");
    Ok(())
}

#[tokio::test]
async fn invalid_requests_are_rejected_with_the_rule_and_create_nothing() -> Result<()> {
    let h = Harness::new().await?;
    let mut cases: Vec<(pb::TenantRequested, &str)> = Vec::new();
    for (key, rule) in [
        ("it's", "tenant_key.character"),
        ("semi;colon", "tenant_key.character"),
        ("with space", "tenant_key.character"),
        ("аcme", "tenant_key.first_character"),
        ("UPPER", "tenant_key.first_character"),
        ("a-very-long-tenant-key-that-goes-on-and-on-and-on", "tenant_key.too_long"),
        ("admin", "tenant_key.reserved"),
    ] {
        cases.push((Harness::request(key, &[]), rule));
    }
    let mut no_email = Harness::request("noemail", &[]);
    no_email.admin.as_mut().context("admin")?.email.clear();
    cases.push((no_email, "admin.email.missing"));
    let mut unknown_plan = Harness::request("noplan", &[]);
    unknown_plan.plan = "platinum".into();
    cases.push((unknown_plan, "plan.unknown"));
    for (i, (request, _)) in cases.iter().enumerate() {
        h.publish(request, &format!("bad-{i}")).await?;
    }
    let rejections = h.events("*", EventKind::Rejected, cases.len()).await?;
    let rules: HashMap<String, String> = rejections
        .iter()
        .map(|b| pb::TenantRejected::decode(b.clone()).map(|e| (e.key, e.rule)))
        .collect::<Result<_, _>>()?;
    for (request, rule) in &cases {
        assert_eq!(rules.get(&request.key).map(String::as_str), Some(*rule), "{:?}: {rules:?}", request.key);
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&h.pool).await?;
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&h.pool).await?;
    assert_eq!((tenants, sagas), (0, 0), "nothing was created");
    Ok(())
}

#[tokio::test]
async fn the_same_request_twenty_times_makes_one_tenant_and_one_saga() -> Result<()> {
    let h = Harness::new().await?;
    let request = Harness::request("dupe", &[]);
    for i in 0..20 {
        // Half with the same message id, half with new ones.
        let msg_id = if i % 2 == 0 { "same".to_owned() } else { format!("other-{i}") };
        h.publish(&request, &msg_id).await?;
    }
    let mut taken = Harness::request("dupe", &[]);
    taken.idempotency_id = "someone-else".into();
    h.publish(&taken, "taken").await?;
    let events = h.events_until("dupe", &[EventKind::Activated]).await?;
    assert_eq!(kinds(&events).iter().filter(|k| **k == EventKind::Accepted).count(), 1);
    let rejected = h.events_until("dupe", &[EventKind::Rejected]).await?;
    let rejection = pb::TenantRejected::decode(rejected.last().context("rejected")?.1.clone())?;
    assert_eq!(rejection.rule, "tenant_key.duplicate");
    // The same idempotency id under another key makes nothing either.
    let mut reused = Harness::request("dupe-two", &[]);
    reused.idempotency_id = request.idempotency_id.clone();
    h.publish(&reused, "reused").await?;
    let rejected = h.events_until("dupe-two", &[EventKind::Rejected]).await?;
    let rejection = pb::TenantRejected::decode(rejected.last().context("rejected")?.1.clone())?;
    assert_eq!(rejection.rule, "idempotency_id.reused");
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM sagas)")
        .fetch_one(&h.pool)
        .await?;
    assert_eq!(counts, (1, 1));
    Ok(())
}

#[tokio::test]
async fn a_cancel_stops_the_saga_between_steps_and_compensates() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("quitter", &[("script.s2", "sleep:1000")]), "m-quitter").await?;
    // Wait until s2 is running, then cancel.
    let started = h.events_until("quitter", &[EventKind::StepStarted]).await?;
    assert!(!started.is_empty());
    eventually("s2 to be running", WAIT, || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE name = 's2'").fetch_optional(&h.pool).await.ok()?;
        (state.as_deref() == Some("running")).then_some(())
    })
    .await?;
    let cancel = pb::CancelSaga {
        tenant_key: "quitter".into(),
        reason: "customer changed their mind".into(),
        requested_by: "ops".into(),
        ..Default::default()
    };
    h.publisher
        .publish(h.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("cancel-1"))
        .await?;
    let events = h.events_until("quitter", &TERMINAL).await?;
    let last = events.last().context("terminal")?;
    assert_eq!(last.0, EventKind::Cancelled, "{:?}", kinds(&events));
    let cancelled = pb::TenantCancelled::decode(last.1.clone())?;
    assert_eq!(cancelled.reason, "customer changed their mind");
    let compensated = steps_of::<pb::StepCompensated>(&events, EventKind::StepCompensated, |e| e.step.clone());
    assert_eq!(compensated, ["s2", "s1"], "the step in flight finished, then everything done was undone");
    assert_eq!(h.status("quitter").await?, "CANCELLED");
    let later = steps_of::<pb::StepStarted>(&events, EventKind::StepStarted, |e| e.step.clone());
    assert_eq!(later, ["s1", "s2"], "no step started after the cancel");
    Ok(())
}

/// The orchestrator as separate processes that tests may kill and restart.
struct Processes {
    namespace: Namespace,
    publisher: Publisher,
    broker: landlord_runtime::Broker,
    pool: PgPool,
    env: Vec<(String, String)>,
    logs: std::path::PathBuf,
    orchestrators: Vec<Process>,
    /// Health and metrics port of each orchestrator replica.
    ports: Vec<u16>,
    worker_env: Vec<(String, String)>,
    worker: Process,
}

impl Processes {
    async fn new(replicas: usize) -> Result<Self> {
        Self::with(replicas, &[]).await
    }

    async fn with(replicas: usize, extra: &[(&str, &str)]) -> Result<Self> {
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

    fn restart_worker(&mut self) -> Result<()> {
        self.worker.kill();
        self.worker = Process::start("work", &workspace_binary("scripted-worker")?, &[], &self.worker_env, &self.logs)?;
        Ok(())
    }

    fn start_orchestrator(&self, replica: usize) -> Result<Process> {
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

    async fn publish(&self, request: &pb::TenantRequested, msg_id: &str) -> Result<()> {
        let key = TenantKey::parse(&request.key)?;
        self.publisher
            .publish(self.namespace.event_subject(&key, EventKind::Requested), request, &Envelope::new(msg_id))
            .await?;
        Ok(())
    }

    /// Waits until `count` tenants are ACTIVE, FAILED or CANCELLED.
    async fn wait_terminal(&self, count: i64, timeout: Duration) -> Result<()> {
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
    async fn events_per_tenant(&self, kind: EventKind) -> Result<HashMap<String, u64>> {
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
    async fn check_outcomes(&self, expected: &HashMap<String, &str>) -> Result<()> {
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
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn the_orchestrator_killed_at_random_moments_during_50_sagas_loses_nothing() -> Result<()> {
    let mut p = Processes::new(1).await?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    println!("chaos seed {seed}");
    let mut random = Lcg(seed);
    let mut expected = HashMap::new();
    for i in 0..50 {
        let key = format!("chaos-{i}");
        let fails = i % 5 == 0;
        let labels: &[(&str, &str)] = if fails { &[("script.s4", "permanent")] } else { &[] };
        p.publish(&Harness::request(&key, labels), &format!("m-{key}")).await?;
        expected.insert(key, if fails { "FAILED" } else { "ACTIVE" });
    }
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50 + random.next(350))).await;
        p.orchestrators[0].kill();
        p.orchestrators[0] = p.start_orchestrator(0)?;
    }
    p.wait_terminal(50, Duration::from_secs(90)).await?;
    p.check_outcomes(&expected).await
}

#[tokio::test]
async fn two_replicas_share_the_load_and_never_apply_a_result_twice() -> Result<()> {
    // Small pulls, so that neither replica takes everything in one batch.
    let p = Processes::with(2, &[("LANDLORD_MAX_IN_FLIGHT", "2")]).await?;
    let mut expected = HashMap::new();
    for i in 0..30 {
        let key = format!("pair-{i}");
        p.publish(&Harness::request(&key, &[]), &format!("m-{key}")).await?;
        expected.insert(key, "ACTIVE");
    }
    p.wait_terminal(30, WAIT).await?;
    p.check_outcomes(&expected).await?;
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE attempts <> 1").fetch_one(&p.pool).await?;
    assert_eq!(attempts, 0, "no step ran twice");
    for port in &p.ports {
        let (_, metrics) = tokio::task::spawn_blocking({
            let port = *port;
            move || landlord_testkit::http_get(port, "/metrics")
        })
        .await?
        .context("metrics")?;
        let handled: u64 = metrics
            .lines()
            .find(|l| {
                l.starts_with(r#"landlord_messages_handled_total{consumer="orchestrator-results",outcome="ack"}"#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(handled > 0, "replica on port {port} applied results:\n{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn a_command_or_result_lost_by_the_broker_delays_a_saga_but_never_strands_it() -> Result<()> {
    let mut p = Processes::new(1).await?;
    let commands = p.broker.jetstream.get_stream(p.namespace.stream_name(StreamKind::Commands)).await?;
    let results = p.broker.jetstream.get_stream(p.namespace.stream_name(StreamKind::Results)).await?;

    // A lost command: with the worker down, s1's command vanishes from the
    // stream before anyone reads it.
    p.worker.kill();
    p.publish(&Harness::request("lost-command", &[]), "m-lost-command").await?;
    let s1 = p.namespace.command_subject("work", "create_s1");
    let seq = eventually("s1's command in the stream", WAIT, || async {
        commands.get_last_raw_message_by_subject(&s1).await.ok().map(|m| m.sequence)
    })
    .await?;
    assert!(commands.delete_message(seq).await?, "the command was deleted");
    p.restart_worker()?;
    p.wait_terminal(1, WAIT).await?;

    // A lost result: the orchestrator is down when s1's answer comes, and
    // the answer vanishes before it is back.
    p.publish(&Harness::request("lost-result", &[("script.s1", "sleep:1000")]), "m-lost-result").await?;
    eventually("s1 of lost-result to be running", WAIT, || async {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT st.state FROM saga_steps st JOIN sagas s ON s.id = st.saga_id JOIN tenants t ON t.id = s.tenant_id
             WHERE t.key = 'lost-result' AND st.name = 's1'",
        )
        .fetch_optional(&p.pool)
        .await
        .ok()?;
        (state.as_deref() == Some("running")).then_some(())
    })
    .await?;
    p.orchestrators[0].kill();
    let s1_result = p.namespace.result_subject("work", "create_s1");
    let seq = eventually("s1's result in the stream", WAIT, || async {
        results.get_last_raw_message_by_subject(&s1_result).await.ok().map(|m| m.sequence)
    })
    .await?;
    assert!(results.delete_message(seq).await?, "the result was deleted");
    p.orchestrators[0] = p.start_orchestrator(0)?;

    p.wait_terminal(2, WAIT).await?;
    p.check_outcomes(&HashMap::from([("lost-command".to_owned(), "ACTIVE"), ("lost-result".to_owned(), "ACTIVE")]))
        .await
}
