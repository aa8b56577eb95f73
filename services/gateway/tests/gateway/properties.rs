//! Property tests over every input boundary of the API (issue 23): JSON
//! bodies, query strings, path segments, the headers `Authorization`,
//! `Idempotency-Key`, `Last-Event-ID` and `Content-Type`, methods, and the
//! Clerk webhook's body and Svix headers, signed and not.
//!
//! The properties, for every request: the gateway answers (a panic in a
//! handler drops the connection, which fails the case); never a 5xx; every
//! refusal is a 4xx `application/problem+json` whose `status` is the
//! answer's and whose `type` and `detail` say what was wrong.
//!
//! Each property runs against one gateway of its own (real PostgreSQL and
//! NATS, as every test here). The number of cases comes from
//! `PROPTEST_CASES` (proptest reads it): CI runs the default, `just fuzz`
//! many more. A failing case is shrunk and printed; re-running with
//! `PROPTEST_CASES` and the printed input reproduces it. (cargo-fuzz would
//! need a nightly toolchain, which these machines do not have.)

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use super::*;

/// Cases per property when `PROPTEST_CASES` is not set: enough to cover
/// every branch of the strategies below, small enough that the whole file
/// runs in well under 30 s on two cores.
const DEFAULT_CASES: u32 = 96;

fn runner() -> TestRunner {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    TestRunner::new(config)
}

/// Runs `property` over `strategy` with this test's runtime (the runner is
/// synchronous; each case blocks on its requests).
fn check<S, F, Fut>(strategy: S, property: F) -> Result<()>
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| runner().run(&strategy, |input| handle.block_on(property(input))))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A gateway whose rate limit stays out of the way of thousands of cases.
async fn harness() -> Result<Harness> {
    Harness::with_limits(Limits { rate_per_second: 1e6, burst: 1e6, ..limits() }).await
}

/// The properties every answer has; returns its status.
async fn judge(what: &str, response: reqwest::Result<reqwest::Response>) -> Result<u16, TestCaseError> {
    let response = response.map_err(|e| TestCaseError::fail(format!("{what}: no answer (a panic drops it): {e}")))?;
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if content_type == "text/event-stream" {
        // The event feed, open: its body never ends.
        prop_assert_eq!(status, StatusCode::OK, "{}", what);
        return Ok(status.as_u16());
    }
    let text = response.text().await.map_err(|e| TestCaseError::fail(format!("{what}: body cut: {e}")))?;
    prop_assert!(!status.is_server_error(), "{what} → {status}: {text}");
    if status.is_client_error() {
        prop_assert_eq!(&content_type, "application/problem+json", "{} → {}: {}", what, status, text);
        let problem: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{what} → {status}: not JSON ({e}): {text}")))?;
        prop_assert_eq!(&problem["status"], &json!(status.as_u16()), "{}: {}", what, text);
        prop_assert!(
            problem["type"].as_str().is_some_and(|t| t.starts_with("urn:landlord:problem:")),
            "{what}: {text}"
        );
        prop_assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {text}");
    }
    Ok(status.as_u16())
}

// ---------------------------------------------------------------------------
// Strategies.

/// Bytes a header value may hold (what `HeaderValue::from_bytes` accepts:
/// visible ASCII, space, tab and obs-text), as sent on the wire.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')], 0..max)
}

