//! Clerk members and users kept in step with the tenants' identity (issue
//! 29 item 2; docs/clerk.md, "Members and users").
//!
//! `organizationMembership.created/updated/deleted` and
//! `user.updated/deleted` are recorded in `clerk_members` (one row per
//! organization and user) and `clerk_users` (a user's email and names),
//! each change guarded by Clerk's timestamp of its event: an older event
//! arriving late changes nothing, and a deletion is a tombstone that a
//! creation arriving after it (older, since Svix does not keep the order)
//! does not lift. Only a newer membership event — the user joining again —
//! does; a deleted user stays deleted.
//!
//! What the idp is told derives from those rows, never from the delivery
//! alone: a [`pb::MemberCommand`] carries a membership's whole state (the
//! user's newest email and names, the role, upsert or remove) and its
//! version, the newest timestamp behind it. A row that changed is marked
//! not applied; rows not applied whose organization's tenant is ACTIVE are
//! written to the outbox in the same transaction and marked applied. A row
//! of a tenant not ACTIVE yet (requested, provisioning, suspended) waits:
//! [`sweep`] looks for such rows every `LANDLORD_CLERK_MEMBER_SWEEP` and
//! sends them once their tenant is ACTIVE — a sweep rather than a reaction
//! to the activation event, since it needs nothing but the database and
//! survives any crash (the mark and the outbox row commit together).
//!
//! Roles: Clerk's `org:admin` becomes `realm-admin` (realm-management's
//! role in the tenant's realm), every other role the realm role named by
//! `LANDLORD_CLERK_MEMBER_ROLE` (default `member`). The organization's
//! first admin membership also goes through the organization flow
//! ([`super::organizations`]), which makes the tenant's admin; recorded
//! here as well, it later makes the idp mark that admin with its Clerk
//! user id (and follow role changes, email changes and removal).

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use landlord_contract::pb;
use landlord_control_plane::operations::{TENANT_RECORD_COLUMNS, TenantRecord};
use landlord_control_plane::outbox::{Outgoing, Relay};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::settings::Settings;
use super::webhook::Outcome;
use crate::problem::{Problem, Result};
use crate::state::App;

/// The role an `org:admin` gets: realm-management's `realm-admin`.
pub const ADMIN_ROLE: &str = "realm-admin";

/// Clerk's admin role.
pub const CLERK_ADMIN: &str = "org:admin";

/// How often [`sweep`] looks for memberships waiting for their tenant.
pub const MEMBER_SWEEP: Duration = Duration::from_secs(5);

/// Rows sent per statement by the sweep.
const BATCH: i64 = 500;

/// The member bridge's settings (part of [`Settings`]).
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// The realm role of members whose Clerk role is not `org:admin`
    /// (`LANDLORD_CLERK_MEMBER_ROLE`).
    pub member_role: String,
    /// How often waiting memberships are looked at
    /// (`LANDLORD_CLERK_MEMBER_SWEEP`).
    pub sweep: Duration,
}

impl Default for MemberSettings {
    fn default() -> Self {
        Self { member_role: "member".into(), sweep: MEMBER_SWEEP }
    }
}

impl MemberSettings {
    /// From `LANDLORD_CLERK_MEMBER_ROLE` and `LANDLORD_CLERK_MEMBER_SWEEP`.
    pub fn from_env(env: &landlord_runtime::Env) -> std::result::Result<Self, landlord_runtime::ConfigError> {
        let member_role = env.string("LANDLORD_CLERK_MEMBER_ROLE", "member");
        if member_role.trim().is_empty() || member_role == ADMIN_ROLE {
            return Err(landlord_runtime::ConfigError::Invalid {
                var: "LANDLORD_CLERK_MEMBER_ROLE".into(),
                value: member_role,
                problem: "expected the name of a realm role other than realm-admin".into(),
            });
        }
        Ok(Self { member_role, sweep: env.duration("LANDLORD_CLERK_MEMBER_SWEEP", MEMBER_SWEEP)? })
    }

    /// The role a Clerk role maps to.
    pub fn role_for(&self, clerk_role: &str) -> String {
        if clerk_role == CLERK_ADMIN { ADMIN_ROLE.to_owned() } else { self.member_role.clone() }
    }
}

