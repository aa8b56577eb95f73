//! Past one machine (issue 28 item 1): a three-node NATS cluster, every
//! stream with three replicas, two replicas of every service, and tenants
//! provisioned while one node is killed and later restarted and while
//! every stream's leader is moved. Every tenant ends ACTIVE or fully
//! compensated, none twice, and the audit finds nothing.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{SERVICES, Stack};
use landlord_testkit::{NatsCluster, eventually, scratch_dir};

/// How many tenants in `status` the run has so far.
async fn count(stack: &Stack, status: &str) -> Option<i64> {
    let mut control = stack.control().await.ok()?;
    sqlx::query_scalar("SELECT count(*) FROM tenants WHERE status = $1 AND key LIKE 'r3-%'")
        .bind(status)
        .fetch_one(&mut control)
        .await
        .ok()
}

/// Every stream's leader, by stream name, once the cluster answers: right
/// after a node comes back, JetStream requests may time out while the
/// streams elect and catch up.
async fn leaders(broker: &landlord_runtime::Broker) -> Result<Vec<(String, String)>> {
    eventually("every stream's leader", Duration::from_secs(60), || async { leaders_now(broker).await.ok() }).await
}

async fn leaders_now(broker: &landlord_runtime::Broker) -> Result<Vec<(String, String)>> {
    use futures_util::TryStreamExt as _;
    let jetstream = &broker.jetstream;
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    let mut leaders = Vec::new();
    // Landlord's four streams: the key-value buckets' streams (KV_…) are
    // out of the operator's reach by design (deploy/nats/accounts.conf).
    for name in names.into_iter().filter(|n| !n.starts_with("KV_")) {
        let info = jetstream.get_stream(&name).await?.info().await?.clone();
        let leader = info.cluster.and_then(|c| c.leader).unwrap_or_default();
        leaders.push((name, leader));
    }
    leaders.sort();
    Ok(leaders)
}

