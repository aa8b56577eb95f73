//! Backends failing: what fails the tenant, what is undone, what only
//! gets reported.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::eventually;

use crate::support::{count, outcome, wait_for_step};

#[tokio::test]
async fn a_stopped_s3_server_fails_the_tenant_and_undoes_exactly_what_was_done() -> Result<()> {
    let mut stack = Stack::start().await?;
    stack.s3.kill();
    let request = stack.spawn_request("nobucket", "standard")?;
    // The failed step is compensated too (it may have made the bucket before
    // failing), first of all: its compensation waits for S3 to come back.
    wait_for_step(&stack, "nobucket", "storage", "compensating").await?;
    stack.s3.restart().await?;
    let (ok, text) = outcome(&request.wait_with_output().await?);
    assert!(!ok && text.contains("FAILED at storage"), "{text}\n{}", stack.logs());
    let (_, status) = stack.tenant("nobucket").await?;
    assert_eq!(status, "FAILED");
    // The identity and the database steps were undone, in the backends.
    assert!(stack.keycloak.realm("tenant-nobucket").is_none(), "the realm is gone");
    let mut data = stack.tenant_data().await?;
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_nobucket").await?, 0);
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_roles WHERE rolname = $1", "tenant_nobucket").await?, 0);
    // The bucket runs beside the identity chain and the database (the
    // plan's graph): the realm and the database had started with it and
    // were undone; the chain's later steps were undone if they had started
    // before the failure, else never started; the mail never started.
    let steps = stack.steps("nobucket").await?;
    let state = |name: &str| steps.iter().find(|(n, _, _)| n == name).map(|(_, s, _)| s.as_str());
    for name in ["idp_realm", "database", "storage"] {
        assert_eq!(state(name), Some("compensated"), "{name}: {steps:?}");
    }
    for name in ["idp_client", "idp_admin_user"] {
        assert!(matches!(state(name), Some("compensated" | "pending")), "{name}: {steps:?}");
    }
    assert!(
        !(state("idp_client") == Some("pending") && state("idp_admin_user") == Some("compensated")),
        "the admin user only after the client: {steps:?}"
    );
    assert_eq!(state("welcome_email"), Some("pending"), "{steps:?}");
    // Every resource recorded is marked deleted.
    let resources = stack.resources("nobucket").await?;
    assert!(!resources.is_empty() && resources.iter().all(|(_, _, deleted)| *deleted), "{resources:?}");
    // The admin is told (the failure mail is sent after the saga ended).
    let mails = eventually("the failure mail", Duration::from_secs(20), || async {
        let mails = stack.smtp.mails_to("admin@nobucket.test");
        (!mails.is_empty()).then_some(mails)
    })
    .await?;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].raw.contains("What failed: storage"), "{}", mails[0].raw);
    // Back up, the next tenant goes through.
    let (ok, text) = outcome(&stack.request("withbucket", "standard").await?);
    assert!(ok, "{text}");
    stack.assert_no_drift().await
}

#[tokio::test]
async fn an_smtp_outage_leaves_the_tenant_active_with_the_mail_reported() -> Result<()> {
    let mut stack = Stack::start().await?;
    stack.smtp.kill();
    let (ok, text) = outcome(&stack.request("nomail", "standard").await?);
    assert!(ok && text.contains("ACTIVE"), "mail trouble never fails a tenant: {text}");
    assert!(text.contains("welcome_email attempt 3"), "retried before giving up: {text}");
    let steps = stack.steps("nomail").await?;
    let (_, state, error) = steps.iter().find(|(n, _, _)| n == "welcome_email").context("no mail step")?;
    assert_eq!(state, "failed");
    assert!(error.as_deref().unwrap_or_default().contains("smtp"), "{error:?}");
    assert!(stack.keycloak.realm("tenant-nomail").is_some(), "nothing was undone");
    assert!(stack.buckets()?.contains(&"landlord-nomail".to_owned()));
    stack.assert_no_drift().await
}

#[tokio::test]
async fn keycloak_answering_500_fails_the_tenant_and_undoes_the_steps_beside_it() -> Result<()> {
    let stack = Stack::start().await?;
    stack.keycloak.fail_next(1_000, 500);
    let request = stack.spawn_request("noidp", "standard")?;
    // The failed realm step is compensated too: its compensation waits for
    // Keycloak to answer again.
    wait_for_step(&stack, "noidp", "idp_realm", "compensating").await?;
    stack.keycloak.clear_failures();
    let (ok, text) = outcome(&request.wait_with_output().await?);
    assert!(!ok && text.contains("FAILED at idp_realm"), "{text}");
    assert!(text.contains("keycloak_unavailable"), "{text}");
    let mut data = stack.tenant_data().await?;
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_noidp").await?, 0);
    // The database and the bucket run beside the identity chain (the
    // plan's graph): made, then undone.
    assert!(!stack.buckets()?.contains(&"landlord-noidp".to_owned()));
    let resources = stack.resources("noidp").await?;
    assert!(resources.iter().all(|(_, _, deleted)| *deleted), "{resources:?}");
    stack.assert_no_drift().await
}

#[tokio::test]
async fn a_revoked_database_privilege_undoes_the_identity_steps() -> Result<()> {
    let mut stack = Stack::servers().await?;
    // The database worker runs as a provisioning role, as in production,
    // not as a superuser.
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
    let (ok, text) = outcome(&stack.request("granted", "standard").await?);
    assert!(ok, "the provisioning role is enough: {text}\n{}", stack.log("database"));
    // The operator takes CREATEROLE away: the next tenant cannot get a role.
    sqlx::raw_sql("ALTER ROLE provisioner NOCREATEROLE").execute(&mut data).await?;
    let (ok, text) = outcome(&stack.request("revoked", "standard").await?);
    assert!(!ok && text.contains("FAILED at database"), "{text}\n{}", stack.log("database"));
    assert!(stack.keycloak.realm("tenant-revoked").is_none(), "the realm was undone");
    assert!(stack.keycloak.realm("tenant-granted").is_some(), "the other tenant is untouched");
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_revoked").await?, 0);
    assert!(!stack.buckets()?.contains(&"landlord-revoked".to_owned()));
    stack.assert_no_drift().await
}
