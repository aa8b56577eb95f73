//! Clerk members (issue 29 item 2; docs/clerk.md, "Members and users"):
//! `MemberCommand`s from the gateway's Clerk bridge, on
//! `landlord.v1.cmd.idp_members.apply` and a consumer of their own
//! ([`MemberWorker`]; not saga steps, so nothing answers them: a command
//! that keeps failing is dead-lettered).
//!
//! A command is a membership's whole state, applied idempotently:
//!
//! | action | bridge and silo (the tenant's realm) | pooled (the shared realm) |
//! |---|---|---|
//! | upsert | the user created, or found and updated (email, names), enabled again if a remove disabled it; `realm-admin` (realm-management's) for an admin, else the realm role the command names (created if missing) and `realm-admin` taken away | the user created, or found and updated; its `role` attribute (`LANDLORD_IDP_ADMIN_ROLE` for an admin, else the command's role); a member of the tenant's organization |
//! | remove | the user disabled (marked `landlordClerkRemoved`) and logged out | the user leaves the organization |
//!
//! The user is found by its `clerkUserId` attribute, else by its username
//! (the email in lower case, or the Clerk user id for a user without one)
//! or its email — so the tenant's admin, made by `create_admin_user`, is
//! found and marked with its Clerk id the first time. A new user carries
//! the tenant's marker (`tenantId`) and no saga marker: no compensation
//! deletes it, a pooled tenant's purge does. With
//! `LANDLORD_IDP_PASSWORD_DELIVERY=keycloak-email` a new member gets
//! Keycloak's mail to choose a password (once); otherwise a member signs
//! in through "Forgot password?" or an identity provider of the realm.
//!
//! Ordering: Svix does not keep it, and two commands may be in flight at
//! once. The user keeps the version of the last command applied
//! (`landlordClerkVersion`, Clerk's timestamp of the newest event behind
//! it); a command with a lower version changes nothing.
//!
//! Fencing: a user whose marker names another tenant, or none, is never
//! changed. In the tenant's own realm such a user is a permanent
//! `conflicting_owner` for an upsert and left alone by a remove; in the
//! shared realm it is only made a member of (or removed from) this
//! tenant's organization, which is this tenant's, its attributes
//! untouched. A user already marked with another Clerk user id is a
//! permanent `conflict`.

use landlord_contract::pb;
use landlord_runtime::{Delivery, Handler, HandlerError};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::keycloak::{Body, KeycloakError, Result};
use crate::{Idp, PasswordDelivery, TENANT_ATTRIBUTE, Tenant, admin_user, attribute, organization};

/// The Clerk user id a user was made for.
pub const CLERK_USER_ATTRIBUTE: &str = "clerkUserId";
/// The version of the last command applied to the user.
pub const VERSION_ATTRIBUTE: &str = "landlordClerkVersion";
/// Marks a user a remove disabled (its version): an upsert enables it again.
pub const REMOVED_ATTRIBUTE: &str = "landlordClerkRemoved";
/// Clerk's role, as it arrived.
pub const CLERK_ROLE_ATTRIBUTE: &str = "clerkRole";
/// The role that means realm-management's `realm-admin`.
pub const ADMIN_ROLE: &str = "realm-admin";

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    /// Pooled: the user is another tenant's; only the organization's
    /// membership changed.
    MembershipOnly,
    Removed,
    /// Remove: no such user (never created, or deleted).
    Absent,
    /// Remove: the user is not this tenant's; left alone.
    NotOurs,
    /// The user holds a newer version.
    Stale,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::MembershipOnly => "membership_only",
            Self::Removed => "removed",
            Self::Absent => "absent",
            Self::NotOurs => "not_ours",
            Self::Stale => "stale",
        }
    }
}

/// The tenant a member command is about. Members are made by no saga.
fn tenant_of(command: &pb::MemberCommand) -> Result<Tenant> {
    let spec = command.tenant.clone().unwrap_or_default();
    if spec.tenant_id.is_empty() || spec.key.is_empty() {
        return Err(KeycloakError::Refused("the member command has no tenant id or key".into()));
    }
    if command.clerk_user_id.is_empty() {
        return Err(KeycloakError::Refused("the member command has no Clerk user id".into()));
    }
    Ok(Tenant {
        id: spec.tenant_id.clone(),
        saga: String::new(),
        key: spec.key.clone(),
        display_name: spec.display_name.clone(),
        tier: pb::Tier::try_from(spec.tier).unwrap_or(pb::Tier::Unspecified),
        admin: spec.admin.clone().unwrap_or_default(),
        domains: spec.domains.clone(),
    })
}

