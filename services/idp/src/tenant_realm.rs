//! Bridge and silo tiers: a realm per tenant and its application client.

use std::collections::HashMap;

use landlord_contract::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keycloak::{Body, KeycloakError, Result};
use crate::{Idp, Owner, SAGA_ATTRIBUTE, TENANT_ATTRIBUTE, Tenant, resource};

/// The RealmRepresentation of a tenant's realm.
fn realm_representation(idp: &Idp, tenant: &Tenant) -> Value {
    let settings = &idp.settings.realm;
    let mut realm = json!({
        "realm": tenant.realm_name(),
        "enabled": true,
        "displayName": tenant.display_name,
        "loginWithEmailAllowed": true,
        "duplicateEmailsAllowed": false,
        "resetPasswordAllowed": true,
        "accessTokenLifespan": settings.access_token_lifespan.as_secs(),
        "ssoSessionIdleTimeout": settings.sso_session_idle.as_secs(),
        "ssoSessionMaxLifespan": settings.sso_session_max.as_secs(),
        // RealmRepresentation.attributes is a map of strings.
        "attributes": { TENANT_ATTRIBUTE: tenant.id, "tenantKey": tenant.key, SAGA_ATTRIBUTE: tenant.saga },
    });
    if let Some(theme) = &settings.login_theme {
        realm["loginTheme"] = json!(theme);
    }
    if let Some(smtp) = &settings.smtp {
        realm["smtpServer"] = smtp.clone();
    }
    realm
}

/// `create_realm`: the realm `tenant-<key>` (marked in the same request),
/// then its user profile. A realm of this tenant that exists already is
/// adopted by this saga.
pub async fn create_realm(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let name = tenant.realm_name();
    let body = realm_representation(idp, tenant);
    let reply = kc.send(Method::POST, kc.admin_url(&[], &[]), Some(Body::Json(&body)), "creating the realm").await?;
    match reply.status {
        StatusCode::CREATED => tracing::info!(realm = %name, "realm created"),
        StatusCode::CONFLICT => {
            let existing = kc.send(Method::GET, kc.admin_url(&[&name], &[]), None, "reading the realm").await?;
            if existing.status != StatusCode::OK {
                return Err(KeycloakError::unexpected("reading the existing realm", &existing));
            }
            match tenant.owner(&existing.body) {
                Owner::ThisSaga => tracing::info!(realm = %name, "realm exists and is this saga's"),
                Owner::OtherSaga(previous) => adopt_realm(idp, tenant, &name, existing.body, previous).await?,
                Owner::OtherTenant(_) => return Err(tenant.conflict(&format!("realm {name}"), &reply.message())),
            }
        }
        _ => return Err(KeycloakError::unexpected("creating the realm", &reply)),
    }
    allow_admin_attributes(idp, &name).await?;
    let public = &idp.settings.public_url;
    let outputs = HashMap::from([
        ("idp.realm".to_owned(), name.clone()),
        ("idp.login_url".to_owned(), format!("{public}/realms/{name}/account")),
        ("idp.admin_portal_url".to_owned(), format!("{public}/admin/{name}/console/")),
    ]);
    Ok(pb::StepOk {
        resources: vec![resource("keycloak.realm", &name, &[(landlord_contract::RESOURCE_TENANT_ID, &tenant.id)])],
        outputs,
    })
}

/// Rewrites the realm's saga attribute to this saga. Keycloak's realm `PUT`
/// merges the representation's fields but *replaces* the attribute map
/// when one is sent (`updateRealm` removes the attributes the map lacks),
/// so the map read is written back whole with the one change.
async fn adopt_realm(idp: &Idp, tenant: &Tenant, name: &str, existing: Value, previous: Option<String>) -> Result<()> {
    let kc = &idp.keycloak;
    let mut attributes = match existing.get("attributes") {
        Some(Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    attributes.insert(SAGA_ATTRIBUTE.to_owned(), json!(tenant.saga));
    let body = json!({ "attributes": attributes });
    let reply = kc.send(Method::PUT, kc.admin_url(&[name], &[]), Some(Body::Json(&body)), "adopting the realm").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("adopting the realm", &reply));
    }
    tracing::info!(realm = %name, previous = previous.as_deref().unwrap_or("none"), "realm adopted by this saga");
    Ok(())
}

