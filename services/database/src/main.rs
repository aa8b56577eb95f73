//! `landlord-database`: see the crate docs.

use landlord_contract::StreamKind;
use landlord_database::{Provisioner, SERVICE, Settings};
use landlord_runtime::{Config, Env, Service, StepWorker, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(SERVICE, &env)?;
    let settings = Settings::from_env(&env)?;
    let telemetry = Telemetry::init(SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    let provisioner = Provisioner::connect(settings)?;
    if let Err(failure) = provisioner.prepare().await {
        // Not fatal: the first command tries again, and fails as retryable
        // while the server is away.
        tracing::warn!(%failure, "the tenant-data database is not ready yet");
    }
    let subjects = vec![service.broker.namespace.service_commands(SERVICE)];
    let worker = StepWorker::new(provisioner, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
