//! The operator console (issue 26) in a real headless Chromium, driven over
//! WebDriver ([`landlord_testkit::browser`]), against the whole stack: the
//! service binaries, NATS, PostgreSQL and the gateway serving `/console`.
//! The pages are found by the `data-testid` attributes the console
//! promises (docs/console.md); every wait is on a condition in the page,
//! polled, with a deadline.
//!
//! `screenshots` (ignored: run by `just console-screenshots`) writes the
//! main pages to docs/console/*.png.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{SCOPES, Stack, uuid_like};
use landlord_testkit::browser::Browser;
use landlord_testkit::browser::fantoccini::Locator;
use landlord_testkit::browser::fantoccini::elements::Element;
use serde_json::{Value, json};

/// How long a page may take to show what the stack did.
const PAGE: Duration = Duration::from_secs(60);

/// A signed-in console in Chromium.
struct Console {
    browser: Browser,
    base: String,
}

impl Console {
    /// Chromium, not signed in yet.
    async fn open(stack: &Stack) -> Result<Self> {
        Ok(Self { browser: Browser::start().await?, base: stack.api_url() })
    }

    /// Chromium signed in with a token for `subject` with `scopes`.
    async fn signed_in(stack: &Stack, subject: &str, scopes: &[&str]) -> Result<Self> {
        let console = Self::open(stack).await?;
        console.sign_in(&stack.token(subject, scopes)).await?;
        Ok(console)
    }

