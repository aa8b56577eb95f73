//! Late, lost and repeated messages (issue 22), each interleaving replayed
//! on purpose rather than left to luck: the test plays the stale message
//! itself (a forward command after its compensation, a compensation of an
//! earlier saga, a cancel after a retry), or stops the broker or the
//! database for longer than a step's attempts. The scripted worker's
//! backend (a key-value bucket whose values name the saga that made each
//! object) shows what was left behind.

use async_nats::jetstream::kv;
use landlord_testkit::eventually;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

/// The scripted worker's backend.
async fn backend(h: &Harness) -> Result<kv::Store> {
    let name = format!("{}_scripted", h.namespace.root().replace('.', "_"));
    eventually("the scripted backend", WAIT, || async { h.broker.jetstream.get_key_value(name.as_str()).await.ok() })
        .await
}

/// The saga named by the marker of `key`'s object for `step`, if any.
async fn marker(store: &kv::Store, key: &str, step: &str) -> Result<Option<String>> {
    Ok(store.get(format!("{key}/{step}")).await?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Objects left in the backend for tenant `key`.
async fn objects(store: &kv::Store, key: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for step in STEPS {
        if marker(store, key, step).await?.is_some() {
            found.push(step.to_owned());
        }
    }
    Ok(found)
}

/// Waits until the worker has settled every command up to stream sequence
/// `seq`: delivered, answered and acked.
async fn worker_settled(h: &Harness, seq: u64) -> Result<()> {
    let stream = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::Commands)).await?;
    let settled = eventually("the worker to settle the command", WAIT, || async {
        let info = stream.consumer_info("work").await.ok()?;
        (info.delivered.stream_sequence >= seq && info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;
    if settled.is_err() {
        eprintln!("seq {seq}: {:#?}", stream.consumer_info("work").await);
    }
    settled
}

async fn saga_of(h: &Harness, key: &str) -> Result<String> {
    let id: Uuid = sqlx::query_scalar(
        "SELECT s.id FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE t.key = $1 ORDER BY s.created_at DESC LIMIT 1",
    )
    .bind(key)
    .fetch_one(&h.pool)
    .await?;
    Ok(id.to_string())
}

/// Tenant status, step, state, attempts, last error.
type StepDump = (String, String, String, i32, Option<String>);

async fn wait_status(h: &Harness, key: &str, status: &str) -> Result<()> {
    let waited = eventually(&format!("{key} to be {status}"), WAIT, || async {
        (h.status(key).await.ok()? == status).then_some(())
    })
    .await;
    if waited.is_err() {
        let steps: sqlx::Result<Vec<StepDump>> = sqlx::query_as(
            "SELECT t.status, st.name, st.state, st.attempts, st.last_error FROM saga_steps st
             JOIN sagas s ON s.id = st.saga_id JOIN tenants t ON t.id = s.tenant_id WHERE t.key = $1 ORDER BY s.created_at, st.position",
        )
        .bind(key)
        .fetch_all(&h.pool)
        .await;
        eprintln!("{key}: {steps:#?}");
    }
    waited
}

fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    let at = OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    prost_types::Timestamp { seconds: at.unix_timestamp(), nanos: 0 }
}

/// A step command as the orchestrator sends it, for replaying one late.
fn command(key: &str, tenant_id: &str, saga: &str, step: &str, compensate: bool, deadline: i64) -> pb::StepCommand {
    let request = Harness::request(key, &[]);
    pb::StepCommand {
        saga_id: saga.to_owned(),
        step: step.to_owned(),
        compensate,
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: tenant_id.to_owned(),
            key: key.to_owned(),
            display_name: request.display_name,
            plan: request.plan,
            ..Default::default()
        }),
        deadline: Some(in_seconds(deadline)),
        compensation: format!("delete_{step}"),
        ..Default::default()
    }
}

async fn send(h: &Harness, action: &str, command: &pb::StepCommand, msg_id: &str) -> Result<u64> {
    let subject = h.namespace.command_subject("work", action);
    Ok(h.publisher.publish(subject, command, &Envelope::new(msg_id)).await?.sequence)
}

async fn tenant_id(h: &Harness, key: &str) -> Result<String> {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE key = $1").bind(key).fetch_one(&h.pool).await?;
    Ok(id.to_string())
}

