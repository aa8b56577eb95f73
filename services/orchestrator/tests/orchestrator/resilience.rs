//! Orchestrator replicas killed at random, sharing the load, and a broker
//! that loses a command or a result: no saga is lost, stranded or applied
//! twice.

use super::*;

#[tokio::test]
async fn the_orchestrator_killed_at_random_moments_during_50_sagas_loses_nothing() -> Result<()> {
    let mut p = Processes::new(1).await?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    println!("chaos seed {seed}");
    let mut random = Lcg(seed);
    let mut expected = HashMap::new();
    for i in 0..50 {
        let key = format!("chaos-{i}");
        let fails = i % 5 == 0;
        let labels: &[(&str, &str)] = if fails { &[("script.s4", "permanent")] } else { &[] };
        p.publish(&Harness::request(&key, labels), &format!("m-{key}")).await?;
        expected.insert(key, if fails { "FAILED" } else { "ACTIVE" });
    }
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50 + random.next(350))).await;
        p.orchestrators[0].kill();
        p.orchestrators[0] = p.start_orchestrator(0)?;
    }
    p.wait_terminal(50, Duration::from_secs(90)).await?;
    p.check_outcomes(&expected).await
}

#[tokio::test]
async fn two_replicas_share_the_load_and_never_apply_a_result_twice() -> Result<()> {
    // Small pulls, so that neither replica takes everything in one batch.
    let p = Processes::with(2, &[("LANDLORD_MAX_IN_FLIGHT", "2")]).await?;
    let mut expected = HashMap::new();
    for i in 0..30 {
        let key = format!("pair-{i}");
        p.publish(&Harness::request(&key, &[]), &format!("m-{key}")).await?;
        expected.insert(key, "ACTIVE");
    }
    p.wait_terminal(30, WAIT).await?;
    p.check_outcomes(&expected).await?;
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_steps WHERE attempts <> 1").fetch_one(&p.pool).await?;
    assert_eq!(attempts, 0, "no step ran twice");
    for port in &p.ports {
        let (_, metrics) = tokio::task::spawn_blocking({
            let port = *port;
            move || landlord_testkit::http_get(port, "/metrics")
        })
        .await?
        .context("metrics")?;
        let handled: u64 = metrics
            .lines()
            .find(|l| {
                l.starts_with(r#"landlord_messages_handled_total{consumer="orchestrator-results",outcome="ack"}"#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(handled > 0, "replica on port {port} applied results:\n{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn a_command_or_result_lost_by_the_broker_delays_a_saga_but_never_strands_it() -> Result<()> {
    let mut p = Processes::new(1).await?;
    let commands = p.broker.jetstream.get_stream(p.namespace.stream_name(StreamKind::Commands)).await?;
    let results = p.broker.jetstream.get_stream(p.namespace.stream_name(StreamKind::Results)).await?;

    // A lost command: with the worker down, s1's command vanishes from the
    // stream before anyone reads it.
    p.worker.kill();
    p.publish(&Harness::request("lost-command", &[]), "m-lost-command").await?;
    let s1 = p.namespace.command_subject("work", "create_s1");
    let seq = eventually("s1's command in the stream", WAIT, || async {
        commands.get_last_raw_message_by_subject(&s1).await.ok().map(|m| m.sequence)
    })
    .await?;
    assert!(commands.delete_message(seq).await?, "the command was deleted");
    p.restart_worker()?;
    p.wait_terminal(1, WAIT).await?;

    // A lost result: the orchestrator is down when s1's answer comes, and
    // the answer vanishes before it is back.
    p.publish(&Harness::request("lost-result", &[("script.s1", "sleep:1000")]), "m-lost-result").await?;
    eventually("s1 of lost-result to be running", WAIT, || async {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT st.state FROM saga_steps st JOIN sagas s ON s.id = st.saga_id JOIN tenants t ON t.id = s.tenant_id
             WHERE t.key = 'lost-result' AND st.name = 's1'",
        )
        .fetch_optional(&p.pool)
        .await
        .ok()?;
        (state.as_deref() == Some("running")).then_some(())
    })
    .await?;
    p.orchestrators[0].kill();
    let s1_result = p.namespace.result_subject("work", "create_s1");
    let seq = eventually("s1's result in the stream", WAIT, || async {
        results.get_last_raw_message_by_subject(&s1_result).await.ok().map(|m| m.sequence)
    })
    .await?;
    assert!(results.delete_message(seq).await?, "the result was deleted");
    p.orchestrators[0] = p.start_orchestrator(0)?;

    p.wait_terminal(2, WAIT).await?;
    p.check_outcomes(&HashMap::from([("lost-command".to_owned(), "ACTIVE"), ("lost-result".to_owned(), "ACTIVE")]))
        .await
}

/// The purge timer is a query on `tenants.purge_at`, not a schedule held in
/// memory: a grace period that ends while no orchestrator runs is purged
/// when one starts.
#[tokio::test]
async fn a_grace_period_that_ends_while_the_orchestrator_is_down_is_purged_when_it_is_back() -> Result<()> {
    let mut p = Processes::with(1, &[("LANDLORD_PURGE_INTERVAL", "200ms")]).await?;
    p.publish(&Harness::request("overdue", &[]), "m-overdue").await?;
    p.wait_terminal(1, WAIT).await?;
    p.orchestrators[0].kill();
    // Offboarded (export waived), its grace period over while nothing runs.
    sqlx::query(
        "UPDATE tenants SET status = 'DELETION_SCHEDULED', purge_at = now() - interval '1 minute', export_waived = true
         WHERE key = 'overdue'",
    )
    .execute(&p.pool)
    .await?;
    p.orchestrators[0] = p.start_orchestrator(0)?;
    eventually("overdue to be purged", WAIT, || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenants WHERE key = 'overdue'").fetch_one(&p.pool).await.ok()?;
        (status == "DELETED").then_some(())
    })
    .await?;
    let (by, live): (Option<String>, i64) = sqlx::query_as(
        "SELECT deleted_by, (SELECT count(*) FROM resources r WHERE r.tenant_id = t.id AND r.deleted_at IS NULL)
         FROM tenants t WHERE key = 'overdue'",
    )
    .fetch_one(&p.pool)
    .await?;
    assert_eq!((by.as_deref(), live), (Some("landlord"), 0));
    Ok(())
}
