//! `just bench-mail`: the cost of one welcome mail to a local capture
//! server (aiosmtpd), in one run:
//!
//! - the step: `Notifier::run` — compose, claim in the ledger (JetStream
//!   KV), send over a pooled `TCP_NODELAY` connection, mark sent;
//! - the floor: the same message sent over the same kind of pooled
//!   connection with nothing else;
//! - lettre's own pooled transport (its sockets without `TCP_NODELAY`);
//! - a new SMTP connection for every mail.
//!
//! 300 mails per row by default, 1,000 with `BENCH_FULL=1`, `BENCH_MAILS`
//! to choose. Writes bench/results/mail.{json,md}.

use std::time::{Duration, Instant};

use anyhow::Result;
use landlord_contract::pb;
use landlord_notification::{Kind, Ledger, Mailer, Notifier, Settings, SmtpSettings, Templates, Unsealed};
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_testkit::bench::{Run, machine, summary, write_results};
use landlord_testkit::{NatsServer, SmtpCapture, unique_namespace};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// Mails per row: the default run, and `BENCH_FULL=1`'s.
const MAILS: (usize, usize) = (300, 1000);

fn command(i: usize) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{i}"),
        step: "welcome_email".into(),
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            key: format!("bench-{i}"),
            display_name: format!("Bench {i}"),
            admin: Some(pb::AdminContact {
                email: format!("admin@bench-{i}.test"),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn timed<F: std::future::Future<Output = Result<()>>>(
    mails: usize,
    mut one: impl FnMut(usize) -> F,
) -> Result<Vec<f64>> {
    // Warm up: connections, caches.
    for i in 0..10 {
        one(usize::MAX - i).await?;
    }
    let mut ms = Vec::with_capacity(mails);
    for i in 0..mails {
        let started = Instant::now();
        one(i).await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let mails = run.size("BENCH_MAILS", MAILS.0, MAILS.1);
    let nats = NatsServer::start().await?;
    let smtp = SmtpCapture::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let namespace = unique_namespace();
    let env = Env::from_pairs([("LANDLORD_SMTP_URL", smtp.url())]);
    let settings = Settings::from_env(&env)?;
    let ledger = Ledger::open(&jetstream, namespace.root(), 1, Duration::from_secs(3600), Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let notifier = Notifier::new(settings.clone(), Templates::load(None)?, ledger);

    let step = timed(mails, |i| {
        let notifier = &notifier;
        async move {
            let delivery = DeliveryInfo::direct(i as u64);
            notifier.run("send_welcome", &command(i), &delivery).await?;
            Ok(())
        }
    })
    .await?;

    let message = notifier
        .compose(Kind::Welcome, &command(0).tenant.unwrap_or_default(), &command(0), "bench", &Unsealed::default())
        .map_err(anyhow::Error::new)?;
    let (envelope, bytes) = (message.envelope().clone(), message.formatted());

    let mailer = Mailer::new(SmtpSettings::parse(&smtp.url()).map_err(anyhow::Error::msg)?);
    let floor = timed(mails, |_| async { mailer.send(&envelope, &bytes).await.map_err(anyhow::Error::new) }).await?;

    let lettre_pooled: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(smtp.port()).build();
    let lettre = timed(mails, |_| async {
        lettre_pooled.send_raw(&envelope, &bytes).await?;
        Ok(())
    })
    .await?;

    let mut fresh_settings = SmtpSettings::parse(&smtp.url()).map_err(anyhow::Error::msg)?;
    fresh_settings.pool_size = 0;
    let unpooled = Mailer::new(fresh_settings);
    let fresh = timed(mails, |_| async { unpooled.send(&envelope, &bytes).await.map_err(anyhow::Error::new) }).await?;

    let (step, floor, lettre, fresh) = (summary(step), summary(floor), summary(lettre), summary(fresh));
    let ratio = step["p50"].as_f64().unwrap_or(0.0) / floor["p50"].as_f64().unwrap_or(1.0);
    let python = landlord_testkit::capture_python()?;
    let version = |program: &std::path::Path, args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(program).args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let report = serde_json::json!({
        "benchmark": "mail",
        "capture_server": "aiosmtpd (Maildir handler) on 127.0.0.1",
        "goal": "a welcome mail over a reused connection well under 5 ms p50",
        "step_ms": step,
        "floor_pooled_nodelay_send_ms": floor,
        "step_over_floor_p50": ratio,
        "lettre_pooled_transport_ms": lettre,
        "new_connection_per_mail_ms": fresh,
        "mails_per_row": mails,
        "machine": machine(),
        "versions": {
            "aiosmtpd": version(&python, &["-m", "aiosmtpd", "--version"])?,
            "nats_server": version(&landlord_testkit::nats_server_binary()?, &["--version"])?,
            "rustc": version(std::path::Path::new("rustc"), &["--version"])?,
        },
    });
    let ms = |v: &serde_json::Value| {
        format!("{:.2} / {:.2}", v["p50"].as_f64().unwrap_or(0.0), v["p99"].as_f64().unwrap_or(0.0))
    };
    let md = format!(
        "# bench-mail\n\nOne welcome mail at a time to aiosmtpd on 127.0.0.1, {mails} mails per row, in one run.\n\n\
         | path | p50 / p99 ms |\n|---|---|\n\
         | step: `Notifier::run` (compose, ledger claim + mark in JetStream KV, pooled TCP_NODELAY send) | {} |\n\
         | floor: the same message over a pooled TCP_NODELAY connection | {} |\n\
         | lettre's pooled transport (no TCP_NODELAY) | {} |\n\
         | a new SMTP connection per mail | {} |\n\n\
         Step / floor at p50: {ratio:.2}. Goal: the step well under 5 ms p50.\n\nVersions: {}\n",
        ms(&step),
        ms(&floor),
        ms(&lettre),
        ms(&fresh),
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("mail", report, &md, &run)
}