#[tokio::test]
async fn a_three_node_cluster_loses_a_node_and_moves_its_leaders_yet_every_tenant_ends_clean() -> Result<()> {
    let tenants: usize = std::env::var("LANDLORD_CLUSTER_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut stack = Stack::servers().await?;
    // The cluster with the bus users on, as the single server has them:
    // each service connects as its own user, the test as the operator.
    let mut cluster = NatsCluster::start_with_accounts(&stack.namespace).await?;
    stack.use_cluster(&cluster);
    stack.start_services().await?;
    let dir = scratch_dir("r3-replicas")?;
    let mut replicas = Vec::new();
    for name in SERVICES {
        replicas.push(stack.start_replica(name, 2, &dir).await?);
    }

    let broker = stack.connect("r3-test").await?;
    let before = leaders(&broker).await?;
    anyhow::ensure!(before.iter().all(|(_, leader)| !leader.is_empty()), "streams without a leader: {before:?}");
    for (name, _) in &before {
        let info = broker.jetstream.get_stream(name).await?.info().await?.clone();
        assert_eq!(info.config.num_replicas, 3, "{name} has three replicas");
    }
    let publisher = landlord_runtime::Publisher::new(&broker, "r3-test");
    let plans = ["standard", "free", "enterprise"];
    let keys: Vec<String> = (0..tenants).map(|i| format!("r3-{i:03}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let request = landlord_contract::pb::TenantRequested {
            idempotency_id: format!("r3-{key}"),
            key: key.clone(),
            display_name: key.clone(),
            plan: plans[i % plans.len()].to_owned(),
            admin: Some(landlord_contract::pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{key}.example.com")],
            source: "r3-test".into(),
            ..Default::default()
        };
        let tenant_key = landlord_contract::TenantKey::parse(key)?;
        let envelope = landlord_runtime::Envelope::new(request.idempotency_id.clone());
        publisher.publish_event(&tenant_key, &request, &envelope).await?;
    }

    // A node goes away once a fifth of the tenants are ACTIVE: the one
    // leading the most streams, so that leaders must move.
    let fifth = i64::try_from(tenants / 5).unwrap_or(1).max(1);
    eventually("a fifth of the tenants ACTIVE", Duration::from_secs(300), || async {
        (count(&stack, "ACTIVE").await? >= fifth).then_some(())
    })
    .await
    .with_context(|| stack.logs())?;
    let now = leaders(&broker).await?;
    let busiest = (0..cluster.nodes.len())
        .max_by_key(|i| now.iter().filter(|(_, leader)| *leader == format!("node-{i}")).count())
        .unwrap_or(0);
    cluster.nodes[busiest].kill();
    println!(
        "killed node-{busiest}, which led {:?}",
        now.iter().filter(|(_, l)| *l == format!("node-{busiest}")).collect::<Vec<_>>()
    );
    let half = i64::try_from(tenants / 2).unwrap_or(1).max(1);
    eventually("half the tenants ACTIVE on two nodes", Duration::from_secs(300), || async {
        (count(&stack, "ACTIVE").await? >= half).then_some(())
    })
    .await
    .with_context(|| stack.logs())?;
    cluster.nodes[busiest].restart().await?;
    cluster.wait_for_meta_leader(Duration::from_secs(30)).await?;

    // Every stream's leader moved while tenants are still provisioned.
    let before_move = leaders(&broker).await?;
    for (name, _) in &before_move {
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}");
        let answer = eventually(&format!("{name}'s leader to step down"), Duration::from_secs(30), || async {
            broker.client.request(subject.clone(), Default::default()).await.ok()
        })
        .await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        println!("{name}: step down {answer}");
    }
    let moved = eventually("new stream leaders", Duration::from_secs(30), || async {
        let after = leaders_now(&broker).await.ok()?;
        let changed = after.iter().zip(&before_move).filter(|((_, a), (_, b))| !a.is_empty() && a != b).count();
        (changed > 0 && after.iter().all(|(_, l)| !l.is_empty())).then_some(after)
    })
    .await?;
    println!("leaders before the move {before_move:?}, after {moved:?}");

    let finished = eventually("every tenant ACTIVE or FAILED", Duration::from_secs(600), || async {
        let mut control = stack.control().await.ok()?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenants WHERE status NOT IN ('ACTIVE', 'FAILED') AND key LIKE 'r3-%'",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE key LIKE 'r3-%'")
            .fetch_one(&mut control)
            .await
            .ok()?;
        (open == 0 && all == i64::try_from(tenants).ok()?).then_some(())
    })
    .await;
    let mut control = stack.control().await?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    let replica_logs: String = replicas.iter().map(|p| p.output()).collect();
    finished.with_context(|| format!("statuses: {statuses:?}\n{}\n{replica_logs}", stack.logs()))?;
    println!("cluster outcome: {statuses:?}");
    // One tenant and one provisioning saga per key: nothing twice.
    let doubled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.key, count(s.id) FROM tenants t LEFT JOIN sagas s ON s.tenant_id = t.id
         WHERE t.key LIKE 'r3-%' GROUP BY t.key HAVING count(DISTINCT t.id) <> 1 OR count(s.id) <> 1",
    )
    .fetch_all(&mut control)
    .await?;
    assert!(doubled.is_empty(), "keys with other than one tenant and one saga: {doubled:?}");
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM resources r JOIN tenants t ON t.id = r.tenant_id
         WHERE t.status = 'FAILED' AND r.deleted_at IS NULL",
    )
    .fetch_one(&mut control)
    .await?;
    assert_eq!(leftovers, 0, "a FAILED tenant kept resources");
    for key in &keys {
        let realm = format!("tenant-{key}");
        if stack.keycloak.realm(&realm).is_some() {
            assert_eq!(stack.keycloak.users(&realm).len(), 1, "{key}: one admin user");
        }
    }
    stack.assert_no_drift().await
}
