//! `landlord-idp`: see the crate docs.

use landlord_contract::StreamKind;
use landlord_idp::{Idp, SERVICE, Settings};
use landlord_runtime::{Config, Env, Service, StepWorker, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(SERVICE, &env)?;
    let settings = Settings::from_env(&env)?;
    let telemetry = Telemetry::init(SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    let secrets = Idp::open_secrets(
        &settings,
        &service.broker.jetstream,
        service.broker.namespace.root(),
        service.config.streams.replicas,
    )
    .await?;
    let idp = Idp::new(settings, secrets)?;
    let subjects = vec![service.broker.namespace.service_commands(SERVICE)];
    let worker = StepWorker::new(idp, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
