//! Regression tests for what a hostile pass over the running stack broke
//! (issue 23): one test per finding, each over the class, not only the
//! example the issue gives.

use futures_util::StreamExt as _;
use landlord_contract::Action;

use super::*;

/// A request with an arbitrary method, headers and body, as sent.
async fn send(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer> {
    let mut request = h.http.request(method, format!("{}{path}", h.api));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    Answer::of(request.send().await?).await
}

#[tokio::test]
async fn numbers_from_outside_are_checked_not_wrapped() -> Result<()> {
    let h = Harness::new().await?;
    let auth = format!("Bearer {}", h.admin());
    // The issue's example: the last u64 has no next sequence.
    let answer = send(
        &h,
        reqwest::Method::GET,
        "/v1/events",
        &[("authorization", &auth), ("last-event-id", &u64::MAX.to_string())],
        None,
    )
    .await?;
    answer.problem(StatusCode::BAD_REQUEST, "last-event-id");
    assert_eq!(answer.body["rule"], "last_event_id.out_of_range");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("Last-Event-ID"), "{answer:?}");
    let answer = send(
        &h,
        reqwest::Method::GET,
        &format!("/v1/events?last_event_id={}", u64::MAX),
        &[("authorization", &auth)],
        None,
    )
    .await?;
    answer.problem(StatusCode::BAD_REQUEST, "last-event-id");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("last_event_id"), "{answer:?}");
    for raw in ["-1", "18446744073709551616", "99999999999999999999999"] {
        send(&h, reqwest::Method::GET, "/v1/events", &[("authorization", &auth), ("last-event-id", raw)], None)
            .await?
            .problem(StatusCode::BAD_REQUEST, "last-event-id");
    }
    // One before the end is a valid (if empty) resume point.
    let feed = h
        .http
        .get(format!("{}/v1/events", h.api))
        .bearer_auth(h.admin())
        .header("Last-Event-ID", (u64::MAX - 1).to_string())
        .send()
        .await?;
    assert_eq!(feed.status(), StatusCode::OK);
    drop(feed);

    // svix-timestamp at either end of i64: refused as off, before any
    // arithmetic could overflow.
    let body = json!({"type": "user.created", "data": {"id": "u"}}).to_string();
    for stamp in [i64::MIN, i64::MAX] {
        h.deliver("msg_edge", stamp, &h.clerk.sign("msg_edge", stamp, body.as_bytes()), &body)
            .await?
            .problem(StatusCode::UNAUTHORIZED, "webhook-timestamp");
    }

    // A signed token whose exp is the last u64 is far future, not expired
    // by wrapping; nbf likewise.
    let mut far = claims_for(&[READ]);
    far.exp = u64::MAX;
    let (status, _) = h.get("/v1/tenants", &h.tokens.sign(&far)).await?;
    assert_eq!(status, StatusCode::OK);
    far.nbf = Some(u64::MAX);
    let answer = h.answer("/v1/tenants", &h.tokens.sign(&far)).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-not-yet-valid");

    // Cursors carry a time: one before 1970 (which PostgreSQL may not hold)
    // is refused as a cursor, one far in the future is an empty page.
    use base64::Engine as _;
    // Written by hand: i128 beyond i64 is not a serde_json Value.
    let cursor = |t: i128| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"t":{t},"id":"00000000-0000-0000-0000-000000000000"}}"#))
    };
    for t in [-377_705_116_800_000_000_000_i128, i128::MIN, i128::MAX, -1] {
        h.answer(&format!("/v1/tenants?cursor={}", cursor(t)), &h.admin())
            .await?
            .problem(StatusCode::BAD_REQUEST, "cursor");
    }
    let far_future =
        h.answer(&format!("/v1/tenants?cursor={}", cursor(253_402_300_799_000_000_000)), &h.admin()).await?;
    assert_eq!(far_future.status, StatusCode::OK, "{far_future:?}");
    // Text PostgreSQL cannot hold (NUL) in a filter or a path: a 4xx, not a
    // database error answered 503.
    h.answer("/v1/tenants?plan=a%00b", &h.admin()).await?.problem(StatusCode::BAD_REQUEST, "plan");
    h.answer("/v1/tenants/a%00b", &h.admin()).await?.problem(StatusCode::NOT_FOUND, "not-found");
    h.answer("/v1/tenants?limit=99999999999999999999", &h.admin()).await?.problem(StatusCode::BAD_REQUEST, "limit");
    h.answer("/v1/tenants?limit=-1", &h.admin()).await?.problem(StatusCode::BAD_REQUEST, "limit");
    // A signed delivery with a NUL in it is refused, not a 503 that Svix
    // would retry for a day.
    let nul = json!({"type": "user.created", "data": {"id": "u\u{0}v"}});
    let answer = h.webhook("msg_nul", &nul).await?;
    answer.problem(StatusCode::BAD_REQUEST, "malformed-body");
    assert_eq!(answer.body["rule"], "body.nul_character");
    Ok(())
}

