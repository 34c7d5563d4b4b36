//! The baton home directory: where the database, the owner lock and the socket live.
//! It is private to its user (0700); a directory others can read is refused.

use crate::error::{BatonError, BatonResult};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest path a Unix socket address can hold on Linux, minus the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Paths inside one baton home.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `explicit`, else `$BATON_HOME`, else `$CODEX_HOME/baton`, else `~/.codex/baton`.
    pub fn resolve(explicit: Option<&Path>) -> BatonResult<Home> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = explicit
            .map(Path::to_path_buf)
            .or_else(|| env("BATON_HOME"))
            .or_else(|| env("CODEX_HOME").map(|c| c.join("baton")))
            .or_else(|| env("HOME").map(|h| h.join(".codex").join("baton")))
            .ok_or_else(|| {
                BatonError::invalid(
                    "BATON_HOME",
                    "cannot tell where to keep the database: neither BATON_HOME nor HOME is set",
                    "Set BATON_HOME to a directory path.",
                )
            })?;
        let dir = if dir.is_absolute() { dir } else { std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir) };
        Ok(Home { dir })
    }

    pub fn db_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("baton.sock")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("owner.lock")
    }

    /// Create the directory and its `db/` (both 0700) if needed; check it is private and writable.
    pub fn prepare(&self) -> BatonResult<()> {
        let dir = &self.dir;
        create_private(dir).map_err(|e| {
            BatonError::storage(format!("cannot create baton home {}: {e}", dir.display()), "Set BATON_HOME to a directory you can write.")
                .with_field("BATON_HOME")
        })?;
        let meta = std::fs::metadata(dir).map_err(|e| {
            BatonError::storage(format!("cannot read baton home {}: {e}", dir.display()), "Check the path and its permissions.")
                .with_field("BATON_HOME")
        })?;
        if !meta.is_dir() {
            return Err(BatonError::storage(
                format!("baton home {} is not a directory", dir.display()),
                "Point BATON_HOME at a directory, or remove the file.",
            )
            .with_field("BATON_HOME"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 || mode & 0o700 != 0o700 {
            return Err(BatonError::storage(
                format!("baton home {} has permissions {mode:04o}; it must be 0700 (private to you, since it holds your runs and a control socket)", dir.display()),
                format!("Run `chmod 700 {}`.", dir.display()),
            )
            .with_field("BATON_HOME"));
        }
        let probe = dir.join(format!(".write-probe-{}", uuid::Uuid::new_v4()));
        File::create(&probe).and_then(|_| std::fs::remove_file(&probe)).map_err(|e| {
            BatonError::storage(
                format!("baton home {} is not writable: {e}", dir.display()),
                format!("Run `chmod 700 {}` as its owner.", dir.display()),
            )
            .with_field("BATON_HOME")
        })?;
        let db = self.db_dir();
        create_private(&db).map_err(|e| {
            BatonError::storage(format!("cannot create {}: {e}", db.display()), format!("Run `chmod 700 {}` as its owner.", dir.display()))
        })?;
        let socket_len = self.socket_path().as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(BatonError::invalid(
                "BATON_HOME",
                format!("baton home path is too long for its control socket ({socket_len} > {MAX_SOCKET_PATH} bytes)"),
                "Use a shorter BATON_HOME path.",
            ));
        }
        Ok(())
    }

    /// Open the owner lock file (not yet locked).
    pub fn open_lock(&self) -> BatonResult<File> {
        OpenOptions::new().create(true).truncate(false).write(true).open(self.lock_path()).map_err(|e| {
            BatonError::storage(format!("cannot open {}: {e}", self.lock_path().display()), "Check the baton home permissions.")
        })
    }
}

/// Create `dir` (and missing parents) as 0700 unless something already exists there;
/// a concurrent creator is fine.
fn create_private(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
