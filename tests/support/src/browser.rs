//! A real headless Chromium, driven over WebDriver: Debian's `chromium` and
//! `chromium-driver` (installed by `deploy/install.sh`), chromedriver on a
//! free port as a child of the test, a [`fantoccini::Client`] on it.
//!
//! chromedriver is spoken to over plain HTTP on 127.0.0.1, so fantoccini is
//! built without TLS (its `rustls-tls` feature would bring hyper-rustls's
//! default aws-lc, compiled from C). chromedriver is started in a process
//! group of its own, and Chromium's processes (its children) with it: the
//! whole group is killed when the [`Browser`] is dropped, and chromedriver
//! itself when the test binary dies (like every child of the testkit).
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::process::Process;

// The WebDriver client's types (Locator, elements::Element, …) for the tests.
pub use fantoccini;

/// The window every test and screenshot sees.
pub const WINDOW: (u32, u32) = (1280, 900);

/// chromedriver: `LANDLORD_CHROMEDRIVER`, else Debian's `/usr/bin/chromedriver`.
pub fn chromedriver_binary() -> Result<PathBuf> {
    let path = std::env::var_os("LANDLORD_CHROMEDRIVER").map_or_else(|| "/usr/bin/chromedriver".into(), PathBuf::from);
    anyhow::ensure!(
        path.exists(),
        "chromedriver not found at {} — run deploy/install.sh (or set LANDLORD_CHROMEDRIVER)",
        path.display()
    );
    Ok(path)
}

/// Chromium: `LANDLORD_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_binary() -> Result<PathBuf> {
    let path = std::env::var_os("LANDLORD_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    anyhow::ensure!(
        path.exists(),
        "Chromium not found at {} — run deploy/install.sh (or set LANDLORD_CHROMIUM)",
        path.display()
    );
    Ok(path)
}

/// chromedriver and one headless Chromium session on it.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Driver,
    dir: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port, waits until its `/status` says
    /// ready, and opens a headless Chromium session with its own profile.
    pub async fn start() -> Result<Self> {
        let chromium = chromium_binary()?;
        let dir = crate::scratch_dir("browser")?;
        let port = crate::free_port();
        let mut command = Command::new(chromedriver_binary()?);
        command.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1").process_group(0);
        let process = Process::start_listening("chromedriver", command, port, dir.join("chromedriver.log")).await?;
        let driver = Driver { group: i32::try_from(process.pid()).unwrap_or(0), process };

        // Listening is not ready yet: chromedriver says when on /status.
        let ready = crate::eventually("chromedriver's /status to say ready", Duration::from_secs(20), || async move {
            tokio::task::spawn_blocking(move || driver_ready(port)).await.ok()?.then_some(())
        })
        .await;
        ready.with_context(|| driver.process.output())?;

        let (width, height) = WINDOW;
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", dir.join("profile").display()),
                    // /dev/shm is small in containers; Chromium then crashes tabs.
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            anyhow::bail!("capabilities are not an object");
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .with_context(|| format!("no Chromium session from chromedriver:\n{}", driver.process.output()))?;
        Ok(Self { client, driver, dir })
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where chromedriver's log and Chromium's profile are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// What chromedriver wrote so far.
    pub fn driver_log(&self) -> String {
        self.driver.process.output()
    }

    /// Opens `url` and waits for the document to be loaded.
    pub async fn open(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.with_context(|| format!("cannot open {url}"))
    }

    /// The element `css` once it is in the page, polled until `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<fantoccini::elements::Element> {
        self.wait_until(&format!("{css} to appear"), timeout, || async move {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// The text of the element `css` once `accept` takes it, polled until
    /// `timeout` (the element may appear, disappear and change meanwhile).
    pub async fn wait_text(&self, css: &str, timeout: Duration, accept: impl Fn(&str) -> bool) -> Result<String> {
        let accept = &accept;
        let last = std::sync::Mutex::new(None::<String>);
        let last_ref = &last;
        let found = self
            .wait_until(&format!("the text of {css}"), timeout, || async move {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                let text = element.text().await.ok()?;
                let accepted = accept(&text);
                if let Ok(mut last) = last_ref.lock() {
                    *last = Some(text.clone());
                }
                accepted.then_some(text)
            })
            .await;
        found.map_err(|error| {
            let last = last.lock().ok().and_then(|l| l.clone());
            error.context(format!("last text of {css}: {last:?}"))
        })
    }

    /// Polls `check` until it returns `Some`, at most until `timeout`; the
    /// error carries the page's URL and text as they were at the end.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match crate::eventually(what, timeout, check).await {
            Ok(value) => Ok(value),
            Err(error) => Err(error.context(self.describe_page().await)),
        }
    }

    /// The current URL and the text of the page's body, for a failure message.
    pub async fn describe_page(&self) -> String {
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(error) => format!("(no body: {error})"),
        };
        format!("page {url}:\n{text}")
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        Ok(self.client.screenshot().await?)
    }

    /// Ends the session (Chromium quits), then chromedriver.
    pub async fn close(self) -> Result<()> {
        let result = self.client.clone().close().await;
        drop(self);
        Ok(result?)
    }
}

/// chromedriver in a process group of its own, which Chromium's processes
/// join: dropping it kills them all.
#[derive(Debug)]
struct Driver {
    group: i32,
    process: Process,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.group > 0 {
            unsafe {
                libc::killpg(self.group, libc::SIGKILL);
            }
        }
    }
}

/// Whether chromedriver's `GET /status` says ready. HTTP/1.1 by hand:
/// chromedriver refuses HTTP/1.0, which the testkit's `http_get` speaks.
fn driver_ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // chromedriver keeps the connection open despite `Connection: close`:
    // read until the answer says ready, the peer closes, or a read times out.
    let (mut response, mut chunk) = (Vec::new(), [0_u8; 4096]);
    let ready = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).replace(' ', "");
        text.starts_with("HTTP/1.1200") && text.contains("\"ready\":true")
    };
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if ready(&response) {
            return true;
        }
    }
    ready(&response)
}
