//! Pooled tier: the tenant is a row in `landlord_pooled.tenants`, its data
//! rows in shared tables that row-level security (forced, so it binds the
//! tables' owner too) restricts to `current_setting('landlord.tenant_id')`.
//! Applications connect as a role granted `landlord_pooled_app` and set
//! `landlord.tenant_id` per transaction; a session without it sees nothing.
//! A suspended tenant (`tenants.suspended`) is hidden from everyone but the
//! export role: the isolation policies compare with
//! `landlord_pooled.current_tenant()`, which is NULL for a suspended
//! tenant (docs/pooled.md).
//! The tenant's row is marked like any other object (kind
//! `postgres.pooled_tenant`, named by the tenant id, in
//! `landlord_admin.markers`): the row names its tenant, the marker the saga
//! that made or last adopted it. A row without a marker row predates them
//! and is the tenant's, whichever saga undoes it.

use std::collections::HashMap;

use landlord_contract::pb;
use landlord_runtime::StepFailure;
use sqlx::PgPool;

use crate::catalog::ident;
use crate::failure::{classify, conflict};
use crate::marker::{self, Marker, Verdict};
use crate::seed::Seed;
use crate::{Tenant, kind};

pub const SCHEMA: &str = "landlord_pooled";
pub const TENANT_SETTING: &str = "landlord.tenant_id";
pub const APP_ROLE: &str = "landlord_pooled_app";
/// The NOLOGIN role `database.export` reads a tenant's rows as: no
/// BYPASSRLS, SELECT only, and a policy of its own that shows the tenant's
/// rows whether it is suspended or not.
pub const EXPORT_ROLE: &str = "landlord_pooled_export";

/// The shared tables and their policies; idempotent (run at start under an
/// advisory lock). New shared tables reference `tenants` with ON DELETE
/// CASCADE, so deprovisioning is one DELETE, and follow the same pattern
/// (docs/pooled.md): an isolation policy on `current_tenant()`, which hides
/// a suspended tenant's rows, and an export policy for the export role.
pub const SHARED_SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS landlord_pooled;
REVOKE ALL ON SCHEMA landlord_pooled FROM PUBLIC;
GRANT USAGE ON SCHEMA landlord_pooled TO landlord_pooled_app, landlord_pooled_export;
CREATE TABLE IF NOT EXISTS landlord_pooled.tenants (
    tenant_id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    seed text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE landlord_pooled.tenants ADD COLUMN IF NOT EXISTS suspended boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS landlord_pooled.settings (
    tenant_id text NOT NULL DEFAULT current_setting('landlord.tenant_id')
        REFERENCES landlord_pooled.tenants (tenant_id) ON DELETE CASCADE,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
-- The tenant the session acts for: landlord.tenant_id, unless that tenant
-- is suspended (then NULL, which no row's tenant_id equals). Runs with the
-- caller's rights, so it reads tenants through that table's own policy.
CREATE OR REPLACE FUNCTION landlord_pooled.current_tenant() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $f$ SELECT t.tenant_id FROM landlord_pooled.tenants t
           WHERE t.tenant_id = current_setting('landlord.tenant_id', true) AND NOT t.suspended $f$;
REVOKE ALL ON FUNCTION landlord_pooled.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION landlord_pooled.current_tenant() TO landlord_pooled_app, landlord_pooled_export;
ALTER TABLE landlord_pooled.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE landlord_pooled.tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE landlord_pooled.settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE landlord_pooled.settings FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = 'landlord_pooled' AND tablename = 'tenants'
                   AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON landlord_pooled.tenants USING (false);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = 'landlord_pooled' AND tablename = 'settings'
                   AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON landlord_pooled.settings USING (false);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = 'landlord_pooled' AND tablename = 'tenants'
                   AND policyname = 'tenant_export') THEN
        CREATE POLICY tenant_export ON landlord_pooled.tenants FOR SELECT TO landlord_pooled_export
            USING (tenant_id = current_setting('landlord.tenant_id', true));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = 'landlord_pooled' AND tablename = 'settings'
                   AND policyname = 'tenant_export') THEN
        CREATE POLICY tenant_export ON landlord_pooled.settings FOR SELECT TO landlord_pooled_export
            USING (tenant_id = current_setting('landlord.tenant_id', true));
    END IF;
END
$$;
-- Set every time, so servers prepared before suspension existed get the
-- suspension-aware policies too.
ALTER POLICY tenant_isolation ON landlord_pooled.tenants
    USING (tenant_id = current_setting('landlord.tenant_id', true) AND NOT suspended);
ALTER POLICY tenant_isolation ON landlord_pooled.settings
    USING (tenant_id = landlord_pooled.current_tenant())
    WITH CHECK (tenant_id = landlord_pooled.current_tenant());
REVOKE ALL ON landlord_pooled.tenants, landlord_pooled.settings FROM PUBLIC;
GRANT SELECT ON landlord_pooled.tenants TO landlord_pooled_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON landlord_pooled.settings TO landlord_pooled_app;
GRANT SELECT ON landlord_pooled.tenants, landlord_pooled.settings TO landlord_pooled_export;
";

pub async fn provision(pool: &PgPool, tenant: &Tenant, seed: &Seed) -> Result<pb::StepOk, StepFailure> {
    let mut tx = pool.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    marker::lock_tenant(&mut tx, tenant).await?;
    let existing: Option<(String, String)> =
        sqlx::query_as("SELECT tenant_id, key FROM landlord_pooled.tenants WHERE tenant_id = $1 OR key = $2 LIMIT 1")
            .bind(&tenant.id)
            .bind(tenant.key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify("looking up the pooled tenant", &e))?;
    let set = |name: &'static str, value: String| sqlx::query("SELECT set_config($1, $2, true)").bind(name).bind(value);
    match existing {
        Some((id, key)) if id == tenant.id && key == tenant.key.as_str() => {
            // Adopt it: from now on the marker names this saga.
            marker::write(&mut tx, kind::POOLED_TENANT, &tenant.id, tenant, None).await?;
        }
        Some((id, key)) => {
            let found = Marker { tenant_id: id, saga_id: None };
            return Err(conflict("pooled tenant", &key, &tenant.id, Some(&found)));
        }
        None => {
            sqlx::query("INSERT INTO landlord_pooled.tenants (tenant_id, key, seed) VALUES ($1, $2, $3)")
                .bind(&tenant.id)
                .bind(tenant.key.as_str())
                .bind(format!("{} sha256={}", seed.label(), seed.checksum()))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("registering the pooled tenant", &e))?;
            marker::write(&mut tx, kind::POOLED_TENANT, &tenant.id, tenant, None).await?;
            set(TENANT_SETTING, tenant.id.clone()).execute(&mut *tx).await.map_err(|e| classify("seeding", &e))?;
            set("search_path", SCHEMA.into()).execute(&mut *tx).await.map_err(|e| classify("seeding", &e))?;
            sqlx::raw_sql(seed.sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(&format!("applying seed {}", seed.label()), &e))?;
        }
    }
    for (table, expected) in &seed.rows {
        let sql = format!("SELECT count(*) FROM {}.{} WHERE tenant_id = $1", ident(SCHEMA)?, ident(table)?);
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&tenant.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify("verifying the seed", &e))?;
        if n != *expected {
            return Err(StepFailure::permanent(
                "seed_verification",
                format!("seed {}: the tenant has {n} rows in {SCHEMA}.{table}, expected {expected}", seed.label()),
            ));
        }
    }
    tx.commit().await.map_err(|e| classify("committing", &e))?;
    tracing::info!(seed = %seed.label(), "pooled tenant ready");
    Ok(pb::StepOk {
        resources: vec![pb::Resource {
            kind: kind::POOLED_TENANT.into(),
            external_id: tenant.id.clone(),
            metadata: HashMap::from([
                ("schema".to_owned(), SCHEMA.to_owned()),
                ("key".to_owned(), tenant.key.to_string()),
            ]),
        }],
        outputs: HashMap::from([
            ("database.tier".to_owned(), "pooled".to_owned()),
            ("database.schema".to_owned(), SCHEMA.to_owned()),
            ("database.tenant_setting".to_owned(), TENANT_SETTING.to_owned()),
            ("database.app_role".to_owned(), "landlord_pooled_app".to_owned()),
            ("database.seed".to_owned(), seed.label()),
        ]),
    })
}

