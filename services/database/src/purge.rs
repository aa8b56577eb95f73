//! `database.purge` (docs/lifecycle.md): the end of an offboarded tenant.
//!
//! - bridge: its sessions ended, its schema dropped with everything in it,
//!   its role dropped;
//! - silo: its database dropped (`WITH (FORCE)`, which ends the sessions
//!   in it), its role dropped;
//! - pooled: its rows in every shared table and its tenant row deleted,
//!   its role dropped if it has one;
//!
//! then its sealed secrets (the kept password and any delivery copy)
//! deleted and its markers removed. What is already gone is success, so a
//! purge that stopped half-way finishes on the next attempt. Nothing whose
//! marker names another tenant (or that carries none) is dropped: that is
//! the permanent error `conflicting_owner`. Purge steps are retried until
//! they succeed, so a missing privilege is retryable here
//! ([`failure::in_purge`]): once an operator restores it, the purge ends.

use landlord_contract::pb;
use landlord_runtime::StepFailure;
use sqlx::Connection as _;

use crate::catalog::{self, ident};
use crate::failure::{self, classify};
use crate::suspension::end_sessions;
use crate::{Provisioner, SecretStore, Tenant, exec, kind, marker, owned, pooled, secrets};

pub async fn purge<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<pb::StepOk, StepFailure> {
    p.prepare().await?;
    let outcome = match tenant.tier {
        pb::Tier::Silo => purge_silo(p, tenant).await,
        pb::Tier::Pooled => purge_pooled(p, tenant).await,
        _ => purge_bridge(p, tenant).await,
    };
    outcome.map_err(failure::in_purge)?;
    forget_secrets(p, tenant).await.map_err(failure::in_purge)?;
    tracing::info!(tier = ?tenant.tier, "tenant purged");
    Ok(pb::StepOk::default())
}

async fn purge_bridge<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<(), StepFailure> {
    let mut tx = p.begin().await?;
    marker::lock_tenant(&mut tx, tenant).await?;
    let role = owned::role(&mut tx, tenant).await?;
    let schema = owned::schema(&mut tx, tenant).await?;
    if role {
        // An open transaction of the tenant would hold up DROP SCHEMA.
        end_sessions(&mut tx, &tenant.names.role).await?;
    }
    if schema {
        catalog::drop_schema(&mut tx, tenant).await?;
    }
    marker::remove(&mut tx, kind::SCHEMA, &tenant.names.schema).await?;
    drop_role(&mut tx, tenant, role).await?;
    tx.commit().await.map_err(|e| classify("committing", &e))
}

async fn purge_silo<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<(), StepFailure> {
    // DROP DATABASE cannot run in a transaction: the tenant's lock is held
    // by a connection of its own, as the silo provision does.
    let mut own = sqlx::PgConnection::connect_with(&p.settings.connect_options())
        .await
        .map_err(|e| classify("connecting to the tenant-data database", &e))?;
    marker::lock_tenant_session(&mut own, tenant).await?;
    let outcome = purge_silo_locked(&mut own, tenant).await;
    if marker::unlock_tenant_session(&mut own, tenant).await.is_ok() {
        let _ = own.close().await;
    }
    outcome
}

async fn purge_silo_locked(conn: &mut sqlx::PgConnection, tenant: &Tenant) -> Result<(), StepFailure> {
    let role = owned::role(conn, tenant).await?;
    let name = &tenant.names.database;
    if owned::database(conn, tenant, role).await? {
        exec(conn, "dropping the database", format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)?)).await?;
    }
    marker::remove(conn, kind::DATABASE, name).await?;
    let mut tx = conn.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    drop_role(&mut tx, tenant, role).await?;
    tx.commit().await.map_err(|e| classify("committing", &e))
}

async fn purge_pooled<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<(), StepFailure> {
    let mut tx = p.begin().await?;
    marker::lock_tenant(&mut tx, tenant).await?;
    let role = owned::role(&mut tx, tenant).await?;
    if owned::pooled_row(&mut tx, tenant).await? {
        // Every shared table with a tenant_id, the tenants table last: one
        // that does not cascade from it loses the tenant's rows too.
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id'
               AND NOT a.attisdropped AND c.relname <> 'tenants' ORDER BY 1",
        )
        .bind(pooled::SCHEMA)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify("listing the pooled tables", &e))?;
        for table in tables.iter().map(String::as_str).chain(["tenants"]) {
            let sql = format!("DELETE FROM {}.{} WHERE tenant_id = $1", ident(pooled::SCHEMA)?, ident(table)?);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&tenant.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(&format!("deleting the tenant's rows from {table}"), &e))?;
        }
    }
    marker::remove(&mut tx, kind::POOLED_TENANT, &tenant.id).await?;
    drop_role(&mut tx, tenant, role).await?;
    tx.commit().await.map_err(|e| classify("committing", &e))
}

/// Drops the tenant's role if it is there (its sessions ended first), and
/// its marker either way.
async fn drop_role(conn: &mut sqlx::PgConnection, tenant: &Tenant, exists: bool) -> Result<(), StepFailure> {
    if exists {
        catalog::drop_role(conn, tenant).await
    } else {
        marker::remove(conn, kind::ROLE, &tenant.names.role).await
    }
}

/// The kept password and its delivery copy; nothing kept is fine.
async fn forget_secrets<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<(), StepFailure> {
    if let Some(store) = p.delivery() {
        store.delete(&secrets::database_delivery_ref(&tenant.id)).await.map_err(failure::from_delivery)?;
    }
    p.secrets().delete(&secrets::database_password_ref(&tenant.id)).await.map_err(failure::from_secret)
}
