//! The idp worker against the Keycloak contract double (Keycloak cannot be
//! installed here; see DESIGN.md) and a real nats-server.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::pb;
use landlord_idp::{Idp, Settings};
use landlord_runtime::{
    Config, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretRef, SecretsKey, Service, StepFailure, StepService,
};
use landlord_testkit::tls::{self, TlsFront};
use landlord_testkit::{
    KEYCLOAK_DOUBLE_ADMIN, KEYCLOAK_DOUBLE_CLIENT, KeycloakDouble, NatsServer, Process, scratch_dir, unique_namespace,
    workspace_binary,
};
use prost::Message as _;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const SHARED_REALM: &str = "shared";

fn tenant(key: &str, id: &str, tier: pb::Tier) -> pb::TenantSpec {
    pb::TenantSpec {
        tenant_id: id.into(),
        key: key.into(),
        display_name: format!("{key} Inc."),
        plan: "standard".into(),
        tier: tier as i32,
        admin: Some(pb::AdminContact {
            email: format!("Ada@{key}.test"),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }),
        domains: vec![format!("{key}.example.com"), format!("app.{key}.io")],
        labels: HashMap::new(),
    }
}

fn command(spec: &pb::TenantSpec, step: &str, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{}", spec.key),
        step: step.into(),
        compensate,
        attempt: 1,
        tenant: Some(spec.clone()),
        ..Default::default()
    }
}

fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

