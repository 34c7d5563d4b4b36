//! The house keeps its floors: every room of `src/` (a top-level folder or file) uses only
//! rooms below it, in the order the README's architecture table gives, so no import
//! circle can form between rooms. Read from the code's own `crate::` paths (product code
//! only: test modules may reach up to build what they test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rooms from the ground floor up; a room may use any room before it. Rooms on one
/// line of the README's table (the ground floor) share an index.
const FLOORS: &[&[&str]] = &[
    &["error", "env", "logging", "time", "text", "polled"],
    &["home", "limits"],
    &["engine"],
    &["graph"],
    &["store"],
    &["template_file"],
    &["api"],
    &["notify", "install", "migrate"],
    &["service"],
    &["backend"],
    &["gitops"],
    &["calls"],
    &["rewind"],
    &["mcp", "drive"],
    &["ui"],
    &["cli"],
];

fn floor_of(room: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's product code: without comments, without `#[cfg(test)]` modules (they sit at
/// the end of a file here, so everything from the first one on is left out), and nothing
/// of test files.
fn product_code(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name.ends_with("_tests.rs") || name == "fixtures.rs" || name == "testing.rs" {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let code = match text.find("#[cfg(test)]\nmod") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    // Comments may point anywhere (`see crate::calls`); only code is a dependency.
    Some(code.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n"))
}

/// The rooms a piece of code names as `crate::ROOM`.
fn rooms_used(code: &str) -> Vec<String> {
    let mut used = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `use crate::{a, b}` names several rooms.
        let rest = &code[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            top_level_items(group).into_iter().map(|n| n.trim().split("::").next().unwrap_or("")).collect()
        } else {
            vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")]
        };
        used.extend(names.into_iter().filter(|n| !n.is_empty()).map(String::from));
    }
    used
}

/// The items of a `{a::b, c::{d, e}}` group (after its `{`), split at its own commas.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

#[test]
fn every_room_uses_only_rooms_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let room = relative.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs").to_string();
        if room == "main" || room == "lib" {
            continue;
        }
        let Some(own) = floor_of(&room) else {
            unplaced.push(room);
            continue;
        };
        let Some(code) = product_code(file) else { continue };
        for used in rooms_used(&code) {
            match floor_of(&used) {
                Some(floor) if floor > own => {
                    upward.entry(format!("{} ({room})", relative.display())).or_default().push(used);
                }
                Some(_) => {}
                None if used == "self" || used == "super" => {}
                None => unplaced.push(format!("{used} (named in {})", relative.display())),
            }
        }
    }
    let gone: Vec<&str> = FLOORS
        .iter()
        .flat_map(|floor| floor.iter().copied())
        .filter(|room| !src.join(room).exists() && !src.join(format!("{room}.rs")).exists())
        .collect();
    assert!(gone.is_empty(), "rooms in FLOORS that src/ no longer has: {gone:?}");
    unplaced.sort();
    unplaced.dedup();
    assert!(unplaced.is_empty(), "rooms missing from FLOORS (and from the README's table): {unplaced:?}");
    assert!(upward.is_empty(), "files that use a room above their own: {upward:#?}");
}

#[test]
fn the_reader_sees_grouped_and_nested_paths() {
    let used = rooms_used("use crate::{api::Reply, store::{Location, open}};\nlet x = crate::engine::Run::new();");
    assert_eq!(used, vec!["api", "store", "engine"]);
}