/// The username a new member gets: the email in lower case, else the
/// Clerk user id.
pub fn username(command: &pb::MemberCommand) -> String {
    let email = command.email.trim().to_lowercase();
    if email.is_empty() { command.clerk_user_id.to_lowercase() } else { email }
}

fn version_of(user: &Value) -> i64 {
    attribute(user, VERSION_ATTRIBUTE).first().and_then(|v| v.parse().ok()).unwrap_or(i64::MIN)
}

/// The user the command is about, if it exists in `realm`.
async fn find(idp: &Idp, realm: &str, command: &pb::MemberCommand) -> Result<Option<Value>> {
    let kc = &idp.keycloak;
    let q = format!("{CLERK_USER_ATTRIBUTE}:{}", command.clerk_user_id);
    let url = kc.admin_url(&[realm, "users"], &[("q", &q), ("exact", "true")]);
    let reply = kc.send(Method::GET, url, None, "looking up a member").await?;
    match reply.status {
        StatusCode::OK => {
            let found = reply.body.as_array().and_then(|list| {
                list.iter()
                    .find(|u| attribute(u, CLERK_USER_ATTRIBUTE).contains(&command.clerk_user_id.as_str()))
                    .cloned()
            });
            if found.is_some() {
                return Ok(found);
            }
        }
        StatusCode::NOT_FOUND => return Ok(None),
        _ => return Err(KeycloakError::unexpected("looking up a member", &reply)),
    }
    let username = username(command);
    if let Some(user) = admin_user::find_user(idp, realm, "username", &username).await? {
        return Ok(Some(user));
    }
    let email = command.email.trim().to_lowercase();
    if email.is_empty() {
        return Ok(None);
    }
    admin_user::find_user(idp, realm, "email", &email).await
}

/// Applies one command.
pub async fn apply(idp: &Idp, command: &pb::MemberCommand) -> Result<Applied> {
    let tenant = tenant_of(command)?;
    let realm = idp.user_realm(&tenant);
    let organization_id = if tenant.pooled() {
        let what = format!("organization {} in realm {realm}", tenant.key);
        let org = organization::find(idp, &tenant)
            .await?
            .ok_or_else(|| KeycloakError::Missing(format!("{what} does not exist")))?;
        tenant.check_owner(&what, &org)?;
        Some(org["id"].as_str().unwrap_or_default().to_owned())
    } else {
        None
    };
    match pb::MemberAction::try_from(command.action).unwrap_or(pb::MemberAction::Unspecified) {
        pb::MemberAction::Upsert => upsert(idp, &tenant, &realm, organization_id.as_deref(), command).await,
        pb::MemberAction::Remove => remove(idp, &tenant, &realm, organization_id.as_deref(), command).await,
        pb::MemberAction::Unspecified => Err(KeycloakError::Refused("the member command names no action".into())),
    }
}

/// Whether the user is one this command may change: this tenant's, and
/// made for this Clerk user (or not marked with any yet).
fn check_clerk_user(user: &Value, command: &pb::MemberCommand, realm: &str) -> Result<()> {
    let marked = attribute(user, CLERK_USER_ATTRIBUTE);
    if marked.is_empty() || marked.contains(&command.clerk_user_id.as_str()) {
        return Ok(());
    }
    Err(KeycloakError::Conflict(format!(
        "user {} in realm {realm} was made for Clerk user {}, not {}; nothing was changed",
        user["username"].as_str().unwrap_or_default(),
        marked[0],
        command.clerk_user_id
    )))
}

