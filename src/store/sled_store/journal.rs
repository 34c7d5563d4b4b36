//! The write-ahead journal: how a batch becomes durable with one small write and one
//! `fdatasync`, on the writer's own thread.
//!
//! Making a batch durable through sled costs its flush: sled 0.34 hands the log buffer to
//! one of its I/O threads, which writes it with `pwrite` + a waited `sync_file_range`
//! (twice per transaction: the batch manifest and the pages), and only then can the
//! `fdatasync` that reaches the device follow; every step is a hand-off between threads.
//! Instead the writer appends the batch's writes (the same tree/key/value triples a sled
//! transaction would apply, so sealed records stay sealed) to `journal` in the database
//! directory and syncs that file; sled does not see the batch yet (see [`super::pending`]
//! for why, and how reads see it). sled takes the journaled batches at a *checkpoint*,
//! when the journal is full: one transaction, sled's flush, [`super::durability::Syncer`],
//! and the journal starts again at its beginning.
//!
//! The file has a fixed size and is written with zeros when it is created, so an append
//! never allocates blocks or changes the file's size: its `fdatasync` writes the data and
//! flushes the device once, like the floor a benchmark measures.
//!
//! Records are chained by batch number. A record is `len: u32, crc: u32, batch: u64,
//! writes` (CRC-32 of everything after the CRC); recovery reads records from the start
//! while their CRC holds and each one's batch number is one more than the previous one's.
//! A new chain (after a checkpoint) starts at offset 0 with the next batch number, so the
//! records of older chains further on carry smaller numbers and end the read. Batch
//! numbers only grow, except that a failed batch's number is used again by the next
//! batch: the failed record is overwritten with zeros (and synced) before that, see
//! [`Journal::invalidate`].
//!
//! Opening the database replays ([`replay`]) every record newer than the batch sled
//! recovered (sled recovers whole transactions in order, and a checkpoint's transaction
//! carries the batch number, so what sled holds is some batch and everything before it);
//! whoever opened it then flushes and syncs sled before the journal starts afresh.

