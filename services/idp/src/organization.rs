//! Pooled tier: a Keycloak 26 Organization per tenant in one shared realm
//! (realm-per-tenant degrades past a few hundred realms).
//!
//! The shared realm is the operator's: it must exist, have organizations
//! enabled, and keep the `tenantId`, `landlordSagaId` and `role` user
//! attributes (declared in its user profile, or unmanaged attributes
//! `ENABLED` or `ADMIN_EDIT`). Its application
//! client is shared too, so `create_client` creates nothing for a pooled
//! tenant and reports the shared client (`idp.client_mode=shared`).

use std::collections::HashMap;

use landlord_contract::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keycloak::{Body, KeycloakError, Result};
use crate::{Idp, Owner, SAGA_ATTRIBUTE, TENANT_ATTRIBUTE, Tenant, resource};

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
async fn read(idp: &Idp, id: &str) -> Result<Option<Value>> {
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
