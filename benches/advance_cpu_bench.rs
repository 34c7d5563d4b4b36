//! `cargo bench --bench advance_cpu_bench`: the CPU one durable `advance` costs in each
//! process, outside the disk's wait: the `baton serve` session (MCP over stdio, the client
//! side of the owner's socket) and the owner (its tokio threads apart from sled's own). One
//! session advances one run `BATON_BENCH_ADVANCES` times (default 3,000); the CPU each
//! process used meanwhile (run time from /proc schedstat per live thread, utime + stime for
//! the whole process) is divided by the advances. Exited threads count in the process's total, not in any named thread.
//! Set BATON_BENCH_DIR to measure on another disk (default: $TMPDIR/baton-bench).

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::bench::{self, Stats, report, start_loop, step};
use support::owner_pid;

/// CPU seconds used so far by a process (`task` = None) or one of its threads, from the
/// utime and stime fields of its stat file.
fn cpu_seconds(stat: &Path) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: fields start after it.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Voluntary context switches so far (waits: each costs a sleep and a wake-up) of a
/// thread; involuntary ones (preemption) depend on the machine's other load.
fn switches(status: &Path) -> f64 {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    text.lines().filter(|l| l.starts_with("voluntary_ctxt_switches")).filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).sum()
}

/// A process's (or one thread name's) CPU seconds and context switches.
type Use = (f64, f64);

/// The process's use, and its live threads' by name (threads of one name added up).
fn usage(pid: u32) -> (Use, Vec<(String, Use)>) {
    let total = cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat")));
    let mut threads: Vec<(String, Use)> = Vec::new();
    let mut all_switches = 0.0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_string();
        // schedstat's run time is in nanoseconds (stat's in clock ticks of 10 ms).
        let ran =
            std::fs::read_to_string(entry.path().join("schedstat")).ok().and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
        let cpu = ran.map_or_else(|| cpu_seconds(&entry.path().join("stat")), |ns| ns / 1e9);
        let used = (cpu, switches(&entry.path().join("status")));
        all_switches += used.1;
        match threads.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum = (sum.0 + used.0, sum.1 + used.1),
            None => threads.push((name, used)),
        }
    }
    ((total, all_switches), threads)
}

fn print_delta(who: &str, before: &(Use, Vec<(String, Use)>), after: &(Use, Vec<(String, Use)>), n: usize) {
    let per = |s: f64| s * 1e6 / n as f64;
    let switches = |s: f64| s / n as f64;
    println!(
        "{who}: {:.1} us CPU per advance, {:.2} voluntary context switches (live threads)",
        per(after.0.0 - before.0.0),
        switches(after.0.1 - before.0.1)
    );
    for (name, used) in &after.1 {
        let was = before.1.iter().find(|(n, _)| n == name).map_or((0.0, 0.0), |(_, u)| *u);
        if used.0 - was.0 > 0.0 || used.1 - was.1 > 0.0 {
            println!("  thread {name}: {:.1} us, {:.2} switches", per(used.0 - was.0), switches(used.1 - was.1));
        }
    }
}

fn main() {
    let advances: usize = std::env::var("BATON_BENCH_ADVANCES").ok().and_then(|n| n.parse().ok()).unwrap_or(3_000);
    let base = std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("baton-bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let home = dir.path().join("home");
        let server = bench::session(&home, dir.path(), None, &[]).await;
        let mut brief = start_loop(&server).await;
        for _ in 0..200 {
            brief = step(&server, &brief).await; // warm-up
        }
        let owner = owner_pid(&home);
        let (session_before, owner_before) = (usage(server.pid), usage(owner));
        let mut samples = Vec::with_capacity(advances);
        for _ in 0..advances {
            let t = Instant::now();
            brief = step(&server, &brief).await;
            samples.push(t.elapsed());
        }
        let (session_after, owner_after) = (usage(server.pid), usage(owner));
        report("durable advance, one session", &Stats::of(samples));
        print_delta(&format!("session (pid {})", server.pid), &session_before, &session_after, advances);
        print_delta(&format!("owner (pid {owner})"), &owner_before, &owner_after, advances);
        server.stop().await;
    });
}
