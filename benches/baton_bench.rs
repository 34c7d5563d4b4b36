//! `cargo bench`: durable-advance latency against the fsync floor, resume cost versus
//! history length, cold start and memory, all through the real `baton serve` binary.
//! Set BATON_BENCH_DIR to measure on a particular disk (default: target/bench-tmp).

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn main() {
    let base =
        std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    println!("baton bench on {} ({} cores)", dir.path().display(), std::thread::available_parallelism().map_or(1, |n| n.get()));

    let floor = fsync_floor(dir.path(), 500);
    report("fsync floor: write 256 B + fsync", &floor);
    let sled_floor = sled_floor(&dir.path().join("sled-floor"), 500);
    report("sled floor: insert 4 KiB + flush (no baton code)", &sled_floor);
    println!("  = {:.2}x the fsync floor (p50)", sled_floor.p50.as_secs_f64() / floor.p50.as_secs_f64());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let home = dir.path().join("home");
        let server = Bench::start(&home).await;

        let mut round_trip = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            server.call("inspect", json!({"templates": true})).await;
            round_trip.push(t.elapsed());
        }
        let round_trip = Stats::of(round_trip);
        report("MCP round trip without disk I/O (inspect templates)", &round_trip);

        let mut brief = server.start_run().await;
        for _ in 0..50 {
            brief = server.advance(&brief).await; // warm-up
        }
        let mut advance = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            brief = server.advance(&brief).await;
            advance.push(t.elapsed());
        }
        let advance = Stats::of(advance);
        report("advance (durable, stdio MCP round trip)", &advance);
        println!(
            "  ratio to fsync floor: p50 {:.2}x, p99 {:.2}x (goal: p50 within 1.5x)",
            advance.p50.as_secs_f64() / floor.p50.as_secs_f64(),
            advance.p99.as_secs_f64() / floor.p99.as_secs_f64()
        );
        println!(
            "  advance minus the MCP round trip: p50 {:.3} ms = {:.2}x the fsync floor",
            ms(advance.p50.saturating_sub(round_trip.p50)),
            advance.p50.saturating_sub(round_trip.p50).as_secs_f64() / floor.p50.as_secs_f64()
        );

        let histories: &[u64] = if std::env::var_os("BATON_BENCH_QUICK").is_some() { &[10] } else { &[10, 1_000, 10_000] };
        for &events in histories {
            let run = server.run_with_events(events).await;
            let mut samples = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                server.call("resume", json!({ "run_id": run })).await;
                samples.push(t.elapsed());
            }
            report(&format!("resume, run with {events} events"), &Stats::of(samples));
        }
        println!("server RSS after the workload: {} KiB", rss_kib(server.pid));
        server.client.cancel().await.ok();

        let mut cold = Vec::new();
        let mut idle_rss = 0;
        for _ in 0..20 {
            let (elapsed, rss) = cold_start(&home);
            cold.push(elapsed);
            idle_rss = rss;
        }
        report("cold start to initialize answer (existing db)", &Stats::of(cold));
        println!("idle RSS after initialize: {idle_rss} KiB");
        let fresh = (0..10).map(|i| cold_start(&dir.path().join(format!("fresh-{i}"))).0).collect();
        report("cold start to initialize answer (new db)", &Stats::of(fresh));
    });
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    n: usize,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let n = samples.len();
        let at = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Stats { p50: at(0.50), p99: at(0.99), mean: samples.iter().sum::<Duration>() / n as u32, n }
    }
}

fn report(what: &str, s: &Stats) {
    println!("{what}: p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms (n={})", ms(s.p50), ms(s.p99), ms(s.mean), s.n);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The cost of making 256 bytes durable with plain file I/O on the same disk.
fn fsync_floor(dir: &Path, n: usize) -> Stats {
    let path = dir.join("floor.bin");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let payload = [7u8; 256];
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&payload).unwrap();
            file.sync_all().unwrap();
            t.elapsed()
        })
        .collect();
    Stats::of(samples)
}

/// The cost of one durable sled write, the store baton builds on.
fn sled_floor(path: &Path, n: usize) -> Stats {
    let db = sled::open(path).unwrap();
    let value = vec![7u8; 4096];
    let samples = (0..n)
        .map(|i| {
            let t = Instant::now();
            db.insert(format!("key-{i}"), value.clone()).unwrap();
            db.flush().unwrap();
            t.elapsed()
        })
        .collect();
    Stats::of(samples)
}

/// Start `baton serve`, send initialize, time until the answer; returns the time and idle RSS.
fn cold_start(home: &Path) -> (Duration, u64) {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#;
    let t = Instant::now();
    let mut child = Command::new(BATON)
        .arg("serve")
        .env("BATON_HOME", home)
        .env("BATON_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{init}").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let elapsed = t.elapsed();
    assert!(line.contains("\"serverInfo\""), "unexpected answer {line}");
    std::thread::sleep(Duration::from_millis(200));
    let rss = rss_kib(child.id());
    drop(stdin);
    child.wait().unwrap();
    (elapsed, rss)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

struct Bench {
    client: RunningService<RoleClient, ()>,
    pid: u32,
}

impl Bench {
    async fn start(home: &Path) -> Bench {
        let cmd = tokio::process::Command::new(BATON).configure(|c| {
            c.arg("serve").env("BATON_HOME", home).env("BATON_LOG", "error");
        });
        let transport = TokioChildProcess::new(cmd).unwrap();
        let pid = transport.id().unwrap();
        let client = ().serve(transport).await.unwrap();
        Bench { client, pid }
    }

    async fn call(&self, tool: &str, args: Value) -> Value {
        let result = self
            .client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone()))
            .await
            .unwrap();
        assert_ne!(result.is_error, Some(true), "{tool}: {:?}", result.structured_content);
        result.structured_content.unwrap()
    }

    async fn start_run(&self) -> Value {
        let template = json!({"name": "bench-loop", "steps": [
            {"name": "work", "role": "implementer", "max_visits": 1000000, "outcomes": {"next": "check"}},
            {"name": "check", "role": "reviewer", "outcomes": {"next": "work", "finish": "done"}}]});
        self.call("start_workflow", json!({"goal": "benchmark", "template_definition": template})).await
    }

    async fn advance(&self, brief: &Value) -> Value {
        let output = "Implemented the change in src/lib.rs; 12 tests pass.";
        self.call("advance", json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "next", "output": output}))
            .await
    }

    /// A run whose history holds exactly `events` events.
    async fn run_with_events(&self, events: u64) -> String {
        let mut brief = self.start_run().await;
        for _ in 1..events {
            brief = self.advance(&brief).await;
        }
        assert_eq!(brief["version"].as_u64(), Some(events));
        brief["run_id"].as_str().unwrap().to_string()
    }
}
