//! The silo and pooled tiers.

use super::helpers::*;

#[tokio::test]
async fn silo_tenants_get_a_database_of_their_own() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("silo"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    assert_eq!(ok, f.provision(&spec).await?);
    let name = ok.outputs["database.name"].clone();
    assert_eq!(ok.outputs["database.tier"], "silo");
    assert!(ok.resources.iter().any(|r| r.kind == "postgres.database" && r.external_id == name));
    let mut inside = f.connect_as(&ok, &name).await?;
    let (settings,): (i64,) = sqlx::query_as("SELECT count(*) FROM settings").fetch_one(&mut inside).await?;
    assert_eq!(settings, 3);
    // Not into the tenant-data database, and others not into this one.
    assert_eq!(sqlstate(&f.connect_as(&ok, &f.database).await.unwrap_err()).as_deref(), Some("42501"));
    let neighbour = f.provision(&tenant(&unique_key("next"), pb::Tier::Bridge)).await?;
    assert_eq!(sqlstate(&f.connect_as(&neighbour, &name).await.unwrap_err()).as_deref(), Some("42501"));

    // A half-made silo (database created, not marked yet) is finished.
    drop(inside);
    let mut admin = f.admin().await?;
    assert_eq!(
        f.marker("postgres.database", &name).await?,
        Some((spec.tenant_id.clone(), format!("saga-{}", spec.key)))
    );
    sqlx::query("DELETE FROM landlord_admin.markers WHERE kind = 'postgres.database' AND name = $1")
        .bind(&name)
        .execute(&mut admin)
        .await?;
    f.provision(&spec).await?;
    assert!(f.marker("postgres.database", &name).await?.is_some());
    // …and one its own saga's compensation finds unmarked is undone.
    sqlx::query("DELETE FROM landlord_admin.markers WHERE kind = 'postgres.database' AND name = $1")
        .bind(&name)
        .execute(&mut admin)
        .await?;

    f.deprovision(&spec).await?;
    f.deprovision(&spec).await?;
    assert!(!f.database_exists(&name).await?);
    assert!(!f.role_exists(&ok.outputs["database.role"]).await?);

    // A database of that name that is not ours: conflict, left alone.
    let key = unique_key("foreign");
    let foreign = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&foreign).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let spec = tenant(&key, pb::Tier::Silo);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    // The failed provision had kept a password and made the role before
    // it met the database: its compensation undoes both, and leaves the
    // database.
    assert!(f.role_exists(&foreign).await? && f.password_kept(&spec).await?);
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains(&format!("postgres.database {foreign} carries no marker")), "{left:?}");
    assert!(f.database_exists(&foreign).await?);
    assert!(!f.role_exists(&foreign).await?);
    assert!(!f.password_kept(&spec).await?);
    Ok(())
}

#[tokio::test]
async fn pooled_tenants_are_rows_behind_row_level_security() -> Result<()> {
    let f = Fixture::new().await?;
    let one = tenant(&unique_key("poolone"), pb::Tier::Pooled);
    let two = tenant(&unique_key("pooltwo"), pb::Tier::Pooled);
    let ok = f.provision(&one).await?;
    assert_eq!(ok, f.provision(&one).await?);
    f.provision(&two).await?;
    assert_eq!(ok.resources[0].kind, "postgres.pooled_tenant");
    assert!(!ok.outputs.contains_key("database.password_ref"));

    // An application role, as a deployment would make one.
    let app = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut admin = f.admin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {app} LOGIN PASSWORD 'app' IN ROLE landlord_pooled_app")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT CONNECT ON DATABASE {} TO {app}",
        quote_ident(&f.database).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(f.port)
        .username(&app)
        .password("app")
        .database(&f.database);
    let mut conn = PgConnection::connect_with(&options).await?;
    let (unset,): (i64,) = sqlx::query_as("SELECT count(*) FROM landlord_pooled.settings").fetch_one(&mut conn).await?;
    assert_eq!(unset, 0, "no tenant set: no rows");
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(&one.tenant_id).execute(&mut *tx).await?;
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT tenant_id FROM landlord_pooled.settings").fetch_all(&mut *tx).await?;
    assert_eq!(ids, vec![(one.tenant_id.clone(),)]);
    let sneaky = sqlx::query("INSERT INTO landlord_pooled.settings (tenant_id, name, value) VALUES ($1, 'x', 'y')")
        .bind(&two.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&sneaky).as_deref(), Some("42501"), "writing another tenant's row");
    tx.rollback().await?;

    // The key taken by another tenant id: conflict.
    let mut impostor = one.clone();
    impostor.tenant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(f.run("provision", &command(&impostor, false)).await.unwrap_err().code, "conflict");

    f.deprovision(&one).await?;
    f.deprovision(&one).await?;
    let (left_one, left_two): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM landlord_pooled.settings",
    )
    .bind(&one.tenant_id)
    .bind(&two.tenant_id)
    .fetch_one(&mut admin)
    .await?;
    assert_eq!((left_one, left_two), (0, 3));
    Ok(())
}
