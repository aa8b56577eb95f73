//! Every tier provisioned, each checked in the backends themselves.

use anyhow::{Context as _, Result};
use landlord_e2e::{SHARED_REALM, Stack};
use serde_json::json;

use crate::support::{count, outcome, posted_password, tenant_id_of};

#[tokio::test]
async fn every_tier_is_provisioned_and_checked_in_each_backend() -> Result<()> {
    let stack = Stack::start().await?;
    let (bridge, silo, pooled) = tokio::join!(
        stack.request("bridgeco", "standard"),
        stack.request("siloco", "enterprise"),
        stack.request("poolco", "free"),
    );
    for (key, output) in [("bridgeco", bridge?), ("siloco", silo?), ("poolco", pooled?)] {
        let (ok, text) = outcome(&output);
        assert!(ok && text.contains("ACTIVE"), "{key}: {text}\n{}", stack.logs());
    }
    let mut data = stack.tenant_data().await?;

    // Bridge: realm, client, admin; schema and role; bucket; the welcome mail.
    let (id, status) = stack.tenant("bridgeco").await?;
    assert_eq!(status, "ACTIVE");
    let realm = stack.keycloak.realm("tenant-bridgeco").context("no realm")?;
    assert_eq!(tenant_id_of(&realm).as_deref(), Some(id.as_str()));
    let client = stack.keycloak.clients("tenant-bridgeco").into_iter().find(|c| c["clientId"] == "bridgeco-app");
    let client = client.context("no client")?;
    assert_eq!(client["publicClient"], true);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["redirectUris"], json!(["https://bridgeco.example.com/*"]));
    let users = stack.keycloak.users("tenant-bridgeco");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "admin@bridgeco.test");
    let schema_owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1")
            .bind("tenant_bridgeco")
            .fetch_one(&mut data)
            .await?;
    assert_eq!(schema_owner, "tenant_bridgeco");
    assert!(stack.buckets()?.contains(&"landlord-bridgeco".to_owned()));
    let password = posted_password(&stack, "tenant-bridgeco")?;
    let mails = stack.smtp.mails_to("admin@bridgeco.test");
    assert_eq!(mails.len(), 1, "one welcome mail");
    assert!(mails[0].decoded().contains(&format!("Temporary password: {password}")), "{}", mails[0].raw);
    for service in landlord_e2e::SERVICES {
        assert!(!stack.log(service).contains(&password), "{service} logged the temporary password");
    }

    // Silo: its own realm and database.
    assert!(stack.keycloak.realm("tenant-siloco").is_some());
    let databases = count(&mut data, "SELECT count(*) FROM pg_database WHERE datname = $1", "tenant_siloco").await?;
    assert_eq!(databases, 1);
    let roles = count(&mut data, "SELECT count(*) FROM pg_roles WHERE rolname = $1", "tenant_siloco").await?;
    assert_eq!(roles, 1);
    assert!(stack.buckets()?.contains(&"landlord-siloco".to_owned()));

    // Pooled: an organization in the shared realm, rows, a prefix.
    let (pooled_id, _) = stack.tenant("poolco").await?;
    assert!(stack.keycloak.realm("tenant-poolco").is_none(), "no realm of its own");
    let orgs = stack.keycloak.organizations(SHARED_REALM);
    let org = orgs.iter().find(|o| o["name"] == "poolco").context("no organization")?;
    assert_eq!(tenant_id_of(org).as_deref(), Some(pooled_id.as_str()));
    let members = stack.keycloak.members(SHARED_REALM, org["id"].as_str().unwrap_or_default());
    assert_eq!(members.len(), 1);
    let rows =
        count(&mut data, "SELECT count(*) FROM landlord_pooled.tenants WHERE tenant_id::text = $1", &pooled_id).await?;
    assert_eq!(rows, 1);
    let prefix = stack.s3.data_dir().join("landlord-pooled").join("tenants").join("poolco");
    assert!(prefix.is_dir(), "no prefix {}", prefix.display());
    assert_eq!(stack.smtp.mails().len(), 3, "a welcome mail each");
    stack.assert_no_drift().await
}
