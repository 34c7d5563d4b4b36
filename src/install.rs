//! `baton install` / `baton uninstall`: register the MCP server in Codex's config.toml
//! (keeping the user's other settings and comments) and install the skill files.

use anyhow::{Context, Result, bail};
use std::fs;
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
        if let Some(env) = env.as_table_like_mut() {
            env.insert("BATON_HOME", value(home));
        }
    }
    Ok(doc.to_string())
}

/// Remove `[mcp_servers.baton]` from `config_text`, keeping everything else.
pub fn unregister_server(config_text: &str) -> Result<String> {
    let mut doc: DocumentMut = config_text.parse().context("config.toml is not valid TOML")?;
    if let Some(servers) = doc.get_mut("mcp_servers").and_then(Item::as_table_like_mut) {
        servers.remove("baton");
    }
    Ok(doc.to_string())
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
    if config.exists() {
        write_atomically(&config, &unregister_server(&read_optional(&config)?)?)?;
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

/// Write via a temporary file and rename, so a crash never leaves half a config.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("baton-tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
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
        let removed = unregister_server(&after).unwrap();
        let parsed: toml::Table = toml::from_str(&removed).unwrap();
        assert!(parsed.get("mcp_servers").and_then(|s| s.get("baton")).is_none());
    }

    #[test]
    fn invalid_config_is_refused_untouched() {
        let err = register_server("model = [", "/bin/baton", None).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"));
        let err = register_server("mcp_servers = 3", "/bin/baton", None).unwrap_err();
        assert!(err.to_string().contains("not a table"));
    }
}
