//! Two tenant-data servers under the whole stack (issue 28,
//! docs/tenant-data.md): new tenants spread by fewest tenants, a pin by
//! plan or by label lands its tenants on the pinned server, a drained
//! server takes no new tenant, and every later operation — suspend,
//! resume, offboarding with its export, the purge — acts on the server the
//! tenant's resources name, drained or not, with a database worker
//! restarted in between (nothing cached). Each tenant's data is looked for
//! on both servers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{GATEWAY, Operation, Stack, TENANT_SERVERS, uuid_like};
use serde_json::json;

use crate::lifecycle::provision;

/// Where tenant `key` is: the server its resources name. Its data (role,
/// schema, database or pooled row) is there and not on the other; a
/// bridge or silo tenant's welcome mail names that server's port.
async fn placed(stack: &Stack, key: &str) -> Result<String> {
    let server = stack.recorded_server(key).await?;
    for (name, url) in stack.tenant_data_servers() {
        let objects = stack.tenant_data_objects(&url, key).await?;
        if name == server {
            anyhow::ensure!(!objects.is_empty(), "{key}: nothing of it on {name}, the server its resources name");
        } else {
            anyhow::ensure!(objects.is_empty(), "{key} is on {server}, yet {name} holds {objects:?}");
        }
    }
    if let Ok(login) = stack.tenant_login(key) {
        let port = stack.tenant_server_port(&server)?;
        anyhow::ensure!(login.port == port, "{key}: the welcome mail names port {}, {server} is {port}", login.port);
    }
    Ok(server)
}

/// `POST /v1/tenants` with `labels`, waited for until ACTIVE.
async fn create_labelled(stack: &Stack, key: &str, plan: &str, labels: serde_json::Value) -> Result<()> {
    let body = json!({
        "key": key, "display_name": format!("{key} Inc."), "plan": plan, "labels": labels,
        "admin": { "email": format!("admin@{key}.test"), "first_name": "Ada", "last_name": "Lovelace" },
        "domains": [format!("{key}.example.com")],
    });
    let answer = stack.call("POST", "/v1/tenants", Some(body), Some(&uuid_like())).await?;
    anyhow::ensure!(answer.status == 202, "{key}: {answer}");
    stack.wait_status(key, "ACTIVE", Duration::from_secs(60)).await?;
    Ok(())
}

/// Whether tenant `key`'s own role may log in on tenant-data server `server`.
async fn can_login(stack: &Stack, server: &str, key: &str) -> Result<bool> {
    let role = landlord_contract::TenantKey::parse(key)?.backend_names().role;
    let mut data = stack.tenant_data_on(server).await?;
    let found: Option<bool> = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&role)
        .fetch_optional(&mut data)
        .await?;
    found.with_context(|| format!("no role {role} on {server}"))
}

