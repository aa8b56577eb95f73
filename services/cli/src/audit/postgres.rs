//! The audit's part on the tenant-data servers (docs/tenant-data.md): every
//! server of `LANDLORD_TENANT_DATABASES` (or the one of
//! `LANDLORD_TENANT_DATABASE_URL`, called `default`) is listed on its own,
//! and each finding names its server.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use landlord_database::marker;
use sqlx::PgPool;

use super::{Marking, Object, Owner, key_of_pg_name, kind};

/// The kind the audit reports a lone placement marker under: a tenant
/// placed on a server with nothing else of its made there.
pub const PLACEMENT: &str = marker::PLACEMENT;

/// Schemas, roles and databases the database worker marked on one server,
/// and the pooled tenants' rows, each with its marker.
pub async fn marked(pool: &PgPool) -> Result<Vec<(&'static str, String, Owner)>> {
    let mut conn = pool.acquire().await.context("connecting")?;
    let mut found = Vec::new();
    for marked in marker::list(&mut conn).await.context("listing the database markers")? {
        if let Some(kind) = kind(&marked.kind) {
            found.push((kind, marked.name, Owner { tenant_id: marked.tenant_id, saga_id: marked.saga_id }));
        }
    }
    let pooled: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('landlord_pooled.tenants')::text").fetch_one(&mut *conn).await?;
    let markers: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('landlord_admin.markers')::text").fetch_one(&mut *conn).await?;
    if pooled.is_some() {
        // A pooled row names its tenant; its marker row (if any) the saga.
        let sql = match markers {
            Some(_) => {
                "SELECT p.tenant_id, m.saga_id FROM landlord_pooled.tenants p
                 LEFT JOIN landlord_admin.markers m ON m.kind = 'postgres.pooled_tenant' AND m.name = p.tenant_id"
            }
            None => "SELECT tenant_id, NULL::text FROM landlord_pooled.tenants",
        };
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(sql).fetch_all(&mut *conn).await?;
        for (tenant_id, saga_id) in rows {
            found.push(("postgres.pooled_tenant", tenant_id.clone(), Owner { tenant_id, saga_id }));
        }
    }
    Ok(found)
}

/// The tenants placed on one server with nothing else of theirs there,
/// each with its placement marker (a server not prepared yet has none).
pub async fn lone(pool: &PgPool) -> Result<Vec<Owner>> {
    let mut conn = pool.acquire().await.context("connecting")?;
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('landlord_admin.markers')::text").fetch_one(&mut *conn).await?;
    if table.is_none() {
        return Ok(Vec::new());
    }
    let mut owners = Vec::new();
    for tenant_id in marker::lone_placements(&mut conn).await.context("listing lone placements")? {
        let found = marker::read(&mut conn, PLACEMENT, &tenant_id, None)
            .await
            .map_err(|f| anyhow::anyhow!("reading a placement marker: {f}"))?;
        if let Some(found) = found {
            owners.push(Owner { tenant_id: found.tenant_id, saga_id: found.saga_id });
        }
    }
    Ok(owners)
}

/// What one server holds: the marked objects, then the lone placements
/// (their key read from the control plane, where the tenant may be known).
pub async fn objects(server: &str, pool: &PgPool, control: &PgPool) -> Result<Vec<Object>> {
    let within = || format!("tenant-data server {server}");
    let marked = marked(pool).await.with_context(within)?;
    let mut pooled_keys = BTreeMap::new();
    if marked.iter().any(|(kind, _, _)| *kind == "postgres.pooled_tenant") {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT tenant_id, key FROM landlord_pooled.tenants")
            .fetch_all(pool)
            .await
            .with_context(within)?;
        pooled_keys.extend(rows);
    }
    let mut found: Vec<Object> = marked
        .into_iter()
        .map(|(kind, name, owner)| Object {
            kind,
            key: if kind == "postgres.pooled_tenant" { pooled_keys.get(&name).cloned() } else { key_of_pg_name(&name) },
            external_id: name,
            tenant_id: owner.tenant_id,
            server: Some(server.to_owned()),
        })
        .collect();
    for owner in lone(pool).await.with_context(within)? {
        let key: Option<String> = sqlx::query_scalar("SELECT key FROM tenants WHERE id::text = $1")
            .bind(&owner.tenant_id)
            .fetch_optional(control)
            .await
            .context("reading a placed tenant's key")?;
        found.push(Object {
            kind: PLACEMENT,
            external_id: owner.tenant_id.clone(),
            tenant_id: owner.tenant_id,
            key,
            server: Some(server.to_owned()),
        });
    }
    Ok(found)
}

/// The marker of `object` on its server, read now. A placement marker
/// counts only while it is lone: once something else of the tenant's is
/// made there, the placement is the tenant's live one (`Ok(None)`).
pub async fn marking(pool: &PgPool, object: &Object) -> Result<Option<Marking>> {
    if object.kind == PLACEMENT {
        let lone = lone(pool).await?;
        let mut conn = pool.acquire().await.context("connecting")?;
        let there = marker::read(&mut conn, PLACEMENT, &object.external_id, None)
            .await
            .map_err(|f| anyhow::anyhow!("reading a placement marker: {f}"))?;
        return Ok(match there {
            None => Some(Marking::Gone),
            Some(_) => lone.into_iter().find(|o| o.tenant_id == object.external_id).map(Marking::Marked),
        });
    }
    // The marker list names only objects that still exist.
    Ok(Some(
        marked(pool)
            .await?
            .into_iter()
            .find(|(kind, name, _)| *kind == object.kind && *name == object.external_id)
            .map_or(Marking::Gone, |(_, _, owner)| Marking::Marked(owner)),
    ))
}

