//! A saga from request to outcome: steps in order, compensation in reverse
//! after a fatal failure, a non-fatal step reported, retries, a re-drive and
//! a cancel between steps.

use super::*;

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
