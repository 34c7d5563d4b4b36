//! PostgreSQL for tests and benches: throwaway clusters and a fresh database per test.
//!
//! - `BATON_TEST_POSTGRES_URL`: the admin URL of a running cluster (`.ci/run` starts one);
//!   tests create a database of their own in it.
//! - `BATON_TEST_BACKEND=postgres`: the shared integration tests (workflow, fan-out,
//!   races, bad inputs) run `baton` against PostgreSQL instead of sled.
//! - Otherwise tests that need PostgreSQL start a private cluster ([`Cluster`]: initdb in
//!   a temp dir, Unix socket only, as `nobody` when run as root), or skip with a message
//!   when no PostgreSQL binaries are installed. A cluster is stopped and removed when its
//!   value drops, also when the test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const URL_ENV: &str = "BATON_TEST_POSTGRES_URL";
pub const BACKEND_ENV: &str = "BATON_TEST_BACKEND";

/// Whether the shared integration tests run against PostgreSQL.
pub fn selected() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v == "postgres")
}

/// The directory holding `pg_ctl` and `initdb`: on PATH, else Debian's newest version.
pub fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("pg_ctl").is_file() && d.join("initdb").is_file() && d.join("postgres").is_file());
    if let Some(dir) = on_path {
        return Some(std::fs::canonicalize(dir.join("pg_ctl")).ok()?.parent()?.to_path_buf());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|d| d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    versions.pop()
}

/// A running throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// (uid, gid) the server runs as, when not the current user.
    owner: Option<(u32, u32)>,
    /// TCP port on 127.0.0.1, if listening there too.
    pub tcp_port: Option<u16>,
}

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// Start a cluster listening on a Unix socket only; `None` (after saying so) when no
    /// PostgreSQL binaries are installed.
    pub fn start() -> Option<Cluster> {
        Cluster::start_with(&[])
    }

    /// Start a cluster with extra `postgresql.conf` lines (e.g. `listen_addresses`).
    pub fn start_with(conf: &[String]) -> Option<Cluster> {
        Cluster::start_full(conf, None, |_| {})
    }

    /// Start a cluster with extra `postgresql.conf` lines, `pg_hba.conf` replaced by
    /// `hba` when given, and `prepare` run on the cluster directory (owned by the server's
    /// user) before the server starts.
    pub fn start_full(conf: &[String], hba: Option<&str>, prepare: impl FnOnce(&Cluster)) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            eprintln!("SKIPPED: no PostgreSQL server binaries (pg_ctl, initdb) found; install Debian's `postgresql` to run this test");
            return None;
        };
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("baton-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then_some((65534, 65534));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster directory");
        }
        let cluster = Cluster { dir, bin, owner, tcp_port: None };
        cluster.run(
            "initdb",
            &["-D", &cluster.data().to_string_lossy(), "-A", "trust", "-U", "baton", "--encoding=UTF8", "--locale=C", "--no-sync"],
        );
        let mut settings = vec![
            "listen_addresses = ''".to_string(),
            format!("unix_socket_directories = '{}'", cluster.dir.display()),
            "max_connections = 200".to_string(),
            "shared_buffers = 32MB".to_string(),
        ];
        settings.extend(conf.iter().cloned());
        let conf_path = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&format!("\n{}\n", settings.join("\n")));
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        if let Some(hba) = hba {
            std::fs::write(cluster.data().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        }
        let mut cluster = cluster;
        cluster.tcp_port = conf.iter().find_map(|l| l.strip_prefix("port = ").and_then(|p| p.trim().parse().ok()));
        prepare(&cluster);
        cluster.chown_all();
        cluster.pg_ctl(&["start", "-w", "-t", "60", "-l", &cluster.dir.join("log").to_string_lossy()]);
        Some(cluster)
    }

    /// Give the server's user every file in the cluster directory.
    fn chown_all(&self) {
        fn walk(path: &Path, uid: u32, gid: u32) {
            let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&entry.path(), uid, gid);
                    } else {
                        let _ = std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid));
                    }
                }
            }
        }
        if let Some((uid, gid)) = self.owner {
            walk(&self.dir, uid, gid);
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(5432)
    }

    /// The superuser's URL for database `db`, over the Unix socket.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://baton@/{db}?host={}&port={}", self.dir.display(), self.port())
    }

    /// `pg_ctl restart -m fast`: sessions are terminated, the server comes back.
    pub fn restart_fast(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l", &self.dir.join("log").to_string_lossy()]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut all = vec!["-D".to_string(), self.data().to_string_lossy().into_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run("pg_ctl", &all);
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).current_dir(&self.dir);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("run {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            panic!("{tool} {args:?} failed: {}\n{log}", String::from_utf8_lossy(&out.stderr));
        }
    }

    fn try_stop(&self) -> std::io::Result<std::process::ExitStatus> {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D", &self.data().to_string_lossy(), "stop", "-m", "immediate", "-w"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.status()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.try_stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `sql` (one or more statements) as the superuser at `admin_url`, from a thread of
/// its own (callers may be inside an async runtime).
pub fn admin(admin_url: &str, sql: &str) {
    let (url, sql) = (admin_url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) =
                url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.expect("connect as admin");
            let driver = tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            drop(client);
            let _ = driver.await;
        })
    })
    .join()
    .expect("admin statement");
}

/// Rows of a query as text, as the superuser (see [`admin`]).
pub fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) =
                url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.expect("connect");
            let driver = tokio::spawn(connection);
            let rows = client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            drop(client);
            let _ = driver.await;
            rows.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .expect("query")
}

/// A statement held in an open transaction (its row locks held) until released.
pub struct Held {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Held {
    /// `BEGIN; sql` on a connection of its own, kept open until [`Held::release`] (or drop).
    pub fn hold(url: &str, sql: &str) -> Held {
        let (url, sql) = (url.to_string(), sql.to_string());
        let (held_tx, held) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) =
                    url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.expect("connect");
                let driver = tokio::spawn(connection);
                client.batch_execute(&format!("BEGIN; {sql}")).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                held_tx.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || release_rx.recv_timeout(std::time::Duration::from_secs(60))).await;
                let _ = client.batch_execute("ROLLBACK").await;
                drop(client);
                let _ = driver.await;
            })
        });
        held.recv_timeout(std::time::Duration::from_secs(30)).expect("the statement is held");
        Held { release: Some(release), thread: Some(thread) }
    }

    /// Roll the transaction back and wait for it.
    pub fn release(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.finish();
    }
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database in the cluster at `admin_url` (a URL ending in `/postgres...`);
/// returns its URL.
pub fn create_database(admin_url: &str) -> String {
    let name = format!("t{}_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::SeqCst), uuid::Uuid::new_v4().simple());
    admin(admin_url, &format!("CREATE DATABASE {name}"));
    let (base, params) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let (server, _) = base.rsplit_once('/').expect("the admin URL names a database");
    format!("{server}/{name}?{params}")
}

/// A PostgreSQL database for one test: in the shared cluster of `BATON_TEST_POSTGRES_URL`,
/// else in a private cluster (returned, to keep it running), else `None` (skipped).
pub fn database() -> Option<(String, Option<Cluster>)> {
    if let Ok(admin_url) = std::env::var(URL_ENV) {
        return Some((create_database(&admin_url), None));
    }
    let cluster = Cluster::start()?;
    let url = create_database(&cluster.url("postgres"));
    Some((url, Some(cluster)))
}
