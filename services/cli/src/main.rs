//! `landlord`: request a tenant and follow its saga from a terminal.
//!
//! ```text
//! landlord request <key> --admin-email <email> [--name <display name>] [--plan <plan>]
//!                  [--first-name <name>] [--last-name <name>] [--domain <domain>]...
//!                  [--id <idempotency id>] [--no-wait] [--timeout <duration>]
//! landlord watch <key> [--timeout <duration>]
//! landlord audit [--remove-orphans]
//! ```
//!
//! `request` publishes a `TenantRequested` on the events stream — what any
//! platform service does to get a tenant — with `Nats-Msg-Id` = the
//! idempotency id (default `cli-<key>`, so running the same command twice
//! asks once), then prints the saga's lifecycle events as they come until
//! the tenant is ACTIVE (exit 0) or rejected, failed or cancelled (exit 1).
//! `watch` prints a tenant's events from the start of the stream the same
//! way. The broker comes from the runtime's variables (`LANDLORD_NATS_URL`,
//! `LANDLORD_NAMESPACE`); usage errors exit 2. `audit` compares the
//! backends with the control plane's resources (see [`audit`]).

mod audit;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, Namespace, StreamKind, TenantKey, pb};
use landlord_runtime::{Broker, Config, Env, Envelope, Publisher};
use prost::Message as _;

const USAGE: &str = "usage:
  landlord request <key> --admin-email <email> [--name <display name>] [--plan <plan>]
                   [--first-name <name>] [--last-name <name>] [--domain <domain>]...
                   [--id <idempotency id>] [--no-wait] [--timeout <duration, default 120s>]
  landlord watch <key> [--timeout <duration, default 120s>]
  landlord audit [--remove-orphans]";

/// The command line, parsed.
#[derive(Debug, Default)]
struct Args {
    command: String,
    key: String,
    admin_email: Option<String>,
    name: Option<String>,
    plan: Option<String>,
    first_name: String,
    last_name: String,
    domains: Vec<String>,
    id: Option<String>,
    wait: bool,
    remove_orphans: bool,
    timeout: Duration,
}

