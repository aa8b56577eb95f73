//! Steps as a graph (docs/saga.md, "Steps as a graph"): every step whose
//! prerequisites are done starts in one transition; on a fatal failure or
//! a cancel nothing new starts, the steps in flight are awaited, and the
//! completed steps are compensated in the reverse order of completion,
//! dependents first. Run against the recording worker of the lifecycle
//! tests, which answers commands concurrently.

use time::OffsetDateTime;
use uuid::Uuid;

use super::lifecycle::{Life, last, sent};
use super::*;

/// `standard`: the default provisioning graph's shape (realm → client →
/// admin beside database and storage, the mail after all); `forked`: a
/// root, then `slow` and `quick` side by side (`slow` listed first), then
/// `tail` after both; `old`: a pipeline without `after`.
const PLANS: &str = r#"
[defaults]
timeout = "5s"
max_attempts = 1
backoff = ["50ms"]

[plans.standard]
tier = "bridge"
pipeline = "graph"

[plans.forked]
tier = "bridge"
pipeline = "forked"

[plans.old]
tier = "bridge"
pipeline = "old"

[[pipelines.graph]]
name = "realm"
command = "work.realm"
compensation = "work.undo_realm"
[[pipelines.graph]]
name = "client"
command = "work.client"
compensation = "work.undo_client"
after = ["realm"]
[[pipelines.graph]]
name = "admin"
command = "work.admin"
compensation = "work.undo_admin"
after = ["client"]
[[pipelines.graph]]
name = "database"
command = "work.database"
compensation = "work.undo_database"
[[pipelines.graph]]
name = "storage"
command = "work.storage"
compensation = "work.undo_storage"
[[pipelines.graph]]
name = "welcome"
command = "work.welcome"
fatal = false
after = ["admin", "database", "storage"]

[[pipelines.forked]]
name = "root"
command = "work.root"
compensation = "work.undo_root"
[[pipelines.forked]]
name = "slow"
command = "work.slow"
compensation = "work.undo_slow"
after = ["root"]
[[pipelines.forked]]
name = "quick"
command = "work.quick"
compensation = "work.undo_quick"
after = ["root"]
[[pipelines.forked]]
name = "tail"
command = "work.tail"
compensation = "work.undo_tail"
after = ["slow", "quick"]

[[pipelines.old]]
name = "one"
command = "work.one"
compensation = "work.undo_one"
[[pipelines.old]]
name = "two"
command = "work.two"
compensation = "work.undo_two"
[[pipelines.old]]
name = "three"
command = "work.three"
"#;

/// A step of a saga as stored: name, state, started and finished, its
/// place in the order of completion, its prerequisites.
type Stored = (String, String, Option<OffsetDateTime>, Option<OffsetDateTime>, Option<i32>, Vec<String>);

async fn stored(life: &Life, saga: Uuid) -> Result<Vec<Stored>> {
    Ok(sqlx::query_as(
        "SELECT name, state, started_at, finished_at, completion, after FROM saga_steps WHERE saga_id = $1
         ORDER BY position",
    )
    .bind(saga)
    .fetch_all(&life.pool)
    .await?)
}

fn step<'a>(steps: &'a [Stored], name: &str) -> &'a Stored {
    steps.iter().find(|s| s.0 == name).unwrap_or_else(|| panic!("no step {name}"))
}

/// Provisions `key` on `plan` with script labels; its saga id.
async fn provision(life: &Life, key: &str, plan: &str, labels: &[(&str, &str)]) -> Result<Uuid> {
    let mut request = Harness::request(key, labels);
    request.plan = plan.to_owned();
    let subject = life.namespace.event_subject(&TenantKey::parse(key)?, EventKind::Requested);
    life.publisher.publish(subject, &request, &Envelope::new(format!("m-{key}"))).await?;
    eventually(&format!("the saga of {key}"), WAIT, || async {
        sqlx::query_scalar("SELECT s.id FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE t.key = $1")
            .bind(key)
            .fetch_optional(&life.pool)
            .await
            .ok()
            .flatten()
    })
    .await
}

fn running(progress: &pb::Progress) -> Vec<String> {
    let running = pb::StepState::Running as i32;
    progress.steps.iter().filter(|s| s.state == running).map(|s| s.name.clone()).collect()
}

