//! `tenants request`: one tenant (`POST /v1/tenants`, followed to ACTIVE),
//! or every row of a CSV or JSONL file (`--from`) with one progress bar, a
//! result per row and a summary. Each row's `Idempotency-Key` is its
//! `idempotency_key` column, else `cli-<key>`: a file run twice asks for
//! nothing new.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Ctx, UsageError, nats, tenants};
use crate::api::{Api, ApiError, Exit};
use crate::cli::{RequestArgs, Wait};
use crate::follow::{self, Display, Goal};
use crate::output::{self, cell};

/// One tenant to ask for: the body of `POST /v1/tenants` and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub body: Value,
    pub idempotency_key: String,
}

impl Row {
    pub fn key(&self) -> &str {
        self.body["key"].as_str().unwrap_or_default()
    }
}

fn from_args(args: &RequestArgs, key: &str) -> Row {
    let labels: Map<String, Value> = args.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut body = json!({
        "key": key,
        "display_name": args.name.clone().unwrap_or_else(|| key.to_owned()),
        "plan": args.plan,
        "admin": {
            "email": args.admin_email.clone().unwrap_or_default(),
            "first_name": args.first_name,
            "last_name": args.last_name,
        },
        "domains": args.domains,
        "labels": labels,
    });
    if let Some(tier) = &args.tier {
        body["tier"] = json!(tier);
    }
    let idempotency_key = args.idempotency_key.clone().unwrap_or_else(|| format!("cli-{key}"));
    Row { body, idempotency_key }
}

pub async fn run(ctx: &Ctx, args: &RequestArgs) -> Result<Exit> {
    if args.via_nats {
        if args.from.is_some() {
            anyhow::bail!(UsageError("--from goes through the API, not --via-nats".into()));
        }
        return nats::request(ctx, args).await;
    }
    if let Some(file) = &args.from {
        return batch(ctx, args, file).await;
    }
    let key = args.key.as_deref().unwrap_or_default();
    let row = from_args(args, key);
    let api = ctx.api()?;
    let (_, answer) = api.send(Method::POST, "/v1/tenants", Some(&row.body), Some(&row.idempotency_key)).await?;
    output::log(format!(
        "tenant {key} requested (id {}, Idempotency-Key {})",
        cell(answer.get("tenant_id")),
        row.idempotency_key
    ));
    if args.wait.no_wait {
        output::item(ctx.format, &answer, &[("tenant id", |a| cell(a.get("tenant_id")))]);
        return Ok(Exit::Done);
    }
    let outcome = follow::follow(&api, key, &Goal::Provision, &args.wait, Display::for_format(ctx.format)).await?;
    tenants::end(ctx, key, &outcome, outcome.ok)
}

/// Rows of a CSV file with a header row, or of a JSONL file (`.jsonl`,
/// `.ndjson`, or content starting with `{`). Columns: key, admin_email,
/// name, plan, tier, first_name, last_name, domains (`;`-separated),
/// labels (`k=v;k=v`), idempotency_key. `defaults` fills the plan.
pub fn read_rows(path: &Path, default_plan: &str) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson"))
        || text.trim_start().starts_with('{');
    let records: Vec<(usize, BTreeMap<String, Value>)> = if jsonl {
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let record: BTreeMap<String, Value> = serde_json::from_str(line)
                .map_err(|e| UsageError(format!("{} line {}: not a JSON object: {e}", path.display(), n + 1)))?;
            records.push((n + 1, record));
        }
        records
    } else {
        let mut lines = csv_records(&text).into_iter();
        let Some((_, header)) = lines.next() else { return Ok(Vec::new()) };
        let header: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
        lines
            .filter(|(_, cells)| cells.iter().any(|c| !c.trim().is_empty()))
            .map(|(n, cells)| (n, header.iter().cloned().zip(cells.into_iter().map(Value::String)).collect()))
            .collect()
    };
    records.into_iter().map(|(line, record)| row(path, line, &record, default_plan)).collect()
}

fn row(path: &Path, line: usize, record: &BTreeMap<String, Value>, default_plan: &str) -> Result<Row> {
    let text = |name: &str| record.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let missing = |name: &str| UsageError(format!("{} line {line}: no {name}", path.display()));
    let key = text("key").ok_or_else(|| missing("key"))?;
    let email = text("admin_email").or_else(|| text("email")).ok_or_else(|| missing("admin_email"))?;
    let list = |name: &str| -> Vec<Value> {
        match record.get(name) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::String(s)) => s.split(';').map(str::trim).filter(|s| !s.is_empty()).map(|s| json!(s)).collect(),
            _ => Vec::new(),
        }
    };
    let labels: Map<String, Value> = match record.get("labels") {
        Some(Value::Object(map)) => map.clone(),
        _ => list("labels")
            .iter()
            .filter_map(|l| l.as_str()?.split_once('=').map(|(k, v)| (k.to_owned(), json!(v))))
            .collect(),
    };
    let mut body = json!({
        "key": key,
        "display_name": text("name").or_else(|| text("display_name")).unwrap_or(key),
        "plan": text("plan").unwrap_or(default_plan),
        "admin": {"email": email, "first_name": text("first_name").unwrap_or(""), "last_name": text("last_name").unwrap_or("")},
        "domains": list("domains"),
        "labels": labels,
    });
    if let Some(tier) = text("tier") {
        body["tier"] = json!(tier);
    }
    let idempotency_key = text("idempotency_key").map_or_else(|| format!("cli-{key}"), str::to_owned);
    Ok(Row { body, idempotency_key })
}

