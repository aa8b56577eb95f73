//! The notification worker against a real SMTP server (aiosmtpd, capturing
//! to a Maildir) and a real nats-server.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{Namespace, pb};
use landlord_notification::{Ledger, Notifier, Settings, Templates};
use landlord_runtime::{
    Config, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretRef, SecretsKey, Service, StepService,
};
use landlord_testkit::{NatsServer, Process, SmtpCapture, eventually, scratch_dir, unique_namespace, workspace_binary};
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(20);

fn command(key: &str, first_name: &str) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{key}"),
        step: "welcome_email".into(),
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: format!("id-{key}"),
            key: key.into(),
            display_name: format!("{key} & Co <b>"),
            admin: Some(pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: first_name.into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{key}.example.com")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn delivery(sequence: u64) -> DeliveryInfo {
    DeliveryInfo::direct(sequence)
}

struct Fixture {
    smtp: SmtpCapture,
    jetstream: async_nats::jetstream::Context,
    namespace: Namespace,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let nats = NatsServer::shared().await;
        let client = async_nats::connect(nats.url()).await?;
        Ok(Self {
            smtp: SmtpCapture::start().await?,
            jetstream: async_nats::jetstream::new(client),
            namespace: unique_namespace(),
        })
    }

    /// A notifier as the service builds it: a fresh one is a restarted service.
    async fn notifier(&self) -> Result<Notifier> {
        let env = Env::from_pairs([("LANDLORD_SMTP_URL", self.smtp.url())]);
        let settings = Settings::from_env(&env)?;
        let ledger =
            Ledger::open(&self.jetstream, self.namespace.root(), 1, Duration::from_secs(3600), Duration::from_secs(30))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Notifier::new(settings, Templates::load(None)?, ledger))
    }
}

#[tokio::test]
async fn the_welcome_mail_reaches_the_admin_through_the_service_binary() -> Result<()> {
    let nats = NatsServer::shared().await;
    let smtp = SmtpCapture::start().await?;
    let namespace = unique_namespace();
    let key = SecretsKey::generate()?;
    let service = Process::start(
        "notification",
        &workspace_binary("landlord-notification")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
            ("LANDLORD_SMTP_URL".into(), smtp.url()),
            ("LANDLORD_LOGIN_URL".into(), "https://auth.test/realms/tenant-{key}/account".into()),
            ("LANDLORD_SECRETS_KEY".into(), key.to_base64()),
            ("RUST_LOG".into(), "debug".into()),
        ],
        &scratch_dir("logs")?,
    )?;
    let client = async_nats::connect(nats.url()).await?;
    // What the database worker leaves for the mail.
    let jetstream = async_nats::jetstream::new(client.clone());
    let secrets = KvSecrets::open(&jetstream, namespace.root(), 1, Duration::from_secs(3600), key).await?;
    let reference = SecretRef::new("database", "id-acme", "delivery-password");
    let password = "wire-db-password-7Qx";
    secrets.put_if_absent(&reference, password).await?;
    let mut welcome = command("acme", "Ada");
    database_outputs(&mut welcome, "acme", Some(&reference));
    let results = namespace.result_subject("notification", "send_welcome");
    let mut answers = client.subscribe(results).await?;
    let env = Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &env)?).await?;
    let publisher = Publisher::new(&sender.broker, "test");
    publisher
        .publish(
            namespace.command_subject("notification", "send_welcome"),
            &welcome,
            &Envelope::new("cmd-welcome-acme"),
        )
        .await?;
    let answer = tokio::time::timeout(WAIT, answers.next()).await?.context("no result")?;
    let result = pb::StepResult::decode(answer.payload)?;
    let Some(pb::step_result::Outcome::Ok(ok)) = result.outcome else { anyhow::bail!("not ok: {result:?}") };
    assert_eq!(ok.outputs["notification.message_id"], "saga-acme.welcome_email");
    let mails = smtp.mails_to("admin@acme.test");
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.header("Subject").as_deref(), Some("Welcome to acme & Co <b>"));
    assert_eq!(mail.header("Message-ID").as_deref(), Some("<saga-acme.welcome_email@landlord>"));
    assert!(mail.header("Content-Type").is_some_and(|h| h.starts_with("multipart/alternative")), "{}", mail.raw);
    assert!(mail.raw.contains("https://auth.test/realms/tenant-acme/account"), "{}", mail.raw);
    assert!(mail.raw.contains("https://acme.example.com"), "{}", mail.raw);
    assert!(mail.raw.contains("&lt;b&gt;"), "the HTML part escapes the name: {}", mail.raw);
    assert!(mail.raw.contains(&format!("Password: {password}")), "{}", mail.raw);
    assert!(secrets.get(&reference).await?.is_none(), "purged once sent");
    let log = service.output();
    assert!(log.contains("mail sent"), "{log}");
    assert!(!log.contains(password), "the database password in the log:\n{log}");
    let wire = ok.encode_to_vec();
    assert!(!wire.windows(password.len()).any(|w| w == password.as_bytes()), "the password in the result");
    Ok(())
}

