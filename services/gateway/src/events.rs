//! `GET /v1/events`: lifecycle events as Server-Sent Events, for
//! dashboards.
//!
//! Each connection reads the events stream through its own ordered consumer
//! (JetStream redelivers nothing to it and it recreates itself on a gap), so
//! events arrive in stream order. The SSE `id` is the stream sequence: a
//! client that reconnects with `Last-Event-ID: n` (or `?last_event_id=n`,
//! for the first connection of a browser `EventSource`) continues at
//! sequence `n + 1`, missing nothing and repeating nothing. Without one the
//! feed starts with the next new event. `tenant` and `type` (an event name
//! such as `step_failed`) narrow the feed by subject, on the server.
//!
//! A tenant-scoped token gets its own tenant's events only: the feed's
//! subject filter is its tenant's key whatever the query says, and a
//! `tenant` naming another key is answered 404 as a missing tenant would be
//! to it — whether that tenant exists or not (docs/auth.md). A key can be
//! used again after its tenant is purged, and the events of each tenant
//! that held it share its subjects: a scoped feed also skips what was
//! published outside its own tenant's time with the key ([`Window`]).

use std::convert::Infallible;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, StreamKind, TenantKey, header};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub tenant: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub last_event_id: Option<String>,
}

/// Where a feed resumed after `raw` (from `source`: the header or the
/// query parameter) starts: the next sequence. Checked: `raw` comes from
/// the client, and the last sequence has no next.
fn start_after(source: &str, raw: &str) -> Result<u64> {
    let last: u64 = raw.trim().parse().map_err(|_| {
        Problem::bad_request("last-event-id", format!("{source} {raw:?} is not a stream sequence number"))
            .with_rule("last_event_id.number")
    })?;
    last.checked_add(1).ok_or_else(|| {
        Problem::bad_request("last-event-id", format!("{source} {last} is past the last possible stream sequence"))
            .with_rule("last_event_id.out_of_range")
    })
}

