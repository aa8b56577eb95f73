//! `database.suspend` and `database.resume` (docs/lifecycle.md), each the
//! other's compensation, both idempotent:
//!
//! - every tier: the tenant's role (bridge, silo; pooled only if it has
//!   one) `NOLOGIN`, then its sessions ended — after the commit, so a
//!   session cannot log in again between the two;
//! - silo: also `CONNECT` on its database revoked from the role (and from
//!   PUBLIC, should it have it: nobody else is meant to connect);
//! - pooled: `landlord_pooled.tenants.suspended` set, which the isolation
//!   policies read, so the application role sees none of the tenant's rows
//!   and can write none (docs/pooled.md).
//!
//! Resume reverses exactly that: `LOGIN`, `CONNECT` granted to the role
//! again (not to PUBLIC, which provisioning never grants), the flag
//! cleared. Only objects whose marker names the tenant are touched
//! ([`crate::owned`]).

use std::collections::HashMap;

use landlord_contract::pb;
use landlord_runtime::StepFailure;

use crate::catalog::ident;
use crate::failure::classify;
use crate::{Provisioner, SecretStore, Tenant, acl_update, exec, marker, owned};

/// Suspended or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspension {
    Suspended,
    Active,
}

impl Suspension {
    fn suspended(self) -> bool {
        self == Self::Suspended
    }
}

/// Brings the tenant into `want`; `compensate`: this undoes the opposite
/// step, and a tenant with nothing left to act on is fine.
pub async fn apply<S: SecretStore>(
    p: &Provisioner<S>,
    tenant: &Tenant,
    want: Suspension,
    compensate: bool,
) -> Result<pb::StepOk, StepFailure> {
    p.prepare().await?;
    let mut tx = p.begin().await?;
    marker::lock_tenant(&mut tx, tenant).await?;
    let role = owned::role(&mut tx, tenant).await?;
    let login = if want.suspended() { "NOLOGIN" } else { "LOGIN" };
    let mut database = false;
    match tenant.tier {
        pb::Tier::Pooled => {
            if !owned::pooled_row(&mut tx, tenant).await? {
                owned::missing(tenant, "pooled tenant row", &tenant.id, compensate)?;
            }
            sqlx::query("UPDATE landlord_pooled.tenants SET suspended = $2 WHERE tenant_id = $1")
                .bind(&tenant.id)
                .bind(want.suspended())
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("flagging the pooled tenant", &e))?;
        }
        tier => {
            if !role {
                owned::missing(tenant, "role", &tenant.names.role, compensate)?;
            }
            if tier == pb::Tier::Silo {
                database = owned::database(&mut tx, tenant, role).await?;
                if !database {
                    owned::missing(tenant, "database", &tenant.names.database, compensate)?;
                }
            }
        }
    }
    if role {
        let sql = format!("ALTER ROLE {} {login}", ident(&tenant.names.role)?);
        exec(&mut tx, "changing the role's LOGIN", sql).await?;
    }
    tx.commit().await.map_err(|e| classify("committing", &e))?;

    // Database privileges outside the transaction: acl_update retries
    // while another session updates the same pg_database row.
    if database {
        let mut conn = p.acquire().await?;
        let name = ident(&tenant.names.database)?;
        let role_id = ident(&tenant.names.role)?;
        if want.suspended() {
            acl_update(&mut conn, format!("REVOKE CONNECT ON DATABASE {name} FROM {role_id}")).await?;
            let (public,): (bool,) = sqlx::query_as(
                "SELECT COALESCE(has_database_privilege('public', oid, 'CONNECT'), false) FROM pg_database WHERE datname = $1",
            )
            .bind(&tenant.names.database)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| classify("reading the database's privileges", &e))?
            .unwrap_or((false,));
            if public {
                acl_update(&mut conn, format!("REVOKE CONNECT ON DATABASE {name} FROM PUBLIC")).await?;
            }
        } else {
            acl_update(&mut conn, format!("GRANT CONNECT ON DATABASE {name} TO {role_id}")).await?;
        }
    }
    let mut ended = 0;
    if role && want.suspended() {
        let mut conn = p.acquire().await?;
        ended = end_sessions(&mut conn, &tenant.names.role).await?;
    }
    tracing::info!(
        ?want,
        role,
        database,
        sessions_ended = ended,
        "tenant {}",
        if want.suspended() { "suspended" } else { "resumed" }
    );
    Ok(pb::StepOk {
        resources: Vec::new(),
        outputs: HashMap::from([
            ("database.suspended".to_owned(), want.suspended().to_string()),
            ("database.sessions_ended".to_owned(), ended.to_string()),
        ]),
    })
}

/// Ends the role's sessions; returns how many were signalled.
pub(crate) async fn end_sessions(conn: &mut sqlx::PgConnection, role: &str) -> Result<i64, StepFailure> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE usename = $1) s
         WHERE ended",
    )
    .bind(role)
    .fetch_one(conn)
    .await
    .map_err(|e| classify("ending the role's sessions", &e))
}
