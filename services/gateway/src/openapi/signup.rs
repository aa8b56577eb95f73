//! The paths of self-service sign-up (docs/signup.md): public, no token;
//! merged into the document by [`super::document`].

use serde_json::{Value, json};

use super::{Answers, Schemas, body, ok, path_param};
use crate::signup::{KeyAvailability, Resend, SignUp, SignUpAccepted, Verified};

/// `(path, method, operation)` of every sign-up route.
pub(super) fn paths(schemas: &mut Schemas, answers: &Answers) -> Vec<(&'static str, &'static str, Value)> {
    let accepted = ok(
        "Accepted: a verification mail is on its way (the same answer when nothing was sent: a filled honeypot, a re-send of no sign-up)",
        &schemas.answer::<SignUpAccepted>(),
    );
    let sign_up = schemas.request::<SignUp>();
    let resend = schemas.request::<Resend>();
    let availability = schemas.answer::<KeyAvailability>();
    let verified = schemas.answer::<Verified>();
    let limited = answers
        .problem("Too many sign-ups from this address (5 an hour) or for this email (3 an hour); see Retry-After");
    vec![
        (
            "/v1/signups",
            "post",
            json!({
                "operationId": "signUp", "summary": "Sign up: store the lead and mail a single-use verification link", "security": [],
                "requestBody": body(true, &sign_up),
                "responses": {
                    "202": accepted,
                    "400": answers.problem("A malformed body"),
                    "409": answers.problem("The tenant key is taken (rule tenant_key.duplicate)"),
                    "415": answers.problem("Not declared Content-Type: application/json"),
                    "422": answers.problem("A rule is broken: the tenant key's, an unknown plan, an invalid email or company name"),
                    "429": limited,
                }
            }),
        ),
        (
            "/v1/signups/resend",
            "post",
            json!({
                "operationId": "resendSignUp", "summary": "Mail a new verification link (the previous one dies); at most 3 times", "security": [],
                "requestBody": body(true, &resend),
                "responses": {
                    "202": accepted,
                    "400": answers.problem("A malformed body"),
                    "415": answers.problem("Not declared Content-Type: application/json"),
                    "429": answers.problem("Re-sent too often (resend-limit), or too many requests from this address; see Retry-After"),
                }
            }),
        ),
        (
            "/v1/signups/verify",
            "get",
            json!({
                "operationId": "verifySignUp", "summary": "The mail's link: requests the tenant once; later shows its status", "security": [],
                "parameters": [{"name": "token", "in": "query", "required": true, "description": "the token of the mailed link", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The tenant requested (or already), where to follow it; HTML when Accept asks for text/html",
                            "content": {"application/json": {"schema": verified}, "text/html": {"schema": {"type": "string"}}}},
                    "404": answers.problem("An unknown, forged or replaced link"),
                    "409": answers.problem("The tenant key was taken since the sign-up: nothing created"),
                    "410": answers.problem("The link expired (signup-expired): re-send or sign up again"),
                    "422": answers.problem("The plan no longer exists"),
                }
            }),
        ),
        (
            "/v1/tenant-keys/{key}",
            "get",
            json!({
                "operationId": "checkTenantKey", "summary": "Whether a tenant key can be had: available, taken, or the rule it breaks", "security": [],
                "parameters": [path_param("key", "the wanted tenant key")],
                "responses": {
                    "200": ok("Availability", &availability),
                    "429": answers.problem("Too many checks from this address (60 a minute); see Retry-After"),
                }
            }),
        ),
    ]
}
