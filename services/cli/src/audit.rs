//! `landlord audit [--remove-orphans]`: what exists in the backends against
//! what the control plane recorded.
//!
//! Every object Landlord creates carries a marker naming its tenant and the
//! saga that created it or last adopted it (issue 22): a Keycloak attribute
//! (`tenantId`, `landlordSagaId`), a row of `landlord_admin.markers` in the
//! tenant-data database (older objects: a COMMENT naming the tenant only),
//! an S3 marker object whose body is the tenant id and whose metadata
//! `landlord-saga` is the saga. The audit lists the marked objects in each
//! backend — realms, shared-realm organizations, schemas, roles, databases,
//! pooled rows, buckets, pooled prefixes — and compares them with the live
//! rows of the `resources` table:
//!
//! - an **orphan** is a marked object no live resource names: a crash or a
//!   bug left it behind, or it was recorded as deleted and is still there;
//! - a **missing** resource is recorded as live but is not in its backend.
//!
//! Objects of tenants whose saga is still running are left out: they may
//! exist before their result is recorded. Keycloak clients and users are
//! covered through their realm.
//!
//! `--remove-orphans` removes each orphan through the owning worker's own
//! compensation, sent under the saga its marker names *now* (read again
//! right before the removal), so the worker's fencing applies as to any
//! compensation. Right before each removal the control plane is read again:
//! an orphan whose saga is running or compensating, of a tenant with a saga
//! under way, or of a tenant that saga made ACTIVE is skipped — the list of
//! running sagas read at the start is stale by then, and a retry may have
//! adopted the object meanwhile. A compensation that leaves the object in
//! place (its `fenced` output) is reported as not removed. Exit status: 0
//! when nothing drifts (or every orphan was removed), 1 otherwise.
//!
//! Connections come from the workers' variables: `LANDLORD_DATABASE_URL`
//! (control plane), `LANDLORD_KEYCLOAK_*`, `LANDLORD_TENANT_DATABASE_URL`
//! (the database worker's role: it reads the markers table and pooled rows),
//! `LANDLORD_S3_*`. The tenant-data servers are those of
//! `LANDLORD_TENANT_DATABASES` (or the one `LANDLORD_TENANT_DATABASE_URL`
//! names, called `default`), as the database worker reads them: each is
//! listed, and each finding on one names it (`server <name>`). A tenant
//! placed on a server with nothing else of its made there (a lone
//! placement marker, kind `landlord.placement`, named by the tenant id) is
//! an orphan unless a saga of the tenant is at work; removing it
//! compensates the tenant's provision, which then forgets the placement.

mod postgres;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use landlord_contract::pb;
use landlord_idp::{Idp, PasswordDelivery, SAGA_ATTRIBUTE, TENANT_ATTRIBUTE};
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_storage::{Ownership, Place};
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
    /// The tenant-data server it is on (found), or was recorded on
    /// (`None`: not a database object, or recorded before servers were).
    pub server: Option<String>,
}

impl Object {
    /// Whether `found` is the object this one records.
    fn recorded_as(&self, found: &Object) -> bool {
        self.kind == found.kind
            && self.external_id == found.external_id
            && (self.server.is_none() || self.server == found.server)
    }
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

fn kind(name: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|k| *k == name)
}

/// `tenant_<key with - as _>` back to the key (keys have no `_`).
fn key_of_pg_name(name: &str) -> Option<String> {
    name.strip_prefix("tenant_").map(|k| k.replace('_', "-"))
}

/// Who an object belongs to, by its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    tenant_id: String,
    /// `None`: a marker written before sagas were recorded.
    saga_id: Option<String>,
}

/// An orphan's marker, read again right before its removal.
#[derive(Debug)]
enum Marking {
    /// The object is gone (an earlier removal took it along, or someone else).
    Gone,
    Marked(Owner),
    /// The object is there but no longer carries a marker of Landlord's.
    Unmarked,
    /// A lone placement that is no longer lone: the tenant's live one (why).
    Busy(String),
}

