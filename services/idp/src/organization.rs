//! Pooled tier: a Keycloak 26 Organization per tenant in one shared realm
//! (realm-per-tenant degrades past a few hundred realms).
//!
//! The shared realm is the operator's: it must exist, have organizations
//! enabled, and keep the `tenantId`, `landlordSagaId`, `landlordSuspendedBy`
//! and `role` user attributes (declared in its user profile, or unmanaged
//! attributes `ENABLED` or `ADMIN_EDIT`). Its application
//! client is shared too, so `create_client` creates nothing for a pooled
//! tenant and reports the shared client (`idp.client_mode=shared`).

use std::collections::HashMap;

use landlord_contract::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keycloak::{Body, KeycloakError, Result};
use crate::{Idp, Owner, SAGA_ATTRIBUTE, SUSPENDED_ATTRIBUTE, TENANT_ATTRIBUTE, Tenant, resource};

/// The organization named `<key>` in the shared realm, if any, with its
/// attributes.
pub async fn find(idp: &Idp, tenant: &Tenant) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let url = kc.admin_url(&[realm, "organizations"], &[("search", &tenant.key), ("exact", "true")]);
    let reply = kc.send(Method::GET, url, None, "looking up the organization").await?;
    let found = match reply.status {
        StatusCode::OK => reply
            .body
            .as_array()
            .and_then(|list| list.iter().find(|o| o["name"].as_str() == Some(tenant.key.as_str())).cloned()),
        _ => return Err(KeycloakError::unexpected("looking up the organization", &reply)),
    };
    match found {
        // Later Keycloak releases list brief representations, without
        // attributes: the markers are then read from the organization itself.
        Some(org) if !org["attributes"].is_object() => read(idp, org["id"].as_str().unwrap_or_default()).await,
        other => Ok(other),
    }
}

/// The organization `id` in the shared realm, if it exists.
pub(crate) async fn read(idp: &Idp, id: &str) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let reply = kc
        .send(Method::GET, kc.admin_url(&[realm, "organizations", id], &[]), None, "reading the organization")
        .await?;
    match reply.status {
        StatusCode::OK => Ok(Some(reply.body)),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(KeycloakError::unexpected("reading the organization", &reply)),
    }
}

/// Rewrites the organization's saga attribute to this saga. Keycloak's
/// organization `PUT` replaces the whole record (name, attributes,
/// domains…), so the organization read is written back whole with the one
/// change.
async fn adopt(idp: &Idp, tenant: &Tenant, mut org: Value) -> Result<String> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let id = org["id"].as_str().unwrap_or_default().to_owned();
    if !org["attributes"].is_object() {
        org["attributes"] = json!({});
    }
    org["attributes"][SAGA_ATTRIBUTE] = json!([tenant.saga]);
    let url = kc.admin_url(&[realm, "organizations", &id], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&org)), "adopting the organization").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("adopting the organization", &reply));
    }
    tracing::info!(organization = %tenant.key, "organization adopted by this saga");
    Ok(id)
}

/// `create_realm` for a pooled tenant: its organization.
pub async fn create(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let domains: Vec<Value> = tenant.domains.iter().map(|d| json!({"name": d, "verified": false})).collect();
    // OrganizationRepresentation.attributes is a map of string lists.
    let body = json!({
        "name": tenant.key,
        "alias": tenant.key,
        "enabled": true,
        "description": tenant.display_name,
        "domains": domains,
        "attributes": { TENANT_ATTRIBUTE: [tenant.id], "tenantKey": [tenant.key], SAGA_ATTRIBUTE: [tenant.saga] },
    });
    let url = kc.admin_url(&[realm, "organizations"], &[]);
    let reply = kc.send(Method::POST, url, Some(Body::Json(&body)), "creating the organization").await?;
    let id = match reply.status {
        StatusCode::CREATED => {
            tracing::info!(realm = %realm, organization = %tenant.key, "organization created");
            reply.created_id("creating the organization")?
        }
        StatusCode::CONFLICT => match find(idp, tenant).await?.map(|org| (tenant.owner(&org), org)) {
            Some((Owner::ThisSaga, org)) => {
                tracing::info!(organization = %tenant.key, "organization exists and is this saga's");
                org["id"].as_str().unwrap_or_default().to_owned()
            }
            Some((Owner::OtherSaga(_), org)) => adopt(idp, tenant, org).await?,
            _ => {
                return Err(tenant.conflict(&format!("organization {} in realm {realm}", tenant.key), &reply.message()));
            }
        },
        // "Realm not found." or "Organizations not enabled for this realm.":
        // the shared realm is misconfigured; retrying will not fix it.
        StatusCode::NOT_FOUND => {
            return Err(KeycloakError::Refused(format!(
                "shared realm {realm} cannot hold organizations: {}",
                reply.message()
            )));
        }
        _ => return Err(KeycloakError::unexpected("creating the organization", &reply)),
    };
    let public = &idp.settings.public_url;
    let outputs = HashMap::from([
        ("idp.realm".to_owned(), realm.clone()),
        ("idp.organization_id".to_owned(), id.clone()),
        ("idp.login_url".to_owned(), format!("{public}/realms/{realm}/account")),
    ]);
    Ok(pb::StepOk {
        resources: vec![resource(
            "keycloak.organization",
            &id,
            &[("realm", realm), (landlord_contract::RESOURCE_TENANT_ID, &tenant.id)],
        )],
        outputs,
    })
}