async fn upsert(
    idp: &Idp,
    tenant: &Tenant,
    realm: &str,
    organization_id: Option<&str>,
    command: &pb::MemberCommand,
) -> Result<Applied> {
    if tenant.pooled() {
        // A profile that dropped the markers would leave users nobody finds.
        admin_user::keeps_attributes(idp, realm, &[TENANT_ATTRIBUTE, CLERK_USER_ATTRIBUTE, VERSION_ATTRIBUTE]).await?;
    }
    let (user, applied) = match find(idp, realm, command).await? {
        Some(user) => (user, Applied::Updated),
        None => match create(idp, tenant, realm, command).await? {
            Some(id) => (read(idp, realm, &id).await?, Applied::Created),
            // Taken meanwhile (a redelivery, or a user found by neither name before).
            None => (
                find(idp, realm, command).await?.ok_or_else(|| {
                    tenant.conflict(&format!("user {} in realm {realm}", username(command)), "taken, and not found")
                })?,
                Applied::Updated,
            ),
        },
    };
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    if !tenant.owns(&user) {
        let what = format!("user {} in realm {realm}", user["username"].as_str().unwrap_or_default());
        let Some(organization_id) = organization_id else {
            return Err(tenant.check_owner(&what, &user).err().unwrap_or(KeycloakError::ConflictingOwner(what)));
        };
        // Another tenant's user of the shared realm: the membership is
        // this tenant's to give, the user is not ours to change.
        organization::add_member(idp, tenant, organization_id, &user_id).await?;
        return Ok(Applied::MembershipOnly);
    }
    check_clerk_user(&user, command, realm)?;
    if version_of(&user) > command.version {
        tracing::info!(
            realm,
            version = command.version,
            held = version_of(&user),
            "member command older than the user's; ignored"
        );
        return Ok(Applied::Stale);
    }
    if applied == Applied::Updated {
        update(idp, tenant, realm, user, command).await?;
    }
    match organization_id {
        Some(organization_id) => organization::add_member(idp, tenant, organization_id, &user_id).await?,
        None => set_roles(idp, realm, &user_id, &command.role).await?,
    }
    if applied == Applied::Created && idp.settings.password_delivery == PasswordDelivery::KeycloakEmail {
        admin_user::send_password_email(idp, tenant, realm, &user_id).await?;
    }
    let (key, clerk_user) = (&tenant.key, &command.clerk_user_id);
    tracing::info!(realm, tenant = %key, clerk_user = %clerk_user, applied = applied.as_str(), "member upserted");
    Ok(applied)
}

/// The attributes a member command sets on a user this tenant owns.
fn member_attributes(idp: &Idp, tenant: &Tenant, command: &pb::MemberCommand, attributes: &mut Value) {
    if !attributes.is_object() {
        *attributes = json!({});
    }
    attributes[TENANT_ATTRIBUTE] = json!([tenant.id]);
    attributes[CLERK_USER_ATTRIBUTE] = json!([command.clerk_user_id]);
    attributes[VERSION_ATTRIBUTE] = json!([command.version.to_string()]);
    attributes[CLERK_ROLE_ATTRIBUTE] = json!([command.clerk_role]);
    if tenant.pooled() {
        let role = if command.role == ADMIN_ROLE { idp.settings.admin_role.clone() } else { command.role.clone() };
        attributes["role"] = json!([role]);
    }
}

/// Creates the member; `None` when Keycloak answers 409 (taken).
async fn create(idp: &Idp, tenant: &Tenant, realm: &str, command: &pb::MemberCommand) -> Result<Option<String>> {
    let kc = &idp.keycloak;
    let mut attributes = json!({});
    member_attributes(idp, tenant, command, &mut attributes);
    let mut body = json!({
        "username": username(command),
        "firstName": command.first_name,
        "lastName": command.last_name,
        "enabled": true,
        "emailVerified": idp.settings.email_verified,
        "attributes": attributes,
        "requiredActions": if idp.settings.password_delivery == PasswordDelivery::KeycloakEmail {
            json!(["UPDATE_PASSWORD"])
        } else {
            json!([])
        },
    });
    if !command.email.trim().is_empty() {
        body["email"] = json!(command.email.trim().to_lowercase());
    }
    let url = kc.admin_url(&[realm, "users"], &[]);
    let reply = kc.send(Method::POST, url, Some(Body::Json(&body)), "creating a member").await?;
    match reply.status {
        StatusCode::CREATED => Ok(Some(reply.created_id("creating a member")?)),
        StatusCode::CONFLICT => Ok(None),
        StatusCode::NOT_FOUND => {
            Err(KeycloakError::Missing(format!("realm {realm} does not exist: {}", reply.message())))
        }
        _ => Err(KeycloakError::unexpected("creating a member", &reply)),
    }
}

async fn read(idp: &Idp, realm: &str, id: &str) -> Result<Value> {
    let kc = &idp.keycloak;
    let reply = kc.send(Method::GET, kc.admin_url(&[realm, "users", id], &[]), None, "reading a member").await?;
    match reply.status {
        StatusCode::OK => Ok(reply.body),
        _ => Err(KeycloakError::unexpected("reading a member", &reply)),
    }
}

