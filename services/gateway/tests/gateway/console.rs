//! The operator console (/console): sign-in and its cookie, pages for a
//! reader, scopes and CSRF on actions, bulk actions with an ineligible
//! tenant, the JSON event feed, keyset pagination and filters (stuck
//! included).

use super::*;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use uuid::Uuid;

/// A browser without cookies of its own: it carries the console cookie
/// it was given and never follows redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    async fn of(response: reqwest::Response) -> Result<Self> {
        Ok(Self { status: response.status(), headers: response.headers().clone(), text: response.text().await? })
    }

    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    /// The values of attribute `attr` on elements with `data-testid="<testid>"`.
    fn attrs(&self, testid: &str, attr: &str) -> Vec<String> {
        let marker = format!(r#"data-testid="{testid}""#);
        self.text
            .split(&marker)
            .skip(1)
            .filter_map(|rest| {
                let tag = rest.split('>').next()?;
                let start = tag.find(&format!(r#"{attr}=""#))? + attr.len() + 2;
                Some(tag[start..].split('"').next()?.to_owned())
            })
            .collect()
    }

    /// The text of the first element with `data-testid="<testid>"`.
    fn text_of(&self, testid: &str) -> Option<String> {
        let marker = format!(r#"data-testid="{testid}""#);
        let rest = self.text.split(&marker).nth(1)?;
        let inner = rest.split_once('>')?.1;
        Some(inner.split('<').next()?.to_owned())
    }

    fn problem(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.text_of("problem-type").as_deref(), Some(format!("urn:landlord:problem:{kind}").as_str()));
    }

    fn csrf(&self) -> String {
        let start = self.text.find(r#"<meta name="csrf-token" content=""#).map(|i| i + 33).unwrap_or(0);
        self.text[start..].split('"').next().unwrap_or_default().to_owned()
    }
}

impl Browser {
    fn new(h: &Harness) -> Result<Self> {
        let http = landlord_runtime::http::client_builder(&ExtraRoots::default())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base: h.api.clone(), cookie: None })
    }

    /// Signs in with `token`; the cookie is kept.
    async fn sign_in(h: &Harness, token: &str) -> Result<Self> {
        let mut browser = Self::new(h)?;
        let page = browser.login(token, false).await?;
        anyhow::ensure!(page.status == StatusCode::SEE_OTHER, "sign-in: {} {}", page.status, page.text);
        Ok(browser)
    }

    async fn login(&mut self, token: &str, https: bool) -> Result<Page> {
        let mut request = self.http.post(format!("{}/console/login", self.base)).form_body(&[("token", token)])?;
        if https {
            request = request.header("x-forwarded-proto", "https");
        }
        let page = Page::of(request.send().await?).await?;
        if let Some(set) = page.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()) {
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        Ok(page)
    }

    async fn get(&self, path: &str) -> Result<Page> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        Page::of(request.send().await?).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let mut request = self.http.post(format!("{}{path}", self.base)).form_body(fields)?;
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        Page::of(request.send().await?).await
    }

    /// The CSRF token of this session (from any page).
    async fn csrf(&self) -> Result<String> {
        Ok(self.get("/console").await?.csrf())
    }
}

