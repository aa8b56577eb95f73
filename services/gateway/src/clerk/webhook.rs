//! `POST /v1/webhooks/clerk`: a delivery verified, recorded once by
//! `svix-id`, republished as a `ClerkEvent`, and for the organization flow
//! handed to [`super::organizations`], for an organization's update or
//! deletion to [`super::lifecycle`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use landlord_contract::pb;
use landlord_control_plane::outbox::{Outgoing, Relay};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lifecycle::{OperationOutcome, organization_changed};
use super::members;
use super::organizations::{AdminFields, ready_request, record_admin};
use super::settings::Settings;
use super::svix::{svix_timestamp, unix_now};
use super::views::{OrganizationView, view};
use crate::limits::SignatureChecked;
use crate::problem::{Problem, Result};
use crate::state::App;

/// Any NUL character in a string or a member name: PostgreSQL's text and
/// jsonb cannot hold one, so a delivery with one is refused up front rather
/// than failing its transaction (a 5xx that Svix would retry for a day).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(members) => members.iter().any(|(name, value)| name.contains('\0') || has_nul(value)),
        _ => false,
    }
}

#[derive(Debug, Deserialize)]
struct Delivery {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    instance_id: Option<String>,
}

/// What the bridge made of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "WebhookOutcome")]
pub struct Outcome {
    /// `accepted`, or `duplicate` for an svix-id seen before.
    #[schemars(extend("enum" = ["accepted", "duplicate"]))]
    pub delivery: String,
    /// For an organization or admin membership delivery: where that
    /// organization stands now.
    #[serde(skip_serializing_if = "Option::is_none")]
    // Left out when there is none, never null.
    #[schemars(with = "OrganizationView")]
    pub organization: Option<OrganizationView>,
    /// For `organization.updated` and `organization.deleted`: the
    /// operation asked of the organization's tenant, and what became of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    // Left out when there is none, never null.
    #[schemars(with = "OperationOutcome")]
    pub operation: Option<OperationOutcome>,
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

/// The plan an organization's `public_metadata` names under `key`, if it
/// names one (a non-empty string); checked against the plans when its
/// tenant is requested (an unknown one: rejected, rule `plan.unknown`).
fn organization_plan(data: &Value, key: &str) -> Option<String> {
    data.get("public_metadata")
        .and_then(|metadata| metadata.get(key))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|plan| !plan.is_empty())
        .map(str::to_owned)
}

/// `POST /v1/webhooks/clerk`. An answer to a delivery whose signature
/// checked carries [`SignatureChecked`]: the rate limit counts only the
/// others ([`crate::limits::guard`]).
pub async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(settings) = app.clerk.clone() else { return Problem::not_found("no such endpoint").into_response() };
    let svix_id = match settings.secret.verify(&headers, &body, unix_now()) {
        Ok(svix_id) => svix_id,
        Err(problem) => return problem.into_response(),
    };
    let mut response = match deliver(&app, &settings, &headers, &body, svix_id).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    response.extensions_mut().insert(SignatureChecked);
    response
}

