//! Outbound webhooks (issue 29 item 4): endpoints registered through the
//! API, deliveries to receivers on 127.0.0.1 verified with the Svix
//! verification code, retries and their attempts, de-duplication by event
//! id, and a receiver that hangs not holding the events stream.

use std::collections::VecDeque;

use axum::body::Bytes;
use axum::http::HeaderMap;
use landlord_contract::{CloudEvent, EventKind, TenantKey, header};
use landlord_gateway::outbound::CONSUMER;
use prost::Message as _;

use super::*;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers
/// the statuses of its script in turn, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    async fn start(script: &[u16]) -> Result<Self> {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (record, answers) = (got.clone(), script.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (record, answers) = (record.clone(), answers.clone());
                async move {
                    if let Ok(mut got) = record.lock() {
                        got.push(Received { headers, body });
                    }
                    let status = answers.lock().ok().and_then(|mut a| a.pop_front()).unwrap_or(200);
                    (axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK), "thanks")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await }).await;
        });
        Ok(Self { url, got, stop })
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits until the receiver got `n` requests.
    async fn until(&self, n: usize) -> Result<Vec<Received>> {
        eventually(&format!("{n} requests at {}", self.url), WAIT, || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Registers an endpoint; its id and signing secret.
async fn register(h: &Harness, url: &str, event_types: &[&str]) -> Result<(String, String)> {
    let body = json!({"url": url, "event_types": event_types, "description": "test receiver"});
    let answer = h.post("/v1/webhook-endpoints", Some(&h.admin()), None, &body).await?;
    anyhow::ensure!(answer.status == StatusCode::CREATED, "register {url}: {answer:?}");
    let id = answer.body["id"].as_str().context("id")?.to_owned();
    let secret = answer.body["secret"].as_str().context("secret")?.to_owned();
    Ok((id, secret))
}

async fn deliveries(h: &Harness, endpoint: &str) -> Result<Vec<Value>> {
    let (status, body) = h.get(&format!("/v1/webhook-endpoints/{endpoint}/deliveries"), &h.admin()).await?;
    anyhow::ensure!(status == StatusCode::OK, "deliveries of {endpoint}: {status} {body}");
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

/// Waits until the endpoint's deliveries satisfy `done`.
async fn until_deliveries(
    h: &Harness,
    endpoint: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    let last = Arc::new(Mutex::new(Vec::new()));
    let found = eventually(what, WAIT, || {
        let last = last.clone();
        let done = &done;
        async move {
            let items = deliveries(h, endpoint).await.ok()?;
            if let Ok(mut last) = last.lock() {
                *last = items.clone();
            }
            done(&items).then_some(items)
        }
    })
    .await;
    found.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.clone())))
}

/// Waits until the webhook intake has taken and acked every event on the
/// stream; `within` bounds how long that may take.
async fn until_intake_caught_up(h: &Harness, within: Duration) -> Result<()> {
    let stream = h.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    let last = Arc::new(Mutex::new(String::new()));
    let caught_up = eventually("the webhook intake to catch up with the events stream", within, || {
        let (stream, last) = (stream.clone(), last.clone());
        async move {
            let info = stream.consumer_info(CONSUMER).await.ok()?;
            if let Ok(mut last) = last.lock() {
                *last = format!("pending {} ack pending {}", info.num_pending, info.num_ack_pending);
            }
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    caught_up.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.clone())))
}

