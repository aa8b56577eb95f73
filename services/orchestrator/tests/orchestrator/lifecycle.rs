//! The lifecycle after ACTIVE (docs/lifecycle.md): suspend, resume,
//! update, offboard, restore, export and purge as sagas of their own,
//! asked for through `landlord_control_plane::operations::request` as the
//! API and the purge timer ask, run by the orchestrator in process against
//! a recording worker (every command it gets is kept, for the tests to
//! read what each step was sent).

use std::sync::{Arc, Mutex};

use landlord_contract::header;
use landlord_control_plane::Operation;
use landlord_control_plane::ids::saga_id;
use landlord_control_plane::operations::{self, OperationRequest, Refused, RequestError, TenantPatch};
use landlord_orchestrator::{Lifecycle, attach_with};
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, StepWorker};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

/// Provisioning is one step; every lifecycle pipeline is served by the
/// recording worker of service `work`, named like the real ones.
const PLANS: &str = r#"
[defaults]
timeout = "2s"
max_attempts = 2
backoff = ["50ms"]

[plans.standard]
tier = "bridge"
pipeline = "provision"

[plans.premium]
tier = "bridge"
pipeline = "provision"

[operations]
restore = "resume"

[[pipelines.provision]]
name = "create"
command = "work.create"
compensation = "work.delete"

[[pipelines.suspend]]
name = "idp_suspend"
command = "work.idp_suspend"
compensation = "work.idp_resume"
[[pipelines.suspend]]
name = "database_suspend"
command = "work.database_suspend"
compensation = "work.database_resume"
[[pipelines.suspend]]
name = "storage_suspend"
command = "work.storage_suspend"
compensation = "work.storage_resume"
[[pipelines.suspend]]
name = "suspended_email"
command = "work.send_suspended"
fatal = false
max_attempts = 1

[[pipelines.resume]]
name = "idp_resume"
command = "work.idp_resume"
compensation = "work.idp_suspend"
[[pipelines.resume]]
name = "database_resume"
command = "work.database_resume"
compensation = "work.database_suspend"
[[pipelines.resume]]
name = "storage_resume"
command = "work.storage_resume"
compensation = "work.storage_suspend"

[[pipelines.update]]
name = "idp_update"
command = "work.idp_update"
compensation = "work.idp_update"
[[pipelines.update]]
name = "billing_update"
command = "work.billing_update"
max_attempts = 1

# Action `suspend`, as the real suspend steps: skipped when the tenant is
# suspended already.
[[pipelines.offboard]]
name = "idp_suspend"
command = "work.suspend"
compensation = "work.resume"
[[pipelines.offboard]]
name = "database_export"
command = "work.export"
[[pipelines.offboard]]
name = "storage_export"
command = "work.export"
[[pipelines.offboard]]
name = "deletion_email"
command = "work.send_deletion_scheduled"
fatal = false
max_attempts = 1

[[pipelines.export]]
name = "database_export"
command = "work.export"
[[pipelines.export]]
name = "storage_export"
command = "work.export"

[[pipelines.purge]]
name = "idp_purge"
command = "work.idp_purge"
max_attempts = 0
backoff = ["600ms"]
[[pipelines.purge]]
name = "database_purge"
command = "work.database_purge"
max_attempts = 0
backoff = ["600ms"]
[[pipelines.purge]]
name = "storage_purge"
command = "work.storage_purge"
max_attempts = 0
backoff = ["600ms"]
"#;

const ARCHIVE: &str = "landlord-archive";

/// Serves every command of `work` and keeps it. Its script is the tenant
/// label `script.<step>` (`undo.<step>` for a compensation): `ok`,
/// `permanent`, `fail-attempts:N`, `sleep:MS`, or (export steps)
/// `unverified`. `create` reports one resource; `export` reports where the
/// export went, verified.
#[derive(Clone, Default)]
pub(super) struct Recorder {
    pub(super) commands: Arc<Mutex<Vec<pb::StepCommand>>>,
}

impl StepService for Recorder {
    type Action = String;

