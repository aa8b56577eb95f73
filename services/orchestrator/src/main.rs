//! `landlord-orchestrator`: see the crate docs.

use landlord_control_plane::Plans;
use landlord_orchestrator::{Lifecycle, Timing, attach_with_metrics, metrics};
use landlord_runtime::{Config, Env, Service, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let config = Config::from(landlord_orchestrator::SERVICE, &env)?;
    config.require_database()?;
    let plans_path = env.string("LANDLORD_PLANS", "deploy/plans.toml");
    let plans = Plans::load(&plans_path)?;
    let defaults = Timing::default();
    let timing = Timing {
        timer_interval: env.duration("LANDLORD_TIMER_INTERVAL", defaults.timer_interval)?,
        relay_poll: env.duration("LANDLORD_RELAY_POLL", defaults.relay_poll)?,
        relay_grace: env.duration("LANDLORD_RELAY_GRACE", defaults.relay_grace)?,
        inbox_retention: env.duration("LANDLORD_INBOX_RETENTION", defaults.inbox_retention)?,
    };
    let lifecycle =
        Lifecycle { purge_interval: env.duration("LANDLORD_PURGE_INTERVAL", Lifecycle::default().purge_interval)? };
    let metric_defaults = metrics::Settings::default();
    let gauges = metrics::Settings {
        refresh: env.duration("LANDLORD_METRICS_INTERVAL", metric_defaults.refresh)?,
        stuck_after: env.duration("LANDLORD_SAGA_STUCK_AFTER", metric_defaults.stuck_after)?,
    };
    let telemetry = Telemetry::init(landlord_orchestrator::SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    attach_with_metrics(&mut service, plans, timing, lifecycle, gauges).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
