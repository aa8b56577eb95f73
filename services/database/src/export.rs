//! `database.export` (docs/lifecycle.md, "Export"): the tenant's data to the
//! archive under the saga's `export.prefix` (input), as
//!
//! - bridge: `database/schema.sql` — `pg_dump --schema` of its schema,
//!   preceded by the extensions the schema uses ([`dump`]);
//! - silo: `database/database.sql` — `pg_dump` of its database;
//! - pooled: `database/<table>.csv` per shared table — the rows the tenant
//!   sees through row-level security, read with `COPY (SELECT …) TO STDOUT`
//!   as `landlord_pooled_export`, a role without BYPASSRLS, with
//!   `landlord.tenant_id` set (pg_dump turns row security off, which such a
//!   role cannot do);
//!
//! and `database/manifest.json`: the tables with their row counts and the
//! files with size and SHA-256. Dump and counts read one snapshot (a
//! REPEATABLE READ transaction; pg_dump imports its snapshot), which also
//! holds the tenant's lock, so no suspend, resume or purge of the tenant
//! runs meanwhile. The output `export.database` names the manifest's key.
//! Writing again replaces what an earlier attempt wrote.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use landlord_contract::pb;
use landlord_runtime::StepFailure;
use sqlx::{Connection as _, PgConnection};

use crate::archive::Archive;
use crate::catalog::{ident, literal};
use crate::dump::{self, DumpRequest};
use crate::failure::classify;
use crate::{Provisioner, SecretStore, Tenant, acl_update, marker, owned, pooled};

/// The input naming where the export goes: `<key>/<tenant id>/<time>/`.
pub const PREFIX_INPUT: &str = "export.prefix";
/// The output naming the manifest's key.
pub const MANIFEST_OUTPUT: &str = "export.database";

/// One file of the export, as the manifest lists it.
#[derive(Debug, Clone)]
struct File {
    /// Relative to the export's prefix (`database/schema.sql`).
    path: String,
    body: Vec<u8>,
    content_type: &'static str,
}

/// What was exported, before it is written.
#[derive(Debug, Default)]
struct Export {
    /// (qualified table name, rows).
    tables: Vec<(String, i64)>,
    files: Vec<File>,
    extensions: Vec<String>,
    /// When the snapshot was taken (UTC, RFC 3339).
    taken_at: String,
}

/// Checks the prefix the orchestrator chose: relative, ends with `/`, no
/// `..` or empty segments.
pub fn check_prefix(prefix: &str) -> Result<(), StepFailure> {
    let segments: Vec<&str> = prefix.strip_suffix('/').map(|p| p.split('/').collect()).unwrap_or_default();
    let fine = !segments.is_empty()
        && segments.iter().all(|s| !s.is_empty() && *s != "." && *s != "..")
        && !prefix.chars().any(char::is_control);
    if fine {
        Ok(())
    } else {
        Err(StepFailure::permanent(
            "export_prefix.invalid",
            format!("{PREFIX_INPUT} {prefix:?} must be a relative key prefix ending with '/'"),
        ))
    }
}

