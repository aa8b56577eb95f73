//! A purge whose backend fails (issue 25): the tenant stays DEPROVISIONING
//! with the error while the step is retried, and is DELETED only once the
//! backend is back and everything is gone — never before.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{Operation, Stack, TenantRow};
use landlord_testkit::eventually;

use crate::lifecycle::provision;

/// The grace period of these tests: long enough for the fault to be set up
/// after the offboarding ends, short enough to wait for.
const GRACE: u64 = 6;

/// Offboards `key` with [`GRACE`] and waits for DELETION_SCHEDULED.
async fn offboard(stack: &Stack, key: &str, export: bool) -> Result<TenantRow> {
    let operation = Operation::Offboard { reason: "customer left".into(), grace: Some(GRACE), export };
    let end = stack.operate(key, &operation).await?;
    anyhow::ensure!(end.tenant.status == "DELETION_SCHEDULED", "{end:?}\n{}", stack.logs());
    Ok(end.tenant)
}

/// Fails unless the fault was in place before the purge was due (the test
/// would prove nothing otherwise).
fn before_the_purge(scheduled: &TenantRow, now: &TenantRow) -> Result<()> {
    anyhow::ensure!(
        now.status == "DELETION_SCHEDULED" && now.purge_in.is_some_and(|s| s > 0.0),
        "the fault came too late ({GRACE} s of grace): {scheduled:?} then {now:?}"
    );
    Ok(())
}

/// Waits for the purge to be stuck on the fault: DEPROVISIONING with an
/// error naming `what`; then checks nothing was reported deleted.
async fn wait_stuck(stack: &Stack, key: &str, what: &[&str]) -> Result<TenantRow> {
    let stuck = eventually(&format!("{key}'s purge to fail on {what:?}"), Duration::from_secs(60), || async {
        let row = stack.tenant_row(key).await.ok()?;
        let error = row.failure_reason.clone().unwrap_or_default().to_lowercase();
        (row.status == "DEPROVISIONING" && what.iter().any(|w| error.contains(w))).then_some(row)
    })
    .await;
    let row = match stuck {
        Ok(row) => row,
        Err(error) => {
            let now = stack.tenant_row(key).await?;
            return Err(error.context(format!("{now:?}\n{}", stack.logs())));
        }
    };
    // Retried, not given up: still DEPROVISIONING a moment later, its
    // resources not all reported deleted.
    let steps = stack.steps(key).await?;
    assert!(steps.iter().any(|(name, state, _)| name.ends_with("_purge") && state != "succeeded"), "{steps:?}");
    let resources = stack.resources(key).await?;
    assert!(resources.iter().any(|(_, _, deleted)| !deleted), "not reported deleted while stuck: {resources:?}");
    Ok(row)
}

/// After the backend is back: DELETED, nothing left, no drift.
async fn wait_purged(stack: &Stack, key: &str) -> Result<()> {
    let row = stack.wait_status(key, "DELETED", Duration::from_secs(90)).await?;
    assert!(row.deleted_by.is_some(), "{row:?}");
    let left = stack.backend_objects(key).await?;
    assert!(left.is_empty(), "{key}: left behind {left:?}");
    let resources = stack.resources(key).await?;
    assert!(resources.iter().all(|(_, _, deleted)| *deleted), "{resources:?}");
    stack.assert_no_drift().await
}

#[tokio::test]
async fn a_purge_with_the_s3_server_stopped_waits_deprovisioning_then_deletes_everything() -> Result<()> {
    let mut stack = Stack::start_with_gateway().await?;
    provision(&stack, &[("nos3", "standard"), ("nos3pool", "free")]).await?;
    let (bridge, pooled) = tokio::join!(offboard(&stack, "nos3", true), offboard(&stack, "nos3pool", true));
    let (bridge, pooled) = (bridge?, pooled?);
    stack.s3.kill();
    before_the_purge(&bridge, &stack.tenant_row("nos3").await?)?;
    before_the_purge(&pooled, &stack.tenant_row("nos3pool").await?)?;
    let stuck = wait_stuck(&stack, "nos3", &["s3", "storage", "connect", "dispatch"]).await?;
    println!("nos3 while S3 is down: {stuck:?}");
    wait_stuck(&stack, "nos3pool", &["s3", "storage", "connect", "dispatch"]).await?;
    stack.s3.restart().await?;
    wait_purged(&stack, "nos3").await?;
    wait_purged(&stack, "nos3pool").await
}

#[tokio::test]
async fn a_purge_without_the_privilege_to_drop_the_role_waits_then_deletes_everything() -> Result<()> {
    let mut stack = Stack::servers().await?;
    // The database worker runs as a provisioning role, as in production.
    let mut data = stack.tenant_data().await?;
    let database = stack.tenant_data.name.clone();
    for statement in [
        "CREATE ROLE provisioner LOGIN CREATEROLE CREATEDB PASSWORD 'provisioner-password'".to_owned(),
        format!("ALTER DATABASE \"{database}\" OWNER TO provisioner"),
        "ALTER SCHEMA public OWNER TO provisioner".to_owned(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut data).await?;
    }
    let superuser = format!("postgres:{}@", stack.pg.password());
    stack.tenant_data_url = stack.pg.url(&database).replace(&superuser, "provisioner:provisioner-password@");
    stack.start_services().await?;
    stack.start_service(landlord_e2e::GATEWAY).await?;
    provision(&stack, &[("noprivilege", "standard")]).await?;
    let scheduled = offboard(&stack, "noprivilege", false).await?;
    // The operator takes CREATEROLE away: the role cannot be dropped.
    sqlx::raw_sql("ALTER ROLE provisioner NOCREATEROLE").execute(&mut data).await?;
    before_the_purge(&scheduled, &stack.tenant_row("noprivilege").await?)?;
    let stuck = wait_stuck(&stack, "noprivilege", &["permission", "privilege", "database"]).await?;
    println!("noprivilege without CREATEROLE: {stuck:?}");
    let role: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'tenant_noprivilege'")
        .fetch_one(&mut data)
        .await?;
    assert_eq!(role, 1, "the role is still there, and the tenant not DELETED");
    sqlx::raw_sql("ALTER ROLE provisioner CREATEROLE").execute(&mut data).await?;
    wait_purged(&stack, "noprivilege").await
}

#[tokio::test]
async fn a_purge_with_keycloak_answering_500_waits_then_deletes_everything() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    provision(&stack, &[("noidp", "standard"), ("noidppool", "free")]).await?;
    let (bridge, pooled) = tokio::join!(offboard(&stack, "noidp", false), offboard(&stack, "noidppool", false));
    let (bridge, pooled) = (bridge?, pooled?);
    stack.keycloak.fail_next(1_000_000, 500);
    before_the_purge(&bridge, &stack.tenant_row("noidp").await?)?;
    before_the_purge(&pooled, &stack.tenant_row("noidppool").await?)?;
    let stuck = wait_stuck(&stack, "noidp", &["keycloak", "500", "idp"]).await?;
    println!("noidp while Keycloak answers 500: {stuck:?}");
    wait_stuck(&stack, "noidppool", &["keycloak", "500", "idp"]).await?;
    assert!(stack.keycloak.realm("tenant-noidp").is_some(), "nothing reported deleted while the realm is there");
    stack.keycloak.clear_failures();
    wait_purged(&stack, "noidp").await?;
    wait_purged(&stack, "noidppool").await.context("the pooled tenant")
}