/// The backends and the control plane, connected once.
struct Backends {
    control: PgPool,
    idp: Idp,
    shared_realm: String,
    tenant_data: landlord_database::Servers,
    storage: landlord_storage::Storage,
    storage_settings: landlord_storage::Settings,
}

pub async fn run(remove: bool) -> Result<bool> {
    let env = Env::process();
    let control_url = env.required("LANDLORD_DATABASE_URL", "the control plane")?;
    let control = PgPool::connect(&control_url).await.context("connecting to the control plane")?;
    let mut idp_settings = landlord_idp::Settings::from_env(&env)?;
    // Removing realms and organizations touches no temporary password.
    idp_settings.password_delivery = PasswordDelivery::None;
    let idp = Idp::new(idp_settings.clone(), None)?;
    let tenant_data = landlord_database::Servers::connect(landlord_database::servers::from_env(&env)?)?;
    let storage_settings = landlord_storage::Settings::from_env(&env)?;
    let storage = landlord_storage::Storage::new(storage_settings.clone());
    let backends =
        Backends { control, idp, shared_realm: idp_settings.shared_realm, tenant_data, storage, storage_settings };

    let busy: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id::text FROM sagas WHERE state IN ('running', 'compensating')")
            .fetch_all(&backends.control)
            .await?
            .into_iter()
            .collect();
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.kind, r.external_id, r.tenant_id::text, t.key, r.metadata->>'server' FROM resources r
         JOIN tenants t ON t.id = r.tenant_id WHERE r.deleted_at IS NULL",
    )
    .fetch_all(&backends.control)
    .await?;
    let recorded: BTreeMap<(&str, String, Option<String>), Object> = rows
        .into_iter()
        .filter_map(|(k, external_id, tenant_id, key, server)| {
            let kind = kind(&k)?;
            let server = server.filter(|_| kind.starts_with("postgres."));
            let object = Object { kind, external_id, tenant_id, key: Some(key), server };
            Some(((kind, object.external_id.clone(), object.server.clone()), object))
        })
        .collect();

    let mut found = keycloak(&backends.idp, &backends.shared_realm).await?;
    for server in backends.tenant_data.servers() {
        found.extend(postgres::objects(server.name(), server.provisioner.pool(), &backends.control).await?);
    }
    found.extend(s3(&backends.storage, &backends.storage_settings).await?);
    let found: BTreeMap<(&str, String, Option<String>), Object> =
        found.into_iter().map(|o| ((o.kind, o.external_id.clone(), o.server.clone()), o)).collect();

    let orphans: Vec<&Object> = found
        .values()
        .filter(|o| !recorded.values().any(|r| r.recorded_as(o)) && !busy.contains(&o.tenant_id))
        .collect();
    let missing: Vec<&Object> = recorded
        .values()
        .filter(|r| !found.values().any(|o| r.recorded_as(o)) && !busy.contains(&r.tenant_id))
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
            match backends.remove_orphan(object).await {
                Ok(Removal::Removed) => "removed".to_owned(),
                Ok(Removal::AlreadyGone) => "removed (already gone)".to_owned(),
                Ok(Removal::Skipped(why)) => {
                    left += 1;
                    format!("skipped: {why}")
                }
                Ok(Removal::Fenced(why)) => {
                    left += 1;
                    format!("NOT removed: the worker left it in place: {why}")
                }
                Err(error) => {
                    left += 1;
                    format!("NOT removed: {error:#}")
                }
            }
        } else {
            left += 1;
            "orphan (--remove-orphans removes it)".to_owned()
        };
        println!(
            "orphan   {:<23} {:<40} tenant {}{}  {outcome}",
            object.kind,
            object.external_id,
            object.tenant_id,
            on_server(object)
        );
    }
    for object in &missing {
        println!(
            "missing  {:<23} {:<40} tenant {} ({}){}: recorded as live, not in the backend",
            object.kind,
            object.external_id,
            object.tenant_id,
            object.key.as_deref().unwrap_or("?"),
            on_server(object)
        );
    }
    if orphans.is_empty() && missing.is_empty() {
        println!("no drift");
    }
    Ok(left == 0)
}

