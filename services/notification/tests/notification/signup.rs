//! The sign-up verification mail (issue 29 item 1): the command the gateway
//! writes to the outbox, sent through the SMTP capture server.

use super::*;

fn verification(send: u32, link: &str) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: "signup:7f3c2c1e-0000-4000-8000-000000000001".into(),
        step: format!("signup_verification_{send}"),
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            key: "lead".into(),
            display_name: "Lead & Co <b>".into(),
            plan: "standard".into(),
            admin: Some(pb::AdminContact { email: "lead@example.com".into(), ..Default::default() }),
            ..Default::default()
        }),
        inputs: [
            ("signup.link".to_owned(), link.to_owned()),
            ("signup.expires_at".to_owned(), "2027-01-05T06:33:00Z".to_owned()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_verification_mail_carries_the_link_once_per_send() -> Result<()> {
    let f = Fixture::new().await?;
    let notifier = f.notifier().await?;
    let first = "http://gateway.test/v1/signups/verify?token=aa11";
    notifier.run("send_signup_verification", &verification(1, first), &delivery(1)).await?;
    // A redelivery of the same command sends nothing more.
    notifier.run("send_signup_verification", &verification(1, first), &delivery(2)).await?;
    let mails = f.smtp.mails_to("lead@example.com");
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.header("Subject").as_deref(), Some("Confirm your email to create Lead & Co <b>"));
    assert!(mail.raw.contains(first), "{}", mail.raw);
    assert!(mail.raw.contains("Hello,"), "a lead has no name yet: {}", mail.raw);
    assert!(mail.raw.contains("expires on 2027-01-05 at 06:33 UTC"), "{}", mail.raw);
    assert!(mail.raw.contains("&lt;b&gt;"), "the HTML part escapes the name: {}", mail.raw);

    // A re-send is a new step: a second mail, with the new link.
    let second = "http://gateway.test/v1/signups/verify?token=bb22";
    notifier.run("send_signup_verification", &verification(2, second), &delivery(3)).await?;
    let mails = f.smtp.mails_to("lead@example.com");
    assert_eq!(mails.len(), 2);
    assert!(mails.iter().any(|m| m.raw.contains(second)), "{mails:?}");
    Ok(())
}
