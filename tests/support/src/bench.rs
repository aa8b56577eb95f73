//! What every benchmark reports besides its figures: percentiles, the
//! machine, and the versions of what ran.

/// The `p`-quantile (0..=1) of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `{p50, p99, runs}` of milliseconds, in any order.
pub fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    serde_json::json!({ "p50": percentile(&ms, 0.5), "p99": percentile(&ms, 0.99), "runs": ms.len() })
}

/// The first line a command prints, or "unknown".
pub fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU model, cores, memory and kernel of this machine.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 =
        meminfo.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse().ok()).unwrap_or(0);
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": mem_kib / 1024 / 1024,
        "os": command_output("uname", &["-sr"]),
    })
}

/// One benchmark run: its mode and how long it took (issue 27 item 5).
///
/// Every `just bench*` recipe finishes in under ten minutes on a 2-core
/// machine by default; `BENCH_FULL=1` asks for the long run (the sizes the
/// results were first measured with). Each results file says which mode
/// ran, how long the run took and the load average around it
/// ([`Run::json`], [`Run::line`], [`write_results`]).
#[derive(Debug)]
pub struct Run {
    started: std::time::Instant,
    load_before: String,
    full: bool,
}

impl Run {
    /// Starts the clock; reads `BENCH_FULL` (`1`, `true` or `yes`).
    pub fn start() -> Self {
        let full = std::env::var("BENCH_FULL").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Self { started: std::time::Instant::now(), load_before: load_average(), full }
    }

    /// Whether this is the long run (`BENCH_FULL=1`).
    pub fn full(&self) -> bool {
        self.full
    }

    /// `default` in a default run, `full` in a long one.
    pub fn pick<T>(&self, default: T, full: T) -> T {
        if self.full { full } else { default }
    }

    /// A size: the variable `name` if set, else [`Self::pick`] of the two.
    pub fn size(&self, name: &str, default: usize, full: usize) -> usize {
        std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(self.pick(default, full))
    }

    /// Seconds since [`Self::start`].
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn mode(&self) -> &'static str {
        if self.full { "full (BENCH_FULL=1)" } else { "default (bounded; BENCH_FULL=1 for the long run)" }
    }

    /// `{mode, seconds, load_average: {before, after}}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode(),
            "seconds": (self.seconds() * 10.0).round() / 10.0,
            "load_average": { "before": self.load_before, "after": load_average() },
        })
    }

    /// One line for a results file: mode, run time, load averages.
    pub fn line(&self) -> String {
        format!(
            "Run: {}, {:.0} s from start to this file (build excluded). Load average (1/5/15 min) before: {}; after: {}.",
            self.mode(),
            self.seconds(),
            self.load_before,
            load_average()
        )
    }
}

/// Writes `bench/results/<name>.json` (with `run`: [`Run::json`]) and
/// `bench/results/<name>.md` (with [`Run::line`] appended).
pub fn write_results(name: &str, mut json: serde_json::Value, md: &str, run: &Run) -> anyhow::Result<()> {
    let dir = crate::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    if let Some(object) = json.as_object_mut() {
        object.insert("run".into(), run.json());
    }
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&json)? + "\n")?;
    let md = format!("{}\n\n{}\n", md.trim_end(), run.line());
    std::fs::write(dir.join(format!("{name}.md")), md)?;
    println!("wrote bench/results/{name}.{{json,md}} ({:.0} s)", run.seconds());
    Ok(())
}
