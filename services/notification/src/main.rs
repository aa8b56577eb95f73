//! `landlord-notification`: see the crate docs.

use std::time::Duration;

use landlord_contract::StreamKind;
use landlord_notification::{Ledger, Notifier, SERVICE, Settings, Templates};
use landlord_runtime::{Config, Env, KvSecrets, Service, StepWorker, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(SERVICE, &env)?;
    let settings = Settings::from_env(&env)?;
    let templates = Templates::load(settings.templates.as_deref())?;
    let telemetry = Telemetry::init(SERVICE, config.otlp_endpoint.as_deref())?;
    let replicas = config.streams.replicas;
    // A claim older than the ack wait belongs to a delivery that is gone.
    let claim_timeout = config.consumer.ack_wait.max(Duration::from_secs(30));
    let mut service = Service::build(config).await?;
    let ledger = Ledger::open(
        &service.broker.jetstream,
        service.broker.namespace.root(),
        replicas,
        settings.ledger_ttl,
        claim_timeout,
    )
    .await
    .map_err(|e| anyhow::anyhow!("opening the sent-mail ledger: {e}"))?;
    let mut notifier = Notifier::new(settings.clone(), templates, ledger);
    if let Some(key) = settings.secrets_key {
        let secrets = KvSecrets::open(
            &service.broker.jetstream,
            service.broker.namespace.root(),
            replicas,
            settings.secrets_ttl,
            key,
        )
        .await?;
        notifier = notifier.with_secrets(secrets);
    }
    let subjects = vec![service.broker.namespace.service_commands(SERVICE)];
    let worker = StepWorker::new(notifier, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
