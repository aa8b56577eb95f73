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
timeout = "5s"
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
    _worker: Process,
}

impl Harness {
    async fn new() -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let namespace = unique_namespace();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let env = Env::from_pairs([
            ("LANDLORD_NATS_URL", url.clone()),
            ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
            ("LANDLORD_DATABASE_URL", database.url.clone()),
            ("LANDLORD_BACKOFF", "50ms".to_owned()),
        ]);
        let mut service = Service::build(Config::from("orchestrator", &env)?).await?;
        let timing = Timing { timer_interval: Duration::from_millis(50), relay_poll: Duration::from_millis(100) };
        attach(&mut service, Plans::parse(PLANS).map_err(anyhow::Error::msg)?, timing).await?;
        let stop = service.shutdown_token();
        let publisher = Publisher::new(&service.broker, "test");
        let broker = service.broker.clone();
        let pool = service.database.clone().context("pool")?;
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
            ],
            &scratch_dir("logs")?,
        )?;
        Ok(Self { namespace, publisher, broker, pool, stop, _worker: worker })
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
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&h.pool).await?;
    assert_eq!(left, 0, "the outbox is drained");
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
        let expected: Vec<String> = (1..k).rev().map(|j| format!("s{j}")).collect();
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
    assert_eq!(compensated, ["s2", "s1"]);
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
