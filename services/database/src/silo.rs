//! Silo tier: a database per tenant, owned by the tenant's role.
//!
//! CREATE DATABASE cannot run in a transaction, so idempotence comes from
//! checking first and from the catalog: a database that appeared meanwhile
//! (duplicate_database) is looked at again; one owned by the tenant's
//! marked role but not yet commented is ours from a run that stopped
//! between CREATE and COMMENT. DROP DATABASE forces a checkpoint (p99 about
//! 0.7 s): it runs on a connection of its own, outside the pool, so other
//! tenants' commands are not held up behind it.

use landlord_runtime::StepFailure;
use sqlx::Connection as _;

use crate::catalog::{self, Existing, ident, literal};
use crate::failure::{classify, conflict};
use crate::ident::{is_marked_for, marker};
use crate::secrets::{Password, SecretStore};
use crate::seed::Seed;
use crate::{Provisioner, Tenant, exec};

fn ours(existing: &Existing, tenant: &Tenant) -> bool {
    is_marked_for(existing.comment.as_deref(), &tenant.id)
}

/// A database without a comment but owned by the tenant's (marked) role:
/// created by us, stopped before the COMMENT.
fn unfinished(existing: &Existing, tenant: &Tenant) -> bool {
    existing.comment.is_none() && existing.owner == tenant.names.role
}

pub async fn provision<S: SecretStore>(
    p: &Provisioner<S>,
    tenant: &Tenant,
    seed: &Seed,
    password: &Password,
) -> Result<(), StepFailure> {
    let names = &tenant.names;
    let mut tx = p.begin().await?;
    catalog::ensure_role(&mut tx, tenant, password, p.settings.connection_limit).await?;
    tx.commit().await.map_err(|e| classify("committing the role", &e))?;

    let mut conn = p.pool.acquire().await.map_err(|e| classify("connecting", &e))?;
    let database = ident(&names.database)?;
    let mark = format!("COMMENT ON DATABASE {database} IS {}", literal(&marker(&tenant.id))?);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match catalog::database(&mut conn, &names.database).await? {
            Some(existing) if ours(&existing, tenant) => break,
            Some(existing) if unfinished(&existing, tenant) => {
                exec(&mut conn, "marking the database", mark.clone()).await?;
                break;
            }
            Some(existing) => {
                return Err(conflict("database", &names.database, &tenant.id, existing.comment.as_deref()));
            }
            None => {}
        }
        let create = format!("CREATE DATABASE {database} OWNER {} TEMPLATE template0", ident(&names.role)?);
        match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await {
            Ok(_) => {
                exec(&mut conn, "marking the database", mark.clone()).await?;
                break;
            }
            // Created by a concurrent delivery: look again, once.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") && attempts < 2 => {}
            Err(e) => return Err(classify("creating the database", &e)),
        }
    }
    exec(&mut conn, "closing the database to others", format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC")).await?;
    exec(
        &mut conn,
        "granting CONNECT",
        format!("GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {}", ident(&names.role)?),
    )
    .await?;
    drop(conn);

    // Schema and seed inside the tenant's database, in one transaction.
    let mut inside = sqlx::PgConnection::connect_with(&p.connect_to(&names.database))
        .await
        .map_err(|e| classify("connecting to the tenant's database", &e))?;
    let mut tx = inside.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    exec(&mut tx, "revoking PUBLIC's rights on schema public", "REVOKE ALL ON SCHEMA public FROM PUBLIC".into())
        .await?;
    catalog::ensure_schema(&mut tx, tenant, seed).await?;
    tx.commit().await.map_err(|e| classify("committing the seed", &e))?;
    let _ = inside.close().await;
    tracing::info!(database = %names.database, seed = %seed.label(), "silo tenant ready");
    Ok(())
}

pub async fn deprovision<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<(), StepFailure> {
    let names = &tenant.names;
    let mut own = sqlx::PgConnection::connect_with(&p.settings.connect_options())
        .await
        .map_err(|e| classify("connecting to the tenant-data database", &e))?;
    let dropped = match catalog::database(&mut own, &names.database).await? {
        None => false,
        Some(existing) => {
            let role_marked = catalog::role(&mut own, &names.role)
                .await?
                .is_some_and(|role| is_marked_for(role.comment.as_deref(), &tenant.id));
            if !(ours(&existing, tenant) || (role_marked && unfinished(&existing, tenant))) {
                return Err(conflict("database", &names.database, &tenant.id, existing.comment.as_deref()));
            }
            exec(
                &mut own,
                "dropping the database",
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&names.database)?),
            )
            .await?;
            true
        }
    };
    let _ = own.close().await;
    let mut tx = p.begin().await?;
    let role = catalog::drop_role(&mut tx, tenant).await?;
    tx.commit().await.map_err(|e| classify("committing", &e))?;
    tracing::info!(database_dropped = dropped, role_dropped = role, "silo tenant removed");
    Ok(())
}
