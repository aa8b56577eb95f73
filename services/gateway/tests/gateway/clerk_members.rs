//! Clerk members and users (issue 29 item 2): signed membership and user
//! deliveries become `MemberCommand`s for the idp once the organization's
//! tenant is ACTIVE, in Clerk's order whatever order Svix delivers them in.

use super::*;

/// A membership event of `kind` at Clerk's `timestamp` (ms).
fn member(kind: &str, org: &str, user: &str, role: &str, email: &str, timestamp: i64) -> Value {
    json!({"type": kind, "object": "event", "timestamp": timestamp,
           "data": {"object": "organization_membership", "id": format!("orgmem_{user}"), "role": role,
                    "organization": {"id": org, "object": "organization"},
                    "public_user_data": {"user_id": user, "identifier": email,
                                         "first_name": "Mia", "last_name": user}}})
}

fn user_updated(user: &str, email: &str, first_name: &str, timestamp: i64) -> Value {
    json!({"type": "user.updated", "object": "event", "timestamp": timestamp,
           "data": {"object": "user", "id": user, "first_name": first_name, "last_name": "Moved",
                    "primary_email_address_id": "idn_2",
                    "email_addresses": [{"id": "idn_1", "email_address": "stale@example.test"},
                                        {"id": "idn_2", "email_address": email}]}})
}

/// Every member command on the commands stream (no idp consumes them here).
async fn commands(h: &Harness) -> Result<Vec<pb::MemberCommand>> {
    let stream = h.jetstream.get_stream(h.namespace.stream_name(StreamKind::Commands)).await?;
    let subject = h.namespace.member_command_subject();
    let mut found = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await {
        let ce_type = message.headers.get("ce-type").map(|v| v.as_str().to_owned());
        assert_eq!(ce_type.as_deref(), Some("landlord.v1.MemberCommand"));
        found.push(<pb::MemberCommand as prost::Message>::decode(message.payload)?);
        next = message.sequence + 1;
    }
    Ok(found)
}

/// Waits until `expected` member commands were published; returns them.
async fn until_commands(h: &Harness, expected: usize) -> Result<Vec<pb::MemberCommand>> {
    let last = Arc::new(Mutex::new(Vec::new()));
    let reached = eventually(&format!("{expected} member commands"), WAIT, || {
        let last = last.clone();
        async move {
            let found = commands(h).await.ok()?;
            let done = found.len() == expected;
            if let Ok(mut last) = last.lock() {
                *last = found.clone();
            }
            done.then_some(found)
        }
    })
    .await;
    reached.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.clone())))
}

/// A membership row: (role, version, deleted, applied).
async fn row(h: &Harness, org: &str, user: &str) -> Result<(Option<String>, i64, bool, bool)> {
    Ok(sqlx::query_as(
        "SELECT clerk_role, version, deleted, applied_at IS NOT NULL FROM clerk_members
         WHERE org_id = $1 AND user_id = $2",
    )
    .bind(org)
    .bind(user)
    .fetch_one(&h.pool)
    .await?)
}

fn action(command: &pb::MemberCommand) -> pb::MemberAction {
    pb::MemberAction::try_from(command.action).unwrap_or(pb::MemberAction::Unspecified)
}