    /// Pastes `token` into the sign-in form and waits for the tenant list.
    async fn sign_in(&self, token: &str) -> Result<()> {
        self.go("/console/login").await?;
        self.wait_page("login").await?;
        self.find(r#"[data-testid="login-token"]"#).await?.send_keys(token).await?;
        self.click(r#"[data-testid="login-submit"]"#).await?;
        self.wait_page("tenants").await
    }

    async fn go(&self, path: &str) -> Result<()> {
        self.browser.open(&format!("{}{path}", self.base)).await
    }

    /// Waits until the page shown is `page-<name>`.
    async fn wait_page(&self, name: &str) -> Result<()> {
        self.browser.wait_for(&format!(r#"body[data-testid="page-{name}"]"#), PAGE).await.map(drop)
    }

    /// Waits for the element `css`.
    async fn wait(&self, css: &str) -> Result<Element> {
        self.browser.wait_for(css, PAGE).await
    }

    /// The element `css`, which must be in the page now.
    async fn find(&self, css: &str) -> Result<Element> {
        match self.browser.client().find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(error) => {
                Err(anyhow::Error::new(error).context(format!("{css}\n{}", self.browser.describe_page().await)))
            }
        }
    }

    /// How many elements match `css` now.
    async fn count(&self, css: &str) -> Result<usize> {
        Ok(self.browser.client().find_all(Locator::Css(css)).await?.len())
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    async fn click(&self, css: &str) -> Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Runs `script` (an async function body) in the page; its result.
    async fn run(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        let wrapped = format!("return (async (...args) => {{ {script} }})(...arguments);");
        Ok(self.browser.client().execute(&wrapped, args).await?)
    }

    /// A POST from the page with `fetch()`, as a forged request would be
    /// sent: the session cookie goes along, the form carries `fields`.
    /// The status and the body of the answer.
    async fn post_from_page(&self, path: &str, fields: &[(&str, &str)]) -> Result<(u16, String)> {
        let fields: serde_json::Map<String, Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
        let answer = self
            .run(
                "const [path, fields] = args;
                 const response = await fetch(path, { method: 'POST', credentials: 'same-origin',
                     body: new URLSearchParams(fields) });
                 return [response.status, await response.text()];",
                vec![json!(path), Value::Object(fields)],
            )
            .await?;
        let status = answer[0].as_u64().context("no status")?;
        Ok((u16::try_from(status)?, answer[1].as_str().unwrap_or_default().to_owned()))
    }

    /// The CSRF token of the page's session (`<meta name="csrf-token">`).
    async fn csrf(&self) -> Result<String> {
        let meta = self.find(r#"meta[name="csrf-token"]"#).await?;
        meta.attr("content").await?.context("a csrf-token meta without content")
    }

    async fn close(self) -> Result<()> {
        self.browser.close().await
    }
}

/// Asks the API for tenant `key` of `plan` (202).
async fn create(stack: &Stack, key: &str, plan: &str) -> Result<()> {
    let answer = stack.create(key, plan, &uuid_like()).await?;
    anyhow::ensure!(answer.status == 202, "{key}: {answer}");
    Ok(())
}

/// Tenants that fail at their first step: the Keycloak double answers 500
/// until every one of them has given up its realm step and is
/// compensating; then Keycloak is back (the compensations reach it, as in
/// failures.rs) and each one ends FAILED.
async fn failed_tenants(stack: &Stack, keys: &[&str]) -> Result<()> {
    stack.keycloak.fail_next(100_000, 500);
    for key in keys {
        create(stack, key, "standard").await?;
    }
    for key in keys {
        stack.wait_status(key, "COMPENSATING", PAGE).await?;
    }
    stack.keycloak.clear_failures();
    for key in keys {
        stack.wait_status(key, "FAILED", PAGE).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_tenant_requested_while_its_page_is_open_turns_active_live() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    let console = Console::open(&stack).await?;

    // A token the gateway did not sign is refused, with the reason.
    console.go("/console/login").await?;
    console.find(r#"[data-testid="login-token"]"#).await?.send_keys("not.a.token").await?;
    console.click(r#"[data-testid="login-submit"]"#).await?;
    let error = console.browser.wait_text(r#"[data-testid="login-error"]"#, PAGE, |t| !t.is_empty()).await?;
    assert!(!error.is_empty(), "{error}");
    // A page without a session leads to the sign-in.
    console.go("/console").await?;
    console.wait_page("login").await?;

    console.sign_in(&stack.token("ada", &SCOPES)).await?;
    let whoami = console.text(r#"[data-testid="whoami"]"#).await?;
    assert!(whoami.contains("ada") && whoami.contains("tenants:write"), "{whoami}");

    // The orchestrator holds the request: the page shows it REQUESTED.
    stack.pause_service("orchestrator");
    create(&stack, "livewatch", "standard").await?;
    console.go("/console/tenants/livewatch").await?;
    console.wait_page("tenant").await?;
    let status = console.find(r#"[data-testid="tenant-status"]"#).await?;
    assert_eq!(status.attr("data-status").await?.as_deref(), Some("REQUESTED"));
    console.wait(r#"body[data-live="sse"]"#).await?;
    // Marks this document: a reload would lose the mark.
    console.run("window.landlordMark = 'not reloaded'; return null;", vec![]).await?;

    stack.resume_service("orchestrator");
    console.wait(r#"[data-testid="tenant-status"][data-status="ACTIVE"]"#).await?;
    let mark = console.run("return window.landlordMark || null;", vec![]).await?;
    assert_eq!(mark, json!("not reloaded"), "the page was reloaded");
    // Through the events stream, not the polling fallback.
    assert_eq!(console.find("body").await?.attr("data-live").await?.as_deref(), Some("sse"));
    console.wait(r#"[data-testid="event"][data-event="activated"]"#).await?;
    // The saga's steps are shown, every one succeeded.
    let storage = console.wait(r#"[data-testid="step"][data-step="storage"][data-state="succeeded"]"#).await?;
    assert!(storage.text().await?.contains("storage"));
    assert_eq!(stack.tenant_row("livewatch").await?.status, "ACTIVE");
    console.close().await
}

#[tokio::test]
async fn a_failed_tenant_shows_its_failing_step_and_reason_and_is_retried_from_the_console() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    failed_tenants(&stack, &["brokenidp"]).await?;
    let reason = stack.tenant_row("brokenidp").await?.failure_reason.context("no failure reason")?;

    let console = Console::signed_in(&stack, "ada", &SCOPES).await?;
    console.go("/console/tenants/brokenidp").await?;
    console.wait_page("tenant").await?;
    let status = console.find(r#"[data-testid="tenant-status"]"#).await?;
    assert_eq!(status.attr("data-status").await?.as_deref(), Some("FAILED"));
    let failure = console.text(r#"[data-testid="tenant-failure"]"#).await?;
    assert!(failure.contains("idp_realm") && failure.contains(reason.trim()), "{failure}\nreason: {reason}");
    // The failing step's row says what went wrong, readably.
    let step = console
        .find(r#"[data-testid="saga"][data-state="failed"] [data-testid="step"][data-step="idp_realm"]"#)
        .await?;
    let error = step.find(Locator::Css(r#"[data-testid="step-error"]"#)).await?.text().await?;
    assert!(error.contains("500"), "the step's last error: {error:?}");
    let attempts = step.find(Locator::Css(r#"[data-testid="step-attempts"]"#)).await?.text().await?;
    // Attempts made of the plan's three (the double's 500 to the admin
    // token may end the step at its first attempt).
    let made = attempts.strip_suffix("/3").and_then(|n| n.trim().parse::<u32>().ok());
    assert!(made.is_some_and(|n| (1..=3).contains(&n)), "attempts: {attempts}");

    // Retried from the console: the same page turns ACTIVE.
    console.click(r#"[data-testid="action-retry"]"#).await?;
    let flash = console.browser.wait_text(r#"[data-testid="flash"]"#, PAGE, |t| t.contains("retry")).await?;
    assert!(flash.contains("retry"), "{flash}");
    console.wait(r#"[data-testid="tenant-status"][data-status="ACTIVE"]"#).await?;
    stack.wait_status("brokenidp", "ACTIVE", PAGE).await?;
    stack.assert_no_drift().await?;
    console.close().await
}

#[tokio::test]
async fn a_bulk_retry_on_the_filter_refuses_the_ineligible_tenant_and_retries_the_others() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    failed_tenants(&stack, &["bulkone", "bulktwo"]).await?;
    create(&stack, "bulkfine", "standard").await?;
    stack.wait_status("bulkfine", "ACTIVE", PAGE).await?;
    // Another tenant, outside the filter.
    create(&stack, "other", "free").await?;
    stack.wait_status("other", "ACTIVE", PAGE).await?;

    let console = Console::signed_in(&stack, "ada", &SCOPES).await?;
    console.go("/console?q=bulk").await?;
    console.wait_page("tenants").await?;
    assert_eq!(console.count(r#"[data-testid="tenant-row"]"#).await?, 3);
    console.find(r#"[data-testid="bulk-action"]"#).await?.select_by_value("retry").await?;
    console.find(r#"[data-testid="bulk-reason"]"#).await?.send_keys("Keycloak is back").await?;
    console.click(r#"[data-testid="bulk-submit"]"#).await?;

    // The count first, the ineligible tenant named with its reason.
    console.wait_page("bulk-confirm").await?;
    assert_eq!(console.text(r#"[data-testid="bulk-eligible-count"]"#).await?, "2");
    let ineligible = console.find(r#"[data-testid="bulk-ineligible"]"#).await?;
    assert_eq!(ineligible.attr("data-key").await?.as_deref(), Some("bulkfine"));
    let why = console.text(r#"[data-testid="bulk-ineligible-reason"]"#).await?;
    assert!(!why.is_empty(), "no reason given for bulkfine");
    console.click(r#"[data-testid="bulk-confirm"]"#).await?;

    // One result per eligible tenant.
    console.wait_page("bulk-result").await?;
    let rows = console.browser.client().find_all(Locator::Css(r#"[data-testid="bulk-result"]"#)).await?;
    let mut results = Vec::new();
    for row in rows {
        results.push((row.attr("data-key").await?.unwrap_or_default(), row.attr("data-ok").await?.unwrap_or_default()));
    }
    results.sort();
    assert_eq!(
        results,
        [("bulkone".to_owned(), "true".to_owned()), ("bulktwo".to_owned(), "true".to_owned())],
        "{}",
        console.browser.describe_page().await
    );
    for key in ["bulkone", "bulktwo"] {
        stack.wait_status(key, "ACTIVE", PAGE).await?;
    }
    // The ineligible tenant was left alone: one saga, as before.
    assert_eq!(stack.sagas("bulkfine").await?.len(), 1);
    console.close().await
}

#[tokio::test]
async fn a_dead_letter_is_shown_decoded_and_redriven_to_its_subject() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    // A command no worker can decode: the idp worker parks it at once.
    let broker = stack.connect("console-test").await?;
    let publisher = landlord_runtime::Publisher::new(&broker, "console-test");
    let subject = stack.namespace.command_subject("idp", "create_realm");
    let headers =
        publisher.headers::<landlord_contract::pb::StepCommand>(&landlord_runtime::Envelope::new(uuid_like()));
    // Field 1 with wire type 7, which does not exist: protobuf cannot decode it.
    publisher.publish_raw(subject.clone(), headers, b"\x0f not a step command".to_vec().into()).await?;

    let console = Console::signed_in(&stack, "ada", &SCOPES).await?;
    let row = r#"[data-testid="dlq-row"]"#;
    // The page lists what is parked when it is loaded: loaded again until
    // the letter is there.
    let first = console
        .browser
        .wait_until("the dead letter on /console/dlq", PAGE, || async {
            console.go("/console/dlq").await.ok()?;
            let row = console.browser.client().find(Locator::Css(row)).await.ok()?;
            row.attr("data-sequence").await.ok()?
        })
        .await?;
    assert!(console.text(r#"[data-testid="dlq-subject"]"#).await?.contains(&subject));
    let reason = console.text(r#"[data-testid="dlq-reason"]"#).await?;
    assert!(reason.contains("decode"), "reason: {reason}");
    let message = console.text(r#"[data-testid="dlq-message"]"#).await?;
    assert!(message.contains("undecoded_bytes"), "message: {message}");

    console.click(&format!(r#"[data-testid="dlq-row"][data-sequence="{first}"] [data-testid="dlq-redrive"]"#)).await?;
    console.wait_page("bulk-result").await?;
    let result = console.find(r#"[data-testid="bulk-result"]"#).await?;
    assert_eq!(result.attr("data-key").await?.as_deref(), Some(first.as_str()));
    assert_eq!(result.attr("data-ok").await?.as_deref(), Some("true"), "{}", console.browser.describe_page().await);

    // Published again on its subject: the worker parks it once more, under
    // a new sequence; the redriven letter is gone.
    let second = console
        .browser
        .wait_until("the redriven letter parked again", PAGE, || async {
            console.go("/console/dlq").await.ok()?;
            let rows = console.browser.client().find_all(Locator::Css(row)).await.ok()?;
            let mut sequences = Vec::new();
            for row in rows {
                sequences.push(row.attr("data-sequence").await.ok()??);
            }
            (sequences.len() == 1 && sequences[0] != first).then(|| sequences[0].clone())
        })
        .await?;
    assert!(console.text(r#"[data-testid="dlq-subject"]"#).await?.contains(&subject), "{second}");
    console.close().await
}

#[tokio::test]
async fn actions_without_their_scope_or_without_the_csrf_token_are_refused() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    create(&stack, "guarded", "free").await?;
    stack.wait_status("guarded", "ACTIVE", PAGE).await?;
    let console = Console::signed_in(&stack, "ada", &SCOPES).await?;
    console.go("/console/tenants/guarded").await?;
    console.wait_page("tenant").await?;
    let suspend = [("reason", "forged"), ("confirm_key", "guarded")];

    // A request from the page without the CSRF token: 403.
    let (status, page) = console.post_from_page("/console/tenants/guarded/suspend", &suspend).await?;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("urn:landlord:problem:csrf"), "{page}");
    // With a token of another session: 403.
    let mut wrong = suspend.to_vec();
    wrong.push(("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    let (status, page) = console.post_from_page("/console/tenants/guarded/suspend", &wrong).await?;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("urn:landlord:problem:csrf"), "{page}");
    // The session cookie alone, from outside the browser: 403.
    let cookie = console.browser.client().get_named_cookie("landlord_console").await?;
    let http = landlord_runtime::http::client_builder(&Default::default())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let forged = http
        .post(format!("{}/console/tenants/guarded/suspend", stack.api_url()))
        .header("cookie", format!("landlord_console={}", cookie.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("reason=forged&confirm_key=guarded")
        .send()
        .await?;
    assert_eq!(forged.status().as_u16(), 403);
    assert!(forged.text().await?.contains("urn:landlord:problem:csrf"));
    // Nothing was asked for.
    assert_eq!(stack.sagas("guarded").await?.len(), 1);
    assert_eq!(stack.tenant_row("guarded").await?.status, "ACTIVE");

    // The same request with the session's token goes through: the refusals
    // above were the token's doing.
    let csrf = console.csrf().await?;
    let mut signed = suspend.to_vec();
    signed.push(("csrf", &csrf));
    let (status, page) = console.post_from_page("/console/tenants/guarded/suspend", &signed).await?;
    assert_eq!(status, 200, "{page}");
    stack.wait_status("guarded", "SUSPENDED", PAGE).await?;

    // A read-only session: no action is offered, and one sent anyway with
    // the session's CSRF token is refused for the scope.
    console.sign_in(&stack.token("reader", &["tenants:read"])).await?;
    console.go("/console/tenants/guarded").await?;
    console.wait_page("tenant").await?;
    console.find(r#"[data-testid="read-only"]"#).await?;
    assert_eq!(console.count(r#"[data-testid^="action-"]"#).await?, 0);
    let csrf = console.csrf().await?;
    let (status, page) = console.post_from_page("/console/tenants/guarded/resume", &[("csrf", &csrf)]).await?;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("urn:landlord:problem:missing-scope"), "{page}");
    assert_eq!(stack.sagas("guarded").await?.len(), 2);
    assert_eq!(stack.tenant_row("guarded").await?.status, "SUSPENDED");
    console.close().await
}

/// The main pages as PNGs in docs/console/ (`just console-screenshots`).
#[tokio::test]
#[ignore = "writes docs/console/*.png: run by `just console-screenshots`"]
async fn screenshots() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    failed_tenants(&stack, &["globex"]).await?;
    for (key, plan) in [("acme", "standard"), ("initech", "free"), ("umbrella", "enterprise"), ("hooli", "free")] {
        create(&stack, key, plan).await?;
    }
    for key in ["acme", "initech", "umbrella", "hooli"] {
        stack.wait_status(key, "ACTIVE", PAGE).await?;
    }
    let broker = stack.connect("console-shots").await?;
    let publisher = landlord_runtime::Publisher::new(&broker, "console-shots");
    let headers =
        publisher.headers::<landlord_contract::pb::StepCommand>(&landlord_runtime::Envelope::new(uuid_like()));
    publisher
        .publish_raw(stack.namespace.command_subject("storage", "create_bucket"), headers, b"\x0f".to_vec().into())
        .await?;

    let dir = landlord_testkit::workspace_root().join("docs/console");
    std::fs::create_dir_all(&dir)?;
    let console = Console::open(&stack).await?;
    let shot = |name: &'static str| {
        let path = dir.join(format!("{name}.png"));
        let console = &console;
        async move {
            let png = console.browser.screenshot().await?;
            std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))
        }
    };
    console.go("/console/login").await?;
    console.wait_page("login").await?;
    shot("login").await?;
    console.sign_in(&stack.token("ada", &SCOPES)).await?;
    shot("tenants").await?;
    console.go("/console/tenants/acme").await?;
    console.wait(r#"[data-testid="step"][data-step="storage"]"#).await?;
    shot("tenant").await?;
    console.go("/console/tenants/globex").await?;
    console.wait(r#"[data-testid="tenant-failure"]"#).await?;
    shot("tenant-failed").await?;
    console.go("/console?status=ACTIVE").await?;
    console.find(r#"[data-testid="bulk-action"]"#).await?.select_by_value("suspend").await?;
    console.find(r#"[data-testid="bulk-reason"]"#).await?.send_keys("maintenance window").await?;
    console.click(r#"[data-testid="bulk-submit"]"#).await?;
    console.wait_page("bulk-confirm").await?;
    shot("bulk-confirm").await?;
    console
        .browser
        .wait_until("the dead letter", PAGE, || async {
            console.go("/console/dlq").await.ok()?;
            console.browser.client().find(Locator::Css(r#"[data-testid="dlq-row"]"#)).await.ok()
        })
        .await?;
    shot("dead-letters").await?;
    console.go("/console/system").await?;
    console.wait_page("system").await?;
    shot("system").await?;
    console.close().await
}