/// Whether the member bridge handles deliveries of this type.
pub fn handles(kind: &str) -> bool {
    matches!(
        kind,
        "organizationMembership.created"
            | "organizationMembership.updated"
            | "organizationMembership.deleted"
            | "user.updated"
            | "user.deleted"
    )
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

/// A user's fields as an event describes them.
#[derive(Debug, Default)]
struct UserFields {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// `user.updated`'s primary email: the entry of `email_addresses` whose id
/// is `primary_email_address_id`.
fn primary_email(data: &Value) -> Option<String> {
    let primary = data["primary_email_address_id"].as_str()?;
    data["email_addresses"]
        .as_array()?
        .iter()
        .find(|address| address["id"].as_str() == Some(primary))
        .and_then(|address| text(address, "/email_address"))
}

/// Records a verified delivery of a type [`handles`] names, with the
/// version (Clerk's timestamp of the event, Unix milliseconds) it is
/// guarded by; returns the `MemberCommand`s now due.
pub(super) async fn record(
    tx: &mut Transaction<'static, Postgres>,
    app: &App,
    settings: &Settings,
    kind: &str,
    data: &Value,
    version: i64,
) -> Result<Vec<Outgoing>> {
    let malformed = |what: &str| Problem::bad_request("malformed-body", format!("{kind} without {what}"));
    let user_id = match kind {
        "user.updated" | "user.deleted" => text(data, "/id").ok_or_else(|| malformed("data.id"))?,
        _ => text(data, "/public_user_data/user_id").ok_or_else(|| malformed("data.public_user_data.user_id"))?,
    };
    match kind {
        "user.updated" => {
            let fields = UserFields {
                email: primary_email(data),
                first_name: text(data, "/first_name"),
                last_name: text(data, "/last_name"),
            };
            if record_user(tx, &user_id, &fields, version).await? {
                reopen_user(tx, &user_id).await?;
            }
        }
        "user.deleted" => {
            let changed = sqlx::query(
                "INSERT INTO clerk_users (user_id, version, deleted) VALUES ($1, $2, true)
                 ON CONFLICT (user_id) DO UPDATE SET deleted = true,
                     version = greatest(clerk_users.version, excluded.version), updated_at = now()
                 WHERE NOT clerk_users.deleted",
            )
            .bind(&user_id)
            .bind(version)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if changed > 0 {
                reopen_user(tx, &user_id).await?;
            }
        }
        _ => {
            let org_id = text(data, "/organization/id").ok_or_else(|| malformed("data.organization.id"))?;
            let user = &data["public_user_data"];
            let fields = UserFields {
                email: text(user, "/identifier").filter(|identifier| identifier.contains('@')),
                first_name: text(user, "/first_name"),
                last_name: text(user, "/last_name"),
            };
            if record_user(tx, &user_id, &fields, version).await? {
                reopen_user(tx, &user_id).await?;
            }
            let deleted = kind == "organizationMembership.deleted";
            // A tie goes to the deletion: it cannot be older than its creation.
            sqlx::query(
                "INSERT INTO clerk_members (org_id, user_id, clerk_role, version, deleted)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (org_id, user_id) DO UPDATE SET
                     clerk_role = coalesce(excluded.clerk_role, clerk_members.clerk_role),
                     version = excluded.version, deleted = excluded.deleted,
                     applied_at = NULL, updated_at = now()
                 WHERE clerk_members.version < excluded.version
                    OR (clerk_members.version = excluded.version AND excluded.deleted AND NOT clerk_members.deleted)",
            )
            .bind(&org_id)
            .bind(&user_id)
            .bind(text(data, "/role"))
            .bind(version)
            .bind(deleted)
            .execute(&mut **tx)
            .await?;
        }
    }
    due(tx, app, settings, Some(&user_id)).await
}

/// A user's fields, if the event is newer than what is recorded and the
/// user is not deleted; whether anything changed.
async fn record_user(
    tx: &mut Transaction<'static, Postgres>,
    user_id: &str,
    fields: &UserFields,
    version: i64,
) -> Result<bool> {
    let changed = sqlx::query(
        "INSERT INTO clerk_users (user_id, email, first_name, last_name, version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, clerk_users.email),
             first_name = excluded.first_name, last_name = excluded.last_name,
             version = excluded.version, updated_at = now()
         WHERE clerk_users.version < excluded.version AND NOT clerk_users.deleted
           AND (clerk_users.email IS DISTINCT FROM coalesce(excluded.email, clerk_users.email)
                OR clerk_users.first_name IS DISTINCT FROM excluded.first_name
                OR clerk_users.last_name IS DISTINCT FROM excluded.last_name)",
    )
    .bind(user_id)
    .bind(&fields.email)
    .bind(&fields.first_name)
    .bind(&fields.last_name)
    .bind(version)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Every membership of a user whose own fields changed goes to the idp
/// again.
async fn reopen_user(tx: &mut Transaction<'static, Postgres>, user_id: &str) -> Result<()> {
    sqlx::query("UPDATE clerk_members SET applied_at = NULL, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct DueRow {
    org_id: String,
    user_id: String,
    clerk_role: Option<String>,
    removed: bool,
    version: i64,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    tenant_id: Uuid,
}

/// The memberships not yet applied whose tenant is ACTIVE (of one user, or
/// any: the sweep, which skips rows a delivery holds), as commands for the
/// outbox; marked applied.
async fn due(
    tx: &mut Transaction<'static, Postgres>,
    app: &App,
    settings: &Settings,
    user_id: Option<&str>,
) -> Result<Vec<Outgoing>> {
    let rows: Vec<DueRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.org_id, m.user_id, m.clerk_role, m.deleted OR coalesce(u.deleted, false) AS removed,
                greatest(m.version, coalesce(u.version, 0)) AS version,
                u.email, u.first_name, u.last_name, t.id AS tenant_id
         FROM clerk_members m
         JOIN clerk_organizations o ON o.org_id = m.org_id
         JOIN tenants t ON t.key = o.tenant_key AND t.status = 'ACTIVE'
              AND (t.idempotency_id = 'clerk:' || o.org_id OR t.labels ->> 'clerk.organization_id' = o.org_id)
         LEFT JOIN clerk_users u ON u.user_id = m.user_id
         WHERE m.applied_at IS NULL AND ($1::text IS NULL OR m.user_id = $1)
         ORDER BY m.org_id, m.user_id
         LIMIT $2
         FOR UPDATE OF m {}",
        if user_id.is_some() { "" } else { "SKIP LOCKED" }
    )))
    .bind(user_id)
    .bind(BATCH)
    .fetch_all(&mut **tx)
    .await?;
    let mut tenants: HashMap<Uuid, pb::TenantSpec> = HashMap::new();
    let mut commands = Vec::new();
    for row in rows {
        let tenant = match tenants.get(&row.tenant_id) {
            Some(tenant) => tenant.clone(),
            None => {
                let record: TenantRecord = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_RECORD_COLUMNS} FROM tenants WHERE id = $1"
                )))
                .bind(row.tenant_id)
                .fetch_one(&mut **tx)
                .await?;
                tenants.entry(row.tenant_id).or_insert(record.spec()).clone()
            }
        };
        let clerk_role = row.clerk_role.clone().unwrap_or_default();
        let action = if row.removed { pb::MemberAction::Remove } else { pb::MemberAction::Upsert };
        let command = pb::MemberCommand {
            clerk_user_id: row.user_id.clone(),
            clerk_organization_id: row.org_id.clone(),
            email: row.email.clone().unwrap_or_default(),
            first_name: row.first_name.clone().unwrap_or_default(),
            last_name: row.last_name.clone().unwrap_or_default(),
            role: settings.members.role_for(&clerk_role),
            clerk_role,
            action: action as i32,
            version: row.version,
            tenant: Some(tenant.clone()),
        };
        sqlx::query(
            "UPDATE clerk_members SET applied_at = now(), applied_version = $3 WHERE org_id = $1 AND user_id = $2",
        )
        .bind(&row.org_id)
        .bind(&row.user_id)
        .bind(row.version)
        .execute(&mut **tx)
        .await?;
        let verb = if row.removed { "remove" } else { "upsert" };
        let msg_id = format!("clerk.member.{}.{}.{}.{verb}", row.org_id, row.user_id, row.version);
        tracing::info!(org = %row.org_id, user = %row.user_id, tenant = %tenant.key, verb, version = row.version,
            "clerk member sent to the idp");
        commands.push(Outgoing::new(app.namespace.member_command_subject(), msg_id, &command).about(&tenant.key, None));
    }
    Ok(commands)
}

