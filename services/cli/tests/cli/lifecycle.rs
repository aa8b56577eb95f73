//! The lifecycle verbs through the gateway's routes, followed to their
//! saga's end; a bulk verb on a filter with an ineligible tenant; dead
//! letters listed, shown, redriven and discarded.

use anyhow::Result;
use async_nats::HeaderMap;
use landlord_contract::{StreamKind, header};
use serde_json::json;

use crate::support::{Api, assert_exit, json, lines, stdout, text};

async fn status(api: &Api, key: &str) -> Result<String> {
    Ok(json(&api.run(&["tenants", "get", key, "-o", "json"]).await?)?["status"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_verbs_follow_their_saga_and_a_bulk_verb_reports_per_tenant() -> Result<()> {
    let api = Api::start_with_shipped_plans().await?;
    for key in ["alpha", "beta", "gamma"] {
        let email = format!("admin@{key}.test");
        let requested = api
            .run(&["tenants", "request", key, "--admin-email", &email, "--label", "team=z", "--timeout", "90s"])
            .await?;
        assert_exit(&requested, 0);
    }
    let suspended = api.run(&["tenants", "suspend", "alpha", "--reason", "unpaid invoice", "-o", "jsonl"]).await?;
    assert_exit(&suspended, 0);
    let end = lines(&suspended)?.pop().unwrap_or_default();
    assert_eq!(
        (end["operation"].as_str(), end["state"].as_str()),
        (Some("suspend"), Some("succeeded")),
        "{}",
        text(&suspended)
    );
    assert_eq!(end["status"], "SUSPENDED");
    assert_eq!(status(&api, "alpha").await?, "SUSPENDED");
    // Not allowed from SUSPENDED: refused (409), exit 1.
    let again = api.run(&["tenants", "suspend", "alpha", "--reason", "twice"]).await?;
    assert_exit(&again, 1);
    let resumed = api.run(&["tenants", "resume", "alpha", "-o", "jsonl"]).await?;
    assert_exit(&resumed, 0);
    assert_eq!(status(&api, "alpha").await?, "ACTIVE");
    // The audit log names who asked and why.
    let audit = api.run(&["tenants", "audit", "alpha", "-o", "json"]).await?;
    assert_exit(&audit, 0);
    assert!(stdout(&audit).contains("unpaid invoice"), "{}", text(&audit));

    // Bulk: gamma is suspended first, so it is refused; the others are done.
    assert_exit(&api.run(&["tenants", "suspend", "gamma", "--reason", "first"]).await?, 0);
    let bulk =
        api.run(&["tenants", "suspend", "--label", "team=z", "--reason", "audit", "--yes", "-o", "json"]).await?;
    assert_exit(&bulk, 1);
    let results = json(&bulk)?;
    let by_key =
        |key: &str| results.as_array().and_then(|r| r.iter().find(|r| r["key"] == key)).cloned().unwrap_or_default();
    assert_eq!(by_key("alpha")["ok"], true, "{results}");
    assert_eq!(by_key("beta")["ok"], true, "{results}");
    assert_eq!(
        (by_key("gamma")["ok"].as_bool(), by_key("gamma")["http"].as_u64()),
        (Some(false), Some(409)),
        "{results}"
    );
    assert!(text(&bulk).contains("suspend: 2 done, 1 failed, of 3"), "{}", text(&bulk));
    for key in ["alpha", "beta", "gamma"] {
        assert_eq!(status(&api, key).await?, "SUSPENDED", "{key}");
    }
    let back = api.run(&["tenants", "resume", "--status", "SUSPENDED", "--yes", "-o", "jsonl"]).await?;
    assert_exit(&back, 0);
    assert_eq!(lines(&back)?.len(), 3);
    assert_exit(&api.run(&["tenants", "update", "beta"]).await?, 2);
    let renamed = api.run(&["tenants", "update", "beta", "--name", "Beta GmbH"]).await?;
    assert_exit(&renamed, 0);
    let beta = json(&api.run(&["tenants", "get", "beta", "-o", "json"]).await?)?;
    assert_eq!((beta["display_name"].as_str(), beta["status"].as_str()), (Some("Beta GmbH"), Some("ACTIVE")));

    // Offboarding with its grace period, then restored within it.
    let deleted =
        api.run(&["tenants", "delete", "gamma", "--reason", "churned", "--grace", "1h", "-o", "jsonl"]).await?;
    assert_exit(&deleted, 0);
    assert_eq!(lines(&deleted)?.pop().unwrap_or_default()["status"], "DELETION_SCHEDULED", "{}", text(&deleted));
    let restored = api.run(&["tenants", "restore", "gamma", "-o", "jsonl"]).await?;
    assert_exit(&restored, 0);
    assert_eq!(status(&api, "gamma").await?, "ACTIVE");
    // An operation's idempotency key: asked twice, one saga.
    let first = api.run(&["tenants", "export", "gamma", "--idempotency-key", "exp-1", "-o", "jsonl"]).await?;
    assert_exit(&first, 0);
    let again = api.run(&["tenants", "export", "gamma", "--idempotency-key", "exp-1", "-o", "jsonl"]).await?;
    assert_exit(&again, 0);
    let saga = |output: &std::process::Output| lines(output).map(|l| l.last().map(|l| l["saga"].clone()));
    assert_eq!(saga(&first)?, saga(&again)?, "{}\n{}", text(&first), text(&again));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_redriven_and_discarded() -> Result<()> {
    let api = Api::start().await?;
    let empty = api.run(&["dlq", "list", "-o", "json"]).await?;
    assert_exit(&empty, 0);
    assert_eq!(json(&empty)?, json!([]));
    assert_exit(&api.run(&["dlq", "show", "1"]).await?, 3);
    // Two dead letters, parked as the runtime parks them: the original
    // message with where it came from and why.
    let namespace = &api.stack.namespace;
    let jetstream = api.stack.connect("cli-test").await?.jetstream;
    let original = namespace.command_subject("nobody", "listens");
    for (n, reason) in [(1, "permanent error: one"), (2, "permanent error: two")] {
        let mut headers = HeaderMap::new();
        headers.insert(header::TYPE, "landlord.v1.StepCommand");
        headers.insert(header::NATS_MSG_ID, format!("dlq.test.{n}").as_str());
        headers.insert(header::DLQ_SUBJECT, original.as_str());
        headers.insert(header::DLQ_REASON, reason);
        headers.insert(header::DLQ_DELIVERIES, "3");
        jetstream.publish_with_headers(namespace.dead_letter_subject(&original), headers, "".into()).await?.await?;
    }
    let listed = json(&api.run(&["dlq", "list", "-o", "json"]).await?)?;
    let letters = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 2, "{listed}");
    assert_eq!((letters[0]["subject"].as_str(), letters[0]["deliveries"].as_u64()), (Some(original.as_str()), Some(3)));
    assert_eq!(letters[1]["reason"], "permanent error: two");
    let (first, second) = (letters[0]["sequence"].to_string(), letters[1]["sequence"].to_string());
    let shown = api.run(&["dlq", "show", &first]).await?;
    assert_exit(&shown, 0);
    assert!(
        stdout(&shown).contains("StepCommand") && stdout(&shown).contains("permanent error: one"),
        "{}",
        text(&shown)
    );
    // Redriven: back on its subject (in the commands stream), gone from the DLQ.
    let redriven = api.run(&["dlq", "redrive", &first]).await?;
    assert_exit(&redriven, 0);
    let commands = jetstream.get_stream(namespace.stream_name(StreamKind::Commands)).await?;
    let back = commands.get_last_raw_message_by_subject(&original).await?;
    assert!(back.headers.get(header::DLQ_REASON).is_none(), "the dead-letter headers are dropped");
    assert_eq!(back.headers.get(header::TYPE).map(|v| v.as_str().to_owned()), Some("landlord.v1.StepCommand".into()));
    let left = json(&api.run(&["dlq", "list", "-o", "json"]).await?)?;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    // Discarded: gone, with a reason required.
    assert_exit(&api.run(&["dlq", "discard", &second]).await?, 2);
    assert_exit(&api.run(&["dlq", "discard", &second, "--reason", "test letter"]).await?, 0);
    assert_eq!(json(&api.run(&["dlq", "list", "-o", "json"]).await?)?, json!([]));
    Ok(())
}
