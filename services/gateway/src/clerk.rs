//! The Clerk webhook bridge (DESIGN.md, "Failure policy"; issue 6).
//!
//! Deliveries come through Svix: `svix-id`, `svix-timestamp` and
//! `svix-signature` headers, the signature an HMAC-SHA256 over
//! `{svix-id}.{svix-timestamp}.{raw body}` keyed with the base64 secret after
//! `whsec_`, sent as space-separated `v1,<base64>` values of which any may
//! match (key rotation), compared in constant time; timestamps more than five
//! minutes off either way are refused. A verified delivery is recorded by
//! `svix-id` in PostgreSQL — a redelivery or a replay is acknowledged and
//! changes nothing — and answered 200 as soon as its transaction commits
//! (what it publishes goes out right after, without holding the answer).
//!
//! `organization.created` carries no email, so a tenant is requested once
//! both the organization and an `org:admin` membership (with the admin's
//! `public_user_data`) have arrived, in either order. The organization's row
//! is locked by both, so exactly one delivery finds both halves present and
//! writes the one `TenantRequested` (idempotency id `clerk:<org id>`). The
//! key comes from the slug, made valid where that is unambiguous (lower
//! case, `_`/`.`/space to `-`, other characters dropped, cut to the maximum
//! length) or the organization is marked rejected with the rule it broke.
//! A key already held by a tenant, an API request or another organization
//! is not a rejection: the organization gets the first free key of `-2`,
//! `-3`, … appended ([`key_candidates`]; docs/clerk.md).
//! Organizations still waiting for their admin are listed at
//! `/v1/clerk/organizations` and logged as overdue after
//! `LANDLORD_CLERK_ADMIN_WAIT`. With `LANDLORD_CLERK_SECRET_KEY` set, the
//! admin of an organization left waiting is also looked up in Clerk's
//! Backend API, in the background ([`crate::clerk_backend`]); whichever
//! source names the admin first makes the one `TenantRequested`.
//!
//! Every delivery — the organization flow and everything else
//! (`organization.deleted`, `organizationMembership.*`, `user.*`, …) — is
//! also published on `<root>.v1.events._clerk.<type>` as a
//! `landlord.v1.ClerkEvent` (proto/landlord/v1/clerk.proto), which carries
//! the delivery's JSON verbatim in `data`, written to the outbox in the
//! delivery's transaction like everything the gateway publishes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use landlord_contract::{Event as _, KeyError, TenantKey, pb};
use landlord_orchestrator::intake;
use landlord_orchestrator::outbox::Outgoing;
use ring::hmac;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::App;
use crate::auth::{Caller, READ};
use crate::clerk_backend::{Admin, BackendSettings};
use crate::limits::SignatureChecked;
use crate::problem::{Problem, Result};

/// How far a delivery's timestamp may be from our clock, either way.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// The tenant key rule's maximum length (`landlord_contract`'s `MAX_LEN`,
/// which the crate does not export; a test keeps the two in step).
const KEY_MAX_LEN: usize = 40;

#[derive(Debug, Clone)]
pub struct Settings {
    pub secret: SigningSecret,
    pub plan: String,
    pub admin_wait: Duration,
    /// Clerk's Backend API, to look admins up; `None`: wait for memberships.
    pub backend: Option<BackendSettings>,
}

