//! Clerk members and users through the whole stack (issue 29 item 2;
//! docs/clerk.md, "Members and users"): signed `organizationMembership.*`
//! and `user.updated` deliveries to the gateway binary become
//! `MemberCommand`s that the idp binary applies to the tenant's realm in
//! the Keycloak double — memberships delivered before the tenant exists
//! wait for it to be ACTIVE, and a deletion delivered before its creation
//! wins. Every wait is on a condition (the double, the control plane's
//! tables, the broker's streams), never a fixed sleep.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_contract::{StreamKind, TenantKey};
use landlord_e2e::Stack;
use landlord_runtime::Broker;
use landlord_testkit::eventually;
use serde_json::{Value, json};

/// The organization whose members the test follows, and its tenant's key
/// (from the slug).
const ORG: &str = "org_crew_e2e";
const KEY: &str = "crew-e2e";
/// An organization whose `public_metadata` names a plan under the default
/// key only, which this gateway is not configured to read.
const FALLBACK_ORG: &str = "org_fallback_e2e";
const FALLBACK_KEY: &str = "fallback-e2e";

/// The member of `public_metadata` the gateway reads the plan from
/// (`LANDLORD_CLERK_PLAN_KEY`).
const PLAN_KEY: &str = "landlord_plan";
/// `LANDLORD_CLERK_PLAN`: the plan of an organization that names none.
const DEFAULT_PLAN: &str = "standard";
/// `LANDLORD_CLERK_MEMBER_ROLE`: the realm role of members that are not
/// `org:admin`.
const MEMBER_ROLE: &str = "crew";

/// Clerk's timestamps (ms) of the events: what orders a member's events.
const T: i64 = 1_717_000_000_000;

const WAIT: Duration = Duration::from_secs(60);

fn organization_created(org: &str, slug: &str, name: &str, metadata: Value) -> Value {
    json!({
        "type": "organization.created", "object": "event", "timestamp": T,
        "data": {
            "object": "organization", "id": org, "name": name, "slug": slug, "created_by": format!("user_{slug}"),
            "members_count": 1, "max_allowed_memberships": 50, "admin_delete_enabled": true, "has_image": false,
            "public_metadata": metadata, "created_at": T, "updated_at": T,
        },
    })
}

/// A Clerk user as membership events describe it: id, primary email,
/// first and last name.
type User<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Clerk's `organizationMembership.<verb>` of `user` in `org` with `role`.
fn membership(verb: &str, org: &str, (user, email, first, last): User<'_>, role: &str, timestamp: i64) -> Value {
    json!({
        "type": format!("organizationMembership.{verb}"), "object": "event", "timestamp": timestamp,
        "data": {
            "object": "organization_membership", "id": format!("orgmem_{user}"), "role": role,
            "permissions": [], "organization": {"object": "organization", "id": org},
            "public_user_data": {"user_id": user, "identifier": email, "first_name": first, "last_name": last,
                                 "has_image": false},
            "created_at": timestamp, "updated_at": timestamp,
        },
    })
}

/// Clerk's `user.updated`: the primary address is the second one.
fn user_updated(user: &str, email: &str, first_name: &str, last_name: &str, timestamp: i64) -> Value {
    json!({
        "type": "user.updated", "object": "event", "timestamp": timestamp,
        "data": {
            "object": "user", "id": user, "first_name": first_name, "last_name": last_name,
            "primary_email_address_id": "idn_new",
            "email_addresses": [
                {"id": "idn_old", "object": "email_address", "email_address": "old@crew-e2e.test"},
                {"id": "idn_new", "object": "email_address", "email_address": email},
            ],
            "public_metadata": {}, "created_at": T, "updated_at": timestamp,
        },
    })
}

/// One signed delivery to the gateway's Clerk webhook, which must be
/// accepted (not a duplicate, not refused).
async fn deliver(stack: &Stack, svix_id: &str, event: &Value) -> Result<()> {
    let (status, answer) = stack.deliver_clerk(svix_id, event).await?;
    anyhow::ensure!(status == 200 && answer["delivery"] == "accepted", "{svix_id}: {status} {answer}");
    Ok(())
}

