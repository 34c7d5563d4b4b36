//! The owner: the one process that holds the database (sled allows one per database) and
//! serves every other baton process on the home's Unix socket.
//!
//! An owner is a value with an explicit life, so it can run in its own process (see
//! `daemon`) or inside a test: [`Owner::start`] takes the lock, opens the store and binds
//! the socket; [`Owner::serve`] answers connections until asked to stop, until it has had
//! no connection for the idle period, or until its home disappears, and then shuts down in
//! order: stop accepting, let in-flight requests finish and answer them, close the store,
//! release the lock. The lock is released only once the store is closed, so a successor
//! never finds the database still held; dropping a serving owner does the same.

use super::conn::{self, OwnerState};
use super::peer::{self, Dial};
use super::wire::FrameBudget;
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::home::{Home, SocketFile};
use crate::service::Service;
use crate::store::RunStore;
use std::fs::{File, TryLockError};
use std::future::Future;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for aborted connection tasks before leaving them behind.
const ABANDON: Duration = Duration::from_secs(2);
/// How long shutdown waits for the store to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long a flush may stay stuck inside sled before the owner exits to let a new owner
/// reopen the database (meanwhile every write is refused with a `storage` error).
const STUCK_EXIT: Duration = Duration::from_secs(10);

/// Opens the store in a database directory.
pub type OpenStore = Arc<dyn Fn(&Path) -> BatonResult<Arc<dyn RunStore>> + Send + Sync>;

/// How an owner behaves. [`Settings::default`] has the production values.
#[derive(Clone)]
pub struct Settings {
    /// Shut down after this long without any connection.
    pub idle: Duration,
    /// Connections served at once; more are refused with an answer. Keep it well below
    /// the file-descriptor limit: the store must always be able to open its files.
    pub max_connections: usize,
    /// Memory for partially received request frames, across all connections.
    pub frame_budget: usize,
    /// A request frame must arrive completely within this time once it has started.
    pub frame_timeout: Duration,
    /// A client must take its answer within this time, else it is disconnected.
    pub answer_timeout: Duration,
    /// How long shutdown waits for in-flight requests before abandoning them.
    pub shutdown_grace: Duration,
    /// How long a starting owner waits for a departing one to release the lock.
    pub lock_wait: Duration,
    /// How often to check that the home is still there.
    pub home_check: Duration,
    pub open_store: OpenStore,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            idle: Duration::from_secs(180),
            max_connections: 256,
            frame_budget: 16 * 1024 * 1024,
            frame_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            home_check: Duration::from_secs(2),
            open_store: Arc::new(crate::store::open_sled),
        }
    }
}

/// The outcome of trying to become the owner.
pub enum Start {
    Owner(Box<Owner>),
    /// Another process owns the database and answers on the socket.
    Busy {
        pid: u32,
    },
}

/// An owner that holds the lock, the open store and the bound socket.
pub struct Owner {
    /// Tasks run beside the serving over the store (the notifier); stopped before it closes.
    beside: JoinSet<()>,
    shared: Arc<OwnerState>,
    settings: Settings,
    listener: UnixListener,
    home: Home,
    lock_id: (u64, u64),
    released: watch::Receiver<()>,
}

