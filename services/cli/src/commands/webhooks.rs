//! `landlord webhooks add|list|get|update|rotate-secret|remove|deliveries`:
//! outbound webhook endpoints (docs/webhooks.md) through the gateway's
//! `/v1/webhook-endpoints`. `add` and `rotate-secret` print the signing
//! secret, the one time the gateway shows it.

use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use crate::api::{Exit, encode};
use crate::output::{self, Column, cell};

#[derive(Debug, Subcommand)]
pub enum Webhooks {
    /// Register an endpoint: lifecycle events are POSTed to it, signed as Svix signs.
    #[command(after_help = "\
Examples:
  landlord webhooks add https://hooks.example.com/landlord --event activated --event provisioning_failed
  landlord webhooks add https://hooks.example.com/all --event '*' -o json

The signing secret (whsec_…) is printed once; verify deliveries with it as
with any Svix secret (svix-id, svix-timestamp, svix-signature headers).")]
    Add(AddArgs),
    /// Registered endpoints, with their deliveries counted by status.
    List,
    /// One endpoint.
    Get { id: String },
    /// Change an endpoint: its URL, event types or description; enable or disable it.
    #[command(after_help = "\
Examples:
  landlord webhooks update 0193… --endpoint-url https://hooks.example.com/v2
  landlord webhooks update 0193… --event activated --event deleted
  landlord webhooks update 0193… --disable
  landlord webhooks update 0193… --enable

What is not given stays as it is. A disabled endpoint gets no deliveries
(events meanwhile are not kept for it); its pending ones wait until it is
enabled again.")]
    Update(UpdateArgs),
    /// Replace an endpoint's signing secret; the old one keeps signing next to it for 24 h.
    #[command(after_help = "\
Example: landlord webhooks rotate-secret 0193… -o json

The new secret (whsec_…) is printed once. For 24 hours every delivery
carries a signature under the new and under the previous secret (two v1,…
entries, as Svix rotates), so the receiver can switch at its pace; after
that only the new secret signs.")]
    RotateSecret { id: String },
    /// Remove an endpoint and its deliveries.
    Remove { id: String },
    /// What was sent to an endpoint, newest first, with every attempt.
    #[command(after_help = "Example: landlord webhooks deliveries 0193… --status failed -o json")]
    Deliveries {
        id: String,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// At most this many deliveries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// https://…, or http:// to a loopback address. (Its own id: `url` is
    /// the global --url, which a positional of that id would overwrite.)
    #[arg(id = "endpoint", value_name = "URL")]
    pub url: String,
    /// An event name (activated, step_failed, …) or '*' for all; repeat for several.
    #[arg(long = "event", required = true)]
    pub events: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
pub struct UpdateArgs {
    pub id: String,
    /// Where events are POSTed from now on: https://…, or http:// to a
    /// loopback address. (Not `--url`: that is the API's, a global flag.)
    #[arg(long = "endpoint-url", value_name = "URL", group = "change")]
    pub endpoint_url: Option<String>,
    /// The event names (activated, step_failed, …) or '*' to send from now on; repeat for several.
    #[arg(long = "event", visible_alias = "events", group = "change")]
    pub events: Vec<String>,
    #[arg(long, group = "change")]
    pub description: Option<String>,
    /// Deliver to it again.
    #[arg(long, conflicts_with = "disable", group = "change")]
    pub enable: bool,
    /// Make no more deliveries to it until it is enabled.
    #[arg(long, group = "change")]
    pub disable: bool,
}

impl UpdateArgs {
    /// The `PATCH` body: only what was given.
    fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(url) = &self.endpoint_url {
            body.insert("url".into(), json!(url));
        }
        if !self.events.is_empty() {
            body.insert("event_types".into(), json!(self.events));
        }
        if let Some(description) = &self.description {
            body.insert("description".into(), json!(description));
        }
        if self.enable || self.disable {
            body.insert("enabled".into(), json!(self.enable));
        }
        Value::Object(body)
    }
}

const ENDPOINT_COLUMNS: &[Column] = &[
    ("ID", |e| cell(e.get("id"))),
    ("URL", |e| cell(e.get("url"))),
    ("EVENTS", events),
    ("PENDING", |e| cell(e.pointer("/deliveries/pending"))),
    ("DELIVERED", |e| cell(e.pointer("/deliveries/delivered"))),
    ("FAILED", |e| cell(e.pointer("/deliveries/failed"))),
];

const ENDPOINT_FIELDS: &[Column] = &[
    ("id", |e| cell(e.get("id"))),
    ("url", |e| cell(e.get("url"))),
    ("events", events),
    ("description", |e| cell(e.get("description"))),
    ("enabled", |e| cell(e.get("enabled"))),
    ("created", |e| cell(e.get("created_at"))),
    ("old secret until", |e| cell(e.get("previous_secret_until"))),
    ("pending", |e| cell(e.pointer("/deliveries/pending"))),
    ("delivered", |e| cell(e.pointer("/deliveries/delivered"))),
    ("failed", |e| cell(e.pointer("/deliveries/failed"))),
];

const DELIVERY_COLUMNS: &[Column] = &[
    ("ID", |d| cell(d.get("id"))),
    ("EVENT", |d| cell(d.get("event_type"))),
    ("TENANT", |d| cell(d.get("tenant"))),
    ("STATUS", |d| cell(d.get("status"))),
    ("ATTEMPTS", |d| d.get("attempts").and_then(Value::as_array).map_or(0, Vec::len).to_string()),
    ("LAST", last_attempt),
    ("NEXT", |d| cell(d.get("next_attempt_at"))),
];

fn events(endpoint: &Value) -> String {
    let names: Vec<String> =
        endpoint.get("event_types").and_then(Value::as_array).into_iter().flatten().map(|t| cell(Some(t))).collect();
    names.join(",")
}

/// The last attempt in a few words: its status code or its error.
fn last_attempt(delivery: &Value) -> String {
    let Some(last) = delivery.get("attempts").and_then(Value::as_array).and_then(|a| a.last()) else {
        return String::new();
    };
    match last.get("error").and_then(Value::as_str) {
        Some(error) => error.to_owned(),
        None => cell(last.get("status_code")),
    }
}

pub async fn run(ctx: &Ctx, verb: Webhooks) -> Result<Exit> {
    let api = ctx.api()?;
    match verb {
        Webhooks::Add(args) => {
            let body = json!({"url": args.url, "event_types": args.events, "description": args.description});
            let (_, created) = api.send(Method::POST, "/v1/webhook-endpoints", Some(&body), None).await?;
            let mut fields = ENDPOINT_FIELDS.to_vec();
            fields.push(("secret", |e| cell(e.get("secret"))));
            output::item(ctx.format, &created, &fields);
            output::log("the signing secret is shown this once: keep it where the receiver can read it");
        }
        Webhooks::List => {
            let list = api.get("/v1/webhook-endpoints").await?;
            let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            output::items(ctx.format, &items, ENDPOINT_COLUMNS);
        }
        Webhooks::Get { id } => {
            let endpoint = api.get(&format!("/v1/webhook-endpoints/{}", encode(&id))).await?;
            output::item(ctx.format, &endpoint, ENDPOINT_FIELDS);
        }
        Webhooks::Update(args) => {
            let path = format!("/v1/webhook-endpoints/{}", encode(&args.id));
            let (_, endpoint) = api.send(Method::PATCH, &path, Some(&args.body()), None).await?;
            output::item(ctx.format, &endpoint, ENDPOINT_FIELDS);
        }
        Webhooks::RotateSecret { id } => {
            let path = format!("/v1/webhook-endpoints/{}/secret/rotate", encode(&id));
            let (_, rotated) = api.send(Method::POST, &path, None, None).await?;
            const ROTATED_FIELDS: &[Column] = &[
                ("id", |r| cell(r.get("id"))),
                ("secret", |r| cell(r.get("secret"))),
                ("old secret until", |r| cell(r.get("previous_secret_until"))),
            ];
            output::item(ctx.format, &rotated, ROTATED_FIELDS);
            output::log(format!(
                "the new signing secret is shown this once; deliveries are signed with the previous one too until {}",
                cell(rotated.get("previous_secret_until"))
            ));
        }
        Webhooks::Remove { id } => {
            api.send(Method::DELETE, &format!("/v1/webhook-endpoints/{}", encode(&id)), None, None).await?;
            output::log(format!("webhook endpoint {id} removed"));
        }
        Webhooks::Deliveries { id, status, limit } => {
            let query: Vec<String> = status.iter().map(|s| format!("status={}", encode(s))).collect();
            let path = format!("/v1/webhook-endpoints/{}/deliveries", encode(&id));
            let items = api.pages(&path, &query, limit).await?;
            output::items(ctx.format, &items, DELIVERY_COLUMNS);
        }
    }
    Ok(Exit::Done)
}
