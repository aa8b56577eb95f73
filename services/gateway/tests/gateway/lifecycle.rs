//! The lifecycle after ACTIVE through the API: suspend, resume, update,
//! delete, restore, export — each a 202 naming its saga and one
//! `OperationRequested` on the orchestrator's subject — their refusals as
//! problems, idempotency, one operation at a time, the audit log, and the
//! Clerk bridge's organization.updated / organization.deleted.

use futures_util::StreamExt as _;
use time::OffsetDateTime;

use super::*;

/// Watches `landlord.v1.cmd.orchestrator.operate` of the test's namespace.
struct Operations(async_nats::Subscriber);

impl Operations {
    async fn watch(h: &Harness) -> Result<Self> {
        let subject = h.namespace.command_subject("orchestrator", "operate");
        let subscriber = h.nats.subscribe(subject).await?;
        h.nats.flush().await?;
        Ok(Self(subscriber))
    }

    /// The next `OperationRequested` published.
    async fn next(&mut self) -> Result<pb::OperationRequested> {
        let message = tokio::time::timeout(WAIT, self.0.next())
            .await
            .context("no OperationRequested within the wait")?
            .context("subscription closed")?;
        Ok(<pb::OperationRequested as prost::Message>::decode(message.payload)?)
    }
}

impl Harness {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        idempotency: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let mut request = self.http.request(method, format!("{}{path}", self.api)).bearer_auth(token);
        if let Some(key) = idempotency {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Answer::of(request.send().await?).await
    }

    async fn operate(&self, route: &str, key: &str, idempotency: &str, body: Option<&Value>) -> Result<Answer> {
        let (method, path) = match route {
            "update" => (reqwest::Method::PATCH, format!("/v1/tenants/{key}")),
            "delete" => (reqwest::Method::DELETE, format!("/v1/tenants/{key}")),
            other => (reqwest::Method::POST, format!("/v1/tenants/{key}/{other}")),
        };
        self.send(method, &path, &self.admin(), Some(idempotency), body).await
    }

    async fn set_status(&self, key: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE tenants SET status = $2 WHERE key = $1").bind(key).bind(status).execute(&self.pool).await?;
        Ok(())
    }
}

/// Checks a 202 of `operation` on `key` and returns its saga id.
fn accepted(answer: &Answer, operation: &str, key: &str, tenant_id: &str) -> Result<String> {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["operation"], operation, "{answer:?}");
    assert_eq!(answer.body["key"], key, "{answer:?}");
    assert_eq!(answer.body["tenant_id"], tenant_id, "{answer:?}");
    assert_eq!(answer.body["status_url"], format!("/v1/tenants/{tenant_id}"), "{answer:?}");
    let location = answer.headers.get("location").and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/v1/tenants/{tenant_id}").as_str()));
    let saga = answer.body["saga_id"].as_str().context("saga_id")?;
    uuid::Uuid::parse_str(saga)?;
    Ok(saga.to_owned())
}

/// Creates `keys` (plan standard, `labels`) and waits until each is ACTIVE;
/// returns their ids.
async fn active(h: &Harness, keys: &[&str], labels: Value) -> Result<Vec<String>> {
    for key in keys {
        h.create(key, "standard", labels.clone()).await?;
    }
    let mut ids = Vec::new();
    for key in keys {
        let tenant = h.until_status(key, "ACTIVE").await?;
        ids.push(tenant["id"].as_str().context("id")?.to_owned());
    }
    Ok(ids)
}

