//! `baton install` / `baton uninstall`: register the MCP server in Codex's config.toml
//! (keeping the user's other settings and comments) and install the skill files.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table, value};

/// The skill files, embedded so installing works from any directory.
pub const SKILL_FILES: &[(&str, &str)] = &[
    ("SKILL.md", include_str!("../SKILL.md")),
    ("skill/roles/architect.md", include_str!("../skill/roles/architect.md")),
    ("skill/roles/implementer.md", include_str!("../skill/roles/implementer.md")),
    ("skill/roles/reviewer.md", include_str!("../skill/roles/reviewer.md")),
    ("skill/roles/tester.md", include_str!("../skill/roles/tester.md")),
];

/// `$CODEX_HOME`, else `~/.codex`.
pub fn codex_home(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither CODEX_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".codex"))
}

/// Add or update `[mcp_servers.baton]` in `config_text`, keeping everything else.
/// Keys the user added to the table (timeouts, env, ...) survive; `command` and `args` are set.
pub fn register_server(config_text: &str, command: &str, home: Option<&str>) -> Result<String> {
    let mut doc: DocumentMut =
        config_text.parse().context("config.toml is not valid TOML; fix it before installing (nothing was changed)")?;
    let servers = doc.entry("mcp_servers").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let Some(servers) = servers.as_table_like_mut() else {
        bail!("`mcp_servers` in config.toml is not a table; fix it before installing (nothing was changed)");
    };
    let entry = servers.entry("baton").or_insert(Item::Table(Table::new()));
    let Some(entry) = entry.as_table_like_mut() else {
        bail!("`mcp_servers.baton` in config.toml is not a table; fix it before installing (nothing was changed)");
    };
    entry.insert("command", value(command));
    let mut args = toml_edit::Array::new();
    args.push("serve");
    entry.insert("args", value(args));
    if let Some(home) = home {
        let env = entry.entry("env").or_insert(Item::Table(Table::new()));
        let Some(env) = env.as_table_like_mut() else {
            bail!("`mcp_servers.baton.env` in config.toml is not a table; fix it before installing (nothing was changed)");
        };
        env.insert("BATON_HOME", value(home));
    }
    Ok(doc.to_string())
}

/// Remove `[mcp_servers.baton]` from `config_text`, keeping everything else.
/// `None` when there was nothing to remove.
pub fn unregister_server(config_text: &str) -> Result<Option<String>> {
    let mut doc: DocumentMut = config_text.parse().context("config.toml is not valid TOML")?;
    let removed = doc.get_mut("mcp_servers").and_then(Item::as_table_like_mut).and_then(|servers| servers.remove("baton"));
    Ok(removed.map(|_| doc.to_string()))
}

/// Register the server and install the skill under `codex_home`.
pub fn install(codex_home: &Path, command: &Path, baton_home: Option<&Path>, skill: bool) -> Result<Vec<String>> {
    let mut done = Vec::new();
    fs::create_dir_all(codex_home).with_context(|| format!("cannot create {}", codex_home.display()))?;
    let config = codex_home.join("config.toml");
    let text = read_optional(&config)?;
    let updated = register_server(&text, &command.to_string_lossy(), baton_home.map(|h| h.to_string_lossy()).as_deref())?;
    write_atomically(&config, &updated)?;
    let home_note = baton_home.map(|h| format!(" (BATON_HOME={})", h.display())).unwrap_or_default();
    done.push(format!("registered [mcp_servers.baton] -> {} serve{home_note} in {}", command.display(), config.display()));
    if skill {
        let dir = skill_dir(codex_home);
        for (name, content) in SKILL_FILES {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap_or(&dir))?;
            write_atomically(&path, content)?;
        }
        done.push(format!("installed the baton skill in {}", dir.display()));
    }
    Ok(done)
}