/// Text for any field: arbitrary Unicode, control and format characters
/// included, or something close to valid.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-z][a-z0-9-]{0,45}",
        1 => Just(String::new()),
        1 => prop::sample::select(vec![
            "acme", "admin", "a--b", "Acme", "1abc", "ab", "\u{202e}gnp.exe", "a\u{0}b", "\u{feff}", "zero\u{200b}width",
            "standard", "stuck", "silo", "pooled", "bridge", "ACTIVE", "x@y.test", "%00", "../..", "'; DROP TABLE x; --",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Any JSON, a few levels deep, with member names the API knows now and
/// then.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(member_name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "key", "display_name", "plan", "tier", "admin", "email", "first_name", "last_name", "domains", "labels",
            "reason", "type", "data", "id", "slug", "name", "role", "organization", "public_user_data", "identifier",
            "user_id", "created_by", "timestamp", "instance_id",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A `POST /v1/tenants` body: mostly shaped like one (each member valid or
/// not), sometimes any JSON.
fn tenant_body() -> impl Strategy<Value = Value> {
    let email = prop_oneof!["[a-z]{1,8}@[a-z]{1,8}\\.test", text()];
    let admin = prop_oneof![
        4 => (email, text(), text()).prop_map(|(email, first, last)| json!({"email": email, "first_name": first, "last_name": last})),
        1 => json_value(),
    ];
    let domain = prop_oneof!["[a-z]{1,10}\\.(test|example)", text()];
    let shaped = (
        prop_oneof!["[a-z][a-z0-9]{2,12}", text()],
        text(),
        prop_oneof![Just("standard".to_owned()), text()],
        proptest::option::of(prop_oneof![Just("silo".to_owned()), text()]),
        admin,
        proptest::collection::vec(domain, 0..4),
        proptest::collection::btree_map(text(), text(), 0..4),
        proptest::option::of((member_name(), json_value())),
    )
        .prop_map(|(key, name, plan, tier, admin, domains, labels, extra)| {
            let mut body = json!({"key": key, "display_name": name, "plan": plan, "admin": admin,
                                  "domains": domains, "labels": labels});
            if let Some(tier) = tier {
                body["tier"] = json!(tier);
            }
            if let Some((name, value)) = extra {
                body[name] = value;
            }
            body
        });
    prop_oneof![4 => shaped, 1 => json_value()]
}

/// A body as bytes: the JSON, or bytes that are no JSON at all.
fn body_bytes(json: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json.prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => Just(Vec::new()),
    ]
}

/// A `Content-Type`: JSON, none, another type, or anything.
fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        6 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        1 => Just(Some(b"text/plain".to_vec())),
        1 => Just(Some(b"application/json; charset=utf-8".to_vec())),
        1 => header_bytes(40).prop_map(Some),
    ]
}

/// Who the caller says it is.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Admin,
    ReadOnly,
    /// `Authorization: <bytes>`.
    Raw(Vec<u8>),
    /// `Bearer <bytes>`.
    Bearer(Vec<u8>),
    /// A token signed with the right key over arbitrary claims.
    Signed {
        exp: u64,
        iat: u64,
        nbf: Option<u64>,
        aud: String,
        iss: String,
        scope: String,
    },
}

fn auth() -> impl Strategy<Value = Auth> {
    let number = prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64), Just(unix_now() as u64 + 600)];
    prop_oneof![
        6 => Just(Auth::Admin),
        1 => Just(Auth::None),
        1 => Just(Auth::ReadOnly),
        1 => header_bytes(80).prop_map(Auth::Raw),
        1 => header_bytes(200).prop_map(Auth::Bearer),
        2 => (
            number.clone(),
            number,
            proptest::option::of(any::<u64>()),
            prop_oneof![Just("landlord".to_owned()), text()],
            prop_oneof![Just("landlord".to_owned()), text()],
            prop_oneof![Just(format!("{READ} {WRITE}")), text()],
        )
            .prop_map(|(exp, iat, nbf, aud, iss, scope)| Auth::Signed { exp, iat, nbf, aud, iss, scope }),
    ]
}

impl Auth {
    fn header(&self, h: &Harness) -> Option<Vec<u8>> {
        match self {
            Auth::None => None,
            Auth::Admin => Some(format!("Bearer {}", h.admin()).into_bytes()),
            Auth::ReadOnly => Some(format!("Bearer {}", h.token(&[READ])).into_bytes()),
            Auth::Raw(bytes) => Some(bytes.clone()),
            Auth::Bearer(bytes) => Some([b"Bearer ".as_slice(), bytes].concat()),
            Auth::Signed { exp, iat, nbf, aud, iss, scope } => {
                let claims = Claims {
                    sub: "prop".into(),
                    iss: iss.clone(),
                    aud: Audience::One(aud.clone()),
                    exp: *exp,
                    iat: *iat,
                    nbf: *nbf,
                    scope: scope.clone(),
                    tenant: None,
                };
                Some(format!("Bearer {}", h.tokens.sign(&claims)).into_bytes())
            }
        }
    }
}

/// A request built from generated parts.
fn request(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, Option<Vec<u8>>)],
    body: Option<Vec<u8>>,
) -> reqwest::RequestBuilder {
    let mut request = h.http.request(method, format!("{}{path}", h.api));
    for (name, value) in headers {
        if let Some(value) = value
            && let Ok(value) = reqwest::header::HeaderValue::from_bytes(value)
        {
            request = request.header(*name, value);
        }
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request
}

/// A path segment: a key, a UUID, or anything, percent-encoded.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z][a-z0-9-]{2,12}",
        1 => Just("00000000-0000-0000-0000-000000000000".to_owned()),
        3 => text().prop_map(|s| encode(&s)),
        1 => proptest::collection::vec(any::<u8>(), 1..8)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
    ]
}