#[tokio::test]
async fn every_operation_answers_202_with_its_saga_and_puts_one_operation_requested_on_the_bus() -> Result<()> {
    let h = Harness::new().await?;
    // Steps hold, so a saga the orchestrator starts stays at work.
    let held =
        json!({"script.block": "hold", "script.unblock": "hold", "script.change": "hold", "script.archive": "hold"});
    let keys = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let ids = active(&h, &keys, held).await?;
    h.set_status("delta", "SUSPENDED").await?;
    h.set_status("echo", "DELETION_SCHEDULED").await?;
    let mut bus = Operations::watch(&h).await?;

    let cases = [
        ("suspend", "alpha", json!({"reason": "non-payment"}), "suspend", "non-payment"),
        ("update", "bravo", json!({"display_name": "Bravo Two"}), "update", "updated through the API"),
        ("delete", "charlie", json!({"reason": "churned", "grace": 3600, "export": false}), "offboard", "churned"),
        ("resume", "delta", json!({"reason": "paid"}), "resume", "paid"),
        ("restore", "echo", json!({}), "restore", "restored through the API"),
        ("export", "foxtrot", json!({"reason": "audit request"}), "export", "audit request"),
    ];
    let mut sagas = HashMap::new();
    for ((route, key, body, operation, reason), id) in cases.iter().zip(&ids) {
        let before = OffsetDateTime::now_utc();
        let answer = h.operate(route, key, &format!("op-{key}"), Some(body)).await?;
        let saga = accepted(&answer, operation, key, id)?;
        let requested = bus.next().await?;
        assert_eq!(requested.saga_id, saga, "{route}");
        assert_eq!((requested.tenant_key.as_str(), requested.tenant_id.as_str()), (*key, id.as_str()));
        assert_eq!(requested.operation, *operation);
        assert_eq!(requested.idempotency_id, format!("api:op-{key}"));
        assert_eq!((requested.requested_by.as_str(), requested.reason.as_str()), ("tester", *reason));
        match *route {
            "update" => {
                assert_eq!(requested.changed_tenant.as_ref().map(|t| t.display_name.as_str()), Some("Bravo Two"));
                assert!(requested.changed.iter().any(|c| c == "display_name"), "{:?}", requested.changed);
            }
            "delete" => {
                assert!(!requested.export, "export: false is passed on");
                let purge_at = requested.purge_at.context("purge_at")?;
                let expected = before.unix_timestamp() + 3600;
                assert!((expected..expected + 60).contains(&purge_at.seconds), "{purge_at:?}");
            }
            _ => {}
        }
        sagas.insert(*key, saga);
    }

    // A repeated Idempotency-Key names the same saga and publishes nothing:
    // the next message on the bus is the next request's.
    let again = h.operate("suspend", "alpha", "op-alpha", Some(&json!({"reason": "non-payment"}))).await?;
    assert_eq!(accepted(&again, "suspend", "alpha", &ids[0])?, sagas["alpha"]);
    let again = h.operate("delete", "charlie", "op-charlie", Some(&json!({"reason": "churned"}))).await?;
    assert_eq!(accepted(&again, "offboard", "charlie", &ids[2])?, sagas["charlie"]);
    let golf = active(&h, &["golf"], json!({"script.block": "hold"})).await?;
    let answer = h.operate("suspend", "golf", "op-golf", Some(&json!({"reason": "abuse"}))).await?;
    let saga = accepted(&answer, "suspend", "golf", &golf[0])?;
    let next = bus.next().await?;
    assert_eq!((next.tenant_key.as_str(), next.saga_id.as_str()), ("golf", saga.as_str()), "a repeat published again");

    // The tenant's view names the operation at work.
    let (_, alpha) = h.get("/v1/tenants/alpha", &h.admin()).await?;
    assert_eq!(alpha["operation"], json!({"operation": "suspend", "saga_id": sagas["alpha"]}), "{alpha}");
    for field in ["purge_at", "export_location", "exported_at", "deleted_at", "deleted_by", "deletion_reason"] {
        assert!(alpha.get(field).is_some(), "{field} missing from {alpha}");
    }
    h.release.send_replace(true);
    Ok(())
}