#[tokio::test]
async fn a_delivery_is_signed_as_svix_signs_and_only_endpoints_for_its_type_get_it() -> Result<()> {
    let h = Harness::new().await?;
    let activated = Receiver::start(&[]).await?;
    let suspended = Receiver::start(&[]).await?;
    let (endpoint, secret) = register(&h, &activated.url, &["activated"]).await?;
    let (other, _) = register(&h, &suspended.url, &["suspended"]).await?;
    assert!(secret.starts_with("whsec_"), "{secret}");

    // Listed and read back without the secret.
    let (status, list) = h.get("/v1/webhook-endpoints", &h.token(&[READ])).await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().context("items")?;
    assert_eq!(items.len(), 2, "{list}");
    assert!(items.iter().all(|e| e.get("secret").is_none()), "{list}");
    assert_eq!(items[0]["event_types"], json!(["activated"]));

    let tenant = h.create("hooked", "standard", json!({})).await?;
    h.until_status("hooked", "ACTIVE").await?;
    let got = activated.until(1).await?;
    let delivery = &got[0];

    // The Svix verification code accepts it with the endpoint's secret,
    // and refuses it with another.
    let verifier = SigningSecret::parse(&secret).map_err(anyhow::Error::msg)?;
    let svix_id =
        verifier.verify(&delivery.headers, &delivery.body, unix_now()).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let (_, wrong) = SigningSecret::generate().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let wrong = SigningSecret::parse(&wrong).map_err(anyhow::Error::msg)?;
    assert!(wrong.verify(&delivery.headers, &delivery.body, unix_now()).is_err());

    // A JSON CloudEvent whose id is the svix-id, the protobuf in data_base64.
    let content_type = delivery.headers.get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/cloudevents+json"));
    let event: Value = serde_json::from_slice(&delivery.body)?;
    assert_eq!(event["id"], svix_id.as_str());
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "landlord.v1.TenantActivated");
    assert_eq!((event["subject"].as_str(), event["landlordevent"].as_str()), (Some("hooked"), Some("activated")));
    let data = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        event["data_base64"].as_str().context("data_base64")?,
    )?;
    let message = pb::TenantActivated::decode(data.as_slice())?;
    assert_eq!(message.tenant_id, tenant["tenant_id"].as_str().unwrap_or_default());

    // Visible with its attempt.
    let items = until_deliveries(&h, &endpoint, "the delivery to be recorded delivered", |items| {
        items.len() == 1 && items[0]["status"] == "delivered"
    })
    .await?;
    assert_eq!(items[0]["event_id"], svix_id.as_str());
    assert_eq!((items[0]["event_type"].as_str(), items[0]["tenant"].as_str()), (Some("activated"), Some("hooked")));
    assert_eq!(items[0]["next_attempt_at"], Value::Null);
    let attempts = items[0]["attempts"].as_array().context("attempts")?;
    assert_eq!(attempts.len(), 1, "{items:?}");
    assert_eq!((attempts[0]["status_code"].as_i64(), &attempts[0]["error"]), (Some(200), &Value::Null));
    assert_eq!(attempts[0]["response"], "thanks");

    // The endpoint for another type got nothing, once every event of the
    // provisioning has been taken.
    until_intake_caught_up(&h, WAIT).await?;
    assert!(suspended.received().is_empty());
    assert!(deliveries(&h, &other).await?.is_empty());
    assert!(activated.received().len() == 1, "one activated event, one delivery");
    let (_, one) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &h.admin()).await?;
    assert_eq!(one["deliveries"], json!({"pending": 0, "delivered": 1, "failed": 0}));
    Ok(())
}

