//! The paths of the lifecycle after ACTIVE (docs/lifecycle.md): suspend,
//! resume, update, delete (offboarding), restore, export and the audit
//! log, merged into the document by [`super::document`].

use serde_json::{Value, json};

use super::{Answers, Schemas, body, ok, path_param, query_param, secured};
use crate::auth::{PURGE, READ, WRITE};
use crate::tenants::{AuditPage, DeleteBody, OperationAccepted, ReasonBody, SuspendBody, UpdateTenant};

fn idempotency_key() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "required": true,
           "description": "The same key for the same operation names the same saga (the first request's body is the one that runs)",
           "schema": {"type": "string", "maxLength": 200}})
}

/// `(path, method, operation)` of every lifecycle route.
pub(super) fn paths(schemas: &mut Schemas, answers: &Answers) -> Vec<(&'static str, &'static str, Value)> {
    let accepted = ok(
        "Accepted: the saga that will run the operation; follow the tenant at status_url",
        &schemas.answer::<OperationAccepted>(),
    );
    let suspend = schemas.request::<SuspendBody>();
    let reason = schemas.request::<ReasonBody>();
    let update = schemas.request::<UpdateTenant>();
    let delete = schemas.request::<DeleteBody>();
    let audit = schemas.answer::<AuditPage>();
    // What every operation can answer besides 202.
    let refusals = |not_allowed: &str, extra: Vec<(&'static str, Value)>| {
        let mut pairs = vec![
            ("202", accepted.clone()),
            ("400", answers.problem("Missing Idempotency-Key or malformed body")),
            ("404", answers.problem("No live tenant has this key (a DELETED tenant is a tombstone)")),
            (
                "409",
                answers.problem(&format!(
                    "Another operation is at work on the tenant (rule operation.one_at_a_time; its operation and saga_id are named), or {not_allowed} (rule operation.not_allowed)"
                )),
            ),
            ("413", answers.problem("Body too large")),
            ("415", answers.problem("A body not declared Content-Type: application/json")),
        ];
        pairs.extend(extra);
        answers.with_auth(pairs)
    };
    let key = || path_param("key", "tenant key");
    let simple = |id: &str, summary: &str, not_allowed: &str| {
        json!({
            "operationId": id, "summary": summary, "security": secured(WRITE),
            "parameters": [key(), idempotency_key()],
            "requestBody": body(false, &reason),
            "responses": refusals(not_allowed, vec![("422", answers.problem("Not a valid tenant key, or a reason too long"))]),
        })
    };
    vec![
        (
            "/v1/tenants/{key}/suspend",
            "post",
            json!({
                "operationId": "suspendTenant", "summary": "Block access to an ACTIVE tenant, its data untouched (reason required)",
                "security": secured(WRITE),
                "parameters": [key(), idempotency_key()],
                "requestBody": body(true, &suspend),
                "responses": refusals("the tenant is not ACTIVE", vec![
                    ("422", answers.problem("Not a valid tenant key, or no reason (rule reason.required)")),
                ]),
            }),
        ),
        (
            "/v1/tenants/{key}/resume",
            "post",
            simple("resumeTenant", "Give a SUSPENDED tenant its access back", "the tenant is not SUSPENDED"),
        ),
        (
            "/v1/tenants/{key}/restore",
            "post",
            simple(
                "restoreTenant",
                "Bring an offboarded tenant back to ACTIVE during its grace period",
                "the tenant is not DELETION_SCHEDULED",
            ),
        ),
        (
            "/v1/tenants/{key}/export",
            "post",
            simple(
                "exportTenant",
                "Copy the tenant's database and objects to the archive, with a verified manifest",
                "the tenant is not ACTIVE, SUSPENDED or DELETION_SCHEDULED",
            ),
        ),
        (
            "/v1/tenants/{id_or_key}",
            "patch",
            json!({
                "operationId": "updateTenant", "summary": "Change display name, domains, admin contact, labels, or the plan within the tier",
                "security": secured(WRITE),
                "parameters": [path_param("id_or_key", "tenant key"), idempotency_key()],
                "requestBody": body(true, &update),
                "responses": refusals("the tenant is not ACTIVE or SUSPENDED", vec![
                    ("422", answers.problem("A rule was broken (see rule): plan.tier_change (a tier, or a plan of another tier: not supported yet), update.empty, update.nothing_changed, a field's own rule, or not a valid tenant key")),
                ]),
            }),
        ),
        (
            "/v1/tenants/{id_or_key}",
            "delete",
            json!({
                "operationId": "deleteTenant",
                "summary": "Offboard: suspend at once, export, purge when the grace period ends (restore until then)",
                "security": secured(WRITE),
                "parameters": [path_param("id_or_key", "tenant key"), idempotency_key()],
                "requestBody": body(true, &delete),
                "responses": refusals("the tenant is not ACTIVE or SUSPENDED", vec![
                    ("403", answers.problem(&format!("The token lacks {WRITE}, or asks for a grace period of 0 without {PURGE}"))),
                    ("422", answers.problem("No reason (rule reason.required), a grace period above LANDLORD_DELETION_GRACE_MAX (rule grace.too_long), or not a valid tenant key")),
                ]),
            }),
        ),
        (
            "/v1/tenants/{key}/audit",
            "get",
            json!({
                "operationId": "tenantAudit", "summary": "The tenant's audit log: who asked for what and why, oldest first",
                "security": secured(READ),
                "parameters": [
                    path_param("key", "tenant key, or the tenant's id (a DELETED tenant's log stays readable by its id)"),
                    query_param("limit", "page size", json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50})),
                    query_param("cursor", "next_cursor of the previous page", json!({"type": "string"})),
                ],
                "responses": answers.with_auth(vec![
                    ("200", ok("A page of entries", &audit)),
                    ("400", answers.problem("A bad limit or cursor")),
                    ("404", answers.problem("No such tenant")),
                    ("422", answers.problem("Not a valid tenant key")),
                ]),
            }),
        ),
    ]
}
