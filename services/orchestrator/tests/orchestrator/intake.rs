//! Intake against the real broker and database (issue 23): the request
//! contract is checked where a request arrives, a key is checked against
//! every name it becomes, human-readable fields refuse what renders
//! differently from what it is, and a domain belongs to one live tenant.
//! Every refusal is a TenantRejected naming the rule, and nothing is made.

use async_nats::HeaderMap;
use landlord_contract::{CeType as _, header};

use super::*;

/// Rejections published under `token` (a key), with their headers.
async fn rejections(h: &Harness, token: &str, count: usize) -> Result<Vec<(HeaderMap, pb::TenantRejected)>> {
    let stream = h.broker.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{}.v1.events.{token}.rejected", h.namespace.root()),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .with_context(|| format!("only {} rejections for {token} within {WAIT:?}", seen.len()))?
            .context("event stream ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        seen.push((message.headers.clone().unwrap_or_default(), pb::TenantRejected::decode(message.payload.clone())?));
    }
    Ok(seen)
}

/// Tenants and sagas in the control plane.
async fn made(h: &Harness) -> Result<(i64, i64)> {
    Ok(sqlx::query_as("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM sagas)").fetch_one(&h.pool).await?)
}

fn requested_on(h: &Harness, token: &str) -> String {
    format!("{}.v1.events.{token}.requested", h.namespace.root())
}

/// Item 11: a bare protobuf with no headers, or one with headers but
/// published under another key than its payload's, provisions nothing; the
/// rejection goes to the key it was published under (never to the payload's
/// key, whose feed a publisher of another key must not reach) and carries
/// ce-subject and the correlation id like every other event.
#[tokio::test]
async fn intake_refuses_requests_that_break_the_contract_where_they_arrive() -> Result<()> {
    let h = Harness::new().await?;
    let victim = Harness::request("victim", &[]);
    // No headers at all: no ce-type.
    h.publisher.publish_raw(requested_on(&h, "mallory"), HeaderMap::new(), victim.encode_to_vec().into()).await?;
    // Headers of another message type.
    let headers = h.publisher.headers::<pb::CancelSaga>(&Envelope::new("wrong-type").tenant("mallory"));
    h.publisher.publish_raw(requested_on(&h, "mallory"), headers, victim.encode_to_vec().into()).await?;
    // Proper headers, but the subject's key is not the payload's.
    h.publisher.publish(requested_on(&h, "mallory"), &victim, &Envelope::new("other-key")).await?;
    // Subject and payload agree, ce-subject does not.
    let mut own = Harness::request("mallory", &[]);
    own.idempotency_id = "mallory-ce-subject".into();
    h.publisher.publish(requested_on(&h, "mallory"), &own, &Envelope::new("ce-subject").tenant("victim")).await?;

    let seen = rejections(&h, "mallory", 4).await?;
    let mut rules: Vec<&str> = seen.iter().map(|(_, r)| r.rule.as_str()).collect();
    rules.sort();
    assert_eq!(rules, ["request.ce_subject", "request.ce_type", "request.ce_type", "request.subject_key"]);
    for (headers, rejection) in &seen {
        assert_eq!(headers.get(header::SUBJECT).map(|v| v.as_str()), Some("mallory"), "{rejection:?}");
        assert_eq!(headers.get(header::TYPE).map(|v| v.as_str()), Some(pb::TenantRejected::CE_TYPE));
        let correlation = headers.get(header::CORRELATION_ID).map(|v| v.as_str().to_owned());
        let expected = landlord_control_plane::ids::saga_id(
            landlord_control_plane::Operation::Provision,
            &rejection.idempotency_id,
        )
        .to_string();
        assert_eq!(correlation.as_deref(), Some(expected.as_str()), "{rejection:?}");
        assert!(!rejection.reason.is_empty());
    }
    assert_eq!(made(&h).await?, (0, 0), "nothing was created");
    // The same request, published as the contract says, provisions; the
    // victim's feed never heard of the refused ones.
    h.publish(&victim, "victim-proper").await?;
    let events = h.events_until("victim", &[EventKind::Activated]).await?;
    assert_eq!(kinds(&events)[..2], [EventKind::Requested, EventKind::Accepted], "{:?}", kinds(&events));
    assert!(!kinds(&events).contains(&EventKind::Rejected));
    Ok(())
}

