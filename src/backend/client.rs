//! The client side: how `baton serve` and the terminal commands reach the owner.
//!
//! A call takes a verified connection to the owner (starting an owner when none answers),
//! sends its request with a deadline a few seconds ahead, and waits for the answer a little
//! longer than that. If the connection breaks first (the owner was killed, or shut down
//! before reading the request) it resends the same request, with the same op id, to the
//! next owner: a change is never applied twice. If the owner stays silent (stopped, hung)
//! the caller is told which process holds the database and what to do, and since the owner
//! refuses requests it reads after their deadline, a request reported as failed is never
//! applied later.

use super::daemon::{self, Status};
use super::owner::{self, Owner, Settings, Start};
use super::peer::{self, Dial};
use super::{deadline, wire};
use crate::api::{Caller, Envelope, Reply, Request};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::home::Home;
use futures::{SinkExt, StreamExt};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Idle connections a backend keeps for its next calls.
const POOL: usize = 4;
/// Resends after the owner went away mid-request, before the request is suspected of
/// bringing owners down and refused.
const MAX_RESENDS: usize = 3;
/// New owner processes that may die before reporting (killed, crashed) while one call
/// looks for an owner, before it gives up and says why.
const MAX_VANISHED: usize = 3;

/// How a client starts an owner when none answers.
#[derive(Clone)]
pub enum Launcher {
    /// A detached `baton owner` process (what the binary does).
    Process,
    /// An owner task in this process, with these settings (for tests).
    InProcess(Settings),
}

/// How long a client waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request's deadline: the owner must start executing it within this time.
    pub answer: Duration,
    /// Extra time to wait for the answer past the deadline, for a request that started
    /// executing just before it.
    pub grace: Duration,
    /// How long to keep trying to reach (or start) an owner.
    pub takeover: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { answer: Duration::from_secs(4), grace: Duration::from_secs(1), takeover: Duration::from_secs(15) }
    }
}

impl Timeouts {
    /// The defaults, with the deadline from `BATON_ANSWER_TIMEOUT` (e.g. `2s`) if set.
    pub fn from_env() -> Timeouts {
        let mut timeouts = Timeouts::default();
        if let Some(answer) = crate::env::duration("BATON_ANSWER_TIMEOUT") {
            timeouts.answer = answer;
        }
        timeouts
    }
}

/// One verified connection to an owner.
struct Link {
    conn: wire::Connection,
    owner_pid: u32,
    /// Opened for this call (not taken from the pool, where it may have gone stale).
    fresh: bool,
    /// The deadline of the request in flight: one timer for the connection, moved on for
    /// each request. A timer registered anew each time is the runtime's earliest, and
    /// registering it woke the runtime's driver through its eventfd (a system call and
    /// an extra turn of the event loop per request; issue 22); moving a timer to a later
    /// deadline does not.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How one exchange with the owner ended.
enum Trip {
    /// The owner answered (possibly with an error).
    Answer(wire::WireReply),
    /// The connection broke before an answer: the owner is gone or dropped the request
    /// unread; resending is safe.
    Lost(String),
    /// No answer in time: the owner is stopped or hung.
    Silent,
    /// No answer in time, but this process itself did not run for a while (it was
    /// stopped, or starved) so it cannot blame the owner. The request's deadline has
    /// passed, so the owner can no longer apply it: resending is safe.
    Slept(Duration),
}

/// How long to look for a refusal the owner sent before closing a connection.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// A timer that fires this late means this process was not running meanwhile.
const OVERSLEPT: Duration = Duration::from_millis(500);

/// The entry point for every operation.
pub struct Backend {
    home: Home,
    launcher: Launcher,
    timeouts: Timeouts,
    idle: Mutex<Vec<Link>>,
    /// Set when `BATON_DATABASE_URL` selects PostgreSQL: calls go to the service in this
    /// process (or fail with why the URL is unusable) instead of an owner.
    direct: Option<BatonResult<super::direct::Direct>>,
}

impl Backend {
    /// A backend for `home` that starts owner processes, or that uses the PostgreSQL
    /// database named by `BATON_DATABASE_URL`; nothing happens until the first call.
    pub fn new(home: Home) -> Backend {
        let mut backend = Backend::with(home, Launcher::Process, Timeouts::from_env());
        backend.direct = match crate::store::Location::of(&backend.home) {
            Ok(crate::store::Location::Sled(_)) => None,
            Ok(crate::store::Location::Postgres(url)) => Some(Ok(super::direct::Direct::new(*url))),
            Err(e) => Some(Err(e)),
        };
        backend
    }

    pub fn with(home: Home, launcher: Launcher, timeouts: Timeouts) -> Backend {
        Backend { home, launcher, timeouts, idle: Mutex::new(Vec::new()), direct: None }
    }

