//! `landlord context list|use|set`.

use anyhow::Result;
use serde_json::json;

use super::UsageError;
use crate::api::Exit;
use crate::cli::{Context, Format};
use crate::config::{self, ConfigFile};
use crate::output;

/// `url_and_token`: the `--url` and `--token` given on this command line
/// (not from the environment: a `context set` stores what it was told).
pub fn run(verb: Context, format: Format, url_and_token: (Option<String>, Option<String>)) -> Result<Exit> {
    let path = config::path()?;
    let mut file = ConfigFile::load(&path)?;
    match verb {
        Context::List => {
            let items: Vec<_> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    json!({
                        "name": name,
                        "current": file.current.as_deref() == Some(name),
                        "url": c.url,
                        "nats_url": c.nats_url,
                        "namespace": c.namespace,
                        "token": c.token.is_some(),
                    })
                })
                .collect();
            output::items(
                format,
                &items,
                &[
                    ("CURRENT", |c| if c["current"] == true { "*".into() } else { String::new() }),
                    ("NAME", |c| output::cell(c.get("name"))),
                    ("URL", |c| output::cell(c.get("url"))),
                    ("TOKEN", |c| if c["token"] == true { "yes".into() } else { "no".into() }),
                    ("NATS", |c| output::cell(c.get("nats_url"))),
                ],
            );
        }
        Context::Use { name } => {
            if !file.contexts.contains_key(&name) {
                let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
                anyhow::bail!(UsageError(format!(
                    "no context {name:?} in {} (known: {})",
                    path.display(),
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                )));
            }
            file.current = Some(name.clone());
            file.save(&path)?;
            output::log(format!("current context: {name}"));
        }
        Context::Set { name, nats_url, namespace, make_current } => {
            let (url, token) = url_and_token;
            let context = file.contexts.entry(name.clone()).or_default();
            context.url = url.or(context.url.take());
            context.token = token.or(context.token.take());
            context.nats_url = nats_url.or(context.nats_url.take());
            context.namespace = namespace.or(context.namespace.take());
            if make_current || file.current.is_none() {
                file.current = Some(name.clone());
            }
            file.save(&path)?;
            output::log(format!("context {name} saved in {}", path.display()));
        }
    }
    Ok(Exit::Done)
}