/// Retries FAILED tenant `key` with its script labels cleared, so that the
/// retry succeeds (or with `labels`, to script it).
async fn retry(h: &Harness, key: &str, labels: &[(&str, &str)], n: u32) -> Result<()> {
    let labels: HashMap<&str, &str> = labels.iter().copied().collect();
    sqlx::query("UPDATE tenants SET labels = $2 WHERE key = $1")
        .bind(key)
        .bind(sqlx::types::Json(labels))
        .execute(&h.pool)
        .await?;
    let mut request = Harness::request(key, &[]);
    request.idempotency_id = format!("retry-{key}-{n}");
    request.retry_of = Some(tenant_id(h, key).await?);
    h.publish(&request, &format!("m-retry-{key}-{n}")).await
}

#[tokio::test]
async fn a_forward_command_delivered_after_its_step_was_compensated_does_nothing() -> Result<()> {
    let h = Harness::new().await?;
    let store = backend(&h).await?;
    h.publish(&Harness::request("late-forward", &[("script.s3", "permanent")]), "m-late-forward").await?;
    wait_status(&h, "late-forward", "FAILED").await?;
    assert_eq!(objects(&store, "late-forward").await?, Vec::<String>::new(), "everything was undone");
    // s1's command again, as a redelivery after a lost ack would bring it:
    // same saga, same step, still inside its deadline.
    let (saga, tenant) = (saga_of(&h, "late-forward").await?, tenant_id(&h, "late-forward").await?);
    let seq = send(&h, "create_s1", &command("late-forward", &tenant, &saga, "s1", false, 60), "replayed-s1").await?;
    worker_settled(&h, seq).await?;
    assert_eq!(marker(&store, "late-forward", "s1").await?, None, "the fenced forward command created nothing");
    Ok(())
}

#[tokio::test]
async fn a_command_past_its_deadline_is_refused() -> Result<()> {
    let h = Harness::new().await?;
    let store = backend(&h).await?;
    let saga = Uuid::new_v4().to_string();
    let late = command("deadline", "t-1", &saga, "s1", false, -1);
    let seq = send(&h, "create_s1", &late, "expired-s1").await?;
    worker_settled(&h, seq).await?;
    assert_eq!(marker(&store, "deadline", "s1").await?, None, "an expired command does nothing");
    // The same command within its deadline does what it says.
    let seq = send(&h, "create_s1", &command("deadline", "t-1", &saga, "s1", false, 60), "timely-s1").await?;
    worker_settled(&h, seq).await?;
    assert_eq!(marker(&store, "deadline", "s1").await?, Some(saga));
    Ok(())
}

