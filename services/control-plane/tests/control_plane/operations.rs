//! `operations::request` against a real PostgreSQL: what it records, and
//! every refusal.

use landlord_contract::pb;
use landlord_control_plane::operations::{Refused, RequestError, Requested, TenantPatch, request};
use landlord_control_plane::{Operation, TenantStatus};
use landlord_testkit::unique_namespace;
use prost::Message;

use crate::support::{ask, count, database, plans, saga, tenant, update};

/// What `request` answers, with a refusal unwrapped.
fn refused(result: Result<(Requested, Vec<landlord_control_plane::outbox::Pending>), RequestError>) -> Refused {
    match result {
        Err(RequestError::Refused(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_is_recorded_with_an_audit_row_and_an_operate_command() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let (requested, pending) =
        request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    let saga_id = landlord_control_plane::ids::saga_id(Operation::Suspend, "api:k1");
    assert_eq!(requested, Requested { saga_id, tenant_id: id, repeated: false });

    let (tenant_id, operation): (uuid::Uuid, String) =
        sqlx::query_as("SELECT tenant_id, operation FROM operation_requests WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((tenant_id, operation.as_str()), (id, "suspend"));

    let (actor, action, detail): (String, String, serde_json::Value) =
        sqlx::query_as("SELECT actor, action, detail FROM audit_log WHERE tenant_id = $1 AND saga_id = $2")
            .bind(id)
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("tester", "suspend_requested"));
    assert_eq!(detail["reason"], "because");
    assert_eq!(detail["saga_id"], saga_id.to_string());

    let (subject, msg_id, payload): (String, String, Vec<u8>) =
        sqlx::query_as("SELECT subject, msg_id, payload FROM outbox").fetch_one(&pool).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(subject, namespace.command_subject("orchestrator", "operate"));
    assert_eq!(pending[0].message.subject, subject);
    assert_eq!(msg_id, saga_id.to_string());
    let message = pb::OperationRequested::decode(&payload[..]).unwrap();
    assert_eq!(message.saga_id, saga_id.to_string());
    assert_eq!(message.tenant_id, id.to_string());
    assert_eq!((message.tenant_key.as_str(), message.operation.as_str()), ("acme", "suspend"));
    assert_eq!((message.requested_by.as_str(), message.reason.as_str()), ("tester", "because"));
    assert_eq!(message.idempotency_id, "api:k1");
}

/// The same idempotency id names the same saga: recorded or started, a
/// repeat records nothing.
#[tokio::test]
async fn a_repeat_names_the_same_saga_and_records_nothing() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let (first, _) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    let (again, pending) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    assert_eq!(again, Requested { repeated: true, ..first });
    assert!(pending.is_empty());
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await.unwrap(), 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_log").await.unwrap(), 1);

    // The orchestrator started it, and it finished: still the same saga.
    sqlx::query("DELETE FROM operation_requests").execute(&pool).await.unwrap();
    saga(&pool, id, Operation::Suspend, "api:k1", "succeeded").await.unwrap();
    sqlx::query("UPDATE tenants SET status = 'SUSPENDED'").execute(&pool).await.unwrap();
    let (after, pending) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    assert_eq!(after, Requested { repeated: true, ..first });
    assert!(pending.is_empty());

    // The idempotency id of another tenant's operation is not this one's.
    tenant(&pool, "other", TenantStatus::Active, &[]).await.unwrap();
    let rule = match refused(request(&pool, &namespace, &plans, ask("other", Operation::Suspend, "api:k1")).await) {
        Refused::Invalid(rejection) => rejection.rule,
        other => panic!("{other:?}"),
    };
    assert_eq!(rule, "idempotency_id.reused");
}

/// One operation at a time: a request recorded and not started, or a saga
/// at work, makes the next one a conflict naming it.
#[tokio::test]
async fn a_second_operation_is_a_conflict_naming_the_first() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let (first, _) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    let second = request(&pool, &namespace, &plans, ask("acme", Operation::Offboard, "api:k2")).await;
    assert_eq!(refused(second), Refused::Conflict { operation: Operation::Suspend, saga_id: first.saga_id });

    // Started: the saga at work is what conflicts.
    sqlx::query("DELETE FROM operation_requests").execute(&pool).await.unwrap();
    let running = saga(&pool, id, Operation::Suspend, "api:k1", "compensating").await.unwrap();
    let third = request(&pool, &namespace, &plans, ask("acme", Operation::Export, "api:k3")).await;
    assert_eq!(refused(third), Refused::Conflict { operation: Operation::Suspend, saga_id: running });

    // Done: the next one goes ahead.
    sqlx::query("UPDATE sagas SET state = 'failed'").execute(&pool).await.unwrap();
    let (fourth, pending) = request(&pool, &namespace, &plans, ask("acme", Operation::Export, "api:k3")).await.unwrap();
    assert!(!fourth.repeated);
    assert_eq!(pending.len(), 1);
}

#[tokio::test]
async fn an_operation_from_a_status_the_table_does_not_allow_is_refused() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let statuses = [
        TenantStatus::Pending,
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Compensating,
        TenantStatus::Failed,
        TenantStatus::Cancelled,
        TenantStatus::Suspended,
        TenantStatus::DeletionScheduled,
        TenantStatus::Deprovisioning,
    ];
    assert_eq!(statuses.len() + 1, TenantStatus::ALL.len(), "every status but DELETED");
    for (n, status) in statuses.into_iter().enumerate() {
        let key = format!("tenant{n}");
        tenant(&pool, &key, status, &[]).await.unwrap();
        sqlx::query("UPDATE tenants SET export_waived = true").execute(&pool).await.unwrap();
        for &operation in &Operation::ALL[1..] {
            let mut asked = ask(&key, operation, &format!("api:{key}:{operation}"));
            asked.patch = Some(TenantPatch { display_name: Some("Renamed".into()), ..Default::default() });
            let result = request(&pool, &namespace, &plans, asked).await;
            let allowed = matches!(
                (operation, status),
                (Operation::Suspend, TenantStatus::Active)
                    | (Operation::Resume, TenantStatus::Suspended)
                    | (Operation::Update | Operation::Offboard, TenantStatus::Active | TenantStatus::Suspended)
                    | (Operation::Restore | Operation::Purge, TenantStatus::DeletionScheduled)
                    | (
                        Operation::Export,
                        TenantStatus::Active | TenantStatus::Suspended | TenantStatus::DeletionScheduled,
                    )
            );
            if allowed {
                assert!(result.is_ok(), "{operation} from {status}: {result:?}");
                // One at a time: let the next operation be asked.
                sqlx::query("DELETE FROM operation_requests").execute(&pool).await.unwrap();
            } else {
                assert_eq!(refused(result), Refused::NotAllowed { operation, status }, "{operation} from {status}");
            }
        }
    }
    let refusal = Refused::NotAllowed { operation: Operation::Suspend, status: TenantStatus::Suspended };
    assert_eq!(refusal.to_string(), "cannot suspend a SUSPENDED tenant");
}

