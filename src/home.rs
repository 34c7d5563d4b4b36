//! The baton home directory: where the database, the owner lock and the socket live.
//!
//! It holds a user's runs and a control socket, so it must be private to that user: the
//! home and `db/` must be real directories (not symbolic links) owned by the current user
//! with mode 0700, and the lock, socket and log files are created 0600 whatever the umask.
//! Anything else is refused with the path and the fix, before any file in it is trusted:
//! a home planted by another user (even for root) or a link pointing elsewhere would let
//! that user read the runs or answer in the owner's place.

use crate::error::{BatonError, BatonResult};
use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest path a Unix socket address can hold on Linux, minus the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The owner's log is started afresh (the old one kept as `owner.log.1`) beyond this size.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// Paths inside one baton home.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

/// What is at the socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFile {
    /// Nothing: no owner serves.
    Missing,
    /// A socket of ours (possibly stale: the process that bound it may be gone).
    Ours,
}

/// The effective user id of this process: the only user a home may belong to.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl Home {
    /// `explicit`, else `$BATON_HOME`, else the home `baton install` registered in Codex's
    /// config.toml (`[mcp_servers.baton.env] BATON_HOME`, so terminal commands use the
    /// database Codex's sessions use), else `$CODEX_HOME/baton`, else `~/.codex/baton`.
    pub fn resolve(explicit: Option<&Path>) -> BatonResult<Home> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = explicit
            .map(Path::to_path_buf)
            .or_else(|| env("BATON_HOME"))
            .or_else(registered_home)
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

    /// Refuse a home that does not exist, before anything is created: a command that reads
    /// or changes runs on a mistyped home must not make an empty database there (nor start
    /// an owner for it). Something at the path (a home, or a link or a directory someone
    /// planted) is left to [`Home::prepare`], whose checks say what is wrong with it.
    pub fn require_database(&self) -> BatonResult<()> {
        if std::fs::symlink_metadata(&self.dir).is_ok() {
            return Ok(());
        }
        let registered = registered_home()
            .filter(|h| h != &self.dir)
            .map(|h| format!(" (`baton install` registered {})", h.display()))
            .unwrap_or_default();
        Err(BatonError::not_found(
            "home",
            format!("there is no baton database in {}: nothing is at that path (nothing was created)", self.dir.display()),
            format!(
                "Check --home or BATON_HOME{registered}. A database is created when a Codex session first uses baton (after `baton install`), or by `baton import FILE` into this home."
            ),
        ))
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

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("owner.log")
    }

    /// Create the home and its `db/` (both 0700) if needed, and check that both are private
    /// directories of this user and that the home is writable.
    pub fn prepare(&self) -> BatonResult<()> {
        let dir = &self.dir;
        create_private(dir, true).map_err(|e| {
            BatonError::storage(format!("cannot create baton home {}: {e}", dir.display()), "Set BATON_HOME to a directory you can write.")
                .with_field("BATON_HOME")
        })?;
        check_private_dir(dir, "baton home").map_err(|e| e.with_field("BATON_HOME"))?;
        let probe = dir.join(format!(".write-probe-{}", uuid::Uuid::new_v4()));
        new_private_file(&probe).and_then(|_| std::fs::remove_file(&probe)).map_err(|e| {
            BatonError::storage(
                format!("baton home {} is not writable: {e}", dir.display()),
                format!("Run `chmod 700 {}` as its owner.", dir.display()),
            )
            .with_field("BATON_HOME")
        })?;
        let db = self.db_dir();
        create_private(&db, false).map_err(|e| {
            BatonError::storage(format!("cannot create {}: {e}", db.display()), format!("Run `chmod 700 {}` as its owner.", dir.display()))
        })?;
        check_private_dir(&db, "database directory")?;
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

    /// Open the owner lock file (not yet locked): created 0600, never through a link, and
    /// refused unless it is a regular file of this user.
    pub fn open_lock(&self) -> BatonResult<File> {
        let path = self.lock_path();
        let file = open_private(&path, false).map_err(|e| open_error(&path, e))?;
        check_private_file(&path, &file)?;
        Ok(file)
    }

    /// Open the owner's log for appending (0600, never through a link), starting a new one
    /// when it has grown past 1 MiB.
    pub fn open_log(&self) -> BatonResult<File> {
        let path = self.log_path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() > MAX_LOG_BYTES) {
            let _ = std::fs::rename(&path, self.dir.join("owner.log.1"));
        }
        let file = open_private(&path, true).map_err(|e| open_error(&path, e))?;
        check_private_file(&path, &file)?;
        Ok(file)
    }

    /// What is at the socket path: nothing, or a socket of this user. Anything else (a
    /// link, a directory, a file, another user's socket) is refused with the fix.
    pub fn socket_file(&self) -> BatonResult<SocketFile> {
        let path = self.socket_path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(SocketFile::Missing),
            Err(e) => {
                return Err(BatonError::storage(format!("cannot inspect {}: {e}", path.display()), "Check the baton home permissions."));
            }
        };
        let kind = describe_type(&meta);
        if !meta.file_type().is_socket() {
            return Err(BatonError::storage(
                format!("{} is {kind}, not the baton control socket; baton will not use or replace it", path.display()),
                format!("Remove it (`rm -r {}`) while no baton process runs; baton recreates the socket.", path.display()),
            ));
        }
        check_owner(&path, &meta, "control socket")?;
        Ok(SocketFile::Ours)
    }

    /// Make the database files private (0600, directories 0700): files written by older
    /// versions, or under a loose umask, may be readable by others. Only the owner calls
    /// this, holding the lock; links are left alone.
    pub fn tighten_db_permissions(&self) {
        let mut dirs = vec![self.db_dir()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                let private = if meta.is_dir() { 0o700 } else { 0o600 };
                if meta.is_dir() {
                    dirs.push(path.clone());
                }
                if (meta.is_dir() || meta.is_file()) && meta.uid() == euid() && meta.mode() & 0o777 & !private != 0 {
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private));
                }
            }
        }
    }
}

