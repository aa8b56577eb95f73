//! Two tenant-data servers under the stack (issue 28, docs/tenant-data.md):
//! a second PostgreSQL cluster, the list (`LANDLORD_TENANT_DATABASES`) the
//! database worker and the audit are given, and where a tenant's data is
//! found.

use std::str::FromStr as _;

use anyhow::{Context as _, Result};
use landlord_testkit::Postgres;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::{Stack, TENANT_SERVERS};

impl Stack {
    /// A second tenant-data server: another PostgreSQL cluster with a fresh
    /// database. From now on the database worker and the audit get both
    /// servers as `LANDLORD_TENANT_DATABASES` — [`TENANT_SERVERS`]: `first`
    /// (the stack's own tenant-data database) and `second` — each with room
    /// for 100 tenants, open and without pins. Call it before the services
    /// start (or restart the database worker after).
    pub async fn add_tenant_data_server(&mut self) -> Result<()> {
        let pg = tokio::task::spawn_blocking(Postgres::start).await??;
        let database = pg.fresh_database().await?;
        let [first, second] = TENANT_SERVERS;
        self.tenant_servers = vec![
            json!({"name": first, "url": self.tenant_data_url, "capacity": 100}),
            json!({"name": second, "url": database.url, "capacity": 100}),
        ];
        self.second_pg = Some((pg, database));
        Ok(())
    }

    /// Sets fields of tenant-data server `name`'s entry (`drain`, `plans`,
    /// `labels`, `capacity`…); a field set to `null` is removed. The
    /// database worker reads the list at start: restart it
    /// ([`Self::restart_service`]) for the change to count.
    pub fn configure_tenant_server(&mut self, name: &str, fields: Value) -> Result<()> {
        let Value::Object(fields) = fields else { anyhow::bail!("the fields of a server are a JSON object") };
        let entry = self
            .tenant_servers
            .iter_mut()
            .find(|s| s["name"] == name)
            .and_then(Value::as_object_mut)
            .with_context(|| format!("no tenant-data server {name} (add_tenant_data_server first)"))?;
        for (field, value) in fields {
            if value.is_null() {
                entry.remove(&field);
            } else {
                entry.insert(field, value);
            }
        }
        Ok(())
    }

    /// Every tenant-data server: its name and its URL (the worker's role);
    /// one server is `default`.
    pub fn tenant_data_servers(&self) -> Vec<(String, String)> {
        if self.tenant_servers.is_empty() {
            return vec![("default".to_owned(), self.tenant_data.url.clone())];
        }
        self.tenant_servers
            .iter()
            .map(|s| {
                (s["name"].as_str().unwrap_or_default().to_owned(), s["url"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    fn tenant_server_url(&self, name: &str) -> Result<String> {
        let servers = self.tenant_data_servers();
        let found = servers.into_iter().find(|(n, _)| n == name);
        Ok(found.with_context(|| format!("no tenant-data server {name}"))?.1)
    }

    /// A connection to tenant-data server `name`.
    pub async fn tenant_data_on(&self, name: &str) -> Result<PgConnection> {
        let url = self.tenant_server_url(name)?;
        PgConnection::connect(&url).await.with_context(|| format!("connecting to tenant-data server {name}"))
    }

    /// The port of tenant-data server `name` (where its tenants connect).
    pub fn tenant_server_port(&self, name: &str) -> Result<u16> {
        Ok(PgConnectOptions::from_str(&self.tenant_server_url(name)?)?.get_port())
    }

    /// The server tenant `key`'s `postgres.*` resources name (metadata
    /// `server`, as provisioning recorded it): one for all of them.
    pub async fn recorded_server(&self, key: &str) -> Result<String> {
        let mut db = self.control().await?;
        let servers: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT DISTINCT r.metadata ->> 'server' FROM resources r JOIN tenants t ON t.id = r.tenant_id
             WHERE t.key = $1 AND r.kind LIKE 'postgres.%'",
        )
        .bind(key)
        .fetch_all(&mut db)
        .await?;
        match servers.as_slice() {
            [Some(server)] => Ok(server.clone()),
            other => anyhow::bail!("{key}: its postgres resources name the servers {other:?}, not one"),
        }
    }

    /// Tenants placed on server `name`: the tenant ids its markers name
    /// (what placement counts against its capacity).
    pub async fn placed_on(&self, name: &str) -> Result<i64> {
        let mut data = self.tenant_data_on(name).await?;
        Ok(sqlx::query_scalar("SELECT count(DISTINCT tenant_id) FROM landlord_admin.markers")
            .fetch_one(&mut data)
            .await?)
    }

    /// The role, schema, database or pooled row of tenant `key` on the
    /// tenant-data server at `url` (as its superuser). Empty: none there.
    pub async fn tenant_data_objects(&self, url: &str, key: &str) -> Result<Vec<String>> {
        let names = landlord_contract::TenantKey::parse(key)?.backend_names();
        let mut data = PgConnection::connect(url).await?;
        let mut found = Vec::new();
        for (what, sql, name) in [
            ("role", "SELECT count(*) FROM pg_roles WHERE rolname = $1", names.role.as_str()),
            ("schema", "SELECT count(*) FROM pg_namespace WHERE nspname = $1", names.schema.as_str()),
            ("database", "SELECT count(*) FROM pg_database WHERE datname = $1", names.database.as_str()),
            ("pooled row", "SELECT count(*) FROM landlord_pooled.tenants WHERE key = $1", key),
        ] {
            // No landlord_pooled schema (a server never prepared): no row.
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(name)
                .fetch_one(&mut data)
                .await
                .unwrap_or(0);
            if count > 0 {
                found.push(format!("{what} {name}"));
            }
        }
        Ok(found)
    }
}