pub async fn export<S: SecretStore>(
    p: &Provisioner<S>,
    archive: &Archive,
    tenant: &Tenant,
    prefix: &str,
) -> Result<pb::StepOk, StepFailure> {
    check_prefix(prefix)?;
    p.prepare().await?;
    // The tenant's lock for the whole export, on a connection of its own
    // (closing it ends the lock whatever happens), taken before the
    // snapshot so the snapshot sees what the last suspend or purge left.
    let mut guard = connect(p, p.database()).await?;
    marker::lock_tenant_session(&mut guard, tenant).await?;
    let export = match tenant.tier {
        pb::Tier::Pooled => export_pooled(&mut guard, tenant).await,
        pb::Tier::Silo => export_silo(p, &mut guard, tenant).await,
        _ => export_bridge(p, &mut guard, tenant).await,
    };
    let _ = guard.close().await;
    let export = export?;
    let mut files = Vec::new();
    for file in &export.files {
        let key = format!("{prefix}{}", file.path);
        archive.put(&key, file.body.clone(), file.content_type).await?;
        files.push(serde_json::json!({
            "path": file.path,
            "key": key,
            "size": file.body.len(),
            "sha256": sha256_hex(&file.body),
        }));
    }
    let tier = match tenant.tier {
        pb::Tier::Pooled => "pooled",
        pb::Tier::Silo => "silo",
        _ => "bridge",
    };
    let manifest = serde_json::json!({
        "format": 1,
        "tenant_id": tenant.id,
        "tenant_key": tenant.key.as_str(),
        "tier": tier,
        "taken_at": export.taken_at,
        "extensions": export.extensions,
        "tables": export.tables.iter().map(|(name, rows)| serde_json::json!({"name": name, "rows": rows})).collect::<Vec<_>>(),
        "files": files,
    });
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StepFailure::permanent("manifest", format!("writing the manifest: {e}")))?;
    let manifest_key = format!("{prefix}database/manifest.json");
    archive.put(&manifest_key, body, "application/json").await?;
    tracing::info!(%manifest_key, tables = export.tables.len(), files = export.files.len(), "tenant data exported");
    Ok(pb::StepOk {
        resources: Vec::new(),
        outputs: HashMap::from([
            (MANIFEST_OUTPUT.to_owned(), manifest_key),
            ("export.database.location".to_owned(), format!("s3://{}/{prefix}database/", archive.bucket())),
        ]),
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the export's snapshot on `conn`: REPEATABLE READ, read only.
async fn snapshot(conn: &mut PgConnection) -> Result<(String, String), StepFailure> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("opening the export's snapshot", &e))?;
    sqlx::query_as("SELECT pg_export_snapshot(), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify("exporting the snapshot", &e))
}

/// Row counts of the ordinary tables of the schemas `where_schemas`
/// selects (partitions counted through their parent).
async fn count_tables(conn: &mut PgConnection, where_schemas: &str) -> Result<Vec<(String, i64)>, StepFailure> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {where_schemas} ORDER BY 1, 2"
    );
    let tables: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify("listing the tables", &e))?;
    let mut counted = Vec::with_capacity(tables.len());
    for (schema, table) in tables {
        let sql = format!("SELECT count(*) FROM {}.{}", ident(&schema)?, ident(&table)?);
        let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(&format!("counting the rows of {schema}.{table}"), &e))?;
        counted.push((format!("{schema}.{table}"), rows));
    }
    Ok(counted)
}

/// Ends the snapshot's read-only transaction.
async fn end_snapshot(conn: &mut PgConnection) -> Result<(), StepFailure> {
    sqlx::query("COMMIT").execute(conn).await.map(|_| ()).map_err(|e| classify("ending the snapshot", &e))
}

async fn connect(p: &Provisioner<impl SecretStore>, database: &str) -> Result<PgConnection, StepFailure> {
    PgConnection::connect_with(&p.connect_to(database))
        .await
        .map_err(|e| classify(&format!("connecting to {database}"), &e))
}

