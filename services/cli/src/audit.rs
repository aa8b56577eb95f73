//! `landlord audit [--remove-orphans]`: what exists in the backends against
//! what the control plane recorded.
//!
//! Every object Landlord creates carries its tenant's id (a Keycloak
//! attribute, a PostgreSQL COMMENT, an S3 marker object). The audit lists
//! the marked objects in each backend — realms, shared-realm organizations,
//! schemas, roles, databases, pooled rows, buckets, pooled prefixes — and
//! compares them with the live rows of the `resources` table:
//!
//! - an **orphan** is a marked object no live resource names: a crash or a
//!   bug left it behind, or it was recorded as deleted and is still there;
//! - a **missing** resource is recorded as live but is not in its backend.
//!
//! Objects of tenants whose saga is still running are left out: they may
//! exist before their result is recorded. Keycloak clients and users are
//! covered through their realm. `--remove-orphans` removes orphans through
//! the owning worker's own compensation, which checks the marker again
//! before deleting anything. Exit status: 0 when nothing drifts (or every
//! orphan was removed), 1 otherwise.
//!
//! Connections come from the workers' variables: `LANDLORD_DATABASE_URL`
//! (control plane), `LANDLORD_KEYCLOAK_*`, `LANDLORD_TENANT_DATABASE_URL`
//! (a role that sees pooled rows: BYPASSRLS or superuser), `LANDLORD_S3_*`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use aws_sdk_s3::primitives::ByteStream;
use landlord_contract::pb;
use landlord_idp::{Idp, PasswordDelivery};
use landlord_runtime::{DeliveryInfo, Env, StepService};
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;

/// A marked object in a backend, or a live resource in the control plane.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Object {
    pub kind: &'static str,
    pub external_id: String,
    pub tenant_id: String,
    /// The tenant key the object's name says, if it says one.
    pub key: Option<String>,
}

const KINDS: [&str; 8] = [
    "keycloak.realm",
    "keycloak.organization",
    "postgres.schema",
    "postgres.role",
    "postgres.database",
    "postgres.pooled_tenant",
    "s3.bucket",
    "s3.prefix",
];

const MARKER: &str = "landlord:tenant=";

fn kind(name: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|k| *k == name)
}

/// The tenant id in a PostgreSQL marker comment.
fn marked(comment: &str) -> Option<String> {
    comment.split_whitespace().next()?.strip_prefix(MARKER).map(str::to_owned)
}

/// `tenant_<key with - as _>` back to the key (keys have no `_`).
fn key_of_pg_name(name: &str) -> Option<String> {
    name.strip_prefix("tenant_").map(|k| k.replace('_', "-"))
}

