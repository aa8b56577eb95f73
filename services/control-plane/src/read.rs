//! The read models the API serves, as queries: a tenant with its
//! resources and its latest saga's per-step progress, a tenant's row,
//! lists of tenants with filters, and a tenant's audit log. The caller names the row type it decodes
//! into (its own view of the columns each query documents), so the SQL
//! lives here, next to the schema it reads, and the API's types stay the
//! API's.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// The columns of a tenant's summary, in every query below.
pub const SUMMARY: &str = "id, key, display_name, status, plan, tier, created_at, updated_at";

/// The tenant, its resources, its latest saga and that saga's steps: one
/// statement, so one round trip to PostgreSQL (on small virtual machines a
/// round trip costs about half a millisecond; four of them were most of
/// the API's tenant endpoint's latency — bench/results/api.md). Columns:
/// [`SUMMARY`], the tenant's own (domains, admin, labels, failure), its
/// lifecycle (`purge_at`, `export_location`, `exported_at`, the tombstone's
/// `deleted_at`, `deleted_by`, `deletion_reason`), the operation at work
/// (`running_operation`, `running_saga_id`: its saga running or
/// compensating, or asked for and not started yet; else NULL), and
/// `resources` (a JSON array) and `saga` (a JSON object with `steps`, or
/// NULL). Add a `WHERE` on `t`.
pub const TENANT_VIEW_SQL: &str =
    "SELECT t.id, t.key, t.display_name, t.status, t.plan, t.tier, t.created_at, t.updated_at,
       t.domains, t.admin_email, t.admin_first_name, t.admin_last_name, t.labels, t.failed_step, t.failure_reason,
       t.purge_at, t.export_location, t.exported_at, t.deleted_at, t.deleted_by, t.deletion_reason,
       w.operation AS running_operation, w.saga_id AS running_saga_id,
       (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.id), '[]'::jsonb)
        FROM (SELECT id, step, kind, external_id, metadata, created_at, deleted_at
              FROM resources WHERE tenant_id = t.id) r) AS resources,
       (SELECT to_jsonb(s) || jsonb_build_object('steps', (
                   SELECT coalesce(jsonb_agg(to_jsonb(st) ORDER BY st.position), '[]'::jsonb)
                   FROM (SELECT position, name, state, fatal, attempts, max_attempts, started_at, finished_at,
                                (EXTRACT(EPOCH FROM finished_at - started_at) * 1000)::bigint AS duration_ms,
                                last_error
                         FROM saga_steps WHERE saga_id = s.id) st))
        FROM (SELECT id, operation, state, failed_step, failure_reason, cancel_reason, created_at, finished_at
              FROM sagas WHERE tenant_id = t.id ORDER BY created_at DESC, id LIMIT 1) s) AS saga
FROM tenants t
LEFT JOIN LATERAL (
    SELECT operation, id AS saga_id FROM sagas WHERE tenant_id = t.id AND state IN ('running', 'compensating')
    UNION ALL SELECT operation, saga_id FROM operation_requests WHERE tenant_id = t.id
    LIMIT 1) w ON true";

/// `id_or_key` as a tenant id when it is a UUID, else as a key: a `WHERE`
/// and an `ORDER BY` for one row. A key names its live tenant (any status
/// but DELETED; at most one, `tenants_live_key`), else its latest
/// tombstone: a key can be used again once its tenant is DELETED.
fn by_id_or_key(id_or_key: &str, table: &str) -> String {
    if Uuid::parse_str(id_or_key).is_ok() {
        format!("{table}id = $1::uuid")
    } else {
        format!(
            "{table}key = $1 ORDER BY {table}status = 'DELETED', {table}deleted_at DESC NULLS FIRST, {table}id LIMIT 1"
        )
    }
}

/// The tenant `id_or_key` (an id or a key) as [`TENANT_VIEW_SQL`] reads it.
pub async fn tenant_view<T>(pool: &PgPool, id_or_key: &str) -> sqlx::Result<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let sql = format!("{TENANT_VIEW_SQL} WHERE {}", by_id_or_key(id_or_key, "t."));
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(pool).await
}

/// The tenant `id_or_key`'s row: [`SUMMARY`], domains, admin_email,
/// admin_first_name, admin_last_name, labels, failed_step, failure_reason.
pub async fn tenant_row<T>(pool: &PgPool, id_or_key: &str) -> sqlx::Result<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let sql = format!(
        "SELECT {SUMMARY}, domains, admin_email, admin_first_name, admin_last_name, labels, failed_step,
                failure_reason
         FROM tenants WHERE {}",
        by_id_or_key(id_or_key, "")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(pool).await
}

/// Which tenants a list shows: all filters optional, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct TenantFilter<'a> {
    /// Only tenants in this status (as spelled by `TenantStatus`).
    pub status: Option<&'a str>,
    pub plan: Option<&'a str>,
    /// Only this tenant: what a tenant-scoped token of the API may list.
    pub tenant: Option<Uuid>,
    /// Only tenants after this `(created_at, id)`: the list's cursor.
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

/// The tenants `filter` selects, as [`SUMMARY`] rows, oldest first.
pub async fn tenants<T>(pool: &PgPool, filter: TenantFilter<'_>) -> sqlx::Result<Vec<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY} FROM tenants
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR plan = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
           AND ($6::uuid IS NULL OR id = $6)
         ORDER BY created_at, id LIMIT $5"
    )))
    .bind(filter.status)
    .bind(filter.plan)
    .bind(filter.after.map(|(t, _)| t))
    .bind(filter.after.map(|(_, id)| id))
    .bind(filter.limit)
    .bind(filter.tenant)
    .fetch_all(pool)
    .await
}

/// One entry of a tenant's audit log: who did what, when, in which saga.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: OffsetDateTime,
    pub actor: String,
    pub saga_id: Option<Uuid>,
    pub action: String,
    pub detail: serde_json::Value,
}

/// Tenant `tenant_id`'s audit log, oldest first, `limit` entries after the
/// entry `after_id` (a page's last id: the next page's cursor).
pub async fn audit(pool: &PgPool, tenant_id: Uuid, after_id: Option<i64>, limit: i64) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as(
        "SELECT id, at, actor, saga_id, action, detail FROM audit_log
         WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(after_id.unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use crate::SagaState;

    /// The view's operation at work is a saga in a state at work, as
    /// `sagas_one_at_work` counts them.
    #[test]
    fn the_view_names_the_saga_states_at_work() {
        let sql = super::TENANT_VIEW_SQL;
        let at = sql.find("state IN (").unwrap() + "state IN (".len();
        let named: Vec<SagaState> = sql[at..at + sql[at..].find(')').unwrap()]
            .split(',')
            .map(|v| v.trim().trim_matches('\'').parse().unwrap())
            .collect();
        let at_work: Vec<SagaState> = SagaState::ALL.iter().copied().filter(|s| s.is_at_work()).collect();
        assert_eq!(named, at_work);
    }
}
