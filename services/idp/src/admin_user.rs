//! The tenant's admin user: in the tenant's realm with realm-management
//! `realm-admin` (bridge, silo), or in the shared realm as a member of the
//! tenant's organization (pooled).
//!
//! The username is the admin's email address (lower case). The user
//! carries `tenantId` and `role` attributes and a temporary password from
//! the CSPRNG, delivered as the crate docs say (sealed for the welcome
//! mail, or replaced through Keycloak's own `UPDATE_PASSWORD` link).

use std::collections::HashMap;

use landlord_contract::pb;
use landlord_runtime::SecretRef;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keycloak::{Body, KeycloakError, Result};
use crate::password::TemporaryPassword;
use crate::{Idp, Owner, PasswordDelivery, SAGA_ATTRIBUTE, TENANT_ATTRIBUTE, Tenant, organization, resource};

/// Where the welcome mail finds the admin's temporary password.
pub fn password_ref(tenant: &Tenant) -> SecretRef {
    SecretRef::new("idp", &tenant.id, "admin-password")
}

/// Marks a user whose password mail went out, so a redelivery sends none.
pub const EMAIL_SENT_ATTRIBUTE: &str = "passwordEmailSent";

fn username(tenant: &Tenant) -> String {
    tenant.admin.email.trim().to_lowercase()
}

/// Users of `realm` whose `field` (`username` or `email`) is exactly `value`.
pub(crate) async fn find_user(idp: &Idp, realm: &str, field: &str, value: &str) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let url = kc.admin_url(&[realm, "users"], &[(field, value), ("exact", "true")]);
    let reply = kc.send(Method::GET, url, None, "looking up a user").await?;
    match reply.status {
        StatusCode::OK => {
            Ok(reply.body.as_array().and_then(|list| list.iter().find(|u| u[field].as_str() == Some(value)).cloned()))
        }
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(KeycloakError::unexpected("looking up a user", &reply)),
    }
}

/// `create_admin_user`.
pub async fn create(idp: &Idp, tenant: &Tenant, inputs: &HashMap<String, String>) -> Result<pb::StepOk> {
    let settings = &idp.settings;
    let kc = &idp.keycloak;
    let realm = idp.user_realm(tenant);
    let username = username(tenant);
    if username.is_empty() {
        return Err(KeycloakError::Refused("the tenant has no admin email".into()));
    }
    if tenant.pooled() {
        // Checked before the user exists: a profile that dropped the
        // markers would leave a user no compensation may delete.
        keeps_attributes(idp, &realm, &[TENANT_ATTRIBUTE, SAGA_ATTRIBUTE]).await?;
    }
    let email_link = settings.password_delivery == PasswordDelivery::KeycloakEmail;
    let sealed = match (&idp.secrets, settings.password_delivery) {
        (Some(secrets), PasswordDelivery::WelcomeEmail) => Some((secrets, password_ref(tenant))),
        _ => None,
    };
    let (status, message, location) = {
        // The password lives only in this block: in the request (and sealed
        // for the welcome mail), nowhere else.
        let mut password = TemporaryPassword::generate()
            .map_err(|_| KeycloakError::Refused("the system random number generator failed".into()))?;
        if let Some((secrets, reference)) = &sealed {
            // Kept before the user exists: a redelivery uses the same one.
            password = TemporaryPassword::kept(secrets.put_if_absent(reference, password.expose()).await?);
        }
        let body = json!({
            "username": username,
            "email": username,
            "firstName": tenant.admin.first_name,
            "lastName": tenant.admin.last_name,
            "enabled": true,
            "emailVerified": settings.email_verified,
            // UserRepresentation.attributes is a map of string lists.
            "attributes": {
                TENANT_ATTRIBUTE: [tenant.id],
                SAGA_ATTRIBUTE: [tenant.saga],
                "role": [settings.admin_role],
            },
            "credentials": [{ "type": "password", "value": password.expose(), "temporary": true }],
            "requiredActions": if email_link { json!(["UPDATE_PASSWORD"]) } else { json!([]) },
        });
        let url = kc.admin_url(&[&realm, "users"], &[]);
        let reply = kc.send(Method::POST, url, Some(Body::Json(&body)), "creating the admin user").await?;
        let location = reply.created_id("creating the admin user").ok();
        (reply.status, reply.message(), location)
    };
    let user_id = match status {
        StatusCode::CREATED => {
            tracing::info!(realm = %realm, "admin user created");
            location.ok_or_else(|| KeycloakError::Protocol {
                what: "creating the admin user".into(),
                problem: "201 without a Location".into(),
            })?
        }
        StatusCode::CONFLICT => {
            // Taken by username or by email: look both up.
            let existing = match find_user(idp, &realm, "username", &username).await? {
                Some(user) => Some(user),
                None => find_user(idp, &realm, "email", &username).await?,
            };
            match existing.map(|user| (tenant.owner(&user), user)) {
                Some((Owner::ThisSaga, user)) => {
                    tracing::info!(realm = %realm, "admin user exists and is this saga's");
                    user["id"].as_str().unwrap_or_default().to_owned()
                }
                Some((Owner::OtherSaga(_), user)) => adopt(idp, tenant, &realm, user).await?,
                _ => return Err(tenant.conflict(&format!("user {username} in realm {realm}"), &message)),
            }
        }
        StatusCode::NOT_FOUND => {
            return Err(KeycloakError::Refused(format!("realm {realm} does not exist: {message}")));
        }
        _ => {
            return Err(KeycloakError::Status {
                what: "creating the admin user".into(),
                status: status.as_u16(),
                message,
            });
        }
    };
    if tenant.pooled() {
        let organization_id = match inputs.get("idp.organization_id") {
            Some(id) => id.clone(),
            None => organization::find(idp, tenant)
                .await?
                .and_then(|org| org["id"].as_str().map(str::to_owned))
                .ok_or_else(|| KeycloakError::Refused(format!("tenant {} has no organization yet", tenant.key)))?,
        };
        organization::add_member(idp, tenant, &organization_id, &user_id).await?;
    } else {
        grant_realm_admin(idp, &realm, &user_id).await?;
    }
    if email_link {
        send_password_email(idp, tenant, &realm, &user_id).await?;
    }
    let delivery = match settings.password_delivery {
        PasswordDelivery::WelcomeEmail => "welcome-email",
        PasswordDelivery::KeycloakEmail => "keycloak-email",
        PasswordDelivery::None => "none",
    };
    let mut outputs = HashMap::from([
        ("idp.admin_user_id".to_owned(), user_id.clone()),
        ("idp.admin_username".to_owned(), username),
        ("idp.password_delivery".to_owned(), delivery.to_owned()),
    ]);
    if let Some((_, reference)) = sealed {
        outputs.insert("idp.admin_password_ref".to_owned(), reference.to_string());
    }
    Ok(pb::StepOk { resources: vec![resource("keycloak.user", &user_id, &[("realm", &realm)])], outputs })
}

