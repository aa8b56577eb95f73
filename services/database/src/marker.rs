//! Ownership markers: which tenant, and which saga, made (or last adopted)
//! each object the worker creates — the fencing of issue 22
//! (`notes/fencing.md`).
//!
//! Markers live in the table `landlord_admin.markers` of the tenant-data
//! database, in a schema that grants nothing to PUBLIC: only the worker's
//! own (admin) role reads them. PostgreSQL's catalogs — and with them every
//! COMMENT — are readable by every role that can connect, so a marker there
//! would tell each tenant the ids of all the others (issue 23, item 9).
//! Roles and silo databases are cluster-wide objects; their markers live in
//! the same table, in the worker's own database.
//!
//! Objects made before this table existed carry the older marker, a
//! COMMENT `landlord:tenant=<tenant id>` without a saga: it is still read
//! (as "this tenant, saga unknown", which any saga of the tenant may undo,
//! as before), and dropped when a saga adopts the object and writes its row.
//!
//! Every forward command and compensation of a tenant runs under one
//! advisory lock per tenant name ([`lock_tenant`], [`lock_tenant_session`]),
//! so a late compensation and a retry's forward command never interleave
//! between a marker's look-up and what is done because of it.

use landlord_runtime::StepFailure;
use sqlx::PgConnection;

use crate::catalog::literal;
use crate::failure::classify;
use crate::{Tenant, exec};

/// Creates the marker table; idempotent, run by the start-up hardening.
pub const MARKERS_SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS landlord_admin;
REVOKE ALL ON SCHEMA landlord_admin FROM PUBLIC;
CREATE TABLE IF NOT EXISTS landlord_admin.markers (
    kind text NOT NULL,
    name text NOT NULL,
    tenant_id text NOT NULL,
    saga_id text NOT NULL,
    detail text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
REVOKE ALL ON landlord_admin.markers FROM PUBLIC;
CREATE INDEX IF NOT EXISTS markers_tenant ON landlord_admin.markers (tenant_id);
";

/// The kind of the marker that says a tenant was placed on this server
/// (named by the tenant id; written before anything else of the tenant's,
/// see [`crate::placement`]).
pub const PLACEMENT: &str = "landlord.placement";

/// The prefix of the older COMMENT marker.
pub const LEGACY_PREFIX: &str = "landlord:tenant=";

/// Who an object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub tenant_id: String,
    /// `None`: an older COMMENT marker, which names no saga.
    pub saga_id: Option<String>,
}

impl Marker {
    /// The tenant id an older COMMENT marker names, if `comment` is one.
    pub fn from_comment(comment: Option<&str>) -> Option<Self> {
        let first = comment?.split_whitespace().next()?;
        let tenant_id = first.strip_prefix(LEGACY_PREFIX)?;
        Some(Self { tenant_id: tenant_id.to_owned(), saga_id: None })
    }

    pub fn is_legacy(&self) -> bool {
        self.saga_id.is_none()
    }
}

/// What a compensation may do with an object, by its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not there: nothing to do.
    Absent,
    /// This tenant's, made or last adopted by this saga (or marked before
    /// sagas were recorded): undo it.
    Mine,
    /// Leave it; the note says why (`<kind> <name> belongs to …`).
    Fenced(String),
}

/// The verdict on an existing object with `marker` (or none) for a
/// compensation of `tenant`'s saga.
pub fn judge(kind: &str, name: &str, marker: Option<&Marker>, tenant: &Tenant) -> Verdict {
    match marker {
        Some(m) if m.tenant_id == tenant.id => match &m.saga_id {
            None => Verdict::Mine,
            Some(saga) if *saga == tenant.saga => Verdict::Mine,
            Some(saga) => Verdict::Fenced(format!("{kind} {name} belongs to saga {saga}")),
        },
        Some(m) => Verdict::Fenced(format!("{kind} {name} belongs to tenant {}", m.tenant_id)),
        None => Verdict::Fenced(format!("{kind} {name} carries no marker of Landlord's")),
    }
}