/// The user of `realm` made for Clerk user `clerk_user`, if any.
fn member(stack: &Stack, realm: &str, clerk_user: &str) -> Option<Value> {
    stack.keycloak.users(realm).into_iter().find(|u| u["attributes"]["clerkUserId"] == json!([clerk_user]))
}

/// realm-management's client uuid in `realm`.
fn management(stack: &Stack, realm: &str) -> Result<String> {
    stack
        .keycloak
        .clients(realm)
        .iter()
        .find(|c| c["clientId"] == "realm-management")
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .with_context(|| format!("no realm-management client in {realm}"))
}

/// A broker as the operator (the stack's bus users are on): to read the
/// streams.
async fn connect(stack: &Stack) -> Result<Broker> {
    stack.connect("clerk-members-e2e").await
}

/// How many messages `stream` holds on `subject`.
async fn stream_count(broker: &Broker, kind: StreamKind, subject: &str) -> Result<u64> {
    use futures_util::TryStreamExt as _;
    let stream = broker.jetstream.get_stream(broker.namespace.stream_name(kind)).await?;
    let mut info = stream.info_with_subjects(subject).await?;
    let mut total = 0;
    while let Some((_, count)) = info.try_next().await? {
        total += count as u64;
    }
    Ok(total)
}

/// Waits until everything the Clerk bridge decided for the members has
/// been applied by the idp: no membership waiting to be sent, no member
/// command in the outbox, none left on the commands stream (a work queue:
/// a command leaves it when the idp acknowledges it), none dead-lettered.
/// After this, what the realm holds is final.
async fn members_settled(stack: &Stack, broker: &Broker) -> Result<()> {
    let subject = stack.namespace.member_command_subject();
    let dead = stack.namespace.dead_letter_subject(&subject);
    let last = std::sync::Mutex::new(String::new());
    let settled = eventually("the member commands to be applied", WAIT, || async {
        let mut db = stack.control().await.ok()?;
        let (waiting, outbox): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM clerk_members WHERE applied_at IS NULL),
                    (SELECT count(*) FROM outbox WHERE subject = $1)",
        )
        .bind(&subject)
        .fetch_one(&mut db)
        .await
        .ok()?;
        let queued = stream_count(broker, StreamKind::Commands, &subject).await.ok()?;
        let dead = stream_count(broker, StreamKind::DeadLetter, &dead).await.ok()?;
        if let Ok(mut last) = last.lock() {
            *last = format!("{waiting} memberships waiting, {outbox} in the outbox, {queued} queued, {dead} dead");
        }
        (waiting == 0 && outbox == 0 && queued == 0 && dead == 0).then_some(())
    })
    .await;
    let last = last.lock().map(|l| l.clone()).unwrap_or_default();
    settled.with_context(|| format!("last seen: {last}\n{}", stack.logs()))
}

/// Waits until `check` holds for Clerk user `clerk_user`'s user in `realm`.
async fn until_member(
    stack: &Stack,
    realm: &str,
    clerk_user: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let seen = eventually(&format!("{clerk_user} {what}"), WAIT, || async {
        member(stack, realm, clerk_user).filter(|user| check(user))
    })
    .await;
    seen.with_context(|| {
        format!("{clerk_user} is {:?}\n{}", member(stack, realm, clerk_user), stack.log(landlord_e2e::GATEWAY))
    })
}

/// `(plan, tier)` of tenant `key`, once the orchestrator has it.
async fn plan_of(stack: &Stack, key: &str) -> Result<(String, String)> {
    let mut db = stack.control().await?;
    Ok(sqlx::query_as("SELECT plan, tier FROM tenants WHERE key = $1").bind(key).fetch_one(&mut db).await?)
}

