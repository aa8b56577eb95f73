//! What a lifecycle command (suspend, resume, export, purge) may act on:
//! the tenant's objects, found by the names its key gives, whose marker
//! names the tenant — whichever saga made or last adopted them, since a
//! lifecycle saga is never the one that provisioned. Anything else under
//! those names (another tenant's, or unmarked) is refused with the
//! permanent error `conflicting_owner` and left untouched.

use landlord_runtime::StepFailure;
use sqlx::PgConnection;

use crate::catalog;
use crate::failure::{classify, conflicting_owner};
use crate::marker::{self, Marker};
use crate::{Tenant, kind};

fn check(kind: &str, name: &str, found: Option<&Marker>, tenant: &Tenant) -> Result<bool, StepFailure> {
    match found {
        Some(m) if m.tenant_id == tenant.id => Ok(true),
        found => Err(conflicting_owner(kind, name, &tenant.id, found)),
    }
}

/// Whether the tenant's role exists (and is the tenant's).
pub async fn role(conn: &mut PgConnection, tenant: &Tenant) -> Result<bool, StepFailure> {
    let name = &tenant.names.role;
    let Some(existing) = catalog::role(conn, name).await? else { return Ok(false) };
    let found = marker::read(conn, kind::ROLE, name, existing.comment.as_deref()).await?;
    check(kind::ROLE, name, found.as_ref(), tenant)
}

/// Whether the tenant's schema exists in the worker's database (bridge).
pub async fn schema(conn: &mut PgConnection, tenant: &Tenant) -> Result<bool, StepFailure> {
    let name = &tenant.names.schema;
    let Some(existing) = catalog::schema(conn, name).await? else { return Ok(false) };
    let found = marker::read(conn, kind::SCHEMA, name, existing.comment.as_deref()).await?;
    check(kind::SCHEMA, name, found.as_ref(), tenant)
}

/// Whether the tenant's database exists (silo). One without a marker but
/// owned by the tenant's role (a provision stopped before marking it) is
/// the tenant's when the role is.
pub async fn database(conn: &mut PgConnection, tenant: &Tenant, role_is_mine: bool) -> Result<bool, StepFailure> {
    let name = &tenant.names.database;
    let Some(existing) = catalog::database(conn, name).await? else { return Ok(false) };
    let found = marker::read(conn, kind::DATABASE, name, existing.comment.as_deref()).await?;
    if found.is_none() && role_is_mine && existing.owner == tenant.names.role {
        return Ok(true);
    }
    check(kind::DATABASE, name, found.as_ref(), tenant)
}

/// Whether the tenant's row in `landlord_pooled.tenants` exists. The row
/// names the tenant; a marker row naming another tenant is a conflict.
pub async fn pooled_row(conn: &mut PgConnection, tenant: &Tenant) -> Result<bool, StepFailure> {
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT FROM landlord_pooled.tenants WHERE tenant_id = $1)")
        .bind(&tenant.id)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify("looking up the pooled tenant", &e))?;
    match marker::read(conn, kind::POOLED_TENANT, &tenant.id, None).await? {
        Some(m) if m.tenant_id != tenant.id => {
            Err(conflicting_owner(kind::POOLED_TENANT, &tenant.id, &tenant.id, Some(&m)))
        }
        _ => Ok(exists),
    }
}

/// A forward lifecycle command that finds nothing of the tenant's: the
/// tenant was never provisioned here (or purged already) — nothing a retry
/// could change. A compensation finding nothing has nothing to undo.
pub fn missing(tenant: &Tenant, what: &str, name: &str, compensate: bool) -> Result<(), StepFailure> {
    if compensate {
        return Ok(());
    }
    Err(StepFailure::permanent("not_provisioned", format!("tenant {} has no {what} {name:?} to act on", tenant.key)))
}
