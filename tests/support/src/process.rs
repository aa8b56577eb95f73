//! Child processes that never outlive the test binary.
//!
//! Every child is forked by one long-lived thread and asks the kernel for
//! SIGKILL when that thread dies (PR_SET_PDEATHSIG): the signal is tied to
//! the forking *thread*, and test threads come and go. So a test binary that
//! ends, panics or is killed leaves no server behind.
//!
//! A Rust service started with [`Process::start`] is also watched for
//! panics: when it is dropped (stopped by the test, or restarted), its log is
//! searched for the line Rust's panic hook writes, and a panic found fails
//! the test that held it (issue 23: a panic anywhere in a service fails the
//! suite, even one the service survived, such as a panicking request task).
//! So does a refusal by the NATS server of something the service did on
//! the bus (a `Permissions Violation`, where the e2e stack's bus users are
//! on): each service's bus user allows what it needs, so a refusal is a
//! service doing what it should not — work that silently does not happen.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel lives in a static and never closes: this thread
                // (the children's "parent") lives as long as the process.
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawns `command` so that it is killed when this process exits.
pub(crate) fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((command, tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// uid and gid of a user, if it exists.
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // getpwnam returns a pointer into static storage; copy out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

pub(crate) fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A new directory under the system temp dir, named after this process so
/// that leftovers of dead test runs can be recognised and removed.
pub fn scratch_dir(kind: &str) -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let prefix = format!("landlord-test-{kind}-");
    // Remove what earlier, finished test binaries left behind.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(&prefix) {
                let pid: i32 = rest.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                if pid > 0 && unsafe { libc::kill(pid, 0) } != 0 {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = base.join(format!("{prefix}{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The lines of `log` that Rust's default panic hook starts a panic with:
/// `thread '<name>' panicked at <file>:<line>:<column>:` (since Rust 1.92
/// with the thread id, `thread '<name>' (<id>) panicked at …`). Only a line
/// that begins so counts: a log line merely quoting the words (a request
/// body, an error message, a log field) starts with a timestamp or a level,
/// and a multi-line message the services log has its lines indented or
/// escaped by the tracing formatter.
pub fn panic_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let Some(rest) = line.strip_prefix("thread '") else { return false };
            // After the thread's name: `' panicked at ` or `' (<id>) panicked at `.
            let Some((_, after_name)) = rest.split_once('\'') else { return false };
            let after_id = match after_name.strip_prefix(" (") {
                Some(id) => match id.split_once(')') {
                    Some((digits, after)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => after,
                    _ => return false,
                },
                None => after_name,
            };
            after_id.starts_with(" panicked at ")
        })
        .collect()
}

/// The lines of `log` that tell of the NATS server refusing the client
/// something: `Permissions Violation for Publish to "<subject>"` (or for a
/// subscription), as async-nats reports the server's `-ERR` and the
/// runtime logs it (twice: the connection event and the refusal).
pub fn refusal_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains("Permissions Violation")).collect()
}

/// A running child with its stdout and stderr in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
    /// A Rust service of ours: a panic in its log fails the test ([`Drop`]).
    watch_panics: bool,
    /// Likewise a bus permissions violation in its log.
    watch_refusals: bool,
}

