//! Self-service sign-up (issue 29 item 1): the sign-up row, the
//! verification mail's command with its link, following the link to an
//! ACTIVE tenant through the real orchestrator; expired, re-used, forged
//! and re-sent links; a key taken meanwhile; floods.

use futures_util::StreamExt as _;

use super::*;

/// The verification mails asked of the notification service.
struct Mailbox(async_nats::Subscriber);

impl Mailbox {
    async fn watch(h: &Harness) -> Result<Self> {
        let subject = h.namespace.command_subject("notification", "send_signup_verification");
        let subscriber = h.nats.subscribe(subject).await?;
        h.nats.flush().await?;
        Ok(Self(subscriber))
    }

    /// The next mail's command.
    async fn next(&mut self) -> Result<pb::StepCommand> {
        let message = tokio::time::timeout(WAIT, self.0.next())
            .await
            .context("no verification mail within the wait")?
            .context("subscription closed")?;
        Ok(<pb::StepCommand as prost::Message>::decode(message.payload)?)
    }

    /// The next mail's link.
    async fn link(&mut self) -> Result<String> {
        let command = self.next().await?;
        command.inputs.get("signup.link").cloned().context("the mail carries no link")
    }
}

fn signup(email: &str, key: &str) -> Value {
    json!({"email": email, "company_name": format!("Company {key}"), "key": key, "plan": "standard"})
}

impl Harness {
    async fn sign_up(&self, body: &Value) -> Result<Answer> {
        self.post("/v1/signups", None, None, body).await
    }

    async fn follow(&self, link: &str, accept: &str) -> Result<Answer> {
        Answer::of(self.http.get(link).header("accept", accept).send().await?).await
    }

    async fn signups(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM signups").fetch_one(&self.pool).await?)
    }
}

fn token_of(link: &str) -> Result<&str> {
    link.split_once("token=").map(|(_, token)| token).context("no token in the link")
}

#[tokio::test]
async fn a_sign_up_mails_a_link_whose_first_click_requests_the_tenant_once() -> Result<()> {
    let h = Harness::new().await?;
    let mut mailbox = Mailbox::watch(&h).await?;
    let answer = h.sign_up(&signup("Lead@example.com", "lead")).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["status"], "verification_sent");

    let mail = mailbox.next().await?;
    let tenant = mail.tenant.clone().context("tenant")?;
    assert_eq!((tenant.key.as_str(), tenant.display_name.as_str()), ("lead", "Company lead"));
    assert_eq!(tenant.admin.context("admin")?.email, "Lead@example.com");
    assert!(mail.inputs.contains_key("signup.expires_at"), "{mail:?}");
    let link = mail.inputs.get("signup.link").context("link")?.clone();
    assert!(link.starts_with(&format!("{}/v1/signups/verify?token=", h.api)), "{link}");
    // Only the token's hash is stored.
    let token = token_of(&link)?;
    let (id, hashed): (uuid::Uuid, bool) = sqlx::query_as(
        "SELECT id, token_sha256 = sha256(convert_to($1, 'UTF8')) FROM signups WHERE tenant_key = 'lead'",
    )
    .bind(token)
    .fetch_one(&h.pool)
    .await?;
    assert!(hashed, "the stored hash is not the token's SHA-256");
    assert_eq!(mail.saga_id, format!("signup:{id}"));
    assert_eq!(mail.step, "signup_verification_1");

    let page = h.follow(&link, "text/html").await?;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert!(page.headers["content-type"].to_str()?.starts_with("text/html"), "{page:?}");
    let html = page.body.as_str().context("html")?;
    assert!(html.contains("Your email is confirmed") && html.contains("/v1/tenants/"), "{html}");

    let active = h.until_status("lead", "ACTIVE").await?;
    assert_eq!(active["display_name"], "Company lead");
    h.until_count(&h.requested_subject("lead"), 1).await?;
    let stream = h.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    let requested = stream.get_last_raw_message_by_subject(&h.requested_subject("lead")).await?;
    let requested = <pb::TenantRequested as prost::Message>::decode(requested.payload)?;
    assert_eq!(requested.idempotency_id, format!("signup:{id}"));
    assert_eq!(requested.source, "signup");
    assert_eq!(requested.admin.context("admin")?.email, "Lead@example.com");

    // A second click shows the tenant's status and requests nothing.
    let again = h.follow(&link, "application/json").await?;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["first_visit"], false);
    assert_eq!(again.body["status"], "ACTIVE");
    assert_eq!(again.body["status_url"], format!("/v1/tenants/{}", active["id"].as_str().context("id")?));
    assert_eq!(h.count(&h.requested_subject("lead")).await?, 1);
    // The key is taken now, and a new sign-up for it is refused.
    let (code, check) = h.get("/v1/tenant-keys/lead", "").await?;
    assert_eq!((code, check), (StatusCode::OK, json!({"key": "lead", "available": false, "reason": "taken"})));
    h.sign_up(&signup("other@example.com", "lead")).await?.problem(StatusCode::CONFLICT, "tenant-key-taken");
    Ok(())
}

