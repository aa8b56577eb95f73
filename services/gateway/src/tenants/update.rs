//! `PATCH /v1/tenants/{key}`: display name, domains (the OIDC client's
//! redirect URIs and web origins follow), admin contact, labels, and a plan
//! of the same tier. A tier change (bridge ↔ silo ↔ pooled) moves data
//! between kinds of backends and is not supported yet: refused with the
//! rule `plan.tier_change`, whether asked as a tier or as a plan of
//! another tier.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_contract::pb;
use landlord_control_plane::Operation;
use landlord_control_plane::plans::tier_name;

use super::bodies::UpdateTenant;
use super::operate::{TenantPatch, api_request, operate, reason, tenant_key};
use super::requests::{idempotency_key, parse_tier};
use super::rows::find;
use crate::auth::{Caller, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;

fn tier_change(detail: String) -> Problem {
    Problem::invalid("plan.tier_change", format!("{detail}: changing a tenant's tier is not supported yet"))
}

/// 422 unless the tier and the plan the patch names (if any) are of the
/// tenant's tier. The control plane checks the plan again under its lock;
/// this is the early answer with the clearer message.
async fn refuse_tier_change(app: &App, caller: &Caller, key: &str, body: &UpdateTenant) -> Result<()> {
    if body.tier.is_none() && body.plan.is_none() {
        return Ok(());
    }
    let wanted_tier = body.tier.as_deref().map(|t| parse_tier(Some(t))).transpose()?;
    // Unknown, a tombstone, or another tenant's for a tenant-scoped
    // token: operate answers 404.
    let Some(row) =
        find(app, key).await?.filter(|row| row.summary.status != "DELETED" && caller.may_see(row.summary.id))
    else {
        return Ok(());
    };
    let tier = row.summary.tier;
    if let Some(wanted) = wanted_tier
        && tier_name(wanted) != tier
    {
        return Err(tier_change(format!("tenant {key:?} is {tier}, the update asks for {}", tier_name(wanted))));
    }
    if let Some(plan) = &body.plan {
        let Some(found) = app.plans.get(plan) else {
            let known: Vec<&str> = app.plans.names().collect();
            return Err(Problem::invalid("plan.unknown", format!("plan {plan:?} is not one of: {}", known.join(", "))));
        };
        if tier_name(found.tier) != tier {
            return Err(tier_change(format!(
                "plan {plan:?} is of tier {}, tenant {key:?} is {tier}",
                tier_name(found.tier)
            )));
        }
    }
    Ok(())
}

/// 422 if any text of the patch holds a NUL, which PostgreSQL's text
/// cannot (refused here, rather than as a failed transaction).
fn refuse_nul(body: &UpdateTenant) -> Result<()> {
    let admin = body.admin.iter().flat_map(|a| [&a.email, &a.first_name, &a.last_name]);
    let labels = body.labels.iter().flatten().flat_map(|(k, v)| [k, v]);
    let mut texts = body
        .display_name
        .iter()
        .chain(body.domains.iter().flatten())
        .chain(admin)
        .chain(labels)
        .chain(body.plan.iter())
        .chain(body.tier.iter());
    if texts.any(|t| t.contains('\0')) {
        return Err(Problem::invalid("body.nul_character", "the update contains a NUL character (\\u0000)"));
    }
    Ok(())
}

/// `PATCH /v1/tenants/{key}` `{display_name?, domains?, admin?, labels?,
/// plan?, tier?, reason?}`.
pub async fn update(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    caller.require(WRITE)?;
    let idempotency_key = idempotency_key(&headers)?;
    let key = tenant_key(&key)?;
    let body: UpdateTenant = crate::body::json(&headers, &body)?;
    let reason = reason(body.reason.as_deref(), false, "updated through the API")?;
    refuse_nul(&body)?;
    refuse_tier_change(&app, &caller, key.as_str(), &body).await?;
    let patch = TenantPatch {
        display_name: body.display_name,
        domains: body.domains,
        admin: body.admin.map(|a| pb::AdminContact {
            email: a.email,
            first_name: a.first_name,
            last_name: a.last_name,
        }),
        labels: body.labels,
        plan: body.plan,
    };
    let empty = patch.display_name.is_none()
        && patch.domains.is_none()
        && patch.admin.is_none()
        && patch.labels.is_none()
        && patch.plan.is_none();
    if empty {
        return Err(Problem::invalid(
            "update.empty",
            "the update names nothing to change: give at least one of display_name, domains, admin, labels, plan",
        ));
    }
    let mut request = api_request(&key, Operation::Update, &idempotency_key, &caller, reason);
    request.patch = Some(patch);
    operate(&app, &caller, &key, request).await
}