/// Serializes, inside the caller's transaction, everything done to the
/// objects of `tenant`'s names (ended by commit or rollback).
pub async fn lock_tenant(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('landlord.database'), hashtext($1))")
        .bind(&tenant.names.role)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("waiting for the tenant's lock", &e))
}

/// The same lock as [`lock_tenant`], held by the session until
/// [`unlock_tenant_session`] or the connection's end: for work that cannot
/// run in one transaction (CREATE and DROP DATABASE). Use it only on a
/// connection of its own, never a pooled one, so that a lock left behind
/// ends with the connection.
pub async fn lock_tenant_session(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    sqlx::query("SELECT pg_advisory_lock(hashtext('landlord.database'), hashtext($1))")
        .bind(&tenant.names.role)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("waiting for the tenant's lock", &e))
}

pub async fn unlock_tenant_session(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext('landlord.database'), hashtext($1))")
        .bind(&tenant.names.role)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("releasing the tenant's lock", &e))
}

/// The marker of `kind` `name`: its row, else the older COMMENT marker in
/// `comment` (the object's comment, when it has one).
pub async fn read(
    conn: &mut PgConnection,
    kind: &str,
    name: &str,
    comment: Option<&str>,
) -> Result<Option<Marker>, StepFailure> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT tenant_id, saga_id FROM landlord_admin.markers WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_optional(conn)
            .await
            .map_err(|e| classify("reading the marker", &e))?;
    Ok(match row {
        Some((tenant_id, saga_id)) => Some(Marker { tenant_id, saga_id: Some(saga_id) }),
        None => Marker::from_comment(comment),
    })
}

/// The statement that marks `kind` `name` as `tenant`'s, made or adopted by
/// its saga (insert, or rewrite tenant, saga and detail). A statement of its
/// own, spliced with quoted literals, so bench-database's floor runs it too.
pub fn write_sql(kind: &str, name: &str, tenant: &Tenant, detail: Option<&str>) -> Result<String, StepFailure> {
    let detail = detail.map_or(Ok("NULL".to_owned()), literal)?;
    Ok(format!(
        "INSERT INTO landlord_admin.markers (kind, name, tenant_id, saga_id, detail) VALUES ({}, {}, {}, {}, {detail}) \
         ON CONFLICT (kind, name) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, saga_id = EXCLUDED.saga_id, \
         detail = COALESCE(EXCLUDED.detail, landlord_admin.markers.detail), updated_at = now()",
        literal(kind)?,
        literal(name)?,
        literal(&tenant.id)?,
        literal(&tenant.saga)?,
    ))
}

pub async fn write(
    conn: &mut PgConnection,
    kind: &str,
    name: &str,
    tenant: &Tenant,
    detail: Option<&str>,
) -> Result<(), StepFailure> {
    exec(conn, "marking the object", write_sql(kind, name, tenant, detail)?).await
}

/// Forgets the marker of an object that is gone.
pub async fn remove(conn: &mut PgConnection, kind: &str, name: &str) -> Result<(), StepFailure> {
    sqlx::query("DELETE FROM landlord_admin.markers WHERE kind = $1 AND name = $2")
        .bind(kind)
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("removing the marker", &e))
}

/// Whether any marker of this server names the tenant: it was placed here.
pub async fn holds_tenant(conn: &mut PgConnection, tenant_id: &str) -> Result<bool, StepFailure> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM landlord_admin.markers WHERE tenant_id = $1)")
        .bind(tenant_id)
        .fetch_one(conn)
        .await
        .map_err(|e| classify("looking up the tenant's markers", &e))
}

/// How many tenants this server holds: the tenants its markers name.
pub async fn tenant_count(conn: &mut PgConnection) -> Result<i64, StepFailure> {
    sqlx::query_scalar("SELECT count(DISTINCT tenant_id) FROM landlord_admin.markers")
        .fetch_one(conn)
        .await
        .map_err(|e| classify("counting the server's tenants", &e))
}