async fn export_bridge<S: SecretStore>(
    p: &Provisioner<S>,
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<Export, StepFailure> {
    let schema = &tenant.names.schema;
    if !owned::schema(conn, tenant).await? {
        owned::missing(tenant, "schema", schema, false)?;
    }
    let (snapshot_id, taken_at) = snapshot(conn).await?;
    let extensions = dump::extensions(conn, schema).await?;
    let tables = count_tables(conn, &format!("n.nspname = {}", literal(schema)?)).await?;
    let request = DumpRequest { database: p.database(), schema: Some(schema), snapshot: &snapshot_id };
    let mut body = dump::extension_preamble(&extensions, schema)?.into_bytes();
    body.extend(dump::run(p.settings(), request).await?);
    end_snapshot(conn).await?;
    Ok(Export {
        tables,
        files: vec![File { path: "database/schema.sql".into(), body, content_type: "application/sql" }],
        extensions: extensions.into_iter().map(|e| e.name).collect(),
        taken_at,
    })
}

async fn export_silo<S: SecretStore>(
    p: &Provisioner<S>,
    guard: &mut PgConnection,
    tenant: &Tenant,
) -> Result<Export, StepFailure> {
    let database = &tenant.names.database;
    let role = owned::role(guard, tenant).await?;
    if !owned::database(guard, tenant, role).await? {
        owned::missing(tenant, "database", database, false)?;
    }
    // A suspended tenant's database lost CONNECT for its role, whose
    // membership is how a worker that is not a superuser connects: the
    // worker lets itself in for the export, and takes that back after.
    let (may_connect,): (bool,) = sqlx::query_as("SELECT has_database_privilege(current_user, $1, 'CONNECT')")
        .bind(database)
        .fetch_one(&mut *guard)
        .await
        .map_err(|e| classify("reading the database's privileges", &e))?;
    let name = ident(database)?;
    if !may_connect {
        acl_update(guard, format!("GRANT CONNECT ON DATABASE {name} TO CURRENT_USER")).await?;
    }
    let export = export_silo_inside(p, database).await;
    if !may_connect {
        acl_update(guard, format!("REVOKE CONNECT ON DATABASE {name} FROM CURRENT_USER")).await?;
    }
    export
}

async fn export_silo_inside<S: SecretStore>(p: &Provisioner<S>, database: &str) -> Result<Export, StepFailure> {
    let mut conn = connect(p, database).await?;
    let (snapshot_id, taken_at) = snapshot(&mut conn).await?;
    let tables = count_tables(
        &mut conn,
        "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'",
    )
    .await?;
    let request = DumpRequest { database, schema: None, snapshot: &snapshot_id };
    let body = dump::run(p.settings(), request).await;
    let _ = conn.close().await;
    Ok(Export {
        tables,
        files: vec![File { path: "database/database.sql".into(), body: body?, content_type: "application/sql" }],
        extensions: Vec::new(),
        taken_at,
    })
}

async fn export_pooled(conn: &mut PgConnection, tenant: &Tenant) -> Result<Export, StepFailure> {
    if !owned::pooled_row(conn, tenant).await? {
        owned::missing(tenant, "pooled tenant row", &tenant.id, false)?;
    }
    let (_, taken_at) = snapshot(conn).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND a.attname = 'tenant_id' AND NOT a.attisdropped ORDER BY 1",
    )
    .bind(pooled::SCHEMA)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify("listing the pooled tables", &e))?;
    // From here on as the export role: row-level security applies.
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {}", ident(pooled::EXPORT_ROLE)?)))
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("switching to the export role", &e))?;
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(pooled::TENANT_SETTING)
        .bind(&tenant.id)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("setting the tenant", &e))?;
    let mut export = Export { taken_at, ..Export::default() };
    for table in tables {
        let qualified = format!("{}.{}", ident(pooled::SCHEMA)?, ident(&table)?);
        let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {qualified}")))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(&format!("counting the tenant's rows in {table}"), &e))?;
        let copy = format!("COPY (SELECT * FROM {qualified}) TO STDOUT WITH (FORMAT csv, HEADER true)");
        let what = format!("reading the tenant's {table}");
        let mut body = Vec::new();
        let mut stream = conn.copy_out_raw(&copy).await.map_err(|e| classify(&what, &e))?;
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(|e| classify(&what, &e))?);
        }
        drop(stream);
        export.tables.push((format!("{}.{table}", pooled::SCHEMA), rows));
        export.files.push(File { path: format!("database/{table}.csv"), body, content_type: "text/csv" });
    }
    end_snapshot(conn).await?;
    Ok(export)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_relative_and_end_with_a_slash() {
        check_prefix("acme/0b6e3b5e/20261206T063400Z/").unwrap();
        for bad in ["", "/", "/abs/", "no-slash", "a//b/", "a/../b/", "a/./", "a\n/"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sha256_is_hex() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
