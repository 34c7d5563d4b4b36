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