#[tokio::test]
async fn a_failed_attempt_is_retried_with_backoff_and_every_attempt_is_listed() -> Result<()> {
    let h = Harness::new().await?;
    let receiver = Receiver::start(&[500]).await?;
    let (endpoint, secret) = register(&h, &receiver.url, &["activated"]).await?;
    h.create("retried", "standard", json!({})).await?;
    let got = receiver.until(2).await?;
    // The same event both times, each attempt signed anew.
    let verifier = SigningSecret::parse(&secret).map_err(anyhow::Error::msg)?;
    let ids: Vec<String> = got
        .iter()
        .map(|r| verifier.verify(&r.headers, &r.body, unix_now()).map_err(|p| anyhow::anyhow!("{p:?}")))
        .collect::<Result<_>>()?;
    assert_eq!(ids[0], ids[1]);
    assert_eq!(got[0].body, got[1].body);

    let items = until_deliveries(&h, &endpoint, "the retried delivery to be delivered", |items| {
        items.len() == 1 && items[0]["status"] == "delivered"
    })
    .await?;
    let attempts = items[0]["attempts"].as_array().context("attempts")?;
    assert_eq!(attempts.len(), 2, "{items:?}");
    assert_eq!((attempts[0]["attempt"].as_i64(), attempts[0]["status_code"].as_i64()), (Some(1), Some(500)));
    assert!(attempts[0]["error"].as_str().is_some_and(|e| e.contains("500")), "{attempts:?}");
    assert_eq!((attempts[1]["attempt"].as_i64(), attempts[1]["status_code"].as_i64()), (Some(2), Some(200)));
    assert_eq!(attempts[1]["error"], Value::Null);
    // The retry waited for the backoff (100 ms in these tests).
    let when = |a: &Value| {
        time::OffsetDateTime::parse(a["attempted_at"].as_str().unwrap_or_default(), &Rfc3339)
            .map_err(anyhow::Error::from)
    };
    let waited = when(&attempts[1])? - when(&attempts[0])?;
    assert!(waited >= time::Duration::milliseconds(100), "{waited}");

    // Filters and pages.
    let path = format!("/v1/webhook-endpoints/{endpoint}/deliveries");
    let (_, failed) = h.get(&format!("{path}?status=failed"), &h.admin()).await?;
    assert_eq!(failed["items"], json!([]));
    let (status, bad) = h.get(&format!("{path}?status=lost"), &h.admin()).await?;
    assert_eq!((status, bad["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:landlord:problem:status")));
    Ok(())
}

#[tokio::test]
async fn the_same_event_read_twice_is_delivered_once() -> Result<()> {
    let h = Harness::new().await?;
    let receiver = Receiver::start(&[]).await?;
    let (endpoint, _) = register(&h, &receiver.url, &["exported"]).await?;
    // The same event published twice under different Nats-Msg-Ids (as an
    // outbox row republished after the broker's duplicate window): the
    // stream holds both.
    let key = TenantKey::parse("twice").map_err(anyhow::Error::msg)?;
    let subject = h.namespace.event_subject(&key, EventKind::Exported);
    let event = CloudEvent {
        id: "evt-twice-1".into(),
        ty: "landlord.v1.TenantExported".into(),
        source: "test".into(),
        time: time::OffsetDateTime::now_utc().format(&Rfc3339)?,
        subject: Some("twice".into()),
        correlation_id: None,
    };
    for copy in ["a", "b"] {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in event.to_headers() {
            if name != header::NATS_MSG_ID {
                headers.insert(name, value);
            }
        }
        headers.insert(header::NATS_MSG_ID, format!("copy-{copy}").as_str());
        let payload = pb::TenantExported::default().encode_to_vec();
        h.jetstream.publish_with_headers(subject.clone(), headers, payload.into()).await?.await?;
    }
    assert_eq!(h.count(&subject).await?, 2);
    until_intake_caught_up(&h, WAIT).await?;
    let items = until_deliveries(&h, &endpoint, "the delivery to be delivered", |items| {
        items.iter().any(|d| d["status"] == "delivered")
    })
    .await?;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["event_id"], "evt-twice-1");
    let got = receiver.until(1).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers.get("svix-id").and_then(|v| v.to_str().ok()), Some("evt-twice-1"));
    Ok(())
}

