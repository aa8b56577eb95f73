//! Markers and fencing: a retry adopts, a stale compensation leaves what it
//! adopted, objects not marked as ours are conflicts.

use super::helpers::*;

/// Issue 22's fencing in every tier: a retry (saga S2) adopts what saga S1
/// made; S1's late compensation then leaves it, succeeding with a note;
/// S2's own compensation removes it.
#[tokio::test]
async fn a_retry_adopts_and_a_stale_compensation_leaves_what_it_adopted() -> Result<()> {
    let f = Fixture::new().await?;
    for tier in [pb::Tier::Bridge, pb::Tier::Silo, pb::Tier::Pooled] {
        let spec = tenant(&unique_key("adopt"), tier);
        let (s1, s2) = (format!("s1-{}", spec.key), format!("s2-{}", spec.key));
        let (kind, name) = fenced_object(&spec, tier);
        let role = format!("tenant_{}", spec.key.replace('-', "_"));
        let first = f.run("provision", &in_saga(&s1, &spec, false)).await?;
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s1.clone())), "{tier:?}");

        let second = f.run("provision", &in_saga(&s2, &spec, false)).await?;
        assert_eq!(first.outputs, second.outputs, "{tier:?}: adopting changes nothing the tenant sees");
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s2.clone())), "{tier:?}");
        if tier != pb::Tier::Pooled {
            assert_eq!(f.marker("postgres.role", &role).await?, Some((spec.tenant_id.clone(), s2.clone())));
        }

        // S1's compensation, redelivered late, with the resources S1 recorded.
        let mut stale = in_saga(&s1, &spec, true);
        stale.resources = first.resources.clone();
        let left = f.run("deprovision", &stale).await?;
        assert!(left.outputs["fenced"].contains(&format!("{kind} {name} belongs to saga {s2}")), "{tier:?}: {left:?}");
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s2.clone())), "{tier:?}");
        match tier {
            pb::Tier::Pooled => {
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM landlord_pooled.tenants WHERE tenant_id = $1")
                    .bind(&spec.tenant_id)
                    .fetch_one(&mut f.admin().await?)
                    .await?;
                assert_eq!(n, 1, "the pooled row stays");
            }
            _ => {
                assert!(f.role_exists(&role).await?);
                assert!(f.password_kept(&spec).await?, "{tier:?}: the adopted role's password stays");
                // The tenant still logs in, with the password it was given.
                f.connect_as(&second, &second.outputs["database.name"]).await?;
            }
        }

        // S2's own compensation removes everything.
        let mut own = in_saga(&s2, &spec, true);
        own.resources = second.resources.clone();
        let done = f.run("deprovision", &own).await?;
        assert!(!done.outputs.contains_key("fenced"), "{tier:?}: {done:?}");
        assert_eq!(f.marker(kind, &name).await?, None);
        if tier != pb::Tier::Pooled {
            assert!(!f.role_exists(&role).await? && !f.password_kept(&spec).await?, "{tier:?}");
            assert!(!f.schema_exists(&role).await? && !f.database_exists(&role).await?, "{tier:?}");
        }
    }
    Ok(())
}

/// A provision that fails after keeping the password (the first thing it
/// does) leaves only that; the compensation of the failed step — which has
/// no resources to go by — finds it from the tenant spec and removes it,
/// and leaves the object that made the provision fail.
#[tokio::test]
async fn the_compensation_of_a_failed_provision_removes_its_kept_password() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("partial");
    let name = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", quote_ident(&name).map_err(anyhow::Error::msg)?)))
        .execute(&mut f.admin().await?)
        .await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    assert!(f.password_kept(&spec).await?, "the partial effect");
    assert!(!f.role_exists(&name).await?, "role and schema are one transaction");
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(!f.password_kept(&spec).await?);
    assert!(f.schema_exists(&name).await?, "not ours: left alone");
    Ok(())
}

#[tokio::test]
async fn objects_not_marked_as_ours_are_conflicts_never_reused_or_dropped() -> Result<()> {
    let f = Fixture::new().await?;
    let mut admin = f.admin().await?;
    // A schema of that name made by someone else.
    let key = unique_key("taken");
    let name = format!("tenant_{}", key.replace('-', "_"));
    let quoted = quote_ident(&name).map_err(anyhow::Error::msg)?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {quoted}"))).execute(&mut admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {quoted}.precious (x int)"))).execute(&mut admin).await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    let failure = f.run("provision", &command(&spec, false)).await.unwrap_err();
    assert_eq!((failure.code.as_str(), failure.retryable), ("conflict", false), "{failure}");
    assert!(failure.message.contains("not marked"), "{failure}");
    // Nothing was left behind by the failed provision (one transaction).
    assert!(!f.role_exists(&name).await?);
    // A compensation leaves it, and says so.
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(f.schema_exists(&name).await?);
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {quoted}.precious"))).execute(&mut admin).await?;

    // Another tenant's marker is not ours either.
    let other = tenant(&unique_key("owner"), pb::Tier::Bridge);
    f.provision(&other).await?;
    let mut impostor = other.clone();
    impostor.tenant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(f.run("provision", &command(&impostor, false)).await.unwrap_err().code, "conflict");
    let left = f.run("deprovision", &command(&impostor, true)).await?;
    assert!(left.outputs["fenced"].contains(&format!("belongs to tenant {}", other.tenant_id)), "{left:?}");
    f.provision(&other).await?;

    // A role made by hand.
    let key = unique_key("byhand");
    let role = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {}", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(f.role_exists(&role).await?);
    Ok(())
}
