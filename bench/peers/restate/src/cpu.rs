//! CPU time of this process and of everything it started (the stack's
//! servers and services, restate-server, the peer's service), from /proc:
//! user + system time of each live process, plus that of its children it
//! has reaped (PostgreSQL's backends that ended, counted on the postmaster).

use std::collections::{BTreeMap, HashMap};

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    landlord_testkit::bench::command_output("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

/// The fields after `comm`: state, ppid, ...; utime is field 14 of the
/// line (index 11 after the closing parenthesis).
fn stat(pid: u32) -> Option<(u32, u64)> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &line[line.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11..15)?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    Some((ppid, ticks))
}

/// A process's name for the results: its program, what it runs for the
/// Python server.
fn label(pid: u32, own: u32) -> String {
    if pid == own {
        return "bench (drivers; the floor's step code)".into();
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let program = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_owned()).unwrap_or_default();
    if program.starts_with("python") {
        return "aiosmtpd (python)".into();
    }
    if program.starts_with("postgres") {
        return "postgres (all backends)".into();
    }
    if program == "restate-peer" && args.get(1).is_some_and(|a| a == "serve") {
        return "restate-peer serve (SDK + step code)".into();
    }
    program
}

/// CPU ticks per process label, of this process and its descendants.
pub fn snapshot() -> HashMap<String, u64> {
    let own = std::process::id();
    let mut parent: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(s) = stat(pid)
            {
                parent.insert(pid, s);
            }
        }
    }
    let mut tree = vec![own];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|(_, (pp, _))| *pp == p).map(|(pid, _)| *pid));
        i += 1;
    }
    let mut out = HashMap::new();
    for pid in tree {
        if let Some((_, ticks)) = parent.get(&pid) {
            *out.entry(label(pid, own)).or_default() += ticks;
        }
    }
    out
}

/// CPU milliseconds per process label, summed over turns.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub ms: BTreeMap<String, f64>,
    pub tenants: usize,
}

impl Usage {
    /// Adds what was used between `before` and `after` while `tenants` ran.
    pub fn add(&mut self, before: &HashMap<String, u64>, after: &HashMap<String, u64>, tenants: usize) {
        let tick_ms = 1000.0 / ticks_per_second();
        for (name, ticks) in after {
            let delta = ticks.saturating_sub(before.get(name).copied().unwrap_or(0));
            *self.ms.entry(name.clone()).or_default() += delta as f64 * tick_ms;
        }
        self.tenants += tenants;
    }

    /// CPU milliseconds per tenant, per process and in total.
    pub fn per_tenant(&self) -> (BTreeMap<String, f64>, f64) {
        let n = self.tenants.max(1) as f64;
        let each: BTreeMap<String, f64> =
            self.ms.iter().map(|(k, v)| (k.clone(), (v / n * 100.0).round() / 100.0)).collect();
        let total = self.ms.values().sum::<f64>() / n;
        (each, (total * 100.0).round() / 100.0)
    }
}
