//! `/v1/tenants`: accepted once and followed to ACTIVE, listed, cancelled
//! and retried.

use super::*;

#[tokio::test]
async fn a_tenant_is_accepted_once_and_followed_to_active() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    let body = tenant("acme", "standard", json!({}));
    h.post("/v1/tenants", Some(&admin), None, &body).await?.problem(StatusCode::BAD_REQUEST, "idempotency-key");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &tenant("1acme", "standard", json!({}))).await?;
    bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(bad.body["rule"], "tenant_key.first_character");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &tenant("acme", "platinum", json!({}))).await?;
    assert_eq!(bad.body["rule"], "plan.unknown", "{bad:?}");
    let mut no_email = body.clone();
    no_email["admin"]["email"] = json!("nobody");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &no_email).await?;
    assert_eq!(bad.body["rule"], "admin.email.invalid", "{bad:?}");
    h.post("/v1/tenants", Some(&admin), Some("k0"), &json!({"key": "acme"}))
        .await?
        .problem(StatusCode::BAD_REQUEST, "malformed-body");

    let first = h.post("/v1/tenants", Some(&admin), Some("k1"), &body).await?;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let id = first.body["tenant_id"].as_str().context("tenant_id")?.to_owned();
    assert_eq!(first.body["status_url"], format!("/v1/tenants/{id}"));
    assert_eq!(first.headers.get("location").and_then(|v| v.to_str().ok()), Some(format!("/v1/tenants/{id}").as_str()));
    let again = h.post("/v1/tenants", Some(&admin), Some("k1"), &body).await?;
    assert_eq!((again.status, &again.body), (StatusCode::ACCEPTED, &first.body));
    let mut changed = body.clone();
    changed["display_name"] = json!("Something else");
    let reused = h.post("/v1/tenants", Some(&admin), Some("k1"), &changed).await?;
    reused.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(reused.body["rule"], "idempotency_key.reused");
    let taken = h.post("/v1/tenants", Some(&admin), Some("k2"), &body).await?;
    taken.problem(StatusCode::CONFLICT, "tenant-key-taken");

    let active = h.until_status("acme", "ACTIVE").await?;
    assert_eq!(active["id"], id.as_str());
    assert_eq!(active["tier"], "bridge");
    assert_eq!(active["plan"], "standard");
    assert_eq!(active["domains"], json!(["acme.test"]));
    assert_eq!(active["admin"]["email"], "admin@acme.test");
    let saga = &active["saga"];
    assert_eq!(saga["state"], "succeeded");
    assert_eq!(saga["percent"], 100);
    let steps = saga["steps"].as_array().context("steps")?;
    assert_eq!(steps.len(), 2);
    for step in steps {
        assert_eq!(step["state"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1);
        assert!(step["started_at"].is_string() && step["finished_at"].is_string() && step["duration_ms"].is_number());
    }
    let kinds: Vec<&str> =
        active["resources"].as_array().context("resources")?.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["test.s1", "test.s2"]);
    // Times are RFC 3339 in UTC throughout, however they were read.
    for at in [
        &active["created_at"],
        &active["resources"][0]["created_at"],
        &saga["started_at"],
        &saga["finished_at"],
        &steps[0]["started_at"],
        &steps[1]["finished_at"],
    ] {
        let at = at.as_str().context("a time")?;
        assert!(at.ends_with('Z') && time::OffsetDateTime::parse(at, &Rfc3339).is_ok(), "{at}");
    }
    let (status, by_id) = h.get(&format!("/v1/tenants/{id}"), &h.token(&[READ])).await?;
    assert_eq!((status, by_id["key"].as_str()), (StatusCode::OK, Some("acme")));
    let (status, missing) = h.get("/v1/tenants/nobody", &admin).await?;
    assert_eq!((status, missing["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:landlord:problem:not-found")));
    // One request reached the broker, however often it was sent.
    assert_eq!(h.count(&h.requested_subject("acme")).await?, 1);
    // Racing requests for one key under different Idempotency-Keys: one wins.
    let body = tenant("bravo", "standard", json!({}));
    let keys: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    let answers =
        futures_util::future::join_all(keys.iter().map(|k| h.post("/v1/tenants", Some(&admin), Some(k), &body))).await;
    let mut statuses: Vec<u16> = Vec::new();
    for answer in answers {
        let answer = answer?;
        if answer.status != StatusCode::ACCEPTED {
            answer.problem(StatusCode::CONFLICT, "tenant-key-taken");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    h.until_status("bravo", "ACTIVE").await?;
    Ok(())
}

#[tokio::test]
async fn tenants_are_listed_by_status_and_plan_page_by_page() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    for key in ["alpha", "bravo", "charlie"] {
        h.create(key, "standard", json!({})).await?;
    }
    h.create("delta", "stuck", json!({"script.s2": "hold"})).await?;
    for key in ["alpha", "bravo", "charlie"] {
        h.until_status(key, "ACTIVE").await?;
    }
    h.until_status("delta", "PROVISIONING").await?;
    let (status, page) = h.get("/v1/tenants?status=ACTIVE&limit=2", &admin).await?;
    assert_eq!(status, StatusCode::OK);
    let keys = |page: &Value| -> Vec<String> {
        page["items"].as_array().into_iter().flatten().filter_map(|t| t["key"].as_str().map(str::to_owned)).collect()
    };
    let mut seen = keys(&page);
    assert_eq!(seen.len(), 2);
    let cursor = page["next_cursor"].as_str().context("next_cursor")?;
    let (_, rest) = h.get(&format!("/v1/tenants?status=ACTIVE&limit=2&cursor={cursor}"), &admin).await?;
    seen.extend(keys(&rest));
    assert!(rest["next_cursor"].is_null(), "{rest}");
    seen.sort();
    assert_eq!(seen, ["alpha", "bravo", "charlie"]);
    let (_, stuck) = h.get("/v1/tenants?plan=stuck", &admin).await?;
    assert_eq!(keys(&stuck), ["delta"]);
    let (_, all) = h.get("/v1/tenants", &admin).await?;
    assert_eq!(keys(&all).len(), 4);
    for (query, kind) in
        [("status=SLEEPING", "status"), ("limit=0", "limit"), ("cursor=bogus", "cursor"), ("colour=red", "query")]
    {
        let (status, problem) = h.get(&format!("/v1/tenants?{query}"), &admin).await?;
        assert_eq!(
            (status, problem["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(format!("urn:landlord:problem:{kind}").as_str())),
            "{query}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_running_provisioning_is_cancelled_and_a_failed_one_retried() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    h.post("/v1/tenants/ghost/cancel", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::NOT_FOUND, "not-found");
    h.create("stuck", "stuck", json!({"script.s2": "hold"})).await?;
    eventually("s2 to be running", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        (t["saga"]["current_step"] == "s2" && t["saga"]["steps"][1]["state"] == "running").then_some(())
    })
    .await?;
    h.post("/v1/tenants/stuck/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-retryable");
    let cancel = h.post("/v1/tenants/stuck/cancel", Some(&admin), None, &json!({"reason": "changed my mind"})).await?;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{cancel:?}");
    // The cancel is recorded at once and takes effect when the step in
    // flight answers.
    eventually("the cancel to be recorded", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        (t["saga"]["cancel_reason"] == "changed my mind").then_some(())
    })
    .await?;
    h.release.send_replace(true);
    let cancelled = h.until_status("stuck", "CANCELLED").await?;
    assert_eq!(cancelled["saga"]["state"], "cancelled");
    assert_eq!(cancelled["saga"]["steps"][0]["state"], "compensated");
    assert_eq!(cancelled["saga"]["steps"][1]["state"], "compensated");
    let resources = cancelled["resources"].as_array().context("resources")?;
    assert_eq!(resources.len(), 2);
    assert!(resources.iter().all(|r| r["deleted_at"].is_string()), "{cancelled}");
    h.post("/v1/tenants/stuck/cancel", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-cancellable");

    h.create("flaky", "standard", json!({"script.s2": "fail-once"})).await?;
    let failed = h.until_status("flaky", "FAILED").await?;
    assert_eq!(failed["failed_step"], "s2");
    assert!(failed["saga"]["steps"][1]["last_error"].as_str().is_some_and(|e| e.contains("fails once")), "{failed}");
    let retry = h.post("/v1/tenants/flaky/retry", Some(&admin), None, &json!({})).await?;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.body["tenant_id"], failed["id"]);
    let active = h.until_status("flaky", "ACTIVE").await?;
    assert_eq!(active["id"], failed["id"]);
    assert_ne!(active["saga"]["id"], failed["saga"]["id"]);
    assert_eq!(active["saga"]["state"], "succeeded");
    let sagas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE t.key = 'flaky'")
            .fetch_one(&h.pool)
            .await?;
    assert_eq!(sagas, 2);
    h.post("/v1/tenants/flaky/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-retryable");
    h.post("/v1/tenants/Bad/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    Ok(())
}
