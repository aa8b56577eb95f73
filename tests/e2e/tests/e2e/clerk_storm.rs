//! Issue 7's duplicate storm of Clerk deliveries through a gateway crash.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::eventually;
use serde_json::{Value, json};

use crate::support::Dice;

/// One delivery as Svix makes it (attempted until answered 2xx): a Clerk
/// event's body under one svix-id.
#[derive(Debug, Clone)]
struct Delivery {
    org: usize,
    kind: &'static str,
    svix_id: String,
    body: std::sync::Arc<str>,
}

/// What the sender saw: answers of the deliveries that got their 2xx, and
/// the attempts that had to be made again.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    duplicate: usize,
    /// No answer: connection refused or reset (the gateway was down).
    unreachable: usize,
    /// 5xx or 429: an answer that asks to be retried.
    retryable: usize,
}

/// Clerk's `organization.created` for organization `i`, with the fields of
/// a real payload (the bridge reads `id`, `slug` and `name`).
fn organization_created(i: usize) -> Value {
    json!({
        "type": "organization.created", "object": "event", "timestamp": 1_717_000_000_000_u64 + i as u64,
        "data": {
            "object": "organization", "id": format!("org_storm{i:02}"), "name": format!("Storm {i:02} Inc."),
            "slug": format!("Storm_{i:02}"), "created_by": format!("user_storm{i:02}"), "members_count": 1,
            "max_allowed_memberships": 5, "admin_delete_enabled": true, "has_image": false,
            "public_metadata": {}, "created_at": 1_717_000_000_000_u64, "updated_at": 1_717_000_000_000_u64,
        },
    })
}

/// Clerk's `organizationMembership.created` making the creator `org:admin`
/// (the bridge reads `role`, `organization.id` and `public_user_data`).
fn admin_membership_created(i: usize) -> Value {
    json!({
        "type": "organizationMembership.created", "object": "event", "timestamp": 1_717_000_000_001_u64 + i as u64,
        "data": {
            "object": "organization_membership", "id": format!("orgmem_storm{i:02}"), "role": "org:admin",
            "permissions": ["org:sys_memberships:manage"],
            "organization": {"object": "organization", "id": format!("org_storm{i:02}"),
                             "name": format!("Storm {i:02} Inc."), "slug": format!("Storm_{i:02}")},
            "public_user_data": {"user_id": format!("user_storm{i:02}"), "identifier": format!("admin@storm{i:02}.test"),
                                 "first_name": "Ada", "last_name": format!("Storm{i:02}"), "has_image": false},
            "created_at": 1_717_000_000_001_u64, "updated_at": 1_717_000_000_001_u64,
        },
    })
}

/// Svix, as far as the storm needs it: delivers until the gateway answers
/// 2xx (on a compressed schedule), every attempt stamped and signed afresh,
/// a refused connection or a 5xx/429 retried with backoff; any other
/// answer fails the test.
#[derive(Debug)]
struct Sender {
    http: reqwest::Client,
    url: String,
    signer: landlord_testkit::svix::SvixSigner,
    /// Deliveries answered 2xx so far.
    acknowledged: std::sync::atomic::AtomicUsize,
    tally: std::sync::Mutex<Tally>,
}

