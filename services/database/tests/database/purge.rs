//! database.purge per tier: schema, database, rows and role gone, the
//! sealed password and markers with them; what is gone already is success;
//! another tenant's object is refused; a privilege taken from the worker
//! makes the purge retryable, and it succeeds once the privilege is back.

use super::helpers::*;

#[tokio::test]
async fn a_bridge_purge_drops_schema_role_password_and_markers() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("purb"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let role = ok.outputs["database.role"].clone();
    let mut session = f.connect_as(&ok, &f.database).await?;
    f.lifecycle("suspend", &spec, &[]).await?;
    f.lifecycle("purge", &spec, &[]).await?;
    assert!(!f.schema_exists(&role).await?);
    assert!(!f.role_exists(&role).await?);
    assert!(!f.password_kept(&spec).await?);
    for kind in ["postgres.role", "postgres.schema"] {
        assert_eq!(f.marker(kind, &role).await?, None, "{kind}");
    }
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err());
    // Gone already: success.
    f.lifecycle("purge", &spec, &[]).await?;
    Ok(())
}

#[tokio::test]
async fn a_silo_purge_drops_the_database_and_the_role() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("purs"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    let (role, database) = (ok.outputs["database.role"].clone(), ok.outputs["database.name"].clone());
    let _session = f.connect_as(&ok, &database).await?;
    f.lifecycle("purge", &spec, &[]).await?;
    f.lifecycle("purge", &spec, &[]).await?;
    assert!(!f.database_exists(&database).await?);
    assert!(!f.role_exists(&role).await?);
    assert!(!f.password_kept(&spec).await?);
    assert_eq!(f.marker("postgres.database", &database).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_pooled_purge_deletes_the_tenants_rows_only() -> Result<()> {
    let f = Fixture::new().await?;
    let (one, other) = (tenant(&unique_key("purp"), pb::Tier::Pooled), tenant(&unique_key("purq"), pb::Tier::Pooled));
    f.provision(&one).await?;
    f.provision(&other).await?;
    f.lifecycle("purge", &one, &[]).await?;
    f.lifecycle("purge", &one, &[]).await?;
    let count = |id: String| {
        let f = &f;
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM landlord_pooled.settings WHERE tenant_id = $1)
                      + (SELECT count(*) FROM landlord_pooled.tenants WHERE tenant_id = $1)",
            )
            .bind(id)
            .fetch_one(&mut f.admin().await?)
            .await?;
            anyhow::Ok(n)
        }
    };
    assert_eq!(count(one.tenant_id.clone()).await?, 0);
    assert_eq!(count(other.tenant_id.clone()).await?, 4);
    assert_eq!(f.marker("postgres.pooled_tenant", &one.tenant_id).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_purge_never_drops_what_another_tenants_marker_names() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("purf"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let schema = ok.outputs["database.schema"].clone();
    let someone_else = uuid::Uuid::new_v4().to_string();
    sqlx::query("UPDATE landlord_admin.markers SET tenant_id = $2 WHERE kind = 'postgres.schema' AND name = $1")
        .bind(&schema)
        .bind(&someone_else)
        .execute(&mut f.admin().await?)
        .await?;
    let refused = f.lifecycle("purge", &spec, &[]).await.unwrap_err();
    assert_eq!((refused.code.as_str(), refused.retryable), ("conflicting_owner", false), "{refused}");
    assert!(refused.message.contains(&someone_else));
    assert!(f.schema_exists(&schema).await? && f.role_exists(&schema).await?, "nothing dropped");
    Ok(())
}

#[tokio::test]
async fn a_purge_without_a_privilege_is_retried_and_ends_once_it_is_back() -> Result<()> {
    let (f, worker) = Fixture::unprivileged().await?;
    let spec = tenant(&unique_key("purv"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let schema = ok.outputs["database.schema"].clone();
    let revoke = format!("REVOKE DELETE ON landlord_admin.markers FROM {worker}");
    sqlx::query(sqlx::AssertSqlSafe(revoke)).execute(&mut f.admin().await?).await?;
    for _ in 0..2 {
        let failed = f.lifecycle("purge", &spec, &[]).await.unwrap_err();
        assert_eq!((failed.code.as_str(), failed.retryable), ("permission_denied", true), "{failed}");
        assert!(f.schema_exists(&schema).await?, "nothing half done: the transaction rolled back");
    }
    let grant = format!("GRANT DELETE ON landlord_admin.markers TO {worker}");
    sqlx::query(sqlx::AssertSqlSafe(grant)).execute(&mut f.admin().await?).await?;
    f.lifecycle("purge", &spec, &[]).await?;
    assert!(!f.schema_exists(&schema).await?);
    assert!(!f.role_exists(&schema).await?);
    assert!(!f.password_kept(&spec).await?);
    Ok(())
}