/// Deletes the tenant's row (its data rows go with it, ON DELETE CASCADE)
/// if this saga made or adopted it; returns notes on what it left. Only
/// rows carrying this tenant's id are touched.
pub async fn deprovision(pool: &PgPool, tenant: &Tenant) -> Result<Vec<String>, StepFailure> {
    let mut tx = pool.begin().await.map_err(|e| classify("opening a transaction", &e))?;
    marker::lock_tenant(&mut tx, tenant).await?;
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT FROM landlord_pooled.tenants WHERE tenant_id = $1)")
        .bind(&tenant.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| classify("looking up the pooled tenant", &e))?;
    let found = marker::read(&mut tx, kind::POOLED_TENANT, &tenant.id, None).await?;
    // The row names the tenant: without a marker row it predates them.
    let found = found.or_else(|| exists.then(|| Marker { tenant_id: tenant.id.clone(), saga_id: None }));
    let verdict =
        if exists { marker::judge(kind::POOLED_TENANT, &tenant.id, found.as_ref(), tenant) } else { Verdict::Absent };
    let mut notes = Vec::new();
    match &verdict {
        Verdict::Fenced(note) => notes.push(note.clone()),
        Verdict::Mine | Verdict::Absent => {
            sqlx::query("DELETE FROM landlord_pooled.tenants WHERE tenant_id = $1")
                .bind(&tenant.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("removing the pooled tenant", &e))?;
            marker::remove(&mut tx, kind::POOLED_TENANT, &tenant.id).await?;
        }
    }
    tx.commit().await.map_err(|e| classify("committing", &e))?;
    tracing::info!(?verdict, "pooled tenant removed");
    Ok(notes)
}