/// `delete_realm` for a pooled tenant: deletes its organization (members
/// stay users of the shared realm; `delete_admin_user` removes the admin)
/// if it carries this tenant and this saga; gone is fine, anything else is
/// left with a `fenced` note. Without the forward step's resources (it
/// failed) the organization is looked up by the name the key gives it.
pub async fn delete(idp: &Idp, tenant: &Tenant, resources: &[pb::Resource]) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let recorded = resources.iter().find(|r| r.kind == "keycloak.organization").map(|r| r.external_id.clone());
    let org = match recorded {
        Some(id) => read(idp, &id).await?,
        None => find(idp, tenant).await?,
    };
    let Some(org) = org else {
        tracing::info!(organization = %tenant.key, "organization already gone");
        return Ok(pb::StepOk::default());
    };
    let what = format!("organization {} in realm {realm}", org["name"].as_str().unwrap_or(&tenant.key));
    if let Some(fenced) = tenant.fenced(&what, &tenant.owner(&org)) {
        return Ok(fenced);
    }
    let id = org["id"].as_str().unwrap_or_default();
    let reply = kc
        .send(Method::DELETE, kc.admin_url(&[realm, "organizations", id], &[]), None, "deleting the organization")
        .await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {
            tracing::info!(organization = %tenant.key, "organization deleted");
            Ok(pb::StepOk::default())
        }
        _ => Err(KeycloakError::unexpected("deleting the organization", &reply)),
    }
}

/// `create_client` for a pooled tenant: nothing to create.
pub fn shared_client(idp: &Idp) -> pb::StepOk {
    pb::StepOk {
        resources: Vec::new(),
        outputs: HashMap::from([
            ("idp.client_id".to_owned(), idp.settings.shared_client.clone()),
            ("idp.client_mode".to_owned(), "shared".to_owned()),
        ]),
    }
}

/// Adds the user to the tenant's organization; already a member is fine.
pub async fn add_member(idp: &Idp, tenant: &Tenant, organization_id: &str, user_id: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let url = kc.admin_url(&[realm, "organizations", organization_id, "members"], &[]);
    // The body is the bare user id (OrganizationMemberResource.addMember(String id)).
    let reply = kc.send(Method::POST, url, Some(Body::Text(user_id)), "adding the admin to the organization").await?;
    match reply.status {
        StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::CONFLICT => {
            tracing::info!(organization = %tenant.key, "admin is a member of the organization");
            Ok(())
        }
        _ => Err(KeycloakError::unexpected("adding the admin to the organization", &reply)),
    }
}

// Lifecycle of a pooled tenant (see `crate::lifecycle`).

/// The tenant's organization: it must exist and be this tenant's.
async fn owned(idp: &Idp, tenant: &Tenant) -> Result<Value> {
    let realm = &idp.settings.shared_realm;
    let org = find(idp, tenant).await?.ok_or_else(|| {
        KeycloakError::Missing(format!("organization {} in realm {realm} does not exist", tenant.key))
    })?;
    tenant.check_owner(&format!("organization {} in realm {realm}", tenant.key), &org)?;
    Ok(org)
}

/// Writes the organization back whole: Keycloak's `PUT` replaces the
/// record, so `org` must be the one read, changed.
async fn put(idp: &Idp, org: &Value, what: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let id = org["id"].as_str().unwrap_or_default();
    let url = kc.admin_url(&[realm, "organizations", id], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(org)), what).await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected(what, &reply));
    }
    Ok(())
}

