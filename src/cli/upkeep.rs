//! Looking after the database from the terminal: `verify` (and `--repair`), `backup`,
//! `export`, `import` and `migrate`. All but a repair go through the owner (or straight
//! to PostgreSQL), so they work while Codex sessions are running.

use super::open::{needs_database, open_backend, request_text};
use crate::api::{BackupParams, ExportParams, ImportParams, Request};
use crate::backend::Backend;
use crate::error::BatonError;
use crate::home::Home;
use crate::store::Location;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `baton backup DIR`: a consistent copy made by the owner between two batches.
pub async fn backup(home: &Option<PathBuf>, dir: &Path) -> Result<String> {
    let request = Request::Backup(BackupParams { dir: absolute(dir)? });
    request_text(home, request, false).await
}

/// `baton export [FILE]`: every run as JSON lines, into a new file or onto stdout.
pub async fn export(home: &Option<PathBuf>, file: Option<&Path>) -> Result<String> {
    let Some(file) = file else {
        // The owner writes the file; stream it to stdout from a private temp file.
        let home_dir = Home::resolve(home.as_deref())?;
        needs_database(&home_dir)?;
        home_dir.prepare()?;
        let tmp = home_dir.dir.join(format!(".export-{}.jsonl", uuid::Uuid::new_v4()));
        let result = request_text(home, Request::Export(ExportParams { file: absolute(&tmp)? }), false).await;
        let text = result.and_then(|_| Ok(std::fs::read_to_string(&tmp)?));
        let _ = std::fs::remove_file(&tmp);
        return Ok(text?.trim_end().to_string());
    };
    let path = absolute(file)?;
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(BatonError::new(
            crate::error::ErrorCode::Conflict,
            format!("{path} already exists; `baton export` never overwrites a file"),
            "Give the name of a new file, or remove that one first.",
        )
        .with_field("file")
        .into());
    }
    request_text(home, Request::Export(ExportParams { file: path }), false).await
}

/// `baton import FILE`: the one terminal command that may create a database, since it
/// fills a new home.
pub async fn import(home: &Option<PathBuf>, file: &Path, replace: bool) -> Result<String> {
    let request = Request::Import(ImportParams { file: absolute(file)?, replace });
    let backend = Backend::new(Home::resolve(home.as_deref())?);
    backend.connect().await?;
    let reply = crate::calls::call(&backend, super::terminal_caller(), request).await?;
    Ok(super::render(&reply))
}

/// `path` made absolute against this process's working directory.
fn absolute(path: &std::path::Path) -> Result<String> {
    let path = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    path.to_str().map(String::from).context("the path is not valid UTF-8")
}

