//! What a store's own upkeep reports: `verify` and `backup`. They belong to the
//! [`RunStore`](super::RunStore) seam, so every store fills them with what it really has.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    pub runs: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub templates: u64,
    /// Each problem found, naming the record; empty when the database is sound.
    pub problems: Vec<String>,
}

/// Past this many problems a report only says that there are more: a badly damaged
/// database would otherwise answer with megabytes that nobody reads.
const MOST_PROBLEMS: usize = 100;

impl VerifyReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    /// Record a problem; the list stays readable (at most [`MOST_PROBLEMS`] and a note).
    pub fn add_problem(&mut self, problem: String) {
        add_problem(&mut self.problems, problem);
    }
}

/// [`VerifyReport::add_problem`] on the list alone, for a check that fills the report's
/// counters while it collects problems.
pub fn add_problem(problems: &mut Vec<String>, problem: String) {
    if problems.len() < MOST_PROBLEMS {
        problems.push(problem);
    } else if problems.len() == MOST_PROBLEMS {
        problems.push("(more problems not shown)".into());
    }
}

/// What `backup` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackupReport {
    /// The new directory that holds the copy.
    pub dir: PathBuf,
    pub records: u64,
    /// What kind of copy it is, which decides how it is restored.
    pub copy: BackupCopy,
}

/// The two kinds of copy: sled copies its database files as of one write batch; a
/// server database exports one snapshot of its runs, since its own tools (pg_dump, base
/// backups) make the real backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackupCopy {
    /// A sled database directory holding every write up to this batch: put it in place of `db/`.
    Database { batch: u64 },
    /// An export file of one snapshot: restore it with `baton import`.
    Export { file: PathBuf },
}