// ---------------------------------------------------------------------------
// Properties.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_tenant_request_is_answered_and_every_refusal_is_a_problem() -> Result<()> {
    let h = harness().await?;
    let idempotency = prop_oneof![
        3 => "[!-~]{1,40}".prop_map(|s| Some(s.into_bytes())),
        1 => Just(None),
        1 => header_bytes(230).prop_map(Some),
    ];
    let strategy = (auth(), idempotency, content_type(), body_bytes(tenant_body()));
    check(strategy, |(auth, idempotency, content_type, body)| {
        let h = &h;
        async move {
            let headers =
                [("authorization", auth.header(h)), ("idempotency-key", idempotency), ("content-type", content_type)];
            let status = judge(
                "POST /v1/tenants",
                request(h, reqwest::Method::POST, "/v1/tenants", &headers, Some(body)).send().await,
            )
            .await?;
            prop_assert!([202, 400, 401, 403, 409, 413, 415, 422].contains(&status), "POST /v1/tenants → {status}");
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_query_path_cancel_or_retry_is_answered_and_every_refusal_is_a_problem() -> Result<()> {
    let h = harness().await?;
    h.create("acme", "standard", json!({})).await?;
    let query_value = prop_oneof![
        text(),
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,30}",
        // Cursors: the shape handed out, with any time, or any JSON.
        (any::<i128>(), prop_oneof![Just("00000000-0000-0000-0000-000000000000".to_owned()), text()]).prop_map(
            |(t, id)| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!(r#"{{"t":{t},"id":{}}}"#, Value::String(id)))
            }
        ),
        json_value().prop_map(|v| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        }),
    ];
    let name = prop_oneof![
        4 => prop::sample::select(vec!["status", "plan", "limit", "cursor", "state"]).prop_map(str::to_owned),
        1 => text(),
    ];
    let query = proptest::collection::vec((name, query_value), 0..4);
    let target = prop_oneof![
        Just("/v1/tenants".to_owned()),
        segment().prop_map(|s| format!("/v1/tenants/{s}")),
        Just("/v1/clerk/organizations".to_owned()),
        segment().prop_map(|s| format!("/v1/tenants/{s}/cancel")),
        segment().prop_map(|s| format!("/v1/tenants/{s}/retry")),
    ];
    let cancel_body = prop_oneof![
        json_value().prop_map(|v| json!({"reason": v}).to_string().into_bytes()),
        body_bytes(json_value()),
    ];
    let strategy = (auth(), target, query, content_type(), cancel_body);
    check(strategy, |(auth, target, query, content_type, body)| {
        let h = &h;
        async move {
            let query: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            let path = format!("{target}?{}", query.join("&"));
            let post = target.ends_with("/cancel") || target.ends_with("/retry");
            let headers = [("authorization", auth.header(h)), ("content-type", content_type)];
            let sent = if post {
                request(h, reqwest::Method::POST, &path, &headers, Some(body))
            } else {
                request(h, reqwest::Method::GET, &path, &headers, None)
            };
            judge(&format!("{} {path}", if post { "POST" } else { "GET" }), sent.send().await).await?;
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_event_feed_request_is_answered_and_every_refusal_is_a_problem() -> Result<()> {
    let h = harness().await?;
    let sequence = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        Just(u64::MAX.to_string().into_bytes()),
        Just((u64::MAX - 1).to_string().into_bytes()),
        any::<i128>().prop_map(|n| n.to_string().into_bytes()),
        "[ 0-9+-]{0,25}".prop_map(String::into_bytes),
        header_bytes(30),
    ];
    let strategy = (
        auth(),
        proptest::option::of(sequence.clone()),
        proptest::option::of(sequence),
        proptest::option::of(prop_oneof!["[a-z][a-z0-9-]{2,12}", text()]),
        proptest::option::of(prop_oneof![Just("step_failed".to_owned()), text()]),
    );
    check(strategy, |(auth, header, query_id, tenant, kind)| {
        let h = &h;
        async move {
            let mut query = Vec::new();
            if let Some(id) = &query_id {
                query.push(format!("last_event_id={}", encode(&String::from_utf8_lossy(id))));
            }
            if let Some(tenant) = &tenant {
                query.push(format!("tenant={}", encode(tenant)));
            }
            if let Some(kind) = &kind {
                query.push(format!("type={}", encode(kind)));
            }
            let path = format!("/v1/events?{}", query.join("&"));
            let headers = [("authorization", auth.header(h)), ("last-event-id", header)];
            judge(&format!("GET {path}"), request(h, reqwest::Method::GET, &path, &headers, None).send().await).await?;
            Ok(())
        }
    })
}

/// A Clerk delivery's body: shaped like the events the bridge reads (with
/// any member valid or not), or any JSON.
fn clerk_body() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("organization.created".to_owned()),
        Just("organizationMembership.created".to_owned()),
        Just("user.created".to_owned()),
        text(),
    ];
    let shaped = (kind, text(), text(), prop_oneof![Just("org:admin".to_owned()), text()], json_value(), any::<i64>())
        .prop_map(|(kind, id, slug, role, extra, timestamp)| {
            json!({"type": kind, "object": "event", "timestamp": timestamp,
                   "data": {"id": id, "slug": slug, "name": slug, "role": role, "created_by": extra,
                            "organization": {"id": id},
                            "public_user_data": {"user_id": "user_1", "identifier": format!("{id}@x.test")}}})
        });
    prop_oneof![3 => shaped, 1 => json_value()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_webhook_delivery_is_answered_and_every_refusal_is_a_problem() -> Result<()> {
    let h = harness().await?;
    let timestamp = prop_oneof![
        4 => Just(None),
        1 => any::<i64>().prop_map(Some),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1]).prop_map(Some),
    ];
    let raw_header = proptest::option::of(header_bytes(60));
    let strategy = (
        prop_oneof![3 => "msg_[a-zA-Z0-9]{1,20}".prop_map(|s| s.into_bytes()), 1 => header_bytes(40)],
        timestamp,
        // Signed with our secret, or a raw svix-signature.
        prop_oneof![3 => Just(None), 1 => raw_header.prop_map(Some)],
        proptest::option::of(header_bytes(30)),
        content_type(),
        body_bytes(clerk_body()),
    );
    check(strategy, |(svix_id, timestamp, signature, raw_timestamp, content_type, body)| {
        let h = &h;
        async move {
            let now = unix_now();
            let stamp = timestamp.unwrap_or(now);
            let timestamp_header = raw_timestamp.unwrap_or_else(|| stamp.to_string().into_bytes());
            let signature = match signature {
                Some(raw) => raw,
                None => Some(h.clerk.sign(&String::from_utf8_lossy(&svix_id), stamp, &body).into_bytes()),
            };
            let headers = [
                ("svix-id", Some(svix_id)),
                ("svix-timestamp", Some(timestamp_header)),
                ("svix-signature", signature),
                ("content-type", content_type),
            ];
            let sent = request(h, reqwest::Method::POST, "/v1/webhooks/clerk", &headers, Some(body));
            let status = judge("POST /v1/webhooks/clerk", sent.send().await).await?;
            prop_assert!([200, 400, 401, 413, 415].contains(&status), "webhook → {status}");
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_on_any_route_is_answered_and_every_refusal_is_a_problem() -> Result<()> {
    let h = harness().await?;
    let method = prop_oneof![
        prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]).prop_map(str::to_owned),
        "[A-Z]{1,10}",
    ];
    let path = prop_oneof![
        prop::sample::select(vec![
            "/v1/tenants",
            "/v1/tenants/acme",
            "/v1/tenants/acme/cancel",
            "/v1/tenants/acme/retry",
            "/v1/events",
            "/v1/webhooks/clerk",
            "/v1/clerk/organizations",
            "/v1/openapi.json",
            "/",
            "/v1",
            "/v2/tenants",
        ])
        .prop_map(str::to_owned),
        segment().prop_map(|s| format!("/{s}")),
    ];
    let strategy = (method, path, auth(), proptest::option::of(body_bytes(json_value())));
    check(strategy, |(method, path, auth, body)| {
        let h = &h;
        async move {
            let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else { return Ok(()) };
            // HEAD answers have no body to judge; CONNECT is not a request
            // for a path.
            if method == reqwest::Method::HEAD || method == reqwest::Method::CONNECT {
                return Ok(());
            }
            let headers = [("authorization", auth.header(h)), ("content-type", Some(b"application/json".to_vec()))];
            judge(&format!("{method} {path}"), request(h, method, &path, &headers, body).send().await).await?;
            Ok(())
        }
    })
}
