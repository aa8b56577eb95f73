//! The read models against a real PostgreSQL: the tenant view's lifecycle
//! columns, lookups by key among tombstones, the audit log's pages.

use landlord_control_plane::operations::request;
use landlord_control_plane::read::{self, AuditEntry};
use landlord_control_plane::{Operation, TenantStatus};
use landlord_testkit::unique_namespace;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{ask, database, plans, saga, tenant};

#[derive(Debug, sqlx::FromRow)]
struct View {
    id: Uuid,
    status: TenantStatus,
    purge_at: Option<OffsetDateTime>,
    export_location: Option<String>,
    exported_at: Option<OffsetDateTime>,
    deleted_at: Option<OffsetDateTime>,
    deleted_by: Option<String>,
    deletion_reason: Option<String>,
    running_operation: Option<String>,
    running_saga_id: Option<Uuid>,
    saga: Option<Json<serde_json::Value>>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    status: TenantStatus,
}

#[tokio::test]
async fn a_key_names_its_live_tenant_else_its_latest_tombstone() {
    let pool = database().await.unwrap();
    let first = tenant(&pool, "acme", TenantStatus::Deleted, &[]).await.unwrap();
    sqlx::query(
        "UPDATE tenants SET deleted_at = now() - interval '2 days', deleted_by = 'ops', deletion_reason = 'churn'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let second = tenant(&pool, "acme", TenantStatus::Deleted, &[]).await.unwrap();
    sqlx::query("UPDATE tenants SET deleted_at = now() - interval '1 day', deleted_by = 'clerk' WHERE id = $1")
        .bind(second)
        .execute(&pool)
        .await
        .unwrap();
    let view: View = read::tenant_view(&pool, "acme").await.unwrap().unwrap();
    assert_eq!((view.id, view.status), (second, TenantStatus::Deleted));
    assert_eq!(view.deleted_by.as_deref(), Some("clerk"));
    assert!(view.deleted_at.is_some());
    let row: Row = read::tenant_row(&pool, "acme").await.unwrap().unwrap();
    assert_eq!(row.id, second);
    // A tombstone is still found by its id.
    let old: View = read::tenant_view(&pool, &first.to_string()).await.unwrap().unwrap();
    assert_eq!((old.id, old.deletion_reason.as_deref()), (first, Some("churn")));

    let live = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let view: View = read::tenant_view(&pool, "acme").await.unwrap().unwrap();
    assert_eq!((view.id, view.status, view.deleted_at), (live, TenantStatus::Active, None));
    let row: Row = read::tenant_row(&pool, "acme").await.unwrap().unwrap();
    assert_eq!((row.id, row.status), (live, TenantStatus::Active));
    assert!(read::tenant_view::<View>(&pool, "nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn the_view_shows_the_lifecycle_and_the_operation_at_work() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let view: View = read::tenant_view(&pool, "acme").await.unwrap().unwrap();
    assert_eq!((view.running_operation, view.running_saga_id, view.purge_at), (None, None, None));
    assert!(view.saga.is_none());

    // Asked for, not started: the request is the operation at work.
    let (requested, _) = request(&pool, &namespace, &plans, ask("acme", Operation::Offboard, "api:k1")).await.unwrap();
    let view: View = read::tenant_view(&pool, "acme").await.unwrap().unwrap();
    assert_eq!(view.running_operation.as_deref(), Some("offboard"));
    assert_eq!(view.running_saga_id, Some(requested.saga_id));

    // Started: its saga is.
    sqlx::query("DELETE FROM operation_requests").execute(&pool).await.unwrap();
    saga(&pool, id, Operation::Offboard, "api:k1", "running").await.unwrap();
    let view: View = read::tenant_view(&pool, &id.to_string()).await.unwrap().unwrap();
    assert_eq!((view.running_operation.as_deref(), view.running_saga_id), (Some("offboard"), Some(requested.saga_id)));
    assert_eq!(view.saga.unwrap().0["operation"], "offboard");

    // Done: nothing at work; the offboarding's results are shown.
    sqlx::query("UPDATE sagas SET state = 'succeeded'").execute(&pool).await.unwrap();
    sqlx::query(
        "UPDATE tenants SET status = 'DELETION_SCHEDULED', purge_at = now() + interval '30 days',
                            export_location = 's3://landlord-archive/acme/x/', exported_at = now()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let view: View = read::tenant_view(&pool, "acme").await.unwrap().unwrap();
    assert_eq!((view.running_operation, view.running_saga_id), (None, None));
    assert_eq!(view.status, TenantStatus::DeletionScheduled);
    assert!(view.purge_at.is_some() && view.exported_at.is_some());
    assert_eq!(view.export_location.as_deref(), Some("s3://landlord-archive/acme/x/"));
}

/// The audit log in pages: oldest first, each page after the last id of
/// the one before, only the tenant's own entries.
#[tokio::test]
async fn the_audit_log_reads_in_pages_after_an_id() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let other = tenant(&pool, "other", TenantStatus::Active, &[]).await.unwrap();
    let (requested, _) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    for (n, tenant) in [id, other, id, id, other].into_iter().enumerate() {
        sqlx::query("INSERT INTO audit_log (actor, tenant_id, action, detail) VALUES ('landlord', $1, $2, '{}')")
            .bind(tenant)
            .bind(format!("step_{n}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let all = read::audit(&pool, id, None, 100).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["suspend_requested", "step_0", "step_2", "step_3"]);
    let first = &all[0];
    assert_eq!((first.actor.as_str(), first.saga_id), ("tester", Some(requested.saga_id)));
    assert_eq!(first.detail["reason"], "because");

    let mut pages: Vec<Vec<AuditEntry>> = Vec::new();
    let mut after = None;
    loop {
        let page = read::audit(&pool, id, after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(pages.concat(), all);
    assert!(read::audit(&pool, Uuid::new_v4(), None, 10).await.unwrap().is_empty());
}