#[tokio::test]
async fn a_receiver_that_hangs_never_holds_the_events_stream_nor_provisioning() -> Result<()> {
    let h = Harness::new().await?;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    let hanging = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            if let Ok(mut held) = holder.lock() {
                held.push(socket);
            }
        }
    });
    let (endpoint, _) = register(&h, &url, &["*"]).await?;
    for key in ["hang-a", "hang-b", "hang-c"] {
        h.create(key, "standard", json!({})).await?;
    }
    for key in ["hang-a", "hang-b", "hang-c"] {
        h.until_status(key, "ACTIVE").await?;
    }
    // Every event is taken within seconds, while no delivery got through.
    until_intake_caught_up(&h, Duration::from_secs(5)).await?;
    let items = deliveries(&h, &endpoint).await?;
    assert!(items.len() >= 3 * 3, "at least requested, accepted and activated of each: {items:?}");
    assert!(items.iter().all(|d| d["status"] == "pending"), "{items:?}");
    // The attempts time out (2 s in these tests) and are recorded so.
    until_deliveries(&h, &endpoint, "an attempt recorded as timed out", |items| {
        items.iter().any(|d| {
            d["attempts"].as_array().into_iter().flatten().any(|a| {
                a["status_code"].is_null() && a["error"].as_str().is_some_and(|e| e.contains("no answer within"))
            })
        })
    })
    .await?;
    hanging.abort();
    Ok(())
}

#[tokio::test]
async fn the_registry_checks_urls_event_types_and_scopes() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    let post = |body: Value, token: String| {
        let h = &h;
        async move { h.post("/v1/webhook-endpoints", Some(&token), None, &body).await }
    };
    for (body, rule) in [
        (json!({"url": "http://hooks.example.com/x", "event_types": ["activated"]}), "webhook_endpoint.https"),
        (json!({"url": "https://u:p@hooks.example.com/", "event_types": ["*"]}), "webhook_endpoint.url_credentials"),
        (json!({"url": "https://hooks.example.com/", "event_types": ["activate"]}), "webhook_endpoint.event_type"),
        (json!({"url": "https://hooks.example.com/", "event_types": []}), "webhook_endpoint.event_types_empty"),
        (
            json!({"url": "https://hooks.example.com/", "event_types": ["*", "deleted"]}),
            "webhook_endpoint.event_types_wildcard",
        ),
    ] {
        let answer = post(body.clone(), admin.clone()).await?;
        answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(answer.body["rule"], rule, "{body}");
    }
    let ok = json!({"url": "https://hooks.example.com/landlord", "event_types": ["deleted", "deleted"]});
    post(ok.clone(), h.token(&[READ])).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
    let created = post(ok, admin.clone()).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["event_types"], json!(["deleted"]));
    let id = created.body["id"].as_str().context("id")?;
    let location = created.headers.get("location").and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/v1/webhook-endpoints/{id}").as_str()));

    let delete = |token: String| {
        let url = format!("{}/v1/webhook-endpoints/{id}", h.api);
        let http = h.http.clone();
        async move { Answer::of(http.delete(url).bearer_auth(token).send().await?).await }
    };
    delete(h.token(&[READ])).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert_eq!(delete(admin.clone()).await?.status, StatusCode::NO_CONTENT);
    delete(admin.clone()).await?.problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(h.get(&format!("/v1/webhook-endpoints/{id}"), &admin).await?.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get(&format!("/v1/webhook-endpoints/{id}/deliveries"), &admin).await?.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v1/webhook-endpoints/not-a-uuid", &admin).await?.0, StatusCode::NOT_FOUND);
    Ok(())
}

