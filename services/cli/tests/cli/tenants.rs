//! Tenants through the API: exit codes, JSON shapes, request and watch,
//! a file of tenants twice, a bulk verb's dry run, the context file.

use std::time::Duration;

use anyhow::Result;
use landlord_testkit::eventually;
use serde_json::Value;

use crate::support::{Api, assert_exit, json, lines, stdout, text};

const SUMMARY_FIELDS: [&str; 8] = ["id", "key", "display_name", "status", "plan", "tier", "created_at", "updated_at"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_requested_followed_listed_and_refused_with_meaningful_exit_codes() -> Result<()> {
    let api = Api::start().await?;

    // Not found: 3; a bad token: 4; a token without the scope: 4.
    assert_exit(&api.run(&["tenants", "get", "nosuch"]).await?, 3);
    assert_exit(&api.run(&["tenants", "watch", "nosuch"]).await?, 3);
    let forged = api.run_bare(&["--url", &api.url, "--token", "not-a-token", "tenants", "list"], &[]).await?;
    assert_exit(&forged, 4);
    let read_only = api
        .run_bare(
            &["--url", &api.url, "--token", &api.read_token, "tenants", "request", "ro", "--admin-email", "a@ro.test"],
            &[],
        )
        .await?;
    assert_exit(&read_only, 4);

    // A request followed to ACTIVE: stdout is not a terminal, so JSON lines,
    // a line per step change and the end.
    let requested = api
        .run(&[
            "tenants",
            "request",
            "acme",
            "--admin-email",
            "ada@acme.test",
            "--domain",
            "acme.example.com",
            "--label",
            "team=x",
            "--timeout",
            "90s",
        ])
        .await?;
    assert_exit(&requested, 0);
    let events = lines(&requested)?;
    let end = events.last().cloned().unwrap_or_default();
    assert_eq!((end["ok"].as_bool(), end["status"].as_str()), (Some(true), Some("ACTIVE")), "{}", text(&requested));
    let steps: Vec<&str> = events.iter().filter_map(|e| e["step"].as_str()).collect();
    for step in ["idp_realm", "database", "storage"] {
        assert!(steps.contains(&step), "no progress line for {step}: {}", stdout(&requested));
    }
    assert!(events.iter().any(|e| e["step"] == "storage" && e["state"] == "succeeded"), "{}", stdout(&requested));
    // Asked again: the same request (Idempotency-Key cli-acme), ends at once.
    let again = api
        .run(&[
            "tenants",
            "request",
            "acme",
            "--admin-email",
            "ada@acme.test",
            "--domain",
            "acme.example.com",
            "--label",
            "team=x",
        ])
        .await?;
    assert_exit(&again, 0);
    // watch of a tenant whose saga ended: its end, at once.
    let watched = api.run(&["tenants", "watch", "acme", "-o", "jsonl"]).await?;
    assert_exit(&watched, 0);
    assert_eq!(lines(&watched)?.last().map(|l| l["status"].clone()), Some(Value::from("ACTIVE")));

    // JSON shapes.
    let listed = json(&api.run(&["tenants", "list", "-o", "json"]).await?)?;
    let items = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed}");
    for field in SUMMARY_FIELDS {
        assert!(items[0].get(field).is_some(), "list item without {field}: {listed}");
    }
    let got = json(&api.run(&["tenants", "get", "acme", "-o", "json"]).await?)?;
    assert_eq!((got["key"].as_str(), got["status"].as_str()), (Some("acme"), Some("ACTIVE")));
    assert_eq!(got["labels"]["team"], "x");
    assert!(got["resources"].as_array().is_some_and(|r| !r.is_empty()), "{got}");
    assert_eq!(got["saga"]["state"], "succeeded");
    assert!(got["saga"]["steps"].as_array().is_some_and(|s| s.iter().all(|s| s.get("attempts").is_some())), "{got}");
    let table = api.run(&["tenants", "list"]).await?;
    assert!(stdout(&table).starts_with("KEY") && stdout(&table).contains("acme"), "{}", text(&table));
    let saga = api.run(&["sagas", "show", "acme"]).await?;
    assert_exit(&saga, 0);
    assert!(stdout(&saga).contains("welcome_email"), "{}", text(&saga));

    // A file of tenants, twice: the second run asks for nothing new.
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("tenants.csv");
    std::fs::write(
        &csv,
        "key,admin_email,name,plan,labels\nfirst,a@first.test,First,standard,team=y\nsecond,a@second.test,\"Second, Inc.\",free,team=y\n",
    )?;
    let csv = csv.display().to_string();
    let batch = api.run(&["tenants", "request", "--from", &csv, "-o", "json", "--timeout", "90s"]).await?;
    assert_exit(&batch, 0);
    let rows = json(&batch)?;
    let results: Vec<(&str, &str)> = rows
        .as_array()
        .map(|rows| {
            rows.iter().map(|r| (r["key"].as_str().unwrap_or(""), r["result"].as_str().unwrap_or(""))).collect()
        })
        .unwrap_or_default();
    assert_eq!(results, [("first", "requested"), ("second", "requested")], "{}", text(&batch));
    assert!(text(&batch).contains("2 requested, 0 already there, 0 failed"), "{}", text(&batch));
    let twice = api.run(&["tenants", "request", "--from", &csv, "-o", "jsonl"]).await?;
    assert_exit(&twice, 0);
    let results: Vec<String> = lines(&twice)?.iter().map(|r| r["result"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(results, ["existing", "existing"], "{}", text(&twice));
    let all = json(&api.run(&["tenants", "list", "-o", "json"]).await?)?;
    assert_eq!(all.as_array().map(Vec::len), Some(3), "nothing new the second time: {all}");
    let second = json(&api.run(&["tenants", "get", "second", "-o", "json"]).await?)?;
    assert_eq!((second["display_name"].as_str(), second["tier"].as_str()), (Some("Second, Inc."), Some("pooled")));

    // A bulk verb's dry run: the count, what would be done, nothing done.
    let dry =
        api.run(&["tenants", "suspend", "--label", "team=y", "--reason", "audit", "--dry-run", "-o", "json"]).await?;
    assert_exit(&dry, 0);
    let would: Vec<String> = json(&dry)?
        .as_array()
        .map(|a| a.iter().map(|t| t["key"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(would, ["first", "second"], "{}", text(&dry));
    assert!(text(&dry).contains("2 tenant(s) match"), "{}", text(&dry));
    // Without --yes and off a terminal: refused as usage, nothing done.
    let unasked = api.run(&["tenants", "suspend", "--label", "team=y", "--reason", "audit"]).await?;
    assert_exit(&unasked, 2);
    let statuses = json(&api.run(&["tenants", "list", "--status", "ACTIVE", "-o", "json"]).await?)?;
    assert_eq!(statuses.as_array().map(Vec::len), Some(3), "nothing was suspended: {statuses}");

    // The context file: the current context's URL and token are used.
    assert_exit(&api.run_bare(&["context", "set", "stack", "--url", &api.url, "--token", &api.token], &[]).await?, 0);
    assert_exit(&api.run_bare(&["context", "set", "bad", "--url", &api.url, "--token", "nope"], &[]).await?, 0);
    let by_context = api.run_bare(&["tenants", "get", "acme", "-o", "json"], &[]).await?;
    assert_exit(&by_context, 0);
    assert_eq!(json(&by_context)?["key"], "acme");
    assert_exit(&api.run_bare(&["--context", "bad", "tenants", "list"], &[]).await?, 4);
    let env_wins =
        api.run_bare(&["--context", "bad", "tenants", "list"], &[("LANDLORD_TOKEN", api.token.as_str())]).await?;
    assert_exit(&env_wins, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_tailed_from_the_stream() -> Result<()> {
    let api = Api::start().await?;
    let requested = api.run(&["tenants", "request", "tailed", "--admin-email", "a@tailed.test", "--no-wait"]).await?;
    assert_exit(&requested, 0);
    let tail = api
        .run(&[
            "events",
            "tail",
            "--tenant",
            "tailed",
            "--type",
            "activated",
            "--since",
            "10m",
            "--limit",
            "1",
            "--idle",
            "90s",
            "-o",
            "jsonl",
        ])
        .await?;
    assert_exit(&tail, 0);
    let events = lines(&tail)?;
    assert_eq!(events.len(), 1, "{}", text(&tail));
    assert_eq!((events[0]["tenant"].as_str(), events[0]["event"].as_str()), (Some("tailed"), Some("activated")));
    let unknown = api.run(&["events", "tail", "--type", "exploded", "--limit", "1"]).await?;
    assert_exit(&unknown, 2);

    // Over NATS, as scripts and the end-to-end tests ask: the first CLI's
    // command line and lines, exit 0 on ACTIVE.
    let legacy = api
        .run_bare(
            &[
                "request",
                "legacy",
                "--plan",
                "standard",
                "--name",
                "Legacy Inc.",
                "--admin-email",
                "a@legacy.test",
                "--first-name",
                "Ada",
                "--last-name",
                "Lovelace",
                "--domain",
                "legacy.example.com",
                "--timeout",
                "60s",
            ],
            &[],
        )
        .await?;
    assert_exit(&legacy, 0);
    assert!(stdout(&legacy).contains("requested tenant legacy (idempotency id cli-legacy)"), "{}", text(&legacy));
    assert!(stdout(&legacy).contains("activated") && stdout(&legacy).contains("ACTIVE"), "{}", text(&legacy));
    let watched = api.run_bare(&["watch", "legacy", "--timeout", "10s"], &[]).await?;
    assert_exit(&watched, 0);
    let via = api.run(&["tenants", "request", "vianats", "--admin-email", "a@vianats.test", "--via-nats"]).await?;
    assert_exit(&via, 0);
    let got = api.run(&["tenants", "get", "vianats", "-o", "json"]).await?;
    assert_eq!(crate::support::json(&got)?["status"], "ACTIVE", "{}", text(&got));
    // Nothing to cancel, nothing to retry: refused, exit 1.
    assert_exit(&api.run(&["tenants", "cancel", "vianats"]).await?, 1);
    assert_exit(&api.run(&["tenants", "retry", "vianats"]).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tenant_exits_1_and_a_bulk_retry_brings_it_to_active() -> Result<()> {
    let mut api = Api::start().await?;
    api.stack.s3.kill();
    let asked = api.run(&["tenants", "request", "nobucket", "--admin-email", "a@nobucket.test", "--no-wait"]).await?;
    assert_exit(&asked, 0);
    // The storage step's compensation waits for S3 to come back.
    eventually("the storage step compensating", Duration::from_secs(60), || async {
        let got = api.run(&["tenants", "get", "nobucket", "-o", "json"]).await.ok()?;
        let tenant = json(&got).ok()?;
        let steps = tenant["saga"]["steps"].as_array()?.clone();
        steps.iter().any(|s| s["name"] == "storage" && s["state"] == "compensating").then_some(())
    })
    .await?;
    api.stack.s3.restart().await?;
    let watched = api.run(&["tenants", "watch", "nobucket", "-o", "jsonl", "--timeout", "60s"]).await?;
    assert_exit(&watched, 1);
    let end = lines(&watched)?.pop().unwrap_or_default();
    assert_eq!(
        (end["status"].as_str(), end["failed_step"].as_str()),
        (Some("FAILED"), Some("storage")),
        "{}",
        text(&watched)
    );
    let retried =
        api.run(&["tenants", "retry", "--status", "FAILED", "--yes", "-o", "json", "--timeout", "60s"]).await?;
    assert_exit(&retried, 0);
    let results = json(&retried)?;
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{results}");
    assert_eq!((results[0]["key"].as_str(), results[0]["status"].as_str()), (Some("nobucket"), Some("ACTIVE")));
    Ok(())
}
