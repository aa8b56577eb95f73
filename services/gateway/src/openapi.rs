//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`.
//!
//! It is built here, next to the handlers, from the same constants they use
//! (statuses, scopes, event names); `services/gateway/openapi.json` is its
//! committed copy, regenerated with `landlord-gateway openapi >
//! services/gateway/openapi.json`, and a test fails when the two differ.

use landlord_contract::EventKind;
use serde_json::{Value, json};

use crate::auth::{READ, WRITE};
use crate::tenants::STATUSES;

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn secured(scope: &str) -> Value {
    json!([{"bearer": [scope]}])
}

fn auth_problems() -> [(&'static str, Value); 4] {
    [
        (
            "401",
            problem(
                "No valid bearer token: missing, malformed, an algorithm not accepted, a missing or unknown key id (kid), bad signature, expired, wrong audience or issuer",
            ),
        ),
        ("403", problem("The token lacks the scope this needs")),
        ("429", problem("Too many requests from this client; see Retry-After")),
        (
            "503",
            problem(
                "A dependency is unavailable, e.g. the JWKS cannot be fetched for a token's key not seen yet; see Retry-After",
            ),
        ),
    ]
}

fn responses(pairs: Vec<(&str, Value)>) -> Value {
    let mut map = serde_json::Map::new();
    for (code, value) in pairs.into_iter().chain(auth_problems()) {
        map.insert(code.to_owned(), value);
    }
    Value::Object(map)
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The document.
pub fn document() -> Value {
    let events: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    let accepted = ok("Accepted: follow the tenant at status_url", "Accepted");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Landlord gateway",
            "version": "1",
            "description": "Tenant provisioning: ask for a tenant, follow its saga, cancel or retry it; Clerk webhooks; a live event feed. Errors are RFC 9457 problem details."
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": format!("JWT with aud/iss as configured and scopes {READ}, {WRITE} in `scope`: HS256 with the shared secret (LANDLORD_JWT_SECRET) and/or RS256 with a key named by `kid` from the JWKS at LANDLORD_JWKS_URL, as configured")}
            },
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}, "rule": {"type": "string", "description": "the broken validation rule"}}},
                "CreateTenant": {"type": "object", "additionalProperties": false, "required": ["key", "display_name", "plan", "admin"], "properties": {
                    "key": {"type": "string", "pattern": "^[a-z][a-z0-9-]{2,39}$"},
                    "display_name": {"type": "string"}, "plan": {"type": "string"},
                    "tier": {"type": "string", "enum": ["pooled", "bridge", "silo"]},
                    "admin": {"$ref": "#/components/schemas/Admin"},
                    "domains": {"type": "array", "items": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "Admin": {"type": "object", "additionalProperties": false, "required": ["email"], "properties": {
                    "email": {"type": "string"}, "first_name": {"type": "string"}, "last_name": {"type": "string"}}},
                "Accepted": {"type": "object", "required": ["tenant_id", "key", "status_url"], "properties": {
                    "tenant_id": {"type": "string", "format": "uuid"}, "key": {"type": "string"}, "status_url": {"type": "string"}}},
                "TenantSummary": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "key": {"type": "string"}, "display_name": {"type": "string"},
                    "status": {"type": "string", "enum": STATUSES}, "plan": {"type": "string"}, "tier": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
                "Tenant": {"allOf": [{"$ref": "#/components/schemas/TenantSummary"}, {"type": "object", "properties": {
                    "domains": {"type": "array", "items": {"type": "string"}},
                    "admin": {"$ref": "#/components/schemas/Admin"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "failed_step": {"type": ["string", "null"]}, "failure_reason": {"type": ["string", "null"]},
                    "resources": {"type": "array", "items": {"type": "object", "properties": {
                        "step": {"type": "string"}, "kind": {"type": "string"}, "external_id": {"type": "string"},
                        "metadata": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
                        "deleted_at": {"type": ["string", "null"], "format": "date-time"}}}},
                    "saga": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Saga"}]}}}],
                    "description": "A tenant accepted but not yet taken up by the orchestrator has only id, key, status REQUESTED and requested_at."},
                "Saga": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "operation": {"type": "string"}, "state": {"type": "string"},
                    "current_step": {"type": ["string", "null"]}, "percent": {"type": "integer"},
                    "failed_step": {"type": ["string", "null"]}, "failure_reason": {"type": ["string", "null"]},
                    "cancel_reason": {"type": ["string", "null"]},
                    "started_at": {"type": "string", "format": "date-time"}, "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "steps": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "state": {"type": "string"}, "fatal": {"type": "boolean"},
                        "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
                        "started_at": {"type": ["string", "null"], "format": "date-time"},
                        "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        "duration_ms": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]}}}}}},
                "Page": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/TenantSummary"}},
                    "next_cursor": {"type": ["string", "null"]}}},
                "WebhookOutcome": {"type": "object", "properties": {
                    "delivery": {"type": "string", "enum": ["accepted", "duplicate"]},
                    "organization": {"$ref": "#/components/schemas/Organization"}}},
                "Organization": {"type": "object", "properties": {
                    "org_id": {"type": "string"}, "slug": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
                    "tenant_key": {"type": ["string", "null"]}, "admin_email": {"type": ["string", "null"]},
                    "state": {"type": "string", "enum": ["waiting_for_organization", "waiting_for_admin", "requested", "rejected"]},
                    "rejected_rule": {"type": ["string", "null"]}, "rejected_reason": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "requested_at": {"type": ["string", "null"], "format": "date-time"}, "overdue": {"type": "boolean"}}}
            }
        },
        "paths": {
            "/v1/tenants": {
                "post": {
                    "operationId": "createTenant", "summary": "Ask for a tenant", "security": secured(WRITE),
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 200}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateTenant"}}}},
                    "responses": responses(vec![
                        ("202", accepted.clone()),
                        ("400", problem("Missing Idempotency-Key or malformed body")),
                        ("409", problem("The tenant key is taken")),
                        ("413", json!({"description": "Body too large"})),
                        ("422", problem("A rule was broken (see rule), or the Idempotency-Key was used with another body")),
                    ])
                },
                "get": {
                    "operationId": "listTenants", "summary": "List tenants, oldest first", "security": secured(READ),
                    "parameters": [
                        query_param("status", "only this status", json!({"type": "string", "enum": STATUSES})),
                        query_param("plan", "only this plan", json!({"type": "string"})),
                        query_param("limit", "page size", json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50})),
                        query_param("cursor", "next_cursor of the previous page", json!({"type": "string"})),
                    ],
                    "responses": responses(vec![("200", ok("A page", "Page")), ("400", problem("A bad filter, limit or cursor"))])
                }
            },
            "/v1/tenants/{id_or_key}": {
                "get": {
                    "operationId": "getTenant", "summary": "A tenant with its resources and saga progress", "security": secured(READ),
                    "parameters": [path_param("id_or_key", "tenant id (UUID) or key")],
                    "responses": responses(vec![("200", ok("The tenant", "Tenant")), ("404", problem("No such tenant"))])
                }
            },
            "/v1/tenants/{key}/cancel": {
                "post": {
                    "operationId": "cancelTenant", "summary": "Cancel a running provisioning", "security": secured(WRITE),
                    "parameters": [path_param("key", "tenant key")],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"reason": {"type": "string"}}}}}},
                    "responses": responses(vec![
                        ("202", accepted.clone()),
                        ("404", problem("No such tenant")),
                        ("409", problem("Nothing is running to cancel")),
                        ("422", problem("Not a valid tenant key")),
                    ])
                }
            },
            "/v1/tenants/{key}/retry": {
                "post": {
                    "operationId": "retryTenant", "summary": "Provision a FAILED tenant again (a new saga, same key)", "security": secured(WRITE),
                    "parameters": [path_param("key", "tenant key")],
                    "responses": responses(vec![
                        ("202", accepted),
                        ("404", problem("No such tenant")),
                        ("409", problem("The tenant is not FAILED")),
                        ("422", problem("Not a valid tenant key")),
                    ])
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "eventFeed", "summary": "Lifecycle events as Server-Sent Events; id = stream sequence", "security": secured(READ),
                    "parameters": [
                        query_param("tenant", "only this tenant key", json!({"type": "string"})),
                        query_param("type", "only this event", json!({"type": "string", "enum": events})),
                        query_param("last_event_id", "resume after this sequence (as Last-Event-ID)", json!({"type": "integer"})),
                        {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}},
                    ],
                    "responses": responses(vec![
                        ("200", json!({"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}})),
                        ("400", problem("A bad type or Last-Event-ID")),
                        ("422", problem("Not a valid tenant key")),
                    ])
                }
            },
            "/v1/webhooks/clerk": {
                "post": {
                    "operationId": "clerkWebhook", "summary": "Clerk events through Svix (only when a signing secret is configured)",
                    "security": [],
                    "parameters": [
                        {"name": "svix-id", "in": "header", "required": true, "schema": {"type": "string"}},
                        {"name": "svix-timestamp", "in": "header", "required": true, "schema": {"type": "integer"}},
                        {"name": "svix-signature", "in": "header", "required": true, "schema": {"type": "string"}},
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "200": ok("Durably accepted, or a duplicate", "WebhookOutcome"),
                        "400": problem("Missing Svix headers or not a Clerk event"),
                        "401": problem("Bad signature or a timestamp more than 5 minutes off"),
                    }
                }
            },
            "/v1/clerk/organizations": {
                "get": {
                    "operationId": "clerkOrganizations", "summary": "Clerk organizations and whether they became tenants", "security": secured(READ),
                    "parameters": [query_param("state", "only this state", json!({"type": "string", "enum": ["waiting_for_organization", "waiting_for_admin", "requested", "rejected"]}))],
                    "responses": responses(vec![
                        ("200", json!({"description": "Organizations", "content": {"application/json": {"schema": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Organization"}}}}}}})),
                        ("400", problem("A bad state")),
                    ])
                }
            },
            "/v1/openapi.json": {
                "get": {"operationId": "openapi", "summary": "This document", "security": [],
                        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}
            }
        }
    })
}

/// The document as committed: pretty-printed, with a final newline.
pub fn pretty() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