/// `baton migrate --to TARGET`: export the current store (through the owner, or directly
/// from PostgreSQL), import into the target, verify.
pub async fn migrate(home: &Option<PathBuf>, to: &str, replace: bool) -> Result<String> {
    let target = Location::parse(to, "to")?;
    let home = Home::resolve(home.as_deref())?;
    needs_database(&home)?;
    let backend = Backend::new(home.clone());
    if target.same_as(&Location::of(&home)?) {
        anyhow::bail!("{} is the store baton uses now; give another target", target.shown());
    }
    home.prepare()?;
    let tmp = home.dir.join(format!(".migrate-{}.jsonl", uuid::Uuid::new_v4()));
    let copied = async {
        backend.connect().await?;
        crate::calls::call(&backend, crate::api::Caller::default(), Request::Export(ExportParams { file: absolute(&tmp)? })).await?;
        let store = crate::migrate::open_target(&target).await?;
        Ok::<_, anyhow::Error>(crate::migrate::copy(&tmp, store.as_ref(), replace).await?)
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let copied = copied?;
    Ok(format!(
        "Copied {} run(s) with {} event(s), {} checkpoint(s) and {} template(s) to {}; verified: every run, checkpoint and template matches, and every event's content hash.",
        copied.runs,
        copied.events,
        copied.checkpoints,
        copied.templates,
        target.shown()
    ))
}

/// `baton verify --repair`: only with no other baton process using the database.
pub async fn repair(home: &Option<PathBuf>, json: bool) -> Result<String> {
    let home = Home::resolve(home.as_deref())?;
    if let Location::Postgres(url) = Location::of(&home)? {
        anyhow::bail!(
            "baton uses the PostgreSQL database {} (BATON_DATABASE_URL); --repair is for the embedded sled database. `baton verify` checks PostgreSQL, and the server's own tools (pg_dump, PITR) restore it",
            url.place
        );
    }
    needs_database(&home)?;
    home.prepare()?;
    let lock = home.open_lock()?;
    if lock.try_lock().is_err() {
        stop_idle_owner(&home, &lock).await?;
    }
    let dir = home.db_dir();
    let options = crate::store::sled_store::Options::for_dir(&dir)?;
    let give_up = tokio::time::Instant::now() + crate::backend::owner::Settings::default().lock_wait;
    let report = crate::backend::owner::open_when_free(give_up, move || crate::store::SledStore::repair(&dir, options.clone())).await?;
    let text = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut text = format!("Repaired {}: {} run(s), {} event(s).", home.db_dir().display(), report.runs, report.events);
        for problem in &report.problems {
            text.push_str(&format!("\n- {problem}"));
        }
        text
    };
    if report.is_sound() { Ok(text) } else { Err(ProblemsFound(text).into()) }
}

/// The report of a verify that found problems: printed on stdout like a sound one, then
/// the process exits with [`PROBLEMS_FOUND`](super::errors::PROBLEMS_FOUND), so a script
/// cannot take a damaged database for a sound one.
#[derive(Debug)]
pub struct ProblemsFound(pub String);

impl std::fmt::Display for ProblemsFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProblemsFound {}

/// `baton verify`: the report, as an error carrying it when problems were found.
pub async fn verify(home: &Option<PathBuf>, json: bool) -> Result<String> {
    let backend = open_backend(home.as_deref()).await?;
    let reply = crate::calls::call(&backend, super::terminal_caller(), Request::Verify(Default::default())).await?;
    let sound = matches!(&reply, crate::api::Reply::Verified(report) if report.is_sound());
    let text = if json { serde_json::to_string_pretty(&reply.to_json())? } else { super::render(&reply) };
    if sound { Ok(text) } else { Err(ProblemsFound(text).into()) }
}

/// A repair must have the database to itself. If the owner process serves nobody but
/// us (e.g. it lingers after a terminal command), ask it to shut down (it finishes what is
/// in flight and releases the lock) and take the lock; if sessions use it, refuse.
async fn stop_idle_owner(home: &Home, lock: &std::fs::File) -> Result<()> {
    let backend = Backend::new(home.clone());
    // A terminal command that just exited may still be counted until the owner sees its
    // connection close: ask again for a moment before blaming a session.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let owner = loop {
        let owner = crate::calls::call(&backend, crate::api::Caller::default(), crate::api::AskOwner).await?;
        if owner.connections <= 1 || std::time::Instant::now() >= settle {
            break owner;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if owner.connections > 1 {
        anyhow::bail!(
            "{} other connection(s) to the baton owner (pid {}) are open: baton sessions are using {}; stop every baton session (and Codex) first, then rerun `baton verify --repair`",
            owner.connections - 1,
            owner.pid,
            home.dir.display()
        );
    }
    // SAFETY: kill sends a signal to the process recorded as the owner; nothing is dereferenced.
    if unsafe { libc::kill(owner.pid as i32, libc::SIGTERM) } != 0 {
        anyhow::bail!("cannot stop the baton owner (pid {}): {}", owner.pid, std::io::Error::last_os_error());
    }
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lock.try_lock().is_err() {
        if std::time::Instant::now() > give_up {
            anyhow::bail!("the baton owner (pid {}) did not stop within 10 s; stop it with `kill {}` and retry", owner.pid, owner.pid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