    async fn execute(
        &self,
        action: String,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        _: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        if let Ok(mut commands) = self.commands.lock() {
            commands.push(command.clone());
        }
        let label = format!("{}.{}", if command.compensate { "undo" } else { "script" }, command.step);
        let script = tenant.labels.get(&label).map_or("ok", String::as_str);
        let (verb, arg) = script.split_once(':').unwrap_or((script, ""));
        match verb {
            "permanent" => return Err(StepFailure::permanent("scripted", format!("{} refused", command.step))),
            "fail-attempts" if command.attempt <= arg.parse().unwrap_or(0) => {
                return Err(StepFailure::retryable("scripted", format!("attempt {} failed", command.attempt)));
            }
            "sleep" => tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await,
            _ => {}
        }
        let mut ok = pb::StepOk::default();
        if action == "create" && !command.compensate {
            ok.resources.push(pb::Resource {
                kind: "test.thing".into(),
                external_id: format!("{}-thing", tenant.key),
                metadata: HashMap::new(),
            });
        }
        if action == "export" {
            let prefix = command.inputs.get("export.prefix").cloned().unwrap_or_default();
            ok.outputs.insert("export.location".into(), format!("s3://{ARCHIVE}/{prefix}"));
            ok.outputs.insert("export.verified".into(), (verb != "unverified").to_string());
        }
        Ok(ok)
    }
}

pub(super) struct Life {
    pub(super) namespace: Namespace,
    pub(super) publisher: Publisher,
    pub(super) broker: landlord_runtime::Broker,
    pub(super) pool: PgPool,
    pub(super) plans: Plans,
    pub(super) recorder: Recorder,
    stops: Vec<CancellationToken>,
}

impl Drop for Life {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.cancel();
        }
    }
}

impl Life {
    async fn new() -> Result<Self> {
        Self::with_plans(PLANS).await
    }

    /// The orchestrator with plans `plans`, and the recording worker.
    pub(super) async fn with_plans(plans: &str) -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let namespace = unique_namespace();
        let env = |service: &str| -> Result<Config> {
            let mut pairs = vec![
                ("LANDLORD_NATS_URL", url.clone()),
                ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
                ("LANDLORD_BACKOFF", "50ms".to_owned()),
            ];
            if service == "orchestrator" {
                pairs.push(("LANDLORD_DATABASE_URL", database.url.clone()));
            } else {
                // Retryable errors go straight back to the orchestrator.
                pairs.push(("LANDLORD_MAX_DELIVER", "1".to_owned()));
            }
            Ok(Config::from(service, &Env::from_pairs(pairs))?)
        };
        let plans = Plans::parse(plans).map_err(anyhow::Error::msg)?;
        let mut orchestrator = Service::build(env("orchestrator")?).await?;
        let timing = Timing {
            timer_interval: Duration::from_millis(50),
            relay_poll: Duration::from_millis(100),
            relay_grace: Duration::from_millis(300),
            inbox_retention: Duration::from_secs(3600),
        };
        let lifecycle = Lifecycle { purge_interval: Duration::from_millis(200) };
        attach_with(&mut orchestrator, plans.clone(), timing, lifecycle).await?;
        let mut stops = vec![orchestrator.shutdown_token()];
        let publisher = Publisher::new(&orchestrator.broker, "test");
        let broker = orchestrator.broker.clone();
        let pool = orchestrator.database.clone().context("pool")?;
        tokio::spawn(orchestrator.run());