pub async fn run(remove: bool) -> Result<bool> {
    let env = Env::process();
    let control_url = env.required("LANDLORD_DATABASE_URL", "the control plane")?;
    let control = PgPool::connect(&control_url).await.context("connecting to the control plane")?;
    let mut idp_settings = landlord_idp::Settings::from_env(&env)?;
    // Removing realms and organizations touches no temporary password.
    idp_settings.password_delivery = PasswordDelivery::None;
    let idp = Idp::new(idp_settings.clone(), None)?;
    let database_settings = landlord_database::Settings::from_env(&env)?;
    let tenant_data = PgPool::connect_with(database_settings.connect.clone())
        .await
        .context("connecting to the tenant-data database")?;
    let storage_settings = landlord_storage::Settings::from_env(&env)?;
    let storage = landlord_storage::Storage::new(storage_settings.clone());

    let busy: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id::text FROM sagas WHERE state IN ('running', 'compensating')")
            .fetch_all(&control)
            .await?
            .into_iter()
            .collect();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT r.kind, r.external_id, r.tenant_id::text, t.key FROM resources r
         JOIN tenants t ON t.id = r.tenant_id WHERE r.deleted_at IS NULL",
    )
    .fetch_all(&control)
    .await?;
    let recorded: BTreeMap<(&str, String), Object> = rows
        .into_iter()
        .filter_map(|(k, external_id, tenant_id, key)| {
            let kind = kind(&k)?;
            Some(((kind, external_id.clone()), Object { kind, external_id, tenant_id, key: Some(key) }))
        })
        .collect();

    let mut found = keycloak(&idp, &idp_settings.shared_realm).await?;
    found.extend(postgres(&tenant_data).await?);
    found.extend(s3(&storage, &storage_settings).await?);
    let found: BTreeMap<(&str, String), Object> =
        found.into_iter().map(|o| ((o.kind, o.external_id.clone()), o)).collect();

    let orphans: Vec<&Object> = found
        .iter()
        .filter(|(id, o)| !recorded.contains_key(*id) && !busy.contains(&o.tenant_id))
        .map(|(_, o)| o)
        .collect();
    let missing: Vec<&Object> = recorded
        .iter()
        .filter(|(id, o)| !found.contains_key(*id) && !busy.contains(&o.tenant_id))
        .map(|(_, o)| o)
        .collect();
    println!(
        "audit: {} live resources recorded, {} marked objects found, {} tenants with a saga under way left out",
        recorded.len(),
        found.len(),
        busy.len()
    );
    let mut left = missing.len();
    for object in &orphans {
        let outcome = if remove {
            match remove_orphan(object, &idp, &database_settings, &storage).await {
                Ok(()) => "removed".to_owned(),
                Err(error) => {
                    left += 1;
                    format!("NOT removed: {error:#}")
                }
            }
        } else {
            left += 1;
            "orphan (--remove-orphans removes it)".to_owned()
        };
        println!("orphan   {:<23} {:<40} tenant {}  {outcome}", object.kind, object.external_id, object.tenant_id);
    }
    for object in &missing {
        println!(
            "missing  {:<23} {:<40} tenant {} ({}): recorded as live, not in the backend",
            object.kind,
            object.external_id,
            object.tenant_id,
            object.key.as_deref().unwrap_or("?")
        );
    }
    if orphans.is_empty() && missing.is_empty() {
        println!("no drift");
    }
    Ok(left == 0)
}

async fn keycloak(idp: &Idp, shared_realm: &str) -> Result<Vec<Object>> {
    let kc = idp.keycloak();
    let mut found = Vec::new();
    let realms = kc.send(Method::GET, kc.admin_url(&[], &[]), None, "listing realms").await?;
    anyhow::ensure!(realms.status.is_success(), "listing realms: {} {}", realms.status, realms.message());
    for realm in realms.body.as_array().into_iter().flatten() {
        let (Some(name), Some(id)) = (realm["realm"].as_str(), realm["attributes"]["tenantId"].as_str()) else {
            continue;
        };
        found.push(Object {
            kind: "keycloak.realm",
            external_id: name.to_owned(),
            tenant_id: id.to_owned(),
            key: name.strip_prefix("tenant-").map(str::to_owned),
        });
    }
    let url = kc.admin_url(&[shared_realm, "organizations"], &[("first", "0"), ("max", "100000")]);
    let orgs = kc.send(Method::GET, url, None, "listing organizations").await?;
    // A shared realm without organizations (404) holds no pooled tenants.
    for org in orgs.body.as_array().into_iter().flatten() {
        let (Some(id), Some(tenant)) = (org["id"].as_str(), first(&org["attributes"]["tenantId"])) else {
            continue;
        };
        found.push(Object {
            kind: "keycloak.organization",
            external_id: id.to_owned(),
            tenant_id: tenant,
            key: org["name"].as_str().map(str::to_owned),
        });
    }
    Ok(found)
}

fn first(value: &Value) -> Option<String> {
    value.as_array()?.first()?.as_str().map(str::to_owned)
}

async fn postgres(pool: &PgPool) -> Result<Vec<Object>> {
    let queries = [
        ("postgres.schema", "SELECT nspname::text, obj_description(oid, 'pg_namespace') FROM pg_namespace"),
        ("postgres.role", "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles"),
        ("postgres.database", "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database"),
    ];
    let mut found = Vec::new();
    for (kind, sql) in queries {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(sql).fetch_all(pool).await?;
        for (name, comment) in rows {
            if let Some(tenant_id) = comment.as_deref().and_then(marked) {
                found.push(Object { kind, key: key_of_pg_name(&name), external_id: name, tenant_id });
            }
        }
    }
    let pooled: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('landlord_pooled.tenants')::text").fetch_one(pool).await?;
    if pooled.is_some() {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant_id, key FROM landlord_pooled.tenants").fetch_all(pool).await?;
        for (tenant_id, key) in rows {
            found.push(Object {
                kind: "postgres.pooled_tenant",
                external_id: tenant_id.clone(),
                tenant_id,
                key: Some(key),
            });
        }
    }
    Ok(found)
}

