//! What the database tests share: a fresh migrated database, the shipped
//! plans, tenants inserted as a saga would have left them.

use landlord_control_plane::operations::{OperationRequest, TenantPatch};
use landlord_control_plane::{Operation, Plans, TenantStatus};
use landlord_testkit::Postgres;
use sqlx::PgPool;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// A database of its own, migrated.
pub(crate) async fn database() -> anyhow::Result<PgPool> {
    let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&database.url).await?;
    landlord_control_plane::migrator().run(&pool).await?;
    Ok(pool)
}

pub(crate) fn plans() -> anyhow::Result<Plans> {
    Plans::parse(include_str!("../../../../deploy/plans.toml")).map_err(anyhow::Error::msg)
}

/// A tenant as a saga leaves it: `key` on plan standard (bridge), in
/// `status`, with `domains`.
pub(crate) async fn tenant(pool: &PgPool, key: &str, status: TenantStatus, domains: &[&str]) -> anyhow::Result<Uuid> {
    let id = Uuid::new_v4();
    let domains: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
    sqlx::query(
        "INSERT INTO tenants (id, key, display_name, plan, tier, status, domains, admin_email, admin_first_name,
                              admin_last_name, labels, idempotency_id)
         VALUES ($1, $2, $3, 'standard', 'bridge', $4, $5, $6, 'Ada', 'Lovelace', $7, $8)",
    )
    .bind(id)
    .bind(key)
    .bind(format!("Tenant {key}"))
    .bind(status)
    .bind(&domains)
    .bind(format!("ops@{key}.test"))
    .bind(Json(serde_json::json!({"team": "a"})))
    .bind(format!("test:{id}"))
    .execute(pool)
    .await?;
    Ok(id)
}

/// A saga of `tenant` in `state` (as the orchestrator writes one).
pub(crate) async fn saga(
    pool: &PgPool,
    tenant: Uuid,
    operation: Operation,
    idempotency_id: &str,
    state: &str,
) -> anyhow::Result<Uuid> {
    let id = landlord_control_plane::ids::saga_id(operation, idempotency_id);
    sqlx::query("INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(tenant)
        .bind(operation)
        .bind(idempotency_id)
        .bind(state)
        .execute(pool)
        .await?;
    Ok(id)
}

/// A request for `operation` on `key` by "tester", reason "because".
pub(crate) fn ask(key: &str, operation: Operation, idempotency_id: &str) -> OperationRequest {
    OperationRequest {
        tenant_key: key.to_owned(),
        operation,
        idempotency_id: idempotency_id.to_owned(),
        requested_by: "tester".to_owned(),
        reason: "because".to_owned(),
        patch: None,
        purge_at: (operation == Operation::Offboard).then(|| OffsetDateTime::now_utc() + time::Duration::days(30)),
        export: true,
    }
}

/// An update of `key` with `patch`.
pub(crate) fn update(key: &str, idempotency_id: &str, patch: TenantPatch) -> OperationRequest {
    OperationRequest { patch: Some(patch), ..ask(key, Operation::Update, idempotency_id) }
}

pub(crate) async fn count(pool: &PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}
