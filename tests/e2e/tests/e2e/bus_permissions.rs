//! The stack's bus with its permissions on (issue 28,
//! deploy/nats/accounts.conf): every service binary and the CLI connect as
//! their own users — a tenant is provisioned through all of them — and in
//! that stack a forbidden action is refused: the storage service's user
//! publishing an idp command, and a client without credentials or with a
//! wrong password. Every other forbidden action is shown against the
//! shipped configuration by the runtime's tests
//! (services/runtime/tests/runtime/permissions.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_contract::StreamKind;
use landlord_e2e::Stack;
use landlord_runtime::nats_auth::{NatsAuth, NatsCredentials};
use landlord_testkit::eventually;

use crate::support::outcome;

#[tokio::test]
async fn in_the_stack_storage_cannot_publish_an_idp_command_nor_a_stranger_connect() -> Result<()> {
    let stack = Stack::start().await?;
    assert!(stack.has_bus_users(), "the stack's NATS runs with the accounts configuration");
    let (ok, text) = outcome(&stack.request("busco", "standard").await?);
    assert!(ok && text.contains("ACTIVE"), "{text}\n{}", stack.logs());
    // Quiet now (the saga has ended): the commands stream's last sequence
    // moves only if something is published on it.
    let operator = stack.connect("bus-permissions").await?;
    let commands = operator.jetstream.get_stream(stack.namespace.stream_name(StreamKind::Commands)).await?;
    let before = commands.get_info().await?.state.last_sequence;

    // The storage service's user, speaking for the idp: the server refuses
    // the publish and says so.
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let storage = stack
        .nats_auth("storage")
        .options()
        .await?
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(event.to_string());
                }
            }
        })
        .connect(stack.nats_url().as_str())
        .await?;
    let subject = stack.namespace.command_subject("idp", "create_realm");
    storage.publish(subject.clone(), "a realm for storage's friend".into()).await?;
    storage.flush().await?;
    eventually(&format!("the server refusing storage on {subject}"), Duration::from_secs(10), || {
        let errors = errors.clone();
        let subject = subject.clone();
        async move {
            let seen = errors.lock().ok()?;
            seen.iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(&subject))
                .then_some(())
        }
    })
    .await?;
    let after = commands.get_info().await?.state.last_sequence;
    assert_eq!(after, before, "nothing reached the commands stream");
    let dead = stack.log("idp");
    assert!(!dead.contains("a realm for storage"), "the idp worker never saw it");

    // No credentials, or a wrong password: not let in at all.
    let anonymous = NatsAuth::default().options().await?.connect(stack.nats_url().as_str()).await;
    let refused = anonymous.err().context("a client without credentials was let in")?;
    assert!(refused.to_string().to_lowercase().contains("authorization"), "{refused}");
    let wrong = NatsAuth {
        credentials: NatsCredentials::UserPassword { user: "storage".into(), password: "not-its-password".into() },
        inbox_prefix: "_INBOX_storage".into(),
        tls: Default::default(),
    };
    let refused = wrong.options().await?.connect(stack.nats_url().as_str()).await;
    assert!(refused.is_err(), "a wrong password was let in");
    stack.assert_no_drift().await
}
