//! Database upkeep requests (`baton verify`, `backup`, `export`, `import`): executed by
//! the process that owns the database, so they work while Codex sessions are running.

use crate::api::{Reply, Request};
use crate::error::{BatonError, BatonResult};
use crate::store::RunStore;
use std::path::Path;

/// Execute an upkeep request against the open store.
pub async fn handle(store: &dyn RunStore, request: &Request) -> BatonResult<Reply> {
    match request {
        Request::Verify(_) => {
            let report = store.verify().await?;
            let mut text = format!(
                "{} run(s), {} event(s), {} checkpoint(s), {} template(s): {}",
                report.runs,
                report.events,
                report.checkpoints,
                report.templates,
                if report.is_sound() { "the database is sound." } else { "PROBLEMS FOUND:" }
            );
            for problem in &report.problems {
                text.push_str(&format!("\n- {problem}"));
            }
            Ok(Reply { text, data: serde_json::to_value(&report).unwrap_or_default() })
        }
        Request::Backup(p) => {
            let dir = absolute("dir", &p.dir)?;
            let report = store.backup(dir).await?;
            let text = format!(
                "Backed up {} records (write batch {}) to {}. To restore: stop baton and put that directory in place of the database directory `db/`.",
                report.records,
                report.batch,
                report.dir.display()
            );
            Ok(Reply { text, data: serde_json::to_value(&report).unwrap_or_default() })
        }
        Request::Export(p) => {
            let path = absolute("file", &p.file)?;
            let io = |e: std::io::Error| {
                BatonError::invalid(
                    "file",
                    format!("cannot create {}: {e}", path.display()),
                    "Give a new file path in a directory you can write.",
                )
            };
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
            let mut out = std::io::BufWriter::new(file);
            let runs = store.export(&mut out).await?;
            out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
            Ok(Reply { text: format!("Exported {runs} run(s) to {}.", path.display()), data: serde_json::json!({ "runs": runs }) })
        }
        Request::Import(p) => {
            let path = absolute("file", &p.file)?;
            let file = std::fs::File::open(path).map_err(|e| {
                BatonError::invalid(
                    "file",
                    format!("cannot read {}: {e}", path.display()),
                    "Give the path of a file written by `baton export`.",
                )
            })?;
            let runs = store.import(&mut std::io::BufReader::new(file), p.replace).await?;
            Ok(Reply { text: format!("Imported {runs} run(s) from {}.", path.display()), data: serde_json::json!({ "runs": runs }) })
        }
        _ => Err(BatonError::internal("not an upkeep request")),
    }
}

/// Paths cross processes, so they must not depend on a working directory.
fn absolute<'a>(field: &str, path: &'a str) -> BatonResult<&'a Path> {
    let path = Path::new(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(BatonError::invalid(field, format!("`{}` is not an absolute path", path.display()), "Pass an absolute path."))
    }
}
