//! The tenant's role and schema as the catalog knows them, and the
//! statements that create, check and drop them — shared by the bridge tier
//! (in the tenant-data database) and the silo tier (in the tenant's own).
//!
//! Every lookup is by name, through the catalogs' unique indexes, so its cost
//! does not grow with the number of tenants (the benchmark: a GRANT
//! … ON ALL TABLES IN SCHEMA scan took provisioning from 27 to 172 ms at
//! 5,500 schemas; nothing here scans).

use landlord_runtime::StepFailure;
use sqlx::PgConnection;

use crate::failure::{classify, conflict};
use crate::ident::{quote_ident, quote_literal};
use crate::marker::{self, Marker, Verdict};
use crate::secrets::Password;
use crate::seed::Seed;
use crate::{Tenant, exec, kind};

/// An object that exists: its COMMENT (where older markers were kept) and
/// owner.
#[derive(Debug, Clone)]
pub struct Existing {
    pub comment: Option<String>,
    pub owner: String,
}

pub(crate) fn ident(name: &str) -> Result<String, StepFailure> {
    quote_ident(name).map_err(|problem| StepFailure::permanent("invalid_name", problem.to_string()))
}

pub(crate) fn literal(value: &str) -> Result<String, StepFailure> {
    quote_literal(value).map_err(|problem| StepFailure::permanent("invalid_name", problem.to_string()))
}

async fn lookup(
    conn: &mut PgConnection,
    sql: &'static str,
    name: &str,
    what: &str,
) -> Result<Option<Existing>, StepFailure> {
    let row: Option<(Option<String>, String)> =
        sqlx::query_as(sql).bind(name).fetch_optional(conn).await.map_err(|e| classify(what, &e))?;
    Ok(row.map(|(comment, owner)| Existing { comment, owner }))
}

pub async fn role(conn: &mut PgConnection, name: &str) -> Result<Option<Existing>, StepFailure> {
    lookup(
        conn,
        "SELECT shobj_description(oid, 'pg_authid'), rolname::text FROM pg_roles WHERE rolname = $1",
        name,
        "looking up the role",
    )
    .await
}

pub async fn schema(conn: &mut PgConnection, name: &str) -> Result<Option<Existing>, StepFailure> {
    lookup(
        conn,
        "SELECT obj_description(oid, 'pg_namespace'), pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
        name,
        "looking up the schema",
    )
    .await
}

pub async fn database(conn: &mut PgConnection, name: &str) -> Result<Option<Existing>, StepFailure> {
    lookup(
        conn,
        "SELECT shobj_description(oid, 'pg_database'), pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        name,
        "looking up the database",
    )
    .await
}

/// Creates the tenant's login role, marked as made by the tenant's saga,
/// unless it exists; an existing role must carry the tenant's marker, and
/// is adopted: its marker names this saga from now on. Returns whether it
/// was created. Runs under the tenant's lock ([`marker::lock_tenant`]).
pub async fn ensure_role(
    conn: &mut PgConnection,
    tenant: &Tenant,
    password: &Password,
    connection_limit: i64,
) -> Result<bool, StepFailure> {
    let names = &tenant.names;
    if let Some(existing) = role(conn, &names.role).await? {
        let found = marker::read(conn, kind::ROLE, &names.role, existing.comment.as_deref()).await?;
        if found.as_ref().is_none_or(|m| m.tenant_id != tenant.id) {
            return Err(conflict("role", &names.role, &tenant.id, found.as_ref()));
        }
        marker::write(conn, kind::ROLE, &names.role, tenant, None).await?;
        if found.is_some_and(|m| m.is_legacy()) {
            exec(conn, "dropping the older marker", format!("COMMENT ON ROLE {} IS NULL", ident(&names.role)?)).await?;
        }
        join_role(conn, &ident(&names.role)?).await?;
        return Ok(false);
    }
    // The verifier, not the password, goes into the statement.
    let verifier = password.scram_verifier().map_err(crate::failure::from_secret)?;
    for (what, sql) in role_statements(tenant, &verifier, connection_limit)? {
        exec(conn, what, sql).await?;
    }
    Ok(true)
}