use super::batch::Write;
use super::keys::{self, TreeId};
use super::{Db, index};
use crate::error::{BatonError, BatonResult};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of the journal file. A batch larger than this skips the journal (sled's flush
/// makes it durable, as before the journal). Between checkpoints the journaled changes
/// wait in memory, and sled takes them in one go: with 1 MiB (about 700 single-advance
/// batches) the owner held 75 MiB at 100,000 events, with 256 KiB (about 180 batches, one
/// more device flush each time) 23 MiB (`store_bench`, fill phase).
pub const JOURNAL_BYTES: u64 = 256 * 1024;
/// Record header: length of what follows the header, CRC-32 of it.
const HEAD: usize = 8;

/// The journal file's name in the database directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// The writer's handle on the journal.
pub struct Journal {
    file: File,
    /// Where the next record goes.
    end: u64,
    /// The encoded record of the batch being written (kept to reuse its allocation).
    buf: Vec<u8>,
    /// A record that was (perhaps) written for a batch that then failed: it must be
    /// overwritten before its batch number is used again.
    failed: Option<(u64, u64)>,
}

impl Journal {
    /// Open the journal of the database in `dir`, creating it (all zeros) if needed. The
    /// caller has made every batch the journal may hold durable in sled ([`replay`], flush
    /// and sync), so writing starts at the beginning.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        let path = path(dir);
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if file.metadata()?.len() != JOURNAL_BYTES {
            // Written, not just sized: an append into written blocks changes no metadata.
            file.set_len(0)?;
            file.write_all_at(&vec![0u8; JOURNAL_BYTES as usize], 0)?;
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(Journal { file, end: 0, buf: Vec::new(), failed: None })
    }

    /// Encode the record of batch number `batch`; its length, which [`Journal::fits`] and
    /// [`Journal::has_room`] judge, and [`Journal::append`] then writes.
    pub fn encode(&mut self, batch: u64, writes: &[Write]) -> u64 {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEAD]);
        self.buf.extend_from_slice(&batch.to_le_bytes());
        for (tree, key, value) in writes {
            self.buf.push(*tree as u8);
            self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(key);
            match value {
                Some(value) => {
                    self.buf.push(1);
                    self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    self.buf.extend_from_slice(value);
                }
                None => self.buf.push(0),
            }
        }
        let len = (self.buf.len() - HEAD) as u32;
        let crc = crc32fast::hash(&self.buf[HEAD..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..HEAD].copy_from_slice(&crc.to_le_bytes());
        self.buf.len() as u64
    }

    /// Whether a record of `len` bytes can ever be journaled.
    pub fn fits(len: u64) -> bool {
        len <= JOURNAL_BYTES
    }

    /// Whether a record of `len` bytes fits behind the records written since the last
    /// checkpoint.
    pub fn has_room(&self, len: u64) -> bool {
        self.end + len <= JOURNAL_BYTES
    }

    /// Write the encoded record. Not durable until [`Journal::sync`].
    pub fn append(&mut self) -> io::Result<()> {
        let at = self.end;
        // Until synced, a failure leaves a record that may or may not be on disk.
        self.failed = Some((at, self.buf.len() as u64));
        self.file.write_all_at(&self.buf, at)?;
        self.end += self.buf.len() as u64;
        Ok(())
    }

    /// Make the records written so far durable: one `fdatasync`, one device flush.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.failed = None;
        Ok(())
    }

    /// Whether a failed record still has to be overwritten ([`Journal::invalidate`]).
    pub fn is_dirty(&self) -> bool {
        self.failed.is_some()
    }

    /// Overwrite a failed batch's record with zeros and sync, so that recovery never
    /// replays it, not even once its batch number is given to the next batch.
    pub fn invalidate(&mut self) -> io::Result<()> {
        let Some((at, len)) = self.failed else { return Ok(()) };
        self.file.write_all_at(&vec![0u8; len as usize], at)?;
        self.file.sync_data()?;
        self.failed = None;
        self.end = at;
        Ok(())
    }

    /// Bytes of records written since the last checkpoint.
    pub fn used(&self) -> u64 {
        self.end
    }

    /// Start a new chain at the beginning: every journaled batch is now durable in sled.
    pub fn restart(&mut self) {
        self.end = 0;
    }
}

/// One decoded record: its batch number and writes.
type Record = (u64, Vec<Write>);

/// The chain of records at the start of `bytes` (see the module's documentation).
fn chain(bytes: &[u8]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(record) = record_at(bytes, at) {
        let (batch, _) = &record.1;
        if let Some((last, _)) = records.last()
            && *batch != last + 1
        {
            break;
        }
        at = record.0;
        records.push(record.1);
    }
    records
}

/// The record at `at` and where the next one starts, if a whole one with a good CRC is there.
fn record_at(bytes: &[u8], at: usize) -> Option<(usize, Record)> {
    let head = bytes.get(at..at + HEAD)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let body = bytes.get(at + HEAD..at + HEAD + len)?;
    if len < 8 || crc32fast::hash(body) != crc {
        return None;
    }
    let batch = u64::from_le_bytes(body[..8].try_into().ok()?);
    let mut rest = &body[8..];
    let mut writes = Vec::new();
    let take = |n: usize, rest: &mut &[u8]| -> Option<Vec<u8>> {
        let (taken, left) = (rest.get(..n)?.to_vec(), rest.get(n..)?);
        *rest = left;
        Some(taken)
    };
    while !rest.is_empty() {
        let tree = *take(1, &mut rest)?.first()? as usize;
        let tree = TreeId::ALL.get(tree).copied()?;
        let key_len = u32::from_le_bytes(take(4, &mut rest)?.try_into().ok()?) as usize;
        let key = take(key_len, &mut rest)?;
        let value = match take(1, &mut rest)?.first()? {
            0 => None,
            _ => {
                let len = u32::from_le_bytes(take(4, &mut rest)?.try_into().ok()?) as usize;
                Some(take(len, &mut rest)?)
            }
        };
        writes.push((tree, key, value));
    }
    Some((at + HEAD + len, (batch, writes)))
}

