//! Files a killed open leaves half-written, recognised and set aside before sled reads them.
//!
//! On every open sled 0.34.7 writes a recovery snapshot as `snap.<lsn>.generating` (no
//! truncation, then its bytes, length and CRC, `sync_all`) and renames it to `snap.<lsn>`;
//! on the first open it also writes `conf`. When it opens, it takes every `snap.*` file
//! (but `*.in___motion`), sorts the names and reads the LAST one: a `.generating` file
//! sorts after the finished snapshot of the same lsn, so one left empty or partial by a
//! kill (seen after a kill -9 right after start) is taken as the newest snapshot, and every
//! later open fails with "Read corrupted data" although the log and the finished snapshot
//! are intact. A `conf` shorter than what baton writes (a kill during the first open) is
//! read by sled as missing, but refused by baton's own check as damaged.
//!
//! Neither holds data: the snapshot is only a shortcut through the log, which sled replays
//! from the newest finished snapshot (or from its start) instead, and `conf` holds fixed
//! settings that sled writes again. They are still never deleted: they are moved into
//! `set-aside/` in the database directory (which sled never reads), under a name with the
//! time, and each move is logged. What sled then recovers is checked against the
//! integrity record as on every open, so a shortcut that mattered could not go unnoticed.

use crate::error::BatonResult;
use std::path::{Path, PathBuf};

/// The directory, inside the database directory, that holds set-aside files.
pub const SET_ASIDE: &str = "set-aside";

/// Set aside what a killed open left half-written in `dir`; returns one line per file.
pub fn set_aside_before_open(dir: &Path) -> BatonResult<Vec<String>> {
    let mut moved = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A new database: sled creates the directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(moved),
        Err(e) => return Err(super::io_storage(dir, "list", &e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Any `.generating` snapshot is unfinished: sled renames a snapshot only after
        // writing and syncing all of it, and recovers just as well from the one before.
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let why = format!("an unfinished recovery snapshot ({len} bytes) left by an interrupted open");
            moved.push(set_aside(dir, &entry.path(), &why)?);
        }
    }
    let conf = dir.join("conf");
    if let Ok(bytes) = std::fs::read(&conf) {
        let expected = super::integrity_conf::expected();
        if bytes.len() < expected.len() && expected.starts_with(&bytes) {
            let why = format!("a configuration file cut short ({} of {} bytes) by an interrupted first open", bytes.len(), expected.len());
            moved.push(set_aside(dir, &conf, &why)?);
        }
    }
    Ok(moved)
}

/// Move `path` into `dir/set-aside/`, durably, and log it; returns the line logged.
pub fn set_aside(dir: &Path, path: &Path, why: &str) -> BatonResult<String> {
    let target = aside_path(dir, path);
    let moved = (|| {
        let aside = dir.join(SET_ASIDE);
        std::fs::create_dir_all(&aside)?;
        std::fs::rename(path, &target)?;
        std::fs::File::open(&aside)?.sync_all()?;
        std::fs::File::open(dir)?.sync_all()
    })();
    moved.map_err(|e| super::io_storage(dir, &format!("set aside {} in", path.display()), &e))?;
    let line = format!("set aside {} as {}: {why}", path.display(), target.display());
    tracing::warn!("{line}");
    Ok(line)
}

/// `set-aside/<UTC time>-<name>`, never an existing file.
fn aside_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let stamp = crate::time::Timestamp::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    )
    .to_rfc3339()
    .replace(':', "");
    let aside = dir.join(SET_ASIDE);
    let mut target = aside.join(format!("{stamp}-{name}"));
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = aside.join(format!("{stamp}-{n}-{name}"));
    }
    target
}