/// The statements that make the tenant's login role, in order, each with
/// what it does (for error messages): create it with `verifier` (a SCRAM
/// verifier, never a password), mark it (a row in the marker table, in the
/// same transaction), set its `search_path`, and make the provisioning role
/// a member. Run by [`ensure_role`] after its
/// look-up, and by bench-database's floor as they are.
pub fn role_statements(
    tenant: &Tenant,
    verifier: &str,
    connection_limit: i64,
) -> Result<Vec<(&'static str, String)>, StepFailure> {
    let names = &tenant.names;
    let role = ident(&names.role)?;
    Ok(vec![
        (
            "creating the role",
            format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS \
                 CONNECTION LIMIT {connection_limit} PASSWORD {}",
                literal(verifier)?
            ),
        ),
        ("marking the role", marker::write_sql(kind::ROLE, &names.role, tenant, None)?),
        ("setting the role's search_path", format!("ALTER ROLE {role} SET search_path = {}", ident(&names.schema)?)),
        (JOIN_ROLE, join_role_sql(&role)),
    ])
}

const JOIN_ROLE: &str = "joining the tenant's role";

fn join_role_sql(role: &str) -> String {
    format!("GRANT {role} TO CURRENT_USER")
}

/// Makes the provisioning role a member of the tenant's role: creating a
/// schema or database owned by it, and seeding as it, need that unless the
/// provisioning role is a superuser (PostgreSQL 15 gives a CREATEROLE role
/// no membership in the roles it creates). Granting it again is a no-op.
async fn join_role(conn: &mut PgConnection, role: &str) -> Result<(), StepFailure> {
    exec(conn, JOIN_ROLE, join_role_sql(role)).await
}

/// Where a schema's marker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMark {
    /// A row in the marker table of the same database (bridge).
    Row,
    /// None: the schema is inside the tenant's own database, which is
    /// marked (silo); a schema there is the tenant's if its role owns it.
    Database,
}

/// Creates the tenant's schema, owned by its role, and applies `seed` in
/// it as that role — all inside the caller's transaction — then verifies.
/// An existing schema must belong to the role and (bridge) carry the
/// tenant's marker; it is adopted (its marker names this saga).
pub async fn ensure_schema(
    conn: &mut PgConnection,
    tenant: &Tenant,
    seed: &Seed,
    mark: SchemaMark,
) -> Result<(), StepFailure> {
    let names = &tenant.names;
    if let Some(existing) = schema(conn, &names.schema).await? {
        let legacy = Marker::from_comment(existing.comment.as_deref());
        let found = match mark {
            SchemaMark::Row => marker::read(conn, kind::SCHEMA, &names.schema, existing.comment.as_deref()).await?,
            SchemaMark::Database => legacy.clone().or(Some(Marker { tenant_id: tenant.id.clone(), saga_id: None })),
        };
        if !(found.as_ref().is_some_and(|m| m.tenant_id == tenant.id) && existing.owner == names.role) {
            return Err(conflict("schema", &names.schema, &tenant.id, found.as_ref()));
        }
        if mark == SchemaMark::Row {
            marker::write(conn, kind::SCHEMA, &names.schema, tenant, None).await?;
        }
        if legacy.is_some() {
            let sql = format!("COMMENT ON SCHEMA {} IS NULL", ident(&names.schema)?);
            exec(conn, "dropping the older marker", sql).await?;
        }
        return verify(conn, &names.schema, seed).await;
    }
    let statements = schema_statements(tenant, seed)?;
    for (what, sql) in statements.into_iter().filter(|(what, _)| mark == SchemaMark::Row || *what != MARK_SCHEMA) {
        exec(conn, what, sql).await?;
    }
    sqlx::raw_sql(seed.sql)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(&format!("applying seed {}", seed.label()), &e))?;
    exec(conn, "leaving the tenant's role", LEAVE_ROLE.to_owned()).await?;
    verify(conn, &names.schema, seed).await
}

const MARK_SCHEMA: &str = "marking the schema";