/// Every member of the organization (Keycloak pages them, ten by default).
async fn members(idp: &Idp, organization_id: &str) -> Result<Vec<Value>> {
    const PAGE: usize = 100;
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let mut all = Vec::new();
    loop {
        let first = all.len().to_string();
        let max = PAGE.to_string();
        let query = [("first", first.as_str()), ("max", max.as_str())];
        let url = kc.admin_url(&[realm, "organizations", organization_id, "members"], &query);
        let reply = kc.send(Method::GET, url, None, "listing the organization's members").await?;
        let page = match (reply.status, reply.body) {
            (StatusCode::OK, Value::Array(page)) => page,
            (StatusCode::OK, _) => {
                return Err(KeycloakError::Protocol {
                    what: "listing the organization's members".into(),
                    problem: "the answer is not a list".into(),
                });
            }
            (status, body) => {
                let reply = crate::keycloak::Reply { status, location: None, body };
                return Err(KeycloakError::unexpected("listing the organization's members", &reply));
            }
        };
        let last = page.len() < PAGE;
        all.extend(page);
        if last {
            return Ok(all);
        }
    }
}

/// The user `id` of the shared realm, read whole (a member listing may be
/// brief), if it exists.
async fn read_user(idp: &Idp, id: &str) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let reply = kc.send(Method::GET, kc.admin_url(&[realm, "users", id], &[]), None, "reading a member").await?;
    match reply.status {
        StatusCode::OK => Ok(Some(reply.body)),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(KeycloakError::unexpected("reading a member", &reply)),
    }
}

/// Disables (marking it with this saga) or enables again (if `suspend`
/// marked it) one of the tenant's users. Keycloak's user `PUT` replaces the
/// attributes when they are sent, so the user read is written back whole.
async fn set_user_enabled(idp: &Idp, tenant: &Tenant, id: &str, enabled: bool) -> Result<bool> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let Some(mut user) = read_user(idp, id).await? else { return Ok(false) };
    if !tenant.owns(&user) {
        return Ok(false);
    }
    let marked = !crate::attribute(&user, SUSPENDED_ATTRIBUTE).is_empty();
    let is_enabled = user["enabled"].as_bool() != Some(false);
    if !user["attributes"].is_object() {
        user["attributes"] = json!({});
    }
    match enabled {
        // An operator disabled this user before: not ours to change.
        false if !is_enabled => return Ok(false),
        false => user["attributes"][SUSPENDED_ATTRIBUTE] = json!([tenant.saga]),
        true if !marked => return Ok(false),
        true => {
            if let Some(attributes) = user["attributes"].as_object_mut() {
                attributes.remove(SUSPENDED_ATTRIBUTE);
            }
        }
    }
    user["enabled"] = json!(enabled);
    let what = if enabled { "enabling a member" } else { "disabling a member" };
    let reply = kc.send(Method::PUT, kc.admin_url(&[realm, "users", id], &[]), Some(Body::Json(&user)), what).await?;
    match reply.status {
        status if status.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(KeycloakError::unexpected(what, &reply)),
    }
}

/// `suspend` (`enabled` false) or `resume` of a pooled tenant.
pub async fn set_enabled(idp: &Idp, tenant: &Tenant, enabled: bool) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let mut org = owned(idp, tenant).await?;
    if !enabled {
        // Before anything changes: a profile that dropped the mark would
        // leave users that `resume` does not know to enable again.
        crate::admin_user::keeps_attributes(idp, realm, &[TENANT_ATTRIBUTE, SUSPENDED_ATTRIBUTE]).await?;
    }
    let id = org["id"].as_str().unwrap_or_default().to_owned();
    if org["enabled"].as_bool() != Some(enabled) {
        org["enabled"] = json!(enabled);
        put(idp, &org, if enabled { "enabling the organization" } else { "disabling the organization" }).await?;
        tracing::info!(organization = %tenant.key, enabled, "organization {}", if enabled { "enabled" } else { "disabled" });
    }
    let members = members(idp, &id).await?;
    let mut changed = 0;
    for member in &members {
        let user_id = member["id"].as_str().unwrap_or_default();
        if set_user_enabled(idp, tenant, user_id, enabled).await? {
            changed += 1;
        }
    }
    if !enabled {
        for member in &members {
            let user_id = member["id"].as_str().unwrap_or_default();
            let url = kc.admin_url(&[realm, "users", user_id, "logout"], &[]);
            let reply = kc.send(Method::POST, url, None, "logging a member out").await?;
            // A user deleted meanwhile has no session left either.
            if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
                return Err(KeycloakError::unexpected("logging a member out", &reply));
            }
        }
        tracing::info!(organization = %tenant.key, members = members.len(), "every member logged out");
    }
    Ok(crate::lifecycle::outputs(&[
        ("idp.organization_id", id),
        ("idp.enabled", enabled.to_string()),
        (if enabled { "idp.users_enabled" } else { "idp.users_disabled" }, changed.to_string()),
    ]))
}

