//! `just bench-bus`: command → handler → result round trips through the
//! runtime, next to the same round trip written directly against
//! async-nats (the floor), on a broker with its default fsync policy and on
//! one that syncs every message. 1,000 round trips at one in flight and
//! 10,000 at 256 by default, 2,000 and 20,000 with `BENCH_FULL=1`. Writes
//! bench/results/bus.{json,md}.
//!
//! Both sides share the client: it publishes a StepCommand with a message
//! id and reads StepResults from a pull consumer. Only the worker differs:
//! the runtime's message loop and StepWorker, or a bare loop that decodes,
//! publishes the result and acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use landlord_contract::{Namespace, StreamKind, header, pb};
use landlord_runtime::{Config, DeliveryInfo, Env, Service, StepFailure, StepService, StepWorker, Telemetry};
use landlord_testkit::bench::{Run, command_output, machine, write_results};
use landlord_testkit::{NatsServer, unique_namespace};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Round trips at one in flight and at [`IN_FLIGHT`]: the default run's,
/// and `BENCH_FULL=1`'s.
const LATENCY_ROUNDS: (usize, usize) = (1_000, 2_000);
const THROUGHPUT_ROUNDS: (usize, usize) = (10_000, 20_000);

/// This run's round trips, one at a time and many in flight.
#[derive(Debug, Clone, Copy)]
struct Rounds {
    latency: usize,
    throughput: usize,
}
const IN_FLIGHT: usize = 256;

struct Instantly;

impl StepService for Instantly {
    type Action = String;

    async fn execute(
        &self,
        _: String,
        _: &pb::TenantSpec,
        _: &pb::StepCommand,
        _: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        Ok(pb::StepOk::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Runtime,
    Floor,
}

#[derive(Debug, serde::Serialize)]
struct Measurement {
    p50_ms: f64,
    p99_ms: f64,
    throughput_per_s: f64,
}

fn command(i: usize) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{i}"),
        step: "bench".into(),
        attempt: 1,
        tenant: Some(pb::TenantSpec { tenant_id: "t".into(), key: "bench".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn command_headers(id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_MSG_ID, id);
    headers.insert(header::SPEC_VERSION, "1.0");
    headers.insert(header::ID, id);
    headers.insert(header::TYPE, "landlord.v1.StepCommand");
    headers.insert(header::SOURCE, "landlord/bench");
    headers.insert(header::TIME, "2026-11-23T00:00:00Z");
    headers
}

/// Starts the worker side; returns a token that stops it.
async fn start_worker(side: Side, url: &str, namespace: &Namespace) -> Result<CancellationToken> {
    let env = Env::from_pairs([
        ("LANDLORD_NATS_URL", url.to_owned()),
        ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
        ("LANDLORD_MAX_IN_FLIGHT", IN_FLIGHT.to_string()),
    ]);
    let config = Config::from("bench", &env)?;
    let stop = CancellationToken::new();
    match side {
        Side::Runtime => {
            let mut service = Service::build(config).await?;
            let subjects = vec![namespace.service_commands("bench")];
            let worker = StepWorker::new(Instantly, service.publisher.clone());
            service.consume(StreamKind::Commands, "bench", subjects, worker).await?;
            let token = service.shutdown_token();
            tokio::spawn(service.run());
            Ok(token)
        }
        Side::Floor => {
            let client = async_nats::connect(url).await?;
            let js = jetstream::new(client);
            let consumer: consumer::PullConsumer = js
                .create_consumer_on_stream(
                    consumer::pull::Config {
                        durable_name: Some("bench".into()),
                        filter_subject: namespace.service_commands("bench"),
                        ack_policy: consumer::AckPolicy::Explicit,
                        max_ack_pending: (IN_FLIGHT * 4) as i64,
                        ..Default::default()
                    },
                    namespace.stream_name(StreamKind::Commands),
                )
                .await?;
            let mut messages = consumer.stream().max_messages_per_batch(IN_FLIGHT).messages().await?;
            let result_subject = namespace.result_subject("bench", "run");
            let token = stop.clone();
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        () = token.cancelled() => break,
                        next = messages.next() => match next { Some(Ok(m)) => m, _ => continue },
                    };
                    let js = js.clone();
                    let subject = result_subject.clone();
                    tokio::spawn(async move {
                        let Ok(command) = pb::StepCommand::decode(message.payload.clone()) else { return };
                        let id = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(header::ID))
                            .map(|v| format!("{}.result", v.as_str()))
                            .unwrap_or_default();
                        let result = pb::StepResult {
                            saga_id: command.saga_id,
                            step: command.step,
                            attempt: command.attempt,
                            command_id: id.clone(),
                            outcome: Some(pb::step_result::Outcome::Ok(pb::StepOk::default())),
                            ..Default::default()
                        };
                        let mut headers = command_headers(&id);
                        headers.insert(header::TYPE, "landlord.v1.StepResult");
                        if let Ok(ack) =
                            js.publish_with_headers(subject, headers, Bytes::from(result.encode_to_vec())).await
                            && ack.await.is_ok()
                        {
                            let _ = message.ack().await;
                        }
                    });
                }
            });
            Ok(stop)
        }
    }
}

