//! `/v1/events`: the SSE feed resumes after a reconnect.

use super::*;

/// An SSE connection to the feed, read frame by frame.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedEvent {
    id: u64,
    event: String,
    data: Value,
}

impl Feed {
    async fn open(h: &Harness, query: &str, last_event_id: Option<u64>) -> Result<Self> {
        let mut request = h.http.get(format!("{}/v1/events{query}", h.api)).bearer_auth(h.token(&[READ]));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        anyhow::ensure!(response.status() == StatusCode::OK, "feed: {}", response.status());
        anyhow::ensure!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()) == Some("text/event-stream"),
            "feed content type"
        );
        Ok(Self { response, buffer: String::new() })
    }

    /// The next event (keep-alive comments skipped).
    async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse()?);
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Ok(FeedEvent { id, event, data: serde_json::from_str(&data)? });
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .context("no event within the wait")??
                .context("the feed ended")?;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }

    async fn until(&mut self, event: &str) -> Result<Vec<FeedEvent>> {
        let mut seen = Vec::new();
        loop {
            let next = self.next().await?;
            let done = next.event == event;
            seen.push(next);
            if done {
                return Ok(seen);
            }
        }
    }
}

#[tokio::test]
async fn the_event_feed_resumes_after_a_reconnect_without_gaps_or_repeats() -> Result<()> {
    let h = Harness::new().await?;
    let mut live = Feed::open(&h, "?tenant=echo", None).await?;
    let mut failures = Feed::open(&h, "?type=provisioning_started", None).await?;
    h.create("echo", "standard", json!({})).await?;
    h.create("foxtrot", "standard", json!({})).await?;
    // The first few events, then the client goes away.
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(live.next().await?);
    }
    drop(live);
    let last = first.last().map(|e| e.id).context("events")?;
    let mut resumed = Feed::open(&h, "?tenant=echo", Some(last)).await?;
    let rest = resumed.until("activated").await?;
    let mut joined = first.clone();
    joined.extend(rest);
    // Everything about echo from the start of the stream, in one go.
    let mut full = Feed::open(&h, "?tenant=echo", Some(0)).await?;
    let all = full.until("activated").await?;
    assert_eq!(joined, all, "reconnecting lost or repeated events");
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(all.iter().all(|e| e.data["tenant"] == "echo" && e.data["sequence"] == e.id));
    let names: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"requested"));
    assert!(names.contains(&"step_succeeded"), "{names:?}");
    // The type filter sees both tenants, and only that type.
    let a = failures.next().await?;
    let b = failures.next().await?;
    let mut tenants = [a.data["tenant"].as_str().unwrap_or(""), b.data["tenant"].as_str().unwrap_or("")];
    tenants.sort();
    assert_eq!(tenants, ["echo", "foxtrot"]);
    assert!([&a, &b].iter().all(|e| e.event == "provisioning_started"));
    for (query, status) in
        [("?type=bogus", StatusCode::BAD_REQUEST), ("?tenant=Nope", StatusCode::UNPROCESSABLE_ENTITY)]
    {
        let (code, _) = h.get(&format!("/v1/events{query}"), &h.admin()).await?;
        assert_eq!(code, status, "{query}");
    }
    let bad_id =
        h.http.get(format!("{}/v1/events", h.api)).bearer_auth(h.admin()).header("Last-Event-ID", "x").send().await?;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
