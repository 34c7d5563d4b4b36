//! In-process tests of election, shutdown and the client's failure handling: owners run
//! as values in this process, on one temporary home.

use super::owner::{Owner, Settings, Start, recorded_pid};
use super::{Backend, Launcher, Timeouts, deadline, wire};
use crate::api::{Caller, Envelope, ListRunsParams, Request, StartWorkflowParams};
use crate::engine::{Event, Run, Template};
use crate::error::{BatonResult, ErrorCode};
use crate::home::Home;
use crate::store::{Mutation, RunPage, RunQuery, RunStore, SledStore};
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, Semaphore};

const BOUND: Duration = Duration::from_secs(10);

/// A sled store whose commits wait at a gate, so a request can be held in flight.
struct GatedStore {
    inner: SledStore,
    entered: Arc<Notify>,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl RunStore for GatedStore {
    async fn run(&self, run_id: &str) -> BatonResult<Option<Run>> {
        self.inner.run(run_id).await
    }
    async fn events(&self, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
        self.inner.events(run_id, from, to, max_bytes).await
    }
    async fn checkpoint(&self, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
        self.inner.checkpoint(run_id, name).await
    }
    async fn template(&self, name: &str) -> BatonResult<Option<Template>> {
        self.inner.template(name).await
    }
    async fn templates(&self) -> BatonResult<Vec<Template>> {
        self.inner.templates().await
    }
    async fn list(&self, query: &RunQuery) -> BatonResult<RunPage> {
        self.inner.list(query).await
    }
    async fn commit(&self, op_id: &str, run_id: &str, change: Mutation) -> BatonResult<crate::engine::Run> {
        self.entered.notify_one();
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.commit(op_id, run_id, change).await
    }
    async fn verify(&self) -> BatonResult<crate::store::VerifyReport> {
        self.inner.verify().await
    }
    async fn backup(&self, dir: &Path) -> BatonResult<crate::store::BackupReport> {
        self.inner.backup(dir).await
    }
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64> {
        self.inner.export(out).await
    }
    async fn import(&self, input: &mut (dyn std::io::BufRead + Send), replace: bool) -> BatonResult<u64> {
        self.inner.import(input, replace).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn delete_run(&self, run_id: &str) -> BatonResult<Option<crate::store::RunSummary>> {
        self.inner.delete_run(run_id).await
    }
}

fn settings() -> Settings {
    Settings { lock_wait: Duration::from_millis(300), home_check: Duration::from_millis(50), ..Settings::default() }
}

/// Settings whose store counts how often it was opened.
fn counted(opened: &Arc<AtomicUsize>) -> Settings {
    let opened = Arc::clone(opened);
    Settings {
        open_store: Arc::new(move |dir: &Path| -> BatonResult<Arc<dyn RunStore>> {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(SledStore::open(dir)?))
        }),
        ..settings()
    }
}

fn home(tmp: &tempfile::TempDir) -> Home {
    Home { dir: tmp.path().join("home") }
}

async fn start(home: &Home, settings: Settings) -> Owner {
    match Owner::start(home, settings).await.expect("start") {
        Start::Owner(owner) => *owner,
        Start::Busy { pid } => panic!("pid {pid} owns it already"),
    }
}

fn client(home: &Home, settings: Settings) -> Backend {
    let timeouts = Timeouts { answer: Duration::from_secs(5), grace: Duration::from_secs(1), takeover: BOUND };
    Backend::with(home.clone(), Launcher::InProcess(settings), timeouts)
}

fn start_workflow(goal: &str) -> Request {
    Request::StartWorkflow(StartWorkflowParams { goal: goal.into(), ..Default::default() })
}

/// Whether the lock and the database can be taken by someone else now.
fn database_is_free(home: &Home) -> bool {
    home.open_lock().unwrap().try_lock().is_ok() && SledStore::open(&home.db_dir()).is_ok()
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future).await.unwrap_or_else(|_| panic!("{what} took over {BOUND:?}"))
}