/// The client: sends `rounds` commands keeping `in_flight` outstanding and
/// times each round trip.
async fn drive(
    url: &str,
    namespace: &Namespace,
    run: &str,
    rounds: usize,
    in_flight: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let results: consumer::PullConsumer = js
        .create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some(format!("client-{run}")),
                filter_subject: namespace.result_subject("bench", "run"),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: -1,
                ..Default::default()
            },
            namespace.stream_name(StreamKind::Results),
        )
        .await?;
    let mut stream = results.stream().max_messages_per_batch(in_flight.max(16)).messages().await?;
    let permits = Arc::new(Semaphore::new(in_flight));
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let subject = namespace.command_subject("bench", "run");
    let sender = {
        let (js, permits, sent, run) = (js.clone(), permits.clone(), sent.clone(), run.to_owned());
        tokio::spawn(async move {
            for i in 0..rounds {
                let permit = permits.acquire().await.context("semaphore")?;
                permit.forget();
                let id = format!("{run}-{i}");
                sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(format!("{id}.result"), Instant::now());
                let ack = js
                    .publish_with_headers(
                        subject.clone(),
                        command_headers(&id),
                        Bytes::from(command(i).encode_to_vec()),
                    )
                    .await?;
                // Await the publish ack off the send path, as callers with many in flight do.
                tokio::spawn(async move { ack.await });
            }
            anyhow::Ok(())
        })
    };
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(rounds);
    while latencies.len() < rounds {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("no result within 30s")?
            .context("result stream ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let id =
            message.headers.as_ref().and_then(|h| h.get(header::ID)).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let _ = message.ack().await;
        if let Some(at) = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.remove(&id) {
            latencies.push(at.elapsed());
            permits.add_permits(1);
        }
    }
    let elapsed = started.elapsed();
    sender.await??;
    // Work-queue streams allow one consumer per subject: make room for the next run.
    js.delete_consumer_from_stream(format!("client-{run}"), namespace.stream_name(StreamKind::Results)).await?;
    Ok((latencies, elapsed))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn measure(side: Side, server: &NatsServer, rounds: Rounds) -> Result<(Measurement, Measurement)> {
    let namespace = unique_namespace();
    let broker = landlord_runtime::Broker::connect(&server.url(), "bench", namespace.clone()).await?;
    let settings = Config::from("bench", &Env::from_pairs::<&str, &str>([]))?.streams;
    broker.declare_streams(&settings).await?;
    let stop = start_worker(side, &server.url(), &namespace).await?;
    // Warm up connections and consumers.
    drive(&server.url(), &namespace, "warm", 200, 16).await?;
    let (mut serial, elapsed) = drive(&server.url(), &namespace, "serial", rounds.latency, 1).await?;
    serial.sort();
    let one = Measurement {
        p50_ms: percentile(&serial, 0.50),
        p99_ms: percentile(&serial, 0.99),
        throughput_per_s: rounds.latency as f64 / elapsed.as_secs_f64(),
    };
    let (mut parallel, elapsed) = drive(&server.url(), &namespace, "parallel", rounds.throughput, IN_FLIGHT).await?;
    parallel.sort();
    let many = Measurement {
        p50_ms: percentile(&parallel, 0.50),
        p99_ms: percentile(&parallel, 0.99),
        throughput_per_s: rounds.throughput as f64 / elapsed.as_secs_f64(),
    };
    stop.cancel();
    Ok((one, many))
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let rounds = Rounds {
        latency: run.size("BENCH_LATENCY_ROUNDS", LATENCY_ROUNDS.0, LATENCY_ROUNDS.1),
        throughput: run.size("BENCH_THROUGHPUT_ROUNDS", THROUGHPUT_ROUNDS.0, THROUGHPUT_ROUNDS.1),
    };
    // `just bench-bus` sets RUST_LOG=warn: few log lines, spans still
    // traced, as a production service runs.
    let telemetry =
        if std::env::var_os("BENCH_NO_TELEMETRY").is_some() { None } else { Some(Telemetry::init("bench-bus", None)?) };
    let dir = landlord_testkit::scratch_dir("bench")?;
    let always = dir.join("sync-always.conf");
    std::fs::write(&always, "jetstream { sync_interval: always }\n")?;
    let policies = [
        ("default (sync_interval 2m)", vec![]),
        ("sync_interval always", vec!["-c".to_owned(), always.display().to_string()]),
    ];
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for (policy, args) in &policies {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = NatsServer::start_with(&args).await?;
        let (floor_one, floor_many) = measure(Side::Floor, &server, rounds).await?;
        let (rt_one, rt_many) = measure(Side::Runtime, &server, rounds).await?;
        let throughput_ratio = rt_many.throughput_per_s / floor_many.throughput_per_s;
        let p99_ratio = rt_one.p99_ms / floor_one.p99_ms;
        eprintln!("{policy}: runtime {rt_one:?} / {rt_many:?}; floor {floor_one:?} / {floor_many:?}");
        rows.push(format!(
            "| {policy} | {:.3} / {:.3} | {:.3} / {:.3} | {:.2} | {:.0} | {:.0} | {:.2} |",
            rt_one.p50_ms,
            rt_one.p99_ms,
            floor_one.p50_ms,
            floor_one.p99_ms,
            p99_ratio,
            rt_many.throughput_per_s,
            floor_many.throughput_per_s,
            throughput_ratio
        ));
        json.push(serde_json::json!({
            "fsync_policy": policy,
            "runtime": { "one_in_flight": rt_one, "in_flight_256": rt_many },
            "floor": { "one_in_flight": floor_one, "in_flight_256": floor_many },
            "ratio": { "p99_at_1_runtime_over_floor": p99_ratio, "throughput_at_256_runtime_over_floor": throughput_ratio },
        }));
    }
    let versions = serde_json::json!({
        "nats_server": command_output(&landlord_testkit::nats_server_binary()?.display().to_string(), &["--version"]),
        "rustc": command_output("rustc", &["--version"]),
        "async_nats": "0.51",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    let report = serde_json::json!({
        "benchmark": "bus",
        "rounds": { "latency": rounds.latency, "throughput": rounds.throughput, "in_flight": IN_FLIGHT },
        "goal": "runtime throughput at 256 in flight >= 0.7x floor; runtime p99 at 1 in flight <= 1.5x floor",
        "machine": machine(),
        "versions": versions,
        "results": json,
    });
    let md = format!(
        "# bench-bus\n\nCommand → handler → result round trips: the runtime against the same round trip written directly on async-nats (floor), {} rounds at 1 in flight, {} at {IN_FLIGHT} in flight.\n\nMachine: {}\n\nVersions: {}\n\n| broker fsync | runtime p50 / p99 ms @1 | floor p50 / p99 ms @1 | p99 ratio (goal ≤ 1.5) | runtime rt/s @{IN_FLIGHT} | floor rt/s @{IN_FLIGHT} | throughput ratio (goal ≥ 0.7) |\n|---|---|---|---|---|---|---|\n{}\n",
        rounds.latency,
        rounds.throughput,
        report["machine"],
        report["versions"],
        rows.join("\n")
    );
    write_results("bus", report, &md, &run)?;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