/// Refuses a realm whose user profile would silently drop the user
/// attributes `names` (Keycloak 24+ keeps undeclared attributes only under
/// the `ENABLED` or `ADMIN_EDIT` unmanaged-attribute policy).
pub(crate) async fn keeps_attributes(idp: &Idp, realm: &str, names: &[&str]) -> Result<()> {
    let kc = &idp.keycloak;
    let reply =
        kc.send(Method::GET, kc.admin_url(&[realm, "users", "profile"], &[]), None, "reading the user profile").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading the user profile", &reply));
    }
    if matches!(reply.body["unmanagedAttributePolicy"].as_str(), Some("ENABLED" | "ADMIN_EDIT")) {
        return Ok(());
    }
    let declared: Vec<&str> = reply.body["attributes"]
        .as_array()
        .map(|list| list.iter().filter_map(|a| a["name"].as_str()).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = names.iter().copied().filter(|name| !declared.contains(name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(KeycloakError::Refused(format!(
        "realm {realm}'s user profile would drop the user attributes {}: declare them (and role) or set its unmanaged attribute policy to ADMIN_EDIT",
        missing.join(", ")
    )))
}

/// Rewrites the user's saga attribute to this saga. Keycloak's user `PUT`
/// replaces the attribute set when one is sent, so the user read is written
/// back whole with the one change.
async fn adopt(idp: &Idp, tenant: &Tenant, realm: &str, mut user: Value) -> Result<String> {
    let kc = &idp.keycloak;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    if !user["attributes"].is_object() {
        user["attributes"] = json!({});
    }
    user["attributes"][SAGA_ATTRIBUTE] = json!([tenant.saga]);
    let url = kc.admin_url(&[realm, "users", &id], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&user)), "adopting the admin user").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("adopting the admin user", &reply));
    }
    tracing::info!(realm, "admin user adopted by this saga");
    Ok(id)
}

/// Maps realm-management's `realm-admin` role to the user (a mapping that
/// exists already is accepted by Keycloak as is).
async fn grant_realm_admin(idp: &Idp, realm: &str, user_id: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let url = kc.admin_url(&[realm, "clients"], &[("clientId", "realm-management")]);
    let reply = kc.send(Method::GET, url, None, "looking up realm-management").await?;
    let management = match reply.status {
        StatusCode::OK => {
            reply.body.as_array().and_then(|l| l.first()).and_then(|c| c["id"].as_str()).map(str::to_owned)
        }
        _ => return Err(KeycloakError::unexpected("looking up realm-management", &reply)),
    }
    .ok_or_else(|| KeycloakError::Refused(format!("realm {realm} has no realm-management client")))?;
    let url = kc.admin_url(&[realm, "clients", &management, "roles", "realm-admin"], &[]);
    let role = kc.send(Method::GET, url, None, "reading the realm-admin role").await?;
    if role.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading the realm-admin role", &role));
    }
    let roles = json!([role.body]);
    let url = kc.admin_url(&[realm, "users", user_id, "role-mappings", "clients", &management], &[]);
    let reply = kc.send(Method::POST, url, Some(Body::Json(&roles)), "granting realm-admin").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("granting realm-admin", &reply));
    }
    tracing::info!(realm, "admin user has realm-admin");
    Ok(())
}