/// Publishes a lifecycle event of `kind` about `key` with CloudEvents id
/// `id` on the events stream, as the orchestrator's outbox does.
async fn publish(h: &Harness, key: &str, kind: EventKind, id: &str) -> Result<()> {
    let key = TenantKey::parse(key).map_err(anyhow::Error::msg)?;
    let event = CloudEvent {
        id: id.into(),
        ty: format!("landlord.v1.Tenant{kind:?}"),
        source: "test".into(),
        time: time::OffsetDateTime::now_utc().format(&Rfc3339)?,
        subject: Some(key.as_str().into()),
        correlation_id: None,
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in event.to_headers() {
        headers.insert(name, value);
    }
    let payload = pb::TenantExported::default().encode_to_vec();
    h.jetstream.publish_with_headers(h.namespace.event_subject(&key, kind), headers, payload.into()).await?.await?;
    Ok(())
}

/// `PATCH /v1/webhook-endpoints/{id}` with `body`.
async fn patch(h: &Harness, id: &str, token: &str, body: &Value) -> Result<Answer> {
    let url = format!("{}/v1/webhook-endpoints/{id}", h.api);
    Answer::of(h.http.patch(url).bearer_auth(token).json(body).send().await?).await
}

/// The event ids of the endpoint's deliveries, oldest first.
async fn delivered_ids(h: &Harness, endpoint: &str) -> Result<Vec<String>> {
    let mut ids: Vec<String> =
        deliveries(h, endpoint).await?.iter().filter_map(|d| d["event_id"].as_str().map(str::to_owned)).collect();
    ids.reverse();
    Ok(ids)
}

fn svix_id(received: &Received) -> Option<&str> {
    received.headers.get("svix-id").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn an_update_moves_the_next_delivery_and_a_disabled_endpoint_gets_none_until_enabled() -> Result<()> {
    let h = Harness::new().await?;
    let before = Receiver::start(&[]).await?;
    let after = Receiver::start(&[]).await?;
    let (endpoint, _) = register(&h, &before.url, &["exported"]).await?;

    // Another URL, other types, another description, in one request.
    let body = json!({"url": after.url, "event_types": ["deleted"], "description": "moved"});
    let updated = patch(&h, &endpoint, &h.admin(), &body).await?;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    assert_eq!(updated.body["url"], after.url.as_str());
    assert_eq!(updated.body["event_types"], json!(["deleted"]));
    assert_eq!((updated.body["description"].as_str(), updated.body["enabled"].as_bool()), (Some("moved"), Some(true)));
    assert!(updated.body.get("secret").is_none(), "{updated:?}");
    let (_, read) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &h.admin()).await?;
    assert_eq!(read, updated.body);

    // An event of the old type is no longer wanted; one of the new type
    // goes to the new URL.
    publish(&h, "moved", EventKind::Exported, "evt-old-type").await?;
    publish(&h, "moved", EventKind::Deleted, "evt-new-type").await?;
    let got = after.until(1).await?;
    assert_eq!(svix_id(&got[0]), Some("evt-new-type"));
    until_intake_caught_up(&h, WAIT).await?;
    until_deliveries(&h, &endpoint, "the delivery to the new URL to be recorded", |items| {
        items.len() == 1 && items[0]["status"] == "delivered"
    })
    .await?;
    assert!(before.received().is_empty(), "nothing goes to the old URL");
    assert_eq!(delivered_ids(&h, &endpoint).await?, ["evt-new-type"]);

    // Disabled: an event it wants makes no delivery.
    let disabled = patch(&h, &endpoint, &h.admin(), &json!({"enabled": false})).await?;
    assert_eq!((disabled.status, disabled.body["enabled"].as_bool()), (StatusCode::OK, Some(false)), "{disabled:?}");
    assert_eq!(disabled.body["url"], after.url.as_str(), "what is not given stays");
    publish(&h, "moved", EventKind::Deleted, "evt-while-disabled").await?;
    until_intake_caught_up(&h, WAIT).await?;
    assert_eq!(delivered_ids(&h, &endpoint).await?, ["evt-new-type"]);
    assert_eq!(after.received().len(), 1);

    // Enabled again: the next event is delivered (the one consumed
    // meanwhile is not).
    let enabled = patch(&h, &endpoint, &h.admin(), &json!({"enabled": true})).await?;
    assert_eq!((enabled.status, enabled.body["enabled"].as_bool()), (StatusCode::OK, Some(true)), "{enabled:?}");
    publish(&h, "moved", EventKind::Deleted, "evt-enabled-again").await?;
    let got = after.until(2).await?;
    assert_eq!(svix_id(&got[1]), Some("evt-enabled-again"));
    until_intake_caught_up(&h, WAIT).await?;
    assert_eq!(delivered_ids(&h, &endpoint).await?, ["evt-new-type", "evt-enabled-again"]);
    assert_eq!(after.received().len(), 2);
    assert!(before.received().is_empty());
    Ok(())
}

/// The `v1,` entries of a delivery's signature header.
fn signatures<'a>(received: &'a Received, header: &str) -> Vec<&'a str> {
    received.headers.get(header).and_then(|v| v.to_str().ok()).unwrap_or_default().split_whitespace().collect()
}