#[tokio::test]
async fn expired_reused_forged_and_resent_links() -> Result<()> {
    let h = Harness::new().await?;
    let mut mailbox = Mailbox::watch(&h).await?;
    let answer = h.sign_up(&signup("late@example.com", "late")).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let first = mailbox.link().await?;

    // A re-send mails a new link; the old one dies.
    let resend = json!({"email": "LATE@example.com", "key": "late"});
    let answer = h.post("/v1/signups/resend", None, None, &resend).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let resent = mailbox.next().await?;
    assert_eq!(resent.step, "signup_verification_2", "a new step: the notification ledger would drop a repeat");
    let second = resent.inputs.get("signup.link").context("link")?.clone();
    assert_ne!(first, second);
    h.follow(&first, "application/json").await?.problem(StatusCode::NOT_FOUND, "not-found");
    let forged = format!("{}/v1/signups/verify?token={}", h.api, "ab".repeat(32));
    h.follow(&forged, "application/json").await?.problem(StatusCode::NOT_FOUND, "not-found");
    h.follow(&format!("{}/v1/signups/verify", h.api), "application/json")
        .await?
        .problem(StatusCode::NOT_FOUND, "not-found");

    // Expired: 410, nothing requested; pruned only a day after.
    sqlx::query("UPDATE signups SET expires_at = now() - interval '1 minute'").execute(&h.pool).await?;
    h.follow(&second, "application/json").await?.problem(StatusCode::GONE, "signup-expired");
    assert_eq!(h.count(&h.requested_subject("late")).await?, 0);
    assert_eq!(landlord_gateway::signup::prune_once(&h.pool).await?, 0);

    // Re-sent a bounded number of times (3), each a new link that lives again.
    for _ in 0..2 {
        let answer = h.post("/v1/signups/resend", None, None, &resend).await?;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        mailbox.link().await?;
    }
    let answer = h.post("/v1/signups/resend", None, None, &resend).await?;
    answer.problem(StatusCode::TOO_MANY_REQUESTS, "resend-limit");

    sqlx::query("UPDATE signups SET expires_at = now() - interval '2 days'").execute(&h.pool).await?;
    assert_eq!(landlord_gateway::signup::prune_once(&h.pool).await?, 1);
    assert_eq!(h.signups().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_key_taken_between_sign_up_and_verification_creates_nothing() -> Result<()> {
    let h = Harness::new().await?;
    let mut mailbox = Mailbox::watch(&h).await?;
    let (code, free) = h.get("/v1/tenant-keys/contested", "").await?;
    assert_eq!((code, free), (StatusCode::OK, json!({"key": "contested", "available": true})));
    let (code, short) = h.get("/v1/tenant-keys/ab", "").await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((short["available"].clone(), short["rule"].clone()), (json!(false), json!("tenant_key.too_short")));

    let answer = h.sign_up(&signup("first@example.com", "contested")).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let link = mailbox.link().await?;
    h.create("contested", "standard", json!({})).await?;
    h.follow(&link, "application/json").await?.problem(StatusCode::CONFLICT, "tenant-key-taken");
    let verified: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signups WHERE verified_at IS NOT NULL").fetch_one(&h.pool).await?;
    assert_eq!(verified, 0);
    h.until_count(&h.requested_subject("contested"), 1).await?;

    // Refusals at once: a broken key, an unknown plan.
    let mut bad = signup("b@example.com", "Bad Key");
    h.sign_up(&bad).await?.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    bad = json!({"email": "b@example.com", "company_name": "B", "key": "bee", "plan": "gold"});
    let answer = h.sign_up(&bad).await?;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{answer:?}");

    // The honeypot: answered as accepted, nothing stored or mailed.
    let mut bot = signup("bot@example.com", "botkey");
    bot["website"] = json!("http://spam.example.com");
    let answer = h.sign_up(&bot).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(h.signups().await?, 1);
    // A re-send of a sign-up that does not exist says the same as one that does.
    let unknown = h.post("/v1/signups/resend", None, None, &json!({"email": "x@example.com", "key": "nobody"})).await?;
    assert_eq!(unknown.status, StatusCode::ACCEPTED, "{unknown:?}");
    assert!(tokio::time::timeout(Duration::from_millis(500), mailbox.next()).await.is_err(), "a bot was mailed");
    Ok(())
}

#[tokio::test]
async fn a_flood_from_one_address_or_for_one_email_is_refused() -> Result<()> {
    let h = Harness::new().await?;
    for n in 0..3 {
        let answer = h.sign_up(&signup("same@example.com", &format!("same-{n}"))).await?;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    }
    let answer = h.sign_up(&signup("SAME@example.com", "same-3")).await?;
    answer.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert!(answer.headers.contains_key("retry-after"), "{answer:?}");
    let answer = h.sign_up(&signup("fifth@example.com", "fifth")).await?;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let answer = h.sign_up(&signup("sixth@example.com", "sixth")).await?;
    answer.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    let retry: u64 = answer.headers["retry-after"].to_str()?.parse()?;
    assert!(retry > 3000 && retry <= 3600, "{retry}");
    assert_eq!(h.signups().await?, 4);
    Ok(())
}
