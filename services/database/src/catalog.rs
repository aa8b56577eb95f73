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
use crate::ident::{is_marked_for, marker, quote_ident, quote_literal};
use crate::secrets::Password;
use crate::seed::Seed;
use crate::{Tenant, exec};

/// An object that exists: its COMMENT and owner.
#[derive(Debug, Clone)]
pub struct Existing {
    pub comment: Option<String>,
    pub owner: String,
}

pub(crate) fn ident(name: &str) -> Result<String, StepFailure> {
    quote_ident(name).map_err(|problem| StepFailure::permanent("invalid_name", problem))
}

pub(crate) fn literal(value: &str) -> Result<String, StepFailure> {
    quote_literal(value).map_err(|problem| StepFailure::permanent("invalid_name", problem))
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

/// Creates the tenant's login role unless it exists; an existing role must
/// carry the tenant's marker. Returns whether it was created.
pub async fn ensure_role(
    conn: &mut PgConnection,
    tenant: &Tenant,
    password: &Password,
    connection_limit: i64,
) -> Result<bool, StepFailure> {
    let names = &tenant.names;
    match role(conn, &names.role).await? {
        Some(existing) if is_marked_for(existing.comment.as_deref(), &tenant.id) => {
            join_role(conn, &ident(&names.role)?).await?;
            return Ok(false);
        }
        Some(existing) => return Err(conflict("role", &names.role, &tenant.id, existing.comment.as_deref())),
        None => {}
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
/// verifier, never a password), mark it, set its `search_path`, and make
/// the provisioning role a member. Run by [`ensure_role`] after its
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
        ("marking the role", format!("COMMENT ON ROLE {role} IS {}", literal(&marker(&tenant.id))?)),
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

/// Creates the tenant's schema, owned by its role, and applies `seed` in
/// it as that role — all inside the caller's transaction — then verifies.
/// An existing schema must carry the marker and belong to the role.
pub async fn ensure_schema(conn: &mut PgConnection, tenant: &Tenant, seed: &Seed) -> Result<(), StepFailure> {
    let names = &tenant.names;
    match schema(conn, &names.schema).await? {
        Some(existing) if is_marked_for(existing.comment.as_deref(), &tenant.id) && existing.owner == names.role => {
            return verify(conn, &names.schema, seed).await;
        }
        Some(existing) => return Err(conflict("schema", &names.schema, &tenant.id, existing.comment.as_deref())),
        None => {}
    }
    for (what, sql) in schema_statements(tenant, seed)? {
        exec(conn, what, sql).await?;
    }
    sqlx::raw_sql(seed.sql)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(&format!("applying seed {}", seed.label()), &e))?;
    exec(conn, "leaving the tenant's role", LEAVE_ROLE.to_owned()).await?;
    verify(conn, &names.schema, seed).await
}

/// The statements that make the tenant's schema, owned by its role and
/// marked with the seed, and then switch to the role for the seed — which
/// runs next, followed by [`LEAVE_ROLE`]. Run by [`ensure_schema`] after
/// its look-up, and by bench-database's floor as they are.
pub fn schema_statements(tenant: &Tenant, seed: &Seed) -> Result<Vec<(&'static str, String)>, StepFailure> {
    let names = &tenant.names;
    let (schema_id, role) = (ident(&names.schema)?, ident(&names.role)?);
    let comment = format!("{} seed={} sha256={}", marker(&tenant.id), seed.label(), seed.checksum());
    Ok(vec![
        ("creating the schema", format!("CREATE SCHEMA {schema_id} AUTHORIZATION {role}")),
        ("marking the schema", format!("COMMENT ON SCHEMA {schema_id} IS {}", literal(&comment)?)),
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

/// Drops the tenant's schema and everything in it, if it is there and
/// marked as the tenant's.
pub async fn drop_schema(conn: &mut PgConnection, tenant: &Tenant) -> Result<bool, StepFailure> {
    let name = &tenant.names.schema;
    match schema(conn, name).await? {
        None => Ok(false),
        Some(existing) if is_marked_for(existing.comment.as_deref(), &tenant.id) => {
            exec(conn, "dropping the schema", format!("DROP SCHEMA {} CASCADE", ident(name)?)).await?;
            Ok(true)
        }
        Some(existing) => Err(conflict("schema", name, &tenant.id, existing.comment.as_deref())),
    }
}

/// Drops the tenant's role, if it is there and marked, ending its sessions
/// first. Its memberships go with it; anything else that still depends on
/// it makes DROP ROLE fail (permanent, naming the dependency).
pub async fn drop_role(conn: &mut PgConnection, tenant: &Tenant) -> Result<bool, StepFailure> {
    let name = &tenant.names.role;
    match role(conn, name).await? {
        None => Ok(false),
        Some(existing) if is_marked_for(existing.comment.as_deref(), &tenant.id) => {
            end_sessions(conn, name).await?;
            exec(conn, "dropping the role", format!("DROP ROLE {}", ident(name)?)).await?;
            Ok(true)
        }
        Some(existing) => Err(conflict("role", name, &tenant.id, existing.comment.as_deref())),
    }
}

/// Ends the sessions of the tenant's role, if the role is the tenant's: an
/// open transaction of the tenant would otherwise hold up DROP SCHEMA
/// until the statement timeout.
pub async fn end_tenant_sessions(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    match role(conn, &tenant.names.role).await? {
        Some(existing) if is_marked_for(existing.comment.as_deref(), &tenant.id) => {
            end_sessions(conn, &tenant.names.role).await
        }
        _ => Ok(()),
    }
}

async fn end_sessions(conn: &mut PgConnection, role_name: &str) -> Result<(), StepFailure> {
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(role_name)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("ending the role's sessions", &e))
}