/// A Svix signing secret, `whsec_<base64 key>`.
#[derive(Clone)]
pub struct SigningSecret(hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let encoded = raw.trim().strip_prefix("whsec_").ok_or("expected whsec_<base64>")?;
        let key = STANDARD.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// `v1,<base64 signature>` of a delivery (senders and tests).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = hmac::sign(&self.0, &signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(signature.as_ref()))
    }

    /// Checks the Svix headers of a delivery against `body` at time `now`
    /// (Unix seconds); returns the `svix-id`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String> {
        let header = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
                Problem::bad_request(
                    "webhook-headers",
                    format!("the {name} header is missing; is this a Svix delivery?"),
                )
            })
        };
        let id = header("svix-id")?;
        let timestamp: i64 = header("svix-timestamp")?
            .parse()
            .map_err(|_| Problem::bad_request("webhook-headers", "svix-timestamp is not a number of seconds"))?;
        let signatures = header("svix-signature")?;
        // abs_diff: any i64 from the header, i64::MIN included, without
        // overflow.
        let skew = now.abs_diff(timestamp);
        let tolerance = TOLERANCE.as_secs();
        if skew > tolerance {
            let when = if now > timestamp { "old" } else { "ahead of our clock" };
            return Err(Problem::unauthenticated(
                "webhook-timestamp",
                format!("svix-timestamp is {skew}s {when}; at most {tolerance}s either way is accepted"),
            ));
        }
        let content = signed_content(id, timestamp, body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            // ring compares in constant time.
            .any(|signature| hmac::verify(&self.0, &content, &signature).is_ok());
        if !matched {
            return Err(Problem::unauthenticated(
                "webhook-signature",
                "no v1 signature in svix-signature matches this body with our signing secret",
            ));
        }
        Ok(id.to_owned())
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A tenant key from an organization's slug, or the rule it cannot meet.
pub fn key_from_slug(slug: &str) -> std::result::Result<TenantKey, KeyError> {
    let mut key = String::new();
    for c in slug.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            key.push(c);
        } else if matches!(c, '-' | '_' | '.' | ' ') && !key.is_empty() && !key.ends_with('-') {
            key.push('-');
        }
    }
    key.truncate(KEY_MAX_LEN);
    while key.ends_with('-') {
        key.pop();
    }
    TenantKey::parse(&key)
}

/// How many suffixed keys (`-2` to `-<this>`) are tried for an
/// organization whose key is taken before it is rejected.
pub const MAX_KEY_SUFFIX: u32 = 99;

/// The keys an organization may get, in order of preference: the key from
/// its slug, then the same with `-2`, `-3`, … up to [`MAX_KEY_SUFFIX`], the
/// base cut (and any hyphen it ends with dropped) so that each still meets
/// the key rule, its length included.
pub fn key_candidates(key: &TenantKey) -> Vec<TenantKey> {
    let mut candidates = vec![key.clone()];
    for n in 2..=MAX_KEY_SUFFIX {
        let suffix = format!("-{n}");
        let mut base = key.as_str().to_owned();
        base.truncate(KEY_MAX_LEN.saturating_sub(suffix.len()));
        while base.ends_with('-') {
            base.pop();
        }
        if let Ok(candidate) = TenantKey::parse(&format!("{base}{suffix}"))
            && !candidates.contains(&candidate)
        {
            candidates.push(candidate);
        }
    }
    candidates
}

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
}

/// A Clerk organization and whether it became a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow, JsonSchema)]
#[schemars(rename = "Organization")]
pub struct OrganizationView {
    pub org_id: String,
    pub slug: Option<String>,
    pub name: Option<String>,
    /// The key of the tenant requested for it.
    pub tenant_key: Option<String>,
    pub admin_email: Option<String>,
    /// `waiting_for_organization`, `waiting_for_admin`, `requested` or `rejected`.
    #[schemars(extend("enum" = STATES))]
    pub state: String,
    /// The rule its slug or admin broke, when rejected.
    pub rejected_rule: Option<String>,
    pub rejected_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub requested_at: Option<OffsetDateTime>,
    /// Waiting longer than `LANDLORD_CLERK_ADMIN_WAIT`.
    pub overdue: bool,
}

