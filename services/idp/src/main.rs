//! `landlord-idp`: see the crate docs.

use landlord_contract::{MEMBER_SERVICE, StreamKind};
use landlord_idp::{Idp, MemberWorker, SERVICE, Settings};
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
    let members = MemberWorker::new(idp.clone());
    let worker = StepWorker::new(idp, service.publisher.clone());
    service.consume(StreamKind::Commands, SERVICE, subjects, worker).await?;
    // Clerk members: their own subject and consumer (not saga steps).
    let member_subjects = vec![service.broker.namespace.member_command_subject()];
    service.consume(StreamKind::Commands, MEMBER_SERVICE, member_subjects, members).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