/// Keycloak 24+ drops user attributes its user profile does not declare.
/// `tenantId` and `role` are set by administrators only, so the realm's
/// unmanaged-attribute policy becomes `ADMIN_EDIT`: kept, visible and
/// editable by admins, not by the user. The profile is replaced as a whole
/// by `PUT`, so it is read first and written back with the one change.
async fn allow_admin_attributes(idp: &Idp, realm: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let url = kc.admin_url(&[realm, "users", "profile"], &[]);
    let reply = kc.send(Method::GET, url.clone(), None, "reading the realm's user profile").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading the realm's user profile", &reply));
    }
    if reply.body["unmanagedAttributePolicy"].as_str().is_some() {
        return Ok(());
    }
    let mut profile = reply.body;
    profile["unmanagedAttributePolicy"] = json!("ADMIN_EDIT");
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&profile)), "updating the realm's user profile").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("updating the realm's user profile", &reply));
    }
    Ok(())
}

/// `delete_realm`: deletes the realm `tenant-<key>` (its client and users
/// go with it) if it carries this tenant and this saga; gone is fine, and
/// anything else is left in place with a `fenced` note. The name comes
/// from the key, not from the forward step's resources: a `create_realm`
/// that failed after creating the realm reported none.
pub async fn delete_realm(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let name = tenant.realm_name();
    let existing = kc.send(Method::GET, kc.admin_url(&[&name], &[]), None, "reading the realm").await?;
    match existing.status {
        StatusCode::NOT_FOUND => {
            tracing::info!(realm = %name, "realm already gone");
            return Ok(pb::StepOk::default());
        }
        StatusCode::OK => {
            if let Some(fenced) = tenant.fenced(&format!("realm {name}"), &tenant.owner(&existing.body)) {
                return Ok(fenced);
            }
        }
        _ => return Err(KeycloakError::unexpected("reading the realm", &existing)),
    }
    let reply = kc.send(Method::DELETE, kc.admin_url(&[&name], &[]), None, "deleting the realm").await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {
            tracing::info!(realm = %name, "realm deleted");
            Ok(pb::StepOk::default())
        }
        _ => Err(KeycloakError::unexpected("deleting the realm", &reply)),
    }
}

/// The client's redirect URIs for the tenant's domains: `https://<domain>/*`.
pub(crate) fn redirect_uris(tenant: &Tenant) -> Vec<String> {
    tenant.domains.iter().map(|d| format!("https://{d}/*")).collect()
}

/// The client's web origins for the tenant's domains: `https://<domain>`.
pub(crate) fn web_origins(tenant: &Tenant) -> Vec<String> {
    tenant.domains.iter().map(|d| format!("https://{d}")).collect()
}

/// The ClientRepresentation of the tenant's application client.
fn client_representation(tenant: &Tenant) -> Value {
    let redirect_uris = redirect_uris(tenant);
    let web_origins = web_origins(tenant);
    json!({
        "clientId": tenant.client_id(),
        "name": tenant.display_name,
        "enabled": true,
        "protocol": "openid-connect",
        "publicClient": true,
        "standardFlowEnabled": true,
        "implicitFlowEnabled": false,
        "directAccessGrantsEnabled": false,
        "serviceAccountsEnabled": false,
        "redirectUris": redirect_uris,
        "webOrigins": web_origins,
        // ClientRepresentation.attributes is a map of strings; Keycloak
        // joins several post-logout redirect URIs with "##".
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "post.logout.redirect.uris": redirect_uris.join("##"),
            TENANT_ATTRIBUTE: tenant.id,
            SAGA_ATTRIBUTE: tenant.saga,
        },
    })
}