/// The outputs the database worker reports for a bridge tenant, as the
/// orchestrator passes them on.
fn database_outputs(command: &mut pb::StepCommand, key: &str, delivery_ref: Option<&SecretRef>) {
    let role = format!("tenant_{key}");
    let mut outputs = vec![
        ("database.tier", "bridge".to_owned()),
        ("database.host", format!("db.{key}.test")),
        ("database.port", "6543".to_owned()),
        ("database.name", "tenants".to_owned()),
        ("database.schema", role.clone()),
        ("database.role", role.clone()),
        ("database.url", format!("postgresql://{role}@db.{key}.test:6543/tenants")),
        ("database.password_ref", format!("landlord-secret:database/id-{key}/password")),
        ("database.password_delivery", if delivery_ref.is_some() { "welcome-email" } else { "none" }.to_owned()),
    ];
    if let Some(reference) = delivery_ref {
        outputs.push(("database.delivery_ref", reference.to_string()));
    }
    command.inputs.extend(outputs.into_iter().map(|(k, v)| (k.to_owned(), v)));
}

/// The HTML part of a captured mail, quoted-printable soft breaks joined.
fn html_part(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    joined.split_once("text/html").map(|(_, html)| html.to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn the_database_password_travels_sealed_reaches_only_the_mail_and_is_purged_after() -> Result<()> {
    let f = Fixture::new().await?;
    let key = SecretsKey::generate()?;
    let secrets = KvSecrets::open(&f.jetstream, f.namespace.root(), 1, Duration::from_secs(3600), key).await?;
    // What the database worker does: a delivery copy under its own reference.
    let reference = SecretRef::new("database", "id-dbmail", "delivery-password");
    let password = "Db-pa<ss>&'word\"x";
    secrets.put_if_absent(&reference, password).await?;
    let mut welcome = command("dbmail", "Ada");
    database_outputs(&mut welcome, "dbmail", Some(&reference));
    // Without the key the reference cannot be honoured: a permanent (non-fatal step) failure, no mail.
    let error = f.notifier().await?.run("send_welcome", &welcome, &delivery(1)).await.expect_err("no key");
    assert!(!error.retryable && error.code == "secrets_unconfigured", "{error}");
    assert!(f.smtp.mails().is_empty());

    let notifier = f.notifier().await?.with_secrets(secrets.clone());
    let ok = notifier.run("send_welcome", &welcome, &delivery(1)).await?;
    let mails = f.smtp.mails_to("admin@dbmail.test");
    assert_eq!(mails.len(), 1);
    let raw = &mails[0].raw;
    for line in [
        "Your database",
        "Host:     db.dbmail.test",
        "Port:     6543",
        "Database: tenants",
        "Schema:   tenant_dbmail",
        "Role:     tenant_dbmail",
        "URL:      postgresql://tenant_dbmail@db.dbmail.test:6543/tenants",
        &format!("Password: {password}"),
    ] {
        assert!(raw.contains(line), "the text part carries {line:?}: {raw}");
    }
    let html = html_part(raw);
    assert!(html.contains("Password: Db-pa&lt;ss&gt;&amp;&#39;word&quot;x"), "the HTML part escapes it: {html}");
    assert!(!html.contains("Db-pa<ss>"), "unescaped in the HTML part: {html}");
    assert!(!ok.encode_to_vec().windows(password.len()).any(|w| w == password.as_bytes()), "in the result");
    assert!(secrets.get(&reference).await?.is_none(), "purged once sent");

    // A redelivery finds the mail sent: nothing is sent, nothing is needed.
    notifier.run("send_welcome", &welcome, &delivery(1)).await?;
    assert_eq!(f.smtp.mails_to("admin@dbmail.test").len(), 1);
    // Another attempt of the same step (another message id): still one mail.
    notifier.run("send_welcome", &welcome, &delivery(2)).await?;
    assert_eq!(f.smtp.mails_to("admin@dbmail.test").len(), 1);
    // A copy that expired (another saga's mail, the tenant retried): the
    // mail still goes out and says how to get new credentials.
    let mut retried = welcome.clone();
    retried.saga_id.push_str("-retry");
    notifier.run("send_welcome", &retried, &delivery(3)).await?;
    let mails = f.smtp.mails_to("admin@dbmail.test");
    assert_eq!(mails.len(), 2);
    let raw = &mails[1].raw;
    assert!(raw.contains("To get new database credentials, write to support@landlord.localhost"), "{raw}");
    assert!(raw.contains("Role:     tenant_dbmail") && !raw.contains("Db-pa"), "{raw}");

    // Delivery `none`: the details, and who to ask for the password.
    let mut unsent = command("nodbmail", "Ada");
    database_outputs(&mut unsent, "nodbmail", None);
    notifier.run("send_welcome", &unsent, &delivery(3)).await?;
    let raw = &f.smtp.mails_to("admin@nodbmail.test")[0].raw;
    assert!(raw.contains("Role:     tenant_nodbmail") && raw.contains("Password: not sent by mail"), "{raw}");

    // Pooled tenants have no role of their own: no database section.
    let mut pooled = command("pooldbmail", "Ada");
    pooled.inputs.insert("database.tier".into(), "pooled".into());
    pooled.inputs.insert("database.app_role".into(), "landlord_pooled_app".into());
    notifier.run("send_welcome", &pooled, &delivery(4)).await?;
    let raw = &f.smtp.mails_to("admin@pooldbmail.test")[0].raw;
    assert!(!raw.contains("Your database"), "{raw}");
    Ok(())
}

#[tokio::test]
async fn both_sealed_passwords_go_in_one_mail_and_both_are_purged() -> Result<()> {
    let f = Fixture::new().await?;
    let secrets =
        KvSecrets::open(&f.jetstream, f.namespace.root(), 1, Duration::from_secs(3600), SecretsKey::generate()?)
            .await?;
    let admin = SecretRef::new("idp", "id-both", "admin-password");
    let database = SecretRef::new("database", "id-both", "delivery-password");
    secrets.put_if_absent(&admin, "admin-tmp-123").await?;
    secrets.put_if_absent(&database, "db-pass-456").await?;
    let mut welcome = command("both", "Ada");
    welcome.inputs.insert("idp.admin_password_ref".into(), admin.to_string());
    database_outputs(&mut welcome, "both", Some(&database));
    f.notifier().await?.with_secrets(secrets.clone()).run("send_welcome", &welcome, &delivery(1)).await?;
    let raw = &f.smtp.mails_to("admin@both.test")[0].raw;
    assert!(raw.contains("Temporary password: admin-tmp-123") && raw.contains("Password: db-pass-456"), "{raw}");
    assert!(secrets.get(&admin).await?.is_none() && secrets.get(&database).await?.is_none(), "both purged");
    Ok(())
}

#[tokio::test]
async fn a_redelivered_command_sends_no_second_mail_even_after_a_restart() -> Result<()> {
    let f = Fixture::new().await?;
    let first = f.notifier().await?;
    first.run("send_welcome", &command("twice", "Ada"), &delivery(7)).await?;
    first.run("send_welcome", &command("twice", "Ada"), &delivery(7)).await?;
    // A new process with the same bucket.
    let restarted = f.notifier().await?;
    let ok = restarted.run("send_welcome", &command("twice", "Ada"), &delivery(7)).await?;
    assert_eq!(ok.outputs["notification.message_id"], "saga-twice.welcome_email");
    assert_eq!(f.smtp.mails_to("admin@twice.test").len(), 1);
    // A later attempt or a re-drive of the same step comes under another
    // message id: still the same mail.
    let mut again = command("twice", "Ada");
    again.attempt = 2;
    restarted.run("send_welcome", &again, &delivery(8)).await?;
    assert_eq!(f.smtp.mails_to("admin@twice.test").len(), 1);
    // Another saga (the tenant retried) is another mail.
    let mut retried = command("twice", "Ada");
    retried.saga_id = "saga-twice-retry".into();
    restarted.run("send_welcome", &retried, &delivery(9)).await?;
    assert_eq!(f.smtp.mails_to("admin@twice.test").len(), 2);
    Ok(())
}

#[tokio::test]
async fn the_temporary_password_travels_sealed_reaches_only_the_mail_and_is_purged_after() -> Result<()> {
    let f = Fixture::new().await?;
    let key = SecretsKey::generate()?;
    let secrets = KvSecrets::open(&f.jetstream, f.namespace.root(), 1, Duration::from_secs(3600), key).await?;
    // What the idp worker does: seal the password, pass on the reference.
    let reference = SecretRef::new("idp", "id-sealed", "admin-password");
    secrets.put_if_absent(&reference, "Tmp-7xQ!pass&<word>").await?;
    let mut welcome = command("sealed", "Ada");
    welcome.inputs.insert("idp.admin_password_ref".into(), reference.to_string());
    welcome.inputs.insert("idp.admin_username".into(), "ada@sealed.test".into());
    welcome.inputs.insert("idp.password_delivery".into(), "welcome-email".into());
    // Without the key the reference cannot be honoured: a permanent (non-fatal step) failure.
    let error = f.notifier().await?.run("send_welcome", &welcome, &delivery(1)).await.expect_err("no key");
    assert!(!error.retryable && error.code == "secrets_unconfigured", "{error}");
    assert!(f.smtp.mails().is_empty());
    let notifier = f.notifier().await?.with_secrets(secrets.clone());
    notifier.run("send_welcome", &welcome, &delivery(1)).await?;
    let mails = f.smtp.mails_to("admin@sealed.test");
    assert_eq!(mails.len(), 1);
    let raw = &mails[0].raw;
    assert!(raw.contains("Username:         ada@sealed.test"), "{raw}");
    assert!(raw.contains("Temporary password: Tmp-7xQ!pass&<word>"), "the text part carries it: {raw}");
    // The HTML part is quoted-printable: join its soft line breaks.
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    assert!(joined.contains("Tmp-7xQ!pass&amp;&lt;word&gt;"), "the HTML part escapes it: {raw}");
    assert!(secrets.get(&reference).await?.is_none(), "purged once sent");
    // A redelivery finds the mail sent; the purged secret is not needed.
    notifier.run("send_welcome", &welcome, &delivery(1)).await?;
    assert_eq!(f.smtp.mails_to("admin@sealed.test").len(), 1);
    // Another attempt of the same step (another message id): still one mail.
    notifier.run("send_welcome", &welcome, &delivery(2)).await?;
    assert_eq!(f.smtp.mails_to("admin@sealed.test").len(), 1);
    // A reference whose secret expired (another saga's mail) still gets a
    // mail, pointing to "Forgot password?".
    let mut retried = welcome.clone();
    retried.saga_id.push_str("-retry");
    notifier.run("send_welcome", &retried, &delivery(3)).await?;
    let mails = f.smtp.mails_to("admin@sealed.test");
    assert_eq!(mails.len(), 2);
    assert!(mails[1].raw.contains("Forgot password?") && !mails[1].raw.contains("Tmp-7xQ"), "{}", mails[1].raw);
    // Keycloak's own link instead: the mail says so.
    let mut linked = command("linked", "Ada");
    linked.inputs.insert("idp.password_delivery".into(), "keycloak-email".into());
    notifier.run("send_welcome", &linked, &delivery(3)).await?;
    let raw = &f.smtp.mails_to("admin@linked.test")[0].raw;
    assert!(raw.contains("separate mail with a link to choose your password"), "{raw}");
    Ok(())
}

#[tokio::test]
async fn the_failure_mail_names_the_step_and_the_reason() -> Result<()> {
    let f = Fixture::new().await?;
    let mut failed = command("broken", "Ada");
    failed.failure = Some(pb::Failure { step: "storage".into(), reason: "bucket name taken by someone else".into() });
    f.notifier().await?.run("send_failure", &failed, &delivery(1)).await?;
    let mails = f.smtp.mails_to("admin@broken.test");
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("broken & Co <b> could not be set up"));
    assert!(mails[0].raw.contains("What failed: storage"), "{}", mails[0].raw);
    assert!(mails[0].raw.contains("bucket name taken by someone else"), "{}", mails[0].raw);
    Ok(())
}

#[tokio::test]
async fn header_injection_and_bad_addresses_are_refused_and_send_nothing() -> Result<()> {
    let f = Fixture::new().await?;
    let notifier = f.notifier().await?;
    let error = notifier.run("send_welcome", &command("inject", "Ada\r\nBcc: victim@evil.test"), &delivery(1)).await;
    let error = error.expect_err("a CR/LF in a name is refused");
    assert!(!error.retryable && error.code == "header_injection", "{error}");
    let mut bad = command("bad", "Ada");
    bad.tenant.as_mut().and_then(|t| t.admin.as_mut()).context("admin")?.email = "not an address".into();
    let error = notifier.run("send_welcome", &bad, &delivery(2)).await.expect_err("refused");
    assert!(!error.retryable && error.code == "invalid_address", "{error}");
    let error = notifier.run("send_fax", &command("x", "Ada"), &delivery(3)).await.expect_err("refused");
    assert!(!error.retryable && error.code == "unknown_action", "{error}");
    assert!(f.smtp.mails().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_smtp_outage_is_retryable_and_the_retry_sends_once_it_is_back() -> Result<()> {
    let mut f = Fixture::new().await?;
    let notifier = f.notifier().await?;
    // Warm the pool, then take the server away under it.
    notifier.run("send_welcome", &command("warm", "Ada"), &delivery(1)).await?;
    f.smtp.kill();
    let error = notifier.run("send_welcome", &command("outage", "Ada"), &delivery(2)).await.expect_err("down");
    assert!(error.retryable && error.code == "smtp_transient", "{error}");
    f.smtp.restart().await?;
    // The claim was given back: the next attempt sends, once.
    let mut second = command("outage", "Ada");
    second.attempt = 2;
    notifier.run("send_welcome", &second, &delivery(3)).await?;
    eventually("the mail after the outage", WAIT, || async {
        (f.smtp.mails_to("admin@outage.test").len() == 1).then_some(())
    })
    .await?;
    // The first attempt, redelivered late (its message id is another one),
    // finds the step's mail sent (issue 22: two welcome mails).
    notifier.run("send_welcome", &command("outage", "Ada"), &delivery(2)).await?;
    assert_eq!(f.smtp.mails_to("admin@outage.test").len(), 1, "one mail per saga and step");
    Ok(())
}

/// A lifecycle mail's step in `saga` for tenant `key`.
fn lifecycle(key: &str, saga: &str, step: &str) -> pb::StepCommand {
    pb::StepCommand { saga_id: saga.into(), step: step.into(), ..command(key, "Ada") }
}

#[tokio::test]
async fn the_lifecycle_mails_reach_the_admin_once_per_saga_and_step() -> Result<()> {
    let f = Fixture::new().await?;
    let notifier = f.notifier().await?;
    let to = "admin@life.test";
    let smtp = &f.smtp;
    let sent =
        |n: usize| eventually("the mail", WAIT, move || async move { (smtp.mails_to(to).len() == n).then_some(()) });

    let suspended = lifecycle("life", "saga-suspend", "notify_suspended");
    let ok = notifier.run("send_suspended", &suspended, &delivery(1)).await?;
    assert_eq!(ok.outputs["notification.message_id"], "saga-suspend.notify_suspended");
    sent(1).await?;
    // A redelivery, another attempt and a restarted service: no second mail.
    notifier.run("send_suspended", &suspended, &delivery(1)).await?;
    notifier.run("send_suspended", &suspended, &delivery(2)).await?;
    f.notifier().await?.run("send_suspended", &suspended, &delivery(3)).await?;
    assert_eq!(f.smtp.mails_to(to).len(), 1);
    let mail = &f.smtp.mails_to(to)[0];
    assert_eq!(mail.header("Subject").as_deref(), Some("life & Co <b> has been suspended"));
    assert!(mail.raw.contains("Hello Ada Lovelace,") && mail.raw.contains("Nothing has been"), "{}", mail.raw);
    assert!(html_part(&mail.raw).contains("life &amp; Co &lt;b&gt;"), "{}", mail.raw);

    notifier.run("send_resumed", &lifecycle("life", "saga-resume", "notify_resumed"), &delivery(4)).await?;
    sent(2).await?;
    let mail = &f.smtp.mails_to(to)[1];
    assert_eq!(mail.header("Subject").as_deref(), Some("life & Co <b> is active again"));
    assert!(mail.raw.contains("http://127.0.0.1:8080/realms/tenant-life/account"), "{}", mail.raw);

    // The purge date when the command carries it, else the grace period.
    let mut scheduled = lifecycle("life", "saga-offboard", "notify_deletion_scheduled");
    scheduled.params.insert("purge_at".into(), "2027-01-05T06:33:59Z".into());
    notifier.run("send_deletion_scheduled", &scheduled, &delivery(5)).await?;
    sent(3).await?;
    let mail = &f.smtp.mails_to(to)[2];
    assert_eq!(mail.header("Subject").as_deref(), Some("life & Co <b> is scheduled for deletion"));
    assert!(mail.raw.contains("on 2027-01-05 at 06:33 UTC"), "{}", mail.raw);
    let undated = lifecycle("life", "saga-offboard-2", "notify_deletion_scheduled");
    notifier.run("send_deletion_scheduled", &undated, &delivery(6)).await?;
    sent(4).await?;
    let mail = &f.smtp.mails_to(to)[3];
    let text = mail.raw.replace("\r\n", "\n");
    assert!(
        text.contains("at the end of the grace\nperiod") || text.contains("at the end of the grace period"),
        "{}",
        mail.raw
    );

    notifier.run("send_deleted", &lifecycle("life", "saga-purge", "notify_deleted"), &delivery(7)).await?;
    sent(5).await?;
    let mail = &f.smtp.mails_to(to)[4];
    assert_eq!(mail.header("Subject").as_deref(), Some("life & Co <b> has been deleted"));
    assert!(mail.raw.contains("have been deleted, as scheduled"), "{}", mail.raw);

    // A compensation sends nothing; a tenant without an address is a
    // permanent (the step being non-fatal, harmless) failure.
    let mut undo = lifecycle("life", "saga-x", "notify_suspended");
    undo.compensate = true;
    notifier.run("send_suspended", &undo, &delivery(8)).await?;
    let mut nobody = lifecycle("nobody", "saga-y", "notify_deleted");
    nobody.tenant.as_mut().and_then(|t| t.admin.as_mut()).context("admin")?.email = String::new();
    let error = notifier.run("send_deleted", &nobody, &delivery(9)).await.expect_err("no address");
    assert!(!error.retryable && error.code == "invalid_address", "{error}");
    assert_eq!(f.smtp.mails().len(), 5);
    Ok(())
}

#[path = "notification/signup.rs"]
mod signup;
