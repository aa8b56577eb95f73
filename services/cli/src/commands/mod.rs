//! One module per group of verbs, over what they share: [`Ctx`] — the
//! output format, the API client and the NATS settings, resolved once from
//! flags, environment and the config file's context.

pub mod bulk;
pub mod context;
pub mod dlq;
pub mod events;
pub mod lifecycle;
pub mod nats;
pub mod request;
pub mod tenants;
pub mod webhooks;

use std::io::IsTerminal as _;

use anyhow::Result;
use landlord_runtime::Env;

use crate::api::{Api, ApiError, Exit};
use crate::cli::{Cli, Command, Format};
use crate::config::{self, ConfigFile};

/// What every verb needs, resolved once.
#[derive(Debug)]
pub struct Ctx {
    pub format: Format,
    url: Option<String>,
    token: Option<String>,
    /// The context's NATS URL and namespace, for when the environment has none.
    nats_url: Option<String>,
    namespace: Option<String>,
}

impl Ctx {
    /// Flags and environment first, then the chosen (or current) context.
    pub fn resolve(cli: &Cli) -> Result<Self> {
        let path = config::path();
        let file = match &path {
            Ok(path) => ConfigFile::load(path)?,
            Err(_) => ConfigFile::default(),
        };
        let context = match &path {
            Ok(path) => file.select(cli.global.context.as_deref(), path)?.cloned(),
            Err(error) if cli.global.context.is_some() => return Err(anyhow::anyhow!("{error}")),
            Err(_) => None,
        };
        let context = context.unwrap_or_default();
        Ok(Self {
            format: cli.global.output,
            url: cli.global.url.clone().or(context.url),
            token: cli.global.token.clone().or(context.token),
            nats_url: context.nats_url,
            namespace: context.namespace,
        })
    }

    pub fn api(&self) -> Result<Api, ApiError> {
        Api::new(self.url.as_deref().ok_or(ApiError::NoUrl)?, self.token.clone())
    }

    /// The runtime's variables, the context's NATS settings filling gaps.
    pub fn nats_env(&self) -> Env {
        let nats_url = self.nats_url.clone();
        let namespace = self.namespace.clone();
        Env::from_fn(move |name| {
            let set = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            set.or_else(|| match name {
                "LANDLORD_NATS_URL" => nats_url.clone(),
                "LANDLORD_NAMESPACE" => namespace.clone(),
                _ => None,
            })
        })
    }
}

/// Runs the verb; its exit status.
pub async fn run(cli: Cli, url_on_command_line: (Option<String>, Option<String>)) -> Result<Exit> {
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "landlord", &mut std::io::stdout());
            return Ok(Exit::Done);
        }
        Command::Context(verb) => return context::run(verb, cli.global.output, url_on_command_line),
        _ => {}
    }
    let ctx = Ctx::resolve(&cli)?;
    match cli.command {
        Command::Tenants(verb) => tenants::run(&ctx, verb).await,
        Command::Sagas(crate::cli::Sagas::Show { key }) => tenants::saga(&ctx, &key).await,
        Command::Events(verb) => events::run(&ctx, verb).await,
        Command::Dlq(verb) => dlq::run(&ctx, verb).await,
        Command::Webhooks(verb) => webhooks::run(&ctx, verb).await,
        Command::Audit { remove_orphans } => {
            Ok(if crate::audit::run(remove_orphans).await? { Exit::Done } else { Exit::Failed })
        }
        Command::Request(args) => nats::request(&ctx, &args).await,
        Command::Watch { key, timeout } => nats::watch(&ctx, &key, timeout).await,
        Command::Completions { .. } | Command::Context(_) => Ok(Exit::Done),
    }
}

/// Asks on the terminal whether to go on; off a terminal, `--yes` is needed.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(UsageError(format!("{question}: not on a terminal to ask; give --yes (or --dry-run)")));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// A usage problem found after parsing: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
