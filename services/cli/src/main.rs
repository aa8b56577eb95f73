//! `landlord`: Landlord's tenants, sagas, events and dead letters from a
//! terminal (docs/cli.md).
//!
//! Most verbs call the gateway's HTTP API ([`api`]), whose URL and token
//! come from `--url`/`--token`, `LANDLORD_URL`/`LANDLORD_TOKEN` or a named
//! context of the config file ([`config`]). `events tail`, `dlq` and
//! `tenants request --via-nats` speak NATS; `audit` reads the backends
//! themselves ([`audit`]). Data goes to stdout ([`output`]: a table, JSON
//! or JSON lines), logs and progress to stderr. Exit status: 0 done, 1 the
//! operation failed, 2 usage, 3 not found, 4 refused by auth.

mod api;
mod audit;
mod cli;
mod commands;
mod config;
mod follow;
mod output;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _};

use crate::api::{ApiError, Exit};
use crate::cli::Cli;
use crate::commands::UsageError;

#[tokio::main]
async fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        // --help and --version exit 0, mistakes 2.
        Err(error) => error.exit(),
    };
    // What `context set` stores: --url and --token typed on its command
    // line, never values that came from the environment.
    let typed = |id: &str| {
        let set = matches.subcommand_matches("context").and_then(|m| m.subcommand_matches("set"))?;
        (set.value_source(id) == Some(ValueSource::CommandLine)).then(|| set.get_one::<String>(id).cloned())?
    };
    let url_and_token = (typed("url"), typed("token"));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let exit = match commands::run(cli, url_and_token).await {
        Ok(exit) => exit,
        Err(error) => {
            output::log(format_args!("{error:#}"));
            exit_for(&error)
        }
    };
    ExitCode::from(exit.code())
}

/// The exit status an error stands for.
fn exit_for(error: &anyhow::Error) -> Exit {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        api.exit()
    } else if error.downcast_ref::<UsageError>().is_some() {
        Exit::Usage
    } else if let Some(config::ConfigError::UnknownContext { .. }) = error.downcast_ref() {
        Exit::Usage
    } else {
        Exit::Failed
    }
}
