//! Database upkeep requests (`baton verify`, `backup`, `export`, `import`): executed by
//! the process that owns the database, so they work while Codex sessions are running.

use crate::api::{Reply, Request, RunsMoved};
use crate::error::{BatonError, BatonResult};
use crate::store::RunStore;
use std::path::Path;

/// Execute an upkeep request against the open store.
pub async fn handle(store: &dyn RunStore, request: &Request) -> BatonResult<Reply> {
    match request {
        Request::Verify(_) => Ok(Reply::Verified(store.verify().await?)),
        Request::Backup(p) => Ok(Reply::BackedUp(store.backup(absolute("dir", &p.dir)?).await?)),
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
            Ok(Reply::Exported(RunsMoved { runs, file: path.display().to_string() }))
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
            Ok(Reply::Imported(RunsMoved { runs, file: path.display().to_string() }))
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