/// An organization as listed, over [`VIEW_FROM`]. One whose request lost
/// its key to another tenant (the race [`free_key`] leaves open: the
/// orchestrator rejected the request) is `rejected` with the rule, and not
/// linked to the tenant that has the key.
const VIEW: &str = "o.org_id, o.slug, o.name, CASE WHEN lost THEN NULL ELSE o.tenant_key END AS tenant_key,
    o.admin_email,
    CASE WHEN o.rejected_rule IS NOT NULL OR lost THEN 'rejected'
         WHEN o.requested_at IS NOT NULL THEN 'requested'
         WHEN o.organization_at IS NULL THEN 'waiting_for_organization'
         ELSE 'waiting_for_admin' END AS state,
    coalesce(o.rejected_rule, CASE WHEN lost THEN 'tenant_key.duplicate' END) AS rejected_rule,
    coalesce(o.rejected_reason, CASE WHEN lost THEN
        format('tenant key %s was taken by another tenant before this organization''s request arrived',
               o.tenant_key) END) AS rejected_reason,
    o.created_at, o.requested_at,
    (o.requested_at IS NULL AND o.rejected_rule IS NULL AND o.created_at < now() - make_interval(secs => $1))
        AS overdue";

/// `lost`: a tenant other than the organization's own has its key (the
/// tenant of an organization has its idempotency id, or, once retried,
/// still its label).
const VIEW_FROM: &str = "clerk_organizations o
    CROSS JOIN LATERAL (SELECT EXISTS (
        SELECT 1 FROM tenants t WHERE t.key = o.tenant_key
           AND t.idempotency_id <> 'clerk:' || o.org_id
           AND (t.labels ->> 'clerk.organization_id') IS DISTINCT FROM o.org_id) AS lost) l";

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
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
    let subject = format!("{}.v1.events._clerk.{token}", app.namespace.root());
    let event = Outgoing::new(subject, format!("clerk.{svix_id}"), &event);
    let admin_membership = delivery.kind == "organizationMembership.created"
        && text(&delivery.data, "/role").as_deref() == Some("org:admin");
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
        return Ok(Json(Outcome { delivery: "duplicate".into(), organization: None }).into_response());
    }
    let mut messages = vec![event];
    let mut created_by = None;
    let org_id = match delivery.kind.as_str() {
        "organization.created" => {
            let org_id = text(&delivery.data, "/id")
                .ok_or_else(|| Problem::bad_request("malformed-body", "organization.created without data.id"))?;
            sqlx::query(
                "INSERT INTO clerk_organizations (org_id, slug, name, organization_at) VALUES ($1, $2, $3, now())
                 ON CONFLICT (org_id) DO UPDATE SET slug = $2, name = $3,
                     organization_at = coalesce(clerk_organizations.organization_at, now())",
            )
            .bind(&org_id)
            .bind(text(&delivery.data, "/slug"))
            .bind(text(&delivery.data, "/name"))
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
    let pending = landlord_orchestrator::outbox::write(&mut tx, &messages).await?;
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
    Ok(Json(Outcome { delivery: "accepted".into(), organization }).into_response())
}

/// A delivery outside the organization flow: recorded, and its
/// `ClerkEvent` written to the outbox, in one statement — one round trip,
/// committed on its own (the same effect as the transaction the
/// organization flow needs, for a quarter of the round trips). Its JSON is
/// not kept in `webhook_deliveries`: the `ClerkEvent` carries it to the
/// events stream, which is its record.
async fn record_event(app: &App, svix_id: &str, kind: &str, event: Outgoing) -> Result<Response> {
    let (traceparent, tracestate) = match &event.trace {
        Some((parent, state)) => (Some(parent.as_str()), state.as_deref()),
        None => (None, None),
    };
    let ids: Vec<i64> = sqlx::query_scalar(
        "WITH delivery AS (
             INSERT INTO webhook_deliveries (svix_id, event_type) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING svix_id)
         INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent, tracestate)
         SELECT $3, $4, $5, $6, $7, $8, $9, $10 FROM delivery
         RETURNING id",
    )
    .bind(svix_id)
    .bind(kind)
    .bind(&event.subject)
    .bind(&event.msg_id)
    .bind(event.ce_type)
    .bind(&event.tenant_key)
    .bind(&event.correlation_id)
    .bind(&event.payload)
    .bind(traceparent)
    .bind(tracestate)
    .fetch_all(&app.pool)
    .await?;
    if ids.is_empty() {
        tracing::debug!(svix_id, "webhook delivery seen before");
        return Ok(Json(Outcome { delivery: "duplicate".into(), organization: None }).into_response());
    }
    let pending = landlord_orchestrator::outbox::pending(ids, std::slice::from_ref(&event));
    let dispatcher = app.dispatcher.clone();
    tokio::spawn(async move { dispatcher.dispatch(pending).await });
    tracing::info!(svix_id, kind, "clerk event accepted");
    Ok(Json(Outcome { delivery: "accepted".into(), organization: None }).into_response())
}

