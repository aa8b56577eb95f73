//! The kept password and its sealed delivery copy.

use super::helpers::*;

#[tokio::test]
async fn a_fresh_service_reads_back_the_password_with_the_same_key_only() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("keyed"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    let pool = f.provisioner.pool().clone();
    let wrong = PgSecretStore::new(pool, SecretsKey::generate()?);
    assert!(wrong.get(&reference).await.is_err(), "another key cannot open it");
    // The row cannot be moved under another reference either.
    sqlx::query("UPDATE landlord_secrets.secrets SET reference = 'landlord-secret:moved' WHERE reference = $1")
        .bind(reference.as_str())
        .execute(&mut f.admin().await?)
        .await?;
    let moved = SecretRef::parse("landlord-secret:moved").context("reference")?;
    assert!(f.provisioner.secrets().get(&moved).await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_password_reaches_the_admin_only_through_a_sealed_delivery_copy() -> Result<()> {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let nats = NatsServer::shared().await;
    let namespace = unique_namespace();
    let broker = Broker::connect(&nats.url(), "database-test", namespace.clone()).await?;
    let key = SecretsKey::generate()?;
    let settings = settings(&db.url, &key)?;
    let store = open_delivery(&settings, &broker, 1).await?;
    let provisioner = Provisioner::connect(settings)?.with_delivery(store);
    provisioner.prepare().await?;
    // The notification worker's side: the same bucket, opened with the same key.
    let mail = KvSecrets::open(&broker.jetstream, namespace.root(), 1, Duration::from_secs(3600), key).await?;
    let bucket = broker.jetstream.get_key_value(format!("{}_secrets", namespace.root())).await?;

    for tier in [pb::Tier::Bridge, pb::Tier::Silo] {
        let spec = tenant(&unique_key("handover"), tier);
        let ok = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(ok.outputs["database.password_delivery"], "welcome-email");
        let durable = SecretRef::parse(&ok.outputs["database.password_ref"]).context("durable reference")?;
        let reference = SecretRef::parse(&ok.outputs["database.delivery_ref"]).context("delivery reference")?;
        assert_eq!(reference.as_str(), format!("landlord-secret:database/{}/delivery-password", spec.tenant_id));
        assert_ne!(reference, durable, "the delivery copy has a reference of its own");
        let copy = mail.get(&reference).await?.context("a delivery copy is sealed")?;
        assert_eq!(copy.len(), 43);

        // It is the password that logs in, with the connection details the result gives.
        let mut session = connect_with_outputs(&ok, &copy).await?;
        let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&mut session).await?;
        assert_eq!(user, ok.outputs["database.role"]);
        let wrong = connect_with_outputs(&ok, "not-the-password").await.unwrap_err();
        assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "passwords are checked: {wrong}");
        assert_eq!(
            ok.outputs["database.url"],
            format!(
                "postgresql://{}@{}:{}/{}",
                ok.outputs["database.role"],
                ok.outputs["database.host"],
                ok.outputs["database.port"],
                ok.outputs["database.name"]
            )
        );

        // Sealed in the bucket, and nowhere in the result.
        let stored = bucket.get(format!("database/{}/delivery-password", spec.tenant_id)).await?.context("stored")?;
        assert!(!stored.windows(copy.len()).any(|w| w == copy.as_bytes()), "stored in the clear");
        assert!(!ok.encode_to_vec().windows(copy.len()).any(|w| w == copy.as_bytes()), "password in the StepOk");

        // A redelivered provision reuses it; after the mail purged it, a
        // late redelivery seals the same password, never a new one.
        let again = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(again.outputs, ok.outputs);
        assert_eq!(mail.get(&reference).await?.as_deref(), Some(copy.as_str()));
        mail.delete(&reference).await?;
        provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(mail.get(&reference).await?.as_deref(), Some(copy.as_str()));

        // Compensation forgets both copies.
        drop(session);
        let mut undo = command(&spec, true);
        undo.resources = ok.resources.clone();
        provisioner.run("deprovision", &undo, &delivery()).await?;
        assert!(mail.get(&reference).await?.is_none());
        assert!(provisioner.secrets().get(&durable).await?.is_none());
    }

    // A stale copy (say, of an earlier password for the same tenant id) is replaced.
    let spec = tenant(&unique_key("stale"), pb::Tier::Bridge);
    let stale = SecretRef::new("database", &spec.tenant_id, "delivery-password");
    mail.put_if_absent(&stale, "an-earlier-password").await?;
    let ok = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
    let copy = mail.get(&stale).await?.context("sealed")?;
    assert_ne!(copy, "an-earlier-password");
    connect_with_outputs(&ok, &copy).await?;

    // `none`: no delivery copy, no reference; the durable copy stays.
    let none = settings_with(&db.url, &SecretsKey::generate()?, &[("LANDLORD_DATABASE_PASSWORD_DELIVERY", "none")])?;
    assert!(open_delivery(&none, &broker, 1).await?.is_none());
    let quiet = Provisioner::connect(none)?.with_delivery(Some(mail.clone()));
    assert!(quiet.delivery().is_none(), "a store is not used when delivery is none");
    let spec = tenant(&unique_key("nomail"), pb::Tier::Bridge);
    let ok = quiet.run("provision", &command(&spec, false), &delivery()).await?;
    assert_eq!(ok.outputs["database.password_delivery"], "none");
    assert!(!ok.outputs.contains_key("database.delivery_ref"));
    assert!(ok.outputs.contains_key("database.password_ref"));
    let unsent = SecretRef::new("database", &spec.tenant_id, "delivery-password");
    assert!(mail.get(&unsent).await?.is_none());
    drop(postgres);
    Ok(())
}
