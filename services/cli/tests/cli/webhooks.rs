//! Outbound webhooks from the command line: an endpoint added (its secret
//! printed once), listed, its deliveries shown with their attempts,
//! removed; refusals with their exit codes.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use landlord_testkit::eventually;
use serde_json::Value;

use crate::support::{Api, assert_exit, json, stdout, text};

/// A receiver on 127.0.0.1 answering every request 200 (plain blocking
/// sockets on a thread of its own); how many it got.
fn receiver() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            if answer(&mut socket) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Ok((url, count))
}

/// Reads one request (its head, then the body it announces) and answers 200.
fn answer(socket: &mut std::net::TcpStream) -> bool {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = match socket.read(&mut buffer) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        request.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_added_listed_followed_and_removed() -> Result<()> {
    let api = Api::start().await?;
    let (url, received) = receiver()?;

    // Usage: no event named, 2; refused by the API (http:// to another
    // host), 1; a read-only token, 4.
    assert_exit(&api.run(&["webhooks", "add", &url]).await?, 2);
    assert_exit(&api.run(&["webhooks", "add", "http://hooks.example.com/", "--event", "activated"]).await?, 1);
    let read_only = api
        .run_bare(
            &["--url", &api.url, "--token", &api.read_token, "webhooks", "add", &url, "--event", "activated"],
            &[],
        )
        .await?;
    assert_exit(&read_only, 4);

    let added = api.run(&["webhooks", "add", &url, "--event", "activated", "-o", "json"]).await?;
    assert_exit(&added, 0);
    let endpoint = json(&added)?;
    let id = endpoint["id"].as_str().unwrap_or_default().to_owned();
    assert!(endpoint["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{}", text(&added));
    assert_eq!(endpoint["event_types"], serde_json::json!(["activated"]));

    let listed = api.run(&["webhooks", "list", "-o", "json"]).await?;
    assert_exit(&listed, 0);
    let listed = json(&listed)?;
    let items = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], id.as_str());
    assert!(items[0].get("secret").is_none(), "the secret is shown once: {listed}");

    let requested =
        api.run(&["tenants", "request", "hooked", "--admin-email", "ada@hooked.test", "--timeout", "90s"]).await?;
    assert_exit(&requested, 0);
    let deliveries = eventually("the activated event delivered", Duration::from_secs(30), || async {
        let output = api.run(&["webhooks", "deliveries", &id, "-o", "json"]).await.ok()?;
        let items: Value = json(&output).ok()?;
        let items = items.as_array()?.clone();
        (items.len() == 1 && items[0]["status"] == "delivered").then_some(items)
    })
    .await?;
    assert_eq!(
        (deliveries[0]["event_type"].as_str(), deliveries[0]["tenant"].as_str()),
        (Some("activated"), Some("hooked"))
    );
    assert_eq!(deliveries[0]["attempts"][0]["status_code"], 200);
    assert_eq!(received.load(Ordering::SeqCst), 1);
    let table = api.run(&["webhooks", "deliveries", &id]).await?;
    assert_exit(&table, 0);
    assert!(stdout(&table).lines().any(|l| l.contains("activated") && l.contains("delivered")), "{}", text(&table));

    assert_exit(&api.run(&["webhooks", "remove", &id]).await?, 0);
    assert_exit(&api.run(&["webhooks", "get", &id]).await?, 3);
    assert_exit(&api.run(&["webhooks", "deliveries", &id]).await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_updated_disabled_and_their_secret_rotated() -> Result<()> {
    let api = Api::start().await?;
    let (url, _) = receiver()?;
    let (moved, _) = receiver()?;
    let added = api.run(&["webhooks", "add", &url, "--event", "activated", "-o", "json"]).await?;
    assert_exit(&added, 0);
    let added = json(&added)?;
    let id = added["id"].as_str().unwrap_or_default().to_owned();
    let old = added["secret"].as_str().unwrap_or_default().to_owned();

    // Usage: nothing to change, or both --enable and --disable, 2; refused
    // by the API, 1; an unknown endpoint, 3; a read-only token, 4.
    assert_exit(&api.run(&["webhooks", "update", &id]).await?, 2);
    assert_exit(&api.run(&["webhooks", "update", &id, "--enable", "--disable"]).await?, 2);
    let refused = api.run(&["webhooks", "update", &id, "--endpoint-url", "http://hooks.example.com/"]).await?;
    assert_exit(&refused, 1);
    assert!(text(&refused).contains("https://"), "{}", text(&refused));
    let unknown_event = api.run(&["webhooks", "update", &id, "--event", "activate"]).await?;
    assert_exit(&unknown_event, 1);
    assert!(text(&unknown_event).contains("\"activate\""), "{}", text(&unknown_event));
    let nobody = "00000000-0000-0000-0000-000000000000";
    assert_exit(&api.run(&["webhooks", "update", nobody, "--disable"]).await?, 3);
    assert_exit(&api.run(&["webhooks", "rotate-secret", nobody]).await?, 3);
    for args in [&["webhooks", "update", &id, "--disable"][..], &["webhooks", "rotate-secret", &id][..]] {
        let mut full = vec!["--url", &api.url, "--token", &api.read_token];
        full.extend_from_slice(args);
        assert_exit(&api.run_bare(&full, &[]).await?, 4);
    }

    let disabled = api.run(&["webhooks", "update", &id, "--disable", "-o", "json"]).await?;
    assert_exit(&disabled, 0);
    let disabled = json(&disabled)?;
    assert_eq!((disabled["enabled"].as_bool(), disabled["url"].as_str()), (Some(false), Some(url.as_str())));

    // --events is --event's alias.
    let changed = api
        .run(&[
            "webhooks",
            "update",
            &id,
            "--enable",
            "--endpoint-url",
            &moved,
            "--event",
            "deleted",
            "--events",
            "activated",
            "--description",
            "moved",
            "-o",
            "json",
        ])
        .await?;
    assert_exit(&changed, 0);
    let changed = json(&changed)?;
    assert_eq!((changed["enabled"].as_bool(), changed["url"].as_str()), (Some(true), Some(moved.as_str())));
    assert_eq!(changed["event_types"], serde_json::json!(["deleted", "activated"]));
    assert_eq!(changed["description"], "moved");
    let table = api.run(&["webhooks", "get", &id]).await?;
    assert_exit(&table, 0);
    assert!(stdout(&table).lines().any(|l| l.starts_with("enabled:") && l.ends_with("true")), "{}", text(&table));

    let rotated = api.run(&["webhooks", "rotate-secret", &id, "-o", "json"]).await?;
    assert_exit(&rotated, 0);
    let rotated = json(&rotated)?;
    let new = rotated["secret"].as_str().unwrap_or_default();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    let table = api.run(&["webhooks", "rotate-secret", &id]).await?;
    assert_exit(&table, 0);
    assert!(stdout(&table).lines().any(|l| l.starts_with("secret:") && l.contains("whsec_")), "{}", text(&table));
    assert!(text(&table).contains("shown this once"), "{}", text(&table));
    let read = json(&api.run(&["webhooks", "get", &id, "-o", "json"]).await?)?;
    assert!(read["previous_secret_until"].is_string(), "{read}");
    assert!(read.get("secret").is_none(), "{read}");
    Ok(())
}