/// Items 2 and 3: keys that make a name a backend refuses, and human-readable
/// fields with invisible or direction-changing characters, are refused by
/// the rule they break before anything is created; what is kept is NFC.
#[tokio::test]
async fn intake_refuses_backend_names_and_invisible_text_and_keeps_nfc() -> Result<()> {
    let h = Harness::new().await?;
    let mut cases: Vec<(pb::TenantRequested, &str)> = Vec::new();
    cases.push((Harness::request("acme-s3alias", &[]), "tenant_key.s3_bucket_name"));
    cases.push((Harness::request("sthree-acme", &[]), "tenant_key.s3_bucket_name"));
    let mut spoofed = Harness::request("spoofed", &[]);
    spoofed.display_name = "Acme \u{202E}gnp.exe".into();
    cases.push((spoofed, "display_name.bidi_control"));
    let mut zero_width = Harness::request("zerowidth", &[]);
    zero_width.admin.as_mut().context("admin")?.first_name = "A\u{200B}da".into();
    cases.push((zero_width, "admin.first_name.format_character"));
    let mut bom = Harness::request("bom", &[]);
    bom.admin.as_mut().context("admin")?.last_name = "\u{FEFF}L".into();
    cases.push((bom, "admin.last_name.format_character"));
    cases.push((Harness::request("badlabel", &[("script s2", "ok")]), "labels.key"));
    cases.push((Harness::request("bidilabel", &[("note", "a\u{2067}b")]), "labels.value.bidi_control"));
    for (i, (request, _)) in cases.iter().enumerate() {
        h.publish(request, &format!("bad-{i}")).await?;
    }
    // Keys that break the key rule cannot be a subject token: their
    // requests and rejections travel under `_invalid`.
    let invalid: HashMap<String, String> =
        rejections(&h, "_invalid", 2).await?.into_iter().map(|(_, r)| (r.key, r.rule)).collect();
    for (request, rule) in &cases {
        let found = match TenantKey::parse(&request.key) {
            Ok(_) => rejections(&h, &request.key, 1).await?.remove(0).1.rule,
            Err(_) => invalid.get(&request.key).cloned().unwrap_or_default(),
        };
        assert_eq!(found, *rule, "{:?}", request.key);
    }
    assert_eq!(made(&h).await?, (0, 0), "nothing was created");

    let mut composed = Harness::request("composed", &[("team", "Re\u{0301}seau")]);
    composed.display_name = "  Cafe\u{0301} Crème ".into();
    composed.admin.as_mut().context("admin")?.first_name = "Zoe\u{0308}".into();
    h.publish(&composed, "composed").await?;
    h.events_until("composed", &[EventKind::Activated]).await?;
    let (name, first, labels): (String, String, sqlx::types::Json<HashMap<String, String>>) =
        sqlx::query_as("SELECT display_name, admin_first_name, labels FROM tenants WHERE key = 'composed'")
            .fetch_one(&h.pool)
            .await?;
    assert_eq!((name.as_str(), first.as_str(), labels.0["team"].as_str()), ("Café Crème", "Zoë", "Réseau"));
    Ok(())
}

/// Item 4: a domain belongs to one live tenant at a time. A second tenant
/// listing it is rejected with `tenant.domain_taken` and gets nothing; once
/// the holder has FAILED, the domain is free again.
#[tokio::test]
async fn a_domain_belongs_to_one_live_tenant() -> Result<()> {
    let h = Harness::new().await?;
    let shared = "demo.test".to_owned();
    let mut first = Harness::request("first", &[("script.s2", "permanent")]);
    first.domains = vec![shared.clone()];
    h.publish(&first, "first").await?;
    h.events_until("first", &[EventKind::Accepted]).await?;
    let mut second = Harness::request("second", &[]);
    second.domains = vec!["second.test".into(), shared.clone()];
    h.publish(&second, "second").await?;
    let seen = rejections(&h, "second", 1).await?;
    assert_eq!(seen[0].1.rule, "tenant.domain_taken");
    assert!(seen[0].1.reason.contains("demo.test") && !seen[0].1.reason.contains("first"), "{}", seen[0].1.reason);
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE key = 'second'").fetch_one(&h.pool).await?;
    assert_eq!(made, 0);
    // The first fails (its s2 is scripted to) and lets go of the domain.
    h.events_until("first", &[EventKind::ProvisioningFailed]).await?;
    let mut third = Harness::request("third", &[]);
    third.domains = vec![shared];
    h.publish(&third, "third").await?;
    h.events_until("third", &[EventKind::Activated]).await?;
    Ok(())
}
