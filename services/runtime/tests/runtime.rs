//! The runtime against a real nats-server (one per test binary; each test
//! has its own namespace) and scripted workers running as separate
//! processes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use landlord_contract::{CeType, Namespace, StreamKind, header, pb};
use landlord_runtime::config::StreamSettings;
use landlord_runtime::{Broker, Config, Env, Envelope, Publisher, Service};
use landlord_testkit::{
    NatsServer, OtlpReceiver, Postgres, Process, eventually, free_port, http_get, scratch_dir, unique_namespace,
    workspace_binary,
};
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(20);

fn stream_settings() -> StreamSettings {
    StreamSettings {
        replicas: 1,
        events_max_age: Duration::from_secs(3600),
        dead_letter_max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(120),
    }
}

/// One test's namespace, broker connection and worker processes.
struct Harness {
    url: String,
    namespace: Namespace,
    broker: Broker,
    publisher: Publisher,
    logs: PathBuf,
}

impl Harness {
    async fn new() -> Result<Self> {
        let url = NatsServer::shared().await.url();
        let namespace = unique_namespace();
        let broker = Broker::connect(&url, "runtime-test", namespace.clone()).await?;
        broker.declare_streams(&stream_settings()).await?;
        Ok(Self {
            publisher: Publisher::new(&broker, "runtime-test"),
            url,
            namespace,
            broker,
            logs: scratch_dir("logs")?,
        })
    }

