//! The lifecycle actions after ACTIVE (docs/lifecycle.md): `suspend`,
//! `resume`, `update` and `purge`, for the bridge and silo tiers (the
//! tenant's realm and its client) here, for the pooled tier (the tenant's
//! organization in the shared realm) in [`crate::organization`].
//!
//! | action | bridge and silo | pooled |
//! |---|---|---|
//! | `suspend` | realm `enabled: false` (a `PUT` of that field alone; the token endpoint then answers `403 access_denied "Realm not enabled"`), then `logout-all` | organization read, `enabled: false`, written back whole; the tenant's users (marked with its id) disabled and marked `landlordSuspendedBy`; every member logged out |
//! | `resume` | realm `enabled: true` | organization `enabled: true` (whole record); the users `suspend` disabled — those that carry `landlordSuspendedBy` — enabled again |
//! | `update` | display name → realm `displayName`; domains → the client's `redirectUris`, `webOrigins` and post-logout redirect URIs (the client read, changed, written back) | display name → organization `description`; domains → organization `domains` (whole record) |
//! | `purge` | realm deleted | the tenant's users deleted, then the organization |
//!
//! A pooled organization's display name goes to its `description`, where
//! `create_realm` put it, not to its `name`: the name is the tenant key,
//! unique in the realm, and how every step finds the organization; display
//! names need not be unique (Keycloak refuses a second organization of the
//! same name).
//!
//! Why the pooled tier disables users: Keycloak disables only *managed*
//! members of a disabled organization (those its identity provider brought
//! in), and the tenant's admin is an unmanaged member, added through the
//! admin API. A disabled organization alone would leave their password
//! sign-in working.
//!
//! Every action is idempotent (it reads first and writes only what
//! differs; `logout-all` and a user logout are harmless to repeat) and
//! touches only what carries this tenant's marker, from whichever saga: an
//! object whose `tenantId` names another tenant, or that carries no marker,
//! is a permanent `conflicting_owner` and nothing is changed. A realm,
//! client or organization that is gone is a permanent `not_found` for
//! `suspend`, `resume` and `update` and success for `purge`. Compensations
//! need nothing of their own: `suspend` and `resume` undo each other, and
//! the compensation of `update` is an `update` carrying the tenant as it
//! was. Failures are classified as for every step ([`KeycloakError`]).

use std::collections::HashMap;

use landlord_contract::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keycloak::{Body, KeycloakError, Result};
use crate::tenant_realm::{find_client, redirect_uris, web_origins};
use crate::{Idp, Tenant, admin_user, organization};

/// `suspend`: the tenant can no longer sign in, and its sessions end.
pub async fn suspend(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    if tenant.pooled() {
        organization::set_enabled(idp, tenant, false).await
    } else {
        set_realm_enabled(idp, tenant, false).await
    }
}

/// `resume`: what `suspend` did, reversed.
pub async fn resume(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    if tenant.pooled() {
        organization::set_enabled(idp, tenant, true).await
    } else {
        set_realm_enabled(idp, tenant, true).await
    }
}

/// `update`: the display name and the domains, as the command's tenant has
/// them.
pub async fn update(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    if tenant.pooled() { organization::update(idp, tenant).await } else { update_realm(idp, tenant).await }
}

/// `purge`: everything of the tenant in Keycloak deleted, and its sealed
/// admin password if one is still waiting.
pub async fn purge(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let ok = if tenant.pooled() { organization::purge(idp, tenant).await? } else { purge_realm(idp, tenant).await? };
    if let Some(secrets) = &idp.secrets {
        secrets.delete(&admin_user::password_ref(tenant)).await?;
    }
    Ok(ok)
}

/// The step's outputs.
pub(crate) fn outputs(pairs: &[(&str, String)]) -> pb::StepOk {
    pb::StepOk {
        resources: Vec::new(),
        outputs: pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<HashMap<_, _>>(),
    }
}

/// The tenant's realm, if it exists.
async fn read_realm(idp: &Idp, name: &str) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let reply = kc.send(Method::GET, kc.admin_url(&[name], &[]), None, "reading the realm").await?;
    match reply.status {
        StatusCode::OK => Ok(Some(reply.body)),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(KeycloakError::unexpected("reading the realm", &reply)),
    }
}

/// The tenant's realm: it must exist and be this tenant's.
async fn owned_realm(idp: &Idp, tenant: &Tenant) -> Result<(String, Value)> {
    let name = tenant.realm_name();
    let realm = read_realm(idp, &name)
        .await?
        .ok_or_else(|| KeycloakError::Missing(format!("realm {name} of tenant {} does not exist", tenant.key)))?;
    tenant.check_owner(&format!("realm {name}"), &realm)?;
    Ok((name, realm))
}