/// `update` of a pooled tenant: the display name (the organization's
/// description, where `create` put it) and the domains, in the whole record.
pub async fn update(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let mut org = owned(idp, tenant).await?;
    let current = org["domains"].as_array().cloned().unwrap_or_default();
    // A domain that stays keeps what Keycloak knows of it (verified).
    let domains: Vec<Value> = tenant
        .domains
        .iter()
        .map(|name| {
            current
                .iter()
                .find(|d| d["name"].as_str() == Some(name.as_str()))
                .cloned()
                .unwrap_or_else(|| json!({"name": name, "verified": false}))
        })
        .collect();
    let id = org["id"].as_str().unwrap_or_default().to_owned();
    if org["description"].as_str() != Some(tenant.display_name.as_str()) || current != domains {
        org["description"] = json!(tenant.display_name);
        org["domains"] = Value::Array(domains);
        put(idp, &org, "updating the organization").await?;
        tracing::info!(organization = %tenant.key, "organization updated");
    }
    Ok(crate::lifecycle::outputs(&[("idp.organization_id", id)]))
}

/// `purge` of a pooled tenant: its users (members or not, found by their
/// marker) deleted first, then the organization, so that a purge that
/// stops half-way still finds what is left. Members that are not the
/// tenant's stay users of the shared realm.
pub async fn purge(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = &idp.settings.shared_realm;
    let org = find(idp, tenant).await?;
    if let Some(org) = &org {
        tenant.check_owner(&format!("organization {} in realm {realm}", tenant.key), org)?;
    }
    let mut users: Vec<String> = Vec::new();
    if let Some(id) = org.as_ref().and_then(|o| o["id"].as_str()) {
        users.extend(members(idp, id).await?.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)));
    }
    let query = format!("{TENANT_ATTRIBUTE}:{}", tenant.id);
    let url = kc.admin_url(&[realm, "users"], &[("q", &query), ("max", "1000")]);
    let reply = kc.send(Method::GET, url, None, "looking up the tenant's users").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("looking up the tenant's users", &reply));
    }
    users.extend(reply.body.as_array().into_iter().flatten().filter_map(|u| u["id"].as_str().map(str::to_owned)));
    users.sort();
    users.dedup();
    let mut deleted = 0;
    for id in &users {
        // Only users that carry this tenant's marker: Landlord made them.
        match read_user(idp, id).await? {
            Some(user) if tenant.owns(&user) => {}
            _ => continue,
        }
        let reply =
            kc.send(Method::DELETE, kc.admin_url(&[realm, "users", id], &[]), None, "deleting a tenant's user").await?;
        match reply.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => deleted += 1,
            _ => return Err(KeycloakError::unexpected("deleting a tenant's user", &reply)),
        }
    }
    let Some(org) = org else {
        tracing::info!(organization = %tenant.key, deleted, "organization already gone");
        return Ok(crate::lifecycle::outputs(&[
            ("idp.purged", "already gone".to_owned()),
            ("idp.users_deleted", deleted.to_string()),
        ]));
    };
    let id = org["id"].as_str().unwrap_or_default().to_owned();
    let reply = kc
        .send(Method::DELETE, kc.admin_url(&[realm, "organizations", &id], &[]), None, "deleting the organization")
        .await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {
            tracing::info!(organization = %tenant.key, deleted, "organization purged");
            Ok(crate::lifecycle::outputs(&[
                ("idp.organization_id", id),
                ("idp.purged", "deleted".to_owned()),
                ("idp.users_deleted", deleted.to_string()),
            ]))
        }
        _ => Err(KeycloakError::unexpected("deleting the organization", &reply)),
    }
}
