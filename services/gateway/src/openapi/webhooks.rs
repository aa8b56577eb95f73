//! The paths of outbound webhooks (docs/webhooks.md): the endpoint
//! registry (updates and secret rotation included) and each endpoint's
//! deliveries, merged into the document by
//! [`super::document`].

use serde_json::{Value, json};

use super::{Answers, Schemas, body, ok, path_param, query_param, secured};
use crate::auth::{READ, WRITE};
use crate::outbound::{
    CreatedEndpoint, DeliveriesPage, DeliveryStatus, EndpointList, EndpointUpdate, EndpointView, NewEndpoint,
    RotatedSecret,
};

/// `(path, method, operation)` of every outbound-webhook route.
pub(super) fn paths(schemas: &mut Schemas, answers: &Answers) -> Vec<(&'static str, &'static str, Value)> {
    let new_endpoint = schemas.request::<NewEndpoint>();
    let update = schemas.request::<EndpointUpdate>();
    let rotated = schemas.answer::<RotatedSecret>();
    let created = schemas.answer::<CreatedEndpoint>();
    let endpoint = schemas.answer::<EndpointView>();
    let endpoints = schemas.answer::<EndpointList>();
    let deliveries = schemas.answer::<DeliveriesPage>();
    let statuses: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
    let id = || path_param("id", "the endpoint's id (a UUID)");
    let missing = || answers.problem("No such endpoint");
    // Operator routes: a tenant-scoped token is refused (403).
    let forbidden =
        || answers.problem("The token lacks the scope this needs, or is scoped to a tenant (operators only)");
    vec![
        (
            "/v1/webhook-endpoints",
            "post",
            json!({
                "operationId": "createWebhookEndpoint",
                "summary": "Register an endpoint for lifecycle events; its signing secret is in this answer only",
                "security": secured(WRITE),
                "requestBody": body(true, &new_endpoint),
                "responses": answers.with_auth(vec![
                    ("201", json!({"description": "Registered; Location names it",
                                   "content": {"application/json": {"schema": created}}})),
                    ("400", answers.problem("Malformed body")),
                    ("403", forbidden()),
                    ("413", answers.problem("Body too large")),
                    ("415", answers.problem("Not declared Content-Type: application/json")),
                    ("422", answers.problem("A rule is broken: the URL (https://, or http:// to a loopback address; no credentials), an unknown event type, a description too long")),
                ]),
            }),
        ),
        (
            "/v1/webhook-endpoints",
            "get",
            json!({
                "operationId": "listWebhookEndpoints", "summary": "Registered endpoints, oldest first, with their deliveries counted by status",
                "security": secured(READ),
                "responses": answers.with_auth(vec![("200", ok("Endpoints", &endpoints)), ("403", forbidden())]),
            }),
        ),
        (
            "/v1/webhook-endpoints/{id}",
            "get",
            json!({
                "operationId": "getWebhookEndpoint", "summary": "One endpoint (without its secret)",
                "security": secured(READ),
                "parameters": [id()],
                "responses": answers.with_auth(vec![("200", ok("The endpoint", &endpoint)), ("403", forbidden()), ("404", missing())]),
            }),
        ),
        (
            "/v1/webhook-endpoints/{id}",
            "patch",
            json!({
                "operationId": "updateWebhookEndpoint",
                "summary": "Change an endpoint's URL, event types, description, or enable/disable it; fields left out stay as they are. A disabled endpoint gets no deliveries and its pending ones wait",
                "security": secured(WRITE),
                "parameters": [id()],
                "requestBody": body(true, &update),
                "responses": answers.with_auth(vec![
                    ("200", ok("The endpoint as it now is", &endpoint)),
                    ("400", answers.problem("Malformed body")),
                    ("403", forbidden()),
                    ("404", missing()),
                    ("413", answers.problem("Body too large")),
                    ("415", answers.problem("Not declared Content-Type: application/json")),
                    ("422", answers.problem("A rule is broken: the URL (https://, or http:// to a loopback address; no credentials), an unknown event type, a description too long, or nothing to change")),
                ]),
            }),
        ),
        (
            "/v1/webhook-endpoints/{id}/secret/rotate",
            "post",
            json!({
                "operationId": "rotateWebhookSecret",
                "summary": "A new signing secret, in this answer only; for 24 hours deliveries are signed with the previous secret too (two v1 signatures, as Svix rotates), then with the new one only",
                "security": secured(WRITE),
                "parameters": [id()],
                "responses": answers.with_auth(vec![
                    ("200", ok("The new secret", &rotated)),
                    ("403", forbidden()),
                    ("404", missing()),
                ]),
            }),
        ),
        (
            "/v1/webhook-endpoints/{id}",
            "delete",
            json!({
                "operationId": "deleteWebhookEndpoint", "summary": "Remove an endpoint and its deliveries; nothing more is sent to it",
                "security": secured(WRITE),
                "parameters": [id()],
                "responses": answers.with_auth(vec![("204", json!({"description": "Removed"})), ("403", forbidden()), ("404", missing())]),
            }),
        ),
        (
            "/v1/webhook-endpoints/{id}/deliveries",
            "get",
            json!({
                "operationId": "listWebhookDeliveries",
                "summary": "What was sent to an endpoint, newest first, each delivery with its attempts (status code, error, when) and its next attempt",
                "security": secured(READ),
                "parameters": [
                    id(),
                    query_param("status", "only this status", json!({"type": "string", "enum": statuses})),
                    query_param("limit", "page size", json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50})),
                    query_param("cursor", "next_cursor of the previous page", json!({"type": "string"})),
                ],
                "responses": answers.with_auth(vec![
                    ("200", ok("A page of deliveries", &deliveries)),
                    ("400", answers.problem("A bad status, limit or cursor")),
                    ("403", forbidden()),
                    ("404", missing()),
                ]),
            }),
        ),
    ]
}