/// Settings for the double; password delivery through Keycloak's own mail
/// unless a test asks for the welcome mail.
fn env_for(double: &KeycloakDouble) -> Vec<(String, String)> {
    [
        ("LANDLORD_IDP_PASSWORD_DELIVERY", "keycloak-email".to_owned()),
        ("LANDLORD_KEYCLOAK_URL", double.url()),
        ("LANDLORD_KEYCLOAK_CLIENT_ID", KEYCLOAK_DOUBLE_CLIENT.0.to_owned()),
        ("LANDLORD_KEYCLOAK_CLIENT_SECRET", KEYCLOAK_DOUBLE_CLIENT.1.to_owned()),
        ("LANDLORD_KEYCLOAK_SHARED_REALM", SHARED_REALM.to_owned()),
        ("LANDLORD_KEYCLOAK_TIMEOUT", "5s".to_owned()),
        ("LANDLORD_KEYCLOAK_PUBLIC_URL", "https://sso.test".to_owned()),
        ("LANDLORD_IDP_SMTP_URL", "smtp://mailer:secret@mail.test:2525?tls=starttls".to_owned()),
        ("LANDLORD_IDP_LOGIN_THEME", "landlord".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn double() -> Result<KeycloakDouble> {
    let double = KeycloakDouble::start().await?;
    // The pooled tier's realm, as an operator sets it up.
    double.add_realm(json!({"realm": SHARED_REALM, "enabled": true, "organizationsEnabled": true,
        "smtpServer": {"host": "mail.test", "port": "25", "from": "noreply@shared.test"}}));
    double.set_unmanaged_attribute_policy(SHARED_REALM, "ADMIN_EDIT");
    Ok(double)
}

fn idp(double: &KeycloakDouble) -> Result<Idp> {
    Ok(Idp::new(Settings::from_env(&Env::from_pairs(env_for(double)))?, None)?)
}

/// The default delivery: the password sealed for the welcome mail.
fn welcome_email_settings(double: &KeycloakDouble, key: &SecretsKey) -> Result<Settings> {
    let mut env = env_for(double);
    env.retain(|(k, _)| k != "LANDLORD_IDP_PASSWORD_DELIVERY");
    env.push(("LANDLORD_SECRETS_KEY".into(), key.to_base64()));
    Ok(Settings::from_env(&Env::from_pairs(env))?)
}

async fn welcome_email_idp(double: &KeycloakDouble, key: &SecretsKey) -> Result<(Idp, KvSecrets)> {
    let settings = welcome_email_settings(double, key)?;
    let client = async_nats::connect(NatsServer::shared().await.url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let namespace = unique_namespace();
    let secrets = Idp::open_secrets(&settings, &jetstream, namespace.root(), 1).await?.context("no secret store")?;
    Ok((Idp::new(settings, Some(secrets.clone()))?, secrets))
}

/// The temporary password the worker chose, as Keycloak received it.
fn posted_password(double: &KeycloakDouble, realm: &str) -> Result<String> {
    let created = double.requests_to("POST", &format!("/admin/realms/{realm}/users"));
    let body: Value = serde_json::from_str(&created.first().context("no user creation")?.body)?;
    assert_eq!(body["credentials"][0]["temporary"], json!(true));
    Ok(body["credentials"][0]["value"].as_str().context("no password")?.to_owned())
}

/// Runs one action as the runtime would.
async fn run(idp: &Idp, action: &str, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
    idp.run(action, command, &delivery()).await
}

/// Runs the three forward steps, feeding outputs forward like the orchestrator.
async fn provision(idp: &Idp, spec: &pb::TenantSpec) -> Result<Vec<pb::StepOk>> {
    let mut inputs = HashMap::new();
    let mut results = Vec::new();
    for (action, step) in
        [("create_realm", "idp_realm"), ("create_client", "idp_client"), ("create_admin_user", "idp_admin_user")]
    {
        let mut cmd = command(spec, step, false);
        cmd.inputs = inputs.clone();
        let ok = run(idp, action, &cmd).await?;
        inputs.extend(ok.outputs.clone());
        results.push(ok);
    }
    Ok(results)
}

fn owner(value: &Value) -> Option<&str> {
    match &value["attributes"]["tenantId"] {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

#[tokio::test]
async fn the_binary_provisions_a_tenant_over_nats_and_never_shows_the_password() -> Result<()> {
    let nats = NatsServer::shared().await;
    let double = double().await?;
    let namespace = unique_namespace();
    let mut env = env_for(&double);
    // Keycloak over HTTPS, its certificate under the test CA.
    let https = TlsFront::start(&double.url()).await?;
    env.retain(|(k, _)| k != "LANDLORD_KEYCLOAK_URL");
    env.push(("LANDLORD_KEYCLOAK_URL".into(), https.url.clone()));
    env.push(("LANDLORD_TLS_CA_FILE".into(), tls::ca_file().display().to_string()));
    // The binary signs in with the admin-cli password grant instead, and
    // seals the password for the welcome mail (the default delivery).
    env.retain(|(k, _)| !k.starts_with("LANDLORD_KEYCLOAK_CLIENT") && k != "LANDLORD_IDP_PASSWORD_DELIVERY");
    let key = SecretsKey::generate()?;
    env.extend([
        ("LANDLORD_SECRETS_KEY".to_owned(), key.to_base64()),
        ("LANDLORD_KEYCLOAK_USERNAME".to_owned(), KEYCLOAK_DOUBLE_ADMIN.0.to_owned()),
        ("LANDLORD_KEYCLOAK_PASSWORD".to_owned(), KEYCLOAK_DOUBLE_ADMIN.1.to_owned()),
        ("LANDLORD_NATS_URL".to_owned(), nats.url()),
        ("LANDLORD_NAMESPACE".to_owned(), namespace.root().to_owned()),
        ("RUST_LOG".to_owned(), "debug".to_owned()),
    ]);
    let service = Process::start("idp", &workspace_binary("landlord-idp")?, &[], &env, &scratch_dir("logs")?)?;
    let client = async_nats::connect(nats.url()).await?;
    let sender_env =
        Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &sender_env)?).await?;
    let publisher = Publisher::new(&sender.broker, "test");
    let spec = tenant("acme", "11111111-aaaa", pb::Tier::Bridge);
    let mut inputs = HashMap::new();
    let mut results = Vec::new();
    for (action, step) in
        [("create_realm", "idp_realm"), ("create_client", "idp_client"), ("create_admin_user", "idp_admin_user")]
    {
        let mut answers = client.subscribe(namespace.result_subject("idp", action)).await?;
        let mut cmd = command(&spec, step, false);
        cmd.inputs = inputs.clone();
        publisher
            .publish(namespace.command_subject("idp", action), &cmd, &Envelope::new(format!("cmd-{action}")))
            .await?;
        let answer = tokio::time::timeout(WAIT, answers.next()).await?.context("no result")?;
        let result = pb::StepResult::decode(answer.payload)?;
        let Some(pb::step_result::Outcome::Ok(ok)) = result.outcome else {
            anyhow::bail!("{action} not ok: {result:?}\n{}", service.output())
        };
        inputs.extend(ok.outputs.clone());
        results.push(ok);
    }
    assert_eq!(inputs["idp.realm"], "tenant-acme");
    assert_eq!(inputs["idp.login_url"], "https://sso.test/realms/tenant-acme/account");
    assert_eq!(inputs["idp.client_id"], "acme-app");
    assert_eq!(inputs["idp.password_delivery"], "welcome-email");
    let password = posted_password(&double, "tenant-acme")?;
    assert!(password.len() >= 20);
    // Sealed for the welcome mail, under the reference the result carries.
    let secrets =
        KvSecrets::open(&sender.broker.jetstream, namespace.root(), 1, Duration::from_secs(3600), key).await?;
    let reference = SecretRef::parse(&inputs["idp.admin_password_ref"]).context("not a secret reference")?;
    assert_eq!(secrets.get(&reference).await?.as_deref(), Some(password.as_str()));
    for ok in &results {
        let shown = format!("{ok:?}");
        assert!(!shown.contains(&password), "the password is in a step result: {shown}");
    }
    let log = service.output();
    assert!(log.contains("admin user created"), "the log is captured: {log}");
    assert!(!log.contains(&password), "the password is in the service's log");
    assert!(double.actions_emails().is_empty(), "Keycloak sends no mail of its own");
    Ok(())
}

#[tokio::test]
async fn creating_twice_is_creating_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("twice", "22222222-bbbb", pb::Tier::Silo);
    let first = provision(&idp, &spec).await?;
    let second = provision(&idp, &spec).await?;
    assert_eq!(first, second, "a repeat reports the same resources and outputs");
    assert_eq!(double.realm_names().iter().filter(|r| *r == "tenant-twice").count(), 1);
    let realm = double.realm("tenant-twice").context("no realm")?;
    assert_eq!(realm["displayName"], "twice Inc.");
    assert_eq!(realm["loginTheme"], "landlord");
    assert_eq!(realm["accessTokenLifespan"], 300);
    assert_eq!(realm["smtpServer"]["host"], "mail.test");
    assert_eq!(realm["smtpServer"]["starttls"], "true");
    assert_eq!(owner(&realm), Some("22222222-bbbb"));
    let clients: Vec<Value> =
        double.clients("tenant-twice").into_iter().filter(|c| c["clientId"] == "twice-app").collect();
    assert_eq!(clients.len(), 1);
    let users = double.users("tenant-twice");
    assert_eq!(users.len(), 1);
    let user = &users[0];
    assert_eq!(user["username"], "ada@twice.test");
    assert_eq!(user["firstName"], "Ada");
    assert_eq!(user["emailVerified"], false);
    assert_eq!(user["attributes"]["tenantId"], json!(["22222222-bbbb"]), "the realm keeps admin attributes");
    assert_eq!(user["attributes"]["role"], json!(["tenant-admin"]));
    assert_eq!(user["requiredActions"], json!(["UPDATE_PASSWORD"]));
    let management = double.clients("tenant-twice").into_iter().find(|c| c["clientId"] == "realm-management");
    let management = management.context("no realm-management")?;
    let roles = double.client_roles_of(
        "tenant-twice",
        user["id"].as_str().unwrap_or_default(),
        management["id"].as_str().unwrap_or_default(),
    );
    assert_eq!(roles, ["realm-admin"]);
    assert_eq!(double.actions_emails().len(), 1, "the password mail goes out once");
    // The repeat met 409s and looked the objects up.
    assert_eq!(double.requests_to("POST", "/admin/realms").iter().filter(|r| r.status == 409).count(), 1);
    assert_eq!(double.requests_to("POST", "/tenant-twice/clients").iter().filter(|r| r.status == 409).count(), 1);
    assert_eq!(double.requests_to("POST", "/tenant-twice/users").iter().filter(|r| r.status == 409).count(), 1);
    Ok(())
}

#[tokio::test]
async fn the_welcome_mail_delivery_seals_the_password_once_and_compensation_purges_it() -> Result<()> {
    let double = double().await?;
    let key = SecretsKey::generate()?;
    let (idp, secrets) = welcome_email_idp(&double, &key).await?;
    let spec = tenant("sealed", "cccccccc-1111", pb::Tier::Bridge);
    let first = provision(&idp, &spec).await?;
    let password = posted_password(&double, "tenant-sealed")?;
    let reference = SecretRef::parse(&first[2].outputs["idp.admin_password_ref"]).context("no reference")?;
    assert_eq!(reference.as_str(), "landlord-secret:idp/cccccccc-1111/admin-password");
    assert_eq!(secrets.get(&reference).await?.as_deref(), Some(password.as_str()));
    for ok in &first {
        assert!(!format!("{ok:?}").contains(&password), "the password is in a step result");
    }
    let user = &double.users("tenant-sealed")[0];
    assert_eq!(user["requiredActions"], json!([]), "the temporary credential is what forces a new password");
    assert!(double.actions_emails().is_empty(), "no Keycloak mail");
    // A redelivered command (a new worker, same store) keeps the first password.
    let again = Idp::new(welcome_email_settings(&double, &key)?, Some(secrets.clone()))?;
    assert_eq!(provision(&again, &spec).await?, first);
    assert_eq!(secrets.get(&reference).await?.as_deref(), Some(password.as_str()));
    // Compensation deletes the user and purges the password, twice = once.
    for _ in 0..2 {
        let mut cmd = command(&spec, "idp_admin_user", true);
        cmd.resources = first[2].resources.clone();
        run(&idp, "delete_admin_user", &cmd).await?;
    }
    assert!(secrets.get(&reference).await?.is_none());
    assert!(double.users("tenant-sealed").is_empty());
    Ok(())
}

#[tokio::test]
async fn the_client_is_public_with_pkce_redirect_uris_and_web_origins() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pkce", "33333333-cccc", pb::Tier::Bridge);
    provision(&idp, &spec).await?;
    let posted = double.requests_to("POST", "/admin/realms/tenant-pkce/clients");
    let client: Value = serde_json::from_str(&posted.first().context("no client creation")?.body)?;
    assert_eq!(client["clientId"], "pkce-app");
    assert_eq!(client["publicClient"], true);
    assert_eq!(client["standardFlowEnabled"], true);
    assert_eq!(client["implicitFlowEnabled"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["attributes"]["tenantId"], "33333333-cccc");
    assert_eq!(client["redirectUris"], json!(["https://pkce.example.com/*", "https://app.pkce.io/*"]));
    assert_eq!(client["webOrigins"], json!(["https://pkce.example.com", "https://app.pkce.io"]));
    // The password link returns the admin to the application.
    let email = double.requests_to("PUT", "/execute-actions-email");
    let query = &email.first().context("no password mail")?.query;
    assert!(
        query.contains("client_id=pkce-app") && query.contains("redirect_uri=https%3A%2F%2Fpkce.example.com%2F"),
        "{query}"
    );
    Ok(())
}

#[tokio::test]
async fn compensating_twice_is_compensating_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("undo", "44444444-dddd", pb::Tier::Bridge);
    let created = provision(&idp, &spec).await?;
    for _ in 0..2 {
        for ((action, step), ok) in
            [("delete_admin_user", "idp_admin_user"), ("delete_client", "idp_client"), ("delete_realm", "idp_realm")]
                .into_iter()
                .zip(created.iter().rev())
        {
            let mut cmd = command(&spec, step, true);
            cmd.resources = ok.resources.clone();
            run(&idp, action, &cmd).await?;
        }
    }
    assert!(!double.realm_names().contains(&"tenant-undo".to_owned()));
    let deletes = double.requests().into_iter().filter(|r| r.method == "DELETE").collect::<Vec<_>>();
    let summary: Vec<(String, u16)> = deletes.iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(deletes.len(), 3, "one delete each, the repeat found them gone: {summary:?}");
    assert!(deletes.iter().all(|r| r.status == 204), "{summary:?}");
    Ok(())
}

#[tokio::test]
async fn an_object_carrying_another_tenants_id_is_a_permanent_conflict() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    provision(&idp, &tenant("taken", "55555555-eeee", pb::Tier::Bridge)).await?;
    // Another tenant (another id) with the same key: every object is foreign.
    let intruder = tenant("taken", "66666666-ffff", pb::Tier::Bridge);
    for (action, what) in [
        ("create_realm", "realm tenant-taken"),
        ("create_client", "client taken-app"),
        ("create_admin_user", "user ada@taken.test"),
    ] {
        let error = run(&idp, action, &command(&intruder, "x", false)).await.expect_err("foreign object");
        assert!(!error.retryable && error.code == "conflict", "{action}: {error}");
        assert!(error.message.contains(what) && error.message.contains("does not belong"), "{error}");
    }
    // Nor will its compensations delete them: they leave them, succeed
    // (a stuck compensation helps nobody) and say why.
    for (action, what) in [
        ("delete_admin_user", "user ada@taken.test in realm tenant-taken"),
        ("delete_client", "client taken-app in realm tenant-taken"),
        ("delete_realm", "realm tenant-taken"),
    ] {
        let ok = run(&idp, action, &command(&intruder, "x", true)).await?;
        assert_eq!(ok.outputs["fenced"], format!("{what} belongs to tenant 55555555-eeee"), "{action}");
    }
    assert!(double.realm_names().contains(&"tenant-taken".to_owned()));
    assert_eq!(double.users("tenant-taken").len(), 1);
    assert!(double.clients("tenant-taken").iter().any(|c| c["clientId"] == "taken-app"));
    // Pooled: the admin's address is taken in the shared realm by another tenant.
    let pooled = tenant("poolone", "77777777-aaaa", pb::Tier::Pooled);
    provision(&idp, &pooled).await?;
    let mut other = tenant("pooltwo", "88888888-bbbb", pb::Tier::Pooled);
    other.admin = pooled.admin.clone();
    run(&idp, "create_realm", &command(&other, "x", false)).await?;
    let error = run(&idp, "create_admin_user", &command(&other, "x", false)).await.expect_err("taken");
    assert!(!error.retryable && error.code == "conflict", "{error}");
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_call_retried_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("expiry", "99999999-cccc", pb::Tier::Bridge);
    run(&idp, "create_realm", &command(&spec, "idp_realm", false)).await?;
    let tokens_before = double.requests_to("POST", "/protocol/openid-connect/token").len();
    assert_eq!(tokens_before, 1, "the token is cached between calls");
    double.expire_tokens();
    run(&idp, "create_client", &command(&spec, "idp_client", false)).await?;
    let requests = double.requests();
    let unauthorized: Vec<_> = requests.iter().filter(|r| r.status == 401).collect();
    assert_eq!(unauthorized.len(), 1, "one refused call");
    assert_eq!(double.requests_to("POST", "/protocol/openid-connect/token").len(), 2, "one new token");
    let retried = requests.iter().rposition(|r| r.status == 401).context("no 401")?;
    assert_eq!(requests[retried + 1].path, "/realms/master/protocol/openid-connect/token");
    assert_eq!(
        (requests[retried + 2].path.as_str(), requests[retried + 2].status),
        (requests[retried].path.as_str(), 201)
    );
    // A token that stays refused is retryable, not a reason to undo the tenant.
    double.fail_next(3, 401);
    let error = run(&idp, "create_admin_user", &command(&spec, "idp_admin_user", false)).await.expect_err("401");
    assert!(error.retryable, "{error}");
    Ok(())
}

#[tokio::test]
async fn keycloak_trouble_is_retryable_then_succeeds_and_a_refusal_is_permanent() -> Result<()> {
    let mut double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("flaky", "aaaaaaaa-dddd", pb::Tier::Bridge);
    let cmd = command(&spec, "idp_realm", false);
    for status in [500, 503, 429] {
        double.fail_next(1, status);
        let error = run(&idp, "create_realm", &cmd).await.expect_err("failure injected");
        assert!(error.retryable, "{status}: {error}");
        assert!(error.message.contains(&status.to_string()), "{error}");
    }
    double.fail_next(1, 403);
    let error = run(&idp, "create_realm", &cmd).await.expect_err("forbidden");
    assert!(!error.retryable && error.code == "keycloak_forbidden", "{error}");
    double.stop().await?;
    let error = run(&idp, "create_realm", &cmd).await.expect_err("stopped");
    assert!(error.retryable && error.code == "keycloak_unreachable", "{error}");
    double.restart().await?;
    let ok = run(&idp, "create_realm", &cmd).await?;
    assert_eq!(ok.outputs["idp.realm"], "tenant-flaky");
    Ok(())
}

#[tokio::test]
async fn keycloak_over_https_is_reached_only_with_a_trusted_certificate() -> Result<()> {
    let double = double().await?;
    let https = TlsFront::start(&double.url()).await?;
    let mut env = env_for(&double);
    env.push(("LANDLORD_KEYCLOAK_URL".into(), https.url.clone()));
    let spec = tenant("secure", "aaaaaaaa-eeee", pb::Tier::Bridge);
    let cmd = command(&spec, "idp_realm", false);
    // The system's roots do not know the test CA: refused at the
    // handshake, retryable (an operator can fix the trust store), nothing
    // reached Keycloak.
    let untrusting = Idp::new(Settings::from_env(&Env::from_pairs(env.clone()))?, None)?;
    let error = run(&untrusting, "create_realm", &cmd).await.expect_err("unknown issuer");
    assert!(error.retryable && error.code == "keycloak_unreachable", "{error}");
    assert!(error.message.contains("certificate") && error.message.contains("UnknownIssuer"), "{error}");
    assert!(double.requests_to("POST", "/admin/realms").is_empty());
    env.push(("LANDLORD_TLS_CA_FILE".into(), tls::ca_file().display().to_string()));
    let trusting = Idp::new(Settings::from_env(&Env::from_pairs(env))?, None)?;
    let ok = run(&trusting, "create_realm", &cmd).await?;
    assert_eq!(ok.outputs["idp.realm"], "tenant-secure");
    assert_eq!(double.requests_to("POST", "/admin/realms").len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_pooled_tenant_is_an_organization_in_the_shared_realm_with_its_admin_as_member() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pooled", "bbbbbbbb-eeee", pb::Tier::Pooled);
    let first = provision(&idp, &spec).await?;
    assert_eq!(provision(&idp, &spec).await?, first, "twice is once");
    assert!(!double.realm_names().contains(&"tenant-pooled".to_owned()), "no realm of its own");
    let orgs = double.organizations(SHARED_REALM);
    assert_eq!(orgs.len(), 1);
    let org = &orgs[0];
    assert_eq!((org["name"].as_str(), org["alias"].as_str()), (Some("pooled"), Some("pooled")));
    assert_eq!(org["attributes"]["tenantId"], json!(["bbbbbbbb-eeee"]));
    assert_eq!(org["domains"][0]["name"], "pooled.example.com");
    assert_eq!(first[0].outputs["idp.organization_id"], org["id"].as_str().unwrap_or_default());
    assert_eq!(first[1].outputs["idp.client_mode"], "shared");
    assert!(first[1].resources.is_empty(), "no client was created");
    let users = double.users(SHARED_REALM);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["attributes"]["tenantId"], json!(["bbbbbbbb-eeee"]));
    let members = double.members(SHARED_REALM, org["id"].as_str().unwrap_or_default());
    assert_eq!(members, [users[0]["id"].as_str().unwrap_or_default()]);
    // The member body is the bare user id, as Keycloak reads it.
    let added = double.requests_to("POST", "/members");
    assert_eq!(added[0].body, users[0]["id"].as_str().unwrap_or_default());
    assert_eq!(double.actions_emails().len(), 1);
    // Compensation removes the user and the organization, twice = once.
    for _ in 0..2 {
        let mut cmd = command(&spec, "idp_admin_user", true);
        cmd.resources = first[2].resources.clone();
        run(&idp, "delete_admin_user", &cmd).await?;
        run(&idp, "delete_client", &command(&spec, "idp_client", true)).await?;
        let mut cmd = command(&spec, "idp_realm", true);
        cmd.resources = first[0].resources.clone();
        run(&idp, "delete_realm", &cmd).await?;
    }
    assert!(double.organizations(SHARED_REALM).is_empty());
    assert!(double.users(SHARED_REALM).is_empty());
    assert!(double.realm_names().contains(&SHARED_REALM.to_owned()), "the shared realm stays");
    Ok(())
}

#[tokio::test]
async fn bad_configuration_names_the_variable() -> Result<()> {
    let double = double().await?;
    let mut env = env_for(&double);
    env.retain(|(k, _)| k != "LANDLORD_IDP_SMTP_URL");
    let error = Settings::from_env(&Env::from_pairs(env.clone())).expect_err("no SMTP for the password mail");
    assert!(error.to_string().contains("LANDLORD_IDP_SMTP_URL"), "{error}");
    env.push(("LANDLORD_IDP_PASSWORD_DELIVERY".into(), "none".into()));
    Settings::from_env(&Env::from_pairs(env.clone()))?;
    let mut welcome = env.clone();
    welcome.push(("LANDLORD_IDP_PASSWORD_DELIVERY".into(), "welcome-email".into()));
    let error = Settings::from_env(&Env::from_pairs(welcome.clone())).expect_err("no key to seal with");
    assert!(error.to_string().contains("LANDLORD_SECRETS_KEY"), "{error}");
    welcome.push(("LANDLORD_SECRETS_KEY".into(), "c2hvcnQ=".into()));
    let error = Settings::from_env(&Env::from_pairs(welcome.clone())).expect_err("short key");
    assert!(error.to_string().contains("expected 32 bytes"), "{error}");
    welcome.push(("LANDLORD_SECRETS_KEY".into(), SecretsKey::generate()?.to_base64()));
    let settings = Settings::from_env(&Env::from_pairs(welcome))?;
    assert!(Idp::new(settings, None).is_err(), "welcome-email needs the store");
    env.push(("LANDLORD_KEYCLOAK_URL".into(), "ftp://x".into()));
    let error = Settings::from_env(&Env::from_pairs(env.clone())).expect_err("not http");
    assert!(error.to_string().contains("LANDLORD_KEYCLOAK_URL"), "{error}");
    env.push(("LANDLORD_KEYCLOAK_URL".into(), double.url()));
    env.push(("LANDLORD_TLS_CA_FILE".into(), "/nonexistent/ca.pem".into()));
    let error = Settings::from_env(&Env::from_pairs(env)).expect_err("no CA file");
    assert!(error.to_string().contains("LANDLORD_TLS_CA_FILE"), "{error}");
    let error =
        Settings::from_env(&Env::from_pairs([("LANDLORD_KEYCLOAK_URL", double.url())])).expect_err("no credentials");
    assert!(error.to_string().contains("LANDLORD_KEYCLOAK_CLIENT_SECRET"), "{error}");
    Ok(())
}

/// `command` in another saga (a retry of the same tenant).
fn command_in(spec: &pb::TenantSpec, saga: &str, step: &str, compensate: bool) -> pb::StepCommand {
    pb::StepCommand { saga_id: saga.into(), ..command(spec, step, compensate) }
}

/// Runs the three forward steps in `saga`.
async fn provision_in(idp: &Idp, spec: &pb::TenantSpec, saga: &str) -> Result<Vec<pb::StepOk>> {
    let mut inputs = HashMap::new();
    let mut results = Vec::new();
    for (action, step) in
        [("create_realm", "idp_realm"), ("create_client", "idp_client"), ("create_admin_user", "idp_admin_user")]
    {
        let mut cmd = command_in(spec, saga, step, false);
        cmd.inputs = inputs.clone();
        let ok = run(idp, action, &cmd).await?;
        inputs.extend(ok.outputs.clone());
        results.push(ok);
    }
    Ok(results)
}

/// Runs the three compensations of `saga` in reverse, each with what its
/// forward step reported; returns their outputs.
async fn compensate_in(
    idp: &Idp,
    spec: &pb::TenantSpec,
    saga: &str,
    created: &[pb::StepOk],
) -> Result<Vec<HashMap<String, String>>> {
    let mut outputs = Vec::new();
    for ((action, step), ok) in
        [("delete_admin_user", "idp_admin_user"), ("delete_client", "idp_client"), ("delete_realm", "idp_realm")]
            .into_iter()
            .zip(created.iter().rev())
    {
        let mut cmd = command_in(spec, saga, step, true);
        cmd.resources = ok.resources.clone();
        outputs.push(run(idp, action, &cmd).await?.outputs);
    }
    Ok(outputs)
}

/// The saga marker of a representation (a string or a list of one).
fn saga_of(value: &Value) -> Option<&str> {
    match &value["attributes"]["landlordSagaId"] {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

#[tokio::test]
async fn a_retry_adopts_the_realm_and_a_stale_compensation_of_the_failed_saga_leaves_it() -> Result<()> {
    let double = double().await?;
    let key = SecretsKey::generate()?;
    let (idp, secrets) = welcome_email_idp(&double, &key).await?;
    let spec = tenant("adopted", "abababab-0001", pb::Tier::Bridge);
    let client = |double: &KeycloakDouble| {
        double.clients("tenant-adopted").into_iter().find(|c| c["clientId"] == "adopted-app").unwrap_or_default()
    };
    // S1 creates everything, marked with its saga.
    let first = provision_in(&idp, &spec, "saga-1").await?;
    let realm = double.realm("tenant-adopted").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-1"));
    assert_eq!(saga_of(&client(&double)), Some("saga-1"));
    assert_eq!(saga_of(&double.users("tenant-adopted")[0]), Some("saga-1"));
    // S1 ends FAILED with its compensations still on their way; the retry
    // S2 runs forward and adopts every object.
    let second = provision_in(&idp, &spec, "saga-2").await?;
    assert_eq!(second[0].outputs, first[0].outputs);
    let realm = double.realm("tenant-adopted").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-2"));
    assert_eq!(owner(&realm), Some("abababab-0001"), "the rest of the marker is kept");
    assert_eq!(realm["attributes"]["tenantKey"], "adopted");
    assert_eq!(realm["displayName"], "adopted Inc.", "the realm's settings are untouched");
    let adopted_client = client(&double);
    assert_eq!(saga_of(&adopted_client), Some("saga-2"));
    assert_eq!(adopted_client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(adopted_client["publicClient"], true);
    let user = &double.users("tenant-adopted")[0];
    assert_eq!(saga_of(user), Some("saga-2"));
    assert_eq!(user["attributes"]["tenantId"], json!(["abababab-0001"]));
    assert_eq!(user["attributes"]["role"], json!(["tenant-admin"]));
    // Adopting is rewriting the marker once: a redelivery of S2 writes nothing.
    let puts = |double: &KeycloakDouble| double.requests().into_iter().filter(|r| r.method == "PUT").count();
    let before = puts(&double);
    assert_eq!(provision_in(&idp, &spec, "saga-2").await?, second);
    assert_eq!(puts(&double), before, "the same saga re-running adopts nothing");
    // S1's late compensations leave S2's objects and say so.
    let reference = SecretRef::parse(&second[2].outputs["idp.admin_password_ref"]).context("no reference")?;
    let sealed = secrets.get(&reference).await?.context("no sealed password")?;
    let notes = compensate_in(&idp, &spec, "saga-1", &first).await?;
    assert_eq!(notes[0]["fenced"], "user ada@adopted.test in realm tenant-adopted belongs to saga saga-2");
    assert_eq!(notes[1]["fenced"], "client adopted-app in realm tenant-adopted belongs to saga saga-2");
    assert_eq!(notes[2]["fenced"], "realm tenant-adopted belongs to saga saga-2");
    assert!(double.realm_names().contains(&"tenant-adopted".to_owned()));
    assert_eq!(saga_of(&client(&double)), Some("saga-2"));
    assert_eq!(double.users("tenant-adopted").len(), 1);
    assert_eq!(secrets.get(&reference).await?, Some(sealed), "S2's welcome mail still finds the password");
    assert!(double.requests().iter().all(|r| r.method != "DELETE"), "nothing was deleted");
    // S2's own compensations delete everything and purge the password.
    let notes = compensate_in(&idp, &spec, "saga-2", &second).await?;
    assert!(notes.iter().all(|o| !o.contains_key("fenced")), "{notes:?}");
    assert!(!double.realm_names().contains(&"tenant-adopted".to_owned()));
    assert!(secrets.get(&reference).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_retry_adopts_the_organization_and_a_stale_compensation_leaves_it_in_the_shared_realm() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pooladopt", "abababab-0002", pb::Tier::Pooled);
    let first = provision_in(&idp, &spec, "saga-1").await?;
    let org = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    assert_eq!(org["attributes"]["landlordSagaId"], json!(["saga-1"]));
    let second = provision_in(&idp, &spec, "saga-2").await?;
    assert_eq!(second[0].outputs["idp.organization_id"], first[0].outputs["idp.organization_id"]);
    // The whole organization was written back: only the saga changed.
    let orgs = double.organizations(SHARED_REALM);
    assert_eq!(orgs.len(), 1);
    let adopted = &orgs[0];
    assert_eq!(adopted["attributes"]["landlordSagaId"], json!(["saga-2"]));
    let mut unchanged = adopted.clone();
    unchanged["attributes"]["landlordSagaId"] = json!(["saga-1"]);
    assert_eq!(unchanged, org, "name, alias, domains and the other attributes are kept");
    let users = double.users(SHARED_REALM);
    assert_eq!(users.len(), 1);
    assert_eq!(saga_of(&users[0]), Some("saga-2"));
    let org_id = adopted["id"].as_str().unwrap_or_default();
    assert_eq!(double.members(SHARED_REALM, org_id), [users[0]["id"].as_str().unwrap_or_default()]);
    assert_eq!(double.actions_emails().len(), 1, "the adopted admin gets no second password mail");
    // S1's late compensations (the client's is a no-op for pooled tenants).
    let notes = compensate_in(&idp, &spec, "saga-1", &first).await?;
    assert_eq!(notes[0]["fenced"], format!("user ada@pooladopt.test in realm {SHARED_REALM} belongs to saga saga-2"));
    assert_eq!(notes[2]["fenced"], format!("organization pooladopt in realm {SHARED_REALM} belongs to saga saga-2"));
    assert_eq!(double.organizations(SHARED_REALM).len(), 1);
    assert_eq!(double.users(SHARED_REALM).len(), 1);
    // S2's own compensations remove them; the shared realm stays.
    compensate_in(&idp, &spec, "saga-2", &second).await?;
    assert!(double.organizations(SHARED_REALM).is_empty());
    assert!(double.users(SHARED_REALM).is_empty());
    assert!(double.realm_names().contains(&SHARED_REALM.to_owned()));
    Ok(())
}

#[tokio::test]
async fn the_compensation_of_a_create_realm_that_failed_half_way_deletes_the_realm_it_left() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    // The realm is created, then setting its user profile is refused: the
    // step fails permanently and reports no resources.
    let spec = tenant("halfway", "abababab-0003", pb::Tier::Bridge);
    double.fail_next_to("PUT", "/admin/realms/tenant-halfway/users/profile", 1, 403);
    let error = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("403");
    assert!(!error.retryable, "{error}");
    let realm = double.realm("tenant-halfway").context("the realm was created before the failure")?;
    assert_eq!(saga_of(&realm), Some("saga-1"), "and marked in the same request");
    // Its compensation has no resources to go by: the name comes from the key.
    let cmd = command_in(&spec, "saga-1", "idp_realm", true);
    assert!(cmd.resources.is_empty());
    for _ in 0..2 {
        let ok = run(&idp, "delete_realm", &cmd).await?;
        assert!(!ok.outputs.contains_key("fenced"), "{:?}", ok.outputs);
    }
    assert!(!double.realm_names().contains(&"tenant-halfway".to_owned()));
    // The same half-done realm taken over by a retry before the failed
    // saga's compensation arrives: the retry finishes the profile, the late
    // compensation leaves the realm.
    let spec = tenant("retaken", "abababab-0004", pb::Tier::Bridge);
    double.fail_next_to("PUT", "/admin/realms/tenant-retaken/users/profile", 1, 403);
    run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("403");
    provision_in(&idp, &spec, "saga-2").await?;
    let user = &double.users("tenant-retaken")[0];
    assert_eq!(user["attributes"]["tenantId"], json!(["abababab-0004"]), "the retry set the user profile");
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-retaken belongs to saga saga-2");
    assert!(double.realm_names().contains(&"tenant-retaken".to_owned()));
    Ok(())
}

#[tokio::test]
async fn another_tenants_or_an_unmarked_object_is_never_deleted_by_a_compensation() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    // Pooled: an organization of another tenant under the same name.
    let owner_spec = tenant("poolowned", "abababab-0005", pb::Tier::Pooled);
    provision_in(&idp, &owner_spec, "saga-owner").await?;
    let intruder = tenant("poolowned", "abababab-0006", pb::Tier::Pooled);
    let ok = run(&idp, "delete_realm", &command_in(&intruder, "saga-owner", "idp_realm", true)).await?;
    assert_eq!(
        ok.outputs["fenced"],
        format!("organization poolowned in realm {SHARED_REALM} belongs to tenant abababab-0005"),
        "the same saga id does not make it the intruder's"
    );
    assert_eq!(double.organizations(SHARED_REALM).len(), 1);
    // A realm an operator made by hand, with no marker: a forward step
    // refuses it and a compensation leaves it.
    double.add_realm(json!({"realm": "tenant-handmade", "enabled": true}));
    let spec = tenant("handmade", "abababab-0007", pb::Tier::Bridge);
    let error =
        run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("no marker");
    assert_eq!(error.code, "conflict", "{error}");
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-handmade carries no tenant marker");
    // A realm of this tenant made before sagas were marked: a compensation
    // cannot tell whose it is and leaves it; a forward step adopts it.
    double.add_realm(json!({"realm": "tenant-legacy", "enabled": true,
        "attributes": {"tenantId": "abababab-0008", "tenantKey": "legacy"}}));
    let spec = tenant("legacy", "abababab-0008", pb::Tier::Bridge);
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-legacy carries no saga marker (made before sagas were marked)");
    run(&idp, "create_realm", &command_in(&spec, "saga-2", "idp_realm", false)).await?;
    let realm = double.realm("tenant-legacy").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-2"));
    assert_eq!(realm["attributes"]["tenantKey"], "legacy");
    assert!(double.realm_names().iter().any(|r| r == "tenant-handmade"));
    assert!(double.requests().iter().all(|r| r.method != "DELETE"), "nothing was deleted");
    Ok(())
}

#[tokio::test]
async fn the_double_answers_501_to_what_it_does_not_implement() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let kc = idp.keycloak();
    for (method, segments) in [
        (reqwest::Method::GET, vec![SHARED_REALM, "groups"]),
        (reqwest::Method::DELETE, vec![SHARED_REALM, "identity-provider", "instances", "x"]),
    ] {
        let reply = kc.send(method.clone(), kc.admin_url(&segments, &[]), None, "an unknown call").await?;
        assert_eq!(reply.status.as_u16(), 501, "{method} {segments:?}: {:?}", reply.body);
    }
    // A realm that does not exist is still Keycloak's 404.
    let reply = kc.send(reqwest::Method::GET, kc.admin_url(&["nowhere"], &[]), None, "a missing realm").await?;
    assert_eq!(reply.status.as_u16(), 404);
    Ok(())
}

#[tokio::test]
async fn the_compensation_of_a_create_admin_user_that_failed_half_way_deletes_the_user_it_left() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("poolhalf", "abababab-0009", pb::Tier::Pooled);
    let org = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await?;
    // The user is created in the shared realm, then adding it to the
    // organization is refused.
    double.fail_next_to("POST", "/members", 1, 403);
    let mut cmd = command_in(&spec, "saga-1", "idp_admin_user", false);
    cmd.inputs = org.outputs.clone();
    let error = run(&idp, "create_admin_user", &cmd).await.expect_err("403");
    assert!(!error.retryable, "{error}");
    assert_eq!(double.users(SHARED_REALM).len(), 1, "the user was created before the failure");
    // No resources: the compensation finds the user by the admin's address.
    let ok = run(&idp, "delete_admin_user", &command_in(&spec, "saga-1", "idp_admin_user", true)).await?;
    assert!(!ok.outputs.contains_key("fenced"), "{:?}", ok.outputs);
    assert!(double.users(SHARED_REALM).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_shared_realm_whose_user_profile_drops_the_markers_is_refused_before_any_user_exists() -> Result<()> {
    let double = KeycloakDouble::start().await?;
    // Organizations enabled, but the default user profile: undeclared
    // attributes (the markers) would be dropped silently.
    double.add_realm(json!({"realm": SHARED_REALM, "enabled": true, "organizationsEnabled": true,
        "smtpServer": {"host": "mail.test", "port": "25", "from": "noreply@shared.test"}}));
    let idp = idp(&double)?;
    let spec = tenant("poolbare", "abababab-000a", pb::Tier::Pooled);
    let org = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await?;
    let mut cmd = command_in(&spec, "saga-1", "idp_admin_user", false);
    cmd.inputs = org.outputs.clone();
    let error = run(&idp, "create_admin_user", &cmd).await.expect_err("profile drops the markers");
    assert!(!error.retryable && error.code == "refused", "{error}");
    assert!(error.message.contains("tenantId, landlordSagaId"), "{error}");
    assert!(double.users(SHARED_REALM).is_empty());
    double.set_unmanaged_attribute_policy(SHARED_REALM, "ADMIN_EDIT");
    run(&idp, "create_admin_user", &cmd).await?;
    assert_eq!(saga_of(&double.users(SHARED_REALM)[0]), Some("saga-1"));
    Ok(())
}
