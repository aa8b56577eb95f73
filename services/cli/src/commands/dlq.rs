//! `dlq list|show|redrive|discard`, over the dead-letter stream directly
//! (the gateway has no dead-letter routes). A dead letter is the original
//! message with headers saying where it came from and why it was parked
//! (`landlord-dlq-*`, see the runtime's consumer). Redrive publishes it
//! again on its original subject — original headers, a message id of its
//! own so that the broker does not drop it as a duplicate — and then
//! removes the dead letter; discard removes it.

use anyhow::{Context as _, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use landlord_contract::{StreamKind, header, pb};
use prost::Message as _;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::{Ctx, confirm, nats};
use crate::api::{ApiError, Exit};
use crate::cli::Dlq;
use crate::output::{self, cell};

fn attribute(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

/// A dead letter as listed.
fn summary(message: &async_nats::jetstream::message::StreamMessage) -> Value {
    let h = &message.headers;
    json!({
        "sequence": message.sequence,
        "time": message.time.format(&Rfc3339).unwrap_or_default(),
        "subject": attribute(h, header::DLQ_SUBJECT),
        "reason": attribute(h, header::DLQ_REASON),
        "deliveries": attribute(h, header::DLQ_DELIVERIES).parse::<u64>().ok(),
        "consumer": attribute(h, header::DLQ_CONSUMER),
        "tenant": attribute(h, header::SUBJECT),
        "saga": attribute(h, header::CORRELATION_ID),
        "type": attribute(h, header::TYPE),
    })
}

/// Every dead letter whose original subject contains `subject`.
async fn letters(stream: &mut Stream, subject: Option<&str>, limit: usize) -> Result<Vec<Value>> {
    let state = stream.info().await?.state.clone();
    let mut found = Vec::new();
    if state.messages == 0 {
        return Ok(found);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(e.into()),
        };
        let item = summary(&message);
        if subject.is_none_or(|s| item["subject"].as_str().unwrap_or("").contains(s)) {
            found.push(item);
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}

/// The payload decoded by its CloudEvents type, when it is one we know.
fn decoded(ce_type: &str, payload: &[u8]) -> Option<String> {
    let name = ce_type.rsplit('.').next()?;
    let text = match name {
        "StepCommand" => format!("{:#?}", pb::StepCommand::decode(payload).ok()?),
        "CancelSaga" => format!("{:#?}", pb::CancelSaga::decode(payload).ok()?),
        "OperationRequested" => format!("{:#?}", pb::OperationRequested::decode(payload).ok()?),
        "TenantRequested" => format!("{:#?}", pb::TenantRequested::decode(payload).ok()?),
        "StepResult" => format!("{:#?}", pb::StepResult::decode(payload).ok()?),
        _ => return None,
    };
    Some(text)
}

fn not_found(sequence: u64) -> anyhow::Error {
    ApiError::Problem { status: 404, detail: format!("no dead letter {sequence}"), rule: None }.into()
}

pub async fn run(ctx: &Ctx, verb: Dlq) -> Result<Exit> {
    let (broker, namespace) = nats::connect(ctx).await?;
    let name = namespace.stream_name(StreamKind::DeadLetter);
    let mut stream = broker.jetstream.get_stream(&name).await.with_context(|| format!("the stream {name}"))?;
    let columns: &[output::Column] = &[
        ("SEQ", |d| cell(d.get("sequence"))),
        ("TIME", |d| cell(d.get("time"))),
        ("SUBJECT", |d| cell(d.get("subject"))),
        ("TENANT", |d| cell(d.get("tenant"))),
        ("DELIVERIES", |d| cell(d.get("deliveries"))),
        ("REASON", |d| cell(d.get("reason"))),
    ];
    match verb {
        Dlq::List { subject, limit } => {
            let found = letters(&mut stream, subject.as_deref(), limit).await?;
            output::items(ctx.format, &found, columns);
            Ok(Exit::Done)
        }
        Dlq::Show { sequence } => {
            let message = match stream.get_raw_message(sequence).await {
                Ok(message) => message,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Err(not_found(sequence)),
                Err(e) => return Err(e.into()),
            };
            let mut item = summary(&message);
            let headers: serde_json::Map<String, Value> = message
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))))
                .collect();
            item["headers"] = Value::Object(headers);
            item["payload_bytes"] = json!(message.payload.len());
            item["decoded"] = json!(decoded(item["type"].as_str().unwrap_or(""), &message.payload));
            output::item(
                ctx.format,
                &item,
                &[
                    ("sequence", |d| cell(d.get("sequence"))),
                    ("time", |d| cell(d.get("time"))),
                    ("subject", |d| cell(d.get("subject"))),
                    ("type", |d| cell(d.get("type"))),
                    ("tenant", |d| cell(d.get("tenant"))),
                    ("saga", |d| cell(d.get("saga"))),
                    ("consumer", |d| cell(d.get("consumer"))),
                    ("deliveries", |d| cell(d.get("deliveries"))),
                    ("reason", |d| cell(d.get("reason"))),
                    ("bytes", |d| cell(d.get("payload_bytes"))),
                    ("message", |d| d["decoded"].as_str().map_or_else(|| "(not decoded)".into(), |t| format!("\n{t}"))),
                ],
            );
            Ok(Exit::Done)
        }
        Dlq::Redrive { sequences, all, subject, yes, dry_run } => {
            let sequences: Vec<u64> = if all {
                let found = letters(&mut stream, subject.as_deref(), usize::MAX).await?;
                output::log(format!("{} dead letter(s) match", found.len()));
                if dry_run {
                    output::items(ctx.format, &found, columns);
                    return Ok(Exit::Done);
                }
                if found.is_empty() || (!yes && !confirm(&format!("redrive {} dead letter(s)?", found.len()))?) {
                    return Ok(if found.is_empty() { Exit::Done } else { Exit::Failed });
                }
                found.iter().filter_map(|d| d["sequence"].as_u64()).collect()
            } else {
                sequences
            };
            let mut results = Vec::new();
            for sequence in sequences {
                let result = redrive(&broker.jetstream, &stream, &name, sequence).await;
                results.push(match result {
                    Ok(subject) => json!({"sequence": sequence, "ok": true, "subject": subject, "error": null}),
                    Err(e) => json!({"sequence": sequence, "ok": false, "subject": null, "error": format!("{e:#}")}),
                });
            }
            report(ctx, "redrive", &results)
        }
        Dlq::Discard { sequences, reason } => {
            let mut results = Vec::new();
            for sequence in sequences {
                let result = match stream.delete_message(sequence).await {
                    Ok(true) => json!({"sequence": sequence, "ok": true, "error": null}),
                    Ok(false) => json!({"sequence": sequence, "ok": false, "error": "not removed"}),
                    Err(e) => json!({"sequence": sequence, "ok": false, "error": e.to_string()}),
                };
                results.push(result);
            }
            output::log(format!("discarded because: {reason}"));
            report(ctx, "discard", &results)
        }
    }
}