/// `PUT /admin/realms/{realm}` with the fields of `changes` alone: Keycloak
/// merges the fields sent (an `attributes` map would replace the realm's,
/// so none is sent).
async fn put_realm(idp: &Idp, name: &str, changes: &Value, what: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let reply = kc.send(Method::PUT, kc.admin_url(&[name], &[]), Some(Body::Json(changes)), what).await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected(what, &reply));
    }
    Ok(())
}

/// Suspends (`enabled: false`, then every session ended) or resumes the
/// tenant's realm.
async fn set_realm_enabled(idp: &Idp, tenant: &Tenant, enabled: bool) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let (name, realm) = owned_realm(idp, tenant).await?;
    if realm["enabled"].as_bool() != Some(enabled) {
        let what = if enabled { "enabling the realm" } else { "disabling the realm" };
        put_realm(idp, &name, &json!({ "enabled": enabled }), what).await?;
        tracing::info!(realm = %name, enabled, "realm {}", if enabled { "enabled" } else { "disabled" });
    }
    if !enabled {
        // Always, also when the realm was disabled already: a redelivery
        // after a failed logout must still end the sessions.
        let url = kc.admin_url(&[&name, "logout-all"], &[]);
        let reply = kc.send(Method::POST, url, None, "ending the realm's sessions").await?;
        if !reply.status.is_success() {
            return Err(KeycloakError::unexpected("ending the realm's sessions", &reply));
        }
        tracing::info!(realm = %name, "every session of the realm ended");
    }
    Ok(outputs(&[("idp.realm", name), ("idp.enabled", enabled.to_string())]))
}

/// `update` of a realm tier: the realm's display name, the client's
/// redirect URIs and web origins.
async fn update_realm(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let (name, realm) = owned_realm(idp, tenant).await?;
    if realm["displayName"].as_str() != Some(tenant.display_name.as_str()) {
        put_realm(idp, &name, &json!({ "displayName": tenant.display_name }), "renaming the realm").await?;
        tracing::info!(realm = %name, "realm display name updated");
    }
    let client_id = tenant.client_id();
    let what = format!("client {client_id} in realm {name}");
    let mut client = find_client(idp, &name, &client_id)
        .await?
        .ok_or_else(|| KeycloakError::Missing(format!("{what} does not exist")))?;
    tenant.check_owner(&what, &client)?;
    let redirects = redirect_uris(tenant);
    let origins = web_origins(tenant);
    let post_logout = redirects.join("##");
    let unchanged = client["redirectUris"] == json!(redirects)
        && client["webOrigins"] == json!(origins)
        && client["attributes"]["post.logout.redirect.uris"].as_str().unwrap_or_default() == post_logout;
    if !unchanged {
        // The client read is written back whole with the three changes.
        client["redirectUris"] = json!(redirects);
        client["webOrigins"] = json!(origins);
        if !client["attributes"].is_object() {
            client["attributes"] = json!({});
        }
        client["attributes"]["post.logout.redirect.uris"] = json!(post_logout);
        let uuid = client["id"].as_str().unwrap_or_default().to_owned();
        let url = kc.admin_url(&[&name, "clients", &uuid], &[]);
        let reply = kc.send(Method::PUT, url, Some(Body::Json(&client)), "updating the client's URIs").await?;
        if !reply.status.is_success() {
            return Err(KeycloakError::unexpected("updating the client's URIs", &reply));
        }
        tracing::info!(realm = %name, client = %client_id, "client redirect URIs and web origins updated");
    }
    Ok(outputs(&[("idp.realm", name), ("idp.client_id", client_id)]))
}

/// `purge` of a realm tier: the realm deleted (its client and users go with
/// it); already gone is done.
async fn purge_realm(idp: &Idp, tenant: &Tenant) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let name = tenant.realm_name();
    let Some(realm) = read_realm(idp, &name).await? else {
        tracing::info!(realm = %name, "realm already gone");
        return Ok(outputs(&[("idp.realm", name), ("idp.purged", "already gone".to_owned())]));
    };
    tenant.check_owner(&format!("realm {name}"), &realm)?;
    let reply = kc.send(Method::DELETE, kc.admin_url(&[&name], &[]), None, "deleting the realm").await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {
            tracing::info!(realm = %name, "realm purged");
            Ok(outputs(&[("idp.realm", name), ("idp.purged", "deleted".to_owned())]))
        }
        _ => Err(KeycloakError::unexpected("deleting the realm", &reply)),
    }
}