#[tokio::test]
async fn refusals_are_problems_naming_what_is_wrong() -> Result<()> {
    let h = Harness::new().await?;
    let ids = active(&h, &["alpha", "bravo", "gone"], json!({"script.block": "hold"})).await?;
    let admin = h.admin();
    let reader = h.token(&[READ]);
    let reason = json!({"reason": "non-payment"});
    let post = reqwest::Method::POST;

    // Scopes, headers, keys, bodies.
    h.send(post.clone(), "/v1/tenants/alpha/suspend", &reader, Some("k"), Some(&reason))
        .await?
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    h.send(post.clone(), "/v1/tenants/alpha/suspend", &admin, None, Some(&reason))
        .await?
        .problem(StatusCode::BAD_REQUEST, "idempotency-key");
    let long = "k".repeat(197);
    let answer = h.operate("suspend", "alpha", &long, Some(&reason)).await?;
    answer.problem(StatusCode::BAD_REQUEST, "idempotency-key");
    assert!(answer.body["detail"].as_str().is_some_and(|d| d.contains("196")), "{answer:?}");
    let bad_key = h.operate("suspend", "Alpha", "k", Some(&reason)).await?;
    bad_key.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    for (route, body, rule) in [
        ("suspend", json!({}), None),
        ("suspend", json!({"reason": "  "}), Some("reason.required")),
        ("delete", json!({"grace": 60}), None),
        ("delete", json!({"reason": ""}), Some("reason.required")),
        ("update", json!({}), Some("update.empty")),
        ("update", json!({"colour": "red"}), None),
        ("update", json!({"tier": "silo"}), Some("plan.tier_change")),
        ("update", json!({"plan": "stuck"}), Some("plan.tier_change")),
        ("update", json!({"tier": "gold"}), Some("tier.unknown")),
        ("update", json!({"display_name": "a\u{0}b"}), Some("body.nul_character")),
        ("delete", json!({"reason": "churned", "grace": 91 * 24 * 3600}), Some("grace.too_long")),
    ] {
        let answer = h.operate(route, "alpha", "k-bad", Some(&body)).await?;
        match rule {
            Some(rule) => {
                answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
                assert_eq!(answer.body["rule"], rule, "{route} {body}: {answer:?}");
            }
            None => answer.problem(StatusCode::BAD_REQUEST, "malformed-body"),
        }
    }
    let tier = h.operate("update", "alpha", "k-tier", Some(&json!({"tier": "silo"}))).await?;
    assert!(tier.body["detail"].as_str().is_some_and(|d| d.contains("not supported yet")), "{tier:?}");
    // A DELETE without a body has no reason.
    let bare = h.send(reqwest::Method::DELETE, "/v1/tenants/alpha", &admin, Some("k"), None).await?;
    assert_eq!(bare.body["rule"], "reason.required", "{bare:?}");
    // Grace 0 purges at once: only with tenants:purge.
    let now = json!({"reason": "churned", "grace": 0});
    let refused = h.send(reqwest::Method::DELETE, "/v1/tenants/bravo", &admin, Some("k0"), Some(&now)).await?;
    refused.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("tenants:purge")), "{refused:?}");
    let purger = h.token(&[READ, WRITE, "tenants:purge"]);
    let purge = h.send(reqwest::Method::DELETE, "/v1/tenants/bravo", &purger, Some("k0"), Some(&now)).await?;
    accepted(&purge, "offboard", "bravo", &ids[1])?;

    // Unknown and DELETED tenants are not found.
    h.operate("suspend", "nobody", "k1", Some(&reason)).await?.problem(StatusCode::NOT_FOUND, "not-found");
    h.set_status("gone", "DELETED").await?;
    h.operate("suspend", "gone", "k2", Some(&reason)).await?.problem(StatusCode::NOT_FOUND, "not-found");
    // Not allowed from the tenant's status.
    for route in ["resume", "restore"] {
        let answer = h.operate(route, "alpha", &format!("k-{route}"), None).await?;
        answer.problem(StatusCode::CONFLICT, "operation-not-allowed");
        assert_eq!(answer.body["rule"], "operation.not_allowed");
        assert!(answer.body["detail"].as_str().is_some_and(|d| d.contains("ACTIVE")), "{answer:?}");
    }

    // Two suspends at once under different keys: one 202, one 409 naming it.
    let (first, second) = tokio::join!(
        h.operate("suspend", "alpha", "race-1", Some(&reason)),
        h.operate("suspend", "alpha", "race-2", Some(&reason)),
    );
    let (first, second) = (first?, second?);
    let (won, lost) = if first.status == StatusCode::ACCEPTED { (first, second) } else { (second, first) };
    let saga = accepted(&won, "suspend", "alpha", &ids[0])?;
    lost.problem(StatusCode::CONFLICT, "operation-in-progress");
    assert_eq!((&lost.body["operation"], &lost.body["saga_id"]), (&json!("suspend"), &json!(saga)), "{lost:?}");
    assert!(lost.body["detail"].as_str().is_some_and(|d| d.contains(&saga)), "{lost:?}");
    // Any other operation meanwhile is refused the same way.
    let busy = h.operate("update", "alpha", "k-busy", Some(&json!({"display_name": "A"}))).await?;
    busy.problem(StatusCode::CONFLICT, "operation-in-progress");
    assert_eq!(busy.body["saga_id"], json!(saga));
    h.release.send_replace(true);
    Ok(())
}

