//! baton packaged the way current Codex installs plugins: `baton install --plugin DIR` writes a
//! local marketplace, `codex plugin marketplace add DIR` and `codex plugin add baton@baton-local`
//! install it into a fresh `CODEX_HOME`, and Codex then lists the skill as `baton:baton` and
//! reaches baton's tools through the plugin's MCP server.
//!
//! Plugins need `features.plugins`. With it on, `codex app-server` (and `codex exec`) start by
//! syncing OpenAI's curated plugin repository from GitHub, which no setting in 0.169 turns off;
//! the CLI commands used here make no connection (checked with strace). So the app-server part
//! runs in an empty network namespace (`unshare --net`): nothing can leave the machine, and what
//! is asserted does not depend on that sync.

use crate::support::app_server::AppServer;
use crate::support::codex::{Finished, canonical, find_codex, run, skill_description};
use crate::support::{BATON, TOOLS};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A command that runs its arguments with no network but loopback (down), if this machine can.
fn no_network_wrapper() -> Option<Vec<&'static str>> {
    let candidates: [&[&'static str]; 2] = [&["unshare", "--net"], &["unshare", "--net", "--map-root-user"]];
    candidates
        .into_iter()
        .find(|wrapper| Command::new(wrapper[0]).args(&wrapper[1..]).arg("true").output().is_ok_and(|o| o.status.success()))
        .map(<[_]>::to_vec)
}

fn succeeded(done: Finished) -> Finished {
    assert!(done.status.success(), "{}", done.describe());
    done
}

#[test]
fn codex_installs_baton_as_a_plugin() {
    let Some(codex) = find_codex() else { return };
    let codex_home = tempfile::tempdir().unwrap();
    let baton_parent = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let market_parent = tempfile::tempdir().unwrap();
    let (codex_home, work) = (codex_home.path(), work.path());
    let baton_home = baton_parent.path().join("baton-home");
    let market = market_parent.path().join("baton-market");
    std::fs::write(
        codex_home.join("config.toml"),
        "# Written by baton's codex_plugin test: plugins on, every remote catalog off.\n\
         [analytics]\nenabled = false\n\n\
         [features]\nplugins = true\nremote_plugin = false\nplugin_sharing = false\napps = false\n",
    )
    .unwrap();
    let codex_cmd = |args: &[&str]| {
        let mut command = Command::new(&codex);
        command.args(args).env("CODEX_HOME", codex_home).env_remove("BATON_HOME").current_dir(work);
        command
    };

    // 1. baton writes the marketplace and says how to add it.
    let written = succeeded(run(
        Command::new(BATON).arg("--home").arg(&baton_home).arg("install").arg("--plugin").arg(&market).env_remove("BATON_HOME"),
        "baton install --plugin",
    ));
    let said = String::from_utf8_lossy(&written.stdout);
    assert!(said.contains(&format!("codex plugin marketplace add {}", market.display())), "{said}");
    assert!(said.contains("codex plugin add baton@baton-local"), "{said}");

    // 2. Codex installs it.
    succeeded(run(&mut codex_cmd(&["plugin", "marketplace", "add", market.to_str().unwrap()]), "codex plugin marketplace add"));
    succeeded(run(&mut codex_cmd(&["plugin", "add", "baton@baton-local"]), "codex plugin add"));
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(codex_home.join("config.toml")).unwrap()).unwrap();
    assert_eq!(config["plugins"]["baton@baton-local"]["enabled"].as_bool(), Some(true), "{config:#?}");
    assert!(config.get("mcp_servers").is_none(), "the plugin brings the server; config.toml gets none: {config:#?}");

    // 3. The MCP server comes from the plugin, with the binary and data directory baton wrote.
    let listed = succeeded(run(&mut codex_cmd(&["mcp", "list", "--json"]), "codex mcp list --json"));
    let servers: Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", listed.describe()));
    let server =
        servers.as_array().and_then(|s| s.iter().find(|s| s["name"] == "baton")).unwrap_or_else(|| panic!("no baton server: {servers:#}"));
    let transport = &server["transport"];
    assert_eq!(canonical(Path::new(transport["command"].as_str().unwrap())), canonical(Path::new(BATON)), "{server:#}");
    assert_eq!(transport["args"], json!(["serve"]), "{server:#}");
    assert_eq!(transport["env"]["BATON_HOME"].as_str(), Some(baton_home.to_str().unwrap()), "{server:#}");

    // 4. Codex sees the plugin's skill and tools.
    let Some(wrapper) = no_network_wrapper() else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(!ci, "CI is set but this machine cannot run Codex in an empty network namespace (`unshare --net`)");
        eprintln!("SKIPPED the app-server part of codex_installs_baton_as_a_plugin: `unshare --net` is not available here");
        return;
    };
    let mut app = AppServer::start_wrapped(&wrapper, &codex, codex_home, work);
    app.initialize();
    let skills = app.request("skills/list", json!({"cwds": [work], "forceReload": true}));
    let listing = &skills["data"][0];
    let skill = listing["skills"]
        .as_array()
        .and_then(|skills| skills.iter().find(|s| s["name"] == "baton:baton"))
        .unwrap_or_else(|| panic!("Codex does not list the plugin's skill as baton:baton: {listing:#}"));
    assert_eq!(skill["description"].as_str(), Some(skill_description().as_str()), "{skill:#}");
    assert_eq!((skill["pluginId"].as_str(), skill["enabled"].as_bool()), (Some("baton@baton-local"), Some(true)), "{skill:#}");
    assert_eq!(skill["interface"]["displayName"], "baton", "agents/openai.yaml is read: {skill:#}");
    let dependency = &skill["dependencies"]["tools"][0];
    assert_eq!(
        (dependency["type"].as_str(), dependency["value"].as_str(), dependency["transport"].as_str()),
        (Some("mcp"), Some("baton"), Some("stdio")),
        "{skill:#}"
    );
    assert_eq!(canonical(Path::new(dependency["command"].as_str().unwrap())), canonical(Path::new(BATON)), "{skill:#}");
    assert!(!listing["skills"].as_array().unwrap().iter().any(|s| s["name"] == "baton"), "no second copy of the skill: {listing:#}");

    let status = app.request("mcpServerStatus/list", json!({}));
    let server = status["data"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "baton")).unwrap_or_else(|| panic!("{status:#}"));
    let mut tools: Vec<&str> = server["tools"].as_object().map(|t| t.keys().map(String::as_str).collect()).unwrap_or_default();
    tools.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(tools, expected, "baton's tools through the plugin's server: {}", server["toolsError"]);
    let (thread, _) = app.start_thread(work);
    let started = app.call_tool(&thread, "start_workflow", json!({"goal": "Check the plugin install"}));
    assert_ne!(started["isError"], true, "{started:#}");
    let run_id = started["structuredContent"]["run_id"].as_str().unwrap_or_else(|| panic!("{started:#}")).to_string();
    assert!(app.shutdown().success());

    // The run is in the data directory the plugin pinned.
    let runs = succeeded(run(
        Command::new(BATON).arg("--home").arg(&baton_home).args(["runs", "--json"]).env_remove("BATON_HOME"),
        "baton runs --json",
    ));
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs["runs"][0]["run_id"], run_id.as_str(), "{runs:#}");
}
