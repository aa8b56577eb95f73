//! The orphan audit: drift in both directions, only marked orphans removed.

use anyhow::Result;
use landlord_e2e::Stack;

use crate::support::{count, outcome};

#[tokio::test]
async fn the_audit_reports_drift_both_ways_and_removes_only_marked_orphans() -> Result<()> {
    let stack = Stack::start().await?;
    for (key, plan) in [("kept", "standard"), ("lost", "standard"), ("pool", "free"), ("gone", "enterprise")] {
        let (ok, text) = outcome(&stack.request(key, plan).await?);
        assert!(ok, "{key}: {text}");
    }
    stack.assert_no_drift().await?;
    // Drift: the control plane forgets some of "lost"'s and "pool"'s
    // resources (as a crash between the backend and the record would
    // leave them), and "gone"'s realm disappears behind Landlord's back.
    let mut control = stack.control().await?;
    sqlx::query(
        "UPDATE resources SET deleted_at = now() WHERE tenant_id = (SELECT id FROM tenants WHERE key = $1)
         AND kind IN ('s3.bucket', 'postgres.schema', 'postgres.role', 'keycloak.realm')",
    )
    .bind("lost")
    .execute(&mut control)
    .await?;
    sqlx::query(
        "UPDATE resources SET deleted_at = now() WHERE tenant_id = (SELECT id FROM tenants WHERE key = $1)
         AND kind IN ('s3.prefix', 'keycloak.organization', 'postgres.pooled_tenant')",
    )
    .bind("pool")
    .execute(&mut control)
    .await?;
    let (_, gone_status) = stack.tenant("gone").await?;
    assert_eq!(gone_status, "ACTIVE");
    stack.keycloak.delete_realm("tenant-gone");
    // An unmarked bucket and schema of someone else's are none of the audit's business.
    std::fs::create_dir_all(stack.s3.data_dir().join("not-landlords"))?;
    let mut data = stack.tenant_data().await?;
    sqlx::raw_sql("CREATE SCHEMA tenant_unmarked").execute(&mut data).await?;

    let (clean, report) = stack.audit(false).await?;
    assert!(!clean, "{report}");
    for line in [
        "orphan   s3.bucket               landlord-lost",
        "orphan   postgres.schema         tenant_lost",
        "orphan   postgres.role           tenant_lost",
        "orphan   keycloak.realm          tenant-lost",
        "orphan   s3.prefix               landlord-pooled/tenants/pool/",
        "orphan   keycloak.organization",
        "orphan   postgres.pooled_tenant",
        "missing  keycloak.realm          tenant-gone",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    assert!(!report.contains("not-landlords") && !report.contains("tenant_unmarked"), "{report}");
    assert!(!report.contains("kept"), "the healthy tenant is not drift: {report}");

    // "lost" and "pool" are still ACTIVE, made so by the sagas their
    // objects' markers name: those objects are the live tenants', whatever
    // the resources table says, and the removal leaves them.
    let (clean, skipped) = stack.audit(true).await?;
    assert!(!clean, "{skipped}");
    assert_eq!(skipped.matches("skipped: tenant ACTIVE with saga").count(), 7, "{skipped}");
    assert!(!skipped.contains("removed"), "{skipped}");
    assert!(stack.keycloak.realm("tenant-lost").is_some());
    assert!(stack.buckets()?.contains(&"landlord-lost".to_owned()));
    // Now make them what a crash leaves: the sagas that made these objects
    // ended FAILED and their compensations never reached the backends.
    sqlx::query(
        "UPDATE sagas SET state = 'failed', finished_at = now() WHERE tenant_id IN
         (SELECT id FROM tenants WHERE key IN ('lost', 'pool'))",
    )
    .execute(&mut control)
    .await?;
    sqlx::query("UPDATE tenants SET status = 'FAILED' WHERE key IN ('lost', 'pool')").execute(&mut control).await?;

    let (_, removal) = stack.audit(true).await?;
    assert_eq!(removal.matches("removed").count(), 7, "{removal}");
    assert!(!removal.contains("NOT removed"), "{removal}");
    assert!(stack.keycloak.realm("tenant-lost").is_none());
    assert!(!stack.buckets()?.contains(&"landlord-lost".to_owned()));
    assert!(stack.buckets()?.contains(&"not-landlords".to_owned()), "unmarked: left alone");
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_lost").await?, 0);
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_unmarked").await?, 1);
    assert!(stack.keycloak.realm("tenant-kept").is_some(), "the healthy tenant is untouched");
    // What is missing cannot be removed: it stays reported.
    let (clean, after) = stack.audit(false).await?;
    assert!(!clean && after.contains("missing  keycloak.realm          tenant-gone"), "{after}");
    assert!(!after.contains("orphan"), "{after}");
    Ok(())
}
