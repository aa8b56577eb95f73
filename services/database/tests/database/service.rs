//! The service: a backend outage, readiness, settings and the binary over
//! NATS.

use super::helpers::*;

#[tokio::test]
async fn backend_down_is_retryable_and_back_up_succeeds() -> Result<()> {
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let provisioner = Provisioner::connect(settings(&db.url, &SecretsKey::generate()?)?)?;
    let spec = tenant(&unique_key("flaky"), pb::Tier::Bridge);
    provisioner.run("provision", &command(&spec, false), &delivery()).await?;
    let postgres = tokio::task::spawn_blocking(move || postgres.stop().map(|()| postgres)).await??;
    let mut postgres = postgres;
    for (action, compensate) in [("provision", false), ("deprovision", true)] {
        let failure = provisioner.run(action, &command(&spec, compensate), &delivery()).await.unwrap_err();
        assert!(failure.retryable, "{action}: {failure}");
    }
    let silo = tenant(&unique_key("flakysilo"), pb::Tier::Silo);
    assert!(provisioner.run("provision", &command(&silo, false), &delivery()).await.unwrap_err().retryable);
    postgres = tokio::task::spawn_blocking(move || postgres.restart().map(|()| postgres)).await??;
    provisioner.run("deprovision", &command(&spec, true), &delivery()).await?;
    provisioner.run("provision", &command(&silo, false), &delivery()).await?;
    provisioner.run("deprovision", &command(&silo, true), &delivery()).await?;
    drop(postgres);
    Ok(())
}

#[tokio::test]
async fn readyz_of_the_worker_follows_the_tenant_data_database() -> Result<()> {
    let nats = NatsServer::shared().await;
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let port = free_port();
    let _service = Process::start(
        "database-readyz",
        &workspace_binary("landlord-database")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
            ("LANDLORD_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
            ("LANDLORD_TENANT_DATABASE_URL".into(), db.url.clone()),
            ("LANDLORD_SECRETS_KEY".into(), SecretsKey::generate()?.to_base64()),
        ],
        &scratch_dir("logs")?,
    )?;
    // The endpoint is up a moment before the worker adds its check: wait for both.
    let readyz = |want: u16| async move {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await.ok()??;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == want && body["checks"]["tenant_data_database"].is_string()).then_some(body)
    };
    let body = eventually("the worker to be ready", WAIT, || readyz(200)).await?;
    assert_eq!(body["checks"]["tenant_data_database"], "ok", "{body}");
    assert_eq!((body["broker"].as_str(), body["database"].as_str()), (Some("ok"), Some("not used")), "{body}");

    postgres = tokio::task::spawn_blocking(move || postgres.stop().map(|()| postgres)).await??;
    let body = eventually("503 while the tenant-data server is down", WAIT, || readyz(503)).await?;
    assert_eq!(body["status"], "not ready", "{body}");
    let check = body["checks"]["tenant_data_database"].as_str().unwrap_or_default();
    assert!(check.starts_with("unreachable"), "names the tenant-data database: {body}");
    assert_eq!(body["broker"], "ok", "only the tenant-data database is down: {body}");

    postgres = tokio::task::spawn_blocking(move || postgres.restart().map(|()| postgres)).await??;
    eventually("ready again once it is back", WAIT, || readyz(200)).await?;
    drop(postgres);
    Ok(())
}