#[tokio::test]
async fn two_owners_on_one_home_one_owns_and_the_other_takes_over_after_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let first = start(&home, settings()).await;
    assert_eq!(recorded_pid(&home), Some(std::process::id()), "the lock file names the owner");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(first.serve(async {
        let _ = stopped.await;
    }));
    match Owner::start(&home, settings()).await.unwrap() {
        Start::Busy { pid } => assert_eq!(pid, std::process::id()),
        Start::Owner(_) => panic!("two owners of one database"),
    }
    stop.send(()).unwrap();
    assert_eq!(bounded("shutdown", serving).await.unwrap(), "asked to shut down");
    assert!(!home.socket_path().exists(), "the socket goes with its owner");
    let second = start(&home, settings()).await;
    let released = second.released();
    drop(second);
    bounded("release after drop", released).await;
    assert!(database_is_free(&home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_answers_in_flight_requests_then_releases_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let (e, g) = (Arc::clone(&entered), Arc::clone(&gate));
    let gated = Settings {
        open_store: Arc::new(move |dir: &Path| -> BatonResult<Arc<dyn RunStore>> {
            Ok(Arc::new(GatedStore { inner: SledStore::open(dir)?, entered: Arc::clone(&e), gate: Arc::clone(&g) }))
        }),
        ..settings()
    };
    let owner = start(&home, gated.clone()).await;
    let released = owner.released();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(owner.serve(async {
        let _ = stopped.await;
    }));
    let backend = Arc::new(client(&home, gated));
    let caller = Arc::clone(&backend);
    let in_flight = tokio::spawn(async move { caller.call(start_workflow("in flight at shutdown")).await });
    bounded("the request reaching the store", entered.notified()).await;

    stop.send(()).unwrap();
    bounded("the socket going away", async {
        while home.socket_path().exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(tokio::net::UnixStream::connect(home.socket_path()).await.is_err(), "no new connections");
    assert!(!serving.is_finished(), "shutdown waits for the request in flight");

    gate.add_permits(1);
    let brief = bounded("the in-flight answer", in_flight).await.unwrap().expect("the in-flight request is answered");
    assert_eq!(brief.to_json()["version"], 1);
    assert_eq!(bounded("shutdown", serving).await.unwrap(), "asked to shut down");
    bounded("release", released).await;
    assert!(database_is_free(&home), "lock and store are released");
    let store = SledStore::open(&home.db_dir()).unwrap();
    let listed = store.list(&RunQuery { limit: 10, ..RunQuery::default() }).await.unwrap();
    assert_eq!(listed.total, 1, "the answered change is on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_beside_the_serving_never_keeps_the_database_open_past_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    // Stopped at shutdown: the store closes inside serve, before the lock is released.
    let mut owner = start(&home, settings()).await;
    owner.run_beside(|store| async move {
        let _held = store;
        std::future::pending::<()>().await
    });
    let served = bounded("shutdown", owner.serve(std::future::ready(()))).await;
    assert_eq!(served, "asked to shut down");
    assert!(database_is_free(&home), "the lock and the database are free the moment serve returns");

    // Still held (the task never ended, e.g. the owner was dropped): the lock stays taken
    // as long as the store is open, so whoever takes the lock can open the database.
    let mut owner = start(&home, settings()).await;
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel();
    owner.run_beside(|store| async move {
        let _ = hold_tx.send(store);
    });
    let hold = bounded("the hold", hold_rx).await.expect("the task hands its hold over");
    let released = owner.released();
    drop(owner);
    assert!(home.open_lock().unwrap().try_lock().is_err(), "a hold on the store keeps the lock");
    assert_eq!(hold.list(&RunQuery { limit: 1, ..RunQuery::default() }).await.unwrap().total, 0, "and the store open");
    drop(hold);
    bounded("release after the last hold", released).await;
    assert!(database_is_free(&home));
}

#[tokio::test]
async fn dropping_a_serving_owner_releases_the_database_despite_open_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let owner = start(&home, settings()).await;
    let released = owner.released();
    let serving = tokio::spawn(owner.serve(std::future::pending()));
    let backend = client(&home, settings());
    backend.call(Request::ListRuns(ListRunsParams::default())).await.unwrap();
    // The backend keeps its connection open, so a connection task is alive in the owner.
    serving.abort();
    bounded("release after the owner is dropped", released).await;
    assert!(database_is_free(&home));
}

#[tokio::test]
async fn concurrent_clients_elect_one_owner_and_an_idle_owner_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let opened = Arc::new(AtomicUsize::new(0));
    let backends: Vec<Backend> = (0..4).map(|_| client(&home, counted(&opened))).collect();
    let calls = backends.iter().map(|b| b.call(Request::ListRuns(ListRunsParams::default())));
    for answer in bounded("four first calls", futures::future::join_all(calls)).await {
        assert_eq!(answer.unwrap().to_json()["total"], 0);
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1, "exactly one owner opened the store");

    let idle = Settings { idle: Duration::from_millis(100), ..settings() };
    let tmp2 = tempfile::tempdir().unwrap();
    let other = self::home(&tmp2);
    let owner = start(&other, idle).await;
    assert_eq!(bounded("idle exit", owner.serve(std::future::pending())).await, "idle");
    assert!(database_is_free(&other));
}

#[tokio::test]
async fn an_owner_whose_home_is_deleted_shuts_down() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let owner = start(&home, settings()).await;
    let serving = tokio::spawn(owner.serve(std::future::pending()));
    std::fs::remove_dir_all(&home.dir).unwrap();
    assert_eq!(bounded("exit after the home is gone", serving).await.unwrap(), "its home was removed or replaced");
}

#[tokio::test]
async fn a_request_read_after_its_deadline_is_refused_and_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let owner = start(&home, settings()).await;
    tokio::spawn(owner.serve(std::future::pending()));
    let stream = tokio::net::UnixStream::connect(home.socket_path()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut answers = BufReader::new(read).lines();
    let late = Envelope {
        caller: Caller::default(),
        op_id: uuid::Uuid::new_v4().to_string(),
        request: start_workflow("too late"),
        deadline_ms: Some(deadline::now_ms() - 1),
    };
    write.write_all(format!("{}\n", serde_json::to_string(&late).unwrap()).as_bytes()).await.unwrap();
    let answer: wire::WireReply = serde_json::from_str(&answers.next_line().await.unwrap().unwrap()).unwrap();
    let err = answer.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(err.message.contains("after its caller's deadline") && err.message.contains("not applied"), "{err}");
    assert_eq!(err.field.as_deref(), Some("deadline_ms"));
    let list = Envelope {
        caller: Caller::default(),
        op_id: uuid::Uuid::new_v4().to_string(),
        request: Request::ListRuns(ListRunsParams::default()),
        deadline_ms: None,
    };
    write.write_all(format!("{}\n", serde_json::to_string(&list).unwrap()).as_bytes()).await.unwrap();
    let answer: wire::WireReply = serde_json::from_str(&answers.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(answer.unwrap().to_json()["total"], 0, "nothing was applied");
}

#[tokio::test]
async fn a_silent_owner_makes_calls_fail_in_time_naming_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    home.prepare().unwrap();
    // Something holds the socket and accepts, but never answers (like a stopped owner).
    let listener = tokio::net::UnixListener::bind(home.socket_path()).unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeouts = Timeouts { answer: Duration::from_millis(300), grace: Duration::from_millis(100), takeover: BOUND };
    let backend = Backend::with(home.clone(), Launcher::InProcess(settings()), timeouts);
    let started = tokio::time::Instant::now();
    let err = backend.call(start_workflow("never answered")).await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(2), "gave up after {waited:?}");
    assert_eq!(err.code, ErrorCode::Unavailable);
    let me = std::process::id();
    assert!(err.message.contains(&format!("pid {me}")) && err.message.contains("did not answer within"), "{err}");
    assert!(err.fix.contains(&format!("kill {me}")), "{err}");
}