#[tokio::test]
async fn a_retried_tenants_resources_belong_to_the_retry_and_its_failure_undoes_them() -> Result<()> {
    let h = Harness::new().await?;
    let store = backend(&h).await?;
    h.publish(&Harness::request("twice", &[("script.s3", "permanent")]), "m-twice").await?;
    wait_status(&h, "twice", "FAILED").await?;
    let first = saga_of(&h, "twice").await?;
    // The retry fails too, one step further.
    retry(&h, "twice", &[("script.s4", "permanent")], 1).await?;
    eventually("the retry's saga", WAIT, || async { (saga_of(&h, "twice").await.ok()? != first).then_some(()) })
        .await?;
    wait_status(&h, "twice", "FAILED").await?;
    let second = saga_of(&h, "twice").await?;
    let live: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT step, saga_id FROM resources WHERE deleted_at IS NULL").fetch_all(&h.pool).await?;
    assert_eq!(live, [], "the retry's compensation marked every resource it undid as deleted");
    let owners: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT saga_id FROM resources WHERE step IN ('s1', 's2', 's3')")
            .fetch_all(&h.pool)
            .await?;
    assert_eq!(owners, [Uuid::parse_str(&second)?], "rows revived by the retry name the retry's saga");
    assert_eq!(objects(&store, "twice").await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn a_stale_compensation_or_cancel_of_an_earlier_saga_leaves_the_retry_alone() -> Result<()> {
    let h = Harness::new().await?;
    let store = backend(&h).await?;
    h.publish(&Harness::request("stale", &[("script.s3", "permanent")]), "m-stale").await?;
    wait_status(&h, "stale", "FAILED").await?;
    let (first, tenant) = (saga_of(&h, "stale").await?, tenant_id(&h, "stale").await?);
    // The retry's s2 takes a while: long enough for the stale cancel to
    // arrive while it runs.
    retry(&h, "stale", &[("script.s2", "sleep:1500")], 1).await?;
    eventually("the retry's s2 to run", WAIT, || async {
        let state: String = sqlx::query_scalar(
            "SELECT st.state FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
             WHERE s.id <> $1 AND st.name = 's2'",
        )
        .bind(Uuid::parse_str(&first).ok()?)
        .fetch_optional(&h.pool)
        .await
        .ok()??;
        (state == "running").then_some(())
    })
    .await?;
    let cancel = pb::CancelSaga {
        tenant_key: "stale".into(),
        reason: "a cancel meant for the first saga".into(),
        requested_by: "ops".into(),
        saga_id: first.clone(),
    };
    h.publisher
        .publish(h.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("stale-cancel"))
        .await?;
    wait_status(&h, "stale", "ACTIVE").await?;
    let second = saga_of(&h, "stale").await?;
    assert_ne!(first, second);
    // S1's compensation of s1, redelivered after S2 adopted the object.
    let seq = send(&h, "delete_s1", &command("stale", &tenant, &first, "s1", true, 60), "stale-undo-s1").await?;
    worker_settled(&h, seq).await?;
    assert_eq!(marker(&store, "stale", "s1").await?, Some(second), "the active tenant's object is untouched");
    Ok(())
}

#[tokio::test]
async fn a_redrive_is_sent_under_its_own_message_id_and_its_answer_counts() -> Result<()> {
    let h = Harness::new().await?;
    // The first sending of s1 hangs; only the re-drive can answer in time.
    h.publish(&Harness::request("redriven", &[("script.s1", "hang-first:20000")]), "m-redriven").await?;
    let events = h.events_until("redriven", &TERMINAL).await?;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::Activated), "{:?}", kinds(&events));
    let (attempts, redriven): (i32, bool) =
        sqlx::query_as("SELECT attempts, redriven FROM saga_steps WHERE name = 's1'").fetch_one(&h.pool).await?;
    assert_eq!((attempts, redriven), (1, true), "answered within the first attempt, by its re-drive");
    Ok(())
}

#[tokio::test]
async fn a_compensation_that_fails_permanently_stops_in_sight_until_an_operator_resolves_it() -> Result<()> {
    let h = Harness::new().await?;
    h.publish(&Harness::request("stuck", &[("script.s2", "permanent"), ("undo.s1", "permanent")]), "m-stuck").await?;
    eventually("s1's compensation to be stuck", WAIT, || async {
        let state: String =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE name = 's1'").fetch_one(&h.pool).await.ok()?;
        (state == "stuck").then_some(())
    })
    .await?;
    assert_eq!(h.status("stuck").await?, "COMPENSATING");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'compensation_stuck'")
        .fetch_one(&h.pool)
        .await?;
    assert_eq!(audited, 1);
    eventually("the stuck compensation on /metrics", WAIT, || async {
        h.metrics.encode().lines().any(|l| l == "landlord_compensations_stuck 1").then_some(())
    })
    .await?;
    let saga = saga_of(&h, "stuck").await?;
    let resolve = pb::ResolveCompensation {
        saga_id: saga,
        step: "s1".into(),
        skip: true,
        reason: "removed by hand".into(),
        requested_by: "ops".into(),
    };
    h.publisher
        .publish(h.namespace.command_subject("orchestrator", "resolve"), &resolve, &Envelope::new("resolve-1"))
        .await?;
    let events = h.events_until("stuck", &TERMINAL).await?;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::ProvisioningFailed), "{:?}", kinds(&events));
    let stuck: Vec<bool> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepFailed)
        .map(|(_, b)| pb::StepFailed::decode(b.clone()).unwrap_or_default())
        .filter(|e| e.step == "s1")
        .map(|e| e.will_retry)
        .collect();
    assert_eq!(stuck, [false], "the stuck compensation was announced once, not retried");
    Ok(())
}

