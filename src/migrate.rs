//! `baton migrate --to TARGET`: copy every run (with its whole history and checkpoints)
//! and every named template from the current store into another one, then check the
//! copy: the same runs, each event's content hash, each checkpoint, each template.
//!
//! The source is read as an export (one consistent snapshot on PostgreSQL; run by run
//! through the owner on sled, so sessions may keep working), and written with the
//! target's import, which is all or nothing and refuses runs that exist unless told to
//! replace them. The target is a PostgreSQL URL or a sled database directory.

use crate::engine::{Event, Run, Template};
use crate::error::{BatonError, BatonResult};
use crate::store::export::{Exported, read_export};
use crate::store::{Location, RunStore, record};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Open the target of a migration: a sled directory is created first (private to this
/// user), so a mistyped parent is reported against `--to` rather than by sled.
pub async fn open_target(target: &Location) -> BatonResult<Arc<dyn RunStore>> {
    if let Location::Sled(dir) = target {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| BatonError::invalid("to", format!("cannot create {}: {e}", dir.display()), "Give a directory you can write."))?;
    }
    crate::store::open_at(target).await
}

/// What was copied (and checked).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Copied {
    pub runs: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub templates: u64,
}

/// The content of one run to compare: its snapshot, its events' content hashes, its
/// checkpoints.
struct Expected {
    run: Vec<u8>,
    event_hashes: Vec<String>,
    checkpoints: BTreeMap<String, Vec<u8>>,
}

fn json<T: Serialize>(value: &T) -> BatonResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| BatonError::internal(format!("cannot encode a record: {e}")))
}

fn event_hash(event: &Event) -> BatonResult<String> {
    Ok(record::content_hash(&json(event)?))
}

/// Import the export in `file` into `target` and verify the copy.
pub async fn copy(file: &Path, target: &dyn RunStore, replace: bool) -> BatonResult<Copied> {
    let open = || {
        std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| BatonError::internal(format!("cannot read the export {}: {e}", file.display())))
    };
    let records = read_export(&mut open()?)?;
    let mut expected = BTreeMap::new();
    let mut templates: Vec<Template> = Vec::new();
    let mut copied = Copied::default();
    for record in &records {
        match record {
            Exported::Template(t) => templates.push(t.clone()),
            Exported::Run { run, events, checkpoints } => {
                copied.runs += 1;
                copied.events += events.len() as u64;
                copied.checkpoints += checkpoints.len() as u64;
                let checkpoints = checkpoints.iter().map(|(name, cp)| Ok((name.clone(), json(cp)?))).collect::<BatonResult<_>>()?;
                let event_hashes = events.iter().map(event_hash).collect::<BatonResult<_>>()?;
                expected.insert(run.id.clone(), Expected { run: json(run)?, event_hashes, checkpoints });
            }
        }
    }
    copied.templates = templates.len() as u64;
    drop(records);
    let imported = target.import(&mut open()?, replace).await?;
    if imported != copied.runs {
        return Err(mismatch(format!("the target imported {imported} runs of {}", copied.runs)));
    }
    for (id, want) in &expected {
        let run: Run = target.run(id).await?.ok_or_else(|| mismatch(format!("run {id} is missing")))?;
        if json(&run)? != want.run {
            return Err(mismatch(format!("run {id} differs")));
        }
        let events = target.events(id, 1, run.version, usize::MAX).await?;
        let hashes = events.iter().map(event_hash).collect::<BatonResult<Vec<_>>>()?;
        if hashes != want.event_hashes {
            let first =
                hashes.iter().zip(&want.event_hashes).position(|(a, b)| a != b).map_or(hashes.len().min(want.event_hashes.len()), |i| i);
            return Err(mismatch(format!(
                "run {id} has {} events where {} were copied; the first difference is at seq {}",
                hashes.len(),
                want.event_hashes.len(),
                first + 1
            )));
        }
        for (name, cp) in &want.checkpoints {
            let found = target.checkpoint(id, name).await?.map(|c| json(&c)).transpose()?;
            if found.as_ref() != Some(cp) {
                return Err(mismatch(format!("checkpoint {name} of run {id} differs")));
            }
        }
    }
    for template in &templates {
        if target.template(&template.name).await?.as_ref() != Some(template) {
            return Err(mismatch(format!("template {} differs", template.name)));
        }
    }
    Ok(copied)
}

fn mismatch(what: String) -> BatonError {
    BatonError::storage(
        format!("the copy does not match its source: {what}"),
        "The target holds what its import wrote; compare `baton export` of both stores, and rerun with --replace once the cause is fixed.",
    )
}
