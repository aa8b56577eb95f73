//! More than one process of a service ([`Stack::start_replica`]), and the
//! stack on a three-node NATS cluster ([`Stack::use_cluster`]): what the
//! cluster test and `just bench-cluster` run (issue 28, docs/scaling.md).

use std::time::Duration;

use anyhow::Result;
use landlord_testkit::{NatsCluster, Process, eventually, free_port, http_get, workspace_binary};

use crate::Stack;

impl Stack {
    /// Points every service (and the CLI) at `cluster` with streams of
    /// three replicas. Call before the services start. A cluster of
    /// [`NatsCluster::start_with_accounts`] for this stack's namespace keeps
    /// the bus users on; one of [`NatsCluster::start`] has none, and every
    /// client then connects without credentials ([`crate::bus`]).
    pub fn use_cluster(&mut self, cluster: &NatsCluster) {
        self.accounts = cluster.has_accounts();
        self.overrides.push(("LANDLORD_NATS_URL".into(), cluster.urls()));
        self.overrides.push(("LANDLORD_STREAM_REPLICAS".into(), "3".into()));
    }

    /// One more process of service `name` (`<name>-<index>` in its log's
    /// name) on the stack's settings and its own health port, ready. The
    /// caller keeps it: dropping the [`Process`] kills it.
    pub async fn start_replica(&self, name: &str, index: usize, log_dir: &std::path::Path) -> Result<Process> {
        let port = free_port();
        let mut env = self.service_env_for(name);
        env.retain(|(k, _)| k != "LANDLORD_HTTP_ADDR");
        env.push(("LANDLORD_HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
        let label = format!("{name}-{index}");
        let binary = workspace_binary(&format!("landlord-{name}"))?;
        let mut process = Process::start(&label, &binary, &[], &env, log_dir)?;
        let ready = eventually(&format!("{label} to be ready"), Duration::from_secs(30), || {
            let exited = process.try_status().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                let ok = tokio::task::spawn_blocking(move || http_get(port, "/readyz").is_some_and(|(s, _)| s == 200));
                ok.await.unwrap_or(false).then_some(true)
            }
        })
        .await;
        match ready {
            Ok(true) => Ok(process),
            Ok(false) => anyhow::bail!("{label} exited at start:\n{}", process.output()),
            Err(error) => Err(error.context(process.output())),
        }
    }
}
