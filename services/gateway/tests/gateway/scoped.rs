//! Tenant-scoped tokens (issue 29 item 3; docs/auth.md): a token whose
//! tenant claim names one tenant sees another tenant exactly as a missing
//! one on every route the OpenAPI document lists, lists and follows only
//! its own, and is refused (403) where no single tenant is concerned.

use super::auth::{JwksServer, KEY_A, SigningKey, jwks_settings};
use super::*;

/// A token for `tenant` alone (its id, key or Clerk organization id), with
/// every scope.
fn scoped(h: &Harness, tenant: &str) -> String {
    let scopes = [READ.to_owned(), WRITE.to_owned(), "tenants:purge".to_owned()];
    h.tokens.mint_scoped("tenant-admin", &scopes, Duration::from_secs(600), tenant)
}

/// A request body that passes every route's own checks, so that only the
/// tenant decides the answer. A route added without one here gets `{}`,
/// fails its validation, and the walk below says which route it was.
fn body_for(method: &str, path: &str) -> Value {
    match (method, path.rsplit('/').next().unwrap_or("")) {
        ("patch", _) => json!({"display_name": "Renamed by a scoped token", "reason": "scoped test"}),
        ("delete", _) => json!({"reason": "scoped test", "grace": 3600}),
        ("post", "suspend") => json!({"reason": "scoped test"}),
        ("post", _) => json!({"reason": "scoped test"}),
        _ => json!({}),
    }
}

/// `method path` with `token`, `{id_or_key}` / `{key}` replaced by `ident`.
async fn call(h: &Harness, method: &str, path: &str, ident: &str, token: &str, n: &mut u32) -> Result<Answer> {
    *n += 1;
    let concrete = path.replace("{id_or_key}", ident).replace("{key}", ident);
    let method_ = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
    let mut request = h
        .http
        .request(method_.clone(), format!("{}{concrete}", h.api))
        .bearer_auth(token)
        .header("Idempotency-Key", format!("scoped-walk-{n}"));
    if method_ != reqwest::Method::GET {
        request = request.json(&body_for(method, path));
    }
    Answer::of(request.send().await?).await
}

/// `answer`'s body with `ident` spelled `<tenant>`: what a missing tenant's
/// answer must equal.
fn masked(answer: &Answer, ident: &str) -> Value {
    serde_json::from_str(&answer.body.to_string().replace(ident, "<tenant>")).unwrap_or(Value::Null)
}

/// Every operation of the document: (path, method, whether it needs a
/// bearer token).
fn operations(document: &Value) -> Result<Vec<(String, String, bool)>> {
    let mut all = Vec::new();
    for (path, methods) in document["paths"].as_object().context("paths")? {
        for (method, operation) in methods.as_object().context("methods")? {
            let secured = operation["security"].as_array().is_none_or(|s| !s.is_empty());
            all.push((path.clone(), method.clone(), secured));
        }
    }
    Ok(all)
}

