//! The command line as clap types: every verb, its flags and its help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Appended to `landlord --help`.
const AFTER_HELP: &str = "\
Examples:
  landlord context set prod --url https://landlord.example.com --token \"$TOKEN\"
  landlord tenants list --status ACTIVE -o json
  landlord tenants request acme --admin-email ada@acme.test --plan standard
  landlord tenants request --from tenants.csv
  landlord tenants suspend acme --reason \"unpaid invoice\"
  landlord tenants suspend --label team=x --status ACTIVE --reason audit --dry-run
  landlord events tail --tenant acme --since 10m
  landlord dlq list
  landlord webhooks add https://hooks.example.com/landlord --event activated
  landlord completions bash > /etc/bash_completion.d/landlord

Where the API is: --url/--token, else LANDLORD_URL/LANDLORD_TOKEN, else the
context named by --context (or LANDLORD_CONTEXT, or `landlord context use`)
in $XDG_CONFIG_HOME/landlord/config.toml (~/.config/landlord/config.toml).
The NATS verbs (events tail, dlq, tenants request --via-nats) read
LANDLORD_NATS_URL and LANDLORD_NAMESPACE, else the context's nats_url and
namespace.

Data goes to stdout, logs and progress to stderr.

Exit status:
  0  done
  1  the operation failed (or was refused: 409, 422, a saga that failed)
  2  usage: the command line is wrong
  3  not found (404)
  4  refused by auth (401, 403)";