/// The client `clientId` in `realm`, if any.
pub(crate) async fn find_client(idp: &Idp, realm: &str, client_id: &str) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let reply = kc
        .send(Method::GET, kc.admin_url(&[realm, "clients"], &[("clientId", client_id)]), None, "looking up a client")
        .await?;
    match reply.status {
        StatusCode::OK => Ok(reply.body.as_array().and_then(|list| list.first().cloned())),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(KeycloakError::unexpected("looking up a client", &reply)),
    }
}

/// `create_client`: the public OIDC client `<key>-app`; this tenant's
/// client that exists already is adopted by this saga.
pub async fn create_client(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = tenant.realm_name();
    let client_id = tenant.client_id();
    let body = client_representation(tenant);
    let url = kc.admin_url(&[&realm, "clients"], &[]);
    let reply = kc.send(Method::POST, url, Some(Body::Json(&body)), "creating the client").await?;
    let uuid = match reply.status {
        StatusCode::CREATED => {
            tracing::info!(realm = %realm, client = %client_id, "client created");
            reply.created_id("creating the client")?
        }
        StatusCode::CONFLICT => {
            let existing = find_client(idp, &realm, &client_id).await?;
            let owner = existing.as_ref().map(|client| tenant.owner(client));
            match (existing, owner) {
                (Some(client), Some(Owner::ThisSaga)) => {
                    tracing::info!(realm = %realm, client = %client_id, "client exists and is this saga's");
                    client["id"].as_str().unwrap_or_default().to_owned()
                }
                (Some(client), Some(Owner::OtherSaga(_))) => adopt_client(idp, tenant, &realm, client).await?,
                _ => return Err(tenant.conflict(&format!("client {client_id} in realm {realm}"), &reply.message())),
            }
        }
        StatusCode::NOT_FOUND => {
            return Err(KeycloakError::Refused(format!("realm {realm} does not exist: {}", reply.message())));
        }
        _ => return Err(KeycloakError::unexpected("creating the client", &reply)),
    };
    let outputs = HashMap::from([("idp.client_id".to_owned(), client_id.clone())]);
    Ok(pb::StepOk {
        resources: vec![resource("keycloak.client", &uuid, &[("realm", &realm), ("clientId", &client_id)])],
        outputs,
    })
}

/// Rewrites the client's saga attribute to this saga. The client read is
/// written back whole (Keycloak's client `PUT` merges attributes key by
/// key, so nothing else changes).
async fn adopt_client(idp: &Idp, tenant: &Tenant, realm: &str, mut client: Value) -> Result<String> {
    let kc = &idp.keycloak;
    let uuid = client["id"].as_str().unwrap_or_default().to_owned();
    if !client["attributes"].is_object() {
        client["attributes"] = json!({});
    }
    client["attributes"][SAGA_ATTRIBUTE] = json!(tenant.saga);
    let url = kc.admin_url(&[realm, "clients", &uuid], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&client)), "adopting the client").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("adopting the client", &reply));
    }
    tracing::info!(realm, client = %tenant.client_id(), "client adopted by this saga");
    Ok(uuid)
}

/// `delete_client`: deletes `<key>-app` if it carries this tenant and this
/// saga; gone (the client or its realm) is fine, anything else is left
/// with a `fenced` note.
pub async fn delete_client(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let realm = tenant.realm_name();
    let client_id = tenant.client_id();
    let Some(client) = find_client(idp, &realm, &client_id).await? else {
        tracing::info!(client = %client_id, "client already gone");
        return Ok(pb::StepOk::default());
    };
    if let Some(fenced) = tenant.fenced(&format!("client {client_id} in realm {realm}"), &tenant.owner(&client)) {
        return Ok(fenced);
    }
    let uuid = client["id"].as_str().unwrap_or_default();
    let reply =
        kc.send(Method::DELETE, kc.admin_url(&[&realm, "clients", uuid], &[]), None, "deleting the client").await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(pb::StepOk::default()),
        _ => Err(KeycloakError::unexpected("deleting the client", &reply)),
    }
}
