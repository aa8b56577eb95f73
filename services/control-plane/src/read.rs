//! The read models the API serves, as queries: a tenant with its
//! resources and its latest saga's per-step progress, a tenant's row, and
//! lists of tenants with filters. The caller names the row type it decodes
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
/// [`SUMMARY`], the tenant's own (domains, admin, labels, failure), and
/// `resources` (a JSON array) and `saga` (a JSON object with `steps`, or
/// NULL). Add a `WHERE` on `t`.
pub const TENANT_VIEW_SQL: &str =
    "SELECT t.id, t.key, t.display_name, t.status, t.plan, t.tier, t.created_at, t.updated_at,
       t.domains, t.admin_email, t.admin_first_name, t.admin_last_name, t.labels, t.failed_step, t.failure_reason,
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
FROM tenants t";

/// `id_or_key` as a tenant id when it is a UUID, else as a key.
fn by_id_or_key(id_or_key: &str, table: &str) -> String {
    if Uuid::parse_str(id_or_key).is_ok() { format!("{table}id = $1::uuid") } else { format!("{table}key = $1") }
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
         ORDER BY created_at, id LIMIT $5"
    )))
    .bind(filter.status)
    .bind(filter.plan)
    .bind(filter.after.map(|(t, _)| t))
    .bind(filter.after.map(|(_, id)| id))
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}