/// `svix-timestamp` (already checked by the signature verification).
fn svix_timestamp(headers: &HeaderMap) -> i64 {
    headers.get("svix-timestamp").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// An admin as a membership or a lookup describes them.
struct AdminFields {
    user_id: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// Records an organization's admin; the first admin to arrive, from a
/// membership or a Backend API lookup, is the tenant's admin.
async fn record_admin(
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
    let pending = landlord_orchestrator::outbox::write(&mut tx, &request.into_iter().collect::<Vec<_>>()).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    Ok(if requested { "tenant requested" } else { "recorded" })
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    slug: Option<String>,
    name: Option<String>,
    admin_email: Option<String>,
    admin_first_name: Option<String>,
    admin_last_name: Option<String>,
    organization_at: Option<OffsetDateTime>,
    requested_at: Option<OffsetDateTime>,
    rejected_rule: Option<String>,
}

/// With the organization's row locked: the `TenantRequested` if both
/// halves are here and none was written before; a rejection is recorded.
async fn ready_request(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    app: &App,
    settings: &Settings,
    org_id: &str,
) -> Result<Option<Outgoing>> {
    let row: OrgRow = sqlx::query_as(
        "SELECT slug, name, admin_email, admin_first_name, admin_last_name, organization_at, requested_at,
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
        plan: settings.plan.clone(),
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
    if let Err(rejection) = intake::validate(&request, &app.plans) {
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
/// rejected (see [`VIEW`]).
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

async fn view(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    org_id: &str,
    wait: Duration,
) -> Result<OrganizationView> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {VIEW} FROM {VIEW_FROM} WHERE o.org_id = $2")))
        .bind(wait.as_secs_f64())
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationsQuery {
    /// Only organizations in this state.
    pub state: Option<String>,
}

pub const STATES: [&str; 4] = ["waiting_for_organization", "waiting_for_admin", "requested", "rejected"];

/// The answer of `GET /v1/clerk/organizations`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Organizations {
    /// Oldest first, at most 1000.
    pub items: Vec<OrganizationView>,
}

/// `GET /v1/clerk/organizations[?state=waiting_for_admin]`, oldest first.
pub async fn organizations(
    State(app): State<App>,
    caller: Caller,
    query: std::result::Result<Query<OrganizationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    caller.require(READ)?;
    let Some(settings) = app.clerk.clone() else { return Err(Problem::not_found("no such endpoint")) };
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    if let Some(state) = &query.state
        && !STATES.contains(&state.as_str())
    {
        return Err(Problem::bad_request("state", format!("state {state:?} is not one of: {}", STATES.join(", "))));
    }
    let all: Vec<OrganizationView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (SELECT {VIEW} FROM {VIEW_FROM}) v WHERE $2::text IS NULL OR state = $2
         ORDER BY created_at, org_id LIMIT 1000"
    )))
    .bind(settings.admin_wait.as_secs_f64())
    .bind(&query.state)
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(Organizations { items: all }).into_response())
}

