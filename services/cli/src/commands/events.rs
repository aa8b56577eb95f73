//! `events tail`: the events stream through an ordered consumer, narrowed
//! on the server by tenant and event name, from `--since` or new events
//! only; a line (or JSON line) per event.

use anyhow::{Result, bail};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, StreamKind, TenantKey, header};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Ctx, UsageError, nats};
use crate::api::Exit;
use crate::cli::{Events, Format};
use crate::output;

/// `--since`: a duration back from now (`10m`) or an RFC 3339 time.
pub fn since(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, UsageError> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(raw)
        .map_err(|_| UsageError(format!("--since {raw:?} is neither a duration (10m) nor an RFC 3339 time")))?;
    Ok(now - ago)
}

pub async fn run(ctx: &Ctx, verb: Events) -> Result<Exit> {
    let Events::Tail { tenant, kind, since: from, limit, idle } = verb;
    let tenant =
        tenant.as_deref().map(TenantKey::parse).transpose().map_err(|e| UsageError(format!("--tenant: {e}")))?;
    let kind = match kind.as_deref() {
        None => None,
        Some(name) => Some(EventKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            UsageError(format!("--type {name:?} is not one of: {}", known.join(", ")))
        })?),
    };
    let deliver_policy = match from.as_deref() {
        None => DeliverPolicy::New,
        Some(raw) => DeliverPolicy::ByStartTime { start_time: since(raw, OffsetDateTime::now_utc())? },
    };
    let (broker, namespace) = nats::connect(ctx).await?;
    let stream = broker.jetstream.get_stream(namespace.stream_name(StreamKind::Events)).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: namespace.event_filter(tenant.as_ref(), kind),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => messages.next().await,
        };
        let Some(message) = next else { bail!("the event stream ended") };
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some((token, kind)) = namespace.parse_event_subject(&message.subject) else { continue };
        let attribute = |name: &str| {
            message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned()).unwrap_or_default()
        };
        let (detail, _) =
            nats::describe(kind, &message.payload).unwrap_or_else(|e| (format!("undecodable: {e}"), None));
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let time = attribute(header::TIME);
        match ctx.format {
            Format::Table => println!("{time:<30} {token:<20} {:<22} {}", kind.name(), detail.replace('\n', " ")),
            _ => output::json_line(&json!({
                "sequence": sequence, "time": time, "tenant": token, "event": kind.name(),
                "saga": attribute(header::CORRELATION_ID), "id": attribute(header::ID),
                "detail": detail.split_whitespace().collect::<Vec<_>>().join(" "),
            })),
        }
        printed += 1;
    }
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_is_a_duration_ago_or_a_time() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        assert_eq!(since("10m", now).unwrap(), now - Duration::from_secs(600));
        assert_eq!(since("1970-01-01T00:00:10Z", now).unwrap().unix_timestamp(), 10);
        assert!(since("yesterday", now).is_err());
    }
}