#[tokio::test]
async fn a_membership_waits_for_its_tenant_then_users_follow_in_clerk_order() -> Result<()> {
    let h = Harness::new().await?;
    // A member joins an organization Landlord has not heard of yet.
    let answer = h
        .webhook("mm1", &member("organizationMembership.created", "org_m", "user_2", "org:member", "Mia@M.test", 1_000))
        .await?;
    assert_eq!((answer.status, &answer.body["delivery"]), (StatusCode::OK, &json!("accepted")), "{answer:?}");
    assert_eq!(row(&h, "org_m", "user_2").await?, (Some("org:member".into()), 1_000, false, false));
    // A redelivery changes nothing.
    let again = h
        .webhook("mm1", &member("organizationMembership.created", "org_m", "user_2", "org:member", "Mia@M.test", 1_000))
        .await?;
    assert_eq!(again.body["delivery"], "duplicate");
    // The organization and its admin: the tenant is requested; members wait
    // while it is provisioned.
    h.webhook("mm2", &organization("org_m", "members")).await?;
    let answer = h.webhook("mm3", &membership("org_m", "grace@members.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    let tenant = h.until_status("members", "ACTIVE").await?;
    // Once ACTIVE, the sweep sends both: the admin and the member.
    let sent = until_commands(&h, 2).await?;
    let by_user = |user: &str| sent.iter().find(|c| c.clerk_user_id == user).cloned().context(user.to_owned());
    let admin = by_user("user_1")?;
    assert_eq!((admin.role.as_str(), admin.clerk_role.as_str()), ("realm-admin", "org:admin"));
    assert_eq!(admin.email, "grace@members.test");
    let mia = by_user("user_2")?;
    assert_eq!((mia.role.as_str(), mia.clerk_role.as_str()), ("member", "org:member"));
    assert_eq!(action(&mia), pb::MemberAction::Upsert);
    assert_eq!((mia.email.as_str(), mia.first_name.as_str(), mia.version), ("Mia@M.test", "Mia", 1_000));
    assert_eq!(mia.clerk_organization_id, "org_m");
    let spec = mia.tenant.clone().context("no tenant")?;
    assert_eq!((spec.key.as_str(), spec.tenant_id.as_str()), ("members", tenant["id"].as_str().unwrap_or("?")));
    assert!(row(&h, "org_m", "user_2").await?.3, "applied");

    // The user changes their email: sent at once, the tenant being ACTIVE.
    h.webhook("mm4", &user_updated("user_2", "mia@new.test", "Mina", 3_000)).await?;
    let sent = until_commands(&h, 3).await?;
    let moved = &sent[2];
    assert_eq!((moved.clerk_user_id.as_str(), moved.email.as_str()), ("user_2", "mia@new.test"));
    assert_eq!((moved.first_name.as_str(), moved.last_name.as_str(), moved.version), ("Mina", "Moved", 3_000));
    assert_eq!(moved.role, "member", "the membership's role stays");
    // An older user.updated and an older membership update, delivered late:
    // nothing changes, nothing is sent.
    h.webhook("mm5", &user_updated("user_2", "older@new.test", "Old", 2_000)).await?;
    h.webhook("mm6", &member("organizationMembership.updated", "org_m", "user_2", "org:admin", "x@m.test", 900))
        .await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM clerk_users WHERE user_id = 'user_2'").fetch_one(&h.pool).await?;
    assert_eq!(email.as_deref(), Some("mia@new.test"));
    assert_eq!(row(&h, "org_m", "user_2").await?, (Some("org:member".into()), 1_000, false, true));
    // A newer promotion is sent, with the user's newest fields.
    h.webhook("mm7", &member("organizationMembership.updated", "org_m", "user_2", "org:admin", "mia@new.test", 4_000))
        .await?;
    let sent = until_commands(&h, 4).await?;
    let promoted = &sent[3];
    assert_eq!(
        (promoted.role.as_str(), promoted.email.as_str(), promoted.version),
        ("realm-admin", "mia@new.test", 4_000)
    );
    // Only those four: the late, older deliveries sent nothing.
    assert_eq!(commands(&h).await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_deletion_that_arrives_before_its_creation_wins() -> Result<()> {
    let h = Harness::new().await?;
    h.webhook("md1", &organization("org_d", "deletes")).await?;
    h.webhook("md2", &membership("org_d", "ada@deletes.test")).await?;
    h.until_status("deletes", "ACTIVE").await?;
    until_commands(&h, 1).await?;
    // Svix delivers the deletion first, then the (older) creation.
    h.webhook("md3", &member("organizationMembership.deleted", "org_d", "user_3", "org:member", "bo@d.test", 2_000))
        .await?;
    assert_eq!(row(&h, "org_d", "user_3").await?, (Some("org:member".into()), 2_000, true, true));
    h.webhook("md4", &member("organizationMembership.created", "org_d", "user_3", "org:member", "bo@d.test", 1_000))
        .await?;
    assert_eq!(
        row(&h, "org_d", "user_3").await?,
        (Some("org:member".into()), 2_000, true, true),
        "the tombstone holds"
    );
    let sent = until_commands(&h, 2).await?;
    assert_eq!((sent[1].clerk_user_id.as_str(), action(&sent[1])), ("user_3", pb::MemberAction::Remove));
    assert_eq!(sent[1].version, 2_000);
    // Joining again later is newer than the deletion: an upsert.
    h.webhook("md5", &member("organizationMembership.created", "org_d", "user_3", "org:member", "bo@d.test", 5_000))
        .await?;
    let sent = until_commands(&h, 3).await?;
    assert_eq!((action(&sent[2]), sent[2].version), (pb::MemberAction::Upsert, 5_000));
    // The user is deleted in Clerk: removed from every tenant, for good —
    // a late membership event does not bring them back.
    let deleted = json!({"type": "user.deleted", "object": "event", "timestamp": 6_000,
                         "data": {"id": "user_3", "object": "user", "deleted": true}});
    h.webhook("md6", &deleted).await?;
    let sent = until_commands(&h, 4).await?;
    assert_eq!((action(&sent[3]), sent[3].version), (pb::MemberAction::Remove, 6_000));
    h.webhook("md7", &member("organizationMembership.updated", "org_d", "user_3", "org:admin", "bo@d.test", 7_000))
        .await?;
    let sent = until_commands(&h, 5).await?;
    assert_eq!(action(&sent[4]), pb::MemberAction::Remove, "a deleted user stays removed: {:?}", sent[4]);
    // Malformed: a membership without its user.
    let bad = json!({"type": "organizationMembership.created", "object": "event", "timestamp": 1,
                     "data": {"role": "org:member", "organization": {"id": "org_d"}}});
    h.webhook("md8", &bad).await?.problem(StatusCode::BAD_REQUEST, "malformed-body");
    Ok(())
}
