//! What needs no stack: usage errors, help, completions, contexts.

use anyhow::Result;

use crate::support::{assert_exit, code, landlord, stdout, text};

async fn bare(args: &[&str], config: &std::path::Path) -> Result<std::process::Output> {
    landlord(args, &[], config).await
}

#[tokio::test]
async fn a_wrong_command_line_exits_2_and_help_documents_the_exit_codes() -> Result<()> {
    let home = tempfile::tempdir()?;
    for args in [
        &["tenants", "frobnicate"][..],
        &["tenants", "suspend", "acme"],          // no --reason
        &["tenants", "suspend", "--reason", "x"], // neither a key nor a filter
        &["tenants", "list", "-o", "yaml"],
        &["tenants", "request", "acme"],         // no --admin-email
        &["tenants", "list", "--label", "team"], // not key=value
        &["tenants", "delete", "acme", "--reason", "x", "--grace", "soon"],
    ] {
        assert_exit(&bare(args, home.path()).await?, 2);
    }
    // No API anywhere: a usage problem, said so.
    let nowhere = bare(&["tenants", "list"], home.path()).await?;
    assert_exit(&nowhere, 2);
    assert!(text(&nowhere).contains("no API URL"), "{}", text(&nowhere));
    let help = bare(&["--help"], home.path()).await?;
    assert_exit(&help, 0);
    for line in ["0  done", "1  the operation failed", "2  usage", "3  not found", "4  refused by auth", "Examples:"] {
        assert!(stdout(&help).contains(line), "no {line:?} in --help:\n{}", stdout(&help));
    }
    Ok(())
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() -> Result<()> {
    let home = tempfile::tempdir()?;
    for (shell, mark) in [("bash", "_landlord()"), ("zsh", "#compdef landlord"), ("fish", "complete -c landlord")] {
        let output = bare(&["completions", shell], home.path()).await?;
        assert_exit(&output, 0);
        assert!(stdout(&output).contains(mark), "{shell}: {}", text(&output));
        assert!(stdout(&output).contains("suspend"), "{shell} completes the verbs");
    }
    assert_eq!(code(&bare(&["completions", "tcsh"], home.path()).await?), 2);
    Ok(())
}

#[tokio::test]
async fn contexts_are_set_listed_and_chosen_in_the_xdg_config_home() -> Result<()> {
    let home = tempfile::tempdir()?;
    let set = |name: &'static str, url: &'static str| {
        let home = home.path().to_owned();
        async move { bare(&["context", "set", name, "--url", url, "--token", "t0k"], &home).await }
    };
    assert_exit(&set("one", "http://127.0.0.1:1").await?, 0);
    assert_exit(&set("two", "http://127.0.0.1:2").await?, 0);
    let file = home.path().join("landlord/config.toml");
    let written = std::fs::read_to_string(&file)?;
    assert!(written.contains("[contexts.one]") && written.contains("current = \"one\""), "{written}");
    let list = bare(&["context", "list", "-o", "json"], home.path()).await?;
    assert_exit(&list, 0);
    let contexts: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(contexts.as_array().map(Vec::len), Some(2), "{contexts}");
    assert_eq!(contexts[0]["name"], "one");
    assert_eq!(contexts[0]["current"], true);
    assert_eq!(contexts[0]["token"], true, "whether there is a token, never the token");
    assert!(!stdout(&list).contains("t0k"));
    assert_exit(&bare(&["context", "use", "two"], home.path()).await?, 0);
    assert_exit(&bare(&["context", "use", "three"], home.path()).await?, 2);
    let unknown = bare(&["--context", "three", "tenants", "list"], home.path()).await?;
    assert_exit(&unknown, 2);
    assert!(text(&unknown).contains("known: one, two"), "{}", text(&unknown));
    // The current context's URL is the one called (nothing listens there).
    let called = bare(&["tenants", "list"], home.path()).await?;
    assert_exit(&called, 1);
    assert!(text(&called).contains("127.0.0.1:2"), "{}", text(&called));
    let chosen = bare(&["--context", "one", "tenants", "list"], home.path()).await?;
    assert!(text(&chosen).contains("127.0.0.1:1"), "{}", text(&chosen));
    Ok(())
}