impl Sender {
    fn acknowledged(&self) -> usize {
        self.acknowledged.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The answer's `delivery`: `accepted` or `duplicate`.
    async fn deliver(&self, delivery: &Delivery) -> Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let mut backoff = Duration::from_millis(25);
        loop {
            let body = delivery.body.to_string();
            let mut request = self.http.post(&self.url).header("content-type", "application/json");
            for (name, value) in self.signer.headers(&delivery.svix_id, body.as_bytes()) {
                request = request.header(name, value);
            }
            let unreachable = match request.body(body).send().await {
                Ok(response) if response.status().is_success() => {
                    self.acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer: Value =
                        serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or_default();
                    return Ok(answer["delivery"].as_str().unwrap_or("unreadable").to_owned());
                }
                Ok(response) if response.status().is_server_error() || response.status().as_u16() == 429 => false,
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    anyhow::bail!("{}: refused with {status}: {text}", delivery.svix_id)
                }
                Err(_) => true,
            };
            if let Ok(mut tally) = self.tally.lock() {
                if unreachable {
                    tally.unreachable += 1;
                } else {
                    tally.retryable += 1;
                }
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "{}: no 2xx within 90s", delivery.svix_id);
            // The sender's retry schedule, not a wait for a condition.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// How many messages the events stream holds on `subject`.
async fn stream_count(broker: &landlord_runtime::Broker, subject: &str) -> Result<u64> {
    use futures_util::TryStreamExt as _;
    let stream =
        broker.jetstream.get_stream(broker.namespace.stream_name(landlord_contract::StreamKind::Events)).await?;
    let mut info = stream.info_with_subjects(subject).await?;
    let mut total = 0;
    while let Some((_, count)) = info.try_next().await? {
        total += count as u64;
    }
    Ok(total)
}

/// Issue 7, "duplicate storm": 1,000 signed Clerk deliveries for 50
/// organizations — each organization's `organization.created` and its
/// `org:admin` membership, each under 2 svix-ids (Clerk re-sent it), each
/// svix-id delivered 5 times — 32 at a time in a seeded shuffled order,
/// with the gateway SIGKILLed and restarted when half of them have been
/// acknowledged. Exactly one tenant and one saga per organization, all
/// ACTIVE, one `TenantRequested` each on the events stream, no drift.
#[tokio::test]
async fn a_storm_of_duplicate_clerk_deliveries_through_a_gateway_crash_makes_one_tenant_per_organization() -> Result<()>
{
    const ORGANIZATIONS: usize = 50;
    const SVIX_IDS_PER_EVENT: usize = 2;
    const ATTEMPTS_PER_SVIX_ID: usize = 5;
    const IN_FLIGHT: usize = 32;
    const DELIVERIES: usize = ORGANIZATIONS * 2 * SVIX_IDS_PER_EVENT * ATTEMPTS_PER_SVIX_ID;
    const KILL_AFTER: usize = DELIVERIES / 2;
    const LATE: usize = 10;
    let began = std::time::Instant::now();
    let mut stack = Stack::start().await?;
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let started = began.elapsed();
    let mut dice = Dice::new();

    // Some organizations get one half only after the restart (Clerk's
    // membership event, or the organization's, stuck in Svix's retry
    // queue): the restart then falls between their two halves.
    let mut late = std::collections::HashMap::new();
    while late.len() < LATE {
        let kind = if dice.below(2) == 0 { "organization" } else { "membership" };
        late.entry(dice.below(ORGANIZATIONS as u64) as usize).or_insert(kind);
    }
    let (mut deliveries, mut held_back) = (Vec::with_capacity(DELIVERIES), Vec::new());
    for org in 0..ORGANIZATIONS {
        for (kind, event) in
            [("organization", organization_created(org)), ("membership", admin_membership_created(org))]
        {
            let body: std::sync::Arc<str> = event.to_string().into();
            for copy in 0..SVIX_IDS_PER_EVENT {
                let svix_id = format!("msg_storm{org:02}_{kind}_{copy}");
                for _ in 0..ATTEMPTS_PER_SVIX_ID {
                    let delivery = Delivery { org, kind, svix_id: svix_id.clone(), body: body.clone() };
                    if late.get(&org) == Some(&kind) { held_back.push(delivery) } else { deliveries.push(delivery) }
                }
            }
        }
    }
    let mut shuffle = |deliveries: &mut Vec<Delivery>| {
        for i in (1..deliveries.len()).rev() {
            deliveries.swap(i, dice.below(i as u64 + 1) as usize);
        }
    };
    shuffle(&mut deliveries);
    let mut second_half = deliveries.split_off(KILL_AFTER);
    second_half.append(&mut held_back);
    shuffle(&mut second_half);
    deliveries.append(&mut second_half);
    assert_eq!(deliveries.len(), DELIVERIES);
    let mut first_seen: std::collections::HashMap<usize, &str> = std::collections::HashMap::new();
    for delivery in &deliveries {
        first_seen.entry(delivery.org).or_insert(delivery.kind);
    }
    let membership_first = first_seen.values().filter(|kind| **kind == "membership").count();
    println!(
        "storm: {DELIVERIES} deliveries, {ORGANIZATIONS} organizations, {membership_first} of them with the \
         membership sent first, {LATE} with one half sent only after the restart; stack up in {started:.1?}"
    );
    assert!(membership_first > 0 && membership_first < ORGANIZATIONS, "both orders occur");

    let sender = std::sync::Arc::new(Sender {
        // Svix gives an endpoint 15 s to answer.
        http: landlord_runtime::http::client_builder(&Default::default()).timeout(Duration::from_secs(15)).build()?,
        url: format!("{}/v1/webhooks/clerk", stack.api_url()),
        signer: stack.clerk.clone(),
        acknowledged: Default::default(),
        tally: Default::default(),
    });
    let storm = tokio::spawn({
        use futures_util::StreamExt as _;
        let sender = sender.clone();
        let sent = std::time::Instant::now();
        let answers = futures_util::stream::iter(deliveries)
            .map(move |delivery| {
                let sender = sender.clone();
                async move { sender.deliver(&delivery).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<Result<String>>>();
        async move { (answers.await, sent.elapsed()) }
    });

    // Half-way through, SIGKILL the gateway and start it again.
    eventually("half the deliveries to be acknowledged", Duration::from_secs(120), || async {
        (sender.acknowledged() >= KILL_AFTER).then_some(())
    })
    .await?;
    let killed_at = sender.acknowledged();
    let kill = std::time::Instant::now();
    stack.kill_service(landlord_e2e::GATEWAY);
    let mut control = stack.control().await?;
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk_organizations WHERE requested_at IS NOT NULL")
        .fetch_one(&mut control)
        .await?;
    println!("storm: gateway SIGKILLed with {requested} of {ORGANIZATIONS} organizations requested");
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let outage = kill.elapsed();
    let back_at = sender.acknowledged();

    let (answers, storm_took) = storm.await?;
    let mut tally = std::mem::take(&mut *sender.tally.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?);
    for answer in answers {
        match answer?.as_str() {
            "accepted" => tally.accepted += 1,
            "duplicate" => tally.duplicate += 1,
            other => anyhow::bail!("unexpected answer {other:?}\n{}", stack.log(landlord_e2e::GATEWAY)),
        }
    }
    println!(
        "storm: {DELIVERIES} acknowledged in {storm_took:.1?} ({IN_FLIGHT} in flight); gateway SIGKILLed after \
         {killed_at} acknowledgements, API back {outage:.1?} later (by then {back_at}); answers: {} accepted, {} \
         duplicate; attempts retried: {} unreachable, {} 5xx/429",
        tally.accepted, tally.duplicate, tally.unreachable, tally.retryable
    );
    assert_eq!(tally.accepted + tally.duplicate, DELIVERIES);
    // A delivery committed just before the kill whose answer was lost is
    // answered `duplicate` when retried: at most one `accepted` per svix-id.
    let distinct_ids = ORGANIZATIONS * 2 * SVIX_IDS_PER_EVENT;
    assert!(tally.accepted <= distinct_ids, "{tally:?}");
    assert!(tally.unreachable + tally.retryable > 0, "the restart was felt by the sender: {tally:?}");

    // The gateway: every svix-id recorded once, every organization requested once.
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries").fetch_one(&mut control).await?;
    assert_eq!(recorded, distinct_ids as i64);
    let organizations: Vec<(String, Option<String>, bool, Option<String>)> = sqlx::query_as(
        "SELECT org_id, tenant_key, requested_at IS NOT NULL, rejected_rule FROM clerk_organizations ORDER BY org_id",
    )
    .fetch_all(&mut control)
    .await?;
    assert_eq!(organizations.len(), ORGANIZATIONS);
    for (i, (org_id, key, requested, rejected)) in organizations.iter().enumerate() {
        assert_eq!(org_id, &format!("org_storm{i:02}"));
        assert_eq!(key.as_deref(), Some(format!("storm-{i:02}").as_str()), "{org_id}: slug Storm_{i:02}");
        assert!(*requested && rejected.is_none(), "{org_id}: {rejected:?}");
    }

    // The control plane: every tenant ACTIVE, none failed on the way.
    let provisioning = std::time::Instant::now();
    let settled = eventually("every Clerk tenant to be ACTIVE", Duration::from_secs(240), || async {
        let mut control = stack.control().await.ok()?;
        let (active, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'ACTIVE'),
                    count(*) FILTER (WHERE status IN ('COMPENSATING', 'FAILED', 'CANCELLED'))
             FROM tenants",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        (active == ORGANIZATIONS as i64 || failed > 0).then_some(failed)
    })
    .await;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    let failed = settled.with_context(|| format!("statuses: {statuses:?}\n{}", stack.logs()))?;
    assert_eq!(failed, 0, "statuses: {statuses:?}\n{}", stack.logs());
    println!(
        "storm: {ORGANIZATIONS} tenants ACTIVE {:.1?} after the last acknowledgement ({:.1?} since the stack was up)",
        provisioning.elapsed(),
        began.elapsed() - started
    );
    assert_eq!(statuses, [("ACTIVE".to_owned(), ORGANIZATIONS as i64)]);
    // Each organization's tenant, as the bridge made it from the two halves.
    let tenants: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', key, plan, tier, source, idempotency_id, admin_email, admin_first_name,
                          admin_last_name, display_name)
         FROM tenants ORDER BY key",
    )
    .fetch_all(&mut control)
    .await?;
    let expected: Vec<String> = (0..ORGANIZATIONS)
        .map(|i| {
            format!(
                "storm-{i:02} standard bridge clerk clerk:org_storm{i:02} admin@storm{i:02}.test Ada Storm{i:02} \
                 Storm {i:02} Inc."
            )
        })
        .collect();
    assert_eq!(tenants, expected);
    let (sagas, saga_tenants, succeeded): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT tenant_id), count(*) FILTER (WHERE state = 'succeeded') FROM sagas",
    )
    .fetch_one(&mut control)
    .await?;
    assert_eq!(
        (sagas, saga_tenants, succeeded),
        (ORGANIZATIONS as i64, ORGANIZATIONS as i64, ORGANIZATIONS as i64),
        "one saga per tenant, each succeeded"
    );

    // The broker: one TenantRequested per organization, nothing rejected.
    let broker = stack.connect("storm").await?;
    let events = |kind| stack.namespace.event_filter(None, Some(kind));
    let requested = stream_count(&broker, &events(landlord_contract::EventKind::Requested)).await?;
    let rejected = stream_count(&broker, &events(landlord_contract::EventKind::Rejected)).await?;
    let activated = stream_count(&broker, &events(landlord_contract::EventKind::Activated)).await?;
    let clerk_events = stream_count(&broker, &format!("{}.v1.events._clerk.>", stack.namespace.root())).await?;
    println!(
        "storm: events stream holds {requested} TenantRequested, {rejected} TenantRejected, {activated} \
         TenantActivated, {clerk_events} republished Clerk events (for {distinct_ids} svix-ids)"
    );
    assert_eq!((requested, rejected, activated), (ORGANIZATIONS as u64, 0, ORGANIZATIONS as u64));

    // The backends: each realm's one admin is the Clerk admin.
    for i in 0..ORGANIZATIONS {
        let users = stack.keycloak.users(&format!("tenant-storm-{i:02}"));
        assert_eq!(users.len(), 1, "storm-{i:02}: {users:?}");
        assert_eq!(users[0]["email"], format!("admin@storm{i:02}.test"));
    }
    let audit = std::time::Instant::now();
    stack.assert_no_drift().await?;
    println!("storm: no drift (audit {:.1?}); whole test {:.1?}", audit.elapsed(), began.elapsed());
    Ok(())
}