/// reqwest's `form` needs a feature the workspace does not enable.
trait FormBody: Sized {
    fn form_body(self, fields: &[(&str, &str)]) -> Result<Self>;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, fields: &[(&str, &str)]) -> Result<Self> {
        Ok(self
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields)?))
    }
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_a_reader_sees_the_pages_but_cannot_act() -> Result<()> {
    let h = Harness::new().await?;
    h.create("acme", "standard", json!({"team": "red"})).await?;
    h.until_status("acme", "ACTIVE").await?;

    let mut anonymous = Browser::new(&h)?;
    let page = anonymous.get("/console").await?;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, Some("/console/login")));
    let form = anonymous.get("/console/login").await?;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text.contains(r#"data-testid="login-form""#) && form.text.contains(r#"name="token""#));
    let refused = anonymous.login("not-a-token", false).await?;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.text_of("login-error").is_some_and(|e| e.contains("not a JWT")), "{}", refused.text);
    assert!(refused.headers.get(SET_COOKIE).is_none());
    let no_read = anonymous.login(&h.token(&[WRITE]), false).await?;
    assert_eq!(no_read.status, StatusCode::FORBIDDEN);

    let reader_token = h.token(&[READ]);
    let signed = anonymous.login(&reader_token, false).await?;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, Some("/console")));
    let cookie = signed.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).context("cookie")?.to_owned();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("landlord_console=") && attributes[0].len() > 40, "{cookie}");
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attributes.contains(&wanted), "{wanted} in {cookie}");
    }
    assert!(!attributes.contains(&"Secure"), "plain http: {cookie}");
    let max_age: u64 = attributes.iter().find_map(|a| a.strip_prefix("Max-Age=")).context("Max-Age")?.parse()?;
    assert!(max_age > 500 && max_age <= 600, "no longer than the token's 600 s: {max_age}");
    let mut secure = Browser::new(&h)?;
    let over_https = secure.login(&reader_token, true).await?;
    let cookie = over_https.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).context("cookie")?;
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");

    let reader = anonymous;
    let list = reader.get("/console").await?;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert!(list.text.contains(r#"data-testid="page-tenants""#));
    assert_eq!(list.attrs("tenant-row", "data-key"), ["acme"]);
    assert_eq!(list.attrs("tenant-status", "data-status"), ["ACTIVE"]);
    assert!(!list.text.contains(r#"data-testid="bulk-form""#), "a reader gets no bulk form");
    let page = reader.get("/console/tenants/acme").await?;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.attrs("tenant-status", "data-status"), ["ACTIVE"]);
    assert_eq!(page.attrs("step", "data-step"), ["s1", "s2"]);
    assert_eq!(page.attrs("step", "data-state"), ["succeeded", "succeeded"]);
    assert_eq!(page.attrs("resource", "data-kind"), ["test.s1", "test.s2"]);
    assert!(page.text.contains(r#"data-testid="read-only""#));
    assert!(page.text.contains(r#"data-live-url="/console/events?tenant=acme""#));
    let id = page.attrs("tenant", "data-id").pop().context("id")?;
    assert_eq!(reader.get(&format!("/console/tenants/{id}")).await?.attrs("tenant", "data-key"), ["acme"]);
    reader.get("/console/tenants/nobody").await?.problem(StatusCode::NOT_FOUND, "not-found");
    let fragment = reader.get("/console/tenants/acme/live.json").await?;
    let fragment: Value = serde_json::from_str(&fragment.text)?;
    assert_eq!(
        (fragment["status"].as_str(), fragment["sagas"][0]["state"].as_str()),
        (Some("ACTIVE"), Some("succeeded"))
    );
    let assets = reader.get("/console/assets/console.js").await?;
    assert!(assets.status == StatusCode::OK && assets.text.contains("EventSource"));

    // The reader's CSRF token is good, the scope is not: 403 as the API says it.
    let csrf = page.csrf();
    let refused = reader
        .post("/console/tenants/acme/suspend", &[("csrf", csrf.as_str()), ("reason", "r"), ("confirm_key", "acme")])
        .await?;
    refused.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert!(refused.text_of("problem-detail").is_some_and(|d| d.contains("tenants:write")));
    let refused = reader.post("/console/bulk", &[("csrf", csrf.as_str()), ("action", "retry")]).await?;
    refused.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert_eq!(h.until_status("acme", "ACTIVE").await?["status"], "ACTIVE");

    // Signing out clears the cookie.
    let out = reader.post("/console/logout", &[("csrf", csrf.as_str())]).await?;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, Some("/console/login")));
    assert!(out.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("Max-Age=0")));
    // A forged cookie is no session.
    let forged = Browser { cookie: Some("landlord_console=eyJzdWIiOiJ4In0.AAAA".into()), ..Browser::new(&h)? };
    assert_eq!(forged.get("/console").await?.status, StatusCode::SEE_OTHER);
    Ok(())
}

#[tokio::test]
async fn actions_need_the_sessions_csrf_token_a_reason_and_the_key() -> Result<()> {
    let h = Harness::new().await?;
    h.create("acme", "standard", json!({})).await?;
    h.until_status("acme", "ACTIVE").await?;
    let admin = Browser::sign_in(&h, &h.admin()).await?;
    let other = Browser::sign_in(&h, &h.admin()).await?;
    let csrf = admin.csrf().await?;
    let foreign = other.csrf().await?;
    assert!(!csrf.is_empty() && csrf != foreign, "two sessions, two tokens");
    let fields = |token: Option<&str>| {
        let mut f = vec![("reason", "unpaid invoices"), ("confirm_key", "acme"), ("nonce", "n1")];
        if let Some(t) = token {
            f.push(("csrf", t));
        }
        f.into_iter().map(|(a, b)| (a.to_owned(), b.to_owned())).collect::<Vec<_>>()
    };
    for token in [None, Some("forged"), Some(foreign.as_str())] {
        let f = fields(token);
        admin.post("/console/tenants/acme/suspend", &pairs(&f)).await?.problem(StatusCode::FORBIDDEN, "csrf");
    }
    // The token in a header does as well as the field (the script's way).
    let header = admin
        .http
        .post(format!("{}/console/tenants/acme/suspend", admin.base))
        .header(COOKIE, admin.cookie.clone().context("cookie")?)
        .header("x-csrf-token", "forged")
        .form_body(&pairs(&fields(None)))?
        .send()
        .await?;
    Page::of(header).await?.problem(StatusCode::FORBIDDEN, "csrf");
    // A destructive action wants the key typed, and a reason.
    let wrong_key = [("csrf", csrf.as_str()), ("reason", "r"), ("confirm_key", "acm")];
    let page = admin.post("/console/tenants/acme/suspend", &wrong_key).await?;
    page.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let no_reason = [("csrf", csrf.as_str()), ("confirm_key", "acme")];
    admin
        .post("/console/tenants/acme/suspend", &no_reason)
        .await?
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    // Refused as the API refuses: a retry of an ACTIVE tenant.
    admin
        .post("/console/tenants/acme/retry", &[("csrf", csrf.as_str())])
        .await?
        .problem(StatusCode::CONFLICT, "not-retryable");
    assert_eq!(h.until_status("acme", "ACTIVE").await?["status"], "ACTIVE");

    let done = admin.post("/console/tenants/acme/suspend", &pairs(&fields(Some(csrf.as_str())))).await?;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, Some("/console/tenants/acme?done=suspend")));
    h.until_status("acme", "SUSPENDED").await?;
    let page = admin.get("/console/tenants/acme?done=suspend").await?;
    assert!(page.text_of("flash").is_some_and(|f| f.contains("suspend")));
    assert_eq!(page.attrs("saga", "data-operation")[0], "suspend");
    let audit = page.attrs("audit-entry", "data-action");
    assert!(!audit.is_empty(), "the suspend is in the audit log: {}", page.text);
    let (_, api) = h.get("/v1/tenants/acme/audit", &h.admin()).await?;
    let items = api["items"].as_array().context("audit items")?;
    assert!(items.iter().any(|i| i["detail"]["reason"] == "unpaid invoices" && i["actor"] == "tester"), "{api}");
    // The same form sent twice is one request (its nonce is the Idempotency-Key).
    let again = admin.post("/console/tenants/acme/suspend", &pairs(&fields(Some(csrf.as_str())))).await?;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.text);
    Ok(())
}

