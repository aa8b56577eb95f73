//! Silo tier: a database per tenant, owned by the tenant's role.
//!
//! CREATE DATABASE cannot run in a transaction, so idempotence comes from
//! checking first and from the catalog: a database that appeared meanwhile
//! (duplicate_database) is looked at again; one owned by the tenant's
//! marked role but not marked itself is ours from a run that stopped
//! between CREATE and marking. The role (and its marker) is made in a
//! transaction before. The database's marker is a row in the worker's own
//! database (the tenant's database cannot hold it: it is the tenant's); the
//! schema inside is the tenant's when the tenant's role owns it. Both
//! directions run on a connection of their own holding the tenant's lock
//! for the session ([`marker::lock_tenant_session`]); DROP DATABASE forces
//! a checkpoint (p99 about 0.7 s), so other tenants' commands are not held
//! up behind it on the pool either.

use landlord_runtime::StepFailure;
use sqlx::Connection as _;

use crate::catalog::{self, Existing, ident};
use crate::failure::{classify, conflict};
use crate::marker::{self, Marker, Verdict};
use crate::secrets::{Password, SecretRef, SecretStore};
use crate::seed::Seed;
use crate::{Provisioner, Tenant, exec, kind};

/// A database without a marker but owned by the tenant's role: created by
/// the tenant's saga, stopped before the marking.
fn unfinished(existing: &Existing, found: Option<&Marker>, tenant: &Tenant) -> bool {
    found.is_none() && existing.owner == tenant.names.role
}

/// A connection of its own to the worker's database, holding the tenant's
/// lock until it is closed (or dropped, which ends the session and the lock).
async fn locked_connection<S: SecretStore>(
    p: &Provisioner<S>,
    tenant: &Tenant,
) -> Result<sqlx::PgConnection, StepFailure> {
    let mut own = sqlx::PgConnection::connect_with(&p.settings.connect_options())
        .await
        .map_err(|e| classify("connecting to the tenant-data database", &e))?;
    marker::lock_tenant_session(&mut own, tenant).await?;
    Ok(own)
}

async fn release(mut own: sqlx::PgConnection, tenant: &Tenant) {
    if marker::unlock_tenant_session(&mut own, tenant).await.is_ok() {
        let _ = own.close().await;
    }
    // Otherwise dropping the connection ends the session and its lock.
}

pub async fn provision<S: SecretStore>(
    p: &Provisioner<S>,
    tenant: &Tenant,
    seed: &Seed,
) -> Result<(SecretRef, Password), StepFailure> {
    let mut own = locked_connection(p, tenant).await?;
    let outcome = provision_locked(p, &mut own, tenant, seed).await;
    release(own, tenant).await;
    outcome
}

