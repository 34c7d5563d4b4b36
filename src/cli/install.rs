//! `baton install` and `baton uninstall`: registering baton in Codex (its config, the
//! skill, or a plugin folder) with the home and database every process must agree on.

use crate::error::BatonError;
use crate::home::Home;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// What `baton install` was asked for.
pub struct Install {
    pub codex_home: Option<PathBuf>,
    pub command: Option<PathBuf>,
    pub no_skill: bool,
    pub plugin: Option<PathBuf>,
    pub database_url: Option<String>,
    pub encrypt: bool,
}

/// `baton install`: register baton (or write a plugin); returns what to tell the person.
pub fn install(home: Option<&Path>, options: Install) -> Result<String> {
    let Install { codex_home, command, no_skill, plugin, database_url, encrypt } = options;
    if let Some(url) = &database_url {
        // Refuse an unusable URL before writing it anywhere.
        crate::store::postgres::DatabaseUrl::parse(url)?;
    }
    let exe = match command {
        Some(path) => checked_command(&path)?,
        None => std::env::current_exe()?.canonicalize()?,
    };
    // Pin the data directory in the registration: Codex starts servers with a reduced
    // environment, and the server must use the same database as terminal commands.
    // `--codex-home X` keeps the database beside that Codex home (X/baton), unless
    // --home or $BATON_HOME names one.
    let baton_home = install_home(home, codex_home.as_deref())?;
    // The home itself is created by the first `baton serve` (or `baton import`).
    let key_file = if encrypt {
        baton_home.prepare()?;
        Some(crate::install::enable_encryption(&baton_home.db_dir())?)
    } else {
        None
    };
    if let Some(dir) = plugin {
        let dir = std::path::absolute(&dir)?;
        let mut lines = crate::install::write_plugin(&dir, &exe, Some(&baton_home.dir), database_url.as_deref())?;
        lines.extend(key_file.map(|(_, line)| line));
        let marketplace = crate::install::MARKETPLACE;
        lines.push(format!(
                "Add it to Codex with:\n  codex plugin marketplace add {}\n  codex plugin add baton@{marketplace}\nthen start a new session (run `baton uninstall` first if baton was installed without --plugin).",
                dir.display()
            ));
        return Ok(lines.join("\n"));
    }
    let codex_home = crate::home::codex_home(codex_home.as_deref())?;
    let mut lines = crate::install::install(&codex_home, &exe, Some(&baton_home.dir), !no_skill)?;
    if let Some(url) = &database_url {
        lines.push(crate::install::register_database_url(&codex_home, url)?);
    }
    if let Some((path, line)) = key_file {
        if crate::store::sled_store::Options::named_key_file().is_some() {
            crate::install::register_key_file(&codex_home, &path)?;
        }
        lines.push(line);
    }
    lines.push("Restart Codex (or start a new session) to load baton.".into());
    Ok(lines.join("\n"))
}

/// `baton uninstall`: remove the registration and the skill from the Codex home.
pub fn uninstall(codex_home: Option<&Path>) -> Result<String> {
    let codex_home = crate::home::codex_home(codex_home)?;
    let lines = crate::install::uninstall(&codex_home)?;
    Ok(if lines.is_empty() {
        format!(
            "baton was not registered in {} (no [mcp_servers.baton], no skill). If you installed it as a plugin (`baton install --plugin`), remove it with `codex plugin remove baton@{}`.",
            codex_home.join("config.toml").display(),
            crate::install::MARKETPLACE
        )
    } else {
        lines.join("\n")
    })
}

/// The home `baton install` registers: `--home`, else `$BATON_HOME`, else beside the Codex
/// home (`X/baton` for `--codex-home X`; `$CODEX_HOME/baton` or `~/.codex/baton` without).
fn install_home(explicit: Option<&Path>, codex_home: Option<&Path>) -> Result<Home> {
    if explicit.is_some() || std::env::var_os("BATON_HOME").is_some_and(|v| !v.is_empty()) {
        return Ok(Home::resolve(explicit)?);
    }
    let codex = std::path::absolute(crate::home::codex_home(codex_home)?)?;
    Ok(Home { dir: codex.join("baton") })
}

/// `install --command PATH`: Codex starts the server from its own working directory, so
/// the path must be absolute and name an executable file.
fn checked_command(path: &Path) -> Result<PathBuf> {
    let fix = |why: &str| {
        BatonError::invalid(
            "command",
            format!("--command {}: {why}", path.display()),
            format!(
                "Pass the absolute path of the baton binary, e.g. `--command \"$(realpath {})\"` or `--command \"$(command -v baton)\"`.",
                path.display()
            ),
        )
    };
    if !path.is_absolute() {
        return Err(fix("the path is relative, and Codex starts servers from another directory").into());
    }
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) => Err(fix(&format!("cannot use it: {e}")).into()),
        Ok(meta) if !meta.is_file() => Err(fix("it is not a file").into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(fix("it is not executable").into()),
        Ok(_) => Ok(path.to_path_buf()),
    }
}
