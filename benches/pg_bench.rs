//! `cargo bench --bench pg_bench`: the PostgreSQL backend beside the embedded sled store,
//! in one run, through the real `baton serve` binary over stdio MCP:
//!
//! - durable `advance` latency (p50, p99) of one session;
//! - throughput of 8 sessions (8 `baton serve` processes), each advancing its own run.
//!
//! sled runs through its owner process (the sessions talk to it over a Unix socket);
//! PostgreSQL runs on a throwaway cluster started here (initdb in a temp dir, fsync and
//! synchronous_commit on, as `nobody` when run as root), reached over TCP on 127.0.0.1,
//! with each session its own connection pool. Skips PostgreSQL with a message when no
//! server binaries are installed. BATON_BENCH_QUICK=1 shortens every phase.

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::bench::{self, ms, start_loop, step};
use support::{Server, pg};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // not a test harness
    }
    let quick = std::env::var_os("BATON_BENCH_QUICK").is_some();
    let (samples, window) = if quick { (100, Duration::from_secs(2)) } else { (500, Duration::from_secs(5)) };
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "PostgreSQL beside sled, through `baton serve` over stdio MCP ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let sled = runtime.block_on(measure("sled (owner process)", &tmp.path().join("sled-home"), None, samples, window));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = vec!["listen_addresses = '127.0.0.1'".to_string(), format!("port = {port}")];
    let cluster = pg::Cluster::start_with(&conf);
    let postgres = cluster.as_ref().map(|cluster| {
        pg::admin(&cluster.url("postgres"), "CREATE DATABASE bench");
        let url = format!("postgres://baton@127.0.0.1:{port}/bench?sslmode=disable");
        let fsync = pg::query(&cluster.url("bench"), "SELECT current_setting('fsync'), current_setting('synchronous_commit')");
        println!(
            "PostgreSQL over TCP 127.0.0.1:{port} (fsync {}, synchronous_commit {})",
            fsync[0][0].as_deref().unwrap_or("?"),
            fsync[0][1].as_deref().unwrap_or("?")
        );
        runtime.block_on(measure("PostgreSQL (loopback)", &tmp.path().join("pg-home"), Some(&url), samples, window))
    });
    println!();
    println!("| backend | durable advance p50 | p99 | {SESSIONS}-session throughput |");
    println!("| --- | --- | --- | --- |");
    for result in std::iter::once(&sled).chain(postgres.as_ref()) {
        println!("| {} | {:.3} ms | {:.3} ms | {:.0} advances/s |", result.name, ms(result.p50), ms(result.p99), result.throughput);
    }
    if let Some(pg) = &postgres {
        println!(
            "PostgreSQL / sled: p50 {:.2}x, throughput {:.2}x",
            pg.p50.as_secs_f64() / sled.p50.as_secs_f64(),
            pg.throughput / sled.throughput
        );
    }
    drop(cluster);
}

struct Result {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

async fn measure(name: &'static str, home: &Path, database: Option<&str>, samples: usize, window: Duration) -> Result {
    let mut env = vec![("BATON_OWNER_IDLE", "5s")];
    env.extend(database.map(|url| ("BATON_DATABASE_URL", url)));
    let (env, cwd) = (&env[..], std::env::temp_dir());
    let one = bench::session(home, &cwd, None, env).await;
    let mut brief = start_loop(&one).await;
    for _ in 0..20 {
        brief = step(&one, &brief).await;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        brief = step(&one, &brief).await;
        times.push(t.elapsed());
    }
    one.stop().await;
    times.sort();
    let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
    println!("{name}: durable advance p50 {:.3} ms, p99 {:.3} ms ({samples} advances, one session)", ms(p50), ms(p99));

    let sessions: Vec<Arc<Server>> =
        futures::future::join_all((0..SESSIONS).map(|_| bench::session(home, &cwd, None, env))).await.into_iter().map(Arc::new).collect();
    let mut briefs = Vec::new();
    for session in &sessions {
        briefs.push(start_loop(session).await);
    }
    let stop_at = Instant::now() + window;
    let started = Instant::now();
    let tasks: Vec<_> = sessions
        .iter()
        .zip(briefs)
        .map(|(session, mut brief)| {
            let session = Arc::clone(session);
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    brief = step(&session, &brief).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).sum();
    let throughput = total as f64 / started.elapsed().as_secs_f64();
    println!("{name}: {SESSIONS} sessions, {total} advances in {:?}: {throughput:.0} advances/s", started.elapsed());
    for session in sessions {
        if let Some(session) = Arc::into_inner(session) {
            session.stop().await;
        }
    }
    Result { name, p50, p99, throughput }
}
