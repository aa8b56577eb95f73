//! Limits, health endpoints and the mint-token command.

use super::*;

#[tokio::test]
async fn limits_health_and_the_mint_token_command() -> Result<()> {
    let h = Harness::with_limits(Limits { rate_per_second: 0.05, burst: 3.0, ..limits() }).await?;
    let admin = h.admin();
    let big = json!({"key": "x".repeat(20_000)});
    let answer = h.post("/v1/tenants", Some(&admin), Some("k"), &big).await?;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(h.get("/v1/tenants", &admin).await?.0);
    }
    let limited = Answer::of(h.http.get(format!("{}/v1/tenants", h.api)).bearer_auth(&admin).send().await?).await?;
    limited.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert_eq!(limited.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("20"));
    // The refused body took the first token: two pass, then the bucket is empty.
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    // Signed Clerk deliveries are not under the per-client limit: Svix
    // sends every organization's events from a few addresses.
    for i in 0..3 {
        let event = json!({"type": "user.created", "object": "event", "data": {"id": format!("user_{i}")}});
        let delivered = h.webhook(&format!("msg_limit_{i}"), &event).await?;
        assert!(delivered.status.is_success(), "{delivered:?}");
    }
    let ready = reqwest::get(format!("http://{}/readyz", h.health)).await?;
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = reqwest::get(format!("http://{}/metrics", h.health)).await?;
    assert_eq!(metrics.status(), StatusCode::OK);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_landlord-gateway"))
        .args(["mint-token", "--scope", "tenants:read", "--ttl", "5m", "--subject", "ops"])
        .env("LANDLORD_JWT_SECRET", JWT_SECRET)
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    let claims = h.tokens.verify(&token).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert_eq!((claims.sub.as_str(), claims.scope.as_str()), ("ops", "tenants:read"));
    assert!(claims.exp - claims.iat == 300);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_landlord-gateway"))
        .args(["mint-token", "--scope", "tenants:everything"])
        .env("LANDLORD_JWT_SECRET", JWT_SECRET)
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown scope"));
    Ok(())
}