#[tokio::test]
async fn a_client_that_was_itself_suspended_resends_instead_of_blaming_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    home.prepare().unwrap();
    let listener = tokio::net::UnixListener::bind(home.socket_path()).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let request_read = Arc::new(Notify::new());
    let read = Arc::clone(&request_read);
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut lines = BufReader::new(stream).lines();
            let _ = lines.next_line().await;
            read.notify_one();
            held.push(lines);
        }
    });
    let timeouts = Timeouts { answer: Duration::from_millis(200), grace: Duration::from_millis(100), takeover: BOUND };
    let backend = Backend::with(home.clone(), Launcher::InProcess(settings()), timeouts);
    let call = backend.call(Request::ListRuns(ListRunsParams::default()));
    let suspend = async {
        request_read.notified().await;
        // This (single-threaded) runtime does not run for a while, as if stopped.
        std::thread::sleep(Duration::from_millis(1200));
        std::future::pending::<()>().await
    };
    let err = tokio::select! {
        outcome = call => outcome.unwrap_err(),
        () = suspend => unreachable!(),
    };
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "resent once on a new connection after the suspension");
}

/// A client that sends requests and never reads the answers fills the socket's buffers;
/// the owner's write then waits for room (`socket::Socket`) for at most the answer timeout
/// and drops that connection, while another client is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_dropped_and_stalls_no_one() {
    let tmp = tempfile::tempdir().unwrap();
    let home = home(&tmp);
    let owner = start(&home, Settings { answer_timeout: Duration::from_millis(300), ..settings() }).await;
    tokio::spawn(owner.serve(std::future::pending()));
    let stuck = tokio::net::UnixStream::connect(home.socket_path()).await.unwrap();
    let (stuck_read, mut stuck_write) = stuck.into_split();
    let request = |request: Request| {
        let envelope = Envelope { caller: Caller::default(), op_id: uuid::Uuid::new_v4().to_string(), request, deadline_ms: None };
        format!("{}\n", serde_json::to_string(&envelope).unwrap())
    };
    // Far more answer bytes than both sockets' buffers hold.
    let many = request(Request::ListTemplates(Default::default())).repeat(2_000);
    let sending = tokio::spawn(async move {
        let _ = stuck_write.write_all(many.as_bytes()).await;
        stuck_write
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let backend = client(&home, settings());
    let answered =
        bounded("a call beside the stuck client", backend.call_as(Caller::default(), Request::ListRuns(Default::default()))).await;
    assert_eq!(answered.unwrap().to_json()["total"], 0);
    // Past the answer timeout the stuck connection is closed: reading it now ends after
    // the answers the buffers held.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut lines = BufReader::new(stuck_read).lines();
    let mut read = 0usize;
    bounded("the stuck connection to end", async {
        while let Ok(Some(_)) = lines.next_line().await {
            read += 1;
        }
    })
    .await;
    assert!(read > 0 && read < 2_000, "the owner answered some and then let go: {read} answers");
    drop(bounded("the stuck sender", sending).await);
}