/// Whether the Svix verification code accepts `received` with `secret`.
fn verifies(received: &Received, secret: &str) -> Result<bool> {
    let secret = SigningSecret::parse(secret).map_err(anyhow::Error::msg)?;
    Ok(secret.verify(&received.headers, &received.body, unix_now()).is_ok())
}

#[tokio::test]
async fn a_rotated_secret_signs_next_to_the_old_one_for_its_window_then_alone() -> Result<()> {
    let h = Harness::new().await?;
    let receiver = Receiver::start(&[]).await?;
    let (endpoint, old) = register(&h, &receiver.url, &["exported"]).await?;
    let (_, read) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &h.admin()).await?;
    assert_eq!(read["previous_secret_until"], Value::Null, "no rotation yet: {read}");

    let path = format!("/v1/webhook-endpoints/{endpoint}/secret/rotate");
    h.post(&path, Some(&h.token(&[READ])), None, &json!({})).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
    let rotated = h.post(&path, Some(&h.admin()), None, &json!({})).await?;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let new = rotated.body["secret"].as_str().context("secret")?.to_owned();
    assert!(new.starts_with("whsec_") && new != old, "{rotated:?}");
    assert_eq!(rotated.body["id"], endpoint.as_str());
    // The window is SECRET_ROTATION_GRACE (24 h) from the rotation.
    let until = rotated.body["previous_secret_until"].as_str().context("previous_secret_until")?;
    let left = time::OffsetDateTime::parse(until, &Rfc3339)? - time::OffsetDateTime::now_utc();
    let grace = time::Duration::try_from(landlord_gateway::outbound::SECRET_ROTATION_GRACE)?;
    assert!(left <= grace && left > grace - time::Duration::minutes(5), "{left}");
    // Shown once: reading the endpoint tells the window, not a secret.
    let (_, read) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &h.admin()).await?;
    assert_eq!(read["previous_secret_until"], until);
    assert!(read.get("secret").is_none(), "{read}");

    // Within the window: two v1 signatures, one per secret; a Svix
    // verifier with either secret accepts the delivery.
    publish(&h, "rotated", EventKind::Exported, "evt-in-window").await?;
    let got = receiver.until(1).await?;
    let delivery = &got[0];
    assert_eq!(svix_id(delivery), Some("evt-in-window"));
    assert_eq!(signatures(delivery, "webhook-signature").len(), 2, "{:?}", delivery.headers);
    assert!(signatures(delivery, "webhook-signature").iter().all(|s| s.starts_with("v1,")));
    assert_eq!(signatures(delivery, "webhook-signature"), signatures(delivery, "svix-signature"));
    assert!(verifies(delivery, &new)?, "the new secret verifies it");
    assert!(verifies(delivery, &old)?, "the old secret verifies it");
    let (_, stranger) = SigningSecret::generate().map_err(|_| anyhow::anyhow!("no randomness"))?;
    assert!(!verifies(delivery, &stranger)?);

    // The window ends (moved to the past rather than waited for): the next
    // delivery is signed with the new secret only.
    sqlx::query("UPDATE outbound_endpoints SET previous_secret_until = now() - interval '1 second' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&endpoint)?)
        .execute(&h.pool)
        .await?;
    let (_, read) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &h.admin()).await?;
    assert_eq!(read["previous_secret_until"], Value::Null, "{read}");
    publish(&h, "rotated", EventKind::Exported, "evt-after-window").await?;
    let got = receiver.until(2).await?;
    let delivery = &got[1];
    assert_eq!(svix_id(delivery), Some("evt-after-window"));
    assert_eq!(signatures(delivery, "webhook-signature").len(), 1, "{:?}", delivery.headers);
    assert!(verifies(delivery, &new)?, "the new secret verifies it");
    assert!(!verifies(delivery, &old)?, "the old secret no longer does");

    // The expired secret is then forgotten.
    assert_eq!(landlord_gateway::outbound::sender::forget_expired_secrets(&h.pool).await?, 1);
    let kept: Option<String> = sqlx::query_scalar("SELECT previous_secret FROM outbound_endpoints WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&endpoint)?)
        .fetch_one(&h.pool)
        .await?;
    assert_eq!(kept, None);

    // Unknown endpoints.
    let missing = "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000/secret/rotate";
    h.post(missing, Some(&h.admin()), None, &json!({})).await?.problem(StatusCode::NOT_FOUND, "not-found");
    let garbage = "/v1/webhook-endpoints/not-a-uuid/secret/rotate";
    h.post(garbage, Some(&h.admin()), None, &json!({})).await?.problem(StatusCode::NOT_FOUND, "not-found");
    Ok(())
}

