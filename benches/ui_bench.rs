//! `cargo bench --bench ui_bench`: the runs list page of `baton ui` over a database of
//! 10,000 runs: time to the first byte of the answer (p50, p99) and to its last byte, for
//! the default page (the 100 runs changed last) and filtered by status.
//! Set BATON_BENCH_DIR to measure on a particular disk (default: target/tmp/bench).

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use baton::api::{Caller, CancelRunParams, Envelope, Reply, Request, StartWorkflowParams};
use baton::home::Home;
use baton::service::Service;
use baton::store::SledStore;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::bench::{Stats, report};
use support::web::{Login, UiServer};

const RUNS: usize = 10_000;
const SAMPLES: usize = 200;

fn main() {
    let base =
        std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let home = Home { dir: dir.path().join("home") };
    let started = Instant::now();
    fill(&home);
    println!("ui: {RUNS} runs written in {:.1} s", started.elapsed().as_secs_f64());
    report("list_runs (limit 100) in the owner, no HTTP (the floor)", &Stats::of(list_floor(&home)));

    let ui = UiServer::start(&home.dir, Vec::new());
    let login = Login::new(&ui);
    for (what, path) in [("runs list, 100 of 10,000 runs", "/"), ("runs list filtered (status=awaiting_human)", "/?status=awaiting_human")]
    {
        let mut first = Vec::with_capacity(SAMPLES);
        let mut whole = Vec::with_capacity(SAMPLES);
        let mut bytes = 0;
        for _ in 0..SAMPLES {
            let (ttfb, total, size) = timed_get(ui.port, path, &login.cookie);
            first.push(ttfb);
            whole.push(total);
            bytes = size;
        }
        println!("{what} ({} KiB):", bytes / 1024);
        report("  time to first byte", &Stats::of(first));
        report("  time to last byte", &Stats::of(whole));
    }
    drop(ui);
}

/// Write the runs through the service in this process (as the owner does), then let
/// the database go for `baton ui` to open. Every tenth run waits for a human and every
/// tenth is cancelled, so filters have something to find.
fn fill(home: &Home) {
    home.prepare().expect("baton home");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let service = Service::new(Arc::new(SledStore::open(&home.db_dir()).expect("open the database")));
        let call = |request: Request| {
            let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
            let service = &service;
            async move { service.handle(&envelope).await.expect("request") }
        };
        for i in 0..RUNS {
            let start = StartWorkflowParams {
                goal: format!("Goal number {i}: make the thing better in some measurable way."),
                title: Some(format!("Run {i}")),
                template: None,
                template_definition: None,
                template_file: None,
                context: None,
                max_agents: None,
            };
            let Reply::Brief(brief) = call(Request::StartWorkflow(start)).await else { panic!("no brief") };
            match i % 10 {
                0 => {
                    let ask = baton::api::AwaitHumanParams {
                        run_id: brief.run_id,
                        question: "Ship it?".into(),
                        options: Some(vec!["yes".into(), "no".into()]),
                        expected_version: None,
                    };
                    call(Request::AwaitHuman(ask)).await;
                }
                5 => {
                    call(Request::CancelRun(CancelRunParams { run_id: brief.run_id, reason: None, expected_version: None })).await;
                }
                _ => {}
            }
        }
    });
}

/// The same listing the page asks for, straight through the service: what the store costs.
fn list_floor(home: &Home) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let service = Service::new(Arc::new(SledStore::open(&home.db_dir()).expect("open the database")));
        let mut samples = Vec::with_capacity(SAMPLES / 4);
        for _ in 0..SAMPLES / 4 {
            let request = Request::ListRuns(baton::api::ListRunsParams { limit: Some(100), ..Default::default() });
            let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
            let t = Instant::now();
            service.handle(&envelope).await.expect("list");
            samples.push(t.elapsed());
        }
        samples
    })
}

/// GET `path`: time to the answer's first byte, to its last, and its size.
fn timed_get(port: u16, path: &str, cookie: &str) -> (Duration, Duration, usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    let sent = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).unwrap();
    let ttfb = sent.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.starts_with(b"TTP/1.1 200"), "{}", String::from_utf8_lossy(&rest[..rest.len().min(200)]));
    (ttfb, sent.elapsed(), rest.len() + 1)
}