/// ` server <name>` for an object of a tenant-data server.
fn on_server(object: &Object) -> String {
    object.server.as_deref().map_or_else(String::new, |s| format!(" server {s}"))
}

async fn keycloak(idp: &Idp, shared_realm: &str) -> Result<Vec<Object>> {
    let kc = idp.keycloak();
    let mut found = Vec::new();
    let realms = kc.send(Method::GET, kc.admin_url(&[], &[]), None, "listing realms").await?;
    anyhow::ensure!(realms.status.is_success(), "listing realms: {} {}", realms.status, realms.message());
    for realm in realms.body.as_array().into_iter().flatten() {
        let (Some(name), Some(id)) =
            (realm["realm"].as_str(), landlord_idp::attribute(realm, TENANT_ATTRIBUTE).first().copied())
        else {
            continue;
        };
        found.push(Object {
            kind: "keycloak.realm",
            external_id: name.to_owned(),
            tenant_id: id.to_owned(),
            key: name.strip_prefix("tenant-").map(str::to_owned),
            server: None,
        });
    }
    let url = kc.admin_url(&[shared_realm, "organizations"], &[("first", "0"), ("max", "100000")]);
    let orgs = kc.send(Method::GET, url, None, "listing organizations").await?;
    // A shared realm without organizations (404) holds no pooled tenants.
    for org in orgs.body.as_array().into_iter().flatten() {
        let Some(id) = org["id"].as_str() else { continue };
        // Later Keycloak releases list brief representations, without
        // attributes: the marker is then read from the organization itself.
        let full = if org["attributes"].is_object() { None } else { organization(idp, shared_realm, id).await? };
        let Some(tenant) = landlord_idp::attribute(full.as_ref().unwrap_or(org), TENANT_ATTRIBUTE).first().copied()
        else {
            continue;
        };
        found.push(Object {
            kind: "keycloak.organization",
            external_id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            key: org["name"].as_str().map(str::to_owned),
            server: None,
        });
    }
    Ok(found)
}

/// The organization `id` of the shared realm, if it exists.
async fn organization(idp: &Idp, shared_realm: &str, id: &str) -> Result<Option<Value>> {
    let kc = idp.keycloak();
    let url = kc.admin_url(&[shared_realm, "organizations", id], &[]);
    let reply = kc.send(Method::GET, url, None, "reading an organization").await?;
    match reply.status.as_u16() {
        200 => Ok(Some(reply.body)),
        404 => Ok(None),
        _ => anyhow::bail!("reading organization {id}: {} {}", reply.status, reply.message()),
    }
}

/// The realm `name`, if it exists.
async fn realm(idp: &Idp, name: &str) -> Result<Option<Value>> {
    let kc = idp.keycloak();
    let reply = kc.send(Method::GET, kc.admin_url(&[name], &[]), None, "reading a realm").await?;
    match reply.status.as_u16() {
        200 => Ok(Some(reply.body)),
        404 => Ok(None),
        _ => anyhow::bail!("reading realm {name}: {} {}", reply.status, reply.message()),
    }
}

/// The marker a Keycloak representation carries.
fn keycloak_owner(representation: &Value) -> Marking {
    match landlord_idp::attribute(representation, TENANT_ATTRIBUTE).first() {
        Some(tenant) => Marking::Marked(Owner {
            tenant_id: (*tenant).to_owned(),
            saga_id: landlord_idp::attribute(representation, SAGA_ATTRIBUTE).first().map(|s| (*s).to_owned()),
        }),
        None => Marking::Unmarked,
    }
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
                let place = Place { bucket: name.to_owned(), prefix: prefix.to_owned() };
                if let Marking::Marked(owner) = s3_owner(storage, &place).await? {
                    found.push(Object {
                        kind: "s3.prefix",
                        external_id: format!("{name}/{prefix}"),
                        tenant_id: owner.tenant_id,
                        key: prefix.strip_prefix("tenants/").map(|k| k.trim_end_matches('/').to_owned()),
                        server: None,
                    });
                }
            }
        } else {
            let place = Place { bucket: name.to_owned(), prefix: String::new() };
            if let Marking::Marked(owner) = s3_owner(storage, &place).await? {
                let key = name.strip_prefix(before).and_then(|rest| rest.strip_suffix(after)).map(str::to_owned);
                found.push(Object {
                    kind: "s3.bucket",
                    external_id: name.to_owned(),
                    tenant_id: owner.tenant_id,
                    key,
                    server: None,
                });
            }
        }
    }
    Ok(found)
}