/// A membership or user delivery, verified: recorded once by `svix-id`,
/// its `ClerkEvent` and the commands now due written to the outbox, all in
/// one transaction.
pub(super) async fn deliver(
    app: &App,
    settings: &Settings,
    svix_id: &str,
    kind: &str,
    data: &Value,
    version: i64,
    event: Outgoing,
) -> Result<Response> {
    let mut tx = app.pool.begin().await?;
    let fresh =
        sqlx::query("INSERT INTO webhook_deliveries (svix_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(svix_id)
            .bind(kind)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if !fresh {
        tracing::debug!(svix_id, "webhook delivery seen before");
        return Ok(Json(Outcome { delivery: "duplicate".into(), organization: None, operation: None }).into_response());
    }
    let mut messages = vec![event];
    messages.extend(record(&mut tx, app, settings, kind, data, version).await?);
    let sent = messages.len() - 1;
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &messages).await?;
    tx.commit().await?;
    let dispatcher = app.dispatcher.clone();
    tokio::spawn(async move { dispatcher.dispatch(pending).await });
    tracing::info!(svix_id, kind, commands = sent, "clerk event accepted");
    Ok(Json(Outcome { delivery: "accepted".into(), organization: None, operation: None }).into_response())
}

/// One pass of the sweep: the memberships waiting for their tenant that
/// can go now; returns how many were sent.
pub async fn sweep_once(app: &App) -> Result<usize> {
    let Some(settings) = app.clerk.clone() else { return Ok(0) };
    let mut sent = 0;
    loop {
        let mut tx = app.pool.begin().await?;
        let commands = due(&mut tx, app, &settings, None).await?;
        if commands.is_empty() {
            return Ok(sent);
        }
        sent += commands.len();
        let full = commands.len() as i64 >= BATCH;
        let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &commands).await?;
        tx.commit().await?;
        app.dispatcher.dispatch(pending).await;
        if !full {
            return Ok(sent);
        }
    }
}