#[tokio::test]
async fn every_step_whose_prerequisites_are_done_starts_in_one_transition() -> Result<()> {
    let life = Life::with_plans(PLANS).await?;
    let saga = provision(&life, "wide", "standard", &[("script.realm", "sleep:300")]).await?;
    let events = life.saga_events("wide", saga, &[EventKind::Activated, EventKind::ProvisioningFailed]).await?;
    assert_eq!(kinds(&events).last(), Some(&EventKind::Activated), "{:?}", kinds(&events));
    let steps = stored(&life, saga).await?;
    // realm, database and storage started together: one transition, one
    // time.
    let started = |name: &str| step(&steps, name).2.context("started");
    assert_eq!(started("realm")?, started("database")?);
    assert_eq!(started("realm")?, started("storage")?);
    // The progress of that transition shows the three running.
    let first_three: Vec<pb::StepStarted> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::StepStarted)
        .take(3)
        .map(|(_, b)| pb::StepStarted::decode(b.clone()))
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = first_three.iter().map(|e| e.step.as_str()).collect();
    assert_eq!(names, ["realm", "database", "storage"]);
    let progress = first_three[2].progress.as_ref().context("progress")?;
    assert_eq!(running(progress), ["realm", "database", "storage"]);
    assert_eq!(progress.current_step, "realm", "current_step: the first step at work in pipeline order");
    // client after realm, admin after client, the mail after everything.
    let finished = |name: &str| step(&steps, name).3.context("finished");
    assert!(started("client")? >= finished("realm")?);
    assert!(started("admin")? >= finished("client")?);
    for before in ["admin", "database", "storage"] {
        assert!(started("welcome")? >= finished(before)?, "welcome started before {before} ended");
    }
    // The slow realm ended after database and storage: completion order.
    let completion = |name: &str| step(&steps, name).4;
    assert!(completion("realm") > completion("database") && completion("realm") > completion("storage"));
    assert_eq!(completion("welcome"), Some(6));
    assert_eq!(step(&steps, "welcome").5, ["admin", "database", "storage"], "the graph is kept with the saga");
    Ok(())
}

#[tokio::test]
async fn a_fatal_failure_awaits_the_running_step_then_undoes_in_reverse_completion_order() -> Result<()> {
    let life = Life::with_plans(PLANS).await?;
    // quick fails at once while slow runs: slow is awaited, tail never
    // starts, then slow (completed last), quick (it failed after its
    // command went out) and root are undone — by completion, not by the
    // file's order (which would undo quick before slow).
    let labels = [("script.quick", "permanent"), ("script.slow", "sleep:800")];
    let saga = provision(&life, "forked", "forked", &labels).await?;
    let events = life.saga_events("forked", saga, &[EventKind::Activated, EventKind::ProvisioningFailed]).await?;
    let failed: pb::ProvisioningFailed = last(&events, EventKind::ProvisioningFailed)?;
    assert_eq!(failed.failed_step, "quick");
    let commands = life.commands(saga);
    let sent = sent(&commands);
    assert_eq!(sent.len(), 6, "{sent:?}");
    assert_eq!(sent[0], "root");
    let mut pair = sent[1..3].to_vec();
    pair.sort();
    assert_eq!(pair, ["quick", "slow"], "both started after root");
    assert_eq!(&sent[3..], ["undo slow", "undo quick", "undo root"]);
    let compensated = steps_of::<pb::StepCompensated>(&events, EventKind::StepCompensated, |e| e.step.clone());
    assert_eq!(compensated, ["slow", "quick", "root"]);
    // No compensation began while slow was in flight.
    let steps = stored(&life, saga).await?;
    let slow = step(&steps, "slow");
    let undo_started = events.iter().position(|(k, _)| *k == EventKind::StepCompensated).context("compensated")?;
    let slow_done = events
        .iter()
        .position(|(k, b)| {
            *k == EventKind::StepSucceeded && pb::StepSucceeded::decode(b.clone()).is_ok_and(|e| e.step == "slow")
        })
        .context("slow succeeded")?;
    assert!(slow_done < undo_started);
    assert_eq!(step(&steps, "tail").1, "pending", "nothing starts after a fatal failure");
    assert_eq!(slow.1, "compensated");
    let order: Vec<(String, Option<i32>)> = steps.iter().map(|s| (s.0.clone(), s.4)).collect();
    assert_eq!(
        order,
        [("root".into(), Some(1)), ("slow".into(), Some(3)), ("quick".into(), Some(2)), ("tail".into(), None)]
    );
    assert_eq!(life.status("forked").await?, "FAILED");
    Ok(())
}