/// The ownership marker of a bucket or prefix, as the storage worker reads it.
async fn s3_owner(storage: &landlord_storage::Storage, place: &Place) -> Result<Marking> {
    let ownership = storage.ownership(place).await.map_err(|f| anyhow::anyhow!("{f}"))?;
    Ok(match ownership {
        Ownership::Marked(marker) => Marking::Marked(Owner { tenant_id: marker.tenant_id, saga_id: marker.saga_id }),
        Ownership::Missing => Marking::Gone,
        // Nothing left under a prefix: nothing to remove.
        Ownership::Empty if !place.own_bucket() => Marking::Gone,
        Ownership::Empty | Ownership::Tagged(_) | Ownership::Unmarked => Marking::Unmarked,
    })
}

/// What became of an orphan.
#[derive(Debug)]
enum Removal {
    Removed,
    /// Not there any more when its marker was read again.
    AlreadyGone,
    /// Left alone: the control plane says it may be in use (why).
    Skipped(String),
    /// The worker's compensation left it in place (its `fenced` note).
    Fenced(String),
}

impl Backends {
    /// The orphan's marker, read now.
    async fn marking(&self, object: &Object) -> Result<Marking> {
        match object.kind {
            "keycloak.realm" => {
                Ok(realm(&self.idp, &object.external_id).await?.as_ref().map_or(Marking::Gone, keycloak_owner))
            }
            "keycloak.organization" => Ok(organization(&self.idp, &self.shared_realm, &object.external_id)
                .await?
                .as_ref()
                .map_or(Marking::Gone, keycloak_owner)),
            "s3.bucket" | "s3.prefix" => {
                let resource = pb::Resource {
                    kind: object.kind.to_owned(),
                    external_id: object.external_id.clone(),
                    ..Default::default()
                };
                let place = Place::from_resource(&resource).context("not a bucket or prefix name")?;
                s3_owner(&self.storage, &place).await
            }
            _ => {
                let server = object.server.as_deref().unwrap_or_default();
                let provisioner = self.tenant_data.server(server).context("not on a known tenant-data server")?;
                let marking = postgres::marking(provisioner.pool(), object)
                    .await
                    .with_context(|| format!("tenant-data server {server}"))?;
                Ok(marking.unwrap_or_else(|| Marking::Busy("the tenant has objects on the server now".to_owned())))
            }
        }
    }

    /// Why the object must be left alone now, if it must: its saga, or
    /// another saga of its tenant, is at work, or its saga made the tenant
    /// ACTIVE (the object is then the live tenant's, whatever the resources
    /// table says). Read right before the removal, not from the list read
    /// at the start.
    async fn in_use(&self, owner: &Owner) -> Result<Option<String>> {
        // Ids compared as text: a marker may name a saga that is not a UUID.
        let (status, at_work, saga_state): (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
            "SELECT (SELECT status FROM tenants WHERE id::text = $1),
                    (SELECT string_agg(id::text || ' ' || state, ', ') FROM sagas
                      WHERE tenant_id::text = $1 AND state IN ('running', 'compensating')),
                    (SELECT state FROM sagas WHERE id::text = $2)",
        )
        .bind(&owner.tenant_id)
        .bind(owner.saga_id.as_deref().unwrap_or_default())
        .fetch_one(&self.control)
        .await
        .context("reading the tenant's sagas")?;
        let saga = owner.saga_id.as_deref().unwrap_or("(none)");
        if let Some(state @ ("running" | "compensating")) = saga_state.as_deref() {
            return Ok(Some(format!("saga running (its saga {saga} is {state})")));
        }
        if let Some(sagas) = at_work {
            return Ok(Some(format!("saga running (the tenant's saga {sagas})")));
        }
        let active = status.as_deref() == Some("ACTIVE");
        Ok(match (&owner.saga_id, saga_state.as_deref()) {
            (None, _) if active => Some("tenant ACTIVE and its marker names no saga".to_owned()),
            (Some(_), Some("succeeded")) if active => Some(format!("tenant ACTIVE with saga {saga}")),
            _ => None,
        })
    }