    /// The PostgreSQL mode, when selected (see [`super::direct`]).
    pub fn direct(&self) -> Option<BatonResult<&super::direct::Direct>> {
        self.direct.as_ref().map(|d| d.as_ref().map_err(Clone::clone))
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// For a long-lived process (`serve`, `ui`, `drive`): with PostgreSQL, take part in
    /// telling people (the notifier task, see [`super::direct::Direct::notify_people`]);
    /// with sled the owner process does it and this returns `None`.
    pub fn notify_people(&self) -> Option<tokio::task::JoinHandle<()>> {
        match &self.direct {
            Some(Ok(direct)) => Some(direct.notify_people(self.home.clone())),
            _ => None,
        }
    }

    /// Check the home and reach an owner now (starting one if needed), so problems surface
    /// at start-up. Calls retry on their own if this fails.
    pub async fn connect(&self) -> BatonResult<()> {
        if let Some(direct) = self.direct() {
            return direct?.service().await.map(|_| ());
        }
        let link = self.open().await?;
        self.check_in(link);
        Ok(())
    }

    /// Execute `request` in the owner for an unnamed caller (see [`Backend::call_as`]).
    pub async fn call(&self, request: Request) -> BatonResult<Reply> {
        self.call_as(Caller::default(), request).await
    }

    /// Execute `request` in the owner on behalf of `caller` (recorded as the actor of any
    /// change, and whose workspace ties runs to where they were made).
    pub async fn call_as(&self, caller: Caller, request: Request) -> BatonResult<Reply> {
        if let Some(direct) = self.direct() {
            return direct?.call_as(caller, request).await;
        }
        let mut envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller, request, deadline_ms: None };
        let mut lost: Vec<String> = Vec::new();
        loop {
            envelope.deadline_ms = Some(deadline::after(self.timeouts.answer));
            let line = serde_json::to_string(&envelope).map_err(|e| BatonError::internal(format!("cannot encode the request: {e}")))?;
            wire::check_frame_size(line.len(), &envelope.request)?;
            let mut link = self.check_out().await?;
            match round_trip(&mut link, &line, self.timeouts.answer + self.timeouts.grace).await {
                // This process was suspended before its request reached the owner, which
                // refused it unapplied; nothing was told to the caller yet.
                Trip::Answer(Err(e)) if e.field.as_deref() == Some("deadline_ms") && lost.len() < MAX_RESENDS => {
                    tracing::info!("the owner refused this request as late ({}); resending it", e.message);
                    self.check_in(link);
                    lost.push(e.message);
                }
                Trip::Answer(reply) => {
                    self.check_in(link);
                    return reply;
                }
                Trip::Silent => return Err(silent_owner(link.owner_pid, self.timeouts.answer + self.timeouts.grace)),
                Trip::Slept(late) if lost.len() < MAX_RESENDS => {
                    tracing::info!("this process was suspended for about {late:?} during a request; resending it");
                    lost.push(format!("suspended for {late:?}"));
                }
                Trip::Slept(_) => return Err(silent_owner(link.owner_pid, self.timeouts.answer + self.timeouts.grace)),
                Trip::Lost(reason) => {
                    tracing::info!("lost the baton owner (pid {}) during a request ({reason}); resending it", link.owner_pid);
                    if link.fresh {
                        lost.push(reason);
                    }
                    if lost.len() > MAX_RESENDS {
                        return Err(BatonError::new(
                            ErrorCode::Unavailable,
                            format!("the baton owner went away {} times while handling this request ({})", lost.len(), lost.join("; ")),
                            format!(
                                "Check {} for why; the request may have been applied, so look at the run before retrying.",
                                self.home.log_path().display()
                            ),
                        ));
                    }
                }
            }
        }
    }

    fn check_out_idle(&self) -> Option<Link> {
        self.idle.lock().ok()?.pop()
    }

    async fn check_out(&self) -> BatonResult<Link> {
        match self.check_out_idle() {
            Some(link) => Ok(link),
            None => self.open().await,
        }
    }

    fn check_in(&self, mut link: Link) {
        link.fresh = false;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < POOL
        {
            idle.push(link);
        }
    }