#[tokio::test]
async fn two_tenant_data_servers_place_pin_drain_and_serve_every_later_operation() -> Result<()> {
    let mut stack = Stack::servers().await?;
    stack.add_tenant_data_server().await?;
    stack.start_services().await?;
    stack.start_service(GATEWAY).await?;
    let [first, second] = TENANT_SERVERS;

    // Fewest tenants: four at once, every tier, placed under the lock: two
    // on each server.
    let spread = [("spreada", "standard"), ("spreadb", "standard"), ("spreadc", "enterprise"), ("spreadd", "free")];
    provision(&stack, &spread).await?;
    let mut on: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (key, _) in spread {
        on.entry(placed(&stack, key).await?).or_default().push(key);
    }
    assert_eq!(on.values().map(Vec::len).collect::<Vec<_>>(), [2, 2], "two on each: {on:?}");
    assert_eq!((stack.placed_on(first).await?, stack.placed_on(second).await?), (2, 2));

    // Pins: the second server kept for plan enterprise and label
    // region=eu. On a tie the first listed wins, so landing on the second
    // is the pin's doing; a tenant no pin matches goes to the first.
    stack.configure_tenant_server(second, json!({"plans": ["enterprise"], "labels": {"region": "eu"}}))?;
    stack.restart_service("database").await?;
    provision(&stack, &[("pinsilo", "enterprise")]).await?;
    create_labelled(&stack, "pineu", "standard", json!({"region": "eu"})).await?;
    provision(&stack, &[("pinplain", "standard")]).await?;
    assert_eq!(placed(&stack, "pinsilo").await?, second, "plan enterprise is pinned to {second}");
    assert_eq!(placed(&stack, "pineu").await?, second, "label region=eu is pinned to {second}");
    assert_eq!(placed(&stack, "pinplain").await?, first, "{second} takes only its pinned tenants");
    assert_eq!((stack.placed_on(first).await?, stack.placed_on(second).await?), (3, 4));

    // Drained: the first server, with the fewest tenants, takes no new
    // tenant; the second (its pins gone) takes them all, every tier.
    stack.configure_tenant_server(first, json!({"drain": true}))?;
    stack.configure_tenant_server(second, json!({"plans": null, "labels": null}))?;
    stack.restart_service("database").await?;
    let after = [("draineda", "standard"), ("drainedb", "enterprise"), ("drainedc", "free")];
    provision(&stack, &after).await?;
    for (key, _) in after {
        assert_eq!(placed(&stack, key).await?, second, "{key}: {first} is drained");
    }
    assert_eq!((stack.placed_on(first).await?, stack.placed_on(second).await?), (3, 7));

    // Later operations find each tenant's server, with a worker that has
    // just been restarted (nothing cached): every tenant of the drained
    // server, and one of each tier on the other.
    let mut later: Vec<&str> = on.get(first).into_iter().flatten().copied().collect();
    later.extend(["pinplain", "pinsilo", "pineu", "drainedc"]);
    let bridges = ["pinplain", "pineu"];
    for key in bridges {
        assert!(stack.tenant_login(key)?.connect().await.is_ok(), "{key} logs in");
    }
    let suspended = futures_util::future::join_all(later.iter().map(|key| stack.suspend(key))).await;
    for end in suspended {
        let end = end?;
        assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "SUSPENDED"), "{end:?}");
    }
    for key in bridges {
        let server = stack.recorded_server(key).await?;
        assert!(!can_login(&stack, &server, key).await?, "{key}: its role on {server} is suspended");
        assert!(stack.tenant_login(key)?.connect().await.is_err(), "{key} cannot log in");
    }
    let resumed = futures_util::future::join_all(later.iter().map(|key| stack.resume(key))).await;
    for end in resumed {
        let end = end?;
        assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "ACTIVE"), "{end:?}");
    }
    for key in bridges {
        let server = stack.recorded_server(key).await?;
        assert!(can_login(&stack, &server, key).await?, "{key}: its role on {server} is back");
        assert!(stack.tenant_login(key)?.connect().await.is_ok(), "{key} logs in again");
    }
    stack.assert_no_drift().await?;

    // Offboarded with an export and a short grace period, then purged by
    // the timer: every tenant's data leaves its server, the drained one
    // ends holding no tenant (it could now be taken out of the list).
    let all: Vec<&str> =
        spread.iter().chain(&after).map(|(key, _)| *key).chain(["pinsilo", "pineu", "pinplain"]).collect();
    let offboard = Operation::offboard(2);
    for batch in all.chunks(5) {
        let offboarded = batch.iter().map(|key| stack.operate(key, &offboard));
        for end in futures_util::future::join_all(offboarded).await {
            let end = end?;
            // Its status may already be the purge's (the grace period is short).
            assert_eq!(end.state, "succeeded", "{end:?}");
            let location = end.tenant.export_location.clone().with_context(|| format!("no export: {end:?}"))?;
            assert_eq!(stack.archive_manifest(&location)?["verified"], true, "{}: its export", end.tenant.key);
        }
    }
    for key in &all {
        stack.wait_status(key, "DELETED", Duration::from_secs(90)).await?;
        let left = stack.backend_objects(key).await?;
        assert!(left.is_empty(), "{key}: every backend object is gone: {left:?}");
    }
    assert_eq!((stack.placed_on(first).await?, stack.placed_on(second).await?), (0, 0), "no placement left");
    stack.assert_no_drift().await
}
