//! `baton ui`: a local web page to watch and steer runs. It listens on 127.0.0.1 only,
//! admits a browser that brings the printed access token (see [`auth`]), and reads and
//! changes runs like any other baton process: through [`Backend::call_as`], as the web
//! actor, so it works beside Codex sessions on the same database.

pub mod auth;
mod events;
mod routes;
mod views;

use crate::api::Caller;
use crate::backend::Backend;
use crate::engine::{Actor, ActorKind};
use crate::home::Home;
use anyhow::Context;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long open connections get to finish once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What every request handler shares.
pub struct AppState {
    pub backend: Arc<Backend>,
    pub caller: Caller,
    pub auth: auth::Auth,
    pub views: views::Views,
    /// The database's change counter, mirrored by [`events::follow_changes`].
    pub changes: watch::Receiver<u64>,
    /// Set when the server stops, to end the event streams.
    pub stopping: watch::Receiver<bool>,
    /// The baton home, shown in the page header.
    pub home: String,
}

/// The person at the web page, as the actor of the changes they make.
pub fn web_caller() -> Caller {
    let user = std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok()).filter(|u| !u.is_empty());
    Caller { actor: Actor { kind: ActorKind::Web, id: user, agent: None }, workspace: None }
}

/// Serve the page on 127.0.0.1 (`port`, or any free one) until SIGINT or SIGTERM;
/// `announce` is given the address to open (with the access token) once it listens.
pub async fn serve(home: Home, port: Option<u16>, announce: impl FnOnce(&str)) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port.unwrap_or(0)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", port.unwrap_or(0)))?;
    let port = listener.local_addr()?.port();
    let backend = Arc::new(Backend::new(home.clone()));
    backend.connect().await?;
    let _notifier = backend.notify_people();
    let caller = web_caller();
    let (counter, changes) = watch::channel(0);
    let follower = tokio::spawn(events::follow_changes(Backend::new(home.clone()), caller.clone(), counter));
    let (stop, stopping) = watch::channel(false);
    let state = Arc::new(AppState {
        backend,
        caller,
        auth: auth::Auth::new(port),
        views: views::Views::new().context("the page templates are broken")?,
        changes,
        stopping: stopping.clone(),
        home: home.dir.display().to_string(),
    });
    let app = routes::router(Arc::clone(&state));
    announce(&state.auth.url());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop_signal().await;
        let _ = stop.send(true);
    });
    let mut stopping = stopping;
    tokio::select! {
        served = server => served.context("the web server failed")?,
        // Open connections get a moment to finish; then the process ends regardless.
        _ = async { let _ = stopping.wait_for(|s| *s).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {}
    }
    follower.abort();
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