#[tokio::test]
async fn a_broker_outage_longer_than_a_steps_attempts_leaves_nothing_behind() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
    let h = Harness::on(nats.url(), database.url.clone()).await?;
    let store = backend(&h).await?;
    // s1 is working when the broker goes away: its effect happens during
    // the outage, its answer is lost, and every attempt after it times out.
    h.publish(&Harness::request("outage", &[("script.s1", "sleep:500")]), "m-outage").await?;
    eventually("s1 to be running", WAIT, || async {
        let state: String =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE name = 's1'").fetch_one(&h.pool).await.ok()?;
        (state == "running").then_some(())
    })
    .await?;
    nats.kill();
    // Attempts run out (three of 2 s, each re-driven once) and the
    // compensation begins, all while the broker is down.
    eventually("s1 to be compensating", Duration::from_secs(60), || async {
        let state: String =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE name = 's1'").fetch_one(&h.pool).await.ok()?;
        (state == "compensating").then_some(())
    })
    .await?;
    nats.restart().await?;
    // The sweep now publishes every late command: the old attempts are
    // refused as expired or fenced, the compensation removes what s1 did.
    wait_status(&h, "outage", "FAILED").await?;
    // Everything the worker was sent (the failure mail's command is not its).
    worker_settled(&h, 0).await?;
    assert_eq!(objects(&store, "outage").await?, Vec::<String>::new(), "no orphan");
    Ok(())
}

#[tokio::test]
async fn results_wait_out_a_control_plane_outage_instead_of_being_dead_lettered() -> Result<()> {
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let database = postgres.fresh_database().await?;
    let h = Harness::on(NatsServer::shared().await.url(), database.url.clone()).await?;
    let keys: Vec<String> = (0..8).map(|i| format!("outage-db-{i}")).collect();
    for key in &keys {
        h.publish(&Harness::request(key, &[("script.s2", "sleep:300")]), &format!("m-{key}")).await?;
    }
    eventually("every saga to be at s2", WAIT, || async {
        let at_s2: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE name = 's2' AND state = 'running'")
            .fetch_one(&h.pool)
            .await
            .ok()?;
        (at_s2 == 8).then_some(())
    })
    .await?;
    postgres = tokio::task::spawn_blocking(move || postgres.stop().map(|()| postgres)).await??;
    // The s2 results arrive while the database is down: the orchestrator
    // holds them (delivered, not acked) far past the five deliveries that
    // used to dead-letter them.
    let results = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::Results)).await?;
    eventually("the s2 results to be held", WAIT, || async {
        let info = results.consumer_info("orchestrator-results").await.ok()?;
        (info.num_ack_pending >= 8).then_some(())
    })
    .await?;
    let held_since = std::time::Instant::now();
    eventually("the results to be held for 3 s", WAIT, || async {
        (held_since.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await?;
    let _postgres = tokio::task::spawn_blocking(move || postgres.restart().map(|()| postgres)).await??;
    for key in &keys {
        wait_status(&h, key, "ACTIVE").await?;
    }
    let mut dead = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::DeadLetter)).await?;
    assert_eq!(dead.info().await?.state.messages, 0, "nothing was dead-lettered");
    Ok(())
}

#[tokio::test]
async fn a_cancel_after_every_fatal_step_succeeded_is_refused_and_the_tenant_activates() -> Result<()> {
    let h = Harness::new().await?;
    // Only the (non-fatal) welcome step is left when the cancel comes: the
    // admin may already have the mail, so undoing the tenant is too late.
    h.publish(&Harness::request("almost", &[("script.welcome", "sleep:1500")]), "m-almost").await?;
    eventually("the welcome step to run", WAIT, || async {
        let state: String =
            sqlx::query_scalar("SELECT state FROM saga_steps WHERE name = 'welcome'").fetch_one(&h.pool).await.ok()?;
        (state == "running").then_some(())
    })
    .await?;
    let cancel = pb::CancelSaga {
        tenant_key: "almost".into(),
        reason: "too late".into(),
        requested_by: "ops".into(),
        saga_id: saga_of(&h, "almost").await?,
    };
    h.publisher
        .publish(h.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("late-cancel"))
        .await?;
    let events = h.events_until("almost", &TERMINAL).await?;
    assert_eq!(events.last().map(|e| e.0), Some(EventKind::Activated), "{:?}", kinds(&events));
    // The refusal is parked with its reason.
    let dead = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::DeadLetter)).await?;
    let parked = eventually("the refused cancel in the dead-letter stream", WAIT, || async {
        let subject = h.namespace.dead_letter_subject(&h.namespace.command_subject("orchestrator", "cancel"));
        dead.get_last_raw_message_by_subject(&subject).await.ok()
    })
    .await?;
    let reason = parked.headers.get(landlord_contract::header::DLQ_REASON).map(|v| v.as_str().to_owned());
    assert!(reason.as_deref().unwrap_or_default().contains("can no longer be cancelled"), "{reason:?}");
    Ok(())
}