#[tokio::test]
async fn a_scoped_token_sees_another_tenant_as_a_missing_one_on_every_route() -> Result<()> {
    let h = Harness::new().await?;
    // bravo first: in the list's order another tenant comes before alpha.
    let bravo = h.create("bravo", "standard", json!({})).await?;
    let alpha = h.create("alpha", "standard", json!({})).await?;
    h.until_status("bravo", "ACTIVE").await?;
    h.until_status("alpha", "ACTIVE").await?;
    let (alpha_id, bravo_id) = (alpha["tenant_id"].as_str().context("id")?, bravo["tenant_id"].as_str().context("id")?);
    let token = scoped(&h, alpha_id);
    let document: Value = h.http.get(format!("{}/v1/openapi.json", h.api)).send().await?.json().await?;
    let mut n = 0;

    // Every tenant route, on bravo's key and id: answered as the same
    // route answers a tenant that does not exist.
    let all = operations(&document)?;
    let tenant_routes: Vec<&(String, String, bool)> =
        all.iter().filter(|(path, _, secured)| *secured && path.starts_with("/v1/tenants/{")).collect();
    assert!(tenant_routes.len() >= 10, "the document lists the tenant routes: {tenant_routes:?}");
    // Of the same form as bravo's id (whether it also reads as a key
    // depends on its first characters): only the tenant differs.
    let missing_id = format!("{}000000000000", &bravo_id[..24]);
    for (path, method, _) in &tenant_routes {
        for (ident, missing) in [("bravo", "nobody-here"), (bravo_id, missing_id.as_str())] {
            let other = call(&h, method, path, ident, &token, &mut n).await?;
            let none = call(&h, method, path, missing, &token, &mut n).await?;
            assert_eq!(other.status, none.status, "{method} {path} on {ident}: {other:?} / missing: {none:?}");
            assert_eq!(masked(&other, ident), masked(&none, missing), "{method} {path} on {ident}");
            if ident == "bravo" {
                other.problem(StatusCode::NOT_FOUND, "not-found");
            } else {
                // A route that takes a key only refuses an id as it
                // refuses any non-key (422), for every tenant alike.
                assert!(matches!(other.status.as_u16(), 404 | 422), "{method} {path} on the id: {other:?}");
            }
        }
    }
    // bravo is untouched: no request of the scoped token reached it.
    let (_, seen) = h.get("/v1/tenants/bravo", &h.admin()).await?;
    assert_eq!((seen["status"].as_str(), seen["display_name"].as_str()), (Some("ACTIVE"), Some("Tenant bravo")));
    let asked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE actor = 'tenant-admin'").fetch_one(&h.pool).await?;
    assert_eq!(asked, 0, "nothing was asked for on bravo");

    // Lists: filtered in the query (a page of one is alpha, not an empty
    // page of a filtered-out bravo with a cursor).
    let (status, page) = h.get("/v1/tenants?limit=1", &token).await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!((page["items"][0]["key"].as_str(), &page["next_cursor"]), (Some("alpha"), &Value::Null));
    let (_, everything) = h.get("/v1/tenants", &h.admin()).await?;
    assert_eq!(everything["items"].as_array().map(Vec::len), Some(2));

    // Where no single tenant is concerned: 403, saying nothing of any.
    let charlie = tenant("charlie", "standard", json!({}));
    let answer = h.post("/v1/tenants", Some(&token), Some("scoped-create"), &charlie).await?;
    answer.problem(StatusCode::FORBIDDEN, "tenant-scoped-token");
    let aware = [("/v1/tenants", "get"), ("/v1/tenants", "post"), ("/v1/events", "get")];
    for (path, method, secured) in &all {
        if !*secured || path.starts_with("/v1/tenants/{") || aware.contains(&(path.as_str(), method.as_str())) {
            continue;
        }
        // Any other route needing a token is closed to a scoped one.
        let answer = call(&h, method, path, "alpha", &token, &mut n).await?;
        answer.problem(StatusCode::FORBIDDEN, "tenant-scoped-token");
    }

    // The same token on its own tenant: every route reaches alpha (reads
    // answer, writes are accepted or refused for alpha's state of the
    // moment — one operation at a time — never as missing or forbidden).
    for (path, method, _) in &tenant_routes {
        for ident in ["alpha", alpha_id] {
            let answer = call(&h, method, path, ident, &token, &mut n).await?;
            let status = answer.status.as_u16();
            if *method == "get" {
                assert_eq!(status, 200, "{method} {path} on {ident}: {answer:?}");
            } else if ident == "alpha" {
                assert!(matches!(status, 202 | 409), "{method} {path} on alpha: {answer:?}");
            } else {
                // Write routes take a key; the id is not one: refused as
                // malformed, or (an id that happens to read as a key) no
                // tenant has that key.
                let no_such_key = status == 404
                    && answer.body["detail"].as_str().is_some_and(|d| d.contains("has the key") && d.contains(ident));
                assert!(matches!(status, 202 | 409 | 422) || no_such_key, "{method} {path} on alpha's id: {answer:?}");
            }
            if status == 409 {
                let detail = answer.body["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("alpha") || detail.contains(ident), "{method} {path}: {answer:?}");
            }
        }
    }
    let acted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE actor = 'tenant-admin'").fetch_one(&h.pool).await?;
    assert!(acted > 0, "the scoped token acted on its own tenant");

    // A claim naming its tenant by key works alike; one naming no tenant
    // sees nothing; one that is no tenant reference at all is refused.
    let (_, by_key) = h.get("/v1/tenants", &scoped(&h, "alpha")).await?;
    assert_eq!(by_key["items"][0]["id"].as_str(), Some(alpha_id));
    assert_eq!(by_key["items"].as_array().map(Vec::len), Some(1));
    let nobody = scoped(&h, "nobody-here");
    let (_, empty) = h.get("/v1/tenants", &nobody).await?;
    assert_eq!(empty["items"], json!([]));
    h.answer("/v1/tenants/alpha", &nobody).await?.problem(StatusCode::NOT_FOUND, "not-found");
    h.answer("/v1/tenants", &scoped(&h, "Not A Key!")).await?.problem(StatusCode::UNAUTHORIZED, "token-tenant");
    Ok(())
}

/// The feed, read frame by frame (as events.rs reads it).
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> Result<Value> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data: String = frame.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            if !data.is_empty() {
                return Ok(serde_json::from_str(&data)?);
            }
            continue;
        }
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .context("no event within the wait")??
            .context("the feed ended")?;
        buffer.push_str(std::str::from_utf8(&chunk)?);
    }
}

