//! `landlord-storage`: see the crate docs.

use landlord_contract::StreamKind;
use landlord_runtime::{Config, Env, Service, StepWorker, Telemetry};
use landlord_storage::{SERVICE, Settings, Storage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(SERVICE, &env)?;
    let settings = Settings::from_env(&env)?;
    let telemetry = Telemetry::init(SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    let subjects = vec![service.broker.namespace.service_commands(SERVICE)];
    let storage = Storage::new(settings.clone());
    // Exports expire by this sweep: S3-compatible servers such as s3s-fs
    // have no lifecycle rules.
    let (sweeper, stop) = (storage.clone(), service.shutdown_token());
    service.spawn(async move {
        sweeper.sweep_until(settings.export_sweep_interval, settings.export_retention, stop.cancelled()).await;
    });
    let worker = StepWorker::new(storage, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
