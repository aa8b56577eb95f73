//! Provision and compensation of a bridge tenant: idempotent, the password
//! only a reference, partial provisions undone.

use super::helpers::*;

#[tokio::test]
async fn bridge_provision_twice_is_once_and_the_password_is_only_a_reference() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("acme");
    let spec = tenant(&key, pb::Tier::Bridge);
    let first = f.provision(&spec).await?;
    let second = f.provision(&spec).await?;
    assert_eq!(first.outputs, second.outputs);
    let schema = format!("tenant_{}", key.replace('-', "_"));
    assert_eq!(first.outputs["database.schema"], schema);
    assert_eq!(first.outputs["database.role"], schema);
    assert_eq!(first.outputs["database.name"], f.database);
    assert_eq!(first.outputs["database.seed"], "default@1");
    let kinds: Vec<_> = first.resources.iter().map(|r| (r.kind.as_str(), r.external_id.as_str())).collect();
    assert_eq!(kinds, [("postgres.role", schema.as_str()), ("postgres.schema", schema.as_str())]);

    // The password is in the store, and nowhere in the result.
    let password = f.password(&first).await?;
    assert_eq!(password.len(), 43);
    let encoded = first.encode_to_vec();
    assert!(!encoded.windows(password.len()).any(|w| w == password.as_bytes()), "password in the StepOk");
    assert!(first.outputs["database.password_ref"].starts_with("landlord-secret:database/"));
    // …and stored encrypted.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT ciphertext FROM landlord_secrets.secrets WHERE owner = $1")
        .bind(&spec.tenant_id)
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert!(!sealed.windows(password.len()).any(|w| w == password.as_bytes()));
    // The role's stored verifier is SCRAM, and the password works.
    let (verifier,): (String,) = sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&schema)
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));

    // Exactly one schema, seeded once, owned by the role, marked.
    let mut tenant = f.connect_as(&first, &f.database).await?;
    let (roles, settings, tables): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM roles), (SELECT count(*) FROM settings),
                (SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema())",
    )
    .fetch_one(&mut tenant)
    .await?;
    assert_eq!((roles, settings, tables), (3, 3, 10));
    sqlx::query("INSERT INTO accounts (name) VALUES ('works')").execute(&mut tenant).await?;
    let (comment, owner): (Option<String>, String) = sqlx::query_as(
        "SELECT obj_description(oid, 'pg_namespace'), pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
    )
    .bind(&schema)
    .fetch_one(&mut f.admin().await?)
    .await?;
    assert_eq!(comment, None, "no marker in the world-readable catalog");
    assert_eq!(owner, schema);
    let (detail,): (String,) =
        sqlx::query_as("SELECT detail FROM landlord_admin.markers WHERE kind = 'postgres.schema' AND name = $1")
            .bind(&schema)
            .fetch_one(&mut f.admin().await?)
            .await?;
    assert!(detail.starts_with("seed=default@1 sha256="), "{detail}");
    let saga = format!("saga-{key}");
    for kind in ["postgres.role", "postgres.schema"] {
        assert_eq!(f.marker(kind, &schema).await?, Some((spec.tenant_id.clone(), saga.clone())), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn compensation_twice_is_once_and_forgets_the_password() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("gone");
    let spec = tenant(&key, pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let role = ok.outputs["database.role"].clone();
    let mut session = f.connect_as(&ok, &f.database).await?;
    let mut undo = command(&spec, true);
    undo.resources = ok.resources.clone();
    f.run("deprovision", &undo).await?;
    f.run("deprovision", &undo).await?;
    assert!(!f.schema_exists(&role).await?);
    assert!(!f.role_exists(&role).await?);
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    assert!(f.provisioner.secrets().get(&reference).await?.is_none());
    // The tenant's open session was ended.
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err());
    // Resources that name someone else's objects are refused.
    let mut forged = command(&spec, true);
    forged.resources =
        vec![pb::Resource { kind: "postgres.schema".into(), external_id: "public".into(), ..Default::default() }];
    let refused = f.run("deprovision", &forged).await.unwrap_err();
    assert_eq!(refused.code, "resource_mismatch");
    assert!(f.schema_exists("public").await?);
    Ok(())
}

#[tokio::test]
async fn compensation_after_a_partial_provision_removes_the_role() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("half");
    let spec = tenant(&key, pb::Tier::Bridge);
    let role = format!("tenant_{}", key.replace('-', "_"));
    // What a run that stopped after the role (an older version, or the silo
    // tier before CREATE DATABASE) leaves: a marked role, no schema.
    let mut admin = f.admin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let mark = quote_literal(&format!("landlord:tenant={}", spec.tenant_id)).map_err(anyhow::Error::msg)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON ROLE {} IS {mark}",
        quote_ident(&role).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    f.deprovision(&spec).await?;
    assert!(!f.role_exists(&role).await?);
    f.deprovision(&spec).await?;
    // And a provision over such a half-made tenant completes it.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON ROLE {} IS {mark}",
        quote_ident(&role).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    let ok = f.provision(&spec).await?;
    assert!(f.schema_exists(&role).await?);
    assert_eq!(ok.outputs["database.role"], role);
    // The older COMMENT marker was read, and replaced by a marker row.
    assert_eq!(f.marker("postgres.role", &role).await?, Some((spec.tenant_id.clone(), format!("saga-{key}"))));
    let (comment,): (Option<String>,) =
        sqlx::query_as("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&mut admin)
            .await?;
    assert_eq!(comment, None, "the older marker is dropped once rewritten");
    Ok(())
}
