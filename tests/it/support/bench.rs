//! What every bench measures the same way: sessions as Codex holds them, latency
//! statistics, the disk's floor, its flush counter and space on disk.

use std::future::Future;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Percentiles of a set of latencies.
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub n: usize,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let n = samples.len().max(1);
        let at = |q: f64| samples.get(((n as f64 * q).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or_default();
        Stats { p50: at(0.50), p99: at(0.99), mean: samples.iter().sum::<Duration>() / n as u32, n: samples.len() }
    }
}

pub fn report(what: &str, s: &Stats) {
    println!("{what}: p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms (n={})", ms(s.p50), ms(s.p99), ms(s.mean), s.n);
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// 256 B written and made durable with `fdatasync`: appended (the file grows, as a
/// database log does, so ext4 also commits its journal) or overwritten in place (only the
/// data and a device flush).
pub fn fdatasync_floor(dir: &Path, n: usize, in_place: bool) -> Stats {
    Stats::of(fdatasync_runs(dir, n, in_place))
}

/// `n` appends of the floor (see [`fdatasync_floor`]), each timed, to interleave with
/// other measurements.
pub fn fdatasync_samples(dir: &Path, n: usize) -> Vec<Duration> {
    fdatasync_runs(dir, n, false)
}

fn fdatasync_runs(dir: &Path, n: usize, in_place: bool) -> Vec<Duration> {
    let path = dir.join(if in_place { "floor-overwrite.bin" } else { "floor-append.bin" });
    let file = std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(path).unwrap();
    let payload = [7u8; 256];
    file.write_all_at(&payload, 0).unwrap();
    file.sync_all().unwrap();
    let mut offset = 0;
    (0..n)
        .map(|_| {
            if !in_place {
                offset += payload.len() as u64;
            }
            let t = Instant::now();
            file.write_all_at(&payload, offset).unwrap();
            file.sync_data().unwrap();
            t.elapsed()
        })
        .collect()
}

/// The device flush counter (flush requests completed, /sys/block/<dev>/stat field 16) of
/// the disk holding a path.
pub struct FlushCounter {
    pub name: String,
    stat: PathBuf,
}

impl FlushCounter {
    pub fn for_path(path: &Path) -> Option<FlushCounter> {
        let dev = std::fs::metadata(path).ok()?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        // Partitions count flushes on their disk.
        let disk = if sys.join("partition").exists() { sys.parent()?.to_path_buf() } else { sys };
        let name = disk.file_name()?.to_string_lossy().into_owned();
        let counter = FlushCounter { name, stat: disk.join("stat") };
        (counter.fields()?.len() >= 17).then_some(counter)
    }

    fn fields(&self) -> Option<Vec<u64>> {
        std::fs::read_to_string(&self.stat).ok().map(|s| s.split_whitespace().filter_map(|f| f.parse().ok()).collect())
    }

    pub fn read(&self) -> u64 {
        self.fields().map_or(0, |f| f[15])
    }
}

/// The whole machine's CPU time since a mark, from /proc/stat's first line: every process
/// and the kernel's own threads, busy (user, nice, system, irq, softirq, steal) and idle
/// (idle, iowait).
pub struct MachineCpu {
    busy: u64,
    idle: u64,
}

/// What [`MachineCpu::since`] measured.
pub struct CpuUse {
    /// Busy CPU seconds.
    pub busy: f64,
    /// The share of all CPUs' time that was idle.
    pub idle_share: f64,
}

impl MachineCpu {
    pub fn mark() -> MachineCpu {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        MachineCpu { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7), idle: at(3) + at(4) }
    }

    pub fn since(&self) -> CpuUse {
        let now = MachineCpu::mark();
        let (busy, idle) = (now.busy.saturating_sub(self.busy) as f64, now.idle.saturating_sub(self.idle) as f64);
        // SAFETY: sysconf has no preconditions.
        let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64;
        CpuUse { busy: busy / hz, idle_share: if busy + idle > 0.0 { idle / (busy + idle) } else { 0.0 } }
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// (apparent, allocated) bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (a, b) = dir_bytes(&entry.path());
            total = (total.0 + a, total.1 + b);
        } else {
            total = (total.0 + meta.len(), total.1 + meta.blocks() * 512);
        }
    }
    total
}