/// Apply to `db` every journaled batch newer than the batch it recovered, each in one
/// transaction; returns how many were. Every caller flushes and syncs sled afterwards
/// (opening, a heal's reopen, a repair).
pub fn replay(dir: &Path, db: &Db) -> BatonResult<u64> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(super::io_storage(dir, "read the journal of", &e)),
    };
    let recovered = index::read_counter(db, keys::META_BATCH)?;
    let newer: Vec<Record> = chain(&bytes).into_iter().filter(|(batch, _)| *batch > recovered).collect();
    if let Some((first, _)) = newer.first()
        && *first != recovered + 1
    {
        return Err(BatonError::storage(
            format!(
                "the baton database at {} is damaged: its journal {} continues at write batch {first}, but sled recovered only through batch {recovered}",
                dir.display(),
                path(dir).display()
            ),
            format!("Stop every baton process and restore {} from a backup.", dir.display()),
        ));
    }
    for (_, writes) in &newer {
        super::batch::apply(db, writes).map_err(|e| super::io_storage(dir, "replay the journal into", &e))?;
    }
    Ok(newer.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(n: u8) -> Vec<Write> {
        vec![
            (TreeId::Runs, vec![n; 3], Some(vec![n; 40])),
            (TreeId::Index, vec![n], None),
            (TreeId::Meta, b"batch".to_vec(), Some(vec![n])),
        ]
    }

    /// Records as the journal lays them out, at `at` in a zeroed file.
    fn lay(file: &mut [u8], at: usize, records: &[(u64, Vec<Write>)], journal: &mut Journal) -> usize {
        let mut end = at;
        for (batch, w) in records {
            journal.encode(*batch, w);
            file[end..end + journal.buf.len()].copy_from_slice(&journal.buf);
            end += journal.buf.len();
        }
        end
    }

    #[test]
    fn recovery_reads_the_newest_chain_and_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(path(dir.path())).unwrap().len(), JOURNAL_BYTES);
        let mut file = vec![0u8; 4096];
        // An older chain (batches 1..=6), then a newer one (7, 8) over its start.
        let old: Vec<_> = (1..=6).map(|b| (b, writes(b as u8))).collect();
        lay(&mut file, 0, &old, &mut journal);
        let new: Vec<_> = (7..=8).map(|b| (b, writes(b as u8))).collect();
        let end = lay(&mut file, 0, &new, &mut journal);
        assert_eq!(chain(&file), new, "the older chain's records carry smaller numbers");
        // A torn last record ends the chain before it.
        let mut torn = file.clone();
        torn[end - 3] ^= 0xff;
        assert_eq!(chain(&torn), new[..1].to_vec());
        // Nothing valid at the start: nothing to replay.
        assert!(chain(&vec![0u8; 4096]).is_empty());
    }

    #[test]
    fn a_failed_record_is_zeroed_on_disk_and_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.encode(1, &writes(1));
        journal.append().unwrap();
        journal.sync().unwrap();
        journal.encode(2, &writes(2));
        journal.append().unwrap();
        assert!(journal.is_dirty(), "appended, not synced");
        journal.invalidate().unwrap();
        assert!(!journal.is_dirty());
        let bytes = std::fs::read(path(dir.path())).unwrap();
        assert_eq!(chain(&bytes), vec![(1, writes(1))], "the failed batch 2 is gone");
        journal.encode(2, &writes(9));
        journal.append().unwrap();
        journal.sync().unwrap();
        let bytes = std::fs::read(path(dir.path())).unwrap();
        assert_eq!(chain(&bytes), vec![(1, writes(1)), (2, writes(9))]);
        assert!(journal.has_room(JOURNAL_BYTES - journal.end) && !journal.has_room(JOURNAL_BYTES - journal.end + 1));
        assert!(Journal::fits(JOURNAL_BYTES) && !Journal::fits(JOURNAL_BYTES + 1));
    }
}
