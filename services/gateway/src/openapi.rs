//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`.
//!
//! The component schemas are derived from the types the handlers read and
//! write, by schemars (JSON Schema 2020-12, the dialect of OpenAPI 3.1):
//! [`CreateTenant`], [`CancelBody`], [`Accepted`], [`TenantView`],
//! [`RequestedTenant`], [`Page`] (tenants/views.rs), the lifecycle's
//! bodies and answers (tenants/bodies.rs, their paths in
//! openapi/lifecycle.rs), the problem
//! [`Details`] (problem.rs), [`FeedEvent`] (events.rs), [`Outcome`]
//! (clerk/webhook.rs) and [`Organizations`] (clerk/views.rs), and the
//! types they contain. Names, required
//! members, nullability, `deny_unknown_fields`, renames and flattening come
//! from their serde attributes, descriptions from their doc comments; what
//! serde cannot say (uuid and date-time formats, enumerations kept in
//! constants, the tenant key's shape) is in `#[schemars]` attributes next to
//! the fields. Answers are described as serialised (a field is optional only
//! if `skip_serializing_if` may leave it out), request bodies as
//! deserialised (a `#[serde(default)]` field is optional); a type that reads
//! differently than it writes gets a second schema named `<type>Input`
//! ([`Admin`](crate::tenants::Admin): its names may be left out of a
//! request, and are always in an answer).
//!
//! The paths, operations, parameters and responses are still written here
//! by hand, next to the constants they use (statuses, scopes, event names,
//! Clerk states), but every body in them refers to a schema through its Rust
//! type, never by a name typed here. Also by hand: the query parameters (the
//! handlers read them as strings and check them, so their types would say
//! less than the document does), the event stream (OpenAPI 3.1 cannot
//! describe the events of a `text/event-stream`; the `data` of each is a
//! `FeedEvent`, named in the description) and the Clerk webhook's body
//! (Clerk's format, kept verbatim).
//!
//! `services/gateway/openapi.json` is the committed copy, regenerated with
//! `landlord-gateway openapi > services/gateway/openapi.json`, and a test
//! fails when the two differ.

use std::collections::BTreeMap;

use landlord_contract::EventKind;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::auth::{PURGE, READ, WRITE};
use crate::clerk::{Organizations, Outcome, STATES};
use crate::events::FeedEvent;
use crate::problem::Details;
use crate::tenants::{Accepted, CancelBody, CreateTenant, Page, RequestedTenant, STATUSES, TenantView};

/// Where the schemas are referred to from, in the document.
const SCHEMAS: &str = "#/components/schemas/";

/// Where request schemas are referred to until [`Schemas::finish`] knows
/// their final names; no reference to it is left in the document.
const REQUEST_SCHEMAS: &str = "#/components/request-schemas/";

/// The two schema generators: one describes what the handlers write, one
/// what they read.
struct Schemas {
    answers: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let settings = |path: &'static str| {
            SchemaSettings::draft2020_12().with(|s| {
                s.definitions_path = path.into();
                s.meta_schema = None;
            })
        };
        Self {
            answers: settings(SCHEMAS).for_serialize().into_generator(),
            requests: settings(REQUEST_SCHEMAS).for_deserialize().into_generator(),
        }
    }

    /// A reference to the schema of `T` as a handler serialises it.
    fn answer<T: JsonSchema>(&mut self) -> Value {
        self.answers.subschema_for::<T>().to_value()
    }

    /// A reference to the schema of `T` as a handler deserialises it.
    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// Puts the schemas under `components.schemas` of `document`. A request
    /// schema keeps its name when it is the answer schema of that name or
    /// there is none; otherwise it becomes `<name>Input`. References are
    /// rewritten to match.
    fn finish(mut self, document: &mut Value) {
        let mut schemas = self.answers.take_definitions(true);
        let requests = self.requests.take_definitions(true);
        let names: BTreeMap<String, String> = requests
            .iter()
            .map(|(name, schema)| {
                let same = schemas.get(name).is_none_or(|answer| answer == schema);
                (name.clone(), if same { name.clone() } else { format!("{name}Input") })
            })
            .collect();
        for (name, mut schema) in requests {
            rename_references(&mut schema, &names);
            schemas.insert(names.get(&name).cloned().unwrap_or(name), schema);
        }
        rename_references(document, &names);
        if let Some(components) = document.get_mut("components").and_then(Value::as_object_mut) {
            components.insert("schemas".into(), Value::Object(schemas));
        }
    }
}

/// Points the references to request schemas at their final names.
fn rename_references(value: &mut Value, names: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix(REQUEST_SCHEMAS)
            {
                *reference = format!("{SCHEMAS}{}", names.get(name).map_or(name, String::as_str));
            }
            map.values_mut().for_each(|v| rename_references(v, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_references(v, names)),
        _ => {}
    }
}

