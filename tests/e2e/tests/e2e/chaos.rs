//! Chaos: every service killed and NATS restarted while tenants are
//! provisioned.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::eventually;

use crate::support::Dice;

#[tokio::test]
async fn chaos_every_service_killed_and_nats_restarted_yet_every_tenant_ends_clean() -> Result<()> {
    let tenants: usize = std::env::var("LANDLORD_CHAOS_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut stack = Stack::start().await?;
    let mut dice = Dice::new();
    // As a platform service asks for tenants: its bus user may publish
    // TenantRequested and nothing else.
    let broker = stack.connect_as(landlord_e2e::PLATFORM, "chaos").await?;
    let publisher = landlord_runtime::Publisher::new(&broker, "chaos");
    let plans = ["standard", "standard", "standard", "standard", "free", "free", "enterprise"];
    let keys: Vec<String> = (0..tenants).map(|i| format!("chaos-{i:03}")).collect();
    for key in &keys {
        let request = landlord_contract::pb::TenantRequested {
            idempotency_id: format!("chaos-{key}"),
            key: key.clone(),
            display_name: key.clone(),
            plan: plans[dice.below(plans.len() as u64) as usize].to_owned(),
            admin: Some(landlord_contract::pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{key}.example.com")],
            source: "chaos".into(),
            ..Default::default()
        };
        let tenant_key = landlord_contract::TenantKey::parse(key)?;
        let envelope = landlord_runtime::Envelope::new(request.idempotency_id.clone());
        publisher.publish_event(&tenant_key, &request, &envelope).await?;
    }
    drop(broker);
    // Kill a random service every second or so while the sagas run; restart
    // NATS once in the middle.
    let mut kills = Vec::new();
    for round in 0..16 {
        if round == 6 {
            stack.nats.restart().await?;
            kills.push("nats-server");
            continue;
        }
        let name = landlord_e2e::SERVICES[dice.below(5) as usize];
        tokio::time::sleep(Duration::from_millis(300 + dice.below(1_200))).await;
        stack.kill_service(name);
        stack.start_service(name).await?;
        kills.push(name);
    }
    println!("killed and restarted, in order: {kills:?}");
    // Every request becomes a tenant and every saga reaches an end: no
    // tenant is left pending or half-done (counting the tenants too: the
    // orchestrator may still be taking requests in when the ones it took
    // are all done).
    let finished = eventually("every tenant to reach ACTIVE or FAILED", Duration::from_secs(300), || async {
        let mut control = stack.control().await.ok()?;
        let (all, open): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('ACTIVE', 'FAILED'))
             FROM tenants WHERE key LIKE 'chaos-%'",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        (all == tenants as i64 && open == 0).then_some(())
    })
    .await;
    let mut control = stack.control().await?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    finished.with_context(|| format!("statuses: {statuses:?}\n{}", stack.logs()))?;
    let total: i64 = statuses.iter().map(|(_, n)| n).sum();
    assert_eq!(total, tenants as i64, "one tenant per request: {statuses:?}");
    println!("chaos outcome: {statuses:?}");
    // A FAILED tenant has nothing left; an ACTIVE one has exactly one of
    // each object: no command was applied twice in effect.
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM resources r JOIN tenants t ON t.id = r.tenant_id
         WHERE t.status = 'FAILED' AND r.deleted_at IS NULL",
    )
    .fetch_one(&mut control)
    .await?;
    assert_eq!(leftovers, 0);
    for key in &keys {
        let (_, status) = stack.tenant(key).await?;
        if status == "ACTIVE" && stack.keycloak.realm(&format!("tenant-{key}")).is_some() {
            assert_eq!(stack.keycloak.users(&format!("tenant-{key}")).len(), 1, "{key}: one admin user");
            let clients = stack.keycloak.clients(&format!("tenant-{key}"));
            assert_eq!(clients.iter().filter(|c| c["clientId"] == format!("{key}-app")).count(), 1, "{key}");
        }
    }
    stack.assert_no_drift().await
}