        let recorder = Recorder::default();
        let mut worker = Service::build(env("work")?).await?;
        let handler = StepWorker::new(recorder.clone(), worker.publisher.clone());
        worker.consume(StreamKind::Commands, "work", vec![namespace.service_commands("work")], handler).await?;
        stops.push(worker.shutdown_token());
        tokio::spawn(worker.run());
        Ok(Self { namespace, publisher, broker, pool, plans, recorder, stops })
    }

    /// Provisions `key` (with script labels) and waits until it is ACTIVE.
    async fn active(&self, key: &str, labels: &[(&str, &str)]) -> Result<Uuid> {
        self.provision(key, &format!("req-{key}"), labels).await?;
        self.wait_status(key, "ACTIVE").await?;
        Ok(sqlx::query_scalar("SELECT id FROM tenants WHERE key = $1 AND status = 'ACTIVE'")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn provision(&self, key: &str, idempotency_id: &str, labels: &[(&str, &str)]) -> Result<()> {
        let mut request = Harness::request(key, labels);
        request.idempotency_id = idempotency_id.to_owned();
        let subject = self.namespace.event_subject(&TenantKey::parse(key)?, EventKind::Requested);
        self.publisher.publish(subject, &request, &Envelope::new(format!("m-{idempotency_id}"))).await?;
        Ok(())
    }

    /// Asks for `operation` as the API would.
    async fn ask(&self, key: &str, operation: Operation, change: impl FnOnce(&mut OperationRequest)) -> Result<Uuid> {
        let mut request = OperationRequest {
            tenant_key: key.to_owned(),
            operation,
            idempotency_id: format!("api:{key}:{operation}:{}", Uuid::new_v4()),
            requested_by: "ops@example.test".into(),
            reason: format!("{operation} for the test"),
            patch: None,
            purge_at: None,
            export: true,
        };
        change(&mut request);
        let (requested, _) = operations::request(&self.pool, &self.namespace, &self.plans, request)
            .await
            .map_err(|e| anyhow::anyhow!("{operation} of {key} refused: {e}"))?;
        // The outbox sweep of the orchestrator publishes the request.
        Ok(requested.saga_id)
    }

    /// Publishes an OperationRequested as the control plane would, without
    /// its checks (a race the control plane did not see).
    async fn operate(&self, key: &str, tenant: Uuid, operation: Operation, idempotency_id: &str) -> Result<Uuid> {
        let saga = saga_id(operation, idempotency_id);
        let request = pb::OperationRequested {
            saga_id: saga.to_string(),
            tenant_id: tenant.to_string(),
            tenant_key: key.to_owned(),
            operation: operation.as_str().to_owned(),
            idempotency_id: idempotency_id.to_owned(),
            requested_by: "racer".into(),
            reason: "racing".into(),
            purge_at: Some(prost_types::Timestamp {
                seconds: OffsetDateTime::now_utc().unix_timestamp() + 3600,
                nanos: 0,
            }),
            export: true,
            ..Default::default()
        };
        let subject = self.namespace.command_subject("orchestrator", "operate");
        self.publisher.publish(subject, &request, &Envelope::new(format!("op-{idempotency_id}"))).await?;
        Ok(saga)
    }

    pub(super) async fn status(&self, key: &str) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT status FROM tenants WHERE key = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn wait_status(&self, key: &str, status: &str) -> Result<()> {
        eventually(&format!("{key} to be {status}"), WAIT, || async {
            (self.status(key).await.ok()? == status).then_some(())
        })
        .await
    }

    /// The events of saga `saga` about `key`, in order, until one of `until`.
    pub(super) async fn saga_events(
        &self,
        key: &str,
        saga: Uuid,
        until: &[EventKind],
    ) -> Result<Vec<(EventKind, bytes::Bytes)>> {
        let stream = self.broker.jetstream.get_stream(self.namespace.stream_name(StreamKind::Events)).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.v1.events.{key}.*", self.namespace.root()),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut seen = Vec::new();
        let saga = saga.to_string();
        loop {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .with_context(|| format!("saga {saga} of {key} did not end within {WAIT:?}; saw {:?}", kinds(&seen)))?
                .context("event stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ours = message
                .headers
                .as_ref()
                .and_then(|h| h.get(header::CORRELATION_ID))
                .is_some_and(|v| v.as_str() == saga);
            if !ours {
                continue;
            }
            let name = message.subject.rsplit('.').next().unwrap_or("");
            let kind = EventKind::from_name(name).with_context(|| format!("unknown event {name}"))?;
            seen.push((kind, message.payload.clone()));
            if until.contains(&kind) {
                return Ok(seen);
            }
        }
    }

    /// The commands the worker got for `key`'s saga `saga`, in order.
    pub(super) fn commands(&self, saga: Uuid) -> Vec<pb::StepCommand> {
        let saga = saga.to_string();
        self.recorder
            .commands
            .lock()
            .map(|c| c.iter().filter(|c| c.saga_id == saga).cloned().collect())
            .unwrap_or_default()
    }
}

pub(super) fn last<M: prost::Message + Default>(events: &[(EventKind, bytes::Bytes)], kind: EventKind) -> Result<M> {
    let (_, payload) = events.iter().rev().find(|(k, _)| *k == kind).with_context(|| format!("no {kind:?}"))?;
    Ok(M::decode(payload.clone())?)
}

/// The step name and direction of each command, as sent.
pub(super) fn sent(commands: &[pb::StepCommand]) -> Vec<String> {
    commands.iter().map(|c| format!("{}{}", if c.compensate { "undo " } else { "" }, c.step)).collect()
}

#[tokio::test]
async fn suspend_then_resume_move_the_tenant_and_say_who_asked() -> Result<()> {
    let life = Life::new().await?;
    life.active("sleepy", &[]).await?;
    let saga = life.ask("sleepy", Operation::Suspend, |r| r.reason = "invoice unpaid".into()).await?;
    let events = life.saga_events("sleepy", saga, &[EventKind::Suspended, EventKind::OperationFailed]).await?;
    let mut expected = vec![EventKind::OperationStarted];
    for _ in 0..4 {
        expected.extend([EventKind::StepStarted, EventKind::StepSucceeded]);
    }
    expected.push(EventKind::Suspended);
    assert_eq!(kinds(&events), expected);
    let started: pb::OperationStarted = last(&events, EventKind::OperationStarted)?;
    assert_eq!(started.operation, "suspend");
    let suspended: pb::TenantSuspended = last(&events, EventKind::Suspended)?;
    let snapshot = suspended.tenant.context("snapshot")?;
    assert_eq!(snapshot.status, "SUSPENDED");
    assert_eq!(snapshot.tenant.context("spec")?.key, "sleepy");
    let requester = suspended.requester.context("requester")?;
    assert_eq!((requester.requested_by.as_str(), requester.reason.as_str()), ("ops@example.test", "invoice unpaid"));
    assert_eq!(suspended.progress.context("progress")?.percent, 100);
    assert_eq!(life.status("sleepy").await?, "SUSPENDED");
    let (by, reason, operation): (String, String, String) =
        sqlx::query_as("SELECT requested_by, reason, operation FROM sagas WHERE id = $1")
            .bind(saga)
            .fetch_one(&life.pool)
            .await?;
    assert_eq!((by.as_str(), reason.as_str(), operation.as_str()), ("ops@example.test", "invoice unpaid", "suspend"));
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM operation_requests").fetch_one(&life.pool).await?;
    assert_eq!(requests, 0, "the request row goes when its saga starts");
    assert_eq!(sent(&life.commands(saga)), ["idp_suspend", "database_suspend", "storage_suspend", "suspended_email"]);

    let saga = life.ask("sleepy", Operation::Resume, |_| {}).await?;
    let events = life.saga_events("sleepy", saga, &[EventKind::Resumed, EventKind::OperationFailed]).await?;
    let resumed: pb::TenantResumed = last(&events, EventKind::Resumed)?;
    assert_eq!(resumed.tenant.context("snapshot")?.status, "ACTIVE");
    assert_eq!(life.status("sleepy").await?, "ACTIVE");
    Ok(())
}

#[tokio::test]
async fn a_suspend_failing_at_storage_is_reversed_and_the_tenant_stays_active() -> Result<()> {
    let life = Life::new().await?;
    life.active("halfway", &[("script.storage_suspend", "permanent")]).await?;
    let saga = life.ask("halfway", Operation::Suspend, |_| {}).await?;
    let events = life.saga_events("halfway", saga, &[EventKind::Suspended, EventKind::OperationFailed]).await?;
    let failed: pb::OperationFailed = last(&events, EventKind::OperationFailed)?;
    assert_eq!(failed.operation, "suspend");
    assert_eq!(failed.failed_step, "storage_suspend");
    assert!(failed.reason.contains("storage_suspend refused"), "{}", failed.reason);
    // The failed step too (it may have done part of its work), then the
    // others, newest first.
    assert_eq!(failed.reversed, ["storage_suspend", "database_suspend", "idp_suspend"]);
    assert_eq!(failed.tenant.context("snapshot")?.status, "ACTIVE");
    assert_eq!(
        sent(&life.commands(saga)),
        [
            "idp_suspend",
            "database_suspend",
            "storage_suspend",
            "undo storage_suspend",
            "undo database_suspend",
            "undo idp_suspend"
        ]
    );
    let compensated = steps_of::<pb::StepCompensated>(&events, EventKind::StepCompensated, |e| e.step.clone());
    assert_eq!(compensated, failed.reversed);
    assert_eq!(life.status("halfway").await?, "ACTIVE");
    let state: String =
        sqlx::query_scalar("SELECT state FROM sagas WHERE id = $1").bind(saga).fetch_one(&life.pool).await?;
    assert_eq!(state, "failed");
    Ok(())
}

#[tokio::test]
async fn an_update_sends_the_new_tenant_forward_and_the_old_one_back() -> Result<()> {
    let life = Life::new().await?;
    // A domain belongs to one live tenant at a time.
    let patch = |domain: &str| TenantPatch {
        display_name: Some("New Name".into()),
        domains: Some(vec![domain.to_owned()]),
        plan: Some("premium".into()),
        ..Default::default()
    };
    // One update goes through.
    life.active("mover", &[]).await?;
    let saga = life.ask("mover", Operation::Update, |r| r.patch = Some(patch("new.example.test"))).await?;
    let events = life.saga_events("mover", saga, &[EventKind::Updated, EventKind::OperationFailed]).await?;
    let updated: pb::TenantUpdated = last(&events, EventKind::Updated)?;
    let mut changed = updated.changed.clone();
    changed.sort();
    assert_eq!(changed, ["display_name", "domains", "plan"]);
    let spec = updated.tenant.context("snapshot")?.tenant.context("spec")?;
    assert_eq!((spec.display_name.as_str(), spec.plan.as_str()), ("New Name", "premium"));
    let row: (String, Vec<String>, String, String) =
        sqlx::query_as("SELECT display_name, domains, plan, status FROM tenants WHERE key = 'mover'")
            .fetch_one(&life.pool)
            .await?;
    assert_eq!(row, ("New Name".into(), vec!["new.example.test".into()], "premium".into(), "ACTIVE".into()));
    let forward = life.commands(saga);
    assert!(forward.iter().all(|c| c.tenant.as_ref().is_some_and(|t| t.display_name == "New Name")));

    // The other fails after the idp took the new name: the idp gets the
    // old one back, and the row never changed.
    life.active("stayer", &[("script.billing_update", "permanent")]).await?;
    let saga = life.ask("stayer", Operation::Update, |r| r.patch = Some(patch("other.example.test"))).await?;
    let events = life.saga_events("stayer", saga, &[EventKind::Updated, EventKind::OperationFailed]).await?;
    let failed: pb::OperationFailed = last(&events, EventKind::OperationFailed)?;
    assert_eq!(failed.reversed, ["idp_update"]);
    let commands = life.commands(saga);
    assert_eq!(sent(&commands), ["idp_update", "billing_update", "undo idp_update"]);
    let name = |c: &pb::StepCommand| c.tenant.as_ref().map(|t| (t.display_name.clone(), t.domains.clone()));
    assert_eq!(name(&commands[0]), Some(("New Name".into(), vec!["other.example.test".into()])));
    assert_eq!(name(&commands[2]), Some(("Tenant stayer".into(), vec!["stayer.test".into()])));
    // A forward command also carries the tenant as it was (for a worker
    // that finds it fenced after it ran); a compensation does not.
    let previous = |c: &pb::StepCommand| c.previous_tenant.as_ref().map(|t| t.display_name.clone());
    assert_eq!(previous(&commands[0]).as_deref(), Some("Tenant stayer"));
    assert_eq!(previous(&commands[2]), None);
    let (display_name, plan): (String, String) =
        sqlx::query_as("SELECT display_name, plan FROM tenants WHERE key = 'stayer'").fetch_one(&life.pool).await?;
    assert_eq!((display_name.as_str(), plan.as_str()), ("Tenant stayer", "standard"));
    assert_eq!(life.status("stayer").await?, "ACTIVE");
    Ok(())
}

#[tokio::test]
async fn offboarding_exports_then_the_timer_purges_and_the_key_is_free_again() -> Result<()> {
    let life = Life::new().await?;
    let tenant = life.active("leaver", &[("script.database_purge", "fail-attempts:2")]).await?;
    let purge_at = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let saga = life
        .ask("leaver", Operation::Offboard, |r| {
            r.reason = "contract ended".into();
            r.purge_at = Some(purge_at);
        })
        .await?;
    let events = life.saga_events("leaver", saga, &[EventKind::DeletionScheduled, EventKind::OperationFailed]).await?;
    let scheduled: pb::TenantDeletionScheduled = last(&events, EventKind::DeletionScheduled)?;
    let prefix = format!("leaver/{tenant}/");
    let location = scheduled.export_location.clone();
    assert!(location.starts_with(&format!("s3://{ARCHIVE}/{prefix}")), "{location}");
    let stamp = &location[format!("s3://{ARCHIVE}/{prefix}").len()..];
    assert!(stamp.len() == 17 && stamp.ends_with("Z/") && stamp.as_bytes()[8] == b'T', "{stamp}");
    assert_eq!(scheduled.purge_at.context("purge_at")?.seconds, purge_at.unix_timestamp());
    assert_eq!(scheduled.tenant.context("snapshot")?.status, "DELETION_SCHEDULED");
    let exports: Vec<String> = life
        .commands(saga)
        .iter()
        .filter(|c| c.step.ends_with("_export"))
        .map(|c| c.inputs.get("export.prefix").cloned().unwrap_or_default())
        .collect();
    assert_eq!(exports.len(), 2);
    assert!(exports.iter().all(|p| location.ends_with(p.as_str())), "{exports:?} vs {location}");
    let (stored, exported_at): (Option<String>, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT export_location, exported_at FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&life.pool)
            .await?;
    assert_eq!(stored.as_deref(), Some(location.as_str()));
    assert!(exported_at.is_some());
    let tombstone: (Option<String>, Option<String>, bool) =
        sqlx::query_as("SELECT deleted_by, deletion_reason, deleted_at IS NOT NULL FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&life.pool)
            .await?;
    assert_eq!(
        tombstone,
        (Some("ops@example.test".into()), Some("contract ended".into()), false),
        "who asked for the deletion and why, from the offboarding; deleted_at waits for the purge"
    );

    // The grace period ends: the timer asks for the purge. Its database
    // step fails twice — the tenant says so, DEPROVISIONING — then succeeds.
    let purge = saga_id(Operation::Purge, &format!("purge:{tenant}:{}", purge_at.unix_timestamp()));
    eventually("the purge to show its last error", WAIT, || async {
        let (status, reason): (String, Option<String>) =
            sqlx::query_as("SELECT status, failure_reason FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_one(&life.pool)
                .await
                .ok()?;
        (status == "DEPROVISIONING" && reason.is_some_and(|r| r.contains("attempt"))).then_some(())
    })
    .await?;
    // A purge is never cancelled: the cancel is refused, and audited.
    let cancel = pb::CancelSaga {
        tenant_key: "leaver".into(),
        reason: "changed my mind".into(),
        requested_by: "ops".into(),
        saga_id: purge.to_string(),
    };
    life.publisher
        .publish(life.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("cancel-purge"))
        .await?;
    let events = life.saga_events("leaver", purge, &[EventKind::Deleted, EventKind::OperationFailed]).await?;
    let deleted: pb::TenantDeleted = last(&events, EventKind::Deleted)?;
    assert_eq!(deleted.tenant.context("snapshot")?.status, "DELETED");
    let requester = deleted.requester.context("requester")?;
    assert_eq!((requester.requested_by.as_str(), requester.reason.as_str()), ("landlord", "grace period ended"));
    let retries: Vec<(String, bool)> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepFailed)
        .map(|(_, b)| pb::StepFailed::decode(b.clone()).map(|f| (f.step, f.will_retry)).unwrap_or_default())
        .collect();
    assert_eq!(retries, [("database_purge".to_owned(), true), ("database_purge".to_owned(), true)]);
    let row: (String, Option<String>, Option<String>, Option<String>, bool) = sqlx::query_as(
        "SELECT status, deleted_by, deletion_reason, failure_reason, deleted_at IS NOT NULL FROM tenants WHERE id = $1",
    )
    .bind(tenant)
    .fetch_one(&life.pool)
    .await?;
    assert_eq!(
        row,
        ("DELETED".into(), Some("ops@example.test".into()), Some("contract ended".into()), None, true),
        "a tombstone saying who asked for the deletion, why, and when it was done"
    );
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM resources WHERE tenant_id = $1 AND deleted_at IS NULL")
        .bind(tenant)
        .fetch_one(&life.pool)
        .await?;
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM resources WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&life.pool)
        .await?;
    assert_eq!((live, all), (0, 1), "every resource of the tenant is marked deleted");
    eventually("the refused cancel in the audit log", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE saga_id = $1 AND action = 'cancel_refused'")
                .bind(purge)
                .fetch_one(&life.pool)
                .await
                .ok()?;
        (n == 1).then_some(())
    })
    .await?;
    let purges: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE tenant_id = $1 AND operation = 'purge'")
        .bind(tenant)
        .fetch_one(&life.pool)
        .await?;
    assert_eq!(purges, 1, "the timer asked once, however many rounds saw it due");

    // The key is free: a new request makes a new tenant; the first
    // request, repeated, makes nothing.
    life.provision("leaver", "req-leaver-again", &[]).await?;
    life.provision("leaver", "req-leaver", &[]).await?;
    life.wait_status("leaver", "ACTIVE").await?;
    let tenants: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM tenants WHERE key = 'leaver' ORDER BY created_at")
            .fetch_all(&life.pool)
            .await?;
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    assert_eq!(tenants[0], (tenant, "DELETED".to_owned()));
    assert_ne!(tenants[1].0, tenant);
    assert_eq!(tenants[1].1, "ACTIVE");
    Ok(())
}

#[tokio::test]
async fn restore_within_the_grace_period_brings_the_tenant_back() -> Result<()> {
    let life = Life::new().await?;
    life.active("returner", &[]).await?;
    let saga = life
        .ask("returner", Operation::Offboard, |r| {
            r.purge_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
            r.export = false;
        })
        .await?;
    let events =
        life.saga_events("returner", saga, &[EventKind::DeletionScheduled, EventKind::OperationFailed]).await?;
    let scheduled: pb::TenantDeletionScheduled = last(&events, EventKind::DeletionScheduled)?;
    assert_eq!(scheduled.export_location, "", "the export was waived");
    assert_eq!(sent(&life.commands(saga)), ["idp_suspend", "deletion_email"], "the export steps were skipped");
    let skipped: Vec<String> =
        sqlx::query_scalar("SELECT name FROM saga_steps WHERE saga_id = $1 AND state = 'skipped' ORDER BY position")
            .bind(saga)
            .fetch_all(&life.pool)
            .await?;
    assert_eq!(skipped, ["database_export", "storage_export"]);
    let waived: bool =
        sqlx::query_scalar("SELECT export_waived FROM tenants WHERE key = 'returner'").fetch_one(&life.pool).await?;
    assert!(waived);
    let who = || async {
        sqlx::query_as::<_, (Option<String>, Option<String>)>(
            "SELECT deleted_by, deletion_reason FROM tenants WHERE key = 'returner'",
        )
        .fetch_one(&life.pool)
        .await
    };
    assert_eq!(who().await?, (Some("ops@example.test".into()), Some("offboard for the test".into())));

    let saga = life.ask("returner", Operation::Restore, |_| {}).await?;
    let events = life.saga_events("returner", saga, &[EventKind::Restored, EventKind::OperationFailed]).await?;
    let restored: pb::TenantRestored = last(&events, EventKind::Restored)?;
    assert_eq!(restored.tenant.context("snapshot")?.status, "ACTIVE");
    assert_eq!(sent(&life.commands(saga)), ["idp_resume", "database_resume", "storage_resume"]);
    let (status, purge_at): (String, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT status, purge_at FROM tenants WHERE key = 'returner'").fetch_one(&life.pool).await?;
    assert_eq!((status.as_str(), purge_at), ("ACTIVE", None));
    assert_eq!(who().await?, (None, None), "a restored tenant is no tombstone-to-be");
    Ok(())
}

#[tokio::test]
async fn a_failed_offboarding_of_a_suspended_tenant_leaves_it_suspended() -> Result<()> {
    let life = Life::new().await?;
    life.active("dozing", &[("script.database_export", "permanent")]).await?;
    let saga = life.ask("dozing", Operation::Suspend, |_| {}).await?;
    life.saga_events("dozing", saga, &[EventKind::Suspended, EventKind::OperationFailed]).await?;
    assert_eq!(life.status("dozing").await?, "SUSPENDED");

    let saga = life
        .ask("dozing", Operation::Offboard, |r| {
            r.purge_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
        })
        .await?;
    let events = life.saga_events("dozing", saga, &[EventKind::DeletionScheduled, EventKind::OperationFailed]).await?;
    let failed: pb::OperationFailed = last(&events, EventKind::OperationFailed)?;
    assert_eq!(failed.failed_step, "database_export");
    assert!(failed.reversed.is_empty(), "{:?}", failed.reversed);
    assert_eq!(failed.tenant.context("snapshot")?.status, "SUSPENDED");
    // The suspend step was skipped: nothing suspended it, nothing resumes it.
    assert_eq!(sent(&life.commands(saga)), ["database_export"]);
    let skipped: Vec<String> =
        sqlx::query_scalar("SELECT name FROM saga_steps WHERE saga_id = $1 AND state = 'skipped' ORDER BY position")
            .bind(saga)
            .fetch_all(&life.pool)
            .await?;
    assert_eq!(skipped, ["idp_suspend"]);
    assert_eq!(life.status("dozing").await?, "SUSPENDED");
    Ok(())
}

#[tokio::test]
async fn a_purge_without_a_verified_export_is_refused() -> Result<()> {
    let life = Life::new().await?;
    let tenant = life
        .active("unsaved", &[("script.database_export", "unverified"), ("script.storage_export", "unverified")])
        .await?;
    let saga = life
        .ask("unsaved", Operation::Offboard, |r| {
            r.purge_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1))
        })
        .await?;
    let events = life.saga_events("unsaved", saga, &[EventKind::DeletionScheduled, EventKind::OperationFailed]).await?;
    let scheduled: pb::TenantDeletionScheduled = last(&events, EventKind::DeletionScheduled)?;
    assert_eq!(scheduled.export_location, "", "an export not verified is no export");

    let asked = OperationRequest {
        tenant_key: "unsaved".into(),
        operation: Operation::Purge,
        idempotency_id: "api:purge-now".into(),
        requested_by: "ops".into(),
        reason: "now".into(),
        patch: None,
        purge_at: None,
        export: true,
    };
    let refused = operations::request(&life.pool, &life.namespace, &life.plans, asked).await;
    assert!(
        matches!(refused, Err(RequestError::Refused(Refused::ExportMissing))),
        "{:?}",
        refused.map(|r| r.0.saga_id)
    );
    // Had it come through anyway, the orchestrator refuses it too.
    let purge = life.operate("unsaved", tenant, Operation::Purge, "sneaky").await?;
    let events =
        life.saga_events("unsaved", purge, &[EventKind::OperationRejected, EventKind::OperationStarted]).await?;
    let rejected: pb::OperationRejected = last(&events, EventKind::OperationRejected)?;
    assert_eq!(rejected.rule, "operation.export_missing");
    assert_eq!(life.status("unsaved").await?, "DELETION_SCHEDULED");
    Ok(())
}

