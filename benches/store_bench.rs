//! `cargo bench --bench store_bench`: the store on its own (no MCP, no processes), against
//! the floor of the same disk: durable commit latency and device flushes per commit,
//! throughput with 1/2/4/8 concurrent writers (group commit), bytes on disk and RSS at
//! 100k events, and listing latency at 10k runs. Set BATON_BENCH_DIR to measure on another
//! disk (default: target/tmp/bench); BATON_BENCH_QUICK=1 shrinks the large phases.

use baton::engine::NewRun;
use baton::store::{RunQuery, RunStore, SledStore, StatusFilter};
use baton::time::{Clock, SystemClock};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::bench::{FlushCounter, Stats, dir_bytes, fdatasync_floor, report};
use support::rss_kib;

const OUTPUT: &str = "Implemented the change in src/lib.rs; 12 tests pass.";
/// Concurrent writers filling the 100k-event database (larger batches, shorter bench).
const FILL_WRITERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fill-phase") {
        return fill_phase(Path::new(&args[i + 1]), args[i + 2].parse().unwrap());
    }
    if let Some(i) = args.iter().position(|a| a == "--single-writer") {
        // For strace: `strace -f -c -e trace=%file,fdatasync,sync_file_range,pwrite64 BENCH --single-writer DIR N`.
        let (dir, n): (&Path, u64) = (Path::new(&args[i + 1]), args[i + 2].parse().unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        return runtime.block_on(async {
            let store = SledStore::open(dir).unwrap();
            let id = start(&store, "strace").await;
            let mut version = 1;
            for _ in 0..n {
                version = advance(&store, &id, version, OUTPUT).await;
            }
            println!("{n} commits, {} batches", store.writer_batch());
        });
    }
    if args.iter().any(|a| a == "--list") || args.iter().any(|a| a == "--test") {
        return; // not a test harness
    }
    let quick = std::env::var_os("BATON_BENCH_QUICK").is_some();
    let base =
        std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench"));
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let device = FlushCounter::for_path(tmp.path());
    println!("store bench on {} (device {})", tmp.path().display(), device.as_ref().map_or("unknown".into(), |d| d.name.clone()));

    let floor = fdatasync_floor(tmp.path(), 500, false);
    report("fdatasync floor: append 256 B + fdatasync", &floor);
    let overwrite = fdatasync_floor(tmp.path(), 500, true);
    report("fdatasync floor: overwrite 256 B in place + fdatasync (no metadata)", &overwrite);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    runtime.block_on(async {
        let store = Arc::new(SledStore::open(&tmp.path().join("latency")).unwrap());
        let run_id = start(&store, "latency").await;
        let mut version = 1;
        for _ in 0..50 {
            version = advance(&store, &run_id, version, OUTPUT).await;
        }
        let flushes_before = device.as_ref().map(FlushCounter::read);
        let batches_before = store.writer_batch();
        let n = 1000;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            version = advance(&store, &run_id, version, OUTPUT).await;
            samples.push(t.elapsed());
        }
        let flushes = flushes_before.zip(device.as_ref().map(FlushCounter::read)).map(|(a, b)| b - a);
        let commit = Stats::of(samples);
        report("durable commit (one advance, single writer)", &commit);
        println!(
            "  ratio to the append floor: p50 {:.2}x, p99 {:.2}x (goal: p50 <= 1.5x); to the overwrite floor: p50 {:.2}x, p99 {:.2}x",
            commit.p50.as_secs_f64() / floor.p50.as_secs_f64(),
            commit.p99.as_secs_f64() / floor.p99.as_secs_f64(),
            commit.p50.as_secs_f64() / overwrite.p50.as_secs_f64(),
            commit.p99.as_secs_f64() / overwrite.p99.as_secs_f64()
        );
        println!("  write batches: {} for {n} commits", store.writer_batch() - batches_before);
        match flushes {
            Some(f) => println!("  device flushes: {f} for {n} acknowledged commits = {:.2} per commit (goal >= 0.9)", f as f64 / n as f64),
            None => println!("  device flushes: no counter found for this disk"),
        }

        let mut single = 0.0;
        for writers in [1usize, 2, 4, 8] {
            let rate = throughput(&store, writers, Duration::from_secs(if quick { 1 } else { 2 })).await;
            if writers == 1 {
                single = rate;
            }
            println!("commits/s with {writers} concurrent writer(s): {rate:.0} ({:.2}x of one writer)", rate / single);
        }
        drop(store);

        let runs = if quick { 1_000 } else { 10_000 };
        let store = Arc::new(SledStore::open(&tmp.path().join("list")).unwrap());
        parallel(&store, 8, runs, |store, _| async move {
            start(&store, "list").await;
        })
        .await;
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let page = store.list(&RunQuery { status: StatusFilter::Open, limit: 50, ..RunQuery::default() }).await.unwrap();
            samples.push(t.elapsed());
            assert_eq!((page.runs.len(), page.total), (50, runs));
        }
        report(&format!("list_runs (open, limit 50) with {runs} runs"), &Stats::of(samples));
    });

    let events = if quick { 10_000 } else { 100_000 };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--fill-phase", tmp.path().join("fill").to_str().unwrap(), &events.to_string()])
        .output()
        .unwrap();
    std::io::stdout().write_all(&out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// In a fresh process (so RSS is the store's): `events` events over 100 runs, then bytes
/// on disk and RSS.
fn fill_phase(dir: &Path, events: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let t = Instant::now();
    let store = Arc::new(SledStore::open(dir).unwrap());
    runtime.block_on(async {
        let runs = 100;
        let per_run = events / runs;
        parallel(&store, FILL_WRITERS, runs, move |store, _| async move {
            let id = start(&store, "fill").await;
            let mut version = 1;
            while (version as usize) < per_run {
                version = advance(&store, &id, version, OUTPUT).await;
            }
        })
        .await;
    });
    let elapsed = t.elapsed();
    let rss = rss_kib(std::process::id());
    drop(store);
    let (apparent, allocated) = dir_bytes(dir);
    println!(
        "filled {events} events in {:.1} s ({:.0} commits/s with 8 writers)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "bytes on disk per event at {events} events: {:.0} B allocated, {:.0} B apparent (goal <= 1500)",
        allocated as f64 / events as f64,
        apparent as f64 / events as f64
    );
    println!("RSS at {events} events: {:.1} MiB (goal <= 32 MiB)", rss as f64 / 1024.0);
}

/// A new run of [`support::store::ping_pong`] with `goal` (also its title); its id.
async fn start(store: &SledStore, goal: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let new = NewRun { goal: goal.into(), title: goal.into(), ..support::store::new_run(&id, support::store::ping_pong()) };
    support::store::create(store, new, SystemClock.now()).await;
    id
}

/// Advance run `id` from `version` with `output`; the new version.
async fn advance(store: &SledStore, id: &str, version: u64, output: &'static str) -> u64 {
    let op = uuid::Uuid::new_v4().to_string();
    support::store::advance(store, &op, id, version, "next", output.into(), SystemClock.now()).await.unwrap().version
}

/// Run `task` `count` times over `writers` concurrent tasks.
async fn parallel<F, Fut>(store: &Arc<SledStore>, writers: usize, count: usize, task: F)
where
    F: Fn(Arc<SledStore>, usize) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (store, next) = (Arc::clone(store), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    task(Arc::clone(&store), i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

/// Commits per second with `writers` tasks each advancing its own run for `time`.
async fn throughput(store: &Arc<SledStore>, writers: usize, time: Duration) -> f64 {
    let deadline = Instant::now() + time;
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let id = start(&store, "throughput").await;
                let (mut version, mut done) = (1, 0u64);
                while Instant::now() < deadline {
                    version = advance(&store, &id, version, OUTPUT).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let t = Instant::now();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / t.elapsed().as_secs_f64()
}