/// Undo [`install`]; runs and the database are left alone.
pub fn uninstall(codex_home: &Path) -> Result<Vec<String>> {
    let config = codex_home.join("config.toml");
    let mut done = Vec::new();
    if let Some(updated) = unregister_server(&read_optional(&config)?)? {
        write_atomically(&config, &updated)?;
        done.push(format!("removed [mcp_servers.baton] from {}", config.display()));
    }
    let dir = skill_dir(codex_home);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
        done.push(format!("removed {}", dir.display()));
    }
    Ok(done)
}

pub fn skill_dir(codex_home: &Path) -> PathBuf {
    codex_home.join("skills").join("baton")
}

fn read_optional(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Write via a synced temporary file and rename, so a crash never leaves half a file.
/// A symlinked file (a managed dotfile) is updated at its target; the link stays.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let path = &fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let tmp = path.with_extension("baton-tmp");
    let mut file = fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = fs::metadata(path) {
        fs::set_permissions(&tmp, meta.permissions())?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_keeps_comments_other_servers_and_user_keys() {
        let before = "# my settings\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"x\" # keep me\n\n[mcp_servers.baton]\ncommand = \"/old/baton\"\ntool_timeout_sec = 120\n";
        let after = register_server(before, "/new/baton", None).unwrap();
        assert!(after.contains("# my settings"));
        assert!(after.contains("command = \"x\" # keep me"));
        assert!(after.contains("tool_timeout_sec = 120"));
        assert!(after.contains("command = \"/new/baton\""));
        assert!(!after.contains("/old/baton"));
        let parsed: toml::Table = toml::from_str(&after).unwrap();
        assert_eq!(parsed["mcp_servers"]["baton"]["args"][0].as_str(), Some("serve"));
        let again = register_server(&after, "/new/baton", None).unwrap();
        assert_eq!(again, after, "installing twice changes nothing");
    }

    #[test]
    fn registering_into_an_empty_config_and_removing_again() {
        let after = register_server("", "/bin/baton", Some("/data/baton")).unwrap();
        let parsed: toml::Table = toml::from_str(&after).unwrap();
        assert_eq!(parsed["mcp_servers"]["baton"]["env"]["BATON_HOME"].as_str(), Some("/data/baton"));
        let removed = unregister_server(&after).unwrap().expect("there was an entry to remove");
        let parsed: toml::Table = toml::from_str(&removed).unwrap();
        assert!(parsed.get("mcp_servers").and_then(|s| s.get("baton")).is_none());
        assert_eq!(unregister_server(&removed).unwrap(), None, "nothing left to remove");
    }

    #[test]
    fn install_writes_through_a_symlinked_config_and_uninstall_reports_truthfully() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-config.toml");
        fs::write(&real, "# managed\n").unwrap();
        let codex = dir.path().join("codex");
        fs::create_dir(&codex).unwrap();
        std::os::unix::fs::symlink(&real, codex.join("config.toml")).unwrap();
        install(&codex, Path::new("/bin/baton"), Some(Path::new("/data")), true).unwrap();
        assert!(fs::symlink_metadata(codex.join("config.toml")).unwrap().file_type().is_symlink(), "the link is kept");
        assert!(fs::read_to_string(&real).unwrap().contains("command = \"/bin/baton\""));
        assert!(skill_dir(&codex).join("skill/roles/tester.md").exists());
        assert_eq!(uninstall(&codex).unwrap().len(), 2);
        assert!(uninstall(&codex).unwrap().is_empty(), "a second uninstall has nothing to report");
        assert!(fs::read_to_string(&real).unwrap().contains("# managed"));
    }

    #[test]
    fn invalid_config_is_refused_untouched() {
        let err = register_server("model = [", "/bin/baton", None).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"));
        let err = register_server("mcp_servers = 3", "/bin/baton", None).unwrap_err();
        assert!(err.to_string().contains("not a table"));
        let err = register_server("[mcp_servers.baton]\nenv = \"x\"\n", "/bin/baton", Some("/data")).unwrap_err();
        assert!(err.to_string().contains("mcp_servers.baton.env"));
    }
}