#[tokio::test]
async fn a_deleted_tenant_is_unknown_and_its_key_names_the_live_one() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let missing = request(&pool, &namespace, &plans, ask("nobody", Operation::Suspend, "api:k0")).await;
    assert_eq!(refused(missing), Refused::UnknownTenant);
    tenant(&pool, "acme", TenantStatus::Deleted, &[]).await.unwrap();
    tenant(&pool, "acme", TenantStatus::Deleted, &[]).await.unwrap();
    let gone = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await;
    assert_eq!(refused(gone), Refused::UnknownTenant);
    let live = tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let (requested, _) = request(&pool, &namespace, &plans, ask("acme", Operation::Suspend, "api:k1")).await.unwrap();
    assert_eq!(requested.tenant_id, live);
}

/// A purge needs a verified export, or an offboarding that waived it; a
/// purge repeated after the tenant was deleted names its saga.
#[tokio::test]
async fn a_purge_without_an_export_is_refused_unless_waived() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    let id = tenant(&pool, "acme", TenantStatus::DeletionScheduled, &[]).await.unwrap();
    let purge = || ask("acme", Operation::Purge, "purge:acme:1");
    assert_eq!(refused(request(&pool, &namespace, &plans, purge()).await), Refused::ExportMissing);
    sqlx::query("UPDATE tenants SET export_waived = true").execute(&pool).await.unwrap();
    let (requested, _) = request(&pool, &namespace, &plans, purge()).await.unwrap();
    assert!(!requested.repeated);

    let other = tenant(&pool, "beta", TenantStatus::DeletionScheduled, &[]).await.unwrap();
    let purge_beta = || ask("beta", Operation::Purge, "purge:beta:1");
    assert_eq!(refused(request(&pool, &namespace, &plans, purge_beta()).await), Refused::ExportMissing);
    sqlx::query("UPDATE tenants SET exported_at = now(), export_location = 's3://a/b/' WHERE id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    assert!(request(&pool, &namespace, &plans, purge_beta()).await.is_ok());

    // The purge ran and the tenant is a tombstone: a repeat names its saga.
    sqlx::query("DELETE FROM operation_requests WHERE tenant_id = $1").bind(id).execute(&pool).await.unwrap();
    saga(&pool, id, Operation::Purge, "purge:acme:1", "succeeded").await.unwrap();
    sqlx::query("UPDATE tenants SET status = 'DELETED' WHERE id = $1").bind(id).execute(&pool).await.unwrap();
    let (again, pending) = request(&pool, &namespace, &plans, purge()).await.unwrap();
    assert_eq!(again, Requested { repeated: true, ..requested });
    assert!(pending.is_empty());
}

