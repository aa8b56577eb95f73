//! An organization's row in `clerk_organizations`: its admin, from a
//! membership or a Backend API lookup (the first one wins), and the one
//! `TenantRequested` written once the organization and its admin are both
//! here — or the rule that keeps it from becoming a tenant.

use landlord_contract::{Event as _, TenantKey, pb};
use landlord_control_plane::outbox::{Outgoing, Relay};
use landlord_control_plane::request::validate;
use time::OffsetDateTime;

use super::backend::Admin;
use super::keys::{MAX_KEY_SUFFIX, key_candidates, key_from_slug};
use super::settings::Settings;
use crate::problem::Result;
use crate::state::App;

/// An admin as a membership or a lookup describes them.
pub(super) struct AdminFields {
    pub(super) user_id: Option<String>,
    pub(super) email: Option<String>,
    pub(super) first_name: Option<String>,
    pub(super) last_name: Option<String>,
}

/// Records an organization's admin; the first admin to arrive, from a
/// membership or a Backend API lookup, is the tenant's admin.
pub(super) async fn record_admin(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    org_id: &str,
    admin: AdminFields,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO clerk_organizations (org_id, admin_user_id, admin_email, admin_first_name,
                                          admin_last_name, admin_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (org_id) DO UPDATE SET
             admin_user_id = coalesce(clerk_organizations.admin_user_id, $2),
             admin_email = coalesce(clerk_organizations.admin_email, $3),
             admin_first_name = coalesce(clerk_organizations.admin_first_name, $4),
             admin_last_name = coalesce(clerk_organizations.admin_last_name, $5),
             admin_at = coalesce(clerk_organizations.admin_at, now())",
    )
    .bind(org_id)
    .bind(admin.user_id)
    .bind(admin.email)
    .bind(admin.first_name)
    .bind(admin.last_name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The admin a Backend API lookup found for `org_id`: recorded as a
/// membership's would be, and the tenant requested if the organization
/// was waiting only for that. Returns what became of the organization.
pub async fn admin_found(app: &App, org_id: &str, admin: &Admin) -> Result<&'static str> {
    let Some(settings) = app.clerk.clone() else { return Ok("ignored: the Clerk bridge is off") };
    let mut tx = app.pool.begin().await?;
    let waiting: Option<(Option<String>,)> =
        sqlx::query_as("SELECT admin_email FROM clerk_organizations WHERE org_id = $1 FOR UPDATE")
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?;
    match waiting {
        None => return Ok("ignored: unknown organization"),
        Some((Some(_),)) => return Ok("ignored: the organization already has its admin"),
        Some((None,)) => {}
    }
    let fields = AdminFields {
        user_id: Some(admin.user_id.clone()),
        email: Some(admin.email.clone()),
        first_name: admin.first_name.clone(),
        last_name: admin.last_name.clone(),
    };
    record_admin(&mut tx, org_id, fields).await?;
    let request = ready_request(&mut tx, app, &settings, org_id).await?;
    let requested = request.is_some();
    let pending =
        landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &request.into_iter().collect::<Vec<_>>())
            .await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    Ok(if requested { "tenant requested" } else { "recorded" })
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    slug: Option<String>,
    name: Option<String>,
    plan: Option<String>,
    admin_email: Option<String>,
    admin_first_name: Option<String>,
    admin_last_name: Option<String>,
    organization_at: Option<OffsetDateTime>,
    requested_at: Option<OffsetDateTime>,
    rejected_rule: Option<String>,
}

