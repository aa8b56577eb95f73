//! The document checked against the types it describes: samples of every
//! answer and request conform to their schemas, and every reference resolves.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::*;
use crate::clerk::OperationOutcome;
use crate::clerk::OrganizationView;
use crate::problem::Problem;
use crate::tenants::AuditPage;
use crate::tenants::{
    Admin, AuditEntry, DeleteBody, OperationAccepted, ReasonBody, RequestedStatus, ResourceView, RunningOperation,
    SagaView, StepView, SuspendBody, TenantSummary, UpdateTenant,
};

const TENANTS: &str = "/paths/~1v1~1tenants";
const JSON: &str = "content/application~1json/schema";

fn at(document: &Value, pointer: &str) -> Value {
    document.pointer(pointer).cloned().unwrap_or_else(|| panic!("{pointer} is not in the document"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `value` against `schema` as far as this document uses JSON
/// Schema. Stricter than JSON Schema in one way: an object schema that
/// lists properties refuses a member it does not list, even without
/// `additionalProperties: false` — a field the document does not know
/// about is found.
fn check(document: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Value::Object(schema) = schema else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{path}: nothing is allowed here"));
        }
        return;
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').unwrap_or(reference);
        match document.pointer(pointer) {
            Some(target) => check(document, target, value, path, errors),
            None => errors.push(format!("{path}: {reference} does not resolve")),
        }
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) {
            let outcomes: Vec<Vec<String>> = alternatives
                .iter()
                .map(|alternative| {
                    let mut errors = Vec::new();
                    check(document, alternative, value, path, &mut errors);
                    errors
                })
                .collect();
            let matching = outcomes.iter().filter(|errors| errors.is_empty()).count();
            if matching == 0 || (exactly_one && matching > 1) {
                errors.push(format!("{path}: {matching} of the {keyword} alternatives match; {outcomes:?}"));
            }
        }
    }
    let actual = json_type(value);
    match schema.get("type") {
        Some(Value::String(t)) if t != actual && !(t == "number" && actual == "integer") => {
            errors.push(format!("{path}: {actual}, not {t}"));
        }
        Some(Value::Array(types)) if !types.iter().any(|t| t == actual) => {
            errors.push(format!("{path}: {actual}, not one of {types:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let (Some(format), Some(text)) = (schema.get("format").and_then(Value::as_str), value.as_str()) {
        let valid = match format {
            "uuid" => Uuid::parse_str(text).is_ok(),
            "date-time" => OffsetDateTime::parse(text, &Rfc3339).is_ok(),
            _ => true,
        };
        if !valid {
            errors.push(format!("{path}: {text:?} is not a {format}"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(document, schema.get("items").unwrap_or(&Value::Bool(true)), item, &format!("{path}/{i}"), errors);
        }
    }
    let Some(members) = value.as_object() else { return };
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, member) in members {
        let path = format!("{path}/{name}");
        match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
            (Some(property), _) => check(document, property, member, &path, errors),
            (None, Some(additional)) => check(document, additional, member, &path, errors),
            (None, None) if properties.is_some() => errors.push(format!("{path}: not in the schema")),
            (None, None) => {}
        }
    }
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !members.contains_key(name)
        {
            errors.push(format!("{path}: required member {name} is missing"));
        }
    }
}

fn conforms(document: &Value, pointer: &str, value: &Value) -> std::result::Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(document, &at(document, pointer), value, "", &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn assert_conforms<T: serde::Serialize>(document: &Value, pointer: &str, sample: &T) {
    let value = serde_json::to_value(sample).unwrap();
    assert_eq!(conforms(document, pointer, &value), Ok(()), "{pointer}: {value:#}");
}

fn summary() -> TenantSummary {
    TenantSummary {
        id: Uuid::from_u128(1),
        key: "acme".into(),
        display_name: "Acme".into(),
        status: "ACTIVE".into(),
        plan: "standard".into(),
        tier: "bridge".into(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn organization() -> OrganizationView {
    OrganizationView {
        org_id: "org_1".into(),
        slug: Some("acme".into()),
        name: None,
        tenant_key: None,
        admin_email: None,
        state: "waiting_for_admin".into(),
        rejected_rule: None,
        rejected_reason: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
        requested_at: None,
        overdue: false,
    }
}

/// What the handlers serialise is what the document says they answer:
/// a field added to one of these types, or a serde attribute changed,
/// shows in the generated schema, or this fails.
#[test]
fn answers_follow_the_types() {
    let document = document();
    let step = StepView {
        name: "s1".into(),
        state: "succeeded".into(),
        fatal: true,
        attempts: 1,
        max_attempts: 3,
        started_at: Some(OffsetDateTime::UNIX_EPOCH),
        finished_at: None,
        duration_ms: Some(12),
        last_error: None,
    };
    let saga = SagaView {
        id: Uuid::from_u128(2),
        operation: "provision".into(),
        state: "running".into(),
        current_step: Some("s1".into()),
        percent: 50,
        failed_step: None,
        failure_reason: None,
        cancel_reason: None,
        started_at: OffsetDateTime::UNIX_EPOCH,
        finished_at: None,
        steps: vec![step],
    };
    let resource = ResourceView {
        step: "s1".into(),
        kind: "database".into(),
        external_id: "acme".into(),
        metadata: json!({"size": 1, "tags": ["a"]}),
        created_at: OffsetDateTime::UNIX_EPOCH,
        deleted_at: Some(OffsetDateTime::UNIX_EPOCH),
    };
    let tenant = |saga: Option<SagaView>, resources: Vec<ResourceView>| TenantView {
        summary: summary(),
        domains: vec!["acme.test".into()],
        admin: Admin { email: "a@acme.test".into(), first_name: String::new(), last_name: "A".into() },
        labels: [("team".to_owned(), "red".to_owned())].into(),
        failed_step: None,
        failure_reason: Some("why".into()),
        resources,
        saga,
        operation: Some(RunningOperation { operation: "suspend".into(), saga_id: Uuid::from_u128(4) }),
        purge_at: Some(OffsetDateTime::UNIX_EPOCH),
        export_location: Some("s3://landlord-archive/acme/x/".into()),
        exported_at: Some(OffsetDateTime::UNIX_EPOCH),
        deleted_at: None,
        deleted_by: None,
        deletion_reason: None,
    };
    let get = format!("/paths/~1v1~1tenants~1{{id_or_key}}/get/responses/200/{JSON}");
    assert_conforms(&document, &get, &tenant(Some(saga), vec![resource]));
    assert_conforms(&document, &get, &tenant(None, Vec::new()));
    let requested = RequestedTenant {
        id: Uuid::from_u128(3),
        key: "acme".into(),
        status: RequestedStatus::Requested,
        requested_at: OffsetDateTime::UNIX_EPOCH,
    };
    assert_conforms(&document, &get, &requested);

    let accepted = Accepted { tenant_id: Uuid::from_u128(1), key: "acme".into(), status_url: "/v1/tenants/x".into() };
    assert_conforms(&document, &format!("{TENANTS}/post/responses/202/{JSON}"), &accepted);
    for next_cursor in [None, Some("abc".to_owned())] {
        let page = Page { items: vec![summary()], next_cursor };
        assert_conforms(&document, &format!("{TENANTS}/get/responses/200/{JSON}"), &page);
    }
    let problem = format!("{TENANTS}/post/responses/422/content/application~1problem+json/schema");
    assert_conforms(&document, &problem, &*Problem::invalid("tenant_key.too_short", "too short"));
    let mut unauthenticated = Problem::unauthenticated("token", "no token");
    unauthenticated.retry_after = Some(1);
    assert_conforms(&document, &problem, &*unauthenticated);

    let webhook = format!("/paths/~1v1~1webhooks~1clerk/post/responses/200/{JSON}");
    assert_conforms(
        &document,
        &webhook,
        &Outcome { delivery: "duplicate".into(), organization: None, operation: None },
    );
    assert_conforms(
        &document,
        &webhook,
        &Outcome { delivery: "accepted".into(), organization: Some(organization()), operation: None },
    );
    let organizations = Organizations { items: vec![organization()] };
    assert_conforms(&document, &format!("/paths/~1v1~1clerk~1organizations/get/responses/200/{JSON}"), &organizations);
    let event = FeedEvent {
        sequence: 7,
        subject: "root.v1.events.acme.step_failed".into(),
        tenant: "acme".into(),
        event: "step_failed".into(),
        id: "e1".into(),
        kind: "landlord.v1.StepFailed".into(),
        time: "1970-01-01T00:00:00Z".into(),
        source: "orchestrator".into(),
        correlation_id: "c1".into(),
        payload: "AAE=".into(),
    };
    // Named in the event stream's description.
    assert_conforms(&document, "/components/schemas/FeedEvent", &event);

    let accepted_operation = OperationAccepted {
        saga_id: Uuid::from_u128(5),
        operation: "suspend".into(),
        tenant_id: Uuid::from_u128(1),
        key: "acme".into(),
        status_url: "/v1/tenants/x".into(),
    };
    for (path, method) in [
        ("/paths/~1v1~1tenants~1{key}~1suspend", "post"),
        ("/paths/~1v1~1tenants~1{key}~1resume", "post"),
        ("/paths/~1v1~1tenants~1{key}~1restore", "post"),
        ("/paths/~1v1~1tenants~1{key}~1export", "post"),
        ("/paths/~1v1~1tenants~1{id_or_key}", "patch"),
        ("/paths/~1v1~1tenants~1{id_or_key}", "delete"),
    ] {
        assert_conforms(&document, &format!("{path}/{method}/responses/202/{JSON}"), &accepted_operation);
        let mut busy = Problem::conflict("operation-in-progress", "busy").with_rule("operation.one_at_a_time");
        busy.operation = Some("suspend".into());
        busy.saga_id = Some(Uuid::from_u128(6));
        assert_conforms(
            &document,
            &format!("{path}/{method}/responses/409/content/application~1problem+json/schema"),
            &*busy,
        );
    }
    let entry = |id, saga_id| AuditEntry {
        id,
        at: OffsetDateTime::UNIX_EPOCH,
        actor: "tester".into(),
        saga_id,
        action: "suspend.requested".into(),
        detail: json!({"reason": "non-payment"}),
    };
    let audit =
        AuditPage { items: vec![entry(1, None), entry(2, Some(Uuid::from_u128(7)))], next_cursor: Some("x".into()) };
    assert_conforms(&document, &format!("/paths/~1v1~1tenants~1{{key}}~1audit/get/responses/200/{JSON}"), &audit);
    let offboarded = OperationOutcome {
        operation: "offboard".into(),
        result: "requested".into(),
        tenant_key: Some("acme".into()),
        saga_id: Some(Uuid::from_u128(8)),
        detail: None,
    };
    let outcome = Outcome { delivery: "accepted".into(), organization: None, operation: Some(offboarded) };
    assert_conforms(&document, &webhook, &outcome);

    // The checker itself finds a member the document does not know.
    let mut extra = serde_json::to_value(&accepted).unwrap();
    extra["added"] = json!(1);
    assert!(conforms(&document, &format!("{TENANTS}/post/responses/202/{JSON}"), &extra).is_err());
}

/// Request bodies are described as the handlers read them: what
/// conforms is read, optional members included, and what the handlers
/// refuse does not conform.
#[test]
fn request_bodies_follow_the_types() {
    let document = document();
    let create = format!("{TENANTS}/post/requestBody/{JSON}");
    let minimal = json!({"key": "acme", "display_name": "Acme", "plan": "standard", "admin": {"email": "a@acme.test"}});
    let full = json!({"key": "acme-2", "display_name": "Acme", "plan": "standard", "tier": "silo",
                      "admin": {"email": "a@acme.test", "first_name": "A", "last_name": "B"},
                      "domains": ["acme.test"], "labels": {"team": "red"}});
    for body in [&minimal, &full] {
        assert_eq!(conforms(&document, &create, body), Ok(()), "{body}");
        let read: CreateTenant = serde_json::from_value(body.clone()).unwrap();
        assert_conforms(&document, &create, &read);
    }
    // Refused by the schema and by serde alike (an unknown tier is
    // refused by the handler, with its rule).
    for (parent, member, change, serde_refuses) in [
        ("", "plan", None, true),
        ("/admin", "email", None, true),
        ("/admin", "role", Some(json!("owner")), true),
        ("", "extra", Some(json!(1)), true),
        ("", "tier", Some(json!("gold")), false),
    ] {
        let mut body = minimal.clone();
        let object = body.pointer_mut(parent).and_then(Value::as_object_mut).unwrap();
        match change {
            Some(value) => object.insert(member.to_owned(), value),
            None => object.remove(member),
        };
        assert!(conforms(&document, &create, &body).is_err(), "{body}");
        assert_eq!(serde_json::from_value::<CreateTenant>(body.clone()).is_err(), serde_refuses, "{body}");
    }

    let cancel = format!("/paths/~1v1~1tenants~1{{key}}~1cancel/post/requestBody/{JSON}");
    for body in [json!({}), json!({"reason": "no longer needed"}), json!({"reason": null})] {
        assert_eq!(conforms(&document, &cancel, &body), Ok(()), "{body}");
        assert!(serde_json::from_value::<CancelBody>(body).is_ok());
    }
    assert!(conforms(&document, &cancel, &json!({"why": "x"})).is_err());
    assert!(serde_json::from_value::<CancelBody>(json!({"why": "x"})).is_err());

    fn both<T: serde::de::DeserializeOwned>(document: &Value, pointer: &str, body: &Value, read: bool) {
        assert_eq!(conforms(document, pointer, body).is_ok(), read, "{pointer}: {body}");
        assert_eq!(serde_json::from_value::<T>(body.clone()).is_ok(), read, "{pointer}: {body}");
    }
    let suspend = format!("/paths/~1v1~1tenants~1{{key}}~1suspend/post/requestBody/{JSON}");
    both::<SuspendBody>(&document, &suspend, &json!({"reason": "non-payment"}), true);
    both::<SuspendBody>(&document, &suspend, &json!({}), false);
    both::<SuspendBody>(&document, &suspend, &json!({"reason": "x", "grace": 1}), false);
    for route in ["resume", "restore", "export"] {
        let pointer = format!("/paths/~1v1~1tenants~1{{key}}~1{route}/post/requestBody/{JSON}");
        both::<ReasonBody>(&document, &pointer, &json!({}), true);
        both::<ReasonBody>(&document, &pointer, &json!({"reason": "paid"}), true);
        both::<ReasonBody>(&document, &pointer, &json!({"why": "paid"}), false);
    }
    let delete = format!("/paths/~1v1~1tenants~1{{id_or_key}}/delete/requestBody/{JSON}");
    both::<DeleteBody>(&document, &delete, &json!({"reason": "churned"}), true);
    both::<DeleteBody>(&document, &delete, &json!({"reason": "churned", "grace": 0, "export": false}), true);
    both::<DeleteBody>(&document, &delete, &json!({"grace": 60}), false);
    both::<DeleteBody>(&document, &delete, &json!({"reason": "churned", "grace": "P30D"}), false);
    assert!(serde_json::from_value::<DeleteBody>(json!({"reason": "x"})).unwrap().export, "export defaults to true");
    let patch = format!("/paths/~1v1~1tenants~1{{id_or_key}}/patch/requestBody/{JSON}");
    both::<UpdateTenant>(&document, &patch, &json!({"display_name": "Acme 2"}), true);
    let full = json!({"display_name": "A", "domains": ["a.test"], "admin": {"email": "a@a.test"},
                      "labels": {"team": "red"}, "plan": "standard", "tier": "bridge", "reason": "rebrand"});
    both::<UpdateTenant>(&document, &patch, &full, true);
    both::<UpdateTenant>(&document, &patch, &json!({"key": "other"}), false);
    both::<UpdateTenant>(&document, &patch, &json!({"admin": {"first_name": "A"}}), false);
}

#[test]
fn every_reference_resolves_to_a_component_schema() {
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    found.push(reference);
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }
    let document = document();
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(found.len() > 30, "{found:?}");
    for reference in found {
        let name = reference.strip_prefix(SCHEMAS).unwrap_or_else(|| panic!("{reference}"));
        assert!(document["components"]["schemas"].get(name).is_some(), "{reference}");
    }
}