async fn s3(storage: &landlord_storage::Storage, settings: &landlord_storage::Settings) -> Result<Vec<Object>> {
    let client = storage.client();
    let (before, after) = settings.bucket_pattern.split_once("{key}").unwrap_or_default();
    let mut found = Vec::new();
    let buckets = client.list_buckets().send().await.context("listing buckets")?;
    for bucket in buckets.buckets() {
        let Some(name) = bucket.name() else { continue };
        if name == settings.shared_bucket {
            let listed = client
                .list_objects_v2()
                .bucket(name)
                .prefix("tenants/")
                .delimiter("/")
                .send()
                .await
                .with_context(|| format!("listing {name}"))?;
            for prefix in listed.common_prefixes().iter().filter_map(|p| p.prefix()) {
                if let Some(tenant_id) = marker(client, name, &format!("{prefix}{}", landlord_storage::MARKER)).await? {
                    found.push(Object {
                        kind: "s3.prefix",
                        external_id: format!("{name}/{prefix}"),
                        tenant_id,
                        key: prefix.strip_prefix("tenants/").map(|k| k.trim_end_matches('/').to_owned()),
                    });
                }
            }
        } else if let Some(tenant_id) = marker(client, name, landlord_storage::MARKER).await? {
            let key = name.strip_prefix(before).and_then(|rest| rest.strip_suffix(after)).map(str::to_owned);
            found.push(Object { kind: "s3.bucket", external_id: name.to_owned(), tenant_id, key });
        }
    }
    Ok(found)
}

/// The tenant id in a marker object, if there is one.
async fn marker(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<String>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => {
            let body: ByteStream = object.body;
            let bytes = body.collect().await.context("reading a marker")?.into_bytes();
            Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
        }
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(error) => Err(anyhow::Error::new(error).context(format!("reading {bucket}/{key}"))),
    }
}

/// Removes an orphan with the owning worker's compensation, as if the saga
/// that made it were undoing it; the worker checks the marker first.
async fn remove_orphan(
    object: &Object,
    idp: &Idp,
    database: &landlord_database::Settings,
    storage: &landlord_storage::Storage,
) -> Result<()> {
    let key = object.key.clone().context("its name says no tenant key")?;
    let tier = match object.kind {
        "keycloak.organization" | "postgres.pooled_tenant" | "s3.prefix" => pb::Tier::Pooled,
        "postgres.database" => pb::Tier::Silo,
        _ => pb::Tier::Bridge,
    };
    let command = pb::StepCommand {
        saga_id: format!("audit-{}", object.tenant_id),
        step: "audit".into(),
        compensate: true,
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: object.tenant_id.clone(),
            key,
            tier: tier as i32,
            ..Default::default()
        }),
        resources: vec![pb::Resource {
            kind: object.kind.to_owned(),
            external_id: object.external_id.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let delivery = DeliveryInfo::direct(0);
    let outcome = match object.kind {
        "keycloak.realm" | "keycloak.organization" => idp.run("delete_realm", &command, &delivery).await,
        "s3.bucket" | "s3.prefix" => storage.run("delete_bucket", &command, &delivery).await,
        _ => {
            let provisioner = landlord_database::Provisioner::connect(database.clone())?;
            provisioner.run("deprovision", &command, &delivery).await
        }
    };
    outcome.map(|_| ()).map_err(|failure| anyhow::anyhow!("{failure}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_markers_give_back_keys_and_ids() {
        assert_eq!(key_of_pg_name("tenant_acme_corp").as_deref(), Some("acme-corp"));
        assert_eq!(key_of_pg_name("postgres"), None);
        assert_eq!(marked("landlord:tenant=abc seed=x sha256=y").as_deref(), Some("abc"));
        assert_eq!(marked("something else"), None);
    }
}
