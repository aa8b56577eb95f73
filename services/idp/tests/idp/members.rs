//! Clerk members against the double: created with their role, updated,
//! promoted and demoted, removed (disabled), commands out of order
//! ignored, another Clerk user's account refused; pooled memberships of
//! one user in two tenants' organizations; the binary serving the member
//! subject over NATS.

use landlord_idp::members::{Applied, apply};

use super::helpers::*;

fn member(spec: &pb::TenantSpec, user: &str, email: &str, role: &str, version: i64) -> pb::MemberCommand {
    pb::MemberCommand {
        tenant: Some(spec.clone()),
        clerk_user_id: user.into(),
        clerk_organization_id: format!("org_{}", spec.key),
        email: email.into(),
        first_name: "Mia".into(),
        last_name: "Member".into(),
        role: role.into(),
        clerk_role: if role == "realm-admin" { "org:admin".into() } else { "org:member".into() },
        action: pb::MemberAction::Upsert as i32,
        version,
    }
}

fn removal(command: &pb::MemberCommand, version: i64) -> pb::MemberCommand {
    pb::MemberCommand { action: pb::MemberAction::Remove as i32, version, ..command.clone() }
}

fn user_by(double: &KeycloakDouble, realm: &str, clerk_user: &str) -> Result<Value> {
    double
        .users(realm)
        .into_iter()
        .find(|u| u["attributes"]["clerkUserId"] == json!([clerk_user]))
        .with_context(|| format!("no user for {clerk_user} in {realm}"))
}

/// realm-management's client uuid in `realm`.
fn management(double: &KeycloakDouble, realm: &str) -> Result<String> {
    double
        .clients(realm)
        .iter()
        .find(|c| c["clientId"] == "realm-management")
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .context("no realm-management")
}

