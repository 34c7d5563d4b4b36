//! The integrity record: a witness, outside sled, of how far the database was
//! acknowledged. sled's recovery stops silently at the first bad checksum and serves
//! whatever came before, so a damaged log looks like an older, healthy database. Every
//! write batch stores its number in sled (`meta/batch`, in the batch's own transaction);
//! this file (`integrity` beside sled's files) records a batch number known durable, with
//! the database id and a checksum. On open, sled must have recovered at least that batch.
//!
//! Cost: the record is written without a flush of its own. During batch N the writer
//! stages "N-1": a `pwrite` into one of two pre-allocated 4 KiB slots, alternating, and
//! nothing more — not even starting its write-back, which on this virtual disk costs a
//! device notification (~40 µs of CPU per batch, perf). The kernel writes the page back
//! within its dirty-expiry time (30 s by default), and the next `fdatasync`
//! after that persists it. A record never claims a batch that was not yet durable, so a
//! power cut never raises a false alarm. The price is a lag: in a busy stream the record
//! may witness a batch up to about 30 s old; when the writer goes idle, and when the store
//! closes, it writes the exact number with its own `fdatasync` (one extra flush per idle
//! period, none in a busy stream).

use crate::error::{BatonError, BatonResult};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "integrity";
const MAGIC: &[u8; 8] = b"BATONINT";
const FORMAT: u32 = 1;
const SLOT: u64 = 4096;
const RECORD_LEN: usize = 8 + 4 + 16 + 8 + 4;

/// What the record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Witness {
    pub db_id: [u8; 16],
    pub batch: u64,
}

impl Witness {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        out[12..28].copy_from_slice(&self.db_id);
        out[28..36].copy_from_slice(&self.batch.to_le_bytes());
        let crc = crc32fast::hash(&out[..36]);
        out[36..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Witness> {
        let bytes = bytes.get(..RECORD_LEN)?;
        let crc = u32::from_le_bytes(bytes[36..40].try_into().ok()?);
        if &bytes[..8] != MAGIC || u32::from_le_bytes(bytes[8..12].try_into().ok()?) != FORMAT || crc32fast::hash(&bytes[..36]) != crc {
            return None;
        }
        Some(Witness { db_id: bytes[12..28].try_into().ok()?, batch: u64::from_le_bytes(bytes[28..36].try_into().ok()?) })
    }
}

/// The open record file.
pub struct Record {
    file: File,
    path: PathBuf,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The newest valid witness in `dir`: `Ok(None)` if there is no record file, an error
/// naming the file if it exists but holds no valid slot.
pub fn read(dir: &Path) -> BatonResult<Option<Witness>> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, "read", e)),
    };
    let slots = [0, SLOT as usize].map(|at| bytes.get(at..).and_then(Witness::decode));
    match slots.into_iter().flatten().max_by_key(|w| w.batch) {
        Some(w) => Ok(Some(w)),
        None => Err(BatonError::storage(
            format!("the integrity record {} is damaged, so baton cannot tell whether the database beside it is complete", path.display()),
            "Restore the whole database directory from a backup, or run `baton verify --repair` to check the database and accept it as it is.",
        )),
    }
}

impl Record {
    /// Create (or replace) the record file with `witness` in both slots, durably.
    pub fn create(dir: &Path, witness: Witness) -> BatonResult<Record> {
        let path = path(dir);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let result = (|| {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            let mut block = vec![0u8; 2 * SLOT as usize];
            block[..RECORD_LEN].copy_from_slice(&witness.encode());
            block[SLOT as usize..SLOT as usize + RECORD_LEN].copy_from_slice(&witness.encode());
            file.write_all_at(&block, 0)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(file)
        })();
        let file = result.map_err(|e| io_error(&path, "write", e))?;
        Ok(Record { file, path })
    }

    /// Open the existing record file for updates.
    pub fn open(dir: &Path) -> BatonResult<Record> {
        let path = path(dir);
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_error(&path, "open", e))?;
        Ok(Record { file, path })
    }

    /// Write `witness` into its slot, without a flush or a write-back of its own: the
    /// kernel writes it back, and a later `fdatasync` (a device flush) persists it.
    pub fn stage(&self, witness: Witness) -> io::Result<()> {
        self.file.write_all_at(&witness.encode(), (witness.batch % 2) * SLOT)
    }

    /// Write `witness` durably now (one `fdatasync`).
    pub fn write_synced(&self, witness: Witness) -> io::Result<()> {
        self.file.write_all_at(&witness.encode(), (witness.batch % 2) * SLOT)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(path: &Path, what: &str, e: io::Error) -> BatonError {
    BatonError::storage(
        format!("cannot {what} the integrity record {}: {e}", path.display()),
        "Check the database directory is writable and the disk is healthy.",
    )
}

/// The error for a database that recovered less than was acknowledged.
pub fn short_of(dir: &Path, recovered: u64, acknowledged: u64) -> BatonError {
    BatonError::storage(
        format!(
            "the baton database {} is damaged: its log ({}) recovered up to write batch {recovered}, but batch {acknowledged} had been acknowledged, so runs or events are missing",
            dir.display(),
            dir.join("db").display()
        ),
        format!(
            "Stop every baton process and restore {} from a backup; or, to keep what is left and accept the loss, run `baton verify --repair`.",
            dir.display()
        ),
    )
}