fn claims_for(scopes: &[&str]) -> Claims {
    let now = unix_now() as u64;
    Claims {
        sub: "edge".into(),
        iss: "landlord".into(),
        aud: Audience::One("landlord".into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        scope: scopes.join(" "),
        tenant: None,
    }
}

/// A tenant body with these domains.
fn with_domains(key: &str, labels: Value, domains: &[&str]) -> Value {
    let mut body = tenant(key, "standard", labels);
    body["domains"] = json!(domains);
    body
}

#[tokio::test]
async fn a_domain_belongs_to_one_live_tenant_at_a_time() -> Result<()> {
    let h = &Harness::new().await?;
    let admin = h.admin();
    let create = |key: &str, body: Value| {
        let admin = admin.clone();
        let key = key.to_owned();
        async move { h.post("/v1/tenants", Some(&admin), Some(&format!("idem-{key}")), &body).await }
    };
    let first = create("alpha", with_domains("alpha", json!({}), &["shared.example.test"])).await?;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    h.until_status("alpha", "ACTIVE").await?;
    // Stored in another case (the intake takes only lower case now; older
    // rows may differ): compared lower-cased all the same.
    sqlx::query("UPDATE tenants SET domains = '{Shared.Example.TEST}' WHERE key = 'alpha'").execute(&h.pool).await?;
    // Another tenant listing it: 409 naming the rule and the domain, never
    // the tenant that holds it.
    let second = create("bravo", with_domains("bravo", json!({}), &["bravo.test", "shared.example.test"])).await?;
    second.problem(StatusCode::CONFLICT, "domain-taken");
    assert_eq!(second.body["rule"], "tenant.domain_taken");
    let detail = second.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("shared.example.test") && !detail.contains("alpha"), "{second:?}");
    // Nothing was recorded for the refused request: the same key, without
    // the taken domain, is a new request and accepted.
    let fresh = create("bravo", with_domains("bravo", json!({}), &["bravo.test"])).await?;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{fresh:?}");

    // A FAILED tenant no longer holds its domains...
    let gone = create("gamma", with_domains("gamma", json!({"script.s1": "fail-once"}), &["gone.test"])).await?;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{gone:?}");
    h.until_status("gamma", "FAILED").await?;
    let taker = create("delta", with_domains("delta", json!({}), &["gone.test"])).await?;
    assert_eq!(taker.status, StatusCode::ACCEPTED, "{taker:?}");
    h.until_status("delta", "ACTIVE").await?;
    // ...and cannot take them back by a retry while another tenant has them.
    let retry = h.post("/v1/tenants/gamma/retry", Some(&admin), None, &json!({})).await?;
    retry.problem(StatusCode::CONFLICT, "domain-taken");
    assert_eq!(retry.body["rule"], "tenant.domain_taken");
    // A repeat of an accepted request is still its saved answer.
    let repeat = create("delta", with_domains("delta", json!({}), &["gone.test"])).await?;
    assert_eq!(repeat.status, StatusCode::ACCEPTED, "{repeat:?}");
    Ok(())
}