    /// Starts the scripted worker serving `service`, with extra variables.
    fn worker(&self, service: &str, extra: &[(&str, &str)]) -> Result<Process> {
        let mut env = vec![
            ("LANDLORD_NATS_URL".to_owned(), self.url.clone()),
            ("LANDLORD_NAMESPACE".to_owned(), self.namespace.root().to_owned()),
            ("LANDLORD_WORKER_SERVICE".to_owned(), service.to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Process::start(service, &workspace_binary("scripted-worker")?, &[], &env, &self.logs)
    }

    fn command(&self, step: &str, script: &str) -> pb::StepCommand {
        pb::StepCommand {
            saga_id: format!("saga-{step}"),
            step: step.to_owned(),
            attempt: 1,
            tenant: Some(pb::TenantSpec { tenant_id: "tenant-1".into(), key: "acme".into(), ..Default::default() }),
            params: [("script".to_owned(), script.to_owned())].into(),
            ..Default::default()
        }
    }

    fn envelope(command: &pb::StepCommand) -> Envelope {
        Envelope::new(format!("cmd-{}", command.step)).tenant("acme").correlation(command.saga_id.clone())
    }

    async fn send(&self, service: &str, command: &pb::StepCommand) -> Result<()> {
        let subject = self.namespace.command_subject(service, "do_it");
        self.publisher.publish(subject, command, &Self::envelope(command)).await?;
        Ok(())
    }

    /// A pull stream over one of this namespace's streams.
    async fn reader(&self, kind: StreamKind) -> Result<consumer::pull::Stream> {
        let stream = self.broker.jetstream.get_stream(self.namespace.stream_name(kind)).await?;
        let consumer = stream
            .create_consumer(consumer::pull::Config { ack_policy: consumer::AckPolicy::Explicit, ..Default::default() })
            .await?;
        Ok(consumer.messages().await?)
    }

    async fn commands_left(&self) -> Result<u64> {
        let mut stream = self.broker.jetstream.get_stream(self.namespace.stream_name(StreamKind::Commands)).await?;
        Ok(stream.info().await?.state.messages)
    }
}

async fn next(messages: &mut consumer::pull::Stream, what: &str) -> Result<jetstream::Message> {
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .with_context(|| format!("no {what} within {WAIT:?}"))?
        .with_context(|| format!("stream of {what} ended"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(message)
}

async fn next_result(messages: &mut consumer::pull::Stream) -> Result<(pb::StepResult, async_nats::HeaderMap)> {
    let message = next(messages, "result").await?;
    let result = pb::StepResult::decode(message.payload.clone())?;
    Ok((result, message.headers.clone().unwrap_or_default()))
}

fn head<'a>(headers: &'a async_nats::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.as_str())
}

fn outcome(result: &pb::StepResult) -> &pb::step_result::Outcome {
    result.outcome.as_ref().unwrap_or_else(|| panic!("result without outcome: {result:?}"))
}

fn delivered(result: &pb::StepResult) -> String {
    match outcome(result) {
        pb::step_result::Outcome::Ok(ok) => ok.outputs.get("delivered").cloned().unwrap_or_default(),
        other => panic!("expected ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_reaches_a_worker_process_and_its_result_comes_back_with_headers_and_trace() -> Result<()> {
    let h = Harness::new().await?;
    let port = free_port();
    let _worker = h.worker("alpha", &[("LANDLORD_HTTP_ADDR", &format!("127.0.0.1:{port}"))])?;
    let mut results = h.reader(StreamKind::Results).await?;

    let command = h.command("round-trip", "ok");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = h.publisher.headers::<pb::StepCommand>(&Harness::envelope(&command));
    headers.insert(header::TRACEPARENT, format!("00-{trace_id}-00f067aa0ba902b7-01").as_str());
    let subject = h.namespace.command_subject("alpha", "create_thing");
    h.publisher.publish_raw(subject, headers, Bytes::from(command.encode_to_vec())).await?;

    let (result, headers) = next_result(&mut results).await?;
    assert_eq!(result.saga_id, "saga-round-trip");
    assert_eq!(result.command_id, "cmd-round-trip");
    let pb::step_result::Outcome::Ok(ok) = outcome(&result) else {
        bail!("expected ok: {result:?}");
    };
    assert_eq!(ok.resources[0].kind, "scripted.create_thing");
    assert_eq!(ok.resources[0].external_id, "acme-round-trip");

    assert_eq!(head(&headers, header::SPEC_VERSION), "1.0");
    assert_eq!(head(&headers, header::TYPE), pb::StepResult::CE_TYPE);
    assert_eq!(head(&headers, header::SOURCE), "landlord/alpha");
    assert_eq!(head(&headers, header::SUBJECT), "acme");
    assert_eq!(head(&headers, header::CORRELATION_ID), "saga-round-trip");
    assert_eq!(head(&headers, header::ID), "cmd-round-trip.result");
    assert_eq!(head(&headers, header::NATS_MSG_ID), head(&headers, header::ID));
    assert!(
        time::OffsetDateTime::parse(head(&headers, header::TIME), &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "ce-time {:?}",
        head(&headers, header::TIME)
    );
    assert_eq!(
        head(&headers, header::TRACEPARENT),
        format!("00-{trace_id}-00f067aa0ba902b7-01"),
        "without an exporter the worker hands the trace context through"
    );

    eventually("the handled message in the worker's metrics", WAIT, || async {
        let (_, body) = http_get(port, "/metrics")?;
        let expected = [
            r#"landlord_messages_handled_total{consumer="alpha",outcome="ack"} 1"#,
            r#"landlord_handler_duration_seconds_count{consumer="alpha"} 1"#,
        ];
        expected.iter().all(|line| body.contains(line)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_retryable_error_is_redelivered_with_backoff_then_succeeds() -> Result<()> {
    let h = Harness::new().await?;
    let _worker = h.worker("beta", &[("LANDLORD_BACKOFF", "300ms,600ms")])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let started = Instant::now();
    h.send("beta", &h.command("flaky", "retry-then-ok:2")).await?;
    let (result, _) = next_result(&mut results).await?;
    let took = started.elapsed();
    assert_eq!(delivered(&result), "3", "two retryable failures, success on the third delivery");
    assert!(took >= Duration::from_millis(900), "backoff 300ms + 600ms was honoured, took {took:?}");
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_before_acking_gets_the_message_again_after_restart() -> Result<()> {
    let h = Harness::new().await?;
    let settings = [("LANDLORD_ACK_WAIT", "1s")];
    let mut worker = h.worker("gamma", &settings)?;
    let mut results = h.reader(StreamKind::Results).await?;
    h.send("gamma", &h.command("crashy", "crash-once")).await?;
    let status = worker.wait_exit(WAIT).await?;
    assert_eq!(status.code(), Some(3), "the worker died mid-message");

    let _restarted = h.worker("gamma", &settings)?;
    let (result, _) = next_result(&mut results).await?;
    assert_eq!(delivered(&result), "2", "redelivered after the restart");
    eventually("the command to be acked", WAIT, || async { (h.commands_left().await.ok()? == 0).then_some(()) })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_with_its_reason_and_the_consumer_goes_on() -> Result<()> {
    let h = Harness::new().await?;
    let _worker = h.worker("delta", &[("LANDLORD_MAX_IN_FLIGHT", "1")])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let mut dead = h.reader(StreamKind::DeadLetter).await?;
    h.send("delta", &h.command("doomed", "permanent")).await?;
    h.send("delta", &h.command("after", "ok")).await?;

    let (first, _) = next_result(&mut results).await?;
    let pb::step_result::Outcome::Permanent(error) = outcome(&first) else {
        bail!("expected a permanent error: {first:?}");
    };
    assert_eq!(error.code, "scripted");
    assert!(!error.retryable);
    let (second, _) = next_result(&mut results).await?;
    assert_eq!(delivered(&second), "1", "the next command is handled normally");

    let letter = next(&mut dead, "dead letter").await?;
    let headers = letter.headers.clone().unwrap_or_default();
    assert_eq!(
        letter.subject.as_str(),
        h.namespace.dead_letter_subject(&h.namespace.command_subject("delta", "do_it"))
    );
    assert_eq!(head(&headers, header::DLQ_REASON), "permanent error: scripted: scripted permanent failure");
    assert_eq!(head(&headers, header::DLQ_DELIVERIES), "1");
    assert_eq!(head(&headers, header::ID), "cmd-doomed", "the original headers are kept");
    assert_eq!(pb::StepCommand::decode(letter.payload.clone())?.step, "doomed");
    Ok(())
}

#[tokio::test]
async fn a_message_past_max_deliveries_is_dead_lettered_and_the_consumer_goes_on() -> Result<()> {
    let h = Harness::new().await?;
    let _worker = h.worker("epsilon", &[("LANDLORD_MAX_DELIVER", "3"), ("LANDLORD_BACKOFF", "50ms")])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let mut dead = h.reader(StreamKind::DeadLetter).await?;
    h.send("epsilon", &h.command("hopeless", "retryable")).await?;
    h.send("epsilon", &h.command("fine", "ok")).await?;

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (result, _) = next_result(&mut results).await?;
        seen.push(result);
    }
    let hopeless = seen.iter().find(|r| r.step == "hopeless").context("result of the hopeless command")?;
    assert!(
        matches!(outcome(hopeless), pb::step_result::Outcome::Retryable(e) if e.retryable),
        "the orchestrator hears of the exhausted retries: {hopeless:?}"
    );
    let fine = seen.iter().find(|r| r.step == "fine").context("result of the next command")?;
    assert!(matches!(outcome(fine), pb::step_result::Outcome::Ok(_)));

    let letter = next(&mut dead, "dead letter").await?;
    let headers = letter.headers.clone().unwrap_or_default();
    assert_eq!(head(&headers, header::DLQ_DELIVERIES), "3");
    assert_eq!(
        head(&headers, header::DLQ_REASON),
        "retryable error on each of 3 deliveries, the last: scripted: scripted retryable failure"
    );
    Ok(())
}

#[tokio::test]
async fn a_garbage_payload_is_dead_lettered_with_a_decode_error() -> Result<()> {
    let h = Harness::new().await?;
    let mut worker = h.worker("zeta", &[])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let mut dead = h.reader(StreamKind::DeadLetter).await?;
    let headers = h.publisher.headers::<pb::StepCommand>(&Envelope::new("garbage-1"));
    h.publisher
        .publish_raw(
            h.namespace.command_subject("zeta", "do_it"),
            headers,
            Bytes::from_static(b"\xff\xff\xff\xff not protobuf"),
        )
        .await?;
    h.send("zeta", &h.command("after-garbage", "ok")).await?;

    let letter = next(&mut dead, "dead letter").await?;
    let headers = letter.headers.clone().unwrap_or_default();
    let reason = head(&headers, header::DLQ_REASON);
    assert!(reason.starts_with("permanent error: cannot decode landlord.v1.StepCommand:"), "{reason}");
    assert_eq!(&letter.payload[..4], b"\xff\xff\xff\xff", "the payload is kept as it came");
    let (result, _) = next_result(&mut results).await?;
    assert_eq!(result.step, "after-garbage");
    assert!(worker.try_status().is_none(), "the worker is still running");
    assert!(!worker.output().contains("panicked"));
    Ok(())
}

#[tokio::test]
async fn the_same_message_id_published_twice_is_delivered_once() -> Result<()> {
    let h = Harness::new().await?;
    // One at a time, so results come back in the order commands went out.
    let _worker = h.worker("eta", &[("LANDLORD_MAX_IN_FLIGHT", "1")])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let command = h.command("twice", "ok");
    let subject = h.namespace.command_subject("eta", "do_it");
    let first = h.publisher.publish(subject.clone(), &command, &Harness::envelope(&command)).await?;
    let second = h.publisher.publish(subject, &command, &Harness::envelope(&command)).await?;
    assert!(!first.duplicate);
    assert!(second.duplicate, "the broker recognised the repeat");
    h.send("eta", &h.command("sentinel", "ok")).await?;

    let mut steps = Vec::new();
    loop {
        let (result, _) = next_result(&mut results).await?;
        steps.push(result.step.clone());
        if result.step == "sentinel" {
            break;
        }
    }
    assert_eq!(steps, ["twice", "sentinel"], "worker log:\n{}", _worker.output());
    Ok(())
}

#[tokio::test]
async fn sigterm_mid_message_finishes_and_acks_it_then_exits_zero() -> Result<()> {
    let h = Harness::new().await?;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = h.worker("theta", &[("LANDLORD_HTTP_ADDR", &addr)])?;
    let mut results = h.reader(StreamKind::Results).await?;
    h.send("theta", &h.command("slow", "sleep:1500")).await?;

    eventually("the worker to be mid-message", WAIT, || async {
        let (_, body) = http_get(port, "/metrics")?;
        body.contains(r#"landlord_messages_in_flight{consumer="theta"} 1"#).then_some(())
    })
    .await?;
    worker.signal(libc_sigterm());
    let status = worker.wait_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "clean exit; log:\n{}", worker.output());

    let (result, _) = next_result(&mut results).await?;
    assert_eq!(result.step, "slow");
    assert_eq!(delivered(&result), "1", "finished by the process that got SIGTERM");
    eventually("the command to be acked", WAIT, || async { (h.commands_left().await.ok()? == 0).then_some(()) })
        .await?;
    Ok(())
}

fn libc_sigterm() -> i32 {
    15
}

#[tokio::test]
async fn a_missing_or_malformed_variable_stops_start_up_naming_it() -> Result<()> {
    let h = Harness::new().await?;
    let mut bad = h.worker("iota", &[("LANDLORD_MAX_DELIVER", "plenty")])?;
    let status = bad.wait_exit(WAIT).await?;
    assert!(!status.success());
    assert!(
        bad.output().contains(r#"LANDLORD_MAX_DELIVER="plenty" is invalid: expected a whole number"#),
        "{}",
        bad.output()
    );

    let mut bad = h.worker("kappa", &[("LANDLORD_ACK_WAIT", "a while")])?;
    assert!(!bad.wait_exit(WAIT).await?.success());
    assert!(bad.output().contains(r#"LANDLORD_ACK_WAIT="a while" is invalid"#), "{}", bad.output());

    let mut missing = Process::start(
        "no-service",
        &workspace_binary("scripted-worker")?,
        &[],
        &[("LANDLORD_NATS_URL".to_owned(), h.url.clone())],
        &h.logs,
    )?;
    assert!(!missing.wait_exit(WAIT).await?.success());
    assert!(missing.output().contains("LANDLORD_WORKER_SERVICE is required"), "{}", missing.output());
    Ok(())
}

#[tokio::test]
async fn readiness_reports_broker_and_database_and_metrics_are_served() -> Result<()> {
    let h = Harness::new().await?;
    let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
    let env = |db: String| {
        Env::from_pairs([
            ("LANDLORD_NATS_URL", h.url.clone()),
            ("LANDLORD_NAMESPACE", h.namespace.root().to_owned()),
            ("LANDLORD_DATABASE_URL", db),
        ])
    };
    let service = Service::build(Config::from("ready-check", &env(database.url.clone()))?).await?;
    let port = service.http_addr().port();
    // Not ready until `run` starts: consumers and routes come after `build`.
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await?.context("readyz")?;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!((&body["running"], &body["broker"], &body["database"]), (&false.into(), &"ok".into(), &"ok".into()));
    let token = service.shutdown_token();
    let running = tokio::spawn(service.run());
    let body = eventually("ready once running", Duration::from_secs(10), || async move {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await.ok()??;
        (status == 200).then_some(body)
    })
    .await?;
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["running"], true);
    let (status, _) = tokio::task::spawn_blocking(move || http_get(port, "/livez")).await?.context("livez")?;
    assert_eq!(status, 200);
    let (status, metrics) =
        tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await?.context("metrics")?;
    assert_eq!(status, 200);
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text: {metrics}");
    token.cancel();
    running.await??;

    // A database that does not answer makes the service not ready, and says why.
    let closed = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let service = Service::build(Config::from("ready-check", &env(closed))?).await?;
    let port = service.http_addr().port();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await?.context("readyz")?;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["broker"], "ok");
    assert!(body["database"].as_str().unwrap_or("").starts_with("unreachable"), "{body}");
    Ok(())
}

#[tokio::test]
async fn readiness_checks_a_service_adds_are_shown_by_name_and_gate_readiness() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use landlord_runtime::health::ReadinessCheck;

    let h = Harness::new().await?;
    let env =
        Env::from_pairs([("LANDLORD_NATS_URL", h.url.clone()), ("LANDLORD_NAMESPACE", h.namespace.root().to_owned())]);
    let service = Service::build(Config::from("ready-extra", &env)?).await?;
    let port = service.http_addr().port();
    let readyz = move || async move {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await?.context("readyz")?;
        anyhow::Ok((status, serde_json::from_str::<serde_json::Value>(&body)?))
    };
    let checks = service.readiness_checks();
    let token = service.shutdown_token();
    let running = tokio::spawn(service.run());
    let body = eventually("ready once running", Duration::from_secs(10), || async move {
        readyz().await.ok().and_then(|(status, body)| (status == 200).then_some(body))
    })
    .await?;
    assert_eq!(body["checks"], serde_json::json!({}), "{body}");

    // Added after the endpoint is up, as a service adds its own dependencies.
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    checks.add(ReadinessCheck::new("cache", move || {
        let up = flag.load(Ordering::SeqCst);
        async move { if up { Ok(()) } else { Err("cache says no".to_owned()) } }
    }));
    let tenants = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
    checks.add(ReadinessCheck::postgres("tenant_data", sqlx::PgPool::connect_lazy(&tenants.url)?));
    let (status, body) = readyz().await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"], serde_json::json!({"cache": "ok", "tenant_data": "ok"}));
    assert_eq!(body["database"], "not used");

    healthy.store(false, Ordering::SeqCst);
    let (status, body) = readyz().await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["checks"]["cache"], "unreachable: cache says no");
    assert_eq!(body["checks"]["tenant_data"], "ok");

    // A check of the same name replaces it; one that hangs fails after 2 s.
    checks.add(ReadinessCheck::new("cache", || async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }));
    let asked = Instant::now();
    let (status, body) = readyz().await?;
    assert!(asked.elapsed() < Duration::from_secs(5), "the probe is bounded: {:?}", asked.elapsed());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["cache"], "unreachable: no answer within 2s");
    assert_eq!(body["checks"].as_object().map(serde_json::Map::len), Some(2), "{body}");

    // A PostgreSQL that does not answer.
    let closed = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    checks.add(ReadinessCheck::new("cache", || async { Ok(()) }));
    checks.add(ReadinessCheck::postgres("tenant_data", sqlx::PgPool::connect_lazy(&closed)?));
    let (status, body) = readyz().await?;
    assert_eq!(status, 503, "{body}");
    assert!(body["checks"]["tenant_data"].as_str().unwrap_or("").starts_with("unreachable"), "{body}");
    assert_eq!(body["checks"]["cache"], "ok");

    token.cancel();
    running.await??;
    Ok(())
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_worker_exports_its_span_and_the_trace_continues() -> Result<()> {
    let h = Harness::new().await?;
    let collector = OtlpReceiver::start()?;
    let endpoint = collector.endpoint();
    let mut worker = h.worker("omega", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)])?;
    let mut results = h.reader(StreamKind::Results).await?;
    let command = h.command("traced", "ok");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = h.publisher.headers::<pb::StepCommand>(&Harness::envelope(&command));
    headers.insert(header::TRACEPARENT, format!("00-{trace_id}-b7ad6b7169203331-01").as_str());
    h.publisher
        .publish_raw(h.namespace.command_subject("omega", "do_it"), headers, Bytes::from(command.encode_to_vec()))
        .await?;

    let (_, headers) = next_result(&mut results).await?;
    let traceparent = head(&headers, header::TRACEPARENT);
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "same trace: {traceparent:?}");
    assert!(!traceparent.contains("b7ad6b7169203331"), "under the worker's own span: {traceparent:?}");

    // Shutdown flushes the exporter.
    worker.signal(libc_sigterm());
    assert!(worker.wait_exit(WAIT).await?.success(), "{}", worker.output());
    let trace_bytes: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16)).collect::<Result<_, _>>()?;
    let exported = collector.requests();
    let traces: Vec<_> = exported.iter().filter(|(path, _)| path == "/v1/traces").collect();
    assert!(
        traces.iter().any(|(_, body)| body.windows(16).any(|w| w == trace_bytes.as_slice())
            && body.windows(14).any(|w| w == b"scripted-omega")),
        "a span of trace {trace_id} from service scripted-omega was exported; got {} requests",
        exported.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_message_whose_handler_crashes_on_every_delivery_is_dead_lettered_after_max_deliveries() -> Result<()> {
    let h = Harness::new().await?;
    let settings = [
        ("LANDLORD_MAX_DELIVER", "2"),
        ("LANDLORD_MAX_UNSETTLED", "1"),
        ("LANDLORD_ACK_WAIT", "500ms"),
        ("LANDLORD_MAX_IN_FLIGHT", "1"),
    ];
    let mut dead = h.reader(StreamKind::DeadLetter).await?;
    let mut results = h.reader(StreamKind::Results).await?;
    h.send("lambda", &h.command("poison", "crash")).await?;
    h.send("lambda", &h.command("healthy", "ok")).await?;
    // Each start crashes on the poison message until it has had its
    // deliveries: two for retries, one more for an unsettled delivery.
    for crash in 1..=3 {
        let mut worker = h.worker("lambda", &settings)?;
        let status = worker.wait_exit(WAIT).await?;
        assert_eq!(status.code(), Some(3), "crash {crash}: {}", worker.output());
    }
    let _worker = h.worker("lambda", &settings)?;
    let letter = next(&mut dead, "dead letter").await?;
    let headers = letter.headers.clone().unwrap_or_default();
    assert_eq!(head(&headers, header::ID), "cmd-poison");
    assert_eq!(head(&headers, header::DLQ_DELIVERIES), "4");
    assert!(head(&headers, header::DLQ_REASON).starts_with("not settled after 3 deliveries"), "{headers:?}");
    let (result, _) = next_result(&mut results).await?;
    assert_eq!(result.step, "healthy", "the consumer goes on");
    Ok(())
}

#[tokio::test]
async fn a_handler_working_longer_than_the_ack_wait_is_not_redelivered() -> Result<()> {
    let h = Harness::new().await?;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = h.worker("mu", &[("LANDLORD_ACK_WAIT", "400ms"), ("LANDLORD_HTTP_ADDR", &addr)])?;
    let mut results = h.reader(StreamKind::Results).await?;
    h.send("mu", &h.command("long", "sleep:1500")).await?;
    let (result, _) = next_result(&mut results).await?;
    assert_eq!(delivered(&result), "1");
    let metrics = eventually("the worker to be idle", WAIT, || async {
        let (_, body) = http_get(port, "/metrics")?;
        body.contains(r#"landlord_messages_in_flight{consumer="mu"} 0"#).then_some(body)
    })
    .await?;
    assert!(
        metrics.contains(r#"landlord_messages_handled_total{consumer="mu",outcome="ack"} 1"#),
        "handled exactly once although it took almost four ack waits:\n{metrics}"
    );
    Ok(())
}

/// The value of the sample `series` (name and labels, as encoded) in a
/// `/metrics` body.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_metrics_show_a_consumer_falling_behind_and_the_dead_letters_it_wrote() -> Result<()> {
    let h = Harness::new().await?;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = h.worker(
        "nu",
        &[("LANDLORD_MAX_IN_FLIGHT", "1"), ("LANDLORD_CONSUMER_INFO_INTERVAL", "100ms"), ("LANDLORD_HTTP_ADDR", &addr)],
    )?;
    let metrics = || async move {
        tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await.ok()?.map(|(_, body)| body)
    };
    // Every series of the consumer is there, at zero, before any message.
    let idle = eventually("the worker's consumer in its metrics", WAIT, || async {
        metrics().await.filter(|body| body.contains(r#"landlord_consumer_pending{consumer="nu"}"#))
    })
    .await?;
    assert_eq!(sample(&idle, r#"landlord_dead_letters_total{consumer="nu"}"#), Some(0.0), "{idle}");
    for i in 0..4 {
        h.send("nu", &h.command(&format!("slow{i}"), "sleep:700")).await?;
    }
    h.send("nu", &h.command("doomed", "permanent")).await?;
    // One message at a time, each taking 700 ms: the rest wait in the stream.
    let behind = eventually("a backlog in the consumer's metrics", WAIT, || async {
        let body = metrics().await?;
        sample(&body, r#"landlord_consumer_pending{consumer="nu"}"#).filter(|pending| *pending >= 2.0)
    })
    .await?;
    assert!(behind <= 5.0, "{behind} pending of 5 sent");
    let done = eventually("the backlog worked off and the dead letter counted", WAIT, || async {
        let body = metrics().await?;
        let pending = sample(&body, r#"landlord_consumer_pending{consumer="nu"}"#)?;
        let unacked = sample(&body, r#"landlord_consumer_ack_pending{consumer="nu"}"#)?;
        let dead = sample(&body, r#"landlord_dead_letters_total{consumer="nu"}"#)?;
        (pending == 0.0 && unacked == 0.0 && dead == 1.0).then_some(body)
    })
    .await?;
    assert_eq!(sample(&done, r#"landlord_messages_handled_total{consumer="nu",outcome="ack"}"#), Some(4.0), "{done}");
    assert_eq!(sample(&done, r#"landlord_consumer_redelivered{consumer="nu"}"#), Some(0.0), "{done}");
    assert!(done.contains("# HELP landlord_consumer_pending Messages in the stream not yet delivered"), "{done}");
    Ok(())
}

#[path = "runtime/deploy.rs"]
mod deploy;
#[path = "runtime/permissions.rs"]
mod permissions;
#[path = "runtime/tls.rs"]
mod tls;