/// Writes the member's fields, attributes, and enables it again if a
/// remove disabled it. Keycloak's user `PUT` replaces the attributes when
/// they are sent: the user read is written back whole.
async fn update(idp: &Idp, tenant: &Tenant, realm: &str, mut user: Value, command: &pb::MemberCommand) -> Result<()> {
    let kc = &idp.keycloak;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    if !command.email.trim().is_empty() {
        user["email"] = json!(command.email.trim().to_lowercase());
    }
    user["firstName"] = json!(command.first_name);
    user["lastName"] = json!(command.last_name);
    member_attributes(idp, tenant, command, &mut user["attributes"]);
    if !attribute(&user, REMOVED_ATTRIBUTE).is_empty() {
        if let Some(attributes) = user["attributes"].as_object_mut() {
            attributes.remove(REMOVED_ATTRIBUTE);
        }
        // Pooled removes never disable (the user may belong elsewhere).
        if !tenant.pooled() {
            user["enabled"] = json!(true);
        }
    }
    let url = kc.admin_url(&[realm, "users", &id], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&user)), "updating a member").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("updating a member", &reply));
    }
    Ok(())
}

/// realm-management's client uuid and its `realm-admin` role.
async fn realm_admin_role(idp: &Idp, realm: &str) -> Result<(String, Value)> {
    let kc = &idp.keycloak;
    let url = kc.admin_url(&[realm, "clients"], &[("clientId", "realm-management")]);
    let reply = kc.send(Method::GET, url, None, "looking up realm-management").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("looking up realm-management", &reply));
    }
    let management = reply
        .body
        .as_array()
        .and_then(|l| l.first())
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| KeycloakError::Refused(format!("realm {realm} has no realm-management client")))?;
    let url = kc.admin_url(&[realm, "clients", &management, "roles", ADMIN_ROLE], &[]);
    let role = kc.send(Method::GET, url, None, "reading the realm-admin role").await?;
    if role.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading the realm-admin role", &role));
    }
    Ok((management, role.body))
}

/// The realm role `name`, created if the realm lacks it.
async fn realm_role(idp: &Idp, realm: &str, name: &str) -> Result<Value> {
    let kc = &idp.keycloak;
    let url = kc.admin_url(&[realm, "roles", name], &[]);
    let reply = kc.send(Method::GET, url.clone(), None, "reading a realm role").await?;
    match reply.status {
        StatusCode::OK => return Ok(reply.body),
        StatusCode::NOT_FOUND => {}
        _ => return Err(KeycloakError::unexpected("reading a realm role", &reply)),
    }
    let body = json!({"name": name, "description": "Clerk organization members (Landlord)"});
    let created = kc
        .send(Method::POST, kc.admin_url(&[realm, "roles"], &[]), Some(Body::Json(&body)), "creating a realm role")
        .await?;
    if !matches!(created.status, StatusCode::CREATED | StatusCode::CONFLICT) {
        return Err(KeycloakError::unexpected("creating a realm role", &created));
    }
    tracing::info!(realm, role = name, "realm role created for members");
    let reply = kc.send(Method::GET, url, None, "reading a realm role").await?;
    match reply.status {
        StatusCode::OK => Ok(reply.body),
        _ => Err(KeycloakError::unexpected("reading a realm role", &reply)),
    }
}

/// Maps (`grant`) or unmaps one role at `path` (`role-mappings/realm` or
/// `role-mappings/clients/<uuid>`), if it is not so already.
async fn map_role(idp: &Idp, realm: &str, user_id: &str, path: &[&str], role: &Value, grant: bool) -> Result<()> {
    let kc = &idp.keycloak;
    let mut segments = vec![realm, "users", user_id];
    segments.extend_from_slice(path);
    let url = kc.admin_url(&segments, &[]);
    let reply = kc.send(Method::GET, url.clone(), None, "reading a member's roles").await?;
    if reply.status != StatusCode::OK {
        return Err(KeycloakError::unexpected("reading a member's roles", &reply));
    }
    let held = reply.body.as_array().is_some_and(|roles| roles.iter().any(|r| r["name"] == role["name"]));
    if held == grant {
        return Ok(());
    }
    let (method, what) =
        if grant { (Method::POST, "granting a member's role") } else { (Method::DELETE, "taking a member's role") };
    let roles = json!([role]);
    let reply = kc.send(method, url, Some(Body::Json(&roles)), what).await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected(what, &reply));
    }
    Ok(())
}