/// The statements that make the tenant's schema, owned by its role, and
/// mark it (a row in the marker table, with the seed and its checksum),
/// then switch to the role for the seed — which runs next, followed by
/// [`LEAVE_ROLE`]. Run by [`ensure_schema`] after its look-up, and by
/// bench-database's floor as they are.
pub fn schema_statements(tenant: &Tenant, seed: &Seed) -> Result<Vec<(&'static str, String)>, StepFailure> {
    let names = &tenant.names;
    let (schema_id, role) = (ident(&names.schema)?, ident(&names.role)?);
    let detail = format!("seed={} sha256={}", seed.label(), seed.checksum());
    Ok(vec![
        ("creating the schema", format!("CREATE SCHEMA {schema_id} AUTHORIZATION {role}")),
        (MARK_SCHEMA, marker::write_sql(kind::SCHEMA, &names.schema, tenant, Some(&detail))?),
        // The seed runs with the tenant's own privileges: whatever it says,
        // it cannot reach past the tenant's schema.
        ("switching to the tenant's role", format!("SET LOCAL ROLE {role}")),
        ("setting the search_path", format!("SET LOCAL search_path = {schema_id}")),
    ])
}

/// Ends the seed's turn as the tenant's role.
pub const LEAVE_ROLE: &str = "RESET ROLE";

/// Checks what the seed promised, by name.
pub async fn verify(conn: &mut PgConnection, schema_name: &str, seed: &Seed) -> Result<(), StepFailure> {
    let (found,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM unnest($1::text[]) AS t(name)
         WHERE to_regclass(quote_ident($2) || '.' || quote_ident(t.name)) IS NOT NULL",
    )
    .bind(&seed.tables)
    .bind(schema_name)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| classify("verifying the seed", &e))?;
    if usize::try_from(found).ok() != Some(seed.tables.len()) {
        return Err(StepFailure::permanent(
            "seed_verification",
            format!("seed {}: {found} of {} tables found in schema {schema_name:?}", seed.label(), seed.tables.len()),
        ));
    }
    let schema_id = ident(schema_name)?;
    for (table, expected) in &seed.rows {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {schema_id}.{}", ident(table)?)))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify("verifying the seed", &e))?;
        if n != *expected {
            return Err(StepFailure::permanent(
                "seed_verification",
                format!("seed {}: {schema_name}.{table} has {n} rows, expected {expected}", seed.label()),
            ));
        }
    }
    Ok(())
}

/// The verdict on the tenant's schema (bridge) for a compensation.
pub async fn judge_schema(conn: &mut PgConnection, tenant: &Tenant) -> Result<Verdict, StepFailure> {
    let name = &tenant.names.schema;
    let Some(existing) = schema(conn, name).await? else { return Ok(Verdict::Absent) };
    let found = marker::read(conn, kind::SCHEMA, name, existing.comment.as_deref()).await?;
    Ok(marker::judge(kind::SCHEMA, name, found.as_ref(), tenant))
}

/// The verdict on the tenant's role for a compensation, and its marker.
pub async fn judge_role(conn: &mut PgConnection, tenant: &Tenant) -> Result<(Verdict, Option<Marker>), StepFailure> {
    let name = &tenant.names.role;
    let Some(existing) = role(conn, name).await? else { return Ok((Verdict::Absent, None)) };
    let found = marker::read(conn, kind::ROLE, name, existing.comment.as_deref()).await?;
    Ok((marker::judge(kind::ROLE, name, found.as_ref(), tenant), found))
}

/// Drops the tenant's schema and everything in it, and its marker.
pub async fn drop_schema(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    let name = &tenant.names.schema;
    exec(conn, "dropping the schema", format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(name)?)).await?;
    marker::remove(conn, kind::SCHEMA, name).await
}

/// Drops the tenant's role, ending its sessions first, and its marker. Its
/// memberships go with it; anything else that still depends on it makes
/// DROP ROLE fail (permanent, naming the dependency).
pub async fn drop_role(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    let name = &tenant.names.role;
    end_sessions(conn, name).await?;
    exec(conn, "dropping the role", format!("DROP ROLE IF EXISTS {}", ident(name)?)).await?;
    marker::remove(conn, kind::ROLE, name).await
}

/// Ends the sessions of the tenant's role: an open transaction of the
/// tenant would otherwise hold up DROP SCHEMA until the statement timeout.
pub async fn end_sessions(conn: &mut PgConnection, role_name: &str) -> Result<(), StepFailure> {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(role_name)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("ending the role's sessions", &e))
}
