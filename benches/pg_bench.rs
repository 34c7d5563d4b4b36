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

#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "support/mod.rs"]
mod support;

use support::session::Session;

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

    let sled_env = vec![("BATON_HOME".to_string(), tmp.path().join("sled-home").to_string_lossy().into_owned())];
    let sled = runtime.block_on(measure("sled (owner process)", &sled_env, samples, window));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = vec!["listen_addresses = '127.0.0.1'".to_string(), format!("port = {port}")];
    let cluster = pg::Cluster::start_with(&conf);
    let postgres = cluster.as_ref().map(|cluster| {
        pg::admin(&cluster.url("postgres"), "CREATE DATABASE bench");
        let url = format!("postgres://baton@127.0.0.1:{port}/bench?sslmode=disable");
        let env = vec![
            ("BATON_HOME".to_string(), tmp.path().join("pg-home").to_string_lossy().into_owned()),
            ("BATON_DATABASE_URL".to_string(), url),
        ];
        let fsync = pg::query(&cluster.url("bench"), "SELECT current_setting('fsync'), current_setting('synchronous_commit')");
        println!(
            "PostgreSQL over TCP 127.0.0.1:{port} (fsync {}, synchronous_commit {})",
            fsync[0][0].as_deref().unwrap_or("?"),
            fsync[0][1].as_deref().unwrap_or("?")
        );
        runtime.block_on(measure("PostgreSQL (loopback)", &env, samples, window))
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(name: &'static str, env: &[(String, String)], samples: usize, window: Duration) -> Result {
    let mut env = env.to_vec();
    env.push(("BATON_OWNER_IDLE".into(), "5s".into()));
    let (env, cwd) = (&env[..], std::env::temp_dir());
    let one = Session::start(env, &cwd).await;
    let mut brief = one.start_run().await;
    for _ in 0..20 {
        brief = one.advance(&brief).await;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        brief = one.advance(&brief).await;
        times.push(t.elapsed());
    }
    one.stop().await;
    times.sort();
    let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
    println!("{name}: durable advance p50 {:.3} ms, p99 {:.3} ms ({samples} advances, one session)", ms(p50), ms(p99));

    let sessions: Vec<Arc<Session>> =
        futures::future::join_all((0..SESSIONS).map(|_| Session::start(env, &cwd))).await.into_iter().map(Arc::new).collect();
    let mut briefs = Vec::new();
    for session in &sessions {
        briefs.push(session.start_run().await);
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
                    brief = session.advance(&brief).await;
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