/// Where Codex keeps its config.toml: `explicit` (`--codex-home`), else `$CODEX_HOME`, else
/// `~/.codex`, as Codex itself resolves it.
pub fn codex_home(explicit: Option<&Path>) -> BatonResult<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).ok_or_else(|| {
        BatonError::invalid(
            "CODEX_HOME",
            "neither CODEX_HOME nor HOME is set, so baton cannot find Codex's config.toml",
            "Set CODEX_HOME to the folder that holds Codex's config.toml, or pass --codex-home.",
        )
    })?;
    Ok(PathBuf::from(home).join(".codex"))
}

/// The `BATON_HOME` that `baton install` wrote into the Codex config.toml of
/// `$CODEX_HOME` (else `~/.codex`), if any.
pub fn registered_home() -> Option<PathBuf> {
    let codex = codex_home(None).ok()?;
    registered_home_in(&codex)
}

/// The `BATON_HOME` of `[mcp_servers.baton.env]` in `codex_home/config.toml`.
pub fn registered_home_in(codex_home: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(codex_home.join("config.toml")).ok()?;
    let config: toml::Table = toml::from_str(&text).ok()?;
    let home = config.get("mcp_servers")?.get("baton")?.get("env")?.get("BATON_HOME")?.as_str()?;
    let home = PathBuf::from(home);
    (home.is_absolute()).then_some(home)
}

/// Create `dir` (and missing parents) unless something is already there; the directory
/// itself is then set to exactly 0700, whatever the umask. A concurrent creator is fine.
fn create_private(dir: &Path, parents: bool) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    match DirBuilder::new().recursive(parents).mode(0o700).create(dir) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
    }
}

/// `dir` must be a directory (not a link to one) of this user with mode 0700.
fn check_private_dir(dir: &Path, what: &str) -> BatonResult<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| BatonError::storage(format!("cannot read {what} {}: {e}", dir.display()), "Check the path and its permissions."))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        return Err(BatonError::storage(
            format!(
                "{what} {} is a symbolic link (to {target}); baton does not follow links for its home, database, lock or socket",
                dir.display()
            ),
            format!("Point BATON_HOME at the real directory ({target}), or replace the link with a directory."),
        ));
    }
    if !meta.is_dir() {
        return Err(BatonError::storage(
            format!("{what} {} is not a directory (it is {})", dir.display(), describe_type(&meta)),
            "Point BATON_HOME at a directory, or remove the file.",
        ));
    }
    check_owner(dir, &meta, what)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 || mode & 0o700 != 0o700 {
        return Err(BatonError::storage(
            format!(
                "{what} {} has permissions {mode:04o}; it must be 0700 (private to you, since it holds your runs and a control socket)",
                dir.display()
            ),
            format!("Run `chmod 700 {}`.", dir.display()),
        ));
    }
    Ok(())
}