impl Owner {
    /// Become the owner of `home`: take the lock (waiting up to `lock_wait` for an owner
    /// that is shutting down), open the store, bind the socket. If another owner answers
    /// on the socket, report it instead.
    pub async fn start(home: &Home, settings: Settings) -> BatonResult<Start> {
        home.prepare()?;
        let lock = home.open_lock()?;
        let give_up = Instant::now() + settings.lock_wait;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(BatonError::storage(
                        format!("cannot lock {}: {e}", home.lock_path().display()),
                        "Check the baton home permissions.",
                    ));
                }
            }
            if let Dial::Connected(_, pid) = peer::dial(home).await? {
                return Ok(Start::Busy { pid });
            }
            if Instant::now() >= give_up {
                return Err(lock_held_error(home, settings.lock_wait));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = open_store(home, &settings, give_up).await?;
        home.tighten_db_permissions();
        let listener = bind(home)?;
        record_pid(&lock);
        let meta = lock.metadata().map_err(|e| BatonError::storage(format!("cannot inspect the lock: {e}"), "Retry."))?;
        let (released_tx, released) = watch::channel(());
        let budget = FrameBudget::new(settings.frame_budget);
        let shared = Arc::new(OwnerState {
            service: Service::new(store),
            frame_timeout: settings.frame_timeout,
            answer_timeout: settings.answer_timeout,
            budget,
            connections: std::sync::atomic::AtomicUsize::new(0),
            _lock: lock,
            _released: released_tx,
        });
        tracing::info!(home = %home.dir.display(), pid = std::process::id(), "this process now owns the baton database");
        Ok(Start::Owner(Box::new(Owner {
            beside: JoinSet::new(),
            shared,
            settings,
            listener,
            home: home.clone(),
            lock_id: (meta.dev(), meta.ino()),
            released,
        })))
    }

    /// Run `task` beside the serving, over a hold on the store (the notifier, which reads
    /// what became durable). It is stopped when the serving ends, before the store closes;
    /// and while any hold is alive the lock stays taken, so a successor that gets the lock
    /// never finds the database still open here.
    pub fn run_beside<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(StoreHold) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.beside.spawn(task(StoreHold(Arc::clone(&self.shared))));
    }

    /// Completes once the store is closed and the lock released: after [`Owner::serve`]
    /// returns, or after the owner (serving or not) is dropped.
    pub fn released(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut released = self.released.clone();
        async move { while released.changed().await.is_ok() {} }
    }

    /// Serve until `shutdown` completes, the owner has been idle for the idle period, or
    /// the home is gone; then shut down in order. Returns why it stopped.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> &'static str {
        let Owner { mut beside, shared, settings, listener, home, lock_id, released: _ } = self;
        let stop = CancellationToken::new();
        let mut connections = JoinSet::new();
        let idle = tokio::time::sleep(settings.idle);
        let mut home_check = tokio::time::interval_at(Instant::now() + settings.home_check, settings.home_check);
        // After a failed accept (e.g. out of file descriptors), accepting pauses until then.
        let mut paused: Option<Instant> = None;
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown, idle);
        let reason = loop {
            tokio::select! {
                () = &mut shutdown => break "asked to shut down",
                () = &mut idle, if connections.is_empty() => break "idle",
                _ = home_check.tick() => {
                    if !home_intact(&home, lock_id) {
                        break "its home was removed or replaced";
                    }
                    if crate::store::sled_store::stuck_for().is_some_and(|stuck| stuck >= STUCK_EXIT) {
                        break "its database is stuck inside sled (a flush never returned), so this process cannot reopen it; the next owner opens it afresh";
                    }
                },
                Some(ended) = connections.join_next() => {
                    if let Err(e) = ended && e.is_panic() {
                        tracing::error!("a connection task panicked: {e}");
                    }
                    if connections.is_empty() {
                        idle.as_mut().reset(Instant::now() + settings.idle);
                    }
                }
                () = tokio::time::sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => paused = None,
                accepted = listener.accept(), if paused.is_none() => match accepted {
                    Ok((stream, _)) => {
                        backoff = Duration::from_millis(5);
                        match admit(&stream, connections.len(), &settings) {
                            Ok(()) => {
                                connections.spawn(conn::serve(stream, Arc::clone(&shared), stop.clone()));
                            }
                            Err(refusal) => conn::refuse(stream, &refusal),
                        }
                    }
                    Err(e) => {
                        // EMFILE/ENFILE and friends: the pending connection stays queued;
                        // retry later instead of spinning, and keep serving the others.
                        tracing::warn!("accept on the baton socket failed: {e}; retrying in {backoff:?}");
                        paused = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                },
            }
        };
        tracing::info!("the baton owner shuts down: {reason}");
        // No new connections: the socket goes first (we still hold the lock, so it is ours).
        if home_intact(&home, lock_id) {
            let _ = std::fs::remove_file(home.socket_path());
        }
        drop(listener);
        stop.cancel();
        let drained = tokio::time::timeout(settings.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within {:?}; abandoning them", settings.shutdown_grace);
            connections.abort_all();
            // A task blocked inside a store call cannot be aborted; do not wait for it
            // forever. Its reference keeps the store open until the process exits.
            let aborted = tokio::time::timeout(ABANDON, async { while connections.join_next().await.is_some() {} }).await;
            if aborted.is_err() {
                tracing::error!(
                    "{} connection(s) are stuck in a store call; the store is released when this process exits",
                    connections.len()
                );
                connections.detach_all();
            }
        }
        // The tasks beside hold the store (and so the lock) too: stop them first, so the
        // drop below closes the store here and not whenever they would end.
        beside.abort_all();
        if tokio::time::timeout(ABANDON, async { while beside.join_next().await.is_some() {} }).await.is_err() {
            tracing::error!("{} task(s) beside the serving are stuck in a store call; the store closes when they end", beside.len());
            beside.detach_all();
        }
        // Normally the last reference: closes the store, then releases the lock. A store
        // that failed may never finish closing (sled waits forever for a flush after an
        // I/O error), so this is not awaited without bound; an owner process then exits
        // anyway, and the kernel releases the lock.
        let closing = tokio::task::spawn_blocking(move || drop(shared));
        if tokio::time::timeout(CLOSE_WAIT, closing).await.is_err() {
            tracing::error!("the database did not close within {CLOSE_WAIT:?} (the store may have failed); leaving it");
        }
        reason
    }
}