async fn provision_locked<S: SecretStore>(
    p: &Provisioner<S>,
    conn: &mut sqlx::PgConnection,
    tenant: &Tenant,
    seed: &Seed,
) -> Result<(SecretRef, Password), StepFailure> {
    let names = &tenant.names;
    let (reference, password) = p.password(tenant).await?;
    let mut tx = conn.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    catalog::ensure_role(&mut tx, tenant, &password, p.settings.connection_limit).await?;
    tx.commit().await.map_err(|e| classify("committing the role", &e))?;

    let database = ident(&names.database)?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(existing) = catalog::database(conn, &names.database).await? {
            let found = marker::read(conn, kind::DATABASE, &names.database, existing.comment.as_deref()).await?;
            let ours = found.as_ref().is_some_and(|m| m.tenant_id == tenant.id);
            if !(ours || unfinished(&existing, found.as_ref(), tenant)) {
                return Err(conflict("database", &names.database, &tenant.id, found.as_ref()));
            }
            // Adopt (or finish marking) it.
            marker::write(conn, kind::DATABASE, &names.database, tenant, None).await?;
            if found.is_some_and(|m| m.is_legacy()) {
                exec(conn, "dropping the older marker", format!("COMMENT ON DATABASE {database} IS NULL")).await?;
            }
            break;
        }
        let create = format!("CREATE DATABASE {database} OWNER {} TEMPLATE template0", ident(&names.role)?);
        match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await {
            Ok(_) => {
                marker::write(conn, kind::DATABASE, &names.database, tenant, None).await?;
                break;
            }
            // Created by a concurrent delivery: look again, once.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") && attempts < 2 => {}
            Err(e) => return Err(classify("creating the database", &e)),
        }
    }
    exec(conn, "closing the database to others", format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC")).await?;
    exec(
        conn,
        "granting CONNECT",
        format!("GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {}", ident(&names.role)?),
    )
    .await?;

    // Schema and seed inside the tenant's database, in one transaction.
    let mut inside = sqlx::PgConnection::connect_with(&p.connect_to(&names.database))
        .await
        .map_err(|e| classify("connecting to the tenant's database", &e))?;
    let mut tx = inside.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    exec(&mut tx, "revoking PUBLIC's rights on schema public", "REVOKE ALL ON SCHEMA public FROM PUBLIC".into())
        .await?;
    catalog::ensure_schema(&mut tx, tenant, seed, catalog::SchemaMark::Database).await?;
    tx.commit().await.map_err(|e| classify("committing the seed", &e))?;
    let _ = inside.close().await;
    tracing::info!(database = %names.database, seed = %seed.label(), "silo tenant ready");
    Ok((reference, password))
}

/// Undoes the tenant's database and role if its saga made them (or made
/// the role and stopped before marking the database); returns notes on
/// what it left.
pub async fn deprovision<S: SecretStore>(p: &Provisioner<S>, tenant: &Tenant) -> Result<Vec<String>, StepFailure> {
    let mut own = locked_connection(p, tenant).await?;
    let outcome = deprovision_locked(p, &mut own, tenant).await;
    release(own, tenant).await;
    outcome
}

async fn deprovision_locked<S: SecretStore>(
    p: &Provisioner<S>,
    conn: &mut sqlx::PgConnection,
    tenant: &Tenant,
) -> Result<Vec<String>, StepFailure> {
    let names = &tenant.names;
    let mut notes = Vec::new();
    let (role, role_marker) = catalog::judge_role(conn, tenant).await?;
    let database = match catalog::database(conn, &names.database).await? {
        None => Verdict::Absent,
        Some(existing) => {
            let found = marker::read(conn, kind::DATABASE, &names.database, existing.comment.as_deref()).await?;
            if unfinished(&existing, found.as_ref(), tenant) && role == Verdict::Mine {
                Verdict::Mine
            } else {
                marker::judge(kind::DATABASE, &names.database, found.as_ref(), tenant)
            }
        }
    };
    match &database {
        Verdict::Mine => {
            exec(
                conn,
                "dropping the database",
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&names.database)?),
            )
            .await?;
            marker::remove(conn, kind::DATABASE, &names.database).await?;
        }
        Verdict::Fenced(note) => notes.push(note.clone()),
        Verdict::Absent => {
            // A marker left by a run that stopped between DROP and forgetting it.
            let stale = marker::read(conn, kind::DATABASE, &names.database, None).await?;
            if stale.is_some_and(|m| m.tenant_id == tenant.id) {
                marker::remove(conn, kind::DATABASE, &names.database).await?;
            }
        }
    }
    let mut tx = conn.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    match &role {
        Verdict::Mine => catalog::drop_role(&mut tx, tenant).await?,
        Verdict::Fenced(note) => notes.push(note.clone()),
        Verdict::Absent => {}
    }
    p.forget_password(tenant, &role, role_marker.as_ref()).await?;
    tx.commit().await.map_err(|e| classify("committing", &e))?;
    tracing::info!(?database, ?role, "silo tenant removed");
    Ok(notes)
}