#[tokio::test]
async fn a_cancel_during_parallel_steps_awaits_them_then_undoes_everything() -> Result<()> {
    let life = Life::with_plans(PLANS).await?;
    let labels = [("script.slow", "sleep:1500"), ("script.quick", "sleep:1000")];
    let saga = provision(&life, "undecided", "forked", &labels).await?;
    eventually("slow and quick to run together", WAIT, || async {
        let running: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM saga_steps WHERE saga_id = $1 AND state = 'running' ORDER BY position",
        )
        .bind(saga)
        .fetch_all(&life.pool)
        .await
        .ok()?;
        (running == ["slow", "quick"]).then_some(())
    })
    .await?;
    let cancel = pb::CancelSaga {
        tenant_key: "undecided".into(),
        reason: "changed their mind".into(),
        requested_by: "ops".into(),
        saga_id: saga.to_string(),
    };
    life.publisher
        .publish(life.namespace.command_subject("orchestrator", "cancel"), &cancel, &Envelope::new("cancel-graph"))
        .await?;
    let events = life.saga_events("undecided", saga, &[EventKind::Activated, EventKind::Cancelled]).await?;
    assert_eq!(kinds(&events).last(), Some(&EventKind::Cancelled), "{:?}", kinds(&events));
    let sent = sent(&life.commands(saga));
    assert_eq!(&sent[3..], ["undo slow", "undo quick", "undo root"], "{sent:?}");
    assert!(!sent.iter().any(|s| s.contains("tail")), "{sent:?}");
    let steps = stored(&life, saga).await?;
    let states: Vec<&str> = steps.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(states, ["compensated", "compensated", "compensated", "pending"]);
    assert_eq!(life.status("undecided").await?, "CANCELLED");
    Ok(())
}

#[tokio::test]
async fn a_pipeline_without_after_keeps_its_order() -> Result<()> {
    let life = Life::with_plans(PLANS).await?;
    let saga = provision(&life, "classic", "old", &[("script.one", "sleep:200")]).await?;
    life.saga_events("classic", saga, &[EventKind::Activated, EventKind::ProvisioningFailed]).await?;
    assert_eq!(sent(&life.commands(saga)), ["one", "two", "three"]);
    let steps = stored(&life, saga).await?;
    let after: Vec<Vec<String>> = steps.iter().map(|s| s.5.clone()).collect();
    assert_eq!(after, [vec![], vec!["one".to_owned()], vec!["two".to_owned()]]);
    for pair in steps.windows(2) {
        assert!(pair[1].2 >= pair[0].3, "{} started before {} ended", pair[1].0, pair[0].0);
    }
    Ok(())
}

#[test]
fn plans_with_a_broken_graph_are_refused_with_the_problem_and_the_pipeline() {
    let refused = |from: &str, to: &str| {
        let text = PLANS.replacen(from, to, 1);
        Plans::parse(&text).err().unwrap_or_default()
    };
    let err = refused("after = [\"slow\", \"quick\"]", "after = [\"slow\", \"fast\"]");
    assert!(
        err.contains("pipeline forked step tail: after names \"fast\", which is not a step of pipeline forked"),
        "{err}"
    );
    let err = refused("compensation = \"work.undo_root\"", "compensation = \"work.undo_root\"\nafter = [\"tail\"]");
    assert!(err.contains("pipeline forked: the steps root, slow, quick, tail wait for each other"), "{err}");
    let err = refused("name = \"quick\"", "name = \"slow\"");
    assert!(err.contains("pipeline forked step slow: step names must be unique"), "{err}");
    let err = refused(
        "name = \"welcome\"\ncommand = \"work.welcome\"\nfatal = false\nafter = [\"admin\", \"database\", \"storage\"]",
        "name = \"welcome\"\ncommand = \"work.welcome\"\nfatal = false\n[[pipelines.graph]]\nname = \"late\"\ncommand = \"work.late\"\ncompensation = \"work.undo_late\"\nafter = [\"welcome\"]",
    );
    assert!(err.contains("pipeline graph step late: its compensation would depend on a missing step"), "{err}");
    assert!(Plans::parse(PLANS).is_ok());
}
