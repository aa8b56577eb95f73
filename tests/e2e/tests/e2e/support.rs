//! Helpers the end-to-end tests share: the CLI's verdict, what Keycloak
//! was sent, step waits, counts, and the seeded dice of the chaos runs.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::eventually;
use serde_json::Value;

/// The CLI's verdict: it exits 0 on ACTIVE, 1 on FAILED.
pub(crate) fn outcome(output: &std::process::Output) -> (bool, String) {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The temporary password the idp worker gave Keycloak for `realm`'s admin.
pub(crate) fn posted_password(stack: &Stack, realm: &str) -> Result<String> {
    let created = stack.keycloak.requests_to("POST", &format!("/admin/realms/{realm}/users"));
    let body: Value = serde_json::from_str(&created.first().context("no user was created")?.body)?;
    Ok(body["credentials"][0]["value"].as_str().context("no password")?.to_owned())
}

pub(crate) fn tenant_id_of(value: &Value) -> Option<String> {
    match &value["attributes"]["tenantId"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Waits until step `step` of tenant `key`'s saga is in `state`.
pub(crate) async fn wait_for_step(stack: &Stack, key: &str, step: &str, state: &str) -> Result<()> {
    eventually(&format!("{key}'s {step} to be {state}"), Duration::from_secs(60), || async {
        let steps = stack.steps(key).await.ok()?;
        steps.iter().any(|(n, s, _)| n == step && s == state).then_some(())
    })
    .await
}

pub(crate) async fn count(db: &mut sqlx::PgConnection, sql: &str, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(name).fetch_one(db).await?)
}

/// A small xorshift generator: the chaos is random but its seed is printed,
/// so a failing run can be replayed with `LANDLORD_CHAOS_SEED`.
pub(crate) struct Dice(u64);

impl Dice {
    pub(crate) fn new() -> Self {
        let seed = std::env::var("LANDLORD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        println!("chaos seed: {seed} (LANDLORD_CHAOS_SEED={seed} replays it)");
        Self(seed.max(1))
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
