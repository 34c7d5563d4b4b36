//! `cargo bench --bench drive_bench`: what `baton drive` itself costs while it drives 8 agents
//! at once. A `parallel` run of 8 tasks (design, 8 x implement, independent review, test,
//! integrate) is driven with `--agents 8` through the real pinned `codex app-server`, whose
//! model is the tests' scripted one on 127.0.0.1: it answers at once, so what is left is the
//! supervisor's own work (deciding, recording, talking JSON-RPC to Codex), without model time.
//!
//! Measured from outside, by sampling /proc every few milliseconds: the driver's CPU time
//! (utime + stime) per step and its peak RSS (VmHWM), and, apart from it, what Codex's
//! app-server processes, the agents' `baton serve` processes and the baton owner (the
//! database every one of them talks to) cost. The driver's own `finished` event (getrusage)
//! is printed beside the sampled figures.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::codex::find_codex;
use support::drive::{no_quirk, role_player, trust};
use support::exec::ExecHarness;

const TASKS: [&str; 8] = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"];
const AGENTS: usize = 8;
/// The whole driven run, with 8 Codex threads on a small machine.
const LIMIT: Duration = Duration::from_secs(900);
/// How often /proc is read: short enough that a short-lived process is seen.
const SAMPLE: Duration = Duration::from_millis(20);

/// Which part of the run a process is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Driver,
    /// `codex app-server` (its npm launcher and the native binary).
    Codex,
    /// The `baton serve` each Codex thread runs as its MCP server.
    AgentBaton,
    /// The `baton owner` holding the database.
    Owner,
    /// Shells and git that agents or baton ran.
    Other,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Driver => "baton drive (the supervisor)",
            Kind::Codex => "codex app-server (launcher + native)",
            Kind::AgentBaton => "agents' `baton serve` (MCP servers)",
            Kind::Owner => "baton owner (the database)",
            Kind::Other => "other (git, shells)",
        }
    }
}

/// The latest reading of one process.
#[derive(Clone, Default)]
struct Seen {
    cpu_ticks: u64,
    /// At the first reading: what the process had used before the drive began (the owner).
    first_ticks: u64,
    hwm_kb: u64,
    rss_kb: u64,
    comm: String,
}

#[derive(Default)]
struct Samples {
    procs: HashMap<(Kind, u32), Seen>,
    /// Most resident memory of each kind at one moment (sum over its processes).
    peak_rss_kb: HashMap<Kind, u64>,
    /// Most processes of each kind at one moment.
    peak_count: HashMap<Kind, usize>,
}

/// (ppid, utime + stime in ticks, comm) of a process.
fn stat(pid: u32) -> Option<(u32, u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, ppid 4, utime 14, stime 15 (man 5 proc).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime, comm))
}

/// (VmHWM, VmRSS) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default()
}

