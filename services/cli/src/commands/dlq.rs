//! `dlq list|show|redrive|discard`, over the dead-letter stream directly
//! (the gateway has no dead-letter routes). A dead letter is the original
//! message with headers saying where it came from and why it was parked
//! (`landlord-dlq-*`, see the runtime's consumer). Redrive publishes it
//! again on its original subject — original headers, a message id of its
//! own so that the broker does not drop it as a duplicate — and then
//! removes the dead letter; discard removes it.

use anyhow::{Context as _, Result};
use landlord_contract::StreamKind;
use landlord_runtime::dead_letters::{self, DeadLetter};
use serde_json::{Value, json};

use super::{Ctx, confirm, nats};
use crate::api::{ApiError, Exit};
use crate::cli::Dlq;
use crate::output::{self, cell};

/// A dead-letter error as the CLI reports it: a missing letter exits 3.
fn error(e: dead_letters::Error) -> anyhow::Error {
    match e {
        dead_letters::Error::NotFound(_) => ApiError::Problem { status: 404, detail: e.to_string(), rule: None }.into(),
        e => e.into(),
    }
}

async fn letters(
    stream: &mut async_nats::jetstream::stream::Stream,
    subject: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>> {
    let found = dead_letters::list(stream, subject, limit).await.map_err(error)?;
    Ok(found.iter().map(DeadLetter::summary).collect())
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
            let letter = dead_letters::get(&stream, sequence).await.map_err(error)?;
            let mut item = letter.summary();
            item["headers"] = letter.header_map();
            item["payload_bytes"] = json!(letter.payload.len());
            item["decoded"] = letter.decoded();
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
                    ("message", |d| format!("\n{}", serde_json::to_string_pretty(&d["decoded"]).unwrap_or_default())),
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
                let result = dead_letters::redrive(&broker.jetstream, &stream, &name, sequence).await;
                results.push(match result {
                    Ok(subject) => json!({"sequence": sequence, "ok": true, "subject": subject, "error": null}),
                    Err(e) => json!({"sequence": sequence, "ok": false, "subject": null, "error": e.to_string()}),
                });
            }
            report(ctx, "redrive", &results)
        }
        Dlq::Discard { sequences, reason } => {
            let mut results = Vec::new();
            for sequence in sequences {
                let result = match dead_letters::discard(&stream, sequence).await {
                    Ok(()) => json!({"sequence": sequence, "ok": true, "error": null}),
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