#[tokio::test]
async fn a_scoped_feed_delivers_only_its_tenants_events() -> Result<()> {
    let h = Harness::new().await?;
    h.create("bravo", "standard", json!({})).await?;
    let alpha = h.create("alpha", "standard", json!({})).await?;
    h.until_status("bravo", "ACTIVE").await?;
    h.until_status("alpha", "ACTIVE").await?;
    let token = scoped(&h, alpha["tenant_id"].as_str().context("id")?);
    // bravo has events in the stream, before and after alpha's.
    let bravo_events = h.count(&format!("{}.v1.events.bravo.*", h.namespace.root())).await?;
    assert!(bravo_events > 0);
    let answer = h.post("/v1/tenants/bravo/suspend", Some(&h.admin()), Some("s-b"), &json!({"reason": "r"})).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    h.until_status("bravo", "SUSPENDED").await?;
    let answer = h.post("/v1/tenants/alpha/suspend", Some(&h.admin()), Some("s-a"), &json!({"reason": "r"})).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    h.until_status("alpha", "SUSPENDED").await?;

    // From the stream's start, without naming a tenant: alpha's events,
    // up to its suspension, and none of bravo's (which came between).
    let mut response = h.http.get(format!("{}/v1/events?last_event_id=0", h.api)).bearer_auth(&token).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut buffer = String::new();
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut response, &mut buffer).await?;
        assert_eq!(event["tenant"], "alpha", "{event}");
        seen.push(event["event"].as_str().unwrap_or_default().to_owned());
        if seen.last().is_some_and(|e| e == "suspended") {
            break;
        }
    }
    assert!(seen.contains(&"requested".to_owned()) && seen.len() > 3, "{seen:?}");
    // Naming its own tenant is the same feed; another, whether it exists
    // or not, is a missing tenant.
    let own = h.http.get(format!("{}/v1/events?tenant=alpha", h.api)).bearer_auth(&token).send().await?;
    assert_eq!(own.status(), StatusCode::OK);
    let other = h.answer("/v1/events?tenant=bravo", &token).await?;
    other.problem(StatusCode::NOT_FOUND, "not-found");
    let none = h.answer("/v1/events?tenant=nobody-here", &token).await?;
    assert_eq!(masked(&other, "bravo"), masked(&none, "nobody-here"));
    Ok(())
}

#[tokio::test]
async fn an_external_token_names_its_tenant_by_clerk_organization_in_the_configured_claim() -> Result<()> {
    let key = SigningKey::load("key-a", KEY_A)?;
    let issuer = JwksServer::start(vec![key.jwk()]).await?;
    // Clerk's session tokens (v2) carry the organization as o.id.
    let setup = Setup { jwks: Some(jwks_settings(&issuer.url)), tenant_claim: "o.id".into(), ..Setup::default() };
    let h = Harness::build(setup).await?;
    // charlie made from a Clerk organization; delta by the API, linked to
    // another organization by its label.
    let answer = h.webhook("msg_org", &organization("org_2charlie", "charlie")).await?;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let answer = h.webhook("msg_member", &membership("org_2charlie", "ada@charlie.test")).await?;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    h.create("delta", "standard", json!({"clerk.organization_id": "org_2delta"})).await?;
    h.until_status("charlie", "ACTIVE").await?;
    h.until_status("delta", "ACTIVE").await?;

    let now = unix_now();
    let member_of = |org: &str| {
        key.sign(&json!({
            "sub": "user_1", "iss": "landlord", "aud": "landlord", "exp": now + 600, "iat": now,
            "scope": format!("{READ} {WRITE}"), "o": {"id": org, "rol": "admin"},
        }))
    };
    for (org, own, other) in [("org_2charlie", "charlie", "delta"), ("org_2delta", "delta", "charlie")] {
        let token = member_of(org)?;
        let (status, page) = h.get("/v1/tenants", &token).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        let keys: Vec<&str> =
            page["items"].as_array().into_iter().flatten().filter_map(|t| t["key"].as_str()).collect();
        assert_eq!(keys, [own], "{org}");
        assert_eq!(h.get(&format!("/v1/tenants/{own}"), &token).await?.0, StatusCode::OK);
        h.answer(&format!("/v1/tenants/{other}"), &token).await?.problem(StatusCode::NOT_FOUND, "not-found");
        h.answer("/v1/clerk/organizations", &token).await?.problem(StatusCode::FORBIDDEN, "tenant-scoped-token");
    }
    // An organization without a tenant sees nothing; a token without the
    // claim is a global one (the issuer decides who gets the scopes).
    let (_, page) = h.get("/v1/tenants", &member_of("org_2nobody")?).await?;
    assert_eq!(page["items"], json!([]));
    let global = key.sign(&json!({
        "sub": "operator", "iss": "landlord", "aud": "landlord", "exp": now + 600, "iat": now, "scope": READ,
    }))?;
    let (_, page) = h.get("/v1/tenants", &global).await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    // A claim that is not a string is refused, not ignored.
    let odd = key.sign(&json!({
        "sub": "user_1", "iss": "landlord", "aud": "landlord", "exp": now + 600, "iat": now, "scope": READ,
        "o": {"id": 7},
    }))?;
    h.answer("/v1/tenants", &odd).await?.problem(StatusCode::UNAUTHORIZED, "token-tenant");
    Ok(())
}