#[tokio::test]
async fn an_update_is_checked_as_a_registration_is_and_changes_nothing_when_refused() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    let (endpoint, _) = register(&h, "https://hooks.example.com/landlord", &["activated"]).await?;
    for (body, rule, says) in [
        (json!({"url": "http://hooks.example.com/x"}), "webhook_endpoint.https", "must be https://"),
        (json!({"url": "https://u:p@hooks.example.com/"}), "webhook_endpoint.url_credentials", "credentials"),
        (json!({"url": "hooks.example.com"}), "webhook_endpoint.url", "is not a URL"),
        (
            json!({"url": "https://hooks.example.com/v2", "event_types": ["activate"]}),
            "webhook_endpoint.event_type",
            "event type \"activate\" is not one of",
        ),
        (json!({"event_types": []}), "webhook_endpoint.event_types_empty", "names no event"),
        (json!({"event_types": ["*", "deleted"]}), "webhook_endpoint.event_types_wildcard", "alone"),
        (json!({"description": "a\u{7}bell"}), "webhook_endpoint.description", "control characters"),
        (json!({}), "webhook_endpoint.update_empty", "changes nothing"),
        (json!({"enabled": null}), "webhook_endpoint.update_empty", "changes nothing"),
    ] {
        let answer = patch(&h, &endpoint, &admin, &body).await?;
        answer.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(answer.body["rule"], rule, "{body}");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    for body in [json!({"secret": "whsec_AAAA"}), json!({"enabled": "no"}), json!("enable")] {
        patch(&h, &endpoint, &admin, &body).await?.problem(StatusCode::BAD_REQUEST, "malformed-body");
    }
    let (_, read) = h.get(&format!("/v1/webhook-endpoints/{endpoint}"), &admin).await?;
    assert_eq!(read["url"], "https://hooks.example.com/landlord", "a refused update changes nothing: {read}");
    assert_eq!(read["event_types"], json!(["activated"]));

    let change = json!({"enabled": false});
    patch(&h, &endpoint, &h.token(&[READ]), &change).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
    let unknown = "00000000-0000-0000-0000-000000000000";
    let answer = patch(&h, unknown, &admin, &change).await?;
    answer.problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(answer.body["detail"], format!("no webhook endpoint {unknown}"));
    patch(&h, "not-a-uuid", &admin, &change).await?.problem(StatusCode::NOT_FOUND, "not-found");
    // Deleted, then updated: 404.
    let url = format!("{}/v1/webhook-endpoints/{endpoint}", h.api);
    assert_eq!(h.http.delete(url).bearer_auth(&admin).send().await?.status(), StatusCode::NO_CONTENT);
    patch(&h, &endpoint, &admin, &change).await?.problem(StatusCode::NOT_FOUND, "not-found");
    Ok(())
}
