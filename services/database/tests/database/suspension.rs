//! database.suspend and database.resume per tier: the tenant locked out
//! (its role cannot log in, its open session is closed; silo: CONNECT
//! revoked; pooled: its rows invisible to the application role), then let
//! back in exactly as before; both idempotent and fenced.

use super::helpers::*;

/// Waits until `session` is closed by the server.
async fn closed(session: &mut PgConnection) -> Result<()> {
    let polled = tokio::time::timeout(WAIT, async {
        // pg_terminate_backend signals; the backend ends at its next check.
        while sqlx::query("SELECT 1").execute(&mut *session).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    polled.await.context("the tenant's session was not closed")
}

#[tokio::test]
async fn a_suspended_bridge_tenant_cannot_log_in_until_resumed() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("susp"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let role = ok.outputs["database.role"].clone();
    let mut session = f.connect_as(&ok, &f.database).await?;
    sqlx::query("INSERT INTO accounts (name) VALUES ('before')").execute(&mut session).await?;

    let suspended = f.lifecycle("suspend", &spec, &[]).await?;
    assert_eq!(suspended.outputs["database.suspended"], "true");
    assert_eq!(suspended.outputs["database.sessions_ended"], "1");
    closed(&mut session).await?;
    assert!(!f.can_login(&role).await?);
    let refused = f.connect_as(&ok, &f.database).await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"), "{refused}");
    // Again: nothing changes, nothing fails.
    assert_eq!(f.lifecycle("suspend", &spec, &[]).await?.outputs["database.sessions_ended"], "0");

    f.lifecycle("resume", &spec, &[]).await?;
    f.lifecycle("resume", &spec, &[]).await?;
    assert!(f.can_login(&role).await?);
    let mut back = f.connect_as(&ok, &f.database).await?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM accounts WHERE name = 'before'").fetch_one(&mut back).await?;
    assert_eq!(n, 1, "the tenant's data is untouched");
    Ok(())
}

#[tokio::test]
async fn a_suspended_silo_tenant_loses_connect_and_gets_it_back() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("ssilo"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    let (role, database) = (ok.outputs["database.role"].clone(), ok.outputs["database.name"].clone());
    let mut session = f.connect_as(&ok, &database).await?;
    let may_connect = || async {
        let (may,): (bool,) = sqlx::query_as("SELECT has_database_privilege($1, $2, 'CONNECT')")
            .bind(&role)
            .bind(&database)
            .fetch_one(&mut f.admin().await?)
            .await?;
        anyhow::Ok(may)
    };
    let public_may_connect = || async {
        let (may,): (bool,) = sqlx::query_as("SELECT has_database_privilege('public', $1, 'CONNECT')")
            .bind(&database)
            .fetch_one(&mut f.admin().await?)
            .await?;
        anyhow::Ok(may)
    };
    assert!(may_connect().await?);
    // Someone opened the database to everybody: suspension closes that too.
    sqlx::query(sqlx::AssertSqlSafe(format!("GRANT CONNECT ON DATABASE {database} TO PUBLIC")))
        .execute(&mut f.admin().await?)
        .await?;

    f.lifecycle("suspend", &spec, &[]).await?;
    closed(&mut session).await?;
    assert!(!f.can_login(&role).await?);
    assert!(!may_connect().await?, "CONNECT revoked");
    assert!(!public_may_connect().await?);
    assert!(f.connect_as(&ok, &database).await.is_err());

    f.lifecycle("resume", &spec, &[]).await?;
    assert!(f.can_login(&role).await?);
    assert!(may_connect().await?);
    assert!(!public_may_connect().await?, "resume gives CONNECT back to the tenant only");
    let mut back = f.connect_as(&ok, &database).await?;
    sqlx::query("SELECT count(*) FROM roles").execute(&mut back).await?;
    Ok(())
}

/// The pooled tenant's rows as the application role sees them.
async fn seen_by_app(f: &Fixture, spec: &pb::TenantSpec) -> Result<i64> {
    let mut admin = f.admin().await?;
    let mut tx = admin.begin().await?;
    sqlx::query("SET LOCAL ROLE landlord_pooled_app").execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(&spec.tenant_id).execute(&mut *tx).await?;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM landlord_pooled.settings) + (SELECT count(*) FROM landlord_pooled.tenants)",
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(n)
}

#[tokio::test]
async fn a_suspended_pooled_tenants_rows_are_invisible_to_the_application_role() -> Result<()> {
    let f = Fixture::new().await?;
    let (one, other) =
        (tenant(&unique_key("psusp"), pb::Tier::Pooled), tenant(&unique_key("pother"), pb::Tier::Pooled));
    f.provision(&one).await?;
    f.provision(&other).await?;
    // Three seeded settings and the tenant's own row.
    assert_eq!(seen_by_app(&f, &one).await?, 4);

    f.lifecycle("suspend", &one, &[]).await?;
    f.lifecycle("suspend", &one, &[]).await?;
    assert_eq!(seen_by_app(&f, &one).await?, 0);
    assert_eq!(seen_by_app(&f, &other).await?, 4, "other tenants are not affected");
    // Nor can the application write for it.
    let mut admin = f.admin().await?;
    let mut tx = admin.begin().await?;
    sqlx::query("SET LOCAL ROLE landlord_pooled_app").execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(&one.tenant_id).execute(&mut *tx).await?;
    let refused =
        sqlx::query("INSERT INTO landlord_pooled.settings (name, value) VALUES ('x', 'y')").execute(&mut *tx).await;
    assert_eq!(refused.as_ref().err().and_then(sqlstate).as_deref(), Some("42501"), "{refused:?}");
    drop(tx);

    f.lifecycle("resume", &one, &[]).await?;
    assert_eq!(seen_by_app(&f, &one).await?, 4, "all back");
    Ok(())
}

#[tokio::test]
async fn suspend_leaves_what_another_tenants_marker_names() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("sfence"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let role = ok.outputs["database.role"].clone();
    sqlx::query("UPDATE landlord_admin.markers SET tenant_id = $2 WHERE kind = 'postgres.role' AND name = $1")
        .bind(&role)
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&mut f.admin().await?)
        .await?;
    let refused = f.lifecycle("suspend", &spec, &[]).await.unwrap_err();
    assert_eq!(refused.code, "conflicting_owner", "{refused}");
    assert!(!refused.retryable);
    assert!(f.can_login(&role).await?, "untouched");
    // A tenant that was never provisioned has nothing to suspend; its
    // compensation (resume after a failed suspend) has nothing to undo.
    let never = tenant(&unique_key("never"), pb::Tier::Bridge);
    assert_eq!(f.lifecycle("suspend", &never, &[]).await.unwrap_err().code, "not_provisioned");
    let mut undo = in_saga("undo", &never, true);
    undo.compensation = "suspend".into();
    f.run("resume", &undo).await?;
    Ok(())
}

/// The same lifecycle run by a worker that is not a superuser (a role with
/// CREATEROLE and CREATEDB, as deployed): a silo tenant suspended, resumed
/// and purged, its open session closed on the way.
#[tokio::test]
async fn a_worker_without_superuser_suspends_resumes_and_purges_a_silo_tenant() -> Result<()> {
    let (f, _worker) = Fixture::unprivileged().await?;
    let spec = tenant(&unique_key("usilo"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    let (role, database) = (ok.outputs["database.role"].clone(), ok.outputs["database.name"].clone());
    let mut session = f.connect_as(&ok, &database).await?;
    f.lifecycle("suspend", &spec, &[]).await?;
    closed(&mut session).await?;
    assert!(f.connect_as(&ok, &database).await.is_err());
    f.lifecycle("resume", &spec, &[]).await?;
    let mut back = f.connect_as(&ok, &database).await?;
    sqlx::query("SELECT count(*) FROM roles").execute(&mut back).await?;
    f.lifecycle("suspend", &spec, &[]).await?;
    f.lifecycle("purge", &spec, &[]).await?;
    assert!(!f.database_exists(&database).await? && !f.role_exists(&role).await?);
    Ok(())
}