#[tokio::test]
async fn a_member_is_created_with_its_role_updated_promoted_and_removed_in_order() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("crew", "cccccccc-1111", pb::Tier::Bridge);
    let realm = "tenant-crew";
    provision(&idp, &spec).await?;
    let management = management(&double, realm)?;

    let mia = member(&spec, "user_mia", "Mia@Crew.test", "member", 10);
    assert_eq!(apply(&idp, &mia).await?, Applied::Created);
    let user = user_by(&double, realm, "user_mia")?;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!((user["username"].as_str(), user["email"].as_str()), (Some("mia@crew.test"), Some("mia@crew.test")));
    assert_eq!((user["firstName"].as_str(), user["enabled"].as_bool()), (Some("Mia"), Some(true)));
    assert_eq!(owner(&user), Some("cccccccc-1111"));
    assert_eq!(user["attributes"]["landlordClerkVersion"], json!(["10"]));
    assert_eq!(user["attributes"].get("landlordSagaId"), None, "made by no saga: no compensation deletes it");
    assert_eq!(double.realm_roles_of(realm, &id), ["member"]);
    assert!(double.client_roles_of(realm, &id, &management).is_empty());
    // Keycloak's own mail to choose a password, once.
    let mails = |double: &KeycloakDouble| double.actions_emails().iter().filter(|m| m.user_id == id).count();
    assert_eq!(mails(&double), 1);
    assert_eq!(apply(&idp, &mia).await?, Applied::Updated, "twice is once");
    assert_eq!(mails(&double), 1);
    assert_eq!(double.users(realm).len(), 2, "the admin and Mia");

    // The email and names follow the Clerk user; found by its Clerk id.
    let moved =
        pb::MemberCommand { email: "mia@new.test".into(), first_name: "Mina".into(), version: 20, ..mia.clone() };
    assert_eq!(apply(&idp, &moved).await?, Applied::Updated);
    let user = user_by(&double, realm, "user_mia")?;
    assert_eq!((user["email"].as_str(), user["firstName"].as_str()), (Some("mia@new.test"), Some("Mina")));
    assert_eq!(user["id"].as_str(), Some(id.as_str()));
    // An older command delivered late changes nothing.
    assert_eq!(apply(&idp, &mia).await?, Applied::Stale);
    assert_eq!(user_by(&double, realm, "user_mia")?["email"], "mia@new.test");

    // Promoted to admin, then demoted.
    let promoted = pb::MemberCommand { role: "realm-admin".into(), version: 30, ..moved.clone() };
    apply(&idp, &promoted).await?;
    assert_eq!(double.client_roles_of(realm, &id, &management), ["realm-admin"]);
    let demoted = pb::MemberCommand { version: 40, ..moved.clone() };
    apply(&idp, &demoted).await?;
    assert!(double.client_roles_of(realm, &id, &management).is_empty(), "realm-admin taken away");
    assert_eq!(double.realm_roles_of(realm, &id), ["member"]);

    // Removed: disabled and logged out; an older upsert does not bring them back.
    double.set_password(realm, &id, "Correct-horse-battery-1");
    assert_eq!(apply(&idp, &removal(&moved, 50)).await?, Applied::Removed);
    let user = user_by(&double, realm, "user_mia")?;
    assert_eq!(user["enabled"], false);
    assert_eq!(user["attributes"]["landlordClerkRemoved"], json!(["50"]));
    assert_eq!(apply(&idp, &demoted).await?, Applied::Stale);
    assert_eq!(user_by(&double, realm, "user_mia")?["enabled"], false);
    assert_eq!(apply(&idp, &removal(&moved, 50)).await?, Applied::Removed, "twice is once");
    // Joining again: enabled, the mark gone.
    assert_eq!(apply(&idp, &pb::MemberCommand { version: 60, ..moved.clone() }).await?, Applied::Updated);
    let user = user_by(&double, realm, "user_mia")?;
    assert_eq!(user["enabled"], true);
    assert_eq!(user["attributes"].get("landlordClerkRemoved"), None);

    // The tenant's admin, made by create_admin_user, is found by username
    // and marked with its Clerk id; it keeps realm-admin.
    let ada = member(&spec, "user_ada", "Ada@crew.test", "realm-admin", 5);
    assert_eq!(apply(&idp, &ada).await?, Applied::Updated);
    let admin = user_by(&double, realm, "user_ada")?;
    assert_eq!(admin["username"], "ada@crew.test");
    let admin_id = admin["id"].as_str().unwrap_or_default();
    assert_eq!(double.client_roles_of(realm, admin_id, &management), ["realm-admin"]);
    assert_eq!(double.users(realm).len(), 2);

    // Another Clerk user with Mia's email is refused, Mia left as she was.
    let impostor = member(&spec, "user_other", "mia@new.test", "realm-admin", 99);
    let refused = apply(&idp, &impostor).await.expect_err("another Clerk user's account");
    assert!(!refused.retryable(), "{refused}");
    assert!(refused.to_string().contains("user_mia"), "{refused}");
    assert!(double.client_roles_of(realm, &id, &management).is_empty());
    // A removal of someone never created is done already.
    assert_eq!(
        apply(&idp, &removal(&member(&spec, "user_nobody", "no@crew.test", "member", 1), 2)).await?,
        Applied::Absent
    );
    Ok(())
}

#[tokio::test]
async fn a_realm_user_of_another_tenant_is_never_touched() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("fence", "dddddddd-1111", pb::Tier::Silo);
    provision(&idp, &spec).await?;
    // A command naming another tenant id for the same realm (a key reused
    // after a tombstone): the users it finds are not that tenant's.
    let other = pb::TenantSpec { tenant_id: "eeeeeeee-2222".into(), ..spec.clone() };
    let admin = member(&other, "user_ada", "Ada@fence.test", "member", 7);
    let refused = apply(&idp, &admin).await.expect_err("another tenant's user");
    assert!(refused.to_string().contains("not tenant fence's"), "{refused}");
    assert_eq!(apply(&idp, &removal(&admin, 8)).await?, Applied::NotOurs);
    let user = double.users("tenant-fence").into_iter().find(|u| u["username"] == "ada@fence.test").context("admin")?;
    assert_eq!(user["enabled"], true);
    assert_eq!(user["attributes"].get("clerkUserId"), None);
    Ok(())
}

