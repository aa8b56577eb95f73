//! database.export per tier against a real s3s-fs: a row the tenant's own
//! role wrote is in the archive, the manifest's row counts and SHA-256 match
//! what was written, and a bridge dump restores on its own (the extensions
//! its schema uses included, which pg_dump --schema leaves out).

use landlord_database::Archive;
use landlord_database::export::sha256_hex;

use super::helpers::*;

async fn fixture(s3: &S3Server) -> Result<(Fixture, Archive)> {
    let f = Fixture::with_env(&archive_env(s3)).await?;
    let archive = f.provisioner.archive().await.clone();
    Ok((f, archive))
}

fn prefix(spec: &pb::TenantSpec) -> String {
    format!("{}/{}/20261206T063400Z/", spec.key, spec.tenant_id)
}

/// Runs the export and reads back the manifest; checks every file it lists
/// against the archive (size and SHA-256), returning the manifest and the
/// files' contents by path.
async fn export(
    f: &Fixture,
    archive: &Archive,
    spec: &pb::TenantSpec,
) -> Result<(serde_json::Value, std::collections::HashMap<String, Vec<u8>>)> {
    let prefix = prefix(spec);
    let ok = f.lifecycle("export", spec, &[("export.prefix", &prefix)]).await?;
    let key = &ok.outputs["export.database"];
    assert_eq!(key, &format!("{prefix}database/manifest.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&archive.get(key).await?)?;
    assert_eq!(manifest["tenant_id"], spec.tenant_id.as_str());
    let mut files = std::collections::HashMap::new();
    for file in manifest["files"].as_array().context("files")? {
        let key = file["key"].as_str().context("key")?;
        assert!(key.starts_with(&format!("{prefix}database/")), "{key}");
        let body = archive.get(key).await?;
        assert_eq!(file["size"].as_u64(), Some(body.len() as u64), "{key}");
        assert_eq!(file["sha256"].as_str(), Some(sha256_hex(&body).as_str()), "{key}");
        files.insert(file["path"].as_str().context("path")?.to_owned(), body);
    }
    Ok((manifest, files))
}

fn rows(manifest: &serde_json::Value, table: &str) -> Option<i64> {
    manifest["tables"].as_array()?.iter().find(|t| t["name"] == table)?["rows"].as_i64()
}

#[tokio::test]
async fn a_bridge_export_has_the_tenants_rows_and_the_extensions_its_schema_uses() -> Result<()> {
    let s3 = S3Server::shared().await;
    let (f, archive) = fixture(s3).await?;
    let spec = tenant(&unique_key("expb"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let schema = ok.outputs["database.schema"].clone();
    // An extension's type in the tenant's table (installed by an operator:
    // tenants cannot create extensions).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE EXTENSION IF NOT EXISTS citext; ALTER TABLE {schema}.accounts ADD COLUMN nick public.citext"
    )))
    .execute(&mut f.admin().await?)
    .await?;
    let mut session = f.connect_as(&ok, &f.database).await?;
    sqlx::query("INSERT INTO accounts (name) VALUES ('written-by-the-tenant')").execute(&mut session).await?;
    drop(session);
    // Offboarding suspends first: the export does not need the tenant's login.
    f.lifecycle("suspend", &spec, &[]).await?;

    let (manifest, files) = export(&f, &archive, &spec).await?;
    assert_eq!(manifest["tier"], "bridge");
    assert_eq!(manifest["extensions"], serde_json::json!(["citext"]));
    let (accounts,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {schema}.accounts")))
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert_eq!(rows(&manifest, &format!("{schema}.accounts")), Some(accounts));
    assert_eq!(rows(&manifest, &format!("{schema}.roles")), Some(3));
    let dump = String::from_utf8(files["database/schema.sql"].clone())?;
    let extension =
        dump.find("CREATE EXTENSION IF NOT EXISTS \"citext\" WITH SCHEMA \"public\";").context("no extension")?;
    assert!(extension < dump.find("CREATE TABLE").context("no table")?, "the extension comes first");
    assert!(dump.contains("written-by-the-tenant"));

    // The dump restores into an empty database as it is.
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    let target = postgres.fresh_database().await?;
    let path = scratch_dir("export")?.join("schema.sql");
    std::fs::write(&path, &dump)?;
    let psql = pg_bin_dir()?.join("psql");
    let out = std::process::Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path)
        .arg(&target.url)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (nick_type, restored): (String, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = '{schema}.accounts'::regclass AND attname = 'nick'),
                (SELECT count(*) FROM {schema}.accounts WHERE name = 'written-by-the-tenant')"
    )))
    .fetch_one(&mut PgConnection::connect(&target.url).await?)
    .await?;
    assert_eq!((nick_type.as_str(), restored), ("citext", 1));
    Ok(())
}