    /// Removes an orphan with the owning worker's compensation, sent under
    /// the saga its marker names, after checking again that nothing uses
    /// it; the worker checks the marker once more before deleting anything.
    async fn remove_orphan(&self, object: &Object) -> Result<Removal> {
        let owner = match self.marking(object).await? {
            Marking::Gone => return Ok(Removal::AlreadyGone),
            Marking::Unmarked => anyhow::bail!("it no longer carries a marker of Landlord's"),
            Marking::Busy(why) => return Ok(Removal::Skipped(why)),
            Marking::Marked(owner) => owner,
        };
        if let Some(why) = self.in_use(&owner).await? {
            return Ok(Removal::Skipped(why));
        }
        let command = compensation(object, &owner)?;
        let delivery = DeliveryInfo::direct(0);
        let outcome = match object.kind {
            "keycloak.realm" | "keycloak.organization" => self.idp.run("delete_realm", &command, &delivery).await,
            "s3.bucket" | "s3.prefix" => self.storage.run("delete_bucket", &command, &delivery).await,
            _ => self.tenant_data.run("deprovision", &command, &delivery).await,
        };
        let ok = outcome.map_err(|failure| anyhow::anyhow!("{failure}"))?;
        Ok(match ok.outputs.get("fenced") {
            Some(why) => Removal::Fenced(why.clone()),
            None => Removal::Removed,
        })
    }
}

/// The owning worker's compensation that removes `object`, sent under the
/// saga its marker names (`owner`, read right before).
fn compensation(object: &Object, owner: &Owner) -> Result<pb::StepCommand> {
    let key = object.key.clone().context("neither its name nor the control plane says its tenant's key")?;
    let tier = match object.kind {
        "keycloak.organization" | "postgres.pooled_tenant" | "s3.prefix" => pb::Tier::Pooled,
        "postgres.database" => pb::Tier::Silo,
        _ => pb::Tier::Bridge,
    };
    Ok(pb::StepCommand {
        // A marker without a saga predates saga fencing: the database and
        // storage workers let any saga of the tenant undo it, the idp
        // worker none (it is then reported as left in place).
        saga_id: owner.saga_id.clone().unwrap_or_else(|| format!("audit-{}", owner.tenant_id)),
        step: "audit".into(),
        compensate: true,
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: owner.tenant_id.clone(),
            key,
            tier: tier as i32,
            ..Default::default()
        }),
        // A database object names its server, where the worker then
        // looks; a placement marker is found by the tenant's markers.
        resources: if object.kind == postgres::PLACEMENT {
            Vec::new()
        } else {
            vec![pb::Resource {
                kind: object.kind.to_owned(),
                external_id: object.external_id.clone(),
                metadata: object.server.iter().map(|s| ("server".to_owned(), s.clone())).collect(),
            }]
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_back_keys() {
        assert_eq!(key_of_pg_name("tenant_acme_corp").as_deref(), Some("acme-corp"));
        assert_eq!(key_of_pg_name("postgres"), None);
    }

    #[test]
    fn keycloak_markers_name_tenant_and_saga() {
        let realm = serde_json::json!({"attributes": {TENANT_ATTRIBUTE: "t1", SAGA_ATTRIBUTE: "s1"}});
        let org = serde_json::json!({"attributes": {TENANT_ATTRIBUTE: ["t1"]}});
        let owner = |m| match m {
            Marking::Marked(o) => Some(o),
            _ => None,
        };
        assert_eq!(owner(keycloak_owner(&realm)), Some(Owner { tenant_id: "t1".into(), saga_id: Some("s1".into()) }));
        assert_eq!(owner(keycloak_owner(&org)), Some(Owner { tenant_id: "t1".into(), saga_id: None }));
        assert!(matches!(keycloak_owner(&serde_json::json!({})), Marking::Unmarked));
    }
}
