//! Requests as they arrive: invalid ones rejected, a repeated one made
//! once, its trace carried on, its message ids pruned from the inbox.

use super::*;

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
    let pruned = landlord_control_plane::outbox::prune_inbox(&h.pool, Duration::from_secs(3600)).await?;
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
