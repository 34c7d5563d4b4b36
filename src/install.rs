//! `baton install` / `baton uninstall`: register the MCP server in Codex's config.toml
//! (keeping the user's other settings and comments) and install the skill files; or, with
//! `--plugin DIR`, write a local Codex plugin marketplace holding both, for
//! `codex plugin marketplace add DIR` and `codex plugin add baton@baton-local`.
//!
//! Every generated file is made from the embedded skill files and the path of the baton binary,
//! so the repository holds each text once.

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

/// Name of the local marketplace `baton install --plugin` writes.
pub const MARKETPLACE: &str = "baton-local";

/// The front matter `description` of SKILL.md.
fn skill_description() -> &'static str {
    let front = SKILL_FILES[0].1.split("\n---").next().unwrap_or_default();
    front.lines().find_map(|l| l.strip_prefix("description:")).map(str::trim).unwrap_or_default()
}

/// `agents/openai.yaml` beside SKILL.md: how Codex presents the skill, and the MCP server it
/// needs (a stdio `command`; Codex starts it with no arguments, which `baton` treats as `serve`,
/// and offers to install it when no configured server runs that command).
pub fn openai_yaml(command: &Path) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "# Written by `baton install`: how Codex shows the baton skill, and what it needs.\n\
         interface:\n  display_name: \"baton\"\n  short_description: \"Durable architect, implementer, reviewer and tester workflows\"\n  \
         default_prompt: \"Use baton to build this feature: plan it, implement it, review it and test it.\"\n\
         policy:\n  allow_implicit_invocation: true\n\
         dependencies:\n  tools:\n    - type: \"mcp\"\n      value: \"baton\"\n      description: \"baton's workflow server (durable runs, briefs, human gates)\"\n      \
         transport: \"stdio\"\n      command: {}\n",
        quoted(&command.to_string_lossy())
    )
}

/// The skill directory's files: the embedded ones and the generated `agents/openai.yaml`.
fn skill_files(command: &Path) -> Vec<(&'static str, String)> {
    let mut files: Vec<(&'static str, String)> = SKILL_FILES.iter().map(|(name, text)| (*name, text.to_string())).collect();
    files.push(("agents/openai.yaml", openai_yaml(command)));
    files
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    for (name, content) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap_or(dir)).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomically(&path, content)?;
    }
    Ok(())
}

/// The MCP server entry: `command serve`, with the data directory pinned when given.
fn server_entry(command: &Path, baton_home: Option<&Path>, database_url: Option<&str>) -> serde_json::Value {
    let mut entry = serde_json::json!({"command": command.to_string_lossy(), "args": ["serve"]});
    if let Some(home) = baton_home {
        entry["env"] = serde_json::json!({"BATON_HOME": home.to_string_lossy()});
    }
    if let Some(url) = database_url {
        entry["env"][crate::store::postgres::url::ENV] = serde_json::json!(url);
    }
    entry
}

/// Write a local Codex plugin marketplace into `root` ([`MARKETPLACE`], one plugin `baton`
/// with the skill and the MCP server), made from the embedded skill files and `command`.
/// Nothing in a Codex home changes; the caller prints how to add it to Codex.
pub fn write_plugin(root: &Path, command: &Path, baton_home: Option<&Path>, database_url: Option<&str>) -> Result<Vec<String>> {
    let marketplace = root.join(".agents/plugins/marketplace.json");
    if let Ok(text) = fs::read_to_string(&marketplace) {
        let name = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["name"].as_str().map(str::to_string));
        if name.as_deref() != Some(MARKETPLACE) {
            bail!(
                "{} holds another marketplace ({}); choose another directory (nothing was changed)",
                marketplace.display(),
                name.unwrap_or_else(|| "unreadable".into())
            );
        }
    }
    let pretty = |value: serde_json::Value| format!("{value:#}\n");
    let listing = serde_json::json!({
        "name": MARKETPLACE,
        "interface": {"displayName": "baton (local)"},
        "plugins": [{
            "name": "baton",
            "source": {"source": "local", "path": "./plugins/baton"},
            "policy": {"installation": "AVAILABLE"},
            "category": "Coding",
        }],
    });
    let manifest = serde_json::json!({
        "name": "baton",
        "version": env!("CARGO_PKG_VERSION"),
        "description": skill_description(),
        "skills": "./skills/",
        "mcpServers": "./.mcp.json",
        "interface": {
            "displayName": "baton",
            "shortDescription": "Durable architect, implementer, reviewer and tester workflows",
            "longDescription": "baton keeps multi-role workflow runs (plan, implement, review, test, with review and test loops and human gates) in a database on disk, so any Codex session can pick a run up where another left it.",
            "developerName": "baton",
            "category": "Coding",
            "defaultPrompt": ["Use baton to add this feature: plan, implement, review and test it.", "Resume my baton runs."],
        },
    });
    let servers = serde_json::json!({"mcpServers": {"baton": server_entry(command, baton_home, database_url)}});
    let plugin = root.join("plugins/baton");
    write_files(root, &[(".agents/plugins/marketplace.json", pretty(listing))])?;
    write_files(&plugin, &[(".codex-plugin/plugin.json", pretty(manifest)), (".mcp.json", pretty(servers))])?;
    write_files(&plugin.join("skills/baton"), &skill_files(command))?;
    Ok(vec![format!(
        "wrote the Codex plugin marketplace `{MARKETPLACE}` in {} (plugin `baton`: the skill and {} serve)",
        root.display(),
        command.display()
    )])
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