impl Process {
    /// Starts `program` with `args` and extra environment variables; output
    /// goes to `<log_dir>/<name>.log` (appended, so restarts keep history).
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(command).map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))?;
        Ok(Self { name: name.to_owned(), child, log, status: None, watch_panics: true, watch_refusals: true })
    }

    /// Starts `command`, a server, with its output appended to `log`, and
    /// waits until it accepts connections on 127.0.0.1:`port`.
    pub(crate) async fn start_listening(
        name: &str,
        mut command: Command,
        port: u16,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = File::options().create(true).append(true).open(&log)?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = spawn_tied(command).map_err(|e| anyhow::anyhow!("cannot start {program}: {e}"))?;
        let mut process = Self::from_child(name, child, log);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = process.try_status() {
                anyhow::bail!("{name} exited ({}):\n{}", Self::describe(status), process.output());
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} not listening after 20s:\n{}", process.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(process)
    }

    /// A server that is not ours (nats-server, PostgreSQL, …): its log is
    /// not searched for Rust panics.
    pub(crate) fn from_child(name: &str, child: Child, log: PathBuf) -> Self {
        Self { name: name.to_owned(), child, log, status: None, watch_panics: false, watch_refusals: false }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The panics its log holds so far (the first line of each), in order.
    /// The log is appended across restarts under the same name, so this
    /// covers every run of the service in its log directory.
    pub fn panics(&self) -> Vec<String> {
        panic_lines(&self.output()).into_iter().map(str::to_owned).collect()
    }

    /// The lines of its log so far where the NATS server refused it
    /// something ([`refusal_lines`]), across restarts like [`Self::panics`].
    pub fn refusals(&self) -> Vec<String> {
        refusal_lines(&self.output()).into_iter().map(str::to_owned).collect()
    }

    /// Fails with the panics and the log if the process logged any.
    pub fn check_no_panics(&self) -> anyhow::Result<()> {
        let panics = self.panics();
        anyhow::ensure!(
            panics.is_empty(),
            "{} panicked ({} panic(s)): {panics:#?}\nits log ({}):\n{}",
            self.name,
            panics.len(),
            self.log.display(),
            self.output()
        );
        Ok(())
    }

    /// Fails with the refusals if the process logged any.
    pub fn check_no_refusals(&self) -> anyhow::Result<()> {
        let refusals = self.refusals();
        anyhow::ensure!(
            refusals.is_empty(),
            "the NATS server refused {} what its bus user may not do ({} line(s); deploy/nats/accounts.conf): \
             {refusals:#?}\nits log: {}",
            self.name,
            refusals.len(),
            self.log.display(),
        );
        Ok(())
    }

    /// Stops watching for panics (a test that makes a service panic on
    /// purpose).
    pub fn allow_panics(&mut self) {
        self.watch_panics = false;
    }

    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            let pid = i32::try_from(self.child.id()).unwrap_or(0);
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGSTOP: the process keeps its sockets but runs nothing, as a long
    /// GC pause or a frozen VM looks to its peers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.status = Some(status);
        }
    }

    /// The exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} did not exit within {timeout:?}; log:\n{}", self.name, self.output());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Describes an exit status: code or signal.
    pub fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => "unknown".into(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill();
        }
        // Killed and reaped: the log is complete.
        let checks =
            [self.watch_panics.then(|| self.check_no_panics()), self.watch_refusals.then(|| self.check_no_refusals())];
        let failures: Vec<String> =
            checks.into_iter().flatten().filter_map(Result::err).map(|e| format!("{e:#}")).collect();
        if failures.is_empty() {
            return;
        }
        let failures = failures.join("\n");
        if std::thread::panicking() {
            // A second panic would abort the test binary; say it instead.
            eprintln!("{failures}");
        } else {
            panic!("{failures}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{panic_lines, refusal_lines};

    #[test]
    fn only_the_panic_hooks_own_line_counts() {
        let log = "\
2026-05-01T10:00:00Z  INFO gateway: request path=/v1/tenants status=202
thread 'tokio-runtime-worker' (4242) panicked at services/gateway/src/events.rs:80:61:
attempt to add with overflow
thread 'main' panicked at src/main.rs:2:5:
2026-05-01T10:00:01Z  WARN gateway: display name \"thread 'x' panicked at a.rs:1:1\" refused
  thread 'x' panicked at indented.rs:1:1:
thread 'x' (12a) panicked at not-an-id.rs:1:1:
thread 'x' (4242) did not panic at all
the words panicked at appear here
";
        assert_eq!(
            panic_lines(log),
            [
                "thread 'tokio-runtime-worker' (4242) panicked at services/gateway/src/events.rs:80:61:",
                "thread 'main' panicked at src/main.rs:2:5:",
            ]
        );
        assert!(panic_lines("").is_empty());
    }

    #[test]
    fn a_refusal_is_the_servers_permissions_violation() {
        let log = "\
2026-12-06T17:07:04.856601Z  INFO event: server error: nats: Permissions Violation for Publish to \"t1.v1.events.a.requested\"
2026-12-06T17:07:04.856634Z ERROR nats server refused error=nats: Permissions Violation for Publish to \"t1.v1.events.a.requested\"
2026-12-06T17:07:05.000000Z  WARN sending ack progress failed error=timed out
";
        assert_eq!(refusal_lines(log).len(), 2);
        assert!(refusal_lines("2026-12-06T17:07:05Z  INFO permissions checked").is_empty());
    }

    /// A service whose log tells of a refusal fails the test that held it
    /// once it is dropped, like a panic does.
    #[test]
    #[should_panic(expected = "the NATS server refused refuser")]
    fn a_service_refused_on_the_bus_fails_the_test_when_dropped() {
        let dir = super::scratch_dir("refusal").unwrap();
        let line = r#"echo 'ERROR nats server refused error=nats: Permissions Violation for Publish to "t.v1.x"'"#;
        let args = ["-c".to_owned(), line.to_owned()];
        let mut service = super::Process::start("refuser", std::path::Path::new("/bin/sh"), &args, &[], &dir).unwrap();
        while service.try_status().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(service);
    }
}