#[test]
fn settings_errors_name_the_variable_and_hide_secrets() {
    let err =
        |pairs: &[(&str, &str)]| Settings::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err().to_string();
    assert!(err(&[]).starts_with("LANDLORD_TENANT_DATABASE_URL is required"));
    let e = err(&[("LANDLORD_TENANT_DATABASE_URL", "mysql://u:hunter2@x/y")]);
    assert!(e.starts_with("LANDLORD_TENANT_DATABASE_URL") && !e.contains("hunter2"), "{e}");
    let url = ("LANDLORD_TENANT_DATABASE_URL", "postgres://127.0.0.1/t");
    assert!(err(&[url]).starts_with("LANDLORD_SECRETS_KEY is required"));
    let e = err(&[url, ("LANDLORD_SECRETS_KEY", "c2hvcnQ=")]);
    assert!(e.starts_with("LANDLORD_SECRETS_KEY") && e.contains("32 bytes"), "{e}");
    let key = SecretsKey::generate().map(|k| k.to_base64()).unwrap_or_default();
    let key = ("LANDLORD_SECRETS_KEY", key.as_str());
    let e = err(&[url, key, ("LANDLORD_DATABASE_PASSWORD_DELIVERY", "carrier-pigeon")]);
    assert!(e.starts_with("LANDLORD_DATABASE_PASSWORD_DELIVERY") && e.contains("welcome-email or none"), "{e}");
    // Defaults, and where tenants are told to connect.
    let settings = Settings::from_env(&Env::from_pairs([url, key])).unwrap();
    assert_eq!(settings.password_delivery, landlord_database::PasswordDelivery::WelcomeEmail);
    assert_eq!(settings.secrets_ttl, Duration::from_secs(7 * 24 * 3600));
    assert_eq!((settings.public_host.as_str(), settings.public_port), ("127.0.0.1", 5432));
    let public = [url, key, ("LANDLORD_TENANT_DATABASE_PUBLIC_HOST", "db.example.com")];
    let settings = Settings::from_env(&Env::from_pairs(public)).unwrap();
    assert_eq!((settings.public_host.as_str(), settings.public_port), ("db.example.com", 5432));
}

#[tokio::test]
async fn the_service_binary_answers_a_provision_command_over_nats() -> Result<()> {
    let nats = NatsServer::shared().await;
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    let db = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let key = SecretsKey::generate()?;
    let service = Process::start(
        "database",
        &workspace_binary("landlord-database")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
            ("LANDLORD_TENANT_DATABASE_URL".into(), db.url.clone()),
            ("LANDLORD_SECRETS_KEY".into(), key.to_base64()),
            ("RUST_LOG".into(), "debug".into()),
        ],
        &scratch_dir("logs")?,
    )?;
    let client = async_nats::connect(nats.url()).await?;
    let mut answers = client.subscribe(namespace.result_subject("database", "provision")).await?;
    let env = Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &env)?).await?;
    let publisher = Publisher::new(&sender.broker, "test");
    let spec = tenant(&unique_key("wire"), pb::Tier::Bridge);
    publisher
        .publish(
            namespace.command_subject("database", "provision"),
            &command(&spec, false),
            &Envelope::new("cmd-db-wire"),
        )
        .await?;
    let answer = tokio::time::timeout(WAIT, answers.next()).await?.context("no result")?;
    let result = pb::StepResult::decode(answer.payload.clone())?;
    let Some(pb::step_result::Outcome::Ok(ok)) = result.outcome else { anyhow::bail!("not ok: {result:?}") };
    assert_eq!(result.saga_id, format!("saga-{}", spec.key));
    // The password: in the store, not on the wire, not in the log.
    let key_copy = key.clone();
    let store = PgSecretStore::new(sqlx::PgPool::connect(&db.url).await?, key);
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    let password = store.get(&reference).await?.context("kept")?;
    let wire = answer.payload.to_vec();
    assert!(!wire.windows(43).any(|w| w == password.expose().as_bytes()));
    // The binary seals the delivery copy (welcome-email is the default).
    assert_eq!(ok.outputs["database.password_delivery"], "welcome-email");
    let delivery_ref = SecretRef::parse(&ok.outputs["database.delivery_ref"]).context("delivery reference")?;
    let mail =
        KvSecrets::open(&sender.broker.jetstream, namespace.root(), 1, Duration::from_secs(3600), key_copy).await?;
    assert_eq!(mail.get(&delivery_ref).await?.as_deref(), Some(password.expose()));
    let log = eventually("the service logs the tenant", WAIT, || {
        let output = service.output();
        async move { output.contains("bridge tenant ready").then_some(output) }
    })
    .await?;
    assert!(!log.contains(password.expose()), "password in the log");
    assert!(log.contains(&spec.key) && log.contains(&result.saga_id), "spans carry key and saga id:\n{log}");
    Ok(())
}
