//! Self-service sign-up through the whole stack (docs/signup.md): the
//! gateway stores the sign-up and asks the real notification service for
//! the verification mail, the SMTP capture server receives it, the test
//! follows the link in it as the lead would, and the tenant goes ACTIVE
//! with its welcome mail sent to the same address.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::CapturedMail;
use landlord_testkit::eventually;
use serde_json::{Value, json};

/// The verification link in a mail: the URL on the line that holds
/// `/v1/signups/verify?token=`.
fn link_in(mail: &CapturedMail) -> Option<String> {
    let text = mail.decoded();
    let start = text.find("http")?;
    let rest = &text[start..];
    let line = rest.lines().find(|line| line.contains("/v1/signups/verify?token="))?;
    let begin = line.find("http")?;
    let url: String = line[begin..].chars().take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '<')).collect();
    Some(url)
}

/// The mails sent to `to` whose subject or body speaks of confirming.
fn verification_mails(stack: &Stack, to: &str) -> Vec<CapturedMail> {
    stack.smtp.mails_to(to).into_iter().filter(|mail| link_in(mail).is_some()).collect()
}

async fn follow(link: &str) -> Result<(u16, Value)> {
    let client = landlord_runtime::http::client_builder(&Default::default()).build()?;
    let response = client.get(link).header("accept", "application/json").send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

#[tokio::test]
async fn a_lead_signs_up_confirms_from_the_mail_and_gets_an_active_tenant_and_a_welcome_mail() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    let email = "lead@signup-e2e.test";
    let key = "signup-e2e";

    // The key is free as the form asks while the lead types.
    let free = stack.call("GET", &format!("/v1/tenant-keys/{key}"), None, None).await?;
    assert_eq!((free.status, &free.body["available"]), (200, &json!(true)), "{free}");

    let body = json!({"email": email, "company_name": "Signup Inc.", "key": key, "plan": "standard"});
    let answer = stack.call("POST", "/v1/signups", Some(body), None).await?;
    assert_eq!(answer.status, 202, "{answer}");
    assert_eq!(answer.body["status"], "verification_sent", "{answer}");

    // The real notification service sends the mail; the link is in it.
    let mails = eventually("the verification mail", Duration::from_secs(30), || async {
        let mails = verification_mails(&stack, email);
        (!mails.is_empty()).then_some(mails)
    })
    .await?;
    assert_eq!(mails.len(), 1, "one verification mail");
    let link = link_in(&mails[0]).context("no link")?;
    assert!(link.starts_with(&stack.api_url()), "the link leads to the gateway: {link}");
    // Nothing is requested before the click.
    assert!(stack.tenants_of_key(key).await?.is_empty(), "a tenant before the confirmation");

    // A forged token is refused and creates nothing.
    let forged = format!("{}/v1/signups/verify?token=forged{}", stack.api_url(), "A".repeat(40));
    assert_eq!(follow(&forged).await?.0, 404);

    let (status, first) = follow(&link).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["first_visit"], json!(true), "{first}");
    let tenant_id = first["tenant_id"].as_str().context("no tenant id")?.to_owned();

    let tenant = stack.wait_status(key, "ACTIVE", Duration::from_secs(90)).await?;
    assert_eq!(tenant.id, tenant_id, "the tenant the link created is the one that went ACTIVE");

    // The second click shows the status, and requests nothing again.
    let (status, second) = follow(&link).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!((second["first_visit"].clone(), second["tenant_id"].clone()), (json!(false), json!(tenant_id)));
    assert_eq!(stack.tenants_of_key(key).await?.len(), 1, "exactly one tenant");
    let sagas = stack.sagas(key).await?;
    assert_eq!(sagas.len(), 1, "one provisioning saga: {sagas:?}");

    // The welcome mail goes to the address that signed up.
    eventually("the welcome mail", Duration::from_secs(30), || async {
        stack.smtp.mails_to(email).iter().any(|mail| link_in(mail).is_none()).then_some(())
    })
    .await?;
    let taken = stack.call("GET", &format!("/v1/tenant-keys/{key}"), None, None).await?;
    assert_eq!(taken.body["available"], json!(false), "{taken}");
    Ok(())
}