#[tokio::test]
async fn the_audit_log_is_read_page_by_page() -> Result<()> {
    let h = Harness::new().await?;
    let ids = active(&h, &["alpha"], json!({"script.block": "hold"})).await?;
    let tenant: uuid::Uuid = ids[0].parse()?;
    let answer = h.operate("suspend", "alpha", "audit-1", Some(&json!({"reason": "non-payment"}))).await?;
    let saga = accepted(&answer, "suspend", "alpha", &ids[0])?;
    for n in 0..6 {
        sqlx::query("INSERT INTO audit_log (actor, tenant_id, action, detail) VALUES ('test', $1, 'note', $2)")
            .bind(tenant)
            .bind(sqlx::types::Json(json!({"n": n})))
            .execute(&h.pool)
            .await?;
    }
    let expected: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(&h.pool)
        .await?;
    assert!(expected.len() >= 7, "{expected:?}");
    let reader = h.token(&[READ]);
    let mut seen = Vec::new();
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut sizes = Vec::new();
    loop {
        let path = match &cursor {
            None => "/v1/tenants/alpha/audit?limit=3".to_owned(),
            Some(c) => format!("/v1/tenants/alpha/audit?limit=3&cursor={c}"),
        };
        let (status, page) = h.get(&path, &reader).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().context("items")?;
        sizes.push(items.len());
        for item in items {
            seen.push(item["id"].as_i64().context("id")?);
            entries.push(item.clone());
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        anyhow::ensure!(pages < 20, "the cursor never ends");
    }
    // The orchestrator may add entries meanwhile (the saga at work): every
    // entry up to the last one read, once, oldest first.
    let last = *seen.last().context("no entries")?;
    let now: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log WHERE tenant_id = $1 AND id <= $2 ORDER BY id")
        .bind(tenant)
        .bind(last)
        .fetch_all(&h.pool)
        .await?;
    assert_eq!(seen, now, "every entry once, oldest first");
    assert!(expected.iter().all(|id| seen.contains(id)), "{expected:?} {seen:?}");
    let (last_page, full) = sizes.split_last().context("no pages")?;
    assert!(full.iter().all(|n| *n == 3) && (1..=3).contains(last_page), "page sizes {sizes:?}");
    // The request's own entry: who asked, why, which saga.
    let own = entries.iter().find(|e| e["saga_id"] == json!(saga)).context("no entry names the saga")?;
    assert_eq!(own["actor"], "tester", "{own}");
    assert!(own.to_string().contains("non-payment"), "{own}");
    assert!(own["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{own}");
    // By id too.
    let (status, by_id) = h.get(&format!("/v1/tenants/{tenant}/audit?limit=200"), &reader).await?;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    let by_id: Vec<i64> = by_id["items"].as_array().context("items")?.iter().filter_map(|i| i["id"].as_i64()).collect();
    assert_eq!(by_id[..seen.len()], seen[..]);
    for (query, kind) in
        [("limit=0", "limit"), ("limit=x", "limit"), ("cursor=bogus", "cursor"), ("colour=red", "query")]
    {
        let (status, problem) = h.get(&format!("/v1/tenants/alpha/audit?{query}"), &reader).await?;
        assert_eq!(
            (status, problem["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(format!("urn:landlord:problem:{kind}").as_str())),
            "{query}"
        );
    }
    let (status, _) = h.get("/v1/tenants/nobody/audit", &reader).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.get("/v1/tenants/alpha/audit", &h.token(&[WRITE])).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    h.release.send_replace(true);
    Ok(())
}

fn organization_deleted(org: &str) -> Value {
    json!({"type": "organization.deleted", "object": "event", "timestamp": 1_654_012_591_835_i64,
           "data": {"deleted": true, "id": org, "object": "organization"}})
}

fn organization_updated(org: &str, slug: &str, name: &str) -> Value {
    json!({"type": "organization.updated", "object": "event", "timestamp": 1_654_012_591_835_i64,
           "data": {"id": org, "slug": slug, "name": name, "object": "organization"}})
}

#[tokio::test]
async fn clerk_organization_deleted_five_times_offboards_once_and_updated_updates() -> Result<()> {
    let h = Harness::new().await?;
    for (n, (org, slug)) in [("org_a", "alpha"), ("org_b", "bravo")].into_iter().enumerate() {
        h.webhook(&format!("c{n}"), &organization(org, slug)).await?;
        h.webhook(&format!("m{n}"), &membership(org, &format!("admin@{slug}.test"))).await?;
    }
    let alpha = h.until_status("alpha", "ACTIVE").await?;
    let bravo = h.until_status("bravo", "ACTIVE").await?;
    let mut bus = Operations::watch(&h).await?;

    // Svix delivers one message up to five times, two of them at once.
    let deleted = organization_deleted("org_a");
    let first = h.webhook("msg_del", &deleted).await?;
    assert_eq!((first.status, &first.body["delivery"]), (StatusCode::OK, &json!("accepted")), "{first:?}");
    let outcome = &first.body["operation"];
    assert_eq!((&outcome["operation"], &outcome["result"]), (&json!("offboard"), &json!("requested")), "{first:?}");
    assert_eq!(outcome["tenant_key"], "alpha");
    let (a, b) = tokio::join!(h.webhook("msg_del", &deleted), h.webhook("msg_del", &deleted));
    for again in [a?, b?, h.webhook("msg_del", &deleted).await?, h.webhook("msg_del", &deleted).await?] {
        assert_eq!((again.status, &again.body["delivery"]), (StatusCode::OK, &json!("duplicate")), "{again:?}");
    }
    let offboard = bus.next().await?;
    assert_eq!((offboard.operation.as_str(), offboard.tenant_key.as_str()), ("offboard", "alpha"));
    assert_eq!(offboard.tenant_id, alpha["id"].as_str().context("id")?);
    assert_eq!(offboard.saga_id, outcome["saga_id"].as_str().context("saga_id")?);
    assert_eq!(offboard.idempotency_id, "clerk:msg_del");
    assert_eq!((offboard.requested_by.as_str(), offboard.reason.as_str()), ("clerk", "Clerk organization deleted"));
    assert!(offboard.export, "Clerk offboardings export");
    // The default grace period: 30 days.
    let purge_at = offboard.purge_at.context("purge_at")?.seconds;
    let expected = OffsetDateTime::now_utc().unix_timestamp() + 30 * 24 * 3600;
    assert!((expected - 120..=expected).contains(&purge_at), "{purge_at} vs {expected}");

    // organization.updated: the tenant's display name follows. It is the
    // next message on the bus: the four repeats above published nothing.
    let updated = h.webhook("msg_upd", &organization_updated("org_b", "bravo", "Bravo Renamed")).await?;
    assert_eq!(updated.body["operation"]["result"], "requested", "{updated:?}");
    let update = bus.next().await?;
    assert_eq!((update.operation.as_str(), update.tenant_key.as_str()), ("update", "bravo"));
    assert_eq!(update.tenant_id, bravo["id"].as_str().context("id")?);
    assert_eq!(update.changed_tenant.as_ref().map(|t| t.display_name.as_str()), Some("Bravo Renamed"));
    assert_eq!((update.requested_by.as_str(), update.reason.as_str()), ("clerk", "Clerk organization updated"));
    assert_eq!(update.idempotency_id, "clerk:msg_upd");

    // An organization without a live tenant: acknowledged and recorded, once.
    let unknown = h.webhook("msg_unknown", &organization_deleted("org_zzz")).await?;
    assert_eq!((unknown.status, &unknown.body["delivery"]), (StatusCode::OK, &json!("accepted")), "{unknown:?}");
    assert_eq!(unknown.body["operation"]["result"], "no_live_tenant");
    let again = h.webhook("msg_unknown", &organization_deleted("org_zzz")).await?;
    assert_eq!(again.body["delivery"], "duplicate", "{again:?}");
    // A deleted organization still waiting for its admin never becomes a tenant.
    h.webhook("c9", &organization("org_w", "waiting")).await?;
    h.webhook("msg_w", &organization_deleted("org_w")).await?;
    let late = h.webhook("m9", &membership("org_w", "late@waiting.test")).await?;
    assert_eq!(late.body["organization"]["state"], "rejected", "{late:?}");
    assert_eq!(late.body["organization"]["rejected_rule"], "organization.deleted");
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT svix_id FROM webhook_deliveries WHERE svix_id IN ('msg_del', 'msg_upd', 'msg_unknown', 'msg_w')
         ORDER BY svix_id",
    )
    .fetch_all(&h.pool)
    .await?;
    assert_eq!(recorded, ["msg_del", "msg_unknown", "msg_upd", "msg_w"]);
    Ok(())
}

/// Waits until the tenant `key` reads back with `check` true and no
/// operation at work.
async fn until(h: &Harness, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
    let token = h.admin();
    let last = Arc::new(Mutex::new(Value::Null));
    let found = eventually(&format!("{key}: {what}"), WAIT, || {
        let (token, last, check) = (token.clone(), last.clone(), &check);
        async move {
            let (_, body) = h.get(&format!("/v1/tenants/{key}"), &token).await.ok()?;
            if let Ok(mut last) = last.lock() {
                *last = body.clone();
            }
            (body["operation"].is_null() && check(&body)).then_some(body)
        }
    })
    .await;
    found.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.to_string())))
}