/// An admin holds `realm-admin`; a member holds its role and not
/// `realm-admin` (a demoted admin loses it).
async fn set_roles(idp: &Idp, realm: &str, user_id: &str, role: &str) -> Result<()> {
    let (management, admin) = realm_admin_role(idp, realm).await?;
    let client_path = ["role-mappings", "clients", management.as_str()];
    if role == ADMIN_ROLE {
        // A member role it held stays: the command does not say which
        // one the bridge gives members, and realm-admin covers it.
        map_role(idp, realm, user_id, &client_path, &admin, true).await?;
    } else {
        let member = realm_role(idp, realm, role).await?;
        map_role(idp, realm, user_id, &["role-mappings", "realm"], &member, true).await?;
        map_role(idp, realm, user_id, &client_path, &admin, false).await?;
    }
    Ok(())
}

async fn remove(
    idp: &Idp,
    tenant: &Tenant,
    realm: &str,
    organization_id: Option<&str>,
    command: &pb::MemberCommand,
) -> Result<Applied> {
    let kc = &idp.keycloak;
    let Some(mut user) = find(idp, realm, command).await? else {
        tracing::info!(realm, clerk_user = %command.clerk_user_id, "no such member; nothing to remove");
        return Ok(Applied::Absent);
    };
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let ours = tenant.owns(&user) && check_clerk_user(&user, command, realm).is_ok();
    if ours && version_of(&user) > command.version {
        return Ok(Applied::Stale);
    }
    if let Some(organization_id) = organization_id {
        let url = kc.admin_url(&[realm, "organizations", organization_id, "members", &user_id], &[]);
        let reply = kc.send(Method::DELETE, url, None, "removing a member from the organization").await?;
        if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
            return Err(KeycloakError::unexpected("removing a member from the organization", &reply));
        }
    }
    if !ours {
        if organization_id.is_some() {
            return Ok(Applied::MembershipOnly);
        }
        let clerk_user = &command.clerk_user_id;
        tracing::warn!(realm, clerk_user = %clerk_user, "the member's user is not this tenant's; left alone");
        return Ok(Applied::NotOurs);
    }
    if !user["attributes"].is_object() {
        user["attributes"] = json!({});
    }
    user["attributes"][VERSION_ATTRIBUTE] = json!([command.version.to_string()]);
    user["attributes"][REMOVED_ATTRIBUTE] = json!([command.version.to_string()]);
    if organization_id.is_none() {
        user["enabled"] = json!(false);
    }
    let url = kc.admin_url(&[realm, "users", &user_id], &[]);
    let reply = kc.send(Method::PUT, url, Some(Body::Json(&user)), "disabling a member").await?;
    if !reply.status.is_success() {
        return Err(KeycloakError::unexpected("disabling a member", &reply));
    }
    if organization_id.is_none() {
        let url = kc.admin_url(&[realm, "users", &user_id, "logout"], &[]);
        let reply = kc.send(Method::POST, url, None, "logging a member out").await?;
        if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
            return Err(KeycloakError::unexpected("logging a member out", &reply));
        }
    }
    tracing::info!(realm, tenant = %tenant.key, clerk_user = %command.clerk_user_id, "member removed");
    Ok(Applied::Removed)
}

/// The message loop's handler for member commands.
#[derive(Debug, Clone)]
pub struct MemberWorker {
    idp: Idp,
}

impl MemberWorker {
    pub fn new(idp: Idp) -> Self {
        Self { idp }
    }
}

impl Handler for MemberWorker {
    type Message = pb::MemberCommand;

    async fn handle(&self, delivery: Delivery<pb::MemberCommand>) -> Result<(), HandlerError> {
        let command = delivery.message;
        let span = tracing::info_span!(
            "member",
            tenant = command.tenant.as_ref().map(|t| t.key.as_str()).unwrap_or(""),
            clerk_user = %command.clerk_user_id,
            version = command.version,
        );
        match apply(&self.idp, &command).instrument(span).await {
            Ok(_) => Ok(()),
            Err(error) if error.retryable() => Err(HandlerError::retryable(error.to_string())),
            Err(error) => Err(HandlerError::permanent(error.to_string())),
        }
    }
}