#[tokio::test]
async fn a_pooled_member_joins_and_leaves_the_tenants_organizations() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let a = tenant("pool-a", "aaaaaaaa-3333", pb::Tier::Pooled);
    let b = tenant("pool-b", "bbbbbbbb-3333", pb::Tier::Pooled);
    provision(&idp, &a).await?;
    provision(&idp, &b).await?;
    let org = |key: &str| {
        double
            .organizations(SHARED_REALM)
            .iter()
            .find(|o| o["name"] == key)
            .and_then(|o| o["id"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let pat = member(&a, "user_pat", "pat@pool.test", "member", 10);
    assert_eq!(apply(&idp, &pat).await?, Applied::Created);
    let user = user_by(&double, SHARED_REALM, "user_pat")?;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(owner(&user), Some("aaaaaaaa-3333"));
    assert_eq!(user["attributes"]["role"], json!(["member"]));
    assert!(double.members(SHARED_REALM, &org("pool-a")).contains(&id));
    // The same Clerk user in another tenant's organization: a member of it,
    // the user (tenant a's) untouched.
    let in_b = member(&b, "user_pat", "pat@pool.test", "realm-admin", 20);
    assert_eq!(apply(&idp, &in_b).await?, Applied::MembershipOnly);
    assert!(double.members(SHARED_REALM, &org("pool-b")).contains(&id));
    let user = user_by(&double, SHARED_REALM, "user_pat")?;
    assert_eq!((owner(&user), &user["attributes"]["role"]), (Some("aaaaaaaa-3333"), &json!(["member"])));
    // Promoted in tenant a: the admin role attribute of the pooled tier.
    apply(&idp, &pb::MemberCommand { role: "realm-admin".into(), version: 30, ..pat.clone() }).await?;
    assert_eq!(user_by(&double, SHARED_REALM, "user_pat")?["attributes"]["role"], json!(["tenant-admin"]));
    // Leaving b, then a: out of each organization; the user stays enabled
    // (a pooled user may belong elsewhere).
    assert_eq!(apply(&idp, &removal(&in_b, 40)).await?, Applied::MembershipOnly);
    assert!(!double.members(SHARED_REALM, &org("pool-b")).contains(&id));
    assert!(double.members(SHARED_REALM, &org("pool-a")).contains(&id));
    assert_eq!(apply(&idp, &removal(&pat, 50)).await?, Applied::Removed);
    assert!(!double.members(SHARED_REALM, &org("pool-a")).contains(&id));
    let user = user_by(&double, SHARED_REALM, "user_pat")?;
    assert_eq!(user["enabled"], true);
    // An older upsert does not bring them back into the organization.
    assert_eq!(apply(&idp, &pat).await?, Applied::Stale);
    assert!(!double.members(SHARED_REALM, &org("pool-a")).contains(&id));
    Ok(())
}

#[tokio::test]
async fn the_binary_serves_member_commands_on_their_own_subject() -> Result<()> {
    let nats = NatsServer::shared().await;
    let double = double().await?;
    let namespace = unique_namespace();
    let mut env = env_for(&double);
    env.extend([
        ("LANDLORD_NATS_URL".to_owned(), nats.url()),
        ("LANDLORD_NAMESPACE".to_owned(), namespace.root().to_owned()),
    ]);
    let spec = tenant("wire", "ffffffff-4444", pb::Tier::Bridge);
    provision(&idp(&double)?, &spec).await?;
    let service = Process::start("idp", &workspace_binary("landlord-idp")?, &[], &env, &scratch_dir("logs")?)?;
    let sender_env =
        Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &sender_env)?).await?;
    let publisher = Publisher::new(&sender.broker, "test");
    let command = member(&spec, "user_wire", "wire@wire.test", "member", 1);
    publisher.publish(namespace.member_command_subject(), &command, &Envelope::new("member-1").tenant("wire")).await?;
    let created = landlord_testkit::eventually("the member created", WAIT, || async {
        user_by(&double, "tenant-wire", "user_wire").ok()
    })
    .await;
    let user = created.with_context(|| service.output())?;
    assert_eq!(user["email"], "wire@wire.test");
    Ok(())
}