#[tokio::test]
async fn operations_run_to_their_end_and_the_tenant_view_follows_to_the_tombstone() -> Result<()> {
    let h = Harness::new().await?;
    let id = active(&h, &["acme"], json!({})).await?.remove(0);

    let update = h.operate("update", "acme", "e-1", Some(&json!({"display_name": "Acme Two"}))).await?;
    let saga = accepted(&update, "update", "acme", &id)?;
    let updated = until(&h, "acme", "renamed", |t| t["display_name"] == "Acme Two").await?;
    assert_eq!((&updated["saga"]["id"], &updated["saga"]["operation"]), (&json!(saga), &json!("update")));

    accepted(
        &h.operate("suspend", "acme", "e-2", Some(&json!({"reason": "non-payment"}))).await?,
        "suspend",
        "acme",
        &id,
    )?;
    until(&h, "acme", "SUSPENDED", |t| t["status"] == "SUSPENDED").await?;
    accepted(&h.operate("resume", "acme", "e-3", None).await?, "resume", "acme", &id)?;
    until(&h, "acme", "ACTIVE", |t| t["status"] == "ACTIVE" && t["saga"]["operation"] == "resume").await?;
    accepted(&h.operate("export", "acme", "e-4", None).await?, "export", "acme", &id)?;
    let exported = until(&h, "acme", "exported", |t| t["exported_at"].is_string()).await?;
    assert_eq!(exported["export_location"], "s3://archive/acme/");

    // Offboarded for an hour, then restored: the purge is called off.
    let delete = json!({"reason": "churned", "grace": 3600});
    accepted(&h.operate("delete", "acme", "e-5", Some(&delete)).await?, "offboard", "acme", &id)?;
    let scheduled = until(&h, "acme", "DELETION_SCHEDULED", |t| t["status"] == "DELETION_SCHEDULED").await?;
    let purge_at = OffsetDateTime::parse(scheduled["purge_at"].as_str().context("purge_at")?, &Rfc3339)?;
    let in_an_hour = OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert!((in_an_hour - purge_at).whole_seconds().abs() < 120, "{purge_at} vs {in_an_hour}");
    accepted(&h.operate("restore", "acme", "e-6", None).await?, "restore", "acme", &id)?;
    let restored =
        until(&h, "acme", "restored", |t| t["status"] == "ACTIVE" && t["saga"]["operation"] == "restore").await?;
    assert!(restored["purge_at"].is_null(), "{restored}");

    // Offboarded for a second: the purge timer ends it.
    let delete = json!({"reason": "gone for good", "grace": 1});
    accepted(&h.operate("delete", "acme", "e-7", Some(&delete)).await?, "offboard", "acme", &id)?;
    let deleted = until(&h, "acme", "DELETED", |t| t["status"] == "DELETED").await?;
    assert_eq!(deleted["id"], json!(id));
    // The tombstone names the offboarding's requester, or the purge's (the
    // timer, `landlord`): the orchestrator's choice; the audit log below
    // has both.
    let by = (deleted["deleted_by"].as_str(), deleted["deletion_reason"].as_str());
    assert!(
        matches!(by, (Some("tester"), Some("gone for good")) | (Some("landlord"), Some("grace period ended"))),
        "{deleted}"
    );
    assert!(deleted["deleted_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{deleted}");
    // A tombstone takes no more operations; its log stays readable by id.
    h.operate("suspend", "acme", "e-8", Some(&json!({"reason": "x"})))
        .await?
        .problem(StatusCode::NOT_FOUND, "not-found");
    let (status, log) = h.get(&format!("/v1/tenants/{id}/audit?limit=200"), &h.token(&[READ])).await?;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> =
        log["items"].as_array().context("items")?.iter().filter_map(|e| e["action"].as_str()).collect();
    for asked in ["update", "suspend", "resume", "export", "offboard", "restore", "purge"] {
        assert!(actions.iter().any(|a| a.starts_with(asked)), "no {asked} in {actions:?}");
    }
    let offboarded = log["items"]
        .as_array()
        .context("items")?
        .iter()
        .rev()
        .find(|e| e["action"].as_str().is_some_and(|a| a.starts_with("offboard")) && e["actor"] == "tester");
    assert!(offboarded.is_some_and(|e| e.to_string().contains("gone for good")), "{log}");
    // Its key is free again: a new request makes a new tenant.
    let again =
        h.post("/v1/tenants", Some(&h.admin()), Some("acme-again"), &tenant("acme", "standard", json!({}))).await?;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{again:?}");
    assert_ne!(again.body["tenant_id"], json!(id));
    let reborn = h.until_status("acme", "ACTIVE").await?;
    assert_eq!(reborn["id"], again.body["tenant_id"]);
    // The tombstone is still there, by its id.
    let (_, tombstone) = h.get(&format!("/v1/tenants/{id}"), &h.admin()).await?;
    assert_eq!(tombstone["status"], "DELETED");
    Ok(())
}