/// Time `n` calls of `f` (given the call's index), one after the other.
pub fn timed_each(n: usize, mut f: impl FnMut(usize)) -> Stats {
    Stats::of(
        (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect(),
    )
}

/// Time `n` awaits of `f`, one after the other.
pub async fn timed<F, Fut, T>(n: usize, f: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    Stats::of(samples)
}

/// A `baton serve` session in `cwd` as the benches measure it: baton's own owner idle time,
/// quiet logs, and results not validated (that would be timed with every call).
pub async fn session(home: &Path, cwd: &Path, thread: Option<&str>, env: &[(&str, &str)]) -> super::Server {
    super::Server::launch(home, cwd, thread, env, false).await
}

/// Start a run of [`super::ping_pong`], which any number of [`step`]s can advance.
pub async fn start_loop(server: &super::Server) -> serde_json::Value {
    server.ok("start_workflow", serde_json::json!({"goal": "benchmark", "template_definition": super::ping_pong()})).await
}

/// Advance the loop run of `brief` by one step, with an agent's usual report; the new brief.
pub async fn step(server: &super::Server, brief: &serde_json::Value) -> serde_json::Value {
    server.advance(brief, "next", "Implemented the change in src/lib.rs; 12 tests pass.").await
}

/// A `baton serve` session driven by a raw line client: one JSON-RPC line written per call,
/// lines read until the answer with its id, and only the fields the bench needs decoded.
/// This is how the issue measures baton's own figure; rmcp's client (`super::Server`) adds
/// its own costs (a multi-threaded runtime, every reply decoded as each possible type).
pub struct RawSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    next_id: u64,
    line: String,
}

/// The part of an answer the raw client reads: a tool result's error flag and the run's
/// id and version from its structured content.
#[derive(serde::Deserialize)]
struct RawAnswer {
    id: Option<u64>,
    result: Option<RawResult>,
    error: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct RawResult {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
    #[serde(rename = "structuredContent")]
    structured: Option<RawBrief>,
}

/// A brief's run and version: all the next `advance` needs.
#[derive(serde::Deserialize, Clone, Debug)]
pub struct RawBrief {
    pub run_id: String,
    pub version: u64,
}

impl RawSession {
    /// Start `baton serve` on `home`, beside it, and complete the MCP handshake.
    pub fn start(home: &Path) -> RawSession {
        use std::io::Write;
        let mut session = RawSession::initialize(home);
        writeln!(session.stdin, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#).expect("write initialized");
        session
    }

    /// Start `baton serve` on `home`, beside it, and wait for its answer to `initialize`
    /// (the handshake's first half: what a cold start is timed to).
    pub fn initialize(home: &Path) -> RawSession {
        use std::io::Write;
        let mut child = std::process::Command::new(super::BATON)
            .arg("serve")
            .env("BATON_HOME", home)
            .env("BATON_LOG", "error")
            .envs(super::database_env(home))
            .current_dir(home.parent().unwrap_or(Path::new("/")))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn baton serve");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut session = RawSession { child, stdin, stdout, next_id: 1, line: String::new() };
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench-raw","version":"0"}}}"#;
        writeln!(session.stdin, "{init}").expect("write initialize");
        session.read_answer(0);
        assert!(session.line.contains("\"serverInfo\""), "unexpected initialize answer {}", session.line);
        session
    }

    /// The `baton serve` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Read lines until the answer to request `id` (notifications are skipped); it is left in
    /// `self.line`.
    fn read_answer(&mut self, id: u64) -> RawAnswer {
        use std::io::BufRead;
        loop {
            self.line.clear();
            let n = self.stdout.read_line(&mut self.line).expect("read an answer");
            assert!(n > 0, "baton serve closed its stdout before answering request {id}");
            let answer: RawAnswer = serde_json::from_str(&self.line).unwrap_or_else(|e| panic!("not a JSON-RPC line ({e}): {}", self.line));
            if answer.id == Some(id) {
                return answer;
            }
        }
    }

    /// Call `tool` with `args` (a JSON object, as text) and return the brief it answers with.
    pub fn call(&mut self, tool: &str, args: &str) -> RawBrief {
        use std::io::Write;
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.stdin, r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#)
            .expect("write a call");
        let answer = self.read_answer(id);
        match answer {
            RawAnswer { result: Some(RawResult { is_error: None | Some(false), structured: Some(brief) }), .. } => brief,
            RawAnswer { error, .. } => panic!("{tool} {args} failed ({error:?}): {}", self.line),
        }
    }

    /// Start a run of [`super::ping_pong`].
    pub fn start_loop(&mut self) -> RawBrief {
        let args = serde_json::json!({"goal": "benchmark", "template_definition": super::ping_pong()}).to_string();
        self.call("start_workflow", &args)
    }

    /// Advance `brief`'s run by one step with the same report as [`step`]; the new brief.
    pub fn step(&mut self, brief: &RawBrief) -> RawBrief {
        self.step_with(brief, "\"Implemented the change in src/lib.rs; 12 tests pass.\"")
    }

    /// Advance `brief`'s run by one step reporting `output` (already a JSON string); the new brief.
    pub fn step_with(&mut self, brief: &RawBrief, output: &str) -> RawBrief {
        let args = format!(r#"{{"run_id":"{}","expected_version":{},"outcome":"next","output":{output}}}"#, brief.run_id, brief.version);
        self.call("advance", &args)
    }

    /// Close stdin (the server exits on EOF) and wait for the process.
    pub fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}