fn report(ctx: &Ctx, verb: &str, results: &[Value]) -> Result<Exit> {
    output::items(
        ctx.format,
        results,
        &[
            ("SEQ", |r| cell(r.get("sequence"))),
            ("RESULT", |r| if r["ok"] == true { "done".into() } else { "failed".into() }),
            ("SUBJECT", |r| cell(r.get("subject"))),
            ("ERROR", |r| cell(r.get("error"))),
        ],
    );
    let failed = results.iter().filter(|r| r["ok"] != true).count();
    output::log(format!("{verb}: {} done, {failed} failed", results.len() - failed));
    Ok(if failed == 0 { Exit::Done } else { Exit::Failed })
}

/// Publishes dead letter `sequence` on its original subject, then removes it.
async fn redrive(
    jetstream: &async_nats::jetstream::Context,
    stream: &Stream,
    stream_name: &str,
    sequence: u64,
) -> Result<String> {
    let message = stream.get_raw_message(sequence).await.map_err(|e| match e.kind() {
        RawMessageErrorKind::NoMessageFound => not_found(sequence),
        _ => e.into(),
    })?;
    let subject = attribute(&message.headers, header::DLQ_SUBJECT);
    anyhow::ensure!(!subject.is_empty(), "dead letter {sequence} does not say where it came from");
    let mut headers = HeaderMap::new();
    for (name, values) in message.headers.iter() {
        let name = name.to_string();
        if name.starts_with("landlord-dlq-") || name == header::NATS_MSG_ID {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.as_str());
        }
    }
    headers.insert(header::NATS_MSG_ID, format!("redrive.{stream_name}.{sequence}").as_str());
    jetstream.publish_with_headers(subject.clone(), headers, message.payload.clone()).await?.await?;
    stream.delete_message(sequence).await?;
    Ok(subject)
}