#[tokio::test]
async fn requests_that_break_a_rule_are_refused_before_anything_is_recorded() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let rule = |result| match refused(result) {
        Refused::Invalid(rejection) => rejection.rule,
        other => panic!("{other:?}"),
    };
    let mut no_reason = ask("acme", Operation::Suspend, "api:k1");
    no_reason.reason = " ".into();
    assert_eq!(rule(request(&pool, &namespace, &plans, no_reason).await), "reason.required");
    let mut no_purge_at = ask("acme", Operation::Offboard, "api:k2");
    no_purge_at.purge_at = None;
    assert_eq!(rule(request(&pool, &namespace, &plans, no_purge_at).await), "purge_at.missing");
    let provision = ask("acme", Operation::Provision, "api:k3");
    assert_eq!(rule(request(&pool, &namespace, &plans, provision).await), "operation.provision");
    let no_id = ask("acme", Operation::Suspend, "");
    assert_eq!(rule(request(&pool, &namespace, &plans, no_id).await), "idempotency_id.missing");
    assert_eq!(count(&pool, "SELECT count(*) FROM operation_requests").await.unwrap(), 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_log").await.unwrap(), 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await.unwrap(), 0);
}

#[tokio::test]
async fn an_update_is_validated_by_the_request_rules_and_says_what_changes() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    tenant(&pool, "acme", TenantStatus::Suspended, &["acme.test"]).await.unwrap();
    tenant(&pool, "other", TenantStatus::Active, &["other.test"]).await.unwrap();
    tenant(&pool, "gone", TenantStatus::Deleted, &["gone.test"]).await.unwrap();
    let rule = |result| match refused(result) {
        Refused::Invalid(rejection) => rejection.rule,
        other => panic!("{other:?}"),
    };
    let patch = |change: fn(&mut TenantPatch)| {
        let mut patch = TenantPatch::default();
        change(&mut patch);
        update("acme", "api:u", patch)
    };
    type Change = fn(&mut TenantPatch);
    let cases: [(Change, &str); 7] = [
        (|p| p.display_name = Some(" ".into()), "display_name.empty"),
        (|p| p.domains = Some(vec!["not a domain".into()]), "domains.invalid"),
        (|p| p.domains = Some(vec!["a.test".into(), "a.test".into()]), "domains.duplicate"),
        (|p| p.domains = Some(vec!["other.test".into()]), "tenant.domain_taken"),
        (|p| p.admin = Some(pb::AdminContact { email: "nobody".into(), ..Default::default() }), "admin.email.invalid"),
        (|p| p.labels = Some([("a/b".to_owned(), "x".to_owned())].into()), "labels.key"),
        (|p| p.plan = Some("platinum".into()), "plan.unknown"),
    ];
    for (change, expected) in cases {
        assert_eq!(rule(request(&pool, &namespace, &plans, patch(change)).await), expected);
    }
    assert_eq!(refused(request(&pool, &namespace, &plans, patch(|_| {})).await), Refused::NothingChanged);
    let same = patch(|p| {
        p.display_name = Some("Tenant acme".into());
        p.domains = Some(vec!["acme.test".into()]);
        p.plan = Some("standard".into());
    });
    assert_eq!(refused(request(&pool, &namespace, &plans, same).await), Refused::NothingChanged);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await.unwrap(), 0);

    // A DELETED tenant's domain is free; the name is kept as cleaned.
    let good = patch(|p| {
        p.display_name = Some("  Acme Corp ".into());
        p.domains = Some(vec!["acme.test".into(), "gone.test".into()]);
    });
    let (requested, pending) = request(&pool, &namespace, &plans, good).await.unwrap();
    let message = pb::OperationRequested::decode(&pending[0].message.payload[..]).unwrap();
    assert_eq!(message.changed, ["display_name", "domains"]);
    let changed = message.changed_tenant.unwrap();
    assert_eq!(changed.display_name, "Acme Corp");
    assert_eq!(changed.domains, ["acme.test", "gone.test"]);
    assert_eq!(changed.tenant_id, requested.tenant_id.to_string());
    assert_eq!((changed.key.as_str(), changed.plan.as_str()), ("acme", "standard"));
    assert_eq!(changed.tier, pb::Tier::Bridge as i32);
    assert_eq!(changed.admin.unwrap().email, "ops@acme.test");
    assert_eq!(changed.labels.get("team").map(String::as_str), Some("a"));
    let detail: serde_json::Value =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'update_requested'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(detail["changed"], serde_json::json!(["display_name", "domains"]));
}