#[tokio::test]
async fn a_bulk_action_counts_first_reports_the_ineligible_and_runs_per_item() -> Result<()> {
    let h = Harness::new().await?;
    for key in ["ok-one", "ok-two"] {
        h.create(key, "standard", json!({"fleet": "blue"})).await?;
    }
    h.create("broken", "standard", json!({"fleet": "blue", "script.s1": "fail-once"})).await?;
    h.create("elsewhere", "standard", json!({"fleet": "green"})).await?;
    for key in ["ok-one", "ok-two", "elsewhere"] {
        h.until_status(key, "ACTIVE").await?;
    }
    h.until_status("broken", "FAILED").await?;
    let admin = Browser::sign_in(&h, &h.admin()).await?;
    let csrf = admin.csrf().await?;
    let preview = admin
        .post(
            "/console/bulk",
            &[("csrf", csrf.as_str()), ("label", "fleet=blue"), ("action", "suspend"), ("reason", "audit")],
        )
        .await?;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert_eq!(preview.text_of("bulk-eligible-count").as_deref(), Some("2"));
    let mut eligible = preview.attrs("bulk-eligible", "data-key");
    eligible.sort();
    assert_eq!(eligible, ["ok-one", "ok-two"]);
    assert_eq!(preview.attrs("bulk-ineligible", "data-key"), ["broken"]);
    assert!(preview.text_of("bulk-ineligible-reason").is_some_and(|r| r.contains("FAILED")));
    // Destructive: the count must be typed.
    let run = |confirm: &str| {
        [
            ("csrf", csrf.as_str()),
            ("action", "suspend"),
            ("reason", "audit"),
            ("nonce", "bulk-1"),
            ("key", "ok-one"),
            // Became ineligible meanwhile (or forged): refused, the rest goes on.
            ("key", "broken"),
            ("key", "ok-two"),
            ("confirm", confirm),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    };
    admin.post("/console/bulk/run", &pairs(&run("2"))).await?.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let result = admin.post("/console/bulk/run", &pairs(&run("3"))).await?;
    assert_eq!(result.status, StatusCode::OK, "{}", result.text);
    assert_eq!(result.attrs("bulk-result", "data-key"), ["ok-one", "broken", "ok-two"]);
    assert_eq!(result.attrs("bulk-result", "data-ok"), ["true", "false", "true"]);
    assert_eq!(result.text_of("bulk-summary").as_deref(), Some("2 done, 1 failed"));
    assert!(result.text.contains("409"), "{}", result.text);
    h.until_status("ok-one", "SUSPENDED").await?;
    h.until_status("ok-two", "SUSPENDED").await?;
    assert_eq!(h.until_status("broken", "FAILED").await?["status"], "FAILED");
    assert_eq!(h.until_status("elsewhere", "ACTIVE").await?["status"], "ACTIVE");
    // A retry of the filter's FAILED tenants (not destructive: no count to type).
    let preview =
        admin.post("/console/bulk", &[("csrf", csrf.as_str()), ("status", "FAILED"), ("action", "retry")]).await?;
    assert_eq!(preview.attrs("bulk-eligible", "data-key"), ["broken"]);
    let result = admin
        .post("/console/bulk/run", &[("csrf", csrf.as_str()), ("action", "retry"), ("key", "broken"), ("nonce", "b2")])
        .await?;
    assert_eq!(result.attrs("bulk-result", "data-ok"), ["true"]);
    h.until_status("broken", "ACTIVE").await?;
    Ok(())
}

#[tokio::test]
async fn the_event_feed_is_json_for_a_signed_in_browser() -> Result<()> {
    let h = Harness::new().await?;
    let anonymous = Browser::new(&h)?;
    assert_eq!(anonymous.get("/console/events").await?.status, StatusCode::SEE_OTHER);
    let reader = Browser::sign_in(&h, &h.token(&[READ])).await?;
    let mut feed = reader
        .http
        .get(format!("{}/console/events?tenant=acme", reader.base))
        .header(COOKIE, reader.cookie.clone().context("cookie")?)
        .send()
        .await?;
    assert_eq!(feed.status(), StatusCode::OK);
    assert_eq!(feed.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    h.create("acme", "standard", json!({})).await?;
    let mut buffer = String::new();
    let mut events: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !events.iter().any(|e| e["event"] == "activated") {
        let chunk = tokio::time::timeout_at(deadline, feed.chunk()).await.context("the feed went quiet")??;
        buffer.push_str(&String::from_utf8_lossy(&chunk.context("the feed ended")?));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    events.push(serde_json::from_str(data.trim())?);
                }
            }
        }
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"requested"), "{names:?}");
    assert!(events.iter().all(|e| e["tenant"] == "acme"), "{events:?}");
    let requested = &events[0];
    assert_eq!(requested["detail"]["key"], "acme");
    assert_eq!(requested["detail"]["plan"], "standard");
    let step = events.iter().find(|e| e["event"] == "step_succeeded").context("a step event")?;
    assert!(step["saga_id"].as_str().is_some_and(|s| Uuid::parse_str(s).is_ok()), "{step}");
    assert_eq!(step["step_state"], "succeeded");
    assert!(step["detail"]["progress"]["steps"].is_array(), "{step}");
    let activated = events.last().context("activated")?;
    assert_eq!(activated["status"], "ACTIVE");
    assert!(activated["sequence"].as_u64().is_some_and(|s| s > 0));
    Ok(())
}