/// A hold on the owner's store for a task beside the serving: it derefs to the store, and
/// the owner's lock is released only once the last hold (and the store with it) is gone.
pub struct StoreHold(Arc<OwnerState>);

impl std::ops::Deref for StoreHold {
    type Target = dyn RunStore;

    fn deref(&self) -> &(dyn RunStore + 'static) {
        self.0.service.store().as_ref()
    }
}

/// Open the store, retrying while a previous owner that released the lock is still
/// closing it (sled keeps its own file lock until then).
async fn open_store(home: &Home, settings: &Settings, give_up: Instant) -> BatonResult<Arc<dyn RunStore>> {
    let (open, dir) = (Arc::clone(&settings.open_store), home.db_dir());
    open_when_free(give_up, move || open(&dir)).await
}

/// Run `open` on the database (on a blocking thread) once the process that held it lets
/// go: whoever holds the owner lock can still find sled's own lock taken by an owner that
/// is closing (its last store call ending), so `unavailable` is retried until `give_up`.
/// A starting owner and `baton verify --repair` wait so.
pub async fn open_when_free<T, F>(give_up: Instant, open: F) -> BatonResult<T>
where
    T: Send + 'static,
    F: Fn() -> BatonResult<T> + Send + Sync + 'static,
{
    let open = Arc::new(open);
    loop {
        let attempt = Arc::clone(&open);
        let opened = tokio::task::spawn_blocking(move || attempt())
            .await
            .map_err(|e| BatonError::internal(format!("opening the database failed: {e}")))?;
        match opened {
            Err(e) if e.code == ErrorCode::Unavailable && Instant::now() < give_up => {
                tracing::debug!("{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Bind the socket, replacing a stale one of ours (we hold the lock, so nobody serves it).
fn bind(home: &Home) -> BatonResult<UnixListener> {
    let path = home.socket_path();
    if home.socket_file()? == SocketFile::Ours {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| BatonError::storage(format!("cannot listen on {}: {e}", path.display()), "Check the baton home is writable."))?;
    // Private whatever the umask; the home is private too, and peers are checked anyway.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| BatonError::storage(format!("cannot make {} private: {e}", path.display()), "Check the baton home permissions."))?;
    Ok(listener)
}

/// Decide whether to serve a new connection: it must come from this user, and there must
/// be room for it.
fn admit(stream: &tokio::net::UnixStream, open: usize, settings: &Settings) -> Result<(), BatonError> {
    peer::admit(stream)?;
    if open >= settings.max_connections {
        return Err(BatonError::new(
            ErrorCode::Unavailable,
            format!("the baton owner already serves {open} connections, its limit"),
            "Close baton sessions or terminal commands you no longer need, then retry.",
        ));
    }
    Ok(())
}

/// The pid recorded in the lock file by the owner that holds (or last held) it.
pub fn recorded_pid(home: &Home) -> Option<u32> {
    std::fs::read_to_string(home.lock_path()).ok()?.trim().parse().ok()
}

/// Record this process in the lock file, for people and for error messages.
fn record_pid(lock: &File) {
    let text = format!("{}\n", std::process::id());
    if let Err(e) = lock.set_len(0).and_then(|()| lock.write_all_at(text.as_bytes(), 0)) {
        tracing::warn!("cannot record the owner's pid in the lock file: {e}");
    }
}

/// Whether the lock file in the home is still the one this owner holds.
fn home_intact(home: &Home, lock_id: (u64, u64)) -> bool {
    std::fs::symlink_metadata(home.lock_path()).is_ok_and(|m| (m.dev(), m.ino()) == lock_id)
}

/// The lock is held, but no owner answers on the socket.
pub fn lock_held_error(home: &Home, waited: Duration) -> BatonError {
    let holder = recorded_pid(home).map(peer::describe).unwrap_or_else(|| "another process".into());
    let fix = match recorded_pid(home) {
        Some(pid) if peer::state(pid) == Some('T') => {
            format!("Resume it with `kill -CONT {pid}`, or end it with `kill {pid}`; then retry (a new owner starts by itself).")
        }
        Some(pid) => format!("Retry in a moment; if it persists, end it with `kill {pid}` (a new owner starts by itself)."),
        None => "Retry in a moment; if it persists, look for a stray `baton` process using this home.".into(),
    };
    BatonError::new(
        ErrorCode::Unavailable,
        format!("{holder} holds {} but has not served {} for {waited:?}", home.lock_path().display(), home.socket_path().display()),
        fix,
    )
}
