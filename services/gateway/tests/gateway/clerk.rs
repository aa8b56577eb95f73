//! The Clerk bridge: signatures, the organization and its admin in either
//! order, repeated deliveries, and the Backend API contract double.

use super::*;

#[tokio::test]
async fn webhook_signatures_timestamps_and_replays_follow_the_design() -> Result<()> {
    let h = Harness::new().await?;
    let event = json!({"type": "user.created", "object": "event", "data": {"id": "user_9"}});
    let body = event.to_string();
    let now = unix_now();
    let good = h.clerk.sign("msg_1", now, body.as_bytes());
    let accepted = h.deliver("msg_1", now, &good, &body).await?;
    assert_eq!((accepted.status, &accepted.body["delivery"]), (StatusCode::OK, &json!("accepted")));
    let replay = h.deliver("msg_1", now, &good, &body).await?;
    assert_eq!((replay.status, &replay.body["delivery"]), (StatusCode::OK, &json!("duplicate")));
    let subject = format!("{}.v1.events._clerk.user_created", h.namespace.root());
    // Published right after the answer (which does not wait for it).
    h.until_count(&subject, 1).await?;
    // Republished as protobuf, the delivery's JSON carried verbatim.
    let stream = h.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    let published = stream.get_last_raw_message_by_subject(&subject).await?;
    let ce_type = published.headers.get("ce-type").map(|v| v.as_str().to_owned());
    assert_eq!(ce_type.as_deref(), Some("landlord.v1.ClerkEvent"));
    let event = <pb::ClerkEvent as prost::Message>::decode(published.payload)?;
    assert_eq!((event.r#type.as_str(), event.svix_id.as_str()), ("user.created", "msg_1"));
    assert_eq!((event.object_id.as_str(), event.delivered_at), ("user_9", now));
    assert_eq!(event.data, body.as_bytes());

    let tampered = h.deliver("msg_2", now, &good, &body.replace("user_9", "user_8")).await?;
    tampered.problem(StatusCode::UNAUTHORIZED, "webhook-signature");
    let stale = now - 360;
    h.deliver("msg_3", stale, &h.clerk.sign("msg_3", stale, body.as_bytes()), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "webhook-timestamp");
    let ahead = now + 360;
    h.deliver("msg_4", ahead, &h.clerk.sign("msg_4", ahead, body.as_bytes()), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "webhook-timestamp");
    let old = SigningSecret::parse(OLD_WEBHOOK_SECRET).map_err(anyhow::Error::msg)?;
    let only_old = old.sign("msg_5", now, body.as_bytes());
    h.deliver("msg_5", now, &only_old, &body).await?.problem(StatusCode::UNAUTHORIZED, "webhook-signature");
    let rotated = format!("{only_old} v1,bm90IGEgc2lnbmF0dXJl {}", h.clerk.sign("msg_5", now, body.as_bytes()));
    let answer = h.deliver("msg_5", now, &rotated, &body).await?;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let missing = h.http.post(format!("{}/v1/webhooks/clerk", h.api)).body(body.clone()).send().await?;
    Answer::of(missing).await?.problem(StatusCode::BAD_REQUEST, "webhook-headers");
    // Refused deliveries left no trace.
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM webhook_deliveries ORDER BY svix_id").fetch_all(&h.pool).await?;
    assert_eq!(recorded, ["msg_1", "msg_5"]);
    Ok(())
}

#[tokio::test]
async fn an_organization_waits_for_its_admin_in_either_order() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    // Organization first: it waits, and is reported as waiting.
    let answer = h.webhook("m1", &organization("org_a", "Alpha_Org")).await?;
    assert_eq!(answer.body["organization"]["state"], "waiting_for_admin", "{answer:?}");
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &h.token(&[READ])).await?;
    assert_eq!(waiting["items"][0]["org_id"], "org_a", "{waiting}");
    assert_eq!(waiting["items"][0]["overdue"], false);
    let answer = h.webhook("m2", &membership("org_a", "grace@alpha.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    let tenant = h.until_status("alpha-org", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "grace@alpha.test");
    assert_eq!(tenant["display_name"], "Org Alpha_Org");
    assert_eq!(tenant["labels"]["clerk.organization_id"], "org_a");
    // Admin first.
    h.webhook("m3", &membership("org_b", "ada@bravo.test")).await?;
    let answer = h.webhook("m4", &organization("org_b", "bravo")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    h.until_status("bravo", "ACTIVE").await?;
    // A slug that cannot be a key is rejected with the rule it broke.
    h.webhook("m5", &organization("org_c", "admin")).await?;
    let answer = h.webhook("m6", &membership("org_c", "x@c.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "rejected", "{answer:?}");
    assert_eq!(answer.body["organization"]["rejected_rule"], "tenant_key.reserved");
    // A member who is not an admin does not make a tenant.
    h.webhook("m7", &organization("org_d", "delta")).await?;
    let mut member = membership("org_d", "m@d.test");
    member["data"]["role"] = json!("org:member");
    let answer = h.webhook("m8", &member).await?;
    assert!(answer.body.get("organization").is_none(), "{answer:?}");
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &admin).await?;
    let ids: Vec<&str> =
        waiting["items"].as_array().into_iter().flatten().filter_map(|o| o["org_id"].as_str()).collect();
    assert_eq!(ids, ["org_d"]);
    let (status, _) = h.get("/v1/clerk/organizations?state=asleep", &admin).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Every delivery is published for later consumers.
    h.until_count(&format!("{}.v1.events._clerk.>", h.namespace.root()), 8).await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_and_repeated_deliveries_make_one_tenant() -> Result<()> {
    let h = Arc::new(Harness::new().await?);
    let org = organization("org_x", "xray");
    let body = org.to_string();
    let now = unix_now();
    let signature = h.clerk.sign("same", now, body.as_bytes());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (h, body, signature) = (h.clone(), body.clone(), signature.clone());
        tasks.push(tokio::spawn(async move { h.deliver("same", now, &signature, &body).await }));
    }
    for i in 0..10 {
        let h = h.clone();
        let event = if i % 2 == 0 { organization("org_x", "xray") } else { membership("org_x", "admin@xray.test") };
        tasks.push(tokio::spawn(async move { h.webhook(&format!("distinct-{i}"), &event).await }));
    }
    let mut duplicates = 0;
    for task in tasks {
        let answer = task.await??;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        if answer.body["delivery"] == "duplicate" {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 99);
    h.until_status("xray", "ACTIVE").await?;
    assert_eq!(h.count(&h.requested_subject("xray")).await?, 1);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&h.pool).await?;
    assert_eq!(tenants, 1);
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&h.pool).await?;
    assert_eq!(sagas, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Clerk's Backend API.

/// A contract double of Clerk's Backend API, as far as the gateway uses it:
/// `GET /v1/users/{user_id}` with `Authorization: Bearer <secret key>`
/// answers Clerk's documented user object (`id`, `first_name`,
/// `last_name`, `primary_email_address_id`, `email_addresses[]` of
/// `{id, object, email_address, verification, linked_to}`, …), 404 with
/// Clerk's error shape (`errors[]` of `{message, long_message, code}`) for
/// an unknown user, 401 for a wrong secret key; a user can be scripted to
/// answer some statuses first (500, 429, …). It records every call.
struct ClerkBackendDouble {
    url: String,
    state: Arc<Mutex<ClerkState>>,
    stop: CancellationToken,
}

#[derive(Default)]
struct ClerkState {
    users: HashMap<String, Value>,
    scripts: HashMap<String, std::collections::VecDeque<u16>>,
    calls: Vec<String>,
    unauthorized: usize,
}

impl Drop for ClerkBackendDouble {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn clerk_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = json!({"errors": [{"message": message, "long_message": message, "code": code}],
                      "clerk_trace_id": "trace_double"});
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

impl ClerkBackendDouble {
    async fn start() -> Result<Self> {
        use axum::response::IntoResponse as _;
        let state = Arc::new(Mutex::new(ClerkState::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/v1/users/{user_id}",
            axum::routing::get(
                move |axum::extract::Path(user_id): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                    let shared = shared.clone();
                    async move {
                        let Ok(mut state) = shared.lock() else { return clerk_error(500, "internal", "poisoned") };
                        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
                        if bearer != Some(&format!("Bearer {CLERK_SECRET_KEY}")) {
                            state.unauthorized += 1;
                            return clerk_error(401, "authentication_invalid", "The secret key is not valid");
                        }
                        state.calls.push(user_id.clone());
                        if let Some(status) = state.scripts.get_mut(&user_id).and_then(|s| s.pop_front()) {
                            return clerk_error(status, "scripted", "A scripted failure of the contract double");
                        }
                        match state.users.get(&user_id) {
                            Some(user) => axum::Json(user.clone()).into_response(),
                            None => clerk_error(404, "resource_not_found", "User not found"),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { until.cancelled().await }).await;
        });
        Ok(Self { url, state, stop })
    }

    /// A user as Clerk describes one: a second, non-primary address first.
    fn add_user(&self, id: &str, email: &str, first: &str, last: &str) {
        let address = |n: u32, email: &str| {
            json!({"id": format!("idn_{id}_{n}"), "object": "email_address", "email_address": email,
                   "reserved": false, "linked_to": [],
                   "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null}})
        };
        let user = json!({
            "id": id, "object": "user", "username": null, "first_name": first, "last_name": last,
            "image_url": "https://img.clerk.com/x", "has_image": false,
            "primary_email_address_id": format!("idn_{id}_2"), "primary_phone_number_id": null,
            "primary_web3_wallet_id": null, "password_enabled": true, "two_factor_enabled": false,
            "email_addresses": [address(1, &format!("old.{email}")), address(2, email)],
            "phone_numbers": [], "web3_wallets": [], "external_accounts": [],
            "public_metadata": {}, "private_metadata": {}, "unsafe_metadata": {},
            "external_id": null, "last_sign_in_at": null, "banned": false, "locked": false,
            "created_at": 1_716_883_200_000_i64, "updated_at": 1_716_883_200_000_i64,
        });
        if let Ok(mut state) = self.state.lock() {
            state.users.insert(id.to_owned(), user);
        }
    }

    fn script(&self, id: &str, statuses: &[u16]) {
        if let Ok(mut state) = self.state.lock() {
            state.scripts.insert(id.to_owned(), statuses.iter().copied().collect());
        }
    }

    fn calls(&self, id: &str) -> usize {
        self.state.lock().map(|s| s.calls.iter().filter(|c| *c == id).count()).unwrap_or(0)
    }

    fn unauthorized(&self) -> usize {
        self.state.lock().map(|s| s.unauthorized).unwrap_or(0)
    }
}

#[tokio::test]
async fn the_clerk_backend_api_contract_double_supplies_a_missing_admin_and_one_tenant_results() -> Result<()> {
    let clerk = ClerkBackendDouble::start().await?;
    clerk.add_user("user_lima", "lin@lima.test", "Lin", "Ma");
    clerk.add_user("user_flaky", "flo@flaky.test", "Flo", "Ky");
    clerk.script("user_flaky", &[500, 503]);
    // Over HTTPS, as Clerk is reached: a certificate under the test CA.
    let https = TlsFront::start(&clerk.url).await?;
    let roots = ExtraRoots::from_pem_file(&tls::ca_file()).map_err(anyhow::Error::msg)?;
    let h = Harness::build(Setup { clerk_api: Some(https.url.clone()), roots, ..Setup::default() }).await?;

    // No membership event comes: the lookup names the admin. The webhook
    // was answered before it (the organization was still waiting then).
    let answer = h.webhook("l1", &organization_by("org_lima", "lima", "user_lima")).await?;
    assert_eq!(answer.body["organization"]["state"], "waiting_for_admin", "{answer:?}");
    let tenant = h.until_status("lima", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "lin@lima.test", "the primary address, not the first one");
    assert_eq!(
        (tenant["admin"]["first_name"].as_str(), tenant["admin"]["last_name"].as_str()),
        (Some("Lin"), Some("Ma"))
    );
    // The membership arriving too changes nothing: one tenant.
    let answer = h.webhook("l2", &membership("org_lima", "someone-else@lima.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    assert_eq!(answer.body["organization"]["admin_email"], "lin@lima.test");
    assert_eq!(h.count(&h.requested_subject("lima")).await?, 1);
    assert_eq!(clerk.calls("user_lima"), 1);

    // 500, then 503, then the user: retried with backoff.
    h.webhook("f1", &organization_by("org_flaky", "flaky", "user_flaky")).await?;
    let tenant = h.until_status("flaky", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "flo@flaky.test");
    assert_eq!(clerk.calls("user_flaky"), 3);
    assert_eq!(h.count(&h.requested_subject("flaky")).await?, 1);
    let requests: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_id FROM tenants ORDER BY key").fetch_all(&h.pool).await?;
    assert_eq!(requests, ["clerk:org_flaky", "clerk:org_lima"]);
    assert_eq!(clerk.unauthorized(), 0, "every call carried the secret key");
    Ok(())
}

#[tokio::test]
async fn with_the_clerk_backend_api_contract_double_a_404_waits_for_the_membership() -> Result<()> {
    let clerk = ClerkBackendDouble::start().await?;
    let h = Harness::build(Setup { clerk_api: Some(clerk.url.clone()), ..Setup::default() }).await?;
    h.webhook("g1", &organization_by("org_gone", "mike", "user_gone")).await?;
    eventually("the lookup to reach the contract double", WAIT, || async {
        (clerk.calls("user_gone") > 0).then_some(())
    })
    .await?;
    // 404 is final: still waiting, and listed as such.
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &h.admin()).await?;
    assert_eq!(waiting["items"][0]["org_id"], "org_gone", "{waiting}");
    // The membership supplies the admin; one tenant.
    let answer = h.webhook("g2", &membership("org_gone", "mike@mike.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    let tenant = h.until_status("mike", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "mike@mike.test");
    assert_eq!(h.count(&h.requested_subject("mike")).await?, 1);
    assert_eq!(clerk.calls("user_gone"), 1, "a 404 is not retried");
    Ok(())
}

#[tokio::test]
async fn an_organizations_plan_comes_from_its_public_metadata_else_the_default() -> Result<()> {
    let h = Harness::new().await?;
    let mut own = organization("org_p1", "planned");
    own["data"]["public_metadata"] = json!({"plan": "stuck", "other": 1});
    h.webhook("p1", &own).await?;
    h.webhook("p2", &membership("org_p1", "p@one.test")).await?;
    let tenant = h.until_status("planned", "ACTIVE").await?;
    assert_eq!((&tenant["plan"], &tenant["tier"]), (&json!("stuck"), &json!("silo")), "{tenant}");
    // No plan in the metadata (or not a string): LANDLORD_CLERK_PLAN.
    let mut none = organization("org_p2", "unplanned");
    none["data"]["public_metadata"] = json!({"plan": 7});
    h.webhook("p3", &none).await?;
    h.webhook("p4", &membership("org_p2", "p@two.test")).await?;
    let tenant = h.until_status("unplanned", "ACTIVE").await?;
    assert_eq!(tenant["plan"], "standard", "{tenant}");
    // A plan that is not one of the plans: the organization is rejected.
    let mut unknown = organization("org_p3", "misplanned");
    unknown["data"]["public_metadata"] = json!({"plan": "platinum"});
    h.webhook("p5", &unknown).await?;
    let answer = h.webhook("p6", &membership("org_p3", "p@three.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "rejected", "{answer:?}");
    assert_eq!(answer.body["organization"]["rejected_rule"], "plan.unknown");
    Ok(())
}

#[tokio::test]
async fn deliveries_are_pruned_after_the_retention_but_a_waiting_organizations_creation_stays() -> Result<()> {
    let h = Harness::new().await?;
    h.webhook("old_user", &json!({"type": "user.created", "object": "event", "data": {"id": "user_9"}})).await?;
    h.webhook("old_waiting", &organization("org_w", "waiting")).await?;
    h.webhook("old_done", &organization("org_d", "done")).await?;
    h.webhook("old_admin", &membership("org_d", "d@done.test")).await?;
    h.webhook("new_user", &json!({"type": "user.created", "object": "event", "data": {"id": "user_8"}})).await?;
    let retention = landlord_gateway::clerk::DELIVERY_RETENTION;
    sqlx::query("UPDATE webhook_deliveries SET received_at = now() - interval '8 days' WHERE svix_id LIKE 'old_%'")
        .execute(&h.pool)
        .await?;
    let pruned = landlord_gateway::clerk::prune_deliveries(&h.pool, retention).await?;
    assert_eq!(pruned, 3);
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM webhook_deliveries ORDER BY svix_id").fetch_all(&h.pool).await?;
    assert_eq!(kept, ["new_user", "old_waiting"]);
    // A pruned delivery is gone for good: past Svix's retry window, the
    // same svix-id would be a new delivery (Svix never sends one).
    assert_eq!(landlord_gateway::clerk::prune_deliveries(&h.pool, retention).await?, 0);
    Ok(())
}