/// Refuse a path that belongs to another user.
fn check_owner(path: &Path, meta: &Metadata, what: &str) -> BatonResult<()> {
    let me = euid();
    if meta.uid() == me {
        return Ok(());
    }
    Err(BatonError::storage(
        format!(
            "{what} {} belongs to uid {}, not to you (uid {me}); baton only uses files of the user it runs as, so another user cannot read your runs or answer in baton's place",
            path.display(),
            meta.uid()
        ),
        "Point BATON_HOME at a directory you own (or unset it to use ~/.codex/baton); never use another user's baton home.",
    ))
}

/// An opened lock or log file must be a regular file of this user; it is set to 0600.
fn check_private_file(path: &Path, file: &File) -> BatonResult<()> {
    let meta = file.metadata().map_err(|e| open_error(path, e))?;
    if !meta.is_file() {
        return Err(BatonError::storage(
            format!("{} is {}, not a regular file", path.display(), describe_type(&meta)),
            format!("Remove it (`rm -r {}`) while no baton process runs.", path.display()),
        ));
    }
    check_owner(path, &meta, "file")?;
    if meta.mode() & 0o777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| open_error(path, e))?;
    }
    Ok(())
}

/// Open (creating 0600) without following a link at the last component.
fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).read(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(false);
    }
    options.open(path)
}

/// A new file of ours, 0600 whatever the umask.
fn new_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

fn open_error(path: &Path, e: std::io::Error) -> BatonError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return BatonError::storage(
            format!("{} is a symbolic link; baton does not follow links for its home, lock or socket", path.display()),
            format!("Remove the link (`rm {}`) while no baton process runs; baton recreates the file.", path.display()),
        );
    }
    BatonError::storage(format!("cannot open {}: {e}", path.display()), "Check the baton home permissions.")
}

fn describe_type(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device or other special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn home(tmp: &tempfile::TempDir) -> Home {
        Home { dir: tmp.path().join("home") }
    }

    #[test]
    fn created_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let home = home(&tmp);
        home.prepare().unwrap();
        let lock = home.open_lock().unwrap();
        for (path, mode) in [(home.dir.clone(), 0o700), (home.db_dir(), 0o700), (home.lock_path(), 0o600)] {
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, mode, "{}", path.display());
        }
        drop(lock);
        assert_eq!(home.socket_file().unwrap(), SocketFile::Missing);
    }

    #[test]
    fn a_home_without_a_database_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let typo = Home { dir: tmp.path().join("typo") };
        let err = typo.require_database().unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::NotFound, Some("home")));
        assert!(err.message.contains(&typo.dir.display().to_string()) && err.fix.contains("baton import"), "{err}");
        assert!(!typo.dir.exists(), "nothing was created");
        let real = home(&tmp);
        real.prepare().unwrap();
        real.require_database().unwrap();
    }

    #[test]
    fn the_registered_home_is_read_from_codex_config() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(registered_home_in(tmp.path()), None);
        std::fs::write(
            tmp.path().join("config.toml"),
            "model = \"x\"\n[mcp_servers.baton]\ncommand = \"/bin/baton\"\n[mcp_servers.baton.env]\nBATON_HOME = \"/srv/runs\"\n",
        )
        .unwrap();
        assert_eq!(registered_home_in(tmp.path()), Some(PathBuf::from("/srv/runs")));
        std::fs::write(tmp.path().join("config.toml"), "not toml [").unwrap();
        assert_eq!(registered_home_in(tmp.path()), None, "a broken config is no registration");
    }

    #[test]
    fn links_and_strange_files_are_refused_with_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let real = home(&tmp);
        real.prepare().unwrap();
        let link = Home { dir: tmp.path().join("link") };
        std::os::unix::fs::symlink(&real.dir, &link.dir).unwrap();
        let err = link.prepare().unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::Storage, Some("BATON_HOME")));
        assert!(err.message.contains("symbolic link") && err.fix.contains(&real.dir.display().to_string()), "{err}");

        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), real.lock_path()).unwrap();
        let err = real.open_lock().unwrap_err();
        assert!(err.message.contains("owner.lock") && err.message.contains("symbolic link"), "{err}");
        assert!(!tmp.path().join("elsewhere").exists(), "the link was not followed");

        std::fs::create_dir(real.socket_path()).unwrap();
        let err = real.socket_file().unwrap_err();
        assert_eq!(err.code, ErrorCode::Storage);
        assert!(err.message.contains("baton.sock is a directory") && err.fix.contains("rm -r"), "{err}");
        std::fs::remove_dir(real.socket_path()).unwrap();
        std::os::unix::fs::symlink("/tmp/x.sock", real.socket_path()).unwrap();
        assert!(real.socket_file().unwrap_err().message.contains("a symbolic link"));
    }
}
