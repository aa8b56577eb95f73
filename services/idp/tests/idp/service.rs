//! The binary over NATS and its configuration.

use super::helpers::*;

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