#[cfg(test)]
mod tests {
    //! Two real PostgreSQL clusters, each a server of the list: what the
    //! audit finds on each, and its removals going to the right one.

    use landlord_contract::pb;
    use landlord_database::{Servers, Tenant};
    use landlord_runtime::{DeliveryInfo, Env, StepService};
    use landlord_testkit::Postgres;
    use sqlx::Connection as _;

    use super::*;

    fn spec(prefix: &str) -> pb::TenantSpec {
        pb::TenantSpec {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            key: format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            tier: pb::Tier::Bridge as i32,
            ..Default::default()
        }
    }

    fn command(spec: &pb::TenantSpec) -> pb::StepCommand {
        pb::StepCommand {
            saga_id: uuid::Uuid::new_v4().to_string(),
            step: "database".into(),
            attempt: 1,
            tenant: Some(spec.clone()),
            ..Default::default()
        }
    }

    async fn schema_on(url: &str, schema: &str) -> anyhow::Result<bool> {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await?)
    }

    #[tokio::test]
    async fn each_server_is_audited_and_each_removal_goes_to_its_server() -> anyhow::Result<()> {
        let shared = tokio::task::spawn_blocking(Postgres::shared).await??;
        let second = tokio::task::spawn_blocking(Postgres::start).await??;
        let (a, b, control) = (
            shared.fresh_database().await?.url,
            second.fresh_database().await?.url,
            shared.fresh_database().await?.url,
        );
        let list = serde_json::json!([
            {"name": "a", "url": a, "capacity": 10},
            {"name": "b", "url": b, "capacity": 10},
        ]);
        let env = Env::from_pairs([
            ("LANDLORD_TENANT_DATABASES".to_owned(), list.to_string()),
            ("LANDLORD_SECRETS_KEY".to_owned(), "A".repeat(43) + "="),
        ]);
        let servers = Servers::connect(landlord_database::servers::from_env(&env)?)?;
        let control = PgPool::connect(&control).await?;
        sqlx::query("CREATE TABLE tenants (id uuid PRIMARY KEY, key text NOT NULL)").execute(&control).await?;

        // A bridge tenant made on a (a tie goes to the first listed)...
        let made = spec("auda");
        let ok = servers.run("provision", &command(&made), &DeliveryInfo::direct(1)).await?;
        assert_eq!(ok.outputs["database.server"], "a");
        // ... and one placed on b that provisioning never got further with.
        let placed = spec("audb");
        let placing = command(&placed);
        sqlx::query("INSERT INTO tenants VALUES ($1::uuid, $2)")
            .bind(&placed.tenant_id)
            .bind(&placed.key)
            .execute(&control)
            .await?;
        servers.prepare().await?;
        let pool = |name| servers.server(name).map(|p| p.pool().clone()).context("no such server");
        let (pool_a, pool_b) = (pool("a")?, pool("b")?);
        let mut conn = pool_b.acquire().await?;
        let tenant = Tenant::from_command(&placed, &placing)?;
        marker::write(&mut conn, PLACEMENT, &placed.tenant_id, &tenant, Some("b")).await?;
        drop(conn);

        let on_a = objects("a", &pool_a, &control).await?;
        let schema = format!("tenant_{}", made.key.replace('-', "_"));
        let kinds: BTreeMap<&str, &Object> = on_a.iter().map(|o| (o.kind, o)).collect();
        assert_eq!(kinds.keys().copied().collect::<Vec<_>>(), ["postgres.role", "postgres.schema"], "{on_a:?}");
        let found = kinds["postgres.schema"];
        assert_eq!((found.external_id.as_str(), found.server.as_deref()), (schema.as_str(), Some("a")));
        assert_eq!(found.key.as_deref(), Some(made.key.as_str()));
        let on_b = objects("b", &pool_b, &control).await?;
        let lone = Object {
            kind: PLACEMENT,
            external_id: placed.tenant_id.clone(),
            tenant_id: placed.tenant_id.clone(),
            key: Some(placed.key.clone()),
            server: Some("b".into()),
        };
        assert_eq!(on_b, std::slice::from_ref(&lone));

        // Removing the schema goes to a (the resource names it), under the
        // saga its marker names now.
        let Some(Marking::Marked(owner)) = marking(&pool_a, found).await? else { panic!("the schema is marked") };
        let ok =
            servers.run("deprovision", &super::super::compensation(found, &owner)?, &DeliveryInfo::direct(0)).await?;
        assert!(!ok.outputs.contains_key("fenced"), "{ok:?}");
        assert!(!schema_on(&a, &schema).await?, "{schema} removed from a");
        // The lone placement: its tenant is found on b, the marker goes.
        let Some(Marking::Marked(owner)) = marking(&pool_b, &lone).await? else { panic!("the placement is lone") };
        assert_eq!(owner.saga_id.as_deref(), Some(placing.saga_id.as_str()));
        servers.run("deprovision", &super::super::compensation(&lone, &owner)?, &DeliveryInfo::direct(0)).await?;
        assert!(matches!(marking(&pool_b, &lone).await?, Some(Marking::Gone)));
        assert!(objects("b", &pool_b, &control).await?.is_empty());
        Ok(())
    }
}
