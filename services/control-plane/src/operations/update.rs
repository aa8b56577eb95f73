//! An update's patch applied to the tenant as it is: the tenant as it will
//! be, checked by the rules a new tenant's request is checked by
//! ([`crate::request::validate`]), and the fields that change.

use landlord_contract::pb;

use super::{OperationRequest, Refused, TenantRecord};
use crate::plans::{Plans, parse_tier, tier_name};
use crate::request::{Rejection, validate};

/// The tenant as an update will leave it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Update {
    pub tenant: pb::TenantSpec,
    /// The fields that change: display_name, domains, admin, labels, plan.
    pub changed: Vec<String>,
}

/// Applies `request`'s patch to `tenant`; within `tx` because a new domain
/// must not belong to another live tenant.
pub(super) async fn apply(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    plans: &Plans,
    tenant: &TenantRecord,
    request: &OperationRequest,
) -> sqlx::Result<Result<Update, Refused>> {
    let update = match patched(plans, tenant, request) {
        Ok(update) => update,
        Err(refused) => return Ok(Err(refused)),
    };
    let added: Vec<String> = update.tenant.domains.iter().filter(|d| !tenant.domains.contains(d)).cloned().collect();
    if let Some(domain) = taken_domain(tx, &added, tenant.id).await? {
        return Ok(Err(Refused::Invalid(Rejection::new(
            "tenant.domain_taken",
            format!("domain {domain:?} belongs to another tenant; a domain belongs to one live tenant at a time"),
        ))));
    }
    Ok(Ok(update))
}

/// The tenant with the patch applied, validated, and what changed.
fn patched(plans: &Plans, tenant: &TenantRecord, request: &OperationRequest) -> Result<Update, Refused> {
    let patch = request.patch.clone().unwrap_or_default();
    let current = tenant.spec();
    let tier = parse_tier(&tenant.tier).unwrap_or(pb::Tier::Unspecified);
    // The whole tenant as it will be, through the rules a new tenant's
    // request meets: the same names for the same mistakes.
    let asked = pb::TenantRequested {
        idempotency_id: request.idempotency_id.clone(),
        key: tenant.key.clone(),
        display_name: patch.display_name.unwrap_or_else(|| current.display_name.clone()),
        plan: patch.plan.unwrap_or_else(|| current.plan.clone()),
        tier: tier as i32,
        admin: patch.admin.or_else(|| current.admin.clone()),
        domains: patch.domains.unwrap_or_else(|| current.domains.clone()),
        labels: patch.labels.map_or_else(|| current.labels.clone(), |labels| labels.into_iter().collect()),
        ..Default::default()
    };
    let valid = validate(&asked, plans).map_err(Refused::Invalid)?;
    if valid.plan.tier != tier {
        return Err(Refused::Invalid(Rejection::new(
            "plan.tier_change",
            format!(
                "plan {:?} is {}, the tenant is {}: changing a tenant's tier is not supported yet",
                valid.plan.name,
                tier_name(valid.plan.tier),
                tenant.tier
            ),
        )));
    }
    let admin = asked.admin.as_ref().map(|admin| pb::AdminContact {
        email: admin.email.clone(),
        first_name: valid.admin_first_name.clone(),
        last_name: valid.admin_last_name.clone(),
    });
    let new = pb::TenantSpec {
        display_name: valid.display_name.clone(),
        plan: valid.plan.name.clone(),
        admin,
        domains: asked.domains.clone(),
        labels: valid.labels.clone(),
        ..current.clone()
    };
    let mut changed = Vec::new();
    for (field, differs) in [
        ("display_name", new.display_name != current.display_name),
        ("domains", new.domains != current.domains),
        ("admin", new.admin != current.admin),
        ("labels", new.labels != current.labels),
        ("plan", new.plan != current.plan),
    ] {
        if differs {
            changed.push(field.to_owned());
        }
    }
    if changed.is_empty() {
        return Err(Refused::NothingChanged);
    }
    Ok(Update { tenant: new, changed })
}

/// A domain of `domains` that a live tenant other than `tenant` lists,
/// under the per-domain locks the orchestrator's intake takes, so an update
/// and a new tenant cannot both take a domain.
async fn taken_domain(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    domains: &[String],
    tenant: uuid::Uuid,
) -> sqlx::Result<Option<String>> {
    if domains.is_empty() {
        return Ok(None);
    }
    let mut sorted: Vec<String> = domains.iter().map(|d| d.to_lowercase()).collect();
    sorted.sort();
    sorted.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('landlord.domain:' || d, 0)) FROM unnest($1::text[]) AS d",
    )
    .bind(&sorted)
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar(
        "SELECT d FROM tenants t CROSS JOIN LATERAL unnest(t.domains) AS d
         WHERE t.domains && $1 AND d = ANY($1) AND t.id <> $2
           AND t.status NOT IN ('FAILED', 'CANCELLED', 'DELETED')
         ORDER BY 1 LIMIT 1",
    )
    .bind(&sorted)
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await
}