/// A tenant-scoped token signs in to a console that holds its tenant only
/// (issue 29 item 3): every other tenant answers as a missing one, and what
/// concerns every tenant (dead letters, the system page, bulk actions) is
/// refused.
#[tokio::test]
async fn a_tenant_scoped_session_sees_and_acts_on_its_own_tenant_only() -> Result<()> {
    let h = Harness::new().await?;
    let bravo = h.create("bravo", "standard", json!({})).await?;
    let alpha = h.create("alpha", "standard", json!({})).await?;
    h.until_status("alpha", "ACTIVE").await?;
    h.until_status("bravo", "ACTIVE").await?;
    let (alpha_id, bravo_id) = (alpha["tenant_id"].as_str().context("id")?, bravo["tenant_id"].as_str().context("id")?);
    let scopes = [READ.to_owned(), WRITE.to_owned()];
    let token = h.tokens.mint_scoped("alpha-admin", &scopes, Duration::from_secs(600), alpha_id);
    let alpha_admin = Browser::sign_in(&h, &token).await?;

    let list = alpha_admin.get("/console").await?;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.attrs("tenant-row", "data-key"), ["alpha"]);
    assert!(list.text_of("scope").is_some_and(|s| s.contains(alpha_id)), "{}", list.text);
    for global in ["bulk-form", "nav-dlq", "nav-system"] {
        assert!(!list.text.contains(&format!(r#"data-testid="{global}""#)), "no {global} for a scoped session");
    }
    let searched = alpha_admin.get("/console?q=bravo").await?;
    assert!(searched.attrs("tenant-row", "data-key").is_empty(), "{}", searched.text);
    let own = alpha_admin.get("/console/tenants/alpha").await?;
    assert_eq!(own.attrs("tenant-status", "data-status"), ["ACTIVE"]);

    // bravo, by key and by id, answers exactly as a tenant that does not exist.
    let missing = alpha_admin.get("/console/tenants/nobody").await?;
    missing.problem(StatusCode::NOT_FOUND, "not-found");
    for other in ["bravo", bravo_id] {
        let page = alpha_admin.get(&format!("/console/tenants/{other}")).await?;
        page.problem(StatusCode::NOT_FOUND, "not-found");
        assert_eq!(page.text.replace(other, "<t>"), missing.text.replace("nobody", "<t>"));
        alpha_admin
            .get(&format!("/console/tenants/{other}/live.json"))
            .await?
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    let statuses: Value = serde_json::from_str(&alpha_admin.get("/console/live.json?keys=alpha,bravo").await?.text)?;
    assert_eq!(statuses["items"], json!([{"key": "alpha", "status": "ACTIVE"}]));
    alpha_admin.get("/console/events?tenant=bravo").await?.problem(StatusCode::NOT_FOUND, "not-found");

    // Acting on bravo: not found, and bravo is untouched; on alpha: done.
    let csrf = own.csrf();
    let suspend =
        |key: &'static str| [("csrf", csrf.clone()), ("reason", "scoped".to_owned()), ("confirm_key", key.to_owned())];
    let refused = alpha_admin.post("/console/tenants/bravo/suspend", &pairs_of(&suspend("bravo"))).await?;
    refused.problem(StatusCode::NOT_FOUND, "not-found");
    for (path, fields) in [
        ("/console/bulk", vec![("csrf", csrf.as_str()), ("action", "retry")]),
        ("/console/bulk/run", vec![("csrf", csrf.as_str()), ("action", "retry"), ("key", "bravo")]),
        ("/console/dlq/redrive", vec![("csrf", csrf.as_str())]),
    ] {
        alpha_admin.post(path, &fields).await?.problem(StatusCode::FORBIDDEN, "tenant-scoped-token");
    }
    for path in ["/console/dlq", "/console/system"] {
        alpha_admin.get(path).await?.problem(StatusCode::FORBIDDEN, "tenant-scoped-token");
    }
    let done = alpha_admin.post("/console/tenants/alpha/suspend", &pairs_of(&suspend("alpha"))).await?;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    h.until_status("alpha", "SUSPENDED").await?;
    assert_eq!(h.until_status("bravo", "ACTIVE").await?["status"], "ACTIVE");
    Ok(())
}

fn pairs_of<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

/// A tenant row written directly, `age` seconds old.
async fn insert_tenant(
    h: &Harness,
    key: &str,
    status: &str,
    plan: &str,
    tier: &str,
    labels: Value,
    age: i64,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tenants (id, key, display_name, plan, tier, status, admin_email, labels, idempotency_id, created_at)
         VALUES ($1, $2, $2, $3, $4, $5, 'a@b.test', $6, $2, now() - $7 * interval '1 second')",
    )
    .bind(id)
    .bind(key)
    .bind(plan)
    .bind(tier)
    .bind(status)
    .bind(labels)
    .bind(age as f64)
    .execute(&h.pool)
    .await?;
    Ok(id)
}

/// A running saga whose one step started `ran` seconds ago, with a
/// `timeout` (seconds) and `attempts`.
async fn insert_running_step(h: &Harness, tenant: Uuid, ran: i64, timeout: i64, attempts: i32) -> Result<()> {
    let saga = Uuid::new_v4();
    sqlx::query("INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state) VALUES ($1, $2, 'provision', $1::text, 'running')")
        .bind(saga)
        .bind(tenant)
        .execute(&h.pool)
        .await?;
    sqlx::query(
        "INSERT INTO saga_steps (saga_id, position, name, service, action, fatal, timeout_ms, max_attempts, backoff_ms,
                                 state, attempts, started_at)
         VALUES ($1, 0, 's1', 'work', 'create_s1', true, $2, 3, '{}', 'running', $3, now() - $4 * interval '1 second')",
    )
    .bind(saga)
    .bind(timeout * 1000)
    .bind(attempts)
    .bind(ran as f64)
    .execute(&h.pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_list_pages_on_a_cursor_and_filters_stuck_tenants_labels_and_search() -> Result<()> {
    let h = Harness::new().await?;
    // Seven tenants, t1 oldest; rows written directly so that their ages
    // and sagas are exactly what the filters look at.
    let mut ids = Vec::new();
    for (i, (status, plan, tier, labels)) in [
        ("ACTIVE", "standard", "bridge", json!({"team": "red"})),
        ("FAILED", "standard", "bridge", json!({"team": "blue"})),
        ("PROVISIONING", "stuck", "silo", json!({})),
        ("PROVISIONING", "stuck", "silo", json!({"team": "red"})),
        ("PROVISIONING", "standard", "bridge", json!({})),
        ("SUSPENDED", "standard", "bridge", json!({})),
        ("ACTIVE", "stuck", "silo", json!({})),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("t{}", i + 1);
        ids.push(insert_tenant(&h, &key, status, plan, tier, labels, 1000 - i as i64 * 10).await?);
    }
    // t3: past its step's timeout; t4: retrying; t5: running, within its timeout.
    insert_running_step(&h, ids[2], 120, 60, 1).await?;
    insert_running_step(&h, ids[3], 5, 60, 2).await?;
    insert_running_step(&h, ids[4], 5, 60, 1).await?;
    sqlx::query("INSERT INTO clerk_organizations (org_id, tenant_key) VALUES ('org_2abc', 't6')")
        .execute(&h.pool)
        .await?;

    let reader = Browser::sign_in(&h, &h.token(&[READ])).await?;
    let keys = |page: &Page| page.attrs("tenant-row", "data-key");
    // Newest first, three at a time, the filter kept in the next link.
    let first = reader.get("/console?limit=3").await?;
    assert_eq!(keys(&first), ["t7", "t6", "t5"]);
    let next = first.attrs("next-page", "href").pop().context("a next page")?.replace("&amp;", "&");
    let second = reader.get(&next).await?;
    assert_eq!(keys(&second), ["t4", "t3", "t2"]);
    let next = second.attrs("next-page", "href").pop().context("a third page")?.replace("&amp;", "&");
    let third = reader.get(&next).await?;
    assert_eq!(keys(&third), ["t1"]);
    assert!(third.attrs("next-page", "href").is_empty());
    let filtered = reader.get("/console?tier=bridge&limit=2").await?;
    assert_eq!(keys(&filtered), ["t6", "t5"]);
    let next = filtered.attrs("next-page", "href").pop().context("next")?.replace("&amp;", "&");
    assert!(next.contains("tier=bridge"), "{next}");
    assert_eq!(keys(&reader.get(&next).await?), ["t2", "t1"]);

    for (query, expected) in [
        ("stuck=1", vec!["t4", "t3"]),
        ("status=PROVISIONING", vec!["t5", "t4", "t3"]),
        ("status=FAILED", vec!["t2"]),
        ("tier=silo", vec!["t7", "t4", "t3"]),
        ("plan=stuck&status=ACTIVE", vec!["t7"]),
        ("label=team%3Dred", vec!["t4", "t1"]),
        ("label=team", vec!["t4", "t2", "t1"]),
        ("label=team%3Dred&stuck=1", vec!["t4"]),
        ("q=t", vec!["t7", "t6", "t5", "t4", "t3", "t2", "t1"]),
        ("q=t3", vec!["t3"]),
        ("q=org_2abc", vec!["t6"]),
        ("q=nope", vec![]),
    ] {
        let page = reader.get(&format!("/console?{query}")).await?;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.text);
        assert_eq!(keys(&page), expected, "{query}");
        if expected.is_empty() {
            assert!(page.text.contains(r#"data-testid="no-tenants""#));
        }
    }
    let by_id = reader.get(&format!("/console?q={}", ids[1])).await?;
    assert_eq!(keys(&by_id), ["t2"]);
    let stuck = reader.get("/console?stuck=1").await?;
    assert_eq!(stuck.text.matches(r#"data-testid="tenant-stuck">stuck<"#).count(), 2);
    assert!(stuck.text.contains(r#"name="stuck" value="1" checked"#), "the filter form keeps the filter");
    reader.get("/console?status=NOPE").await?.problem(StatusCode::BAD_REQUEST, "status");
    reader.get("/console?after=garbage").await?.problem(StatusCode::BAD_REQUEST, "cursor");
    Ok(())
}

// Sign-in by OIDC (issue 26 item 1): the authorization code flow with PKCE
// against the Keycloak double.

const OIDC_REALM: &str = "ops";
const OIDC_CLIENT: (&str, &str) = ("landlord-console", "console-secret");

/// A console signing in with the Keycloak double's realm `ops`: its own
/// router over the harness's database and broker (the harness's console has
/// no OIDC settings), whose verifier takes the double's RS256 access tokens
/// (issuer: the realm's; audience: `landlord`, put there by the client's
/// audience mapper, as a Keycloak operator would configure it).
struct OidcConsole {
    base: String,
    issuer: String,
    double: landlord_testkit::KeycloakDouble,
    /// The double's id of the signed-in user, `sub` of its tokens.
    user_id: String,
    stop: CancellationToken,
}

impl Drop for OidcConsole {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The console asks for `scopes`; the double's client puts `audience`
/// into its access tokens.
async fn oidc_console(h: &Harness, scopes: &str, audience: &str) -> Result<OidcConsole> {
    use landlord_gateway::console::{self, oidc};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let callback = format!("{base}{}", oidc::CALLBACK);
    let double = landlord_testkit::KeycloakDouble::start().await?;
    double.add_realm(json!({"realm": OIDC_REALM, "enabled": true}));
    let user_id = double
        .add_user(
            OIDC_REALM,
            json!({"username": "ada", "email": "ada@ops.test", "enabled": true, "emailVerified": true}),
        )
        .context("the double's user")?;
    double
        .add_client(
            OIDC_REALM,
            json!({
                "clientId": OIDC_CLIENT.0, "enabled": true, "publicClient": false, "secret": OIDC_CLIENT.1,
                "standardFlowEnabled": true, "redirectUris": [callback],
                "attributes": {"pkce.code.challenge.method": "S256"},
                "defaultClientScopes": ["web-origins", "acr", "roles", "profile", "basic", "email"],
                "optionalClientScopes": ["tenants:read", "tenants:write", "offline_access"],
                "protocolMappers": [{"name": "api audience", "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {"included.custom.audience": audience, "access.token.claim": "true",
                               "id.token.claim": "false"}}],
            }),
        )
        .context("the double's client")?;
    double.sign_in_as(OIDC_REALM, Some("ada"));
    let issuer = double.issuer(OIDC_REALM);

    let jwks = landlord_gateway::jwks::Jwks::new(super::auth::jwks_settings(&format!(
        "{issuer}/protocol/openid-connect/certs"
    )))?;
    let verifier = landlord_gateway::Verifier::new(Some(h.tokens.clone()), Some(Arc::new(jwks)), "landlord", &issuer);
    let broker = landlord_runtime::Broker {
        client: h.nats.clone(),
        jetstream: h.jetstream.clone(),
        namespace: h.namespace.clone(),
    };
    let (dispatcher, _) =
        landlord_control_plane::outbox::Dispatcher::new(landlord_runtime::Publisher::new(&broker, "gateway"));
    let app = landlord_gateway::App {
        pool: h.pool.clone(),
        namespace: h.namespace.clone(),
        plans: Arc::new(landlord_control_plane::Plans::parse(PLANS).map_err(anyhow::Error::msg)?),
        dispatcher,
        verifier: Arc::new(verifier),
        clerk: None,
        lookups: None,
        jetstream: h.jetstream.clone(),
        deletion_grace: landlord_gateway::tenants::Grace::default(),
    };
    let settings = console::Settings {
        oidc: Some(oidc::Settings {
            issuer: issuer.clone(),
            client_id: OIDC_CLIENT.0.into(),
            client_secret: Some(OIDC_CLIENT.1.into()),
            scopes: oidc::with_openid(scopes),
            redirect_url: callback,
            roots: ExtraRoots::default(),
        }),
        ..console::Settings::default()
    };
    let console = console::Console::new(app.clone(), console::Keys::new(Some(JWT_SECRET.as_bytes()))?, settings)?;
    let router = landlord_gateway::router(app, &limits(), console);
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service).with_graceful_shutdown(async move { until.cancelled().await }).await;
    });
    Ok(OidcConsole { base, issuer, double, user_id, stop })
}

/// A browser with a cookie jar of its own for the console (a cookie by
/// name with its path; `Max-Age=0` removes it), never following redirects:
/// each hop is the test's.
struct OidcBrowser {
    http: reqwest::Client,
    base: String,
    /// name → (value, path).
    jar: HashMap<String, (String, String)>,
}

impl OidcBrowser {
    fn new(console: &OidcConsole) -> Result<Self> {
        let http = landlord_runtime::http::client_builder(&ExtraRoots::default())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base: console.base.clone(), jar: HashMap::new() })
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar.get(name).map(|(value, _)| value.clone())
    }

    fn set_cookie(&mut self, name: &str, value: &str, path: &str) {
        self.jar.insert(name.to_owned(), (value.to_owned(), path.to_owned()));
    }

    /// A GET of a console path (or a full URL on the console), with the
    /// cookies whose path it is under; the answer's cookies are kept.
    async fn console(&mut self, path_or_url: &str) -> Result<Page> {
        let url = if path_or_url.starts_with('/') { format!("{}{path_or_url}", self.base) } else { path_or_url.into() };
        let path = url.strip_prefix(&self.base).unwrap_or("/").split('?').next().unwrap_or("/").to_owned();
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|(_, (_, scope))| path.starts_with(scope.as_str()))
            .map(|(name, (value, _))| format!("{name}={value}"))
            .collect();
        let mut request = self.http.get(&url);
        if !cookies.is_empty() {
            request = request.header(COOKIE, cookies.join("; "));
        }
        let page = Page::of(request.send().await?).await?;
        for set in page.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let mut attributes = set.split(';').map(str::trim);
            let Some((name, value)) = attributes.next().and_then(|pair| pair.split_once('=')) else { continue };
            let attributes: Vec<&str> = attributes.collect();
            if attributes.contains(&"Max-Age=0") {
                self.jar.remove(name);
            } else {
                let scope = attributes.iter().find_map(|a| a.strip_prefix("Path=")).unwrap_or("/");
                self.set_cookie(name, value, scope);
            }
        }
        Ok(page)
    }

    /// A GET at the identity provider: no console cookie goes there.
    async fn idp(&self, url: &str) -> Result<Page> {
        Page::of(self.http.get(url).send().await?).await
    }

    /// Start → the double (which approves the signed-in user) → the
    /// callback URL it redirects to, not yet followed.
    async fn through_the_idp(&mut self) -> Result<String> {
        let start = self.console("/console/oidc/start").await?;
        anyhow::ensure!(start.status == StatusCode::SEE_OTHER, "start: {} {}", start.status, start.text);
        let at_idp = self.idp(start.location().context("start: no Location")?).await?;
        anyhow::ensure!(at_idp.status == StatusCode::FOUND, "the double: {} {}", at_idp.status, at_idp.text);
        Ok(at_idp.location().context("the double: no Location")?.to_owned())
    }
}

/// The query parameters of a URL.
fn query_of(url: &str) -> Result<HashMap<String, String>> {
    Ok(reqwest::Url::parse(url)?.query_pairs().into_owned().collect())
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> Result<String> {
    let mut parsed = reqwest::Url::parse(url)?;
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().filter(|(k, _)| k != name).collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs).append_pair(name, value);
    Ok(parsed.into())
}

#[tokio::test]
async fn an_oidc_sign_in_with_pkce_sets_the_session_cookie_and_its_code_and_state_work_once() -> Result<()> {
    use landlord_gateway::console::oidc::FLOW_COOKIE;
    use landlord_gateway::console::session::COOKIE as SESSION_COOKIE;

    let h = Harness::new().await?;
    let c = oidc_console(&h, "tenants:read tenants:write", "landlord").await?;
    let mut browser = OidcBrowser::new(&c)?;
    let login = browser.console("/console/login").await?;
    assert_eq!(login.attrs("login-oidc", "href"), ["/console/oidc/start"], "{}", login.text);
    assert!(login.text_of("login-oidc").is_some_and(|t| t.contains("/realms/ops")), "{}", login.text);

    // The start: a Lax flow cookie for /console/oidc, ten minutes, and the
    // authorization request with an S256 challenge.
    let start = browser.console("/console/oidc/start").await?;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text);
    let flow_set = start.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/console/oidc", "Max-Age=600"] {
        assert!(flow_set.split("; ").any(|a| a == attribute), "{attribute} in {flow_set}");
    }
    let authorize = start.location().context("Location")?.to_owned();
    assert!(authorize.starts_with(&format!("{}/protocol/openid-connect/auth?", c.issuer)), "{authorize}");
    let asked = query_of(&authorize)?;
    assert_eq!(asked["response_type"], "code");
    assert_eq!(asked["client_id"], OIDC_CLIENT.0);
    assert_eq!(asked["redirect_uri"], format!("{}/console/oidc/callback", c.base));
    assert_eq!(asked["scope"], "openid tenants:read tenants:write");
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["code_challenge"].len(), 43);
    assert!(asked["state"].len() >= 43 && asked["nonce"].len() >= 43 && asked["state"] != asked["nonce"]);

    // The double approves ada and sends the browser back with the code.
    let at_idp = browser.idp(&authorize).await?;
    assert_eq!(at_idp.status, StatusCode::FOUND, "{}", at_idp.text);
    let callback = at_idp.location().context("Location")?.to_owned();
    let answered = query_of(&callback)?;
    assert_eq!((answered["state"].as_str(), answered["iss"].as_str()), (asked["state"].as_str(), c.issuer.as_str()));
    let flow_cookie = browser.cookie(FLOW_COOKIE).context("the flow cookie")?;

    // The callback: the session cookie of the token sign-in, the flow
    // cookie cleared, and the console signed in as the access token's sub.
    let done = browser.console(&callback).await?;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, Some("/console")), "{}", done.text);
    let sets: Vec<&str> = done.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    let session_set = sets.iter().find(|s| s.starts_with(&format!("{SESSION_COOKIE}="))).context("session cookie")?;
    assert!(session_set.contains("HttpOnly") && session_set.contains("SameSite=Strict"), "{session_set}");
    assert!(sets.iter().any(|s| s.starts_with(&format!("{FLOW_COOKIE}=;")) && s.contains("Max-Age=0")), "{sets:?}");
    assert!(browser.cookie(FLOW_COOKIE).is_none());
    let list = browser.console("/console").await?;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let whoami = list.text_of("whoami").context("whoami")?;
    assert!(whoami.contains(&c.user_id) && whoami.contains("tenants:read tenants:write"), "{whoami}");
    // The code was exchanged once, with the verifier and the client's secret.
    let exchanges = c.double.requests_to("POST", "/protocol/openid-connect/token");
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(exchanges[0].status, 200);
    assert!(
        exchanges[0].body.contains("grant_type=authorization_code") && exchanges[0].body.contains("code_verifier=")
    );

    // The same callback again, with the flow cookie copied before it was
    // used: the double refuses the code a second time, and the console says so.
    let mut replay = OidcBrowser::new(&c)?;
    replay.set_cookie(FLOW_COOKIE, &flow_cookie, "/console/oidc");
    let replayed = replay.console(&callback).await?;
    replayed.problem(StatusCode::BAD_REQUEST, "oidc-code");
    assert!(replayed.text_of("problem-detail").is_some_and(|d| d.contains("Code not valid")), "{}", replayed.text);
    assert!(replay.cookie(SESSION_COOKIE).is_none());

    // A state that is not this browser's: refused before any exchange, the
    // flow ended; and a callback with no sign-in under way.
    let mut other = OidcBrowser::new(&c)?;
    let callback = other.through_the_idp().await?;
    let forged = other.console(&with_param(&callback, "state", "not-the-state")?).await?;
    forged.problem(StatusCode::BAD_REQUEST, "oidc-state");
    assert!(other.cookie(SESSION_COOKIE).is_none() && other.cookie(FLOW_COOKIE).is_none());
    other.console(&callback).await?.problem(StatusCode::BAD_REQUEST, "oidc-state");
    assert_eq!(
        c.double.requests_to("POST", "/protocol/openid-connect/token").len(),
        2,
        "the sign-in's and the replay's: no exchange without the state"
    );
    Ok(())
}