fn parse(raw: Vec<String>) -> Result<Args, String> {
    let mut args = Args { wait: true, timeout: Duration::from_secs(120), ..Default::default() };
    let mut raw = raw.into_iter();
    args.command = raw.next().ok_or("no command")?;
    if !matches!(args.command.as_str(), "request" | "watch" | "audit") {
        return Err(format!("unknown command {:?}", args.command));
    }
    while let Some(arg) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--admin-email" => args.admin_email = Some(value()?),
            "--name" => args.name = Some(value()?),
            "--plan" => args.plan = Some(value()?),
            "--first-name" => args.first_name = value()?,
            "--last-name" => args.last_name = value()?,
            "--domain" => args.domains.push(value()?),
            "--id" => args.id = Some(value()?),
            "--no-wait" => args.wait = false,
            "--remove-orphans" if args.command == "audit" => args.remove_orphans = true,
            "--timeout" => {
                let v = value()?;
                args.timeout = humantime::parse_duration(&v).map_err(|e| format!("--timeout {v:?}: {e}"))?;
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            key if args.key.is_empty() => args.key = key.to_owned(),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if args.key.is_empty() && args.command != "audit" {
        return Err("no tenant key".into());
    }
    if args.command == "request" && args.admin_email.is_none() {
        return Err("request needs --admin-email".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("landlord: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("landlord: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// True when the tenant ended (or, not waiting, was asked for) well.
async fn run(args: Args) -> Result<bool> {
    if args.command == "audit" {
        return audit::run(args.remove_orphans).await;
    }
    let key = match TenantKey::parse(&args.key) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("landlord: tenant key {:?} rejected ({}): {error}", args.key, error.rule());
            return Ok(false);
        }
    };
    let config = Config::from("cli", &Env::process())?;
    let broker = Broker::connect(&config.nats_url, "landlord-cli", config.namespace.clone())
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
    let start = if args.command == "request" {
        let request = pb::TenantRequested {
            idempotency_id: args.id.clone().unwrap_or_else(|| format!("cli-{key}")),
            key: key.to_string(),
            display_name: args.name.clone().unwrap_or_else(|| key.to_string()),
            plan: args.plan.clone().unwrap_or_else(|| "standard".into()),
            admin: Some(pb::AdminContact {
                email: args.admin_email.clone().unwrap_or_default(),
                first_name: args.first_name.clone(),
                last_name: args.last_name.clone(),
            }),
            domains: args.domains.clone(),
            source: "cli".into(),
            ..Default::default()
        };
        let publisher = Publisher::new(&broker, "cli");
        let envelope = Envelope::new(request.idempotency_id.clone()).tenant(key.to_string());
        let published = publisher.publish_event(&key, &request, &envelope).await.context("publishing the request")?;
        let repeat = if published.duplicate { " (a repeat: the broker already had it)" } else { "" };
        println!("requested tenant {key} (idempotency id {}){repeat}", request.idempotency_id);
        if !args.wait {
            return Ok(true);
        }
        DeliverPolicy::ByStartSequence { start_sequence: published.sequence }
    } else {
        DeliverPolicy::All
    };
    follow(&broker, &config.namespace, &key, start, args.timeout).await
}

/// Prints the tenant's events from `start` until a terminal one.
async fn follow(
    broker: &Broker,
    namespace: &Namespace,
    key: &TenantKey,
    start: DeliverPolicy,
    timeout: Duration,
) -> Result<bool> {
    let stream = broker.jetstream.get_stream(namespace.stream_name(StreamKind::Events)).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: namespace.event_filter(Some(key), None),
            deliver_policy: start,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, messages.next()).await else {
            bail!("no final event for {key} within {timeout:?}; `landlord watch {key}` follows it further");
        };
        let message = next.context("the event stream ended")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = message.subject.rsplit('.').next().unwrap_or_default();
        let Some(kind) = EventKind::from_name(name) else { continue };
        let (line, outcome) = describe(kind, &message.payload)?;
        println!("  {:<21} {line}", kind.name());
        if let Some(ok) = outcome {
            return Ok(ok);
        }
    }
}

fn resources(resources: &[pb::Resource]) -> String {
    resources.iter().map(|r| format!("\n{:>26}{} {}", "", r.kind, r.external_id)).collect()
}

fn error(error: Option<&pb::StepError>) -> String {
    error.map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default()
}

/// One line for an event, and whether it ends the saga (well or not).
fn describe(kind: EventKind, payload: &[u8]) -> Result<(String, Option<bool>)> {
    Ok(match kind {
        EventKind::Requested => (String::new(), None),
        EventKind::Accepted => {
            let e = pb::TenantAccepted::decode(payload)?;
            (format!("tenant id {}, plan {}", e.tenant_id, e.plan), None)
        }
        EventKind::Rejected => {
            let e = pb::TenantRejected::decode(payload)?;
            (format!("{} ({})", e.reason, e.rule), Some(false))
        }
        EventKind::ProvisioningStarted => (String::new(), None),
        EventKind::StepStarted => {
            let e = pb::StepStarted::decode(payload)?;
            (format!("{} (attempt {})", e.step, e.attempt), None)
        }
        EventKind::StepSucceeded => {
            let e = pb::StepSucceeded::decode(payload)?;
            (format!("{}{}", e.step, resources(&e.resources)), None)
        }
        EventKind::StepFailed => {
            let e = pb::StepFailed::decode(payload)?;
            let then = if e.will_retry { "will retry" } else { "no retry" };
            (format!("{} attempt {}: {} ({then})", e.step, e.attempt, error(e.error.as_ref())), None)
        }
        EventKind::CompensationStarted => {
            let e = pb::CompensationStarted::decode(payload)?;
            (format!("after {}: {}", e.failed_step, e.reason), None)
        }
        EventKind::StepCompensated => (pb::StepCompensated::decode(payload)?.step, None),
        EventKind::Activated => {
            let e = pb::TenantActivated::decode(payload)?;
            (format!("ACTIVE{}", resources(&e.resources)), Some(true))
        }
        EventKind::ProvisioningFailed => {
            let e = pb::ProvisioningFailed::decode(payload)?;
            (format!("FAILED at {}: {} (everything done was undone)", e.failed_step, e.reason), Some(false))
        }
        EventKind::Cancelled => {
            let e = pb::TenantCancelled::decode(payload)?;
            (format!("CANCELLED by {}: {}", e.requested_by, e.reason), Some(false))
        }
        // Lifecycle events after ACTIVE: not a provisioning saga's end.
        _ => (String::new(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse(line.split_whitespace().map(str::to_owned).collect())
    }

    #[test]
    fn the_command_line_is_parsed_or_refused_with_a_reason() {
        let a =
            args("request acme --admin-email a@acme.test --domain acme.test --domain app.acme.test --no-wait").unwrap();
        assert_eq!((a.key.as_str(), a.wait), ("acme", false));
        assert_eq!(a.domains, ["acme.test", "app.acme.test"]);
        assert_eq!(args("watch acme --timeout 5s").unwrap().timeout, Duration::from_secs(5));
        assert_eq!(args("request acme").unwrap_err(), "request needs --admin-email");
        assert_eq!(args("delete acme").unwrap_err(), "unknown command \"delete\"");
        assert_eq!(args("watch acme --plan").unwrap_err(), "--plan needs a value");
        assert_eq!(args("watch acme --force").unwrap_err(), "unknown option --force");
        assert_eq!(args("watch").unwrap_err(), "no tenant key");
        assert!(args("audit --remove-orphans").unwrap().remove_orphans);
        assert_eq!(args("watch acme --remove-orphans").unwrap_err(), "unknown option --remove-orphans");
    }
}