/// Logs, once a minute, the organizations waiting for their admin longer
/// than `wait`: a tenant that never gets its admin is reported.
pub async fn report_waiting(pool: PgPool, wait: Duration, shutdown: CancellationToken) {
    loop {
        let overdue: sqlx::Result<Vec<(String, Option<String>)>> = sqlx::query_as(
            "SELECT org_id, slug FROM clerk_organizations
             WHERE requested_at IS NULL AND rejected_rule IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 100",
        )
        .bind(wait.as_secs_f64())
        .fetch_all(&pool)
        .await;
        match overdue {
            Ok(orgs) if !orgs.is_empty() => {
                tracing::warn!(count = orgs.len(), ?orgs, "clerk organizations still waiting for their admin");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot look for organizations waiting for their admin"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_become_keys_or_name_the_rule() {
        assert_eq!(key_from_slug("Acme_Corp").unwrap().as_str(), "acme-corp");
        assert_eq!(key_from_slug("acme--corp.").unwrap().as_str(), "acme-corp");
        assert_eq!(key_from_slug("ÀCME inc").unwrap().as_str(), "cme-inc");
        assert_eq!(key_from_slug(&"a".repeat(60)).unwrap().as_str().len(), KEY_MAX_LEN);
        assert_eq!(key_from_slug("1acme").unwrap_err().rule(), "tenant_key.first_character");
        assert_eq!(key_from_slug("admin").unwrap_err().rule(), "tenant_key.reserved");
        assert_eq!(key_from_slug("a").unwrap_err().rule(), "tenant_key.too_short");
        assert!(TenantKey::parse(&"a".repeat(KEY_MAX_LEN)).is_ok());
        assert_eq!(TenantKey::parse(&"a".repeat(KEY_MAX_LEN + 1)).unwrap_err().rule(), "tenant_key.too_long");
    }

    #[test]
    fn a_taken_key_gets_suffixes_that_meet_the_key_rule() {
        let keys = |key: &str| -> Vec<String> {
            key_candidates(&TenantKey::parse(key).unwrap()).iter().map(|k| k.as_str().to_owned()).collect()
        };
        let acme = keys("acme");
        assert_eq!(&acme[..3], ["acme", "acme-2", "acme-3"]);
        assert_eq!(acme.len(), MAX_KEY_SUFFIX as usize);
        assert_eq!(acme.last().map(String::as_str), Some("acme-99"));
        // The longest key is cut to leave room, and a cut that ends in a
        // hyphen drops it (no "--").
        let long = format!("{}-b", "a".repeat(KEY_MAX_LEN - 2));
        let cut = keys(&long);
        assert_eq!(cut[1], format!("{}-2", "a".repeat(KEY_MAX_LEN - 2)));
        assert_eq!(cut[10], format!("{}-11", "a".repeat(KEY_MAX_LEN - 3)));
        for key in keys(&long).iter().chain(&acme) {
            assert!(TenantKey::parse(key).is_ok() && key.len() <= KEY_MAX_LEN, "{key}");
        }
    }

    #[test]
    fn signatures_verify_as_svix_describes() {
        // The example from Svix's documentation of manual verification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), expected);
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap());
        headers.insert("svix-timestamp", "1614265330".parse().unwrap());
        headers.insert("svix-signature", format!("v1,bm90IGl0 {expected}").parse().unwrap());
        assert!(secret.verify(&headers, body, 1614265330 + 299).is_ok());
        assert_eq!(
            secret.verify(&headers, body, 1614265330 + 301).unwrap_err().kind,
            "urn:landlord:problem:webhook-timestamp"
        );
        assert_eq!(
            secret.verify(&headers, b"{}", 1614265330).unwrap_err().kind,
            "urn:landlord:problem:webhook-signature"
        );
        // Timestamps at either end of i64, and clocks at either end, are
        // refused as off, not an overflow.
        for (stamp, now) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (i64::MIN, 0), (0, i64::MIN)] {
            headers.insert("svix-timestamp", stamp.to_string().parse().unwrap());
            assert_eq!(
                secret.verify(&headers, body, now).unwrap_err().kind,
                "urn:landlord:problem:webhook-timestamp",
                "{stamp} at {now}"
            );
        }
    }
}