#[tokio::test]
async fn of_two_racing_requests_one_starts_and_the_other_is_rejected() -> Result<()> {
    let life = Life::new().await?;
    let tenant = life.active("racer", &[("script.idp_suspend", "sleep:500")]).await?;
    let first = life.operate("racer", tenant, Operation::Suspend, "one").await?;
    let second = life.operate("racer", tenant, Operation::Offboard, "two").await?;
    let until = [EventKind::OperationRejected, EventKind::OperationStarted];
    let a = life.saga_events("racer", first, &until).await?;
    let b = life.saga_events("racer", second, &until).await?;
    let (started, rejected, lost) = match (kinds(&a).last(), kinds(&b).last()) {
        (Some(EventKind::OperationStarted), Some(EventKind::OperationRejected)) => (first, &b, second),
        (Some(EventKind::OperationRejected), Some(EventKind::OperationStarted)) => (second, &a, first),
        other => anyhow::bail!("one start and one rejection expected, got {other:?}"),
    };
    let rejected: pb::OperationRejected = last(rejected, EventKind::OperationRejected)?;
    assert_eq!(rejected.rule, "operation.conflict");
    assert_eq!(rejected.running_saga_id, started.to_string());
    let sagas: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM sagas WHERE tenant_id = $1 AND operation <> 'provision'")
        .bind(tenant)
        .fetch_all(&life.pool)
        .await?;
    assert_eq!(sagas, [started], "no saga for {lost}");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE saga_id = $1 AND action = 'operation_rejected'")
            .bind(lost)
            .fetch_one(&life.pool)
            .await?;
    assert_eq!(audited, 1);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_suspend_is_reversed_and_reported_as_failed() -> Result<()> {
    let life = Life::new().await?;
    life.active("waverer", &[("script.database_suspend", "sleep:1500")]).await?;
    let saga = life.ask("waverer", Operation::Suspend, |_| {}).await?;
    eventually("database_suspend to be running", WAIT, || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE saga_id = $1 AND name = 'database_suspend'")
                .bind(saga)
                .fetch_optional(&life.pool)
                .await
                .ok()?;
        (state.as_deref() == Some("running")).then_some(())
    })
    .await?;
    let cancel = pb::CancelSaga {
        tenant_key: "waverer".into(),
        reason: "paid after all".into(),
        requested_by: "billing".into(),
        saga_id: saga.to_string(),
    };
    life.publisher
        .publish(life.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("cancel-suspend"))
        .await?;
    let events = life.saga_events("waverer", saga, &[EventKind::Suspended, EventKind::OperationFailed]).await?;
    let failed: pb::OperationFailed = last(&events, EventKind::OperationFailed)?;
    assert_eq!(failed.reason, "cancelled: paid after all");
    assert_eq!(failed.reversed, ["database_suspend", "idp_suspend"]);
    assert_eq!(life.status("waverer").await?, "ACTIVE");
    let state: String =
        sqlx::query_scalar("SELECT state FROM sagas WHERE id = $1").bind(saga).fetch_one(&life.pool).await?;
    assert_eq!(state, "cancelled");
    Ok(())
}