/// A plan of another tier is a tier change: refused, not supported yet.
#[tokio::test]
async fn a_plan_change_to_another_tier_is_refused() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    tenant(&pool, "acme", TenantStatus::Active, &[]).await.unwrap();
    let to = |plan: &str| {
        update("acme", &format!("api:{plan}"), TenantPatch { plan: Some(plan.into()), ..Default::default() })
    };
    let rejection = match refused(request(&pool, &namespace, &plans, to("enterprise")).await) {
        Refused::Invalid(rejection) => rejection,
        other => panic!("{other:?}"),
    };
    assert_eq!(rejection.rule, "plan.tier_change");
    assert!(rejection.reason.contains("not supported yet"), "{rejection:?}");
    assert!(rejection.reason.contains("silo") && rejection.reason.contains("bridge"), "{rejection:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await.unwrap(), 0);
}

/// Two requests at once for one tenant: one is recorded, the other is a
/// conflict naming it; the same request twice at once: one saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_make_one_operation() {
    let pool = database().await.unwrap();
    let (namespace, plans) = (unique_namespace(), plans().unwrap());
    for round in 0..10 {
        let key = format!("t{round}");
        tenant(&pool, &key, TenantStatus::Active, &[]).await.unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let run = |operation, idempotency_id: String| {
            let (pool, namespace, plans, barrier, key) =
                (pool.clone(), namespace.clone(), plans.clone(), barrier.clone(), key.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                request(&pool, &namespace, &plans, ask(&key, operation, &idempotency_id)).await
            })
        };
        let (a, b) =
            (run(Operation::Suspend, format!("api:{round}a")), run(Operation::Offboard, format!("api:{round}b")));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (started, conflict) = match (a, b) {
            (Ok((started, _)), Err(other)) | (Err(other), Ok((started, _))) => (started, other),
            other => panic!("expected one started and one refused: {other:?}"),
        };
        let RequestError::Refused(Refused::Conflict { saga_id, .. }) = conflict else { panic!("{conflict:?}") };
        assert_eq!(saga_id, started.saga_id);

        sqlx::query("DELETE FROM operation_requests").execute(&pool).await.unwrap();
        let (a, b) = (run(Operation::Export, format!("api:{round}c")), run(Operation::Export, format!("api:{round}c")));
        let (a, b) = (a.await.unwrap().unwrap().0, b.await.unwrap().unwrap().0);
        assert_eq!(a.saga_id, b.saga_id);
        assert!(a.repeated != b.repeated, "one new, one repeat: {a:?} {b:?}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await.unwrap(), 20);
}