/// Forgets the tenant's placement once nothing else of it is marked here
/// (after a purge, or a compensation that undid everything).
pub async fn forget_placement(conn: &mut PgConnection, tenant_id: &str) -> Result<(), StepFailure> {
    sqlx::query(
        "DELETE FROM landlord_admin.markers WHERE kind = $2 AND name = $1
         AND NOT EXISTS (SELECT FROM landlord_admin.markers WHERE tenant_id = $1 AND kind <> $2)",
    )
    .bind(tenant_id)
    .bind(PLACEMENT)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(|e| classify("forgetting the tenant's placement", &e))
}

/// The tenants placed on this server with nothing else of theirs marked
/// here (a provision that stopped after placing, and whose saga never
/// compensated): for the orphan audit. Each counts against the capacity
/// until removed with [`forget_placement`].
pub async fn lone_placements(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p.tenant_id FROM landlord_admin.markers p WHERE p.kind = $1
         AND NOT EXISTS (SELECT FROM landlord_admin.markers m WHERE m.tenant_id = p.tenant_id AND m.kind <> $1)
         ORDER BY 1",
    )
    .bind(PLACEMENT)
    .fetch_all(conn)
    .await
}

/// A marked object, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The resource kind (`postgres.role`, …).
    pub kind: String,
    pub name: String,
    pub tenant_id: String,
    /// `None` for an older COMMENT marker.
    pub saga_id: Option<String>,
}

/// Every object the tenant-data database says is Landlord's: the marker
/// rows whose object still exists, and objects that carry only an older
/// COMMENT marker. For the orphan audit. Pooled tenants are rows of
/// `landlord_pooled.tenants` and are not listed here.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Marked>, sqlx::Error> {
    const ROWS: &str = "SELECT m.kind, m.name, m.tenant_id, m.saga_id FROM landlord_admin.markers m
        WHERE (m.kind = 'postgres.role' AND EXISTS (SELECT FROM pg_roles WHERE rolname = m.name))
           OR (m.kind = 'postgres.schema' AND EXISTS (SELECT FROM pg_namespace WHERE nspname = m.name))
           OR (m.kind = 'postgres.database' AND EXISTS (SELECT FROM pg_database WHERE datname = m.name))";
    const COMMENTS: &str = "SELECT kind, name, substr(split_part(comment, ' ', 1), length($1) + 1), NULL::text FROM (
            SELECT 'postgres.schema' AS kind, nspname::text AS name, obj_description(oid, 'pg_namespace') AS comment
            FROM pg_namespace
            UNION ALL SELECT 'postgres.role', rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles
            UNION ALL SELECT 'postgres.database', datname::text, shobj_description(oid, 'pg_database') FROM pg_database
        ) c WHERE starts_with(comment, $1)";
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('landlord_admin.markers')::text").fetch_one(&mut *conn).await?;
    // A server the worker has not prepared yet has older markers only.
    let sql = match table {
        Some(_) => format!(
            "{ROWS} UNION ALL {COMMENTS} \
             AND NOT EXISTS (SELECT FROM landlord_admin.markers m WHERE m.kind = c.kind AND m.name = c.name)"
        ),
        None => COMMENTS.to_owned(),
    };
    let rows: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(LEGACY_PREFIX).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|(kind, name, tenant_id, saga_id)| Marked { kind, name, tenant_id, saga_id }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_comment_markers_name_a_tenant_and_no_saga() {
        let id = "0b6e3b5e-7d38-4c7c-9b62-4c51f0c1a111";
        let marker = Marker::from_comment(Some(&format!("{LEGACY_PREFIX}{id} seed=default@1"))).unwrap();
        assert_eq!(marker, Marker { tenant_id: id.into(), saga_id: None });
        assert!(marker.is_legacy());
        assert_eq!(Marker::from_comment(Some("made by hand")), None);
        assert_eq!(Marker::from_comment(None), None);
    }
}