/// Issue 29 item 2 end to end: an organization whose plan comes from its
/// `public_metadata` (under the configured key); members delivered before
/// the tenant existed applied once it is ACTIVE, `org:admin` as
/// realm-admin and `org:member` with the configured role; a user's new
/// email and names followed; a deleted membership disabled; a deletion
/// delivered before its (older) creation winning, before and after the
/// tenant is ACTIVE. And an organization whose metadata names no plan
/// under the configured key gets `LANDLORD_CLERK_PLAN`.
#[tokio::test]
async fn clerk_members_reach_the_tenants_realm_in_clerks_order_whatever_order_they_are_delivered_in() -> Result<()> {
    let began = std::time::Instant::now();
    let mut stack = Stack::servers().await?;
    stack.overrides.extend(
        [
            ("LANDLORD_CLERK_PLAN_KEY", PLAN_KEY),
            ("LANDLORD_CLERK_PLAN", DEFAULT_PLAN),
            ("LANDLORD_CLERK_MEMBER_ROLE", MEMBER_ROLE),
            ("LANDLORD_CLERK_MEMBER_SWEEP", "300ms"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    stack.start_services().await?;
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let broker = connect(&stack).await?;
    let realm = TenantKey::parse(KEY)?.backend_names().realm;
    println!("clerk members: stack up in {:.1?}", began.elapsed());

    // 1. The organization, its plan in public_metadata under the configured
    // key (the default key's "free" is not read). Then, before its admin's
    // membership makes the tenant requested — so before any tenant exists —
    // a member, and a member whose deletion (newer) is delivered before its
    // creation.
    let ada = ("user_ada", "ada.admin@crew-e2e.test", "Ada", "Admin");
    let ops = ("user_ops", "Ops.Admin@Crew-E2E.test", "Otto", "Ops");
    let mia = ("user_mia", "mia.member@crew-e2e.test", "Mia", "Member");
    let zed = ("user_zed", "zed@crew-e2e.test", "Zed", "Gone");
    let eve = ("user_eve", "eve@crew-e2e.test", "Eve", "Late");
    let metadata = json!({PLAN_KEY: "enterprise", "plan": "free"});
    deliver(&stack, "msg_crew_org", &organization_created(ORG, "Crew_E2E", "Crew E2E Inc.", metadata)).await?;
    deliver(&stack, "msg_mia", &membership("created", ORG, mia, "org:member", T + 3)).await?;
    deliver(&stack, "msg_zed_deleted", &membership("deleted", ORG, zed, "org:member", T + 5)).await?;
    deliver(&stack, "msg_zed_created", &membership("created", ORG, zed, "org:member", T + 4)).await?;
    assert!(stack.tenants_of_key(KEY).await?.is_empty(), "no tenant before the admin's membership");
    let mut db = stack.control().await?;
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT user_id, deleted, applied_at IS NOT NULL FROM clerk_members WHERE org_id = $1 ORDER BY user_id",
    )
    .bind(ORG)
    .fetch_all(&mut db)
    .await?;
    let waiting = [("user_mia", false, false), ("user_zed", true, false)];
    assert_eq!(rows, waiting.map(|(user, deleted, applied)| (user.to_owned(), deleted, applied)), "recorded, waiting");
    deliver(&stack, "msg_ada", &membership("created", ORG, ada, "org:admin", T + 1)).await?;
    // A second admin, while the tenant is being provisioned (the first
    // admin to arrive is the tenant's admin).
    deliver(&stack, "msg_ops", &membership("created", ORG, ops, "org:admin", T + 2)).await?;
    // The other organization names a plan only under the default key.
    let fallback = organization_created(FALLBACK_ORG, "Fallback_E2E", "Fallback Inc.", json!({"plan": "enterprise"}));
    deliver(&stack, "msg_fallback_org", &fallback).await?;
    let fay = ("user_fay", "fay@fallback-e2e.test", "Fay", "Fallback");
    deliver(&stack, "msg_fallback_fay", &membership("created", FALLBACK_ORG, fay, "org:admin", T + 1)).await?;

    let tenant = stack.wait_status(KEY, "ACTIVE", Duration::from_secs(120)).await?;
    let fallback_tenant = stack.wait_status(FALLBACK_KEY, "ACTIVE", Duration::from_secs(120)).await?;
    println!("clerk members: both tenants ACTIVE {:.1?} after the start", began.elapsed());
    assert_eq!(plan_of(&stack, KEY).await?, ("enterprise".to_owned(), "silo".to_owned()), "{tenant:?}");
    assert_eq!(
        plan_of(&stack, FALLBACK_KEY).await?,
        (DEFAULT_PLAN.to_owned(), "bridge".to_owned()),
        "no plan under {PLAN_KEY}: LANDLORD_CLERK_PLAN; {fallback_tenant:?}"
    );

    // 2. Once ACTIVE, the waiting memberships are applied: the admins hold
    // realm-admin, the member the configured role and not realm-admin.
    let management = management(&stack, &realm)?;
    let id = |user: &Value| user["id"].as_str().unwrap_or_default().to_owned();
    let client_roles = |user: &Value| stack.keycloak.client_roles_of(&realm, &id(user), &management);
    let realm_roles = |user: &Value| stack.keycloak.realm_roles_of(&realm, &id(user));
    let is_admin = |user: &Value| client_roles(user).iter().any(|role| role == "realm-admin");
    let has_member_role = |user: &Value| realm_roles(user).iter().any(|role| role == MEMBER_ROLE);
    let ada_user = until_member(&stack, &realm, ada.0, "as realm-admin", is_admin).await?;
    assert_eq!(ada_user["username"], ada.1, "the tenant's admin, now marked with its Clerk id: {ada_user}");
    assert_eq!(ada_user["attributes"]["clerkRole"], json!(["org:admin"]), "{ada_user}");
    let ops_user = until_member(&stack, &realm, ops.0, "as realm-admin", is_admin).await?;
    assert_eq!(
        (&ops_user["username"], &ops_user["email"], &ops_user["firstName"], &ops_user["enabled"]),
        (&json!("ops.admin@crew-e2e.test"), &json!("ops.admin@crew-e2e.test"), &json!("Otto"), &json!(true)),
        "{ops_user}"
    );
    assert_eq!(ops_user["attributes"]["tenantId"], json!([tenant.id]), "{ops_user}");
    let mia_user = until_member(&stack, &realm, mia.0, "with the member role", has_member_role).await?;
    assert!(!is_admin(&mia_user), "a member is no realm-admin: {:?}", client_roles(&mia_user));
    assert_eq!(
        (&mia_user["email"], &mia_user["firstName"], &mia_user["lastName"], &mia_user["enabled"]),
        (&json!(mia.1), &json!(mia.2), &json!(mia.3), &json!(true)),
        "{mia_user}"
    );
    assert_eq!(mia_user["attributes"]["clerkRole"], json!(["org:member"]), "{mia_user}");
    members_settled(&stack, &broker).await?;
    let users = stack.keycloak.users(&realm);
    assert!(
        member(&stack, &realm, zed.0).is_none() && !users.iter().any(|u| u["email"] == zed.1),
        "a deletion delivered before its creation wins: {users:?}"
    );
    assert_eq!(users.len(), 3, "ada, ops and mia: {users:?}");
    println!("clerk members: waiting memberships applied {:.1?} after the start", began.elapsed());

    // 3. Mia changes her email and names in Clerk.
    let moved = ("user_mia", "mina@elsewhere.test", "Mina", "Moved");
    deliver(&stack, "msg_mia_updated", &user_updated(mia.0, "Mina@Elsewhere.test", moved.2, moved.3, T + 10)).await?;
    let moved_user = until_member(&stack, &realm, mia.0, "with the new email", |user| user["email"] == moved.1).await?;
    assert_eq!((&moved_user["firstName"], &moved_user["lastName"]), (&json!("Mina"), &json!("Moved")), "{moved_user}");
    assert_eq!(moved_user["id"], mia_user["id"], "the same user");
    assert!(has_member_role(&moved_user) && !is_admin(&moved_user), "the role stays: {:?}", realm_roles(&moved_user));

    // 4. Mia leaves the organization: her user is disabled. Eve's deletion
    // (newer) is delivered before her creation, now that the tenant is
    // ACTIVE: she never becomes a member.
    deliver(&stack, "msg_mia_deleted", &membership("deleted", ORG, moved, "org:member", T + 20)).await?;
    deliver(&stack, "msg_eve_deleted", &membership("deleted", ORG, eve, "org:member", T + 31)).await?;
    deliver(&stack, "msg_eve_created", &membership("created", ORG, eve, "org:member", T + 30)).await?;
    let removed = until_member(&stack, &realm, mia.0, "disabled", |user| user["enabled"] == false).await?;
    assert_eq!(removed["attributes"]["landlordClerkRemoved"], json!([(T + 20).to_string()]), "{removed}");
    assert_eq!((&removed["email"], &removed["firstName"]), (&json!(moved.1), &json!(moved.2)), "{removed}");
    members_settled(&stack, &broker).await?;
    let users = stack.keycloak.users(&realm);
    assert!(
        member(&stack, &realm, eve.0).is_none() && !users.iter().any(|u| u["email"] == eve.1),
        "a deletion delivered before its creation wins: {users:?}"
    );
    assert!(member(&stack, &realm, zed.0).is_none(), "{users:?}");
    let mut enabled: Vec<&str> =
        users.iter().filter(|u| u["enabled"] == true).filter_map(|u| u["username"].as_str()).collect();
    enabled.sort_unstable();
    assert_eq!(enabled, ["ada.admin@crew-e2e.test", "ops.admin@crew-e2e.test"], "{users:?}");
    let rows: Vec<(String, bool, i64)> =
        sqlx::query_as("SELECT user_id, deleted, version FROM clerk_members WHERE org_id = $1 ORDER BY user_id")
            .bind(ORG)
            .fetch_all(&mut db)
            .await?;
    let expected = [
        ("user_ada", false, T + 1),
        ("user_eve", true, T + 31),
        ("user_mia", true, T + 20),
        ("user_ops", false, T + 2),
        ("user_zed", true, T + 5),
    ];
    assert_eq!(rows, expected.map(|(user, deleted, version)| (user.to_owned(), deleted, version)));
    // The other tenant's realm has only its admin: nothing leaked across.
    let fallback_realm = TenantKey::parse(FALLBACK_KEY)?.backend_names().realm;
    let fallback_users = stack.keycloak.users(&fallback_realm);
    assert_eq!(fallback_users.len(), 1, "{fallback_users:?}");
    assert_eq!(fallback_users[0]["attributes"]["clerkUserId"], json!(["user_fay"]), "{fallback_users:?}");

    // 5. The gateway prunes deliveries older than the retention (at its
    // start, then every eighth of it): aged by a week and a day, every
    // svix-id of this test goes. A replay of one after that is a new
    // delivery — and changes nothing: the member's rows still hold Clerk's
    // order.
    let aged = sqlx::query("UPDATE webhook_deliveries SET received_at = now() - interval '8 days'")
        .execute(&mut db)
        .await?
        .rows_affected();
    assert!(aged >= 12, "{aged} deliveries recorded");
    stack.restart_service(landlord_e2e::GATEWAY).await?;
    eventually("the aged deliveries to be pruned", WAIT, || async {
        let mut db = stack.control().await.ok()?;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries").fetch_one(&mut db).await.ok()?;
        (left == 0).then_some(())
    })
    .await
    .with_context(|| stack.log(landlord_e2e::GATEWAY))?;
    deliver(&stack, "msg_eve_created", &membership("created", ORG, eve, "org:member", T + 30)).await?;
    members_settled(&stack, &broker).await?;
    assert!(member(&stack, &realm, eve.0).is_none(), "{:?}", stack.keycloak.users(&realm));
    stack.assert_no_drift().await?;
    println!("clerk members: whole test {:.1?}", began.elapsed());
    Ok(())
}