/// A delivery whose signature checked.
async fn deliver(
    app: &App,
    settings: &Arc<Settings>,
    headers: &HeaderMap,
    body: &Bytes,
    svix_id: String,
) -> Result<Response> {
    crate::body::require_json(headers)?;
    let malformed = |e: serde_json::Error| {
        Problem::bad_request("malformed-body", format!("the delivery is not a Clerk event: {e}"))
    };
    let value: Value = serde_json::from_slice(body).map_err(malformed)?;
    if has_nul(&value) {
        return Err(Problem::bad_request("malformed-body", "the delivery contains a NUL character (\\u0000)")
            .with_rule("body.nul_character"));
    }
    let delivery: Delivery = serde_json::from_value(value).map_err(malformed)?;
    // Parsed above, so valid JSON (and UTF-8): stored as sent, PostgreSQL
    // makes the jsonb (no second parse and re-serialisation here).
    let payload = std::str::from_utf8(body).unwrap_or("null");
    let token: String = delivery.kind.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    let token = token.to_ascii_lowercase().replace('.', "_");
    let token = if token.is_empty() { "unknown".to_owned() } else { token };
    let event = pb::ClerkEvent {
        r#type: delivery.kind.clone(),
        svix_id: svix_id.clone(),
        object_id: text(&delivery.data, "/id").unwrap_or_default(),
        timestamp: delivery.timestamp.unwrap_or_default(),
        data: body.to_vec(),
        instance_id: delivery.instance_id.clone().unwrap_or_default(),
        delivered_at: svix_timestamp(headers),
    };
    let subject = app.namespace.clerk_event_subject(&token);
    let event = Outgoing::new(subject, format!("clerk.{svix_id}"), &event);
    let admin_membership = delivery.kind == "organizationMembership.created"
        && text(&delivery.data, "/role").as_deref() == Some("org:admin");
    if matches!(delivery.kind.as_str(), "organization.updated" | "organization.deleted") {
        let operation = organization_changed(app, &svix_id, &delivery.kind, &delivery.data, event).await?;
        let delivery = if operation.is_some() { "accepted" } else { "duplicate" };
        return Ok(Json(Outcome { delivery: delivery.into(), organization: None, operation }).into_response());
    }
    // Clerk's timestamp of the event orders a member's or user's events
    // (super::members); else when the data changed, else when Svix signed it.
    let version = delivery
        .timestamp
        .filter(|t| *t > 0)
        .or_else(|| delivery.data["updated_at"].as_i64())
        .unwrap_or_else(|| svix_timestamp(headers).saturating_mul(1000));
    if members::handles(&delivery.kind) && !admin_membership {
        return members::deliver(app, settings, &svix_id, &delivery.kind, &delivery.data, version, event).await;
    }
    if delivery.kind != "organization.created" && !admin_membership {
        return record_event(app, &svix_id, &delivery.kind, event).await;
    }
    let mut tx = app.pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO webhook_deliveries (svix_id, event_type, payload) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT DO NOTHING",
    )
    .bind(&svix_id)
    .bind(&delivery.kind)
    .bind(payload)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        tracing::debug!(svix_id, "webhook delivery seen before");
        return Ok(Json(Outcome { delivery: "duplicate".into(), organization: None, operation: None }).into_response());
    }
    let mut messages = vec![event];
    let mut created_by = None;
    let org_id = match delivery.kind.as_str() {
        "organization.created" => {
            let org_id = text(&delivery.data, "/id")
                .ok_or_else(|| Problem::bad_request("malformed-body", "organization.created without data.id"))?;
            sqlx::query(
                "INSERT INTO clerk_organizations (org_id, slug, name, plan, organization_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (org_id) DO UPDATE SET slug = $2, name = $3, plan = $4,
                     organization_at = coalesce(clerk_organizations.organization_at, now())",
            )
            .bind(&org_id)
            .bind(text(&delivery.data, "/slug"))
            .bind(text(&delivery.data, "/name"))
            .bind(organization_plan(&delivery.data, &settings.plan_key))
            .execute(&mut *tx)
            .await?;
            created_by = text(&delivery.data, "/created_by");
            Some(org_id)
        }
        "organizationMembership.created" if admin_membership => {
            let org_id = text(&delivery.data, "/organization/id").ok_or_else(|| {
                Problem::bad_request("malformed-body", "organizationMembership.created without data.organization.id")
            })?;
            let user = &delivery.data["public_user_data"];
            let admin = AdminFields {
                user_id: text(user, "/user_id"),
                email: text(user, "/identifier"),
                first_name: text(user, "/first_name"),
                last_name: text(user, "/last_name"),
            };
            record_admin(&mut tx, &org_id, admin).await?;
            messages.extend(members::record(&mut tx, app, settings, &delivery.kind, &delivery.data, version).await?);
            Some(org_id)
        }
        _ => None,
    };
    let mut organization = None;
    if let Some(org_id) = &org_id {
        if let Some(request) = ready_request(&mut tx, app, settings, org_id).await? {
            messages.push(request);
        }
        organization = Some(view(&mut tx, org_id, settings.admin_wait).await?);
    }
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &messages).await?;
    tx.commit().await?;
    // Committed is accepted: the answer does not wait for the broker's ack
    // (Svix wants a fast 2xx). If this publish fails, or the process stops
    // before it is done, the relay's sweep publishes the rows later.
    let dispatcher = app.dispatcher.clone();
    tokio::spawn(async move { dispatcher.dispatch(pending).await });
    tracing::info!(svix_id, kind = %delivery.kind, org = org_id.as_deref().unwrap_or(""), "clerk event accepted");
    if let (Some(lookups), Some(org), Some(user_id)) = (&app.lookups, &organization, created_by)
        && org.state == "waiting_for_admin"
    {
        lookups.request(&org.org_id, &user_id);
    }
    Ok(Json(Outcome { delivery: "accepted".into(), organization, operation: None }).into_response())
}

/// A delivery outside the organization flow: recorded, and its
/// `ClerkEvent` written to the outbox, in one statement — one round trip,
/// committed on its own (the same effect as the transaction the
/// organization flow needs, for a quarter of the round trips). Its JSON is
/// not kept in `webhook_deliveries`: the `ClerkEvent` carries it to the
/// events stream, which is its record.
async fn record_event(app: &App, svix_id: &str, kind: &str, event: Outgoing) -> Result<Response> {
    let written = landlord_control_plane::outbox::write_for_new_delivery(&app.pool, svix_id, kind, &event).await?;
    let Some(pending) = written else {
        tracing::debug!(svix_id, "webhook delivery seen before");
        return Ok(Json(Outcome { delivery: "duplicate".into(), organization: None, operation: None }).into_response());
    };
    let dispatcher = app.dispatcher.clone();
    tokio::spawn(async move { dispatcher.dispatch(vec![pending]).await });
    tracing::info!(svix_id, kind, "clerk event accepted");
    Ok(Json(Outcome { delivery: "accepted".into(), organization: None, operation: None }).into_response())
}
