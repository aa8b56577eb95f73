//! `landlord-database`: see the crate docs.

use landlord_contract::StreamKind;
use landlord_database::{SERVICE, Servers, open_delivery};
use landlord_runtime::{Config, Env, Service, StepWorker, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(SERVICE, &env)?;
    let servers = Servers::from_env(&env)?;
    let telemetry = Telemetry::init(SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    // First thing once /readyz is up, so it is not "ready" without it for long.
    for check in servers.readiness_checks() {
        service.add_readiness_check(check);
    }
    // Delivery settings are the same on every server.
    let first = servers.servers()[0].provisioner.settings();
    let delivery = open_delivery(first, &service.broker, service.config.streams.replicas).await?;
    let provisioner = servers.with_delivery(delivery);
    if let Err(failure) = provisioner.prepare().await {
        // Not fatal: the first command tries again, and fails as retryable
        // while the server is away (and /readyz says so meanwhile).
        tracing::warn!(%failure, "the tenant-data database is not ready yet");
    }
    let subjects = vec![service.broker.namespace.service_commands(SERVICE)];
    let worker = StepWorker::new(provisioner, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