/// RFC 4180 records with their line numbers: quoted fields may hold
/// commas, `""` and line breaks.
fn csv_records(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut start) = (false, 1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut record)));
                line += 1;
                start = line;
            }
            (_, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((start, record));
    }
    records
}

async fn batch(ctx: &Ctx, args: &RequestArgs, file: &Path) -> Result<Exit> {
    let rows = read_rows(file, &args.plan)?;
    let api = ctx.api()?;
    output::log(format!("{} tenant(s) in {}", rows.len(), file.display()));
    let bar = ProgressBar::with_draw_target(
        Some(rows.len() as u64),
        match output::interactive() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        },
    );
    let mut results = Vec::with_capacity(rows.len());
    for row in &rows {
        bar.set_message(row.key().to_owned());
        results.push(one_row(&api, row, &args.wait).await);
        bar.inc(1);
    }
    bar.finish_and_clear();
    output::items(
        ctx.format,
        &results,
        &[
            ("KEY", |r| cell(r.get("key"))),
            ("RESULT", |r| cell(r.get("result"))),
            ("STATUS", |r| cell(r.get("status"))),
            ("TENANT ID", |r| cell(r.get("tenant_id"))),
            ("ERROR", |r| cell(r.get("error"))),
        ],
    );
    let count = |result: &str| results.iter().filter(|r| r["result"] == result).count();
    let failed = count("failed");
    output::log(format!(
        "{} row(s): {} requested, {} already there, {failed} failed",
        results.len(),
        count("requested"),
        count("existing")
    ));
    Ok(if failed == 0 { Exit::Done } else { Exit::Failed })
}

/// A row asked for (and followed): `result` is `requested` (new),
/// `existing` (asked for before: nothing new) or `failed`.
async fn one_row(api: &Api, row: &Row, wait: &Wait) -> Value {
    let key = row.key();
    let failed =
        |error: String| json!({"key": key, "result": "failed", "status": null, "tenant_id": null, "error": error});
    let existed = match api.tenant(key).await {
        Ok(_) => true,
        Err(ApiError::Problem { status: 404, .. }) => false,
        Err(error) => return failed(error.to_string()),
    };
    let answer = match api.send(Method::POST, "/v1/tenants", Some(&row.body), Some(&row.idempotency_key)).await {
        Ok((_, answer)) => answer,
        Err(error) => return failed(error.to_string()),
    };
    let (status, ok, error) = if wait.no_wait {
        (Value::Null, true, Value::Null)
    } else {
        match follow::follow(api, key, &Goal::Provision, wait, Display::Quiet).await {
            Ok(outcome) => {
                (json!(outcome.status()), outcome.ok, if outcome.ok { Value::Null } else { json!(outcome.summary()) })
            }
            Err(error) => (Value::Null, false, json!(format!("{error:#}"))),
        }
    };
    let result = match (ok, existed) {
        (false, _) => "failed",
        (true, true) => "existing",
        (true, false) => "requested",
    };
    json!({"key": key, "result": result, "status": status, "tenant_id": answer["tenant_id"], "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_be_quoted() {
        let records = csv_records("key,name\nacme,\"Acme, \"\"Inc\"\"\"\r\nb,\"two\nlines\"\nc,");
        assert_eq!(
            records,
            vec![
                (1, vec!["key".to_owned(), "name".to_owned()]),
                (2, vec!["acme".to_owned(), "Acme, \"Inc\"".to_owned()]),
                (3, vec!["b".to_owned(), "two\nlines".to_owned()]),
                (5, vec!["c".to_owned(), String::new()]),
            ]
        );
    }

    #[test]
    fn rows_come_from_csv_or_jsonl_with_an_idempotency_key_each() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "key,admin_email,domains,labels\nacme,a@acme.test,acme.test;app.acme.test,team=x;tier=gold\n\n",
        )
        .unwrap();
        let rows = read_rows(&csv, "standard").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].idempotency_key, "cli-acme");
        assert_eq!(rows[0].body["domains"], json!(["acme.test", "app.acme.test"]));
        assert_eq!(rows[0].body["labels"], json!({"team": "x", "tier": "gold"}));
        assert_eq!(rows[0].body["plan"], "standard");
        let jsonl = dir.path().join("t.jsonl");
        std::fs::write(&jsonl, "{\"key\":\"b\",\"admin_email\":\"a@b.test\",\"domains\":[\"b.test\"],\"idempotency_key\":\"k1\",\"plan\":\"free\"}\n").unwrap();
        let rows = read_rows(&jsonl, "standard").unwrap();
        assert_eq!((rows[0].idempotency_key.as_str(), rows[0].body["plan"].as_str()), ("k1", Some("free")));
        std::fs::write(&csv, "key,name\nacme,Acme\n").unwrap();
        let missing = read_rows(&csv, "standard").unwrap_err().to_string();
        assert!(missing.contains("line 2: no admin_email"), "{missing}");
    }
}