/// Keycloak mails the admin a link to choose a password, once: the user is
/// marked afterwards. (A crash between the two sends a second link, which
/// is harmless; both work until they expire.)
pub(crate) async fn send_password_email(idp: &Idp, tenant: &Tenant, realm: &str, user_id: &str) -> Result<()> {
    let kc = &idp.keycloak;
    let user_url = kc.admin_url(&[realm, "users", user_id], &[]);
    let reply = kc.send(Method::GET, user_url.clone(), None, "reading the admin user").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading the admin user", &reply));
    }
    let mut user = reply.body;
    if user["attributes"][EMAIL_SENT_ATTRIBUTE].is_array() {
        tracing::info!("password mail was sent before; not sending it again");
        return Ok(());
    }
    let lifespan = idp.settings.actions_lifespan.as_secs().to_string();
    let mut query = vec![("lifespan", lifespan.as_str())];
    let client_id = tenant.client_id();
    let redirect = tenant.domains.first().map(|d| format!("https://{d}/"));
    if let (false, Some(redirect)) = (tenant.pooled(), redirect.as_deref()) {
        query.push(("client_id", &client_id));
        query.push(("redirect_uri", redirect));
    }
    let url = kc.admin_url(&[realm, "users", user_id, "execute-actions-email"], &query);
    let actions = json!(["UPDATE_PASSWORD"]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&actions)), "sending the password mail").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("sending the password mail", &reply));
    }
    tracing::info!("Keycloak sent the admin the link to choose a password");
    // PUT replaces the representation's attributes: write them all back.
    if !user["attributes"].is_object() {
        user["attributes"] = json!({});
    }
    user["attributes"][EMAIL_SENT_ATTRIBUTE] = json!(["true"]);
    let reply = kc.send(Method::PUT, user_url, Some(Body::Json(&user)), "marking the password mail sent").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("marking the password mail sent", &reply));
    }
    Ok(())
}

/// `delete_admin_user`: deletes the user, and purges its sealed password,
/// if it carries this tenant and this saga; gone (the user, or its whole
/// realm) is fine. A user another saga adopted keeps its sealed password
/// (the welcome mail of that saga still needs it); anything not this
/// saga's is left with a `fenced` note.
pub async fn delete(idp: &Idp, tenant: &Tenant, resources: &[pb::Resource]) -> Result<pb::StepOk> {
    let kc = &idp.keycloak;
    let recorded = resources.iter().find(|r| r.kind == "keycloak.user");
    let realm = recorded.and_then(|r| r.metadata.get("realm").cloned()).unwrap_or_else(|| idp.user_realm(tenant));
    let user = match recorded {
        Some(r) => {
            let reply = kc
                .send(
                    Method::GET,
                    kc.admin_url(&[&realm, "users", &r.external_id], &[]),
                    None,
                    "reading the admin user",
                )
                .await?;
            match reply.status {
                StatusCode::OK => Some(reply.body),
                StatusCode::NOT_FOUND => None,
                _ => return Err(KeycloakError::unexpected("reading the admin user", &reply)),
            }
        }
        None => find_user(idp, &realm, "username", &username(tenant)).await?,
    };
    let owner = user.as_ref().map(|user| tenant.owner(user));
    // The sealed password is this tenant's (keyed by its id): kept only
    // while a user of this tenant that another saga adopted may need it.
    if !matches!(owner, Some(Owner::OtherSaga(_)))
        && let Some(secrets) = &idp.secrets
    {
        secrets.delete(&password_ref(tenant)).await?;
    }
    let (Some(user), Some(owner)) = (user, owner) else {
        tracing::info!(realm = %realm, "admin user already gone");
        return Ok(pb::StepOk::default());
    };
    let what = format!("user {} in realm {realm}", user["username"].as_str().unwrap_or_default());
    if let Some(fenced) = tenant.fenced(&what, &owner) {
        return Ok(fenced);
    }
    let id = user["id"].as_str().unwrap_or_default();
    let reply =
        kc.send(Method::DELETE, kc.admin_url(&[&realm, "users", id], &[]), None, "deleting the admin user").await?;
    match reply.status {
        StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {
            tracing::info!(realm = %realm, "admin user deleted");
            Ok(pb::StepOk::default())
        }
        _ => Err(KeycloakError::unexpected("deleting the admin user", &reply)),
    }
}