/// With the organization's row locked: the `TenantRequested` if both
/// halves are here and none was written before; a rejection is recorded.
pub(super) async fn ready_request(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    app: &App,
    settings: &Settings,
    org_id: &str,
) -> Result<Option<Outgoing>> {
    let row: OrgRow = sqlx::query_as(
        "SELECT slug, name, plan, admin_email, admin_first_name, admin_last_name, organization_at, requested_at,
                rejected_rule
         FROM clerk_organizations WHERE org_id = $1 FOR UPDATE",
    )
    .bind(org_id)
    .fetch_one(&mut **tx)
    .await?;
    if row.organization_at.is_none() || row.requested_at.is_some() || row.rejected_rule.is_some() {
        return Ok(None);
    }
    let Some(email) = row.admin_email else { return Ok(None) };
    let slug = row.slug.clone().unwrap_or_default();
    let wanted = match key_from_slug(&slug) {
        Ok(key) => key,
        Err(error) => {
            let reason = format!("slug {slug:?} cannot be a tenant key: {error}");
            return reject(tx, org_id, error.rule(), &reason).await;
        }
    };
    let Some(key) = free_key(tx, org_id, &wanted).await? else {
        let reason =
            format!("tenant key {:?} and its suffixed forms up to -{MAX_KEY_SUFFIX} are all taken", wanted.as_str());
        return reject(tx, org_id, "tenant_key.duplicate", &reason).await;
    };
    if key != wanted {
        tracing::info!(org_id, wanted = %wanted, key = %key, "clerk organization's key is taken; a suffixed one is used");
    }
    let request = pb::TenantRequested {
        idempotency_id: format!("clerk:{org_id}"),
        key: key.to_string(),
        display_name: row.name.clone().unwrap_or_else(|| slug.clone()),
        plan: row.plan.unwrap_or_else(|| settings.plan.clone()),
        tier: pb::Tier::Unspecified as i32,
        admin: Some(pb::AdminContact {
            email,
            first_name: row.admin_first_name.unwrap_or_default(),
            last_name: row.admin_last_name.unwrap_or_default(),
        }),
        domains: Vec::new(),
        source: "clerk".into(),
        labels: [("clerk.organization_id".to_owned(), org_id.to_owned())].into_iter().collect(),
        retry_of: None,
    };
    if let Err(rejection) = validate(&request, &app.plans) {
        return reject(tx, org_id, &rejection.rule, &rejection.reason).await;
    }
    sqlx::query("UPDATE clerk_organizations SET tenant_key = $2, requested_at = now() WHERE org_id = $1")
        .bind(org_id)
        .bind(key.as_str())
        .execute(&mut **tx)
        .await?;
    let subject = app.namespace.event_subject(&key, pb::TenantRequested::KIND);
    Ok(Some(Outgoing::new(subject, format!("gateway.clerk.{org_id}.requested"), &request).about(key.as_str(), None)))
}

/// The first of [`key_candidates`] that no tenant, API request or other
/// organization holds. Picking is serialised between deliveries by a
/// transaction-level advisory lock, so two organizations with one slug get
/// two keys; a tenant asked for under the same key at the same moment by
/// another source (the API, a service on the broker) can still win the
/// race at the orchestrator's intake, and the organization is then shown
/// rejected (see [`super::views`]).
async fn free_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    org_id: &str,
    wanted: &TenantKey,
) -> Result<Option<TenantKey>> {
    /// The advisory lock's key: any constant of our own.
    const KEY_PICKING: i64 = 0x6c61_6e64_6c6f_7264;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(KEY_PICKING).execute(&mut **tx).await?;
    let candidates = key_candidates(wanted);
    let names: Vec<&str> = candidates.iter().map(TenantKey::as_str).collect();
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT k FROM unnest($1::text[]) k
         WHERE EXISTS (SELECT 1 FROM tenants WHERE key = k)
            OR EXISTS (SELECT 1 FROM api_requests WHERE tenant_key = k)
            OR EXISTS (SELECT 1 FROM clerk_organizations WHERE tenant_key = k AND org_id <> $2)",
    )
    .bind(&names)
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(candidates.into_iter().find(|c| !taken.iter().any(|t| t == c.as_str())))
}

/// Records why an organization cannot become a tenant.
async fn reject(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    org_id: &str,
    rule: &str,
    reason: &str,
) -> Result<Option<Outgoing>> {
    sqlx::query("UPDATE clerk_organizations SET rejected_rule = $2, rejected_reason = $3 WHERE org_id = $1")
        .bind(org_id)
        .bind(rule)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    tracing::warn!(org_id, rule, reason, "clerk organization cannot become a tenant");
    Ok(None)
}