/// One reading of every process of the driver's tree and of the home's owner.
fn sample(driver: u32, home: &str, samples: &mut Samples) {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut readings: HashMap<u32, (u64, String)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some((ppid, ticks, comm)) = stat(pid) {
            parent.insert(pid, ppid);
            readings.insert(pid, (ticks, comm));
        }
    }
    let under_driver = |mut pid: u32| {
        for _ in 0..64 {
            if pid == driver {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut rss: HashMap<Kind, u64> = HashMap::new();
    let mut count: HashMap<Kind, usize> = HashMap::new();
    for (&pid, (ticks, comm)) in &readings {
        // The owner first: the driver starts it (detached), so it may sit in the driver's tree.
        let kind = if pid == driver {
            Kind::Driver
        // (It runs /proc/self/exe, so its comm is `exe`; its arg0 says `baton`.)
        } else if cmdline(pid).starts_with("baton owner ") && cmdline(pid).contains(home) {
            Kind::Owner
        } else if under_driver(pid) {
            if comm == "baton" {
                Kind::AgentBaton
            } else if comm.starts_with("codex") || comm == "node" {
                Kind::Codex
            } else {
                Kind::Other
            }
        } else {
            continue;
        };
        // A child Codex forked and has not yet exec'd still carries Codex's name for the
        // thread and a copy-on-write view of Codex's memory: count its CPU, not that memory.
        let forked = kind == Kind::Other && comm.starts_with("tokio-");
        let (hwm, now_rss) = if forked { (0, 0) } else { memory(pid) };
        let seen = samples.procs.entry((kind, pid)).or_insert_with(|| Seen { first_ticks: *ticks, ..Seen::default() });
        seen.cpu_ticks = seen.cpu_ticks.max(*ticks);
        seen.hwm_kb = seen.hwm_kb.max(hwm);
        seen.rss_kb = now_rss;
        seen.comm.clone_from(comm);
        *rss.entry(kind).or_default() += now_rss;
        *count.entry(kind).or_default() += 1;
    }
    for (kind, kb) in rss {
        let peak = samples.peak_rss_kb.entry(kind).or_default();
        *peak = (*peak).max(kb);
    }
    for (kind, n) in count {
        let peak = samples.peak_count.entry(kind).or_default();
        *peak = (*peak).max(n);
    }
}

fn main() {
    let Some(codex) = find_codex() else {
        println!("drive bench skipped: no Codex CLI (see tests/it/support/codex.rs)");
        return;
    };
    let harness = ExecHarness::new(&codex, role_player(no_quirk(), TASKS.to_vec()));
    harness.model.set_usage_per_turn(100);
    support::git::init(harness.work(), "README", "base\n");
    trust(&harness);
    let home = harness.baton_home().to_string_lossy().into_owned();
    let started = Instant::now();
    let agents = AGENTS.to_string();
    let args = ["--goal", "Eight independent files", "--template", "parallel", "--agents", &agents, "--backoff-ms", "100"];
    let mut child = support::drive::drive_command(&harness, &codex, &args).env("BATON_LOG", "warn").spawn().expect("start baton drive");
    let driver = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, home) = (Arc::clone(&samples), Arc::clone(&stop), home.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(mut s) = samples.lock() {
                    sample(driver, &home, &mut s);
                }
                std::thread::sleep(SAMPLE);
            }
        })
    };
    let mut events = Vec::new();
    let status = loop {
        while let Ok(event) = lines.try_recv() {
            events.push(event);
        }
        if let Some(status) = child.try_wait().expect("wait for baton drive") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("baton drive did not finish within {LIMIT:?}; events: {events:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed();
    // The owner lives on: read it (and any straggler) once more.
    if let Ok(mut s) = samples.lock() {
        sample(driver, &home, &mut s);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    while let Ok(event) = lines.recv_timeout(Duration::from_millis(200)) {
        events.push(event);
    }
    assert!(status.success(), "baton drive ended with {status}; events: {events:#?}");
    let finished = events.iter().find(|e| e["event"] == "finished").cloned().unwrap_or_default();
    assert_eq!(finished["status"], "completed", "{events:#?}");
    let (mut now, mut most) = (0i64, 0i64);
    for e in &events {
        match e["event"].as_str() {
            Some("agent_started") => now += 1,
            Some("agent_ended") => now -= 1,
            _ => {}
        }
        most = most.max(now);
    }
    let turns = finished["turns"].as_u64().unwrap_or(0).max(1);
    let steps = 2 + 3 * TASKS.len() as u64;

    // SAFETY: sysconf only reads a constant of the system.
    let tick_ms = 1000.0 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64);
    let samples = samples.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
    let kinds = [Kind::Driver, Kind::Codex, Kind::AgentBaton, Kind::Owner, Kind::Other];
    let cpu_of = |kind: Kind| -> f64 {
        samples
            .procs
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, s)| {
                // The owner may predate the drive: count only what it used during it.
                let used = if kind == Kind::Owner { s.cpu_ticks - s.first_ticks } else { s.cpu_ticks };
                used as f64 * tick_ms
            })
            .sum()
    };
    let hwm_of = |kind: Kind| samples.procs.iter().filter(|((k, _), _)| *k == kind).map(|(_, s)| s.hwm_kb).max().unwrap_or(0);
    let processes_of = |kind: Kind| samples.procs.keys().filter(|(k, _)| *k == kind).count();
    let biggest_of = |kind: Kind| {
        samples.procs.iter().filter(|((k, _), _)| *k == kind).max_by_key(|(_, s)| s.hwm_kb).map(|(_, s)| s.comm.clone()).unwrap_or_default()
    };

    println!(
        "drive: a parallel run of {} tasks driven with --agents {AGENTS} through codex app-server {} and a scripted model (answers at once)",
        TASKS.len(),
        support::codex::CODEX_VERSION
    );
    println!("  {steps} steps in {turns} agent turns, {:.1} s wall clock, at most {most} agent turns at once", wall.as_secs_f64());
    let driver_cpu = cpu_of(Kind::Driver);
    println!(
        "  supervisor CPU: {driver_cpu:.0} ms sampled from /proc ({:.1} ms per step, {:.1} ms per turn); the driver's own getrusage: {} ms",
        driver_cpu / steps as f64,
        driver_cpu / turns as f64,
        finished["driver_cpu_ms"]
    );
    println!(
        "  supervisor peak RSS: {} KiB (VmHWM; the driver's own ru_maxrss: {} KiB)",
        hwm_of(Kind::Driver),
        finished["driver_max_rss_kb"]
    );
    println!("  by process kind (CPU during the drive, peak VmHWM of one process, peak RSS of all at one moment):");
    for kind in kinds {
        let n = processes_of(kind);
        if n == 0 {
            continue;
        }
        println!(
            "    {:<40} {:>8.0} ms CPU ({:>5.1} ms/step)  peak {:>7} KiB in one ({}), {:>7} KiB together ({} processes, at most {} at once)",
            kind.label(),
            cpu_of(kind),
            cpu_of(kind) / steps as f64,
            hwm_of(kind),
            biggest_of(kind),
            samples.peak_rss_kb.get(&kind).copied().unwrap_or(0),
            n,
            samples.peak_count.get(&kind).copied().unwrap_or(0)
        );
    }
    println!("  tokens Codex reported (thread/tokenUsage/updated, 100 per scripted response): {}", finished["tokens"]);
}