/// Set `BATON_DATABASE_URL` in `[mcp_servers.baton.env]` of `config_text` (registered
/// already), keeping everything else.
pub fn set_database_url(config_text: &str, url: &str) -> Result<String> {
    set_env(config_text, crate::store::postgres::url::ENV, url)
}

/// Set `name = value` in `[mcp_servers.baton.env]`, keeping everything else.
fn set_env(config_text: &str, name: &str, text: &str) -> Result<String> {
    let mut doc: DocumentMut = config_text.parse().context("config.toml is not valid TOML; fix it (nothing was changed)")?;
    let Some(entry) = doc.get_mut("mcp_servers").and_then(|s| s.get_mut("baton")).and_then(Item::as_table_like_mut) else {
        bail!("`mcp_servers.baton` is missing from config.toml; run `baton install` first (nothing was changed)");
    };
    let env = entry.entry("env").or_insert(Item::Table(Table::new()));
    let Some(env) = env.as_table_like_mut() else {
        bail!("`mcp_servers.baton.env` in config.toml is not a table; fix it before installing (nothing was changed)");
    };
    env.insert(name, value(text));
    Ok(doc.to_string())
}

/// `baton install --encrypt`: create the key of the (new or empty) sled database in
/// `db_dir`, so every record is sealed from now on; an existing key is checked and kept.
/// Returns the key file and what was done.
pub fn enable_encryption(db_dir: &Path) -> Result<(PathBuf, String)> {
    use crate::store::sled_store::{Key, Options};
    let path = Options::key_path(db_dir);
    if path.exists() {
        Key::load(&path)?;
        let line = format!("runs are encrypted at rest with the key in {} (kept)", path.display());
        return Ok((path, line));
    }
    let holds_runs = fs::read_dir(db_dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if holds_runs {
        bail!(
            "the database {dir} already holds runs in the clear, and a database is encrypted or not for life (nothing was changed); to encrypt them: `baton export runs.jsonl`, move {dir} aside, `baton install --encrypt`, then `baton import runs.jsonl`",
            dir = db_dir.display()
        );
    }
    Key::load_or_create(&path)?;
    let line = format!(
        "runs will be encrypted at rest (XChaCha20-Poly1305) with the new key in {} (0600); keep a copy of it somewhere safe: without it the runs cannot be read",
        path.display()
    );
    Ok((path, line))
}

/// Write `BATON_KEY_FILE` into the registration in `codex_home`, so the sessions Codex
/// starts find a key kept away from the default place.
pub fn register_key_file(codex_home: &Path, key_file: &Path) -> Result<()> {
    let config = codex_home.join("config.toml");
    let updated = set_env(&read_optional(&config)?, crate::store::sled_store::KEY_FILE_ENV, &key_file.to_string_lossy())?;
    write_atomically(&config, &updated)
}

/// Write `BATON_DATABASE_URL` into the registration in `codex_home`. A URL with a
/// password makes config.toml readable by its owner only.
pub fn register_database_url(codex_home: &Path, url: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let parsed = crate::store::postgres::DatabaseUrl::parse(url)?;
    let config = codex_home.join("config.toml");
    let updated = set_database_url(&read_optional(&config)?, url)?;
    write_atomically(&config, &updated)?;
    let mut note = String::new();
    if parsed.config.get_password().is_some() {
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600))?;
        note = format!(" ({} is now readable by you only: the URL holds a password)", config.display());
    }
    Ok(format!("runs are kept in the PostgreSQL database {} (BATON_DATABASE_URL in [mcp_servers.baton.env]){note}", parsed.place))
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
        write_files(&dir, &skill_files(command))?;
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
    // Private while written (it may hold a database URL); the original's mode is set after.
    let mut file = std::os::unix::fs::OpenOptionsExt::mode(fs::OpenOptions::new().write(true).create(true).truncate(true), 0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
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
    fn the_database_url_goes_into_the_registration_env() {
        let registered = register_server("", "/bin/baton", Some("/data")).unwrap();
        let with_url = set_database_url(&registered, "postgres://team@db/baton").unwrap();
        let parsed: toml::Value = toml::from_str(&with_url).unwrap();
        let env = &parsed["mcp_servers"]["baton"]["env"];
        assert_eq!(env["BATON_DATABASE_URL"].as_str(), Some("postgres://team@db/baton"));
        assert_eq!(env["BATON_HOME"].as_str(), Some("/data"), "other env keys stay");
        assert!(set_database_url("", "postgres://x@y/z").unwrap_err().to_string().contains("baton install"));
        let entry = server_entry(Path::new("/bin/baton"), None, Some("postgres://team@db/baton"));
        assert_eq!(entry["env"]["BATON_DATABASE_URL"], "postgres://team@db/baton");

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.toml"), &registered).unwrap();
        let line = register_database_url(dir.path(), "postgres://team:pw-secret@db/baton").unwrap();
        assert!(!line.contains("pw-secret"), "{line}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.path().join("config.toml")).unwrap().permissions().mode() & 0o777, 0o600);
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
    fn the_skill_gets_agents_metadata_naming_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), Path::new("/opt/bin/baton"), None, true).unwrap();
        let yaml = fs::read_to_string(skill_dir(dir.path()).join("agents/openai.yaml")).unwrap();
        assert!(yaml.contains("transport: \"stdio\"\n      command: \"/opt/bin/baton\"\n"), "{yaml}");
        assert!(yaml.contains("\ninterface:\n  display_name: \"baton\"\n"), "{yaml}");
        assert!(skill_description().starts_with("Run durable multi-agent workflows"), "{}", skill_description());
    }

    #[test]
    fn the_plugin_marketplace_holds_the_skill_and_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("market");
        write_plugin(&root, Path::new("/opt/bin/baton"), Some(Path::new("/data/baton")), None).unwrap();
        let read = |path: &str| -> serde_json::Value { serde_json::from_str(&fs::read_to_string(root.join(path)).unwrap()).unwrap() };
        let listing = read(".agents/plugins/marketplace.json");
        assert_eq!(
            (listing["name"].as_str(), listing["plugins"][0]["source"]["path"].as_str()),
            (Some(MARKETPLACE), Some("./plugins/baton"))
        );
        let manifest = read("plugins/baton/.codex-plugin/plugin.json");
        assert_eq!((manifest["skills"].as_str(), manifest["mcpServers"].as_str()), (Some("./skills/"), Some("./.mcp.json")));
        assert!(manifest["interface"]["defaultPrompt"].as_array().unwrap().iter().all(|p| p.as_str().unwrap().len() <= 128));
        let servers = read("plugins/baton/.mcp.json");
        assert_eq!(
            servers["mcpServers"]["baton"],
            serde_json::json!({"command": "/opt/bin/baton", "args": ["serve"], "env": {"BATON_HOME": "/data/baton"}})
        );
        for (name, text) in SKILL_FILES {
            assert_eq!(fs::read_to_string(root.join("plugins/baton/skills/baton").join(name)).unwrap(), *text);
        }
        assert!(root.join("plugins/baton/skills/baton/agents/openai.yaml").exists());
        write_plugin(&root, Path::new("/opt/bin/baton"), None, None).unwrap();
        fs::write(root.join(".agents/plugins/marketplace.json"), r#"{"name": "mine"}"#).unwrap();
        let err = write_plugin(&root, Path::new("/opt/bin/baton"), None, None).unwrap_err();
        assert!(err.to_string().contains("another marketplace (mine)"), "{err}");
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