    /// A new verified connection to the owner, starting an owner if none answers.
    async fn open(&self) -> BatonResult<Link> {
        let give_up = Instant::now() + self.timeouts.takeover;
        self.home.prepare()?;
        // Owners started for this call that died before reporting, and how.
        let mut vanished: Vec<String> = Vec::new();
        loop {
            if let Dial::Connected(stream, owner_pid) = peer::dial(&self.home).await? {
                let conn = wire::client(stream).map_err(|e| {
                    BatonError::new(
                        ErrorCode::Unavailable,
                        format!("cannot poll the connection to the baton owner (pid {owner_pid}): {e}"),
                        "Retry; if it persists, the process may be out of file descriptors (check `ulimit -n`).",
                    )
                })?;
                return Ok(Link { conn, owner_pid, fresh: true, timer: Box::pin(tokio::time::sleep_until(Instant::now())) });
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(owner::lock_held_error(&self.home, self.timeouts.takeover));
            }
            match self.launch(give_up - now).await? {
                Status::Ready { .. } => {}
                // It saw an owner answering; if that one is gone by now, start another.
                Status::Busy { .. } => tokio::time::sleep(Duration::from_millis(5)).await,
                Status::Failed(e) => return Err(e),
                // Killed or crashed before it could say anything: another election may
                // find an owner (another caller's) or start one that lives.
                Status::Vanished { pid, why } => {
                    tracing::warn!("the new baton owner process (pid {pid}) exited without reporting ({why}); starting another");
                    vanished.push(format!("pid {pid}: {why}"));
                    if vanished.len() >= MAX_VANISHED {
                        return Err(BatonError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "{} baton owner processes started for this request exited without reporting ({})",
                                vanished.len(),
                                vanished.join("; ")
                            ),
                            format!(
                                "See {} for why; check that the baton executable runs (`baton owner --home {}` in a terminal shows its error), then retry.",
                                daemon::log_file(&self.home).display(),
                                self.home.dir.display()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Start an owner, or learn that one is serving or why none can.
    async fn launch(&self, wait: Duration) -> BatonResult<Status> {
        match &self.launcher {
            Launcher::Process => daemon::spawn(&self.home, wait).await,
            Launcher::InProcess(settings) => Ok(match Owner::start(&self.home, settings.clone()).await {
                Ok(Start::Owner(owner)) => {
                    tokio::spawn(owner.serve(std::future::pending()));
                    Status::Ready { pid: std::process::id() }
                }
                Ok(Start::Busy { pid }) => Status::Busy { pid },
                Err(e) => Status::Failed(e),
            }),
        }
    }
}

/// Send one request line and wait up to `wait` for its answer.
async fn round_trip(link: &mut Link, line: &str, wait: Duration) -> Trip {
    let give_up = Instant::now() + wait;
    link.timer.as_mut().reset(give_up);
    let silent = || match Instant::now().saturating_duration_since(give_up) {
        late if late > OVERSLEPT => Trip::Slept(late),
        _ => Trip::Silent,
    };
    let sent = tokio::select! {
        biased;
        sent = link.conn.send(line) => sent,
        () = link.timer.as_mut() => return silent(),
    };
    if let Err(e) = sent {
        // The owner may have refused the connection with an answer and closed it before
        // the request went out: read that answer if it is there.
        return match tokio::time::timeout(REFUSAL_WAIT, link.conn.next()).await {
            Ok(Some(Ok(text))) => decoded(&text),
            _ => Trip::Lost(e.to_string()),
        };
    }
    let answer = tokio::select! {
        biased;
        answer = link.conn.next() => answer,
        () = link.timer.as_mut() => return silent(),
    };
    match answer {
        None => Trip::Lost("connection closed".into()),
        Some(Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded)) => {
            Trip::Answer(Err(BatonError::internal("the owner's answer exceeded the frame limit")))
        }
        Some(Err(e)) => Trip::Lost(e.to_string()),
        Some(Ok(text)) => decoded(&text),
    }
}

fn decoded(text: &str) -> Trip {
    Trip::Answer(
        serde_json::from_str(text).unwrap_or_else(|e| Err(BatonError::internal(format!("the owner's answer could not be decoded: {e}")))),
    )
}

/// The owner holds the database but did not answer in time.
fn silent_owner(pid: u32, waited: Duration) -> BatonError {
    let fix = if peer::state(pid).is_some_and(|s| s == 'T' || s == 't') {
        format!(
            "It is stopped (Ctrl-Z or SIGSTOP): resume it with `kill -CONT {pid}`, or end it with `kill {pid}` (a new owner then starts by itself); then retry."
        )
    } else {
        format!(
            "It may be hung or overloaded: retry in a moment; if it persists, end it with `kill {pid}` (`kill -9 {pid}` if it does not exit) and retry; a new owner starts by itself."
        )
    };
    BatonError::new(
        ErrorCode::Unavailable,
        format!(
            "the baton owner ({}) holds the database but did not answer within {waited:?}; it refuses this request if it reads it later, so the request was not applied (unless the owner was already executing it when it stopped answering)",
            peer::describe(pid)
        ),
        fix,
    )
}
