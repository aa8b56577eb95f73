//! `landlord-orchestrator`: see the crate docs.

use landlord_orchestrator::{Plans, Timing, attach};
use landlord_runtime::{Config, Env, Service, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(landlord_orchestrator::SERVICE, &env)?;
    config.require_database()?;
    let plans_path = env.string("LANDLORD_PLANS", "deploy/plans.toml");
    let plans = Plans::load(&plans_path)?;
    let timing = Timing {
        timer_interval: env.duration("LANDLORD_TIMER_INTERVAL", Timing::default().timer_interval)?,
        relay_poll: env.duration("LANDLORD_RELAY_POLL", Timing::default().relay_poll)?,
    };
    let telemetry = Telemetry::init(landlord_orchestrator::SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    attach(&mut service, plans, timing).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
