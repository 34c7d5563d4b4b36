//! The export format every store writes and reads (`baton export`/`import`, `baton
//! migrate`): a header line, then one JSON line per named template and per run with its
//! whole history and checkpoints. Stores write templates first (by name) and runs in
//! run-id byte order, so two stores holding the same runs export the same bytes.

use crate::engine::{Event, Run, Template};
use crate::error::{BatonError, BatonResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// First line of an export.
pub const EXPORT_HEADER: &str = "baton_export";
pub const EXPORT_FORMAT: u64 = 1;

/// One line of an export after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exported {
    /// A template remembered by name.
    Template(Template),
    /// A run with its whole history and its checkpoints.
    Run { run: Box<Run>, events: Vec<Event>, checkpoints: BTreeMap<String, Run> },
}

/// Write the header line.
pub fn write_header(out: &mut (dyn std::io::Write + Send)) -> std::io::Result<()> {
    let header = serde_json::json!({ EXPORT_HEADER: EXPORT_FORMAT });
    writeln!(out, "{header}")
}

/// Write one record line.
pub fn write_line(out: &mut (dyn std::io::Write + Send), record: &Exported) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// Parse an export; every line is checked before anything is written.
pub fn read_export(input: &mut (dyn BufRead + Send)) -> BatonResult<Vec<Exported>> {
    let bad = |line: usize, why: String| {
        BatonError::invalid(
            "import",
            format!("line {line} of the import is not a baton export line: {why}"),
            "Import a file written by `baton export`.",
        )
    };
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| bad(i + 1, e.to_string()))?;
        if i == 0 {
            let header: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(1, e.to_string()))?;
            if header[EXPORT_HEADER].as_u64() != Some(EXPORT_FORMAT) {
                return Err(bad(1, format!("the first line must be {{\"{EXPORT_HEADER}\":{EXPORT_FORMAT}}}")));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let record: Exported = serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
        if let Exported::Run { run, events, .. } = &record {
            let dense = events.iter().enumerate().all(|(k, e)| e.seq == k as u64 + 1);
            if !dense || events.len() as u64 != run.version {
                return Err(bad(i + 1, format!("run {} is at version {} but carries {} events", run.id, run.version, events.len())));
            }
        }
        records.push(record);
    }
    if records.is_empty() && !matches!(input.fill_buf(), Ok([])) {
        return Err(bad(1, "empty".into()));
    }
    Ok(records)
}