#[tokio::test]
async fn a_silo_export_dumps_the_tenants_database() -> Result<()> {
    let s3 = S3Server::shared().await;
    let (f, archive) = fixture(s3).await?;
    let spec = tenant(&unique_key("exps"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    let mut session = f.connect_as(&ok, &ok.outputs["database.name"]).await?;
    sqlx::query("INSERT INTO accounts (name) VALUES ('silo-row')").execute(&mut session).await?;
    drop(session);
    let (manifest, files) = export(&f, &archive, &spec).await?;
    assert_eq!(manifest["tier"], "silo");
    let schema = &ok.outputs["database.schema"];
    assert_eq!(rows(&manifest, &format!("{schema}.roles")), Some(3));
    assert!(rows(&manifest, &format!("{schema}.accounts")).is_some_and(|n| n >= 1));
    let dump = String::from_utf8(files["database/database.sql"].clone())?;
    assert!(dump.contains("silo-row"));
    Ok(())
}

#[tokio::test]
async fn a_pooled_export_holds_the_tenants_rows_only_read_through_row_level_security() -> Result<()> {
    let s3 = S3Server::shared().await;
    let (f, archive) = fixture(s3).await?;
    let (one, other) = (tenant(&unique_key("expp"), pb::Tier::Pooled), tenant(&unique_key("expq"), pb::Tier::Pooled));
    f.provision(&one).await?;
    f.provision(&other).await?;
    // The application writes a row for the tenant, as the app role.
    let mut admin = f.admin().await?;
    let mut tx = admin.begin().await?;
    sqlx::query("SET LOCAL ROLE landlord_pooled_app").execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(&one.tenant_id).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO landlord_pooled.settings (name, value) VALUES ('theme', 'written-by-the-app')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Offboarding suspends first, which hides the rows from the app role;
    // the export still reads them.
    f.lifecycle("suspend", &one, &[]).await?;

    let (manifest, files) = export(&f, &archive, &one).await?;
    assert_eq!(manifest["tier"], "pooled");
    assert_eq!(rows(&manifest, "landlord_pooled.settings"), Some(4));
    assert_eq!(rows(&manifest, "landlord_pooled.tenants"), Some(1));
    let settings = String::from_utf8(files["database/settings.csv"].clone())?;
    assert_eq!(settings.lines().count(), 5, "header and four rows: {settings}");
    assert!(settings.contains("written-by-the-app"));
    assert!(!settings.contains(&other.tenant_id), "another tenant's rows: {settings}");
    let tenants = String::from_utf8(files["database/tenants.csv"].clone())?;
    assert!(tenants.contains(&one.tenant_id) && !tenants.contains(&other.tenant_id), "{tenants}");
    Ok(())
}

#[tokio::test]
async fn an_export_without_a_prefix_or_a_tenant_is_refused() -> Result<()> {
    let s3 = S3Server::shared().await;
    let (f, _archive) = fixture(s3).await?;
    let spec = tenant(&unique_key("expx"), pb::Tier::Bridge);
    let missing = f.lifecycle("export", &spec, &[]).await.unwrap_err();
    assert_eq!((missing.code.as_str(), missing.retryable), ("missing_input", false));
    let bad = f.lifecycle("export", &spec, &[("export.prefix", "../escape/")]).await.unwrap_err();
    assert_eq!(bad.code, "export_prefix.invalid");
    let never = f.lifecycle("export", &spec, &[("export.prefix", "k/id/t/")]).await.unwrap_err();
    assert_eq!(never.code, "not_provisioned");
    Ok(())
}

/// A worker that is not a superuser exports a suspended silo tenant (whose
/// role, the worker's way in, lost CONNECT) and a bridge tenant, and
/// leaves the suspended database's privileges as it found them.
#[tokio::test]
async fn a_worker_without_superuser_exports_suspended_tenants() -> Result<()> {
    let s3 = S3Server::shared().await;
    let (f, worker) = Fixture::unprivileged_with_env(&archive_env(s3)).await?;
    let archive = f.provisioner.archive().await.clone();
    let silo = tenant(&unique_key("expu"), pb::Tier::Silo);
    let ok = f.provision(&silo).await?;
    let database = ok.outputs["database.name"].clone();
    f.lifecycle("suspend", &silo, &[]).await?;
    let (manifest, files) = export(&f, &archive, &silo).await?;
    assert_eq!(rows(&manifest, &format!("{}.roles", ok.outputs["database.schema"])), Some(3));
    assert!(files["database/database.sql"].len() > 1000);
    let (worker_may,): (bool,) = sqlx::query_as("SELECT has_database_privilege($1, $2, 'CONNECT')")
        .bind(&worker)
        .bind(&database)
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert!(!worker_may, "the worker took its CONNECT back");
    let pooled = tenant(&unique_key("expv"), pb::Tier::Pooled);
    f.provision(&pooled).await?;
    f.lifecycle("suspend", &pooled, &[]).await?;
    let (manifest, _) = export(&f, &archive, &pooled).await?;
    assert_eq!(rows(&manifest, "landlord_pooled.settings"), Some(3));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_archive_is_retryable() -> Result<()> {
    let mut s3 = S3Server::start().await?;
    let (f, _archive) = fixture(&s3).await?;
    let spec = tenant(&unique_key("expd"), pb::Tier::Bridge);
    f.provision(&spec).await?;
    s3.kill();
    let failed = f.lifecycle("export", &spec, &[("export.prefix", &prefix(&spec))]).await.unwrap_err();
    assert!(failed.retryable, "{failed}");
    s3.restart().await?;
    f.lifecycle("export", &spec, &[("export.prefix", &prefix(&spec))]).await?;
    Ok(())
}