/// Sends waiting memberships whose tenant became ACTIVE, every `every`,
/// until `shutdown`.
pub async fn sweep(app: App, every: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_once(&app).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "clerk members waiting for their tenant sent to the idp"),
            Err(problem) => tracing::warn!(detail = %problem.detail, "cannot sweep the clerk members waiting"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_admins_to_realm_admin_and_the_rest_to_the_member_role() {
        let settings = MemberSettings { member_role: "staff".into(), ..MemberSettings::default() };
        assert_eq!(settings.role_for("org:admin"), "realm-admin");
        assert_eq!(settings.role_for("org:member"), "staff");
        assert_eq!(settings.role_for("org:billing_manager"), "staff");
        let env = landlord_runtime::Env::from_pairs([("LANDLORD_CLERK_MEMBER_ROLE", "realm-admin")]);
        assert!(MemberSettings::from_env(&env).is_err());
        let defaults =
            MemberSettings::from_env(&landlord_runtime::Env::from_pairs(Vec::<(&str, &str)>::new())).unwrap();
        assert_eq!((defaults.member_role.as_str(), defaults.sweep), ("member", MEMBER_SWEEP));
    }

    #[test]
    fn the_primary_email_is_the_one_primary_email_address_id_names() {
        let data = serde_json::json!({"id": "user_1", "primary_email_address_id": "idn_2", "email_addresses": [
            {"id": "idn_1", "email_address": "old@example.test"},
            {"id": "idn_2", "email_address": "new@example.test"}]});
        assert_eq!(primary_email(&data).as_deref(), Some("new@example.test"));
        assert_eq!(primary_email(&serde_json::json!({"id": "user_1"})), None);
    }
}