/// `GET /v1/events?tenant=&type=` with optional `Last-Event-ID`.
pub async fn feed(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    caller.require(READ)?;
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    let tenant = query
        .tenant
        .as_deref()
        .map(TenantKey::parse)
        .transpose()
        .map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    let (tenant, window) = narrow(&app, &caller, tenant).await?;
    let kind = match query.kind.as_deref() {
        None => None,
        Some(name) => Some(EventKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            Problem::bad_request("type", format!("type {name:?} is not one of: {}", known.join(", ")))
        })?),
    };
    let start = match headers.get("last-event-id") {
        Some(value) => {
            let raw = value.to_str().map_err(|_| {
                Problem::bad_request("last-event-id", "Last-Event-ID is not a stream sequence number")
                    .with_rule("last_event_id.number")
            })?;
            Some(start_after("Last-Event-ID", raw)?)
        }
        None => query.last_event_id.as_deref().map(|raw| start_after("last_event_id", raw)).transpose()?,
    };
    let deliver_policy = match start {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => DeliverPolicy::New,
    };
    let messages = ordered_messages(&app, app.namespace.event_filter(tenant.as_ref(), kind), deliver_policy).await?;
    let events = messages.filter_map(move |message| async move {
        match message {
            Ok(message) if !window.holds(&message) => None,
            Ok(message) => Some(Ok::<_, Infallible>(to_event(&message))),
            Err(error) => {
                // The ordered consumer recreates itself; the client sees
                // nothing but a pause.
                tracing::warn!(%error, "event feed interrupted");
                None
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// The tenant a feed asked for `asked` reads, narrowed to the caller's
/// own for a tenant-scoped caller (another key: 404, as a missing tenant),
/// and the [`Window`] its events must fall in. Shared by `/v1/events` and
/// the console's live view.
pub async fn narrow(app: &App, caller: &Caller, asked: Option<TenantKey>) -> Result<(Option<TenantKey>, Window)> {
    let Some(scope) = caller.tenant_scope() else {
        return Ok((asked, Window::default()));
    };
    let window = match &scope.tenant {
        Some(own) => Window::of(app, own.id).await?,
        None => Window::default(),
    };
    let own = scope.key().and_then(|key| TenantKey::parse(key).ok());
    match (own, asked) {
        (Some(own), None) => Ok((Some(own), window)),
        (Some(own), Some(asked)) if asked == own => Ok((Some(own), window)),
        (_, asked) => {
            let named = asked.map_or_else(|| scope.claim.clone(), |key| key.to_string());
            Err(Problem::not_found(format!("no tenant has the key {named:?}")))
        }
    }
}

/// When a scoped feed's tenant held its key: after the previous holder's
/// tombstone, until its own (if it is one). Unbounded for a global feed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    after: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
}

impl Window {
    async fn of(app: &App, tenant: uuid::Uuid) -> Result<Self> {
        let found: Option<(Option<OffsetDateTime>, Option<OffsetDateTime>)> = sqlx::query_as(
            "SELECT (SELECT max(o.deleted_at) FROM tenants o
                     WHERE o.key = t.key AND o.id <> t.id AND o.status = 'DELETED' AND o.deleted_at <= t.created_at),
                    CASE WHEN t.status = 'DELETED' THEN t.deleted_at END
             FROM tenants t WHERE t.id = $1",
        )
        .bind(tenant)
        .fetch_optional(&app.pool)
        .await?;
        let (after, until) = found.unwrap_or_default();
        Ok(Self { after, until })
    }

    /// Whether `message` was published while the feed's tenant held its key.
    pub fn holds(&self, message: &async_nats::jetstream::Message) -> bool {
        if self.after.is_none() && self.until.is_none() {
            return true;
        }
        // Without its metadata a message cannot be placed: left out.
        let Ok(info) = message.info() else { return false };
        self.after.is_none_or(|after| info.published > after) && self.until.is_none_or(|until| info.published <= until)
    }
}

/// The `data` of each Server-Sent Event: one lifecycle event, its
/// CloudEvents attributes and its protobuf payload.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FeedEvent {
    /// The stream sequence, also the SSE `id`.
    pub sequence: u64,
    pub subject: String,
    /// The tenant key.
    pub tenant: String,
    /// The event name, e.g. `step_failed`, also the SSE `event`.
    pub event: String,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// CloudEvents `time`.
    pub time: String,
    /// CloudEvents `source`.
    pub source: String,
    pub correlation_id: String,
    /// The protobuf message (proto/landlord/v1/events.proto), base64.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub payload: String,
}

fn to_event(message: &async_nats::jetstream::Message) -> Event {
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let subject = message.subject.as_str();
    let mut tokens = subject.rsplit('.');
    let name = tokens.next().unwrap_or("").to_owned();
    let tenant = tokens.next().unwrap_or("").to_owned();
    let attribute = |name: &str| {
        message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    let data = FeedEvent {
        sequence,
        subject: subject.to_owned(),
        tenant,
        event: name.clone(),
        id: attribute(header::ID),
        kind: attribute(header::TYPE),
        time: attribute(header::TIME),
        source: attribute(header::SOURCE),
        correlation_id: attribute(header::CORRELATION_ID),
        payload: STANDARD.encode(&message.payload),
    };
    Event::default().id(sequence.to_string()).event(name).data(serde_json::to_string(&data).unwrap_or_default())
}

/// The events stream's messages on `filter_subject` from `deliver_policy`
/// on, through an ordered consumer (recreated by the client after a gap):
/// what the API's feed and the console's live view read.
pub(crate) async fn ordered_messages(
    app: &App,
    filter_subject: String,
    deliver_policy: DeliverPolicy,
) -> Result<async_nats::jetstream::consumer::pull::Ordered> {
    let unavailable = |e: &dyn std::fmt::Display| Problem::unavailable("the event stream", e);
    let stream =
        app.jetstream.get_stream(app.namespace.stream_name(StreamKind::Events)).await.map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig { filter_subject, deliver_policy, ..Default::default() })
        .await
        .map_err(|e| unavailable(&e))?;
    consumer.messages().await.map_err(|e| unavailable(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_point_is_checked_not_wrapped() {
        assert_eq!(start_after("Last-Event-ID", "0").unwrap(), 1);
        assert_eq!(start_after("Last-Event-ID", " 41 ").unwrap(), 42);
        assert_eq!(start_after("Last-Event-ID", &(u64::MAX - 1).to_string()).unwrap(), u64::MAX);
        let past = start_after("Last-Event-ID", &u64::MAX.to_string()).unwrap_err();
        assert_eq!((past.status, past.rule.as_deref()), (400, Some("last_event_id.out_of_range")));
        assert!(past.detail.contains("Last-Event-ID"), "{past:?}");
        for raw in ["-1", "18446744073709551616", "1e3", "", "x"] {
            let problem = start_after("last_event_id", raw).unwrap_err();
            assert_eq!(problem.rule.as_deref(), Some("last_event_id.number"), "{raw}");
            assert!(problem.detail.contains("last_event_id"), "{problem:?}");
        }
    }
}
