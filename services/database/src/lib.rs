//! The `database` worker: each tenant's data in PostgreSQL, isolated as its
//! tier says (DESIGN.md, "Isolation tiers").
//!
//! Serves `landlord.v1.cmd.database.provision` and its compensation
//! `…database.deprovision`, and the lifecycle actions (docs/lifecycle.md):
//! `suspend` ⇄ `resume` ([`suspension`]), `export` ([`export`], to the
//! archive bucket: `LANDLORD_ARCHIVE_BUCKET`, default `landlord-archive`,
//! on the S3 server the `LANDLORD_S3_*` variables name, as for the storage
//! worker; `pg_dump` from `LANDLORD_PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin`) and `purge` ([`purge`]). Provisioning:
//!
//! - **bridge** (default): a schema `tenant_<key>` in the tenant-data
//!   database, owned by a login role of the same name that can connect to
//!   that database (as a member of `landlord_tenants`, the only role granted
//!   CONNECT on it) and use its own schema, nothing else;
//! - **silo**: a database `tenant_<key>` owned by that role, with the schema
//!   inside it; nobody else may connect;
//! - **pooled**: a row in `landlord_pooled.tenants` and the tenant's rows in
//!   the shared tables, which row-level security restricts to
//!   `current_setting('landlord.tenant_id')`; applications use the NOLOGIN
//!   role `landlord_pooled_app`.
//!
//! Default data comes from versioned seed files (`seeds/`, see its README;
//! the step parameter `seed` picks one), applied in the transaction that
//! creates the schema and verified before commit. Everything created is
//! marked as made by the tenant and the saga (the command's `saga_id`) in
//! `landlord_admin.markers`, a table only the worker's role can read (see
//! [`marker`]; older objects carry a COMMENT `landlord:tenant=<tenant id>`,
//! still honoured). A forward command adopts what carries its tenant's
//! marker (the marker then names its saga); anything else is a permanent
//! conflict, never reused. A compensation undoes only what its own saga
//! made or adopted — also after a failed forward command, finding the
//! objects by the names the tenant spec gives, and the kept password of a
//! provision that stopped before the role — and leaves (succeeding, with
//! `outputs["fenced"]` saying why) what a later saga adopted, another
//! tenant's objects and unmarked ones. Passwords are generated from the OS CSPRNG, reach
//! PostgreSQL only as SCRAM verifiers, and are kept encrypted in the
//! [`secrets`] store; results carry only `database.password_ref`.
//!
//! The password reaches the tenant admin through a channel meant for
//! secrets, never an event or a log line
//! (`LANDLORD_DATABASE_PASSWORD_DELIVERY`):
//!
//! - `welcome-email` (default): once the tenant's objects are in place the
//!   worker also seals a *delivery copy* with `LANDLORD_SECRETS_KEY` into
//!   the runtime's `<namespace>_secrets` key-value bucket — the one the idp
//!   worker hands the admin's temporary password over in — and reports its
//!   reference as `database.delivery_ref` (`database.password_ref` keeps
//!   naming the durable copy). The copy is made from the durable one, so a
//!   redelivered provision seals the same password again, never a new one.
//!   The notification worker writes it into the welcome mail's "Your
//!   database" section and purges it once the mail is sent; unsent, it
//!   expires with the bucket (`LANDLORD_SECRETS_TTL`). Compensation
//!   forgets both copies.
//! - `none`: no copy and no `database.delivery_ref`; the password stays in
//!   the durable store for an operator to hand over.
//!
//! What the tenant needs to connect is in the result, never the password:
//! `database.host`, `database.port`, `database.name`, `database.schema`,
//! `database.role` and `database.url` (`postgresql://<role>@<host>:<port>/<name>`),
//! plus `database.password_delivery`. A [`Provisioner`] built without a
//! delivery store ([`Provisioner::connect`] alone, as the audit does for
//! compensations) seals no copy and says `database.password_delivery=none`;
//! the service binary always attaches the store when delivery is
//! `welcome-email`.
//!
//! `/readyz` checks the tenant-data database too (`checks.tenant_data_database`,
//! see [`Provisioner::readiness_check`]): a worker that cannot reach it is
//! not ready.
//!
//! At start (and before the first command, if the server was down) the
//! service hardens the tenant-data server once, idempotently: PUBLIC loses
//! CONNECT and TEMPORARY on every non-template database (roles that need
//! to connect must be granted CONNECT explicitly) and everything on the
//! tenant-data database's `public` schema; the `landlord_secrets` and
//! `landlord_pooled` schemas are created.
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables (the
//! tenant-data server is deliberately not `LANDLORD_DATABASE_URL`, the
//! control plane's; in development both may point at one server):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_TENANT_DATABASE_URL` | required without the list | `postgres://` URL of the tenant-data database, as a role that may create roles and databases (a superuser in development): one server, `default` |
//! | `LANDLORD_TENANT_DATABASES` | — | several servers instead: a JSON list (or its file's path) of `{name, url, capacity, drain?, public_host?, public_port?, plans?, labels?}`; placement in [`placement`], docs/tenant-data.md |
//! | `LANDLORD_TENANT_DATABASE_POOL_SIZE` | `8` | connections to it |
//! | `LANDLORD_TENANT_DATABASE_TIMEOUT` | `30s` | statement timeout; also bounds waiting for a connection (a sixth of it, at least 1s) |
//! | `LANDLORD_TENANT_CONNECTION_LIMIT` | `20` | connections each tenant role may open (`-1`: no limit) |
//! | `LANDLORD_TENANT_DATABASE_PUBLIC_HOST` | host of `LANDLORD_TENANT_DATABASE_URL` | the host tenants connect to (`database.host`), when it differs from the worker's |
//! | `LANDLORD_TENANT_DATABASE_PUBLIC_PORT` | port of `LANDLORD_TENANT_DATABASE_URL` | the port tenants connect to (`database.port`) |
//! | `LANDLORD_SECRETS_KEY` | required | base64 of 32 random bytes (`openssl rand -base64 32`): the key of the secret store and of the delivery copy; the notification worker needs the same one |
//! | `LANDLORD_DATABASE_PASSWORD_DELIVERY` | `welcome-email` | `welcome-email` or `none` (see above) |
//! | `LANDLORD_SECRETS_TTL` | `7d` | how long a delivery copy waits for its welcome mail (the `<namespace>_secrets` bucket's max age, as for the idp worker) |
//! | `LANDLORD_ARCHIVE_BUCKET` | `landlord-archive` | where `export` writes (created if missing), on the S3 server of `LANDLORD_S3_ENDPOINT`, `LANDLORD_S3_REGION`, `LANDLORD_S3_PATH_STYLE` and the AWS credentials, read as the storage worker reads them |
//! | `LANDLORD_PG_BIN` | newest `/usr/lib/postgresql/*/bin`, else `/usr/bin` | the folder with the `pg_dump` `export` runs (as new as the server) |

pub mod action;
pub mod archive;
pub mod catalog;
pub mod dump;
pub mod export;
pub mod failure;
pub mod ident;
pub mod marker;
mod owned;
pub mod placement;
pub mod pooled;
pub mod purge;
pub mod secrets;
pub mod seed;
pub mod servers;
mod settings;
pub mod silo;
pub mod suspension;
mod tenant;

use std::collections::HashMap;

use landlord_contract::pb;
use landlord_runtime::health::ReadinessCheck;
use landlord_runtime::{Broker, ConfigError, KvSecrets, StepFailure};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;

pub use crate::action::Action;
pub use crate::archive::{Archive, ArchiveSettings};
use crate::failure::classify;
pub use crate::placement::Servers;
pub use crate::secrets::{Password, PgSecretStore, SecretRef, SecretStore, SecretsKey};
use crate::seed::Seed;
pub use crate::settings::{PasswordDelivery, Settings, open_pool};
pub use crate::tenant::Tenant;

pub const SERVICE: &str = "database";

/// Resource kinds reported to the orchestrator.
pub mod kind {
    pub const ROLE: &str = "postgres.role";
    pub const SCHEMA: &str = "postgres.schema";
    pub const DATABASE: &str = "postgres.database";
    pub const POOLED_TENANT: &str = "postgres.pooled_tenant";
}

/// The NOLOGIN role whose members may connect to the tenant-data database:
/// bridge roles join it rather than each getting a GRANT on the database,
/// because concurrent GRANTs on one database row fail with "tuple
/// concurrently updated".
pub const TENANTS_ROLE: &str = "landlord_tenants";

/// A GRANT/REVOKE on a database, retried while another session updates the
/// same pg_database row; a database dropped meanwhile is fine.
async fn acl_update(conn: &mut PgConnection, sql: String) -> Result<(), StepFailure> {
    let mut tries = 0;
    loop {
        tries += 1;
        match sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("XX000") && tries < 20 => {
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(classify("changing a database's privileges", &e)),
        }
    }
}

/// Runs one utility statement (no parameters possible; every name in it
/// went through [`ident::quote_ident`]).
pub(crate) async fn exec(conn: &mut PgConnection, what: &str, sql: String) -> Result<(), StepFailure> {
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await.map(|_| ()).map_err(|e| classify(what, &e))
}

/// The bridge tier's DDL and seed for `tenant`, in the order the worker
/// runs them inside its one transaction, without its look-ups, its seed
/// verification or its secret handling; `verifier` goes into CREATE ROLE
/// (see [`Password::scram_verifier`]). Not used by the worker: this is
/// what bench-database runs on a bare connection as the worker's floor,
/// built from the same statement builders the worker uses.
pub fn bridge_sql(
    tenant: &Tenant,
    verifier: &str,
    connection_limit: i64,
    seed: &Seed,
) -> Result<Vec<String>, StepFailure> {
    let mut sql: Vec<String> =
        catalog::role_statements(tenant, verifier, connection_limit)?.into_iter().map(|(_, s)| s).collect();
    sql.push(tenants_grant(tenant)?);
    sql.extend(catalog::schema_statements(tenant, seed)?.into_iter().map(|(_, s)| s));
    sql.push(seed.sql.to_owned());
    sql.push(catalog::LEAVE_ROLE.to_owned());
    Ok(sql)
}

/// Makes a bridge tenant's role a member of [`TENANTS_ROLE`].
fn tenants_grant(tenant: &Tenant) -> Result<String, StepFailure> {
    Ok(format!("GRANT {} TO {}", catalog::ident(TENANTS_ROLE)?, catalog::ident(&tenant.names.role)?))
}

/// The database worker's steps.
#[derive(Debug)]
pub struct Provisioner<S = PgSecretStore> {
    pool: PgPool,
    settings: Settings,
    /// The tenant-data database's name.
    database: String,
    secrets: S,
    /// Where delivery copies go (`welcome-email`); `None`: no copies.
    delivery: Option<KvSecrets>,
    /// Where exports go (built on first use).
    archive: OnceCell<Archive>,
    hardened: OnceCell<()>,
}

impl Provisioner<PgSecretStore> {
    /// Opens the pool (lazily: a server that is down makes commands fail as
    /// retryable, not the start) with the PostgreSQL secret store, on a pool
    /// of its own: the store is used while a transaction of the worker's
    /// holds a connection, and one shared pool could run dry that way.
    pub fn connect(settings: Settings) -> Result<Self, ConfigError> {
        let pool = open_pool(&settings);
        let secrets = PgSecretStore::new(open_pool(&settings), settings.secrets_key.clone());
        Self::with_store(settings, pool, secrets)
    }
}

/// Opens the store delivery copies are sealed into when the settings ask
/// for `welcome-email`: the runtime's `<namespace>_secrets` bucket, with
/// `LANDLORD_SECRETS_TTL` as its max age (as the idp worker opens it).
pub async fn open_delivery(
    settings: &Settings,
    broker: &Broker,
    replicas: usize,
) -> Result<Option<KvSecrets>, landlord_runtime::secrets::SecretError> {
    match settings.password_delivery {
        PasswordDelivery::WelcomeEmail => Ok(Some(
            KvSecrets::open(
                &broker.jetstream,
                broker.namespace.root(),
                replicas,
                settings.secrets_ttl,
                settings.secrets_key.clone(),
            )
            .await?,
        )),
        PasswordDelivery::None => Ok(None),
    }
}

/// The name of the tenant-data database's check in `/readyz`.
pub const READINESS_CHECK: &str = "tenant_data_database";

impl<S: SecretStore> Provisioner<S> {
    pub fn with_store(settings: Settings, pool: PgPool, secrets: S) -> Result<Self, ConfigError> {
        let database = settings.connect.get_database().unwrap_or("postgres").to_owned();
        Ok(Self {
            pool,
            settings,
            database,
            secrets,
            delivery: None,
            archive: OnceCell::new(),
            hardened: OnceCell::new(),
        })
    }

    /// Seals delivery copies into `delivery` (see [`open_delivery`]); kept
    /// only when the settings ask for `welcome-email`.
    pub fn with_delivery(mut self, delivery: Option<KvSecrets>) -> Self {
        let wanted = self.settings.password_delivery == PasswordDelivery::WelcomeEmail;
        self.delivery = delivery.filter(|_| wanted);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The tenant-data database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The archive exports are written to (`LANDLORD_ARCHIVE_BUCKET`).
    pub async fn archive(&self) -> &Archive {
        self.archive.get_or_init(|| async { Archive::new(&self.settings.archive) }).await
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store delivery copies are sealed into, if any.
    pub fn delivery(&self) -> Option<&KvSecrets> {
        self.delivery.as_ref()
    }

    /// `/readyz`'s check of the tenant-data database: `SELECT 1` on the
    /// worker's own pool, named [`READINESS_CHECK`].
    pub fn readiness_check(&self) -> ReadinessCheck {
        ReadinessCheck::postgres(READINESS_CHECK, self.pool.clone())
    }

    pub fn secrets(&self) -> &S {
        &self.secrets
    }

    /// The one-time hardening of the tenant-data server (crate docs); runs
    /// again on the next command if it failed.
    pub async fn prepare(&self) -> Result<(), StepFailure> {
        self.hardened.get_or_try_init(|| self.harden()).await.map(|_| ())
    }

    async fn harden(&self) -> Result<(), StepFailure> {
        let mut conn = self.pool.acquire().await.map_err(|e| classify("connecting to the tenant-data database", &e))?;
        // Roles are cluster-wide: another replica (or another tenant-data
        // database on the server) may create them at the same moment.
        for role in [TENANTS_ROLE, pooled::APP_ROLE, pooled::EXPORT_ROLE] {
            let create = format!("CREATE ROLE {} NOLOGIN", catalog::ident(role)?);
            match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42710" | "23505")) => {}
                Err(e) => return Err(classify(&format!("creating role {role}"), &e)),
            }
        }
        // The export reads pooled rows as the export role (SET ROLE needs
        // membership). Granting it again is a no-op, but two workers
        // granting it at the same moment race on pg_auth_members: the
        // loser's unique violation means the membership is there.
        let export_role = format!("GRANT {} TO CURRENT_USER", catalog::ident(pooled::EXPORT_ROLE)?);
        match sqlx::query(sqlx::AssertSqlSafe(export_role)).execute(&mut *conn).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
            Err(e) => return Err(classify("joining the pooled export role", &e)),
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(|e| classify("hardening", &e))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('landlord.database.harden'))")
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("hardening", &e))?;
        sqlx::raw_sql(secrets::SECRETS_SCHEMA_SQL)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("creating landlord_secrets", &e))?;
        sqlx::raw_sql(marker::MARKERS_SCHEMA_SQL)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("creating landlord_admin", &e))?;
        sqlx::raw_sql(pooled::SHARED_SCHEMA_SQL)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("creating landlord_pooled", &e))?;
        exec(&mut tx, "revoking PUBLIC's rights on schema public", "REVOKE ALL ON SCHEMA public FROM PUBLIC".into())
            .await?;
        tx.commit().await.map_err(|e| classify("hardening", &e))?;
        let database = catalog::ident(&self.database)?;
        let tenants = catalog::ident(TENANTS_ROLE)?;
        acl_update(&mut conn, format!("GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {tenants}")).await?;
        let open: Vec<(String,)> = sqlx::query_as(
            "SELECT datname::text FROM pg_database
             WHERE NOT datistemplate AND (has_database_privilege('public', oid, 'CONNECT')
                                          OR has_database_privilege('public', oid, 'TEMPORARY'))",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify("listing databases", &e))?;
        for (name,) in open {
            acl_update(
                &mut conn,
                format!("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC", catalog::ident(&name)?),
            )
            .await?;
            tracing::info!(database = %name, "revoked PUBLIC's CONNECT and TEMPORARY");
        }
        Ok(())
    }

    /// The tenant's password: the one kept for it, or a new one, kept first.
    /// Called under the tenant's lock, as is every compensation's removal
    /// of it: a compensation that finds no role removes a kept password,
    /// and must not do so between this and the role's creation.
    async fn password(&self, tenant: &Tenant) -> Result<(SecretRef, Password), StepFailure> {
        let reference = secrets::database_password_ref(&tenant.id);
        let candidate = Password::generate().map_err(failure::from_secret)?;
        let kept =
            self.secrets.put_if_absent(&reference, &tenant.id, &candidate).await.map_err(failure::from_secret)?;
        Ok((reference, kept))
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StepFailure> {
        self.pool.begin().await.map_err(|e| classify("opening a transaction", &e))
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StepFailure> {
        self.pool.acquire().await.map_err(|e| classify("connecting to the tenant-data database", &e))
    }

    pub async fn provision(&self, tenant: &Tenant, seed: &Seed) -> Result<pb::StepOk, StepFailure> {
        self.prepare().await?;
        let mut ok = self.provision_tier(tenant, seed).await?;
        self.stamp(&mut ok);
        Ok(ok)
    }

    /// Says in the result which server holds the tenant: every resource's
    /// metadata `server`, `host` and `port` (where tenants connect), and
    /// the outputs `database.server`, `database.host`, `database.port`.
    fn stamp(&self, ok: &mut pb::StepOk) {
        let s = &self.settings;
        for resource in &mut ok.resources {
            resource.metadata.insert("server".into(), s.server.clone());
            resource.metadata.insert("host".into(), s.public_host.clone());
            resource.metadata.insert("port".into(), s.public_port.to_string());
        }
        ok.outputs.insert("database.server".into(), s.server.clone());
        ok.outputs.entry("database.host".into()).or_insert_with(|| s.public_host.clone());
        ok.outputs.entry("database.port".into()).or_insert_with(|| s.public_port.to_string());
    }

    async fn provision_tier(&self, tenant: &Tenant, seed: &Seed) -> Result<pb::StepOk, StepFailure> {
        match tenant.tier {
            pb::Tier::Pooled => pooled::provision(&self.pool, tenant, seed).await,
            pb::Tier::Silo => {
                let (reference, password) = silo::provision(self, tenant, seed).await?;
                let delivered = self.deliver(tenant, &password).await?;
                Ok(self.outputs(tenant, &tenant.names.database, &reference, delivered.as_ref(), seed))
            }
            _ => {
                let (reference, password) = self.provision_bridge(tenant, seed).await?;
                let delivered = self.deliver(tenant, &password).await?;
                Ok(self.outputs(tenant, &self.database, &reference, delivered.as_ref(), seed))
            }
        }
    }

    /// Seals the delivery copy of `password` (the durable one, so every
    /// delivery of the command seals the same) unless one is kept already;
    /// returns its reference, or `None` without a delivery store. Runs
    /// after the tenant's objects exist: a provision that fails leaves no
    /// copy waiting for a mail.
    async fn deliver(&self, tenant: &Tenant, password: &Password) -> Result<Option<SecretRef>, StepFailure> {
        let Some(store) = &self.delivery else {
            return Ok(None);
        };
        let reference = secrets::database_delivery_ref(&tenant.id);
        for _ in 0..3 {
            let stale = match store.put_if_absent(&reference, password.expose()).await {
                Ok(kept) => Password::from_plain(kept) != *password,
                // Sealed with an earlier key: unreadable to the mail as well.
                Err(landlord_runtime::secrets::SecretError::Decrypt(_)) => true,
                Err(error) => return Err(failure::from_delivery(error)),
            };
            if !stale {
                return Ok(Some(reference));
            }
            // A copy of an earlier password of this tenant id (undone and
            // made again while the copy waited): replace it.
            tracing::warn!(%reference, "replacing a stale delivery copy");
            store.delete(&reference).await.map_err(failure::from_delivery)?;
        }
        Err(StepFailure::retryable("delivery_copy_contended", format!("{reference} kept changing while sealing it")))
    }

    /// Role, CONNECT on the tenant-data database, schema and seed: one
    /// transaction, so a failure leaves nothing half made but the kept
    /// password (which the compensation removes).
    async fn provision_bridge(&self, tenant: &Tenant, seed: &Seed) -> Result<(SecretRef, Password), StepFailure> {
        let mut tx = self.begin().await?;
        marker::lock_tenant(&mut tx, tenant).await?;
        let (reference, password) = self.password(tenant).await?;
        let created = catalog::ensure_role(&mut tx, tenant, &password, self.settings.connection_limit).await?;
        exec(&mut tx, "granting CONNECT", tenants_grant(tenant)?).await?;
        catalog::ensure_schema(&mut tx, tenant, seed, catalog::SchemaMark::Row).await?;
        tx.commit().await.map_err(|e| classify("committing", &e))?;
        tracing::info!(role_created = created, schema = %tenant.names.schema, seed = %seed.label(), "bridge tenant ready");
        Ok((reference, password))
    }

    /// Undoes what the tenant's saga made (see the crate docs on fencing).
    /// Works from the tenant spec's names, not the command's resources, so
    /// it also undoes what a failed forward command left.
    pub async fn deprovision(&self, tenant: &Tenant) -> Result<pb::StepOk, StepFailure> {
        self.prepare().await?;
        let notes = match tenant.tier {
            pb::Tier::Pooled => pooled::deprovision(&self.pool, tenant).await?,
            pb::Tier::Silo => silo::deprovision(self, tenant).await?,
            _ => self.deprovision_bridge(tenant).await?,
        };
        let mut ok = pb::StepOk::default();
        if !notes.is_empty() {
            tracing::warn!(fenced = %notes.join("; "), "compensation left objects that are not its saga's");
            ok.outputs.insert("fenced".into(), notes.join("; "));
        }
        Ok(ok)
    }

    async fn deprovision_bridge(&self, tenant: &Tenant) -> Result<Vec<String>, StepFailure> {
        let mut tx = self.begin().await?;
        marker::lock_tenant(&mut tx, tenant).await?;
        let mut notes = Vec::new();
        let (role, role_marker) = catalog::judge_role(&mut tx, tenant).await?;
        if role == marker::Verdict::Mine {
            // An open transaction of the tenant would hold up DROP SCHEMA.
            catalog::end_sessions(&mut tx, &tenant.names.role).await?;
        }
        let schema = catalog::judge_schema(&mut tx, tenant).await?;
        match &schema {
            marker::Verdict::Mine => catalog::drop_schema(&mut tx, tenant).await?,
            marker::Verdict::Fenced(note) => notes.push(note.clone()),
            marker::Verdict::Absent => {}
        }
        match &role {
            marker::Verdict::Mine => catalog::drop_role(&mut tx, tenant).await?,
            marker::Verdict::Fenced(note) => notes.push(note.clone()),
            marker::Verdict::Absent => {}
        }
        self.forget_password(tenant, &role, role_marker.as_ref()).await?;
        tx.commit().await.map_err(|e| classify("committing", &e))?;
        tracing::info!(?schema, ?role, "bridge tenant removed");
        Ok(notes)
    }

    /// Removes the tenant's kept password and its delivery copy, under the
    /// tenant's lock, unless the role that uses it stays because a later
    /// saga of the tenant adopted it. A password without a role is what a
    /// provision that stopped before creating the role leaves: removed.
    async fn forget_password(
        &self,
        tenant: &Tenant,
        role: &marker::Verdict,
        role_marker: Option<&marker::Marker>,
    ) -> Result<(), StepFailure> {
        let adopted =
            matches!(role, marker::Verdict::Fenced(_)) && role_marker.is_some_and(|m| m.tenant_id == tenant.id);
        if adopted {
            return Ok(());
        }
        if let Some(store) = &self.delivery {
            store.delete(&secrets::database_delivery_ref(&tenant.id)).await.map_err(failure::from_delivery)?;
        }
        self.secrets.delete(&secrets::database_password_ref(&tenant.id)).await.map_err(failure::from_secret)
    }

    fn outputs(
        &self,
        tenant: &Tenant,
        database: &str,
        reference: &SecretRef,
        delivered: Option<&SecretRef>,
        seed: &Seed,
    ) -> pb::StepOk {
        let names = &tenant.names;
        let tier = if tenant.tier == pb::Tier::Silo { "silo" } else { "bridge" };
        let mut resources =
            vec![pb::Resource { kind: kind::ROLE.into(), external_id: names.role.clone(), metadata: HashMap::new() }];
        let schema_meta =
            HashMap::from([("database".to_owned(), database.to_owned()), ("seed".to_owned(), seed.label())]);
        if tenant.tier == pb::Tier::Silo {
            resources.push(pb::Resource {
                kind: kind::DATABASE.into(),
                external_id: database.to_owned(),
                metadata: schema_meta,
            });
        } else {
            resources.push(pb::Resource {
                kind: kind::SCHEMA.into(),
                external_id: names.schema.clone(),
                metadata: schema_meta,
            });
        }
        let mut outputs = HashMap::from([
            ("database.tier".to_owned(), tier.to_owned()),
            ("database.name".to_owned(), database.to_owned()),
            ("database.schema".to_owned(), names.schema.clone()),
            ("database.role".to_owned(), names.role.clone()),
            ("database.password_ref".to_owned(), reference.to_string()),
            ("database.seed".to_owned(), seed.label()),
        ]);
        let (host, port) = (&self.settings.public_host, self.settings.public_port);
        // No password in it: that reaches the admin only as a sealed copy.
        let authority = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        outputs.insert("database.url".into(), format!("postgresql://{}@{authority}:{port}/{database}", names.role));
        outputs.insert("database.host".into(), host.clone());
        outputs.insert("database.port".into(), port.to_string());
        let delivery = match delivered {
            Some(delivered) => {
                outputs.insert("database.delivery_ref".into(), delivered.to_string());
                PasswordDelivery::WelcomeEmail
            }
            None => PasswordDelivery::None,
        };
        outputs.insert("database.password_delivery".into(), delivery.as_str().to_owned());
        pb::StepOk { resources, outputs }
    }

    fn connect_to(&self, database: &str) -> PgConnectOptions {
        self.settings.connect_options().database(database)
    }
}