fn ok(description: &str, schema: &Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn body(required: bool, schema: &Value) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": schema}}})
}

fn secured(scope: &str) -> Value {
    json!([{"bearer": [scope]}])
}

/// The answers of operations, problems referring to the `Problem` schema.
struct Answers {
    problem: Value,
}

impl Answers {
    fn problem(&self, description: &str) -> Value {
        json!({"description": description, "content": {"application/problem+json": {"schema": self.problem}}})
    }

    /// `pairs` and the answers every authenticated operation can give.
    fn with_auth(&self, pairs: Vec<(&str, Value)>) -> Value {
        let auth = [
            (
                "401",
                self.problem(
                    "No valid bearer token: missing, malformed, an algorithm not accepted, a missing or unknown key id (kid), bad signature, expired, wrong audience or issuer",
                ),
            ),
            (
                "403",
                self.problem(
                    "The token lacks the scope this needs, or is tenant-scoped and this concerns no single tenant (tenant-scoped-token)",
                ),
            ),
            ("429", self.problem("Too many requests from this client; see Retry-After")),
            (
                "503",
                self.problem(
                    "A dependency is unavailable, e.g. the JWKS cannot be fetched for a token's key not seen yet; see Retry-After",
                ),
            ),
        ];
        let mut map = Map::new();
        // An operation's own description of a code (a 403 that says more)
        // wins over the common one.
        for (code, value) in pairs.into_iter().chain(auth) {
            map.entry(code.to_owned()).or_insert(value);
        }
        Value::Object(map)
    }
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
    let mut schemas = Schemas::new();
    let answers = Answers { problem: schemas.answer::<Details>() };
    let create_tenant = schemas.request::<CreateTenant>();
    let cancel_tenant = schemas.request::<CancelBody>();
    let accepted = ok("Accepted: follow the tenant at status_url", &schemas.answer::<Accepted>());
    let page = schemas.answer::<Page>();
    let tenant = json!({"oneOf": [schemas.answer::<TenantView>(), schemas.answer::<RequestedTenant>()]});
    let feed_event = schemas.answer::<FeedEvent>();
    let outcome = schemas.answer::<Outcome>();
    let organizations = schemas.answer::<Organizations>();
    let feed_event_name = feed_event["$ref"].as_str().and_then(|r| r.strip_prefix(SCHEMAS)).unwrap_or_default();
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Landlord gateway",
            "version": "1",
            "description": "Tenant provisioning: ask for a tenant, follow its saga, cancel or retry it; after ACTIVE suspend, resume, update, offboard (DELETE, with a grace period), restore and export it, one operation at a time, and read its audit log; Clerk webhooks; a live event feed. Every error, on every path (an unknown path 404, a method a path does not have 405 with Allow, a body too large 413, a body not declared application/json 415), is an RFC 9457 problem detail (application/problem+json)."
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": format!("JWT with aud/iss as configured and scopes {READ}, {WRITE}, {PURGE} (an offboarding with no grace period) in `scope`: HS256 with the shared secret (LANDLORD_JWT_SECRET) and/or RS256 with a key named by `kid` from the JWKS at LANDLORD_JWKS_URL, as configured. A token may be tenant-scoped: its tenant claim (`landlord_tenant` in HS256 tokens, which `landlord-gateway mint-token --tenant <id>` mints; in RS256 tokens the claim LANDLORD_JWT_TENANT_CLAIM names, default `landlord_tenant`, a dotted name such as `o.id` read as a path) holds a tenant id (UUID), a Clerk organization id (`org_…`) or a tenant key. Such a token reads and acts on that one tenant: another tenant, on every `/v1/tenants/{{…}}` path, is answered 404 exactly as a missing one; the list and the event feed hold its own tenant only (`tenant` naming another: 404); creating a tenant and every route that concerns no single tenant answer 403 `tenant-scoped-token`. A tenant claim that is not a string, or names no tenant in any of the three forms, is refused 401 `token-tenant`; one naming a tenant that does not exist (yet) sees nothing (docs/auth.md)")}
            }
        },
        "paths": {
            "/v1/tenants": {
                "post": {
                    "operationId": "createTenant", "summary": "Ask for a tenant", "security": secured(WRITE),
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 200}}],
                    "requestBody": body(true, &create_tenant),
                    "responses": answers.with_auth(vec![
                        ("202", accepted.clone()),
                        ("400", answers.problem("Missing Idempotency-Key or malformed body")),
                        ("409", answers.problem("The tenant key is taken (rule tenant_key.duplicate), or a domain belongs to another live tenant (rule tenant.domain_taken)")),
                        ("413", answers.problem("Body too large")),
                        ("415", answers.problem("The body is not declared Content-Type: application/json")),
                        ("422", answers.problem("A rule was broken (see rule), or the Idempotency-Key was used with another body")),
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
                    "responses": answers.with_auth(vec![
                        ("200", ok("A page", &page)),
                        ("400", answers.problem("A bad filter, limit or cursor")),
                    ])
                }
            },
            "/v1/tenants/{id_or_key}": {
                "get": {
                    "operationId": "getTenant", "summary": "A tenant with its resources and saga progress", "security": secured(READ),
                    "parameters": [path_param("id_or_key", "tenant id (UUID) or key")],
                    "responses": answers.with_auth(vec![
                        ("200", ok("The tenant; one accepted but not yet taken up by the orchestrator is REQUESTED", &tenant)),
                        ("404", answers.problem("No such tenant")),
                    ])
                }
            },
            "/v1/tenants/{key}/cancel": {
                "post": {
                    "operationId": "cancelTenant", "summary": "Cancel a running provisioning", "security": secured(WRITE),
                    "parameters": [path_param("key", "tenant key")],
                    "requestBody": body(false, &cancel_tenant),
                    "responses": answers.with_auth(vec![
                        ("202", accepted.clone()),
                        ("404", answers.problem("No such tenant")),
                        ("400", answers.problem("Malformed body")),
                        ("409", answers.problem("Nothing is running to cancel")),
                        ("413", answers.problem("Body too large")),
                        ("415", answers.problem("A body not declared Content-Type: application/json")),
                        ("422", answers.problem("Not a valid tenant key")),
                    ])
                }
            },
            "/v1/tenants/{key}/retry": {
                "post": {
                    "operationId": "retryTenant", "summary": "Provision a FAILED tenant again (a new saga, same key)", "security": secured(WRITE),
                    "parameters": [path_param("key", "tenant key")],
                    "responses": answers.with_auth(vec![
                        ("202", accepted),
                        ("404", answers.problem("No such tenant")),
                        ("409", answers.problem("The tenant is not FAILED, or a domain of it now belongs to another live tenant (rule tenant.domain_taken)")),
                        ("422", answers.problem("Not a valid tenant key")),
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
                    "responses": answers.with_auth(vec![
                        ("200", json!({"description": format!("An event stream; the data of each event is a {feed_event_name} as JSON"),
                                       "content": {"text/event-stream": {"schema": {"type": "string"}}}})),
                        ("400", answers.problem("A bad type or Last-Event-ID")),
                        ("422", answers.problem("Not a valid tenant key")),
                    ])
                }
            },
            "/v1/webhooks/clerk": {
                "post": {
                    "operationId": "clerkWebhook", "summary": "Clerk events through Svix (only when a signing secret is configured); organization.updated updates the organization's tenant, organization.deleted offboards it",
                    "security": [],
                    "parameters": [
                        {"name": "svix-id", "in": "header", "required": true, "schema": {"type": "string"}},
                        {"name": "svix-timestamp", "in": "header", "required": true, "schema": {"type": "integer"}},
                        {"name": "svix-signature", "in": "header", "required": true, "schema": {"type": "string"}},
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "200": ok("Durably accepted, or a duplicate", &outcome),
                        "400": answers.problem("Missing Svix headers or not a Clerk event"),
                        "401": answers.problem("Bad signature or a timestamp more than 5 minutes off"),
                        "409": answers.problem("organization.updated or organization.deleted whose tenant is busy with another operation (rule operation.one_at_a_time) or requested and not created yet: not recorded, so Svix delivers it again"),
                        "413": answers.problem("Body too large"),
                        "415": answers.problem("A signed delivery not declared Content-Type: application/json"),
                        "429": answers.problem("Too many deliveries with a bad or missing signature from this address; see Retry-After (signed deliveries are never limited)"),
                    }
                }
            },
            "/v1/clerk/organizations": {
                "get": {
                    "operationId": "clerkOrganizations", "summary": "Clerk organizations and whether they became tenants", "security": secured(READ),
                    "parameters": [query_param("state", "only this state", json!({"type": "string", "enum": STATES}))],
                    "responses": answers.with_auth(vec![
                        ("200", ok("Organizations", &organizations)),
                        ("400", answers.problem("A bad state")),
                    ])
                }
            },
            "/v1/openapi.json": {
                "get": {"operationId": "openapi", "summary": "This document", "security": [],
                        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}
            }
        }
    });
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        let signup = signup::paths(&mut schemas, &answers);
        let webhooks = webhooks::paths(&mut schemas, &answers);
        for (path, method, operation) in
            lifecycle::paths(&mut schemas, &answers).into_iter().chain(signup).chain(webhooks)
        {
            if let Some(item) = paths.entry(path).or_insert_with(|| json!({})).as_object_mut() {
                item.insert(method.to_owned(), operation);
            }
        }
    }
    schemas.finish(&mut document);
    document
}

/// The document as committed: pretty-printed, with a final newline.
pub fn pretty() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

mod lifecycle;
mod signup;
#[cfg(test)]
mod tests;
mod webhooks;