#[tokio::test]
async fn an_export_on_its_own_records_where_it_went_and_leaves_the_status() -> Result<()> {
    let life = Life::new().await?;
    let tenant = life.active("archivist", &[]).await?;
    let saga = life.ask("archivist", Operation::Export, |_| {}).await?;
    let events = life.saga_events("archivist", saga, &[EventKind::Exported, EventKind::OperationFailed]).await?;
    let exported: pb::TenantExported = last(&events, EventKind::Exported)?;
    assert!(exported.location.starts_with(&format!("s3://{ARCHIVE}/archivist/{tenant}/")), "{}", exported.location);
    assert_eq!(exported.tenant.context("snapshot")?.status, "ACTIVE");
    let prefixes: Vec<String> =
        life.commands(saga).iter().map(|c| c.inputs.get("export.prefix").cloned().unwrap_or_default()).collect();
    assert_eq!(prefixes.len(), 2);
    assert!(prefixes.iter().all(|p| !p.is_empty() && exported.location.ends_with(p.as_str())), "{prefixes:?}");
    let (status, location): (String, Option<String>) =
        sqlx::query_as("SELECT status, export_location FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&life.pool)
            .await?;
    assert_eq!((status.as_str(), location.as_deref()), ("ACTIVE", Some(exported.location.as_str())));
    Ok(())
}