#[tokio::test]
async fn an_organization_whose_key_is_taken_gets_a_suffixed_key_or_is_shown_rejected() -> Result<()> {
    let h = Harness::new().await?;
    let reader = h.token(&[READ]);
    h.create("acme", "standard", json!({})).await?;
    h.until_status("acme", "ACTIVE").await?;
    // The slug's key is taken by an API tenant: the organization gets
    // acme-2, and is linked to its own tenant, not to acme.
    h.webhook("k1", &organization("org_1", "acme")).await?;
    let answer = h.webhook("k2", &membership("org_1", "one@acme.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    assert_eq!(answer.body["organization"]["tenant_key"], "acme-2", "{answer:?}");
    let made = h.until_status("acme-2", "ACTIVE").await?;
    assert_eq!(made["labels"]["clerk.organization_id"], "org_1");
    assert_eq!(made["admin"]["email"], "one@acme.test");
    // A second organization with the same slug (other case): acme-3, even
    // before acme-2's tenant row exists (the organization holds the key).
    h.webhook("k3", &organization("org_2", "ACME")).await?;
    let answer = h.webhook("k4", &membership("org_2", "two@acme.test")).await?;
    assert_eq!(answer.body["organization"]["tenant_key"], "acme-3", "{answer:?}");
    h.until_status("acme-3", "ACTIVE").await?;
    // The API cannot take a key an organization was given.
    let answer =
        h.post("/v1/tenants", Some(&h.admin()), Some("idem-acme-3"), &tenant("acme-3", "standard", json!({}))).await?;
    answer.problem(StatusCode::CONFLICT, "tenant-key-taken");

    // The race the suffix cannot close: a request that lost its key at the
    // orchestrator's intake. Shown rejected with the rule, not linked.
    sqlx::query(
        "INSERT INTO clerk_organizations (org_id, slug, name, tenant_key, admin_email, organization_at, admin_at,
                                          requested_at)
         VALUES ('org_lost', 'acme', 'Lost', 'acme', 'x@lost.test', now(), now(), now())",
    )
    .execute(&h.pool)
    .await?;
    let (status, listed) = h.get("/v1/clerk/organizations", &reader).await?;
    assert_eq!(status, StatusCode::OK);
    let items = listed["items"].as_array().context("items")?;
    let by_id = |id: &str| items.iter().find(|o| o["org_id"] == id).cloned().unwrap_or(Value::Null);
    let lost = by_id("org_lost");
    assert_eq!(lost["state"], "rejected", "{lost}");
    assert_eq!(lost["rejected_rule"], "tenant_key.duplicate", "{lost}");
    assert!(lost["tenant_key"].is_null(), "{lost}");
    assert!(lost["rejected_reason"].as_str().is_some_and(|r| r.contains("acme")), "{lost}");
    assert_eq!(by_id("org_1")["state"], "requested");
    assert_eq!(by_id("org_1")["tenant_key"], "acme-2");
    let (_, rejected) = h.get("/v1/clerk/organizations?state=rejected", &reader).await?;
    let ids: Vec<&str> =
        rejected["items"].as_array().into_iter().flatten().filter_map(|o| o["org_id"].as_str()).collect();
    assert_eq!(ids, ["org_lost"]);
    // Exactly one tenant per key, and no request was rejected at intake.
    let tenants: Vec<String> = sqlx::query_scalar("SELECT key FROM tenants ORDER BY key").fetch_all(&h.pool).await?;
    assert_eq!(tenants, ["acme", "acme-2", "acme-3"]);
    Ok(())
}

#[tokio::test]
async fn only_deliveries_whose_signature_checks_are_exempt_from_the_rate_limit() -> Result<()> {
    let h = Harness::with_limits(Limits { rate_per_second: 0.05, burst: 3.0, ..limits() }).await?;
    let body = json!({"type": "user.created", "data": {"id": "user_1"}}).to_string();
    let now = unix_now();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let answer = if i % 2 == 0 {
            // No Svix headers at all.
            send(&h, reqwest::Method::POST, "/v1/webhooks/clerk", &[("content-type", "application/json")], Some(&body))
                .await?
        } else {
            h.deliver(&format!("forged_{i}"), now, "v1,bm90IGEgc2lnbmF0dXJl", &body).await?
        };
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            answer.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
            assert!(answer.headers.get("retry-after").is_some(), "{answer:?}");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [400, 401, 400, 429, 429, 429, 429, 429, 429, 429, 429, 429]);
    // The flood did not lock out signed deliveries from the same address.
    for i in 0..5 {
        let event = json!({"type": "user.created", "data": {"id": format!("signed_{i}")}});
        let answer = h.webhook(&format!("signed_{i}"), &event).await?;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    // The failures counted against the address: its API requests are
    // limited too now.
    let answer = h.answer("/v1/tenants", &h.admin()).await?;
    answer.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    Ok(())
}

#[tokio::test]
async fn every_error_is_problem_json() -> Result<()> {
    let h = Harness::new().await?;
    let auth = format!("Bearer {}", h.admin());
    let json_type = ("content-type", "application/json");
    // Too large: 413, naming the limit.
    let big = json!({"key": "x".repeat(20_000)}).to_string();
    let answer = send(
        &h,
        reqwest::Method::POST,
        "/v1/tenants",
        &[("authorization", &auth), ("idempotency-key", "k"), json_type],
        Some(&big),
    )
    .await?;
    answer.problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains(&(16 * 1024).to_string()), "{answer:?}");
    // Wrong method: 405 with Allow kept.
    for (method, path, allowed) in [
        (reqwest::Method::PUT, "/v1/tenants", ["GET", "POST"].as_slice()),
        (reqwest::Method::PUT, "/v1/tenants/acme", &["GET", "PATCH", "DELETE"]),
        (reqwest::Method::GET, "/v1/tenants/acme/cancel", &["POST"]),
        (reqwest::Method::PATCH, "/v1/events", &["GET"]),
        (reqwest::Method::GET, "/v1/webhooks/clerk", &["POST"]),
    ] {
        let answer = send(&h, method.clone(), path, &[("authorization", &auth)], None).await?;
        answer.problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
        let allow = answer.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        for verb in allowed {
            assert!(allow.contains(verb), "{method} {path}: Allow {allow:?}");
        }
        assert!(answer.body["detail"].as_str().unwrap_or("").contains(method.as_str()), "{answer:?}");
    }
    // Unknown routes, with and without a token.
    for path in ["/nope", "/v1", "/v1/tenants/a/b/c", "/v1/events/x"] {
        send(&h, reqwest::Method::GET, path, &[], None).await?.problem(StatusCode::NOT_FOUND, "not-found");
        send(&h, reqwest::Method::POST, path, &[("authorization", &auth)], Some("{}"))
            .await?
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    // A body not declared JSON is 415, though it is JSON.
    let good = tenant("plain", "standard", json!({})).to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")]
    {
        let mut headers = vec![("authorization", auth.as_str()), ("idempotency-key", "plain")];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let answer = send(&h, reqwest::Method::POST, "/v1/tenants", &headers, Some(&good)).await?;
        answer.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        assert_eq!(answer.body["rule"], "content_type.json");
    }
    let accepted: i64 = sqlx::query_scalar("SELECT count(*) FROM api_requests").fetch_one(&h.pool).await?;
    assert_eq!(accepted, 0, "a body not declared JSON was read");
    send(
        &h,
        reqwest::Method::POST,
        "/v1/tenants/plain/cancel",
        &[("authorization", &auth), ("content-type", "text/plain")],
        Some(r#"{"reason": "x"}"#),
    )
    .await?
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    // A signed delivery not declared JSON.
    let event = json!({"type": "user.created", "data": {"id": "u"}}).to_string();
    let now = unix_now();
    let signature = h.clerk.sign("plain_1", now, event.as_bytes());
    let stamp = now.to_string();
    send(
        &h,
        reqwest::Method::POST,
        "/v1/webhooks/clerk",
        &[
            ("svix-id", "plain_1"),
            ("svix-timestamp", &stamp),
            ("svix-signature", &signature),
            ("content-type", "text/plain"),
        ],
        Some(&event),
    )
    .await?
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    // Path and query refusals of axum's own.
    send(&h, reqwest::Method::GET, "/v1/tenants/%FF%FE", &[("authorization", &auth)], None)
        .await?
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    send(&h, reqwest::Method::POST, "/v1/tenants/%FF/retry", &[("authorization", &auth)], None)
        .await?
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    h.answer("/v1/tenants?unknown=1", &h.admin()).await?.problem(StatusCode::BAD_REQUEST, "query");
    h.answer("/v1/events?limit=1", &h.admin()).await?.problem(StatusCode::BAD_REQUEST, "query");
    Ok(())
}

#[tokio::test]
async fn a_cancel_names_the_saga_running_when_it_was_accepted() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    let cancel = Action::ORCHESTRATOR_CANCEL;
    let mut commands = h.jetstream.client().subscribe(h.namespace.command_subject(cancel.service, cancel.name)).await?;
    h.create("stuck", "stuck", json!({"script.s2": "hold"})).await?;
    let running = eventually("s2 to be running", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        (t["saga"]["steps"][1]["state"] == "running").then(|| t["saga"]["id"].as_str().map(str::to_owned)).flatten()
    })
    .await?;
    let answer = h.post("/v1/tenants/stuck/cancel", Some(&admin), None, &json!({})).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let message = tokio::time::timeout(WAIT, commands.next()).await?.context("no cancel published")?;
    let command = <pb::CancelSaga as prost::Message>::decode(message.payload)?;
    assert_eq!(command.saga_id, running);
    assert_eq!(command.tenant_key, "stuck");
    // Released only once the orchestrator has taken the cancel: a step
    // answering first would finish the saga before it.
    eventually("the cancel to be recorded", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        t["saga"]["cancel_reason"].is_string().then_some(())
    })
    .await?;
    h.release.send_replace(true);
    h.until_status("stuck", "CANCELLED").await?;
    Ok(())
}