/// `landlord`: Landlord's tenants, sagas, events and dead letters from a
/// terminal.
#[derive(Debug, Parser)]
#[command(name = "landlord", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The gateway's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "LANDLORD_URL")]
    pub url: Option<String>,
    /// A bearer token for the API (`landlord-gateway mint-token`).
    #[arg(long, global = true, env = "LANDLORD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A named context of the config file.
    #[arg(long, global = true, env = "LANDLORD_CONTEXT")]
    pub context: Option<String>,
    /// How data is printed on stdout.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, inspect, request, follow and operate tenants.
    #[command(subcommand)]
    Tenants(Tenants),
    /// A tenant's latest saga, step by step.
    #[command(subcommand)]
    Sagas(Sagas),
    /// The lifecycle events stream (NATS).
    #[command(subcommand)]
    Events(Events),
    /// Dead letters: messages no consumer could handle (NATS).
    #[command(subcommand)]
    Dlq(Dlq),
    /// Compare the backends with the control plane's resources (orphans, missing).
    #[command(after_help = "Exit status: 0 when nothing drifts (or every orphan was removed), 1 otherwise.")]
    Audit {
        /// Remove orphans through the owning worker's own compensation.
        #[arg(long)]
        remove_orphans: bool,
    },
    /// Outbound webhooks: endpoints lifecycle events are POSTed to, and their deliveries.
    #[command(subcommand)]
    Webhooks(crate::commands::webhooks::Webhooks),
    /// Named API endpoints and tokens in the config file.
    #[command(subcommand)]
    Context(Context),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Kept for scripts: `tenants request --via-nats`.
    #[command(hide = true)]
    Request(Box<RequestArgs>),
    /// Kept for scripts: a tenant's events from the start of the stream (NATS).
    #[command(hide = true)]
    Watch {
        key: String,
        #[arg(long, default_value = "120s", value_parser = duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Tenants, oldest first.
    #[command(after_help = "Example: landlord tenants list --status FAILED -o jsonl")]
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many tenants.
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// One tenant by key or id, with its resources and latest saga.
    Get { key: String },
    /// Ask for a tenant (or many, --from) and follow it to ACTIVE.
    #[command(after_help = "\
Examples:
  landlord tenants request acme --admin-email ada@acme.test --domain acme.test
  landlord tenants request --from tenants.csv   # columns: key,admin_email[,name,plan,tier,first_name,last_name,domains,labels,idempotency_key]

A file's rows are asked for with the idempotency key `cli-<key>` (or the
row's idempotency_key): running the same file twice creates nothing new.")]
    Request(Box<RequestArgs>),
    /// Follow a tenant's latest saga to its end.
    Watch {
        key: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a tenant's running saga; what it did is undone; bulk with a filter.
    Cancel {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Provision a FAILED tenant again; bulk with a filter.
    #[command(after_help = "Example: landlord tenants retry --status FAILED --yes")]
    Retry {
        #[command(flatten)]
        target: Target,
    },
    /// Block a tenant's access (reason required); bulk with a filter.
    #[command(after_help = "Examples:
  landlord tenants suspend acme --reason \"unpaid invoice\"
  landlord tenants suspend --status ACTIVE --label team=x --reason audit --yes")]
    Suspend {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: String,
    },
    /// Give a SUSPENDED tenant its access back; bulk with a filter.
    Resume {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change a tenant's name, domains, admin, labels or plan (same tier).
    Update(Box<UpdateArgs>),
    /// Offboard: suspend, export, purge after a grace period; bulk with a filter.
    #[command(after_help = "Example: landlord tenants delete acme --reason churned --grace 7d")]
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: String,
        /// The grace period before the purge, e.g. 7d (the gateway's default when absent).
        #[arg(long, value_parser = duration)]
        grace: Option<Duration>,
        /// Purge without an export.
        #[arg(long)]
        no_export: bool,
    },
    /// Bring a DELETION_SCHEDULED tenant back to ACTIVE; bulk with a filter.
    Restore {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Export a tenant's data to the archive; bulk with a filter.
    Export {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A tenant's audit log: who asked for what, and why.
    Audit {
        key: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Which tenants: `--status`, `--plan`, `--label k=v` (all must match).
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// A status, e.g. ACTIVE.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub plan: Option<String>,
    /// key=value; repeat for several.
    #[arg(long = "label", value_parser = label)]
    pub labels: Vec<(String, String)>,
}

/// Following an operation to its end.
#[derive(Debug, Clone, Args)]
pub struct Wait {
    /// Return once the request is accepted.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this long (exit 1; the saga goes on).
    #[arg(long, default_value = "120s", value_parser = duration)]
    pub timeout: Duration,
    /// How often the tenant is read while following.
    #[arg(long, default_value = "250ms", value_parser = duration, hide = true)]
    pub poll: Duration,
}

/// One tenant by key, or every tenant a filter matches.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The tenant's key; without it, the tenants the filter matches.
    #[arg(required_unless_present_any = ["status", "plan", "labels"])]
    pub key: Option<String>,
    #[command(flatten)]
    pub filter: Filter,
    /// With a filter: act without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// With a filter: list what would be acted on, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Sent as Idempotency-Key (one tenant only; default: a new uuid).
    #[arg(long, conflicts_with_all = ["status", "plan", "labels"])]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The tenant key (not with --from).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub key: Option<String>,
    /// A CSV (with a header row) or JSONL file of tenants to ask for.
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[arg(long, required_unless_present = "from")]
    pub admin_email: Option<String>,
    /// The display name (default: the key).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "standard")]
    pub plan: String,
    /// pooled, bridge or silo (default: the plan's).
    #[arg(long)]
    pub tier: Option<String>,
    #[arg(long, default_value = "")]
    pub first_name: String,
    #[arg(long, default_value = "")]
    pub last_name: String,
    /// Repeat for several.
    #[arg(long = "domain")]
    pub domains: Vec<String>,
    /// key=value; repeat for several.
    #[arg(long = "label", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// Default `cli-<key>`: the same command twice asks once.
    #[arg(long, visible_alias = "id")]
    pub idempotency_key: Option<String>,
    /// Publish a TenantRequested on NATS instead of calling the API.
    #[arg(long)]
    pub via_nats: bool,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    pub key: String,
    #[arg(long)]
    pub name: Option<String>,
    /// The tenant's domains, all of them (repeat).
    #[arg(long = "domain")]
    pub domains: Vec<String>,
    #[arg(long)]
    pub admin_email: Option<String>,
    #[arg(long, requires = "admin_email")]
    pub first_name: Option<String>,
    #[arg(long, requires = "admin_email")]
    pub last_name: Option<String>,
    /// The tenant's labels, all of them: key=value (repeat).
    #[arg(long = "label", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// Another plan of the same tier.
    #[arg(long)]
    pub plan: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Subcommand)]
pub enum Sagas {
    /// The latest saga of a tenant (key or id): its steps, attempts, errors.
    Show { key: String },
}

#[derive(Debug, Subcommand)]
pub enum Events {
    /// Print events as they arrive (Ctrl-C ends).
    #[command(after_help = "Example: landlord events tail --tenant acme --type step_failed --since 1h -o jsonl")]
    Tail {
        #[arg(long)]
        tenant: Option<String>,
        /// An event name such as step_failed or suspended.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Start this long ago (e.g. 10m) or at an RFC 3339 time; default: new events only.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Stop when no event came for this long.
        #[arg(long, value_parser = duration)]
        idle: Option<Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// Dead letters, oldest first.
    List {
        /// Only those whose original subject contains this.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One dead letter: where it came from, why, its message decoded.
    Show { sequence: u64 },
    /// Publish dead letters again on their original subject, then remove them.
    #[command(after_help = "Examples:\n  landlord dlq redrive 42\n  landlord dlq redrive --all --subject idp --yes")]
    Redrive {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequences: Vec<u64>,
        /// Every dead letter (matching --subject).
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        subject: Option<String>,
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove dead letters for good.
    Discard {
        #[arg(required = true)]
        sequences: Vec<u64>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Context {
    /// The contexts of the config file; * marks the current one.
    List,
    /// Make a context the current one.
    Use { name: String },
    /// Create or change a context: the --url and --token given on this command line.
    #[command(after_help = "Example: landlord context set local --url http://127.0.0.1:8080 --token \"$TOKEN\" --use")]
    Set {
        name: String,
        #[arg(long)]
        nats_url: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        /// Also make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("{raw:?} is not a duration such as 30s or 2m: {e}"))
}

fn label(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{raw:?} is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_label_is_key_equals_value() {
        assert_eq!(label("team=x=y").unwrap(), ("team".into(), "x=y".into()));
        assert!(label("team").is_err() && label("=x").is_err());
    }
}