#[tokio::test]
async fn an_oidc_sign_in_is_refused_on_a_pkce_mismatch_and_for_access_tokens_the_api_would_refuse() -> Result<()> {
    use base64::Engine as _;
    use landlord_gateway::console::oidc::FLOW_COOKIE;
    use landlord_gateway::console::session::COOKIE as SESSION_COOKIE;

    let h = Harness::new().await?;
    let c = oidc_console(&h, "tenants:read", "landlord").await?;

    // A code issued for browser a's challenge, brought to browser b's
    // callback with b's state (code injection): b's verifier does not
    // match, the double refuses the exchange and the console shows why.
    let mut a = OidcBrowser::new(&c)?;
    let code_a = query_of(&a.through_the_idp().await?)?["code"].clone();
    let mut b = OidcBrowser::new(&c)?;
    let callback_b = b.through_the_idp().await?;
    let injected = b.console(&with_param(&callback_b, "code", &code_a)?).await?;
    injected.problem(StatusCode::BAD_REQUEST, "oidc-code");
    let detail = injected.text_of("problem-detail").unwrap_or_default();
    assert!(detail.contains("invalid_grant") && detail.contains("PKCE verification failed: Code mismatch"), "{detail}");
    assert!(b.cookie(SESSION_COOKIE).is_none());
    assert_eq!(c.double.requests_to("POST", "/protocol/openid-connect/token").last().map(|r| r.status), Some(400));

    // The double checks the verifier itself: a's own code with a's
    // verifier altered by one character is refused as Keycloak refuses it,
    // and the code is spent.
    let callback_a = a.through_the_idp().await?;
    let flow = a.cookie(FLOW_COOKIE).context("a's flow cookie")?;
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(flow.split('.').next().unwrap_or_default())?;
    let verifier = serde_json::from_slice::<Value>(&payload)?["verifier"].as_str().context("verifier")?.to_owned();
    let tampered = format!("{}{}", &verifier[..verifier.len() - 1], if verifier.ends_with('A') { 'B' } else { 'A' });
    let code = query_of(&callback_a)?["code"].clone();
    let redirect_uri = format!("{}/console/oidc/callback", c.base);
    let form: [(&str, &str); 6] = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &redirect_uri),
        ("code_verifier", &tampered),
        ("client_id", OIDC_CLIENT.0),
        ("client_secret", OIDC_CLIENT.1),
    ];
    let direct = h.http.post(format!("{}/protocol/openid-connect/token", c.issuer)).form_body(&form)?.send().await?;
    assert_eq!(direct.status(), StatusCode::BAD_REQUEST);
    let refusal: Value = direct.json().await?;
    assert_eq!(
        refusal,
        json!({"error": "invalid_grant", "error_description": "PKCE verification failed: Code mismatch"})
    );
    let spent = a.console(&callback_a).await?;
    spent.problem(StatusCode::BAD_REQUEST, "oidc-code");
    assert!(spent.text_of("problem-detail").is_some_and(|d| d.contains("Code not valid")), "{}", spent.text);

    // A console that does not ask for tenants:read: the access token the
    // double issues lacks it, and the session is refused as a token
    // without it is at the token sign-in.
    let reader_less = oidc_console(&h, "openid", "landlord").await?;
    let mut browser = OidcBrowser::new(&reader_less)?;
    let callback = browser.through_the_idp().await?;
    let refused = browser.console(&callback).await?;
    refused.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert!(refused.text_of("problem-detail").is_some_and(|d| d.contains("tenants:read")), "{}", refused.text);
    assert!(browser.cookie(SESSION_COOKIE).is_none());

    // Access tokens for another audience: not tokens the API takes, so no
    // session, and the page says what the IdP must issue.
    let elsewhere = oidc_console(&h, "tenants:read", "billing").await?;
    let mut browser = OidcBrowser::new(&elsewhere)?;
    let callback = browser.through_the_idp().await?;
    let refused = browser.console(&callback).await?;
    refused.problem(StatusCode::FORBIDDEN, "oidc-access-token");
    let detail = refused.text_of("problem-detail").unwrap_or_default();
    assert!(detail.contains("billing") && detail.contains("LANDLORD_JWT_AUDIENCE"), "{detail}");
    assert!(browser.cookie(SESSION_COOKIE).is_none());
    Ok(())
}
