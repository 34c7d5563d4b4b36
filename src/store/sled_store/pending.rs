//! Batches that are durable in the journal but not yet in sled, and reading through them.
//!
//! sled's files change only at a checkpoint ([`super::writer`]): sled 0.34 cannot always
//! recover a log that it wrote without a sync (its own flush only uses
//! `sync_file_range`): after a power cut with un-synced log writes its next open panicked
//! ("tried to serialize Uninitialized", seen in the power-cut test). So between
//! checkpoints the writes of journaled batches are kept here, in memory (at most about
//! the journal's size), and every read of the store goes through [`Db`]'s methods below,
//! which look here first: a key's newest value (or removal) is here if it changed since
//! the last checkpoint, otherwise in sled.
//!
//! A checkpoint applies everything here to sled in one transaction, flushes and syncs
//! sled, and only then empties this; a reader that looks here first and in sled second
//! therefore never misses a value, whenever the checkpoint happens.

use super::Db;
use super::batch::Write;
use super::keys::TreeId;
use sled::IVec;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::RwLock;

/// One tree's changes: key -> new value (`None`: removed).
type Changes = BTreeMap<Vec<u8>, Option<IVec>>;

/// The changes of journaled batches not yet in sled, by tree.
#[derive(Default)]
pub struct Pending {
    trees: RwLock<[Changes; TreeId::ALL.len()]>,
}

impl Pending {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, [Changes; TreeId::ALL.len()]> {
        self.trees.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, [Changes; TreeId::ALL.len()]> {
        self.trees.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Take in a durable batch's writes.
    pub fn apply(&self, writes: &[Write]) {
        let mut trees = self.write();
        for (tree, key, value) in writes {
            trees[*tree as usize].insert(key.clone(), value.as_deref().map(IVec::from));
        }
    }

    /// Every change, as writes (for the checkpoint).
    pub fn writes(&self) -> Vec<Write> {
        let trees = self.read();
        TreeId::ALL.iter().flat_map(|t| trees[*t as usize].iter().map(|(k, v)| (*t, k.clone(), v.as_ref().map(|v| v.to_vec())))).collect()
    }

    /// Forget everything: it is durable in sled now.
    pub fn clear(&self) {
        for changes in self.write().iter_mut() {
            changes.clear();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.read().iter().all(|c| c.is_empty())
    }

    /// The change to `key` in `tree`, if it changed since the last checkpoint.
    fn get(&self, tree: TreeId, key: &[u8]) -> Option<Option<IVec>> {
        self.read()[tree as usize].get(key).cloned()
    }

    /// A copy of the changes in `tree` between `from` and `to`.
    fn between(&self, tree: TreeId, from: Bound<&[u8]>, to: Bound<&[u8]>) -> VecDeque<(Vec<u8>, Option<IVec>)> {
        let trees = self.read();
        let changes = &trees[tree as usize];
        if changes.is_empty() {
            return VecDeque::new();
        }
        changes.range::<[u8], _>((from, to)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// sled's entries merged with the pending changes over the same keys (pending first).
/// Iterate it in one direction only (forward, or backward with `rev`).
pub struct Merged {
    sled: sled::Iter,
    pending: VecDeque<(Vec<u8>, Option<IVec>)>,
    /// sled's next entry, read but not yet returned.
    peeked: Option<sled::Result<(IVec, IVec)>>,
}

impl Merged {
    fn step(&mut self, back: bool) -> Option<sled::Result<(IVec, IVec)>> {
        loop {
            if self.peeked.is_none() {
                self.peeked = if back { self.sled.next_back() } else { self.sled.next() };
            }
            let sled_key = match &self.peeked {
                Some(Ok((key, _))) => Some(key.clone()),
                Some(Err(_)) => return self.peeked.take(),
                None => None,
            };
            let pending = if back { self.pending.back() } else { self.pending.front() };
            let take_sled = match (&sled_key, pending) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(s), Some((p, _))) => {
                    let order = s.as_ref().cmp(p.as_slice());
                    if order == std::cmp::Ordering::Equal {
                        // Changed since the checkpoint: sled's value is older.
                        self.peeked = None;
                        false
                    } else {
                        (order == std::cmp::Ordering::Less) != back
                    }
                }
            };
            if take_sled {
                return self.peeked.take();
            }
            let (key, value) = if back { self.pending.pop_back() } else { self.pending.pop_front() }?;
            if let Some(value) = value {
                return Some(Ok((IVec::from(key), value)));
            }
        }
    }
}

impl Iterator for Merged {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

impl DoubleEndedIterator for Merged {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

/// Reads of the store: sled's state with the pending changes over it.
impl Db {
    pub(crate) fn get(&self, tree: TreeId, key: &[u8]) -> sled::Result<Option<IVec>> {
        match self.pending.get(tree, key) {
            Some(change) => Ok(change),
            None => self.tree(tree).get(key),
        }
    }

    pub(crate) fn contains_key(&self, tree: TreeId, key: &[u8]) -> sled::Result<bool> {
        Ok(self.get(tree, key)?.is_some())
    }

    /// Every entry of `tree`, in key order.
    pub(crate) fn iter(&self, tree: TreeId) -> Merged {
        // The pending copy is taken before sled is read (see the module's documentation).
        let pending = self.pending.between(tree, Bound::Unbounded, Bound::Unbounded);
        Merged { sled: self.tree(tree).iter(), pending, peeked: None }
    }

    /// The entries of `tree` whose keys start with `prefix`, in key order.
    pub(crate) fn scan_prefix(&self, tree: TreeId, prefix: &[u8]) -> Merged {
        let pending = self.pending.between(tree, Bound::Included(prefix), Bound::Unbounded);
        let pending = pending.into_iter().take_while(|(k, _)| k.starts_with(prefix)).collect();
        Merged { sled: self.tree(tree).scan_prefix(prefix), pending, peeked: None }
    }

    /// The entries of `tree` with keys from `from` to `to`, in key order.
    pub(crate) fn range(&self, tree: TreeId, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Merged {
        let pending = self.pending.between(tree, from, to);
        Merged { sled: self.tree(tree).range::<&[u8], _>((from, to)), pending, peeked: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_merge_pending_changes_over_sled_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::open_sled(dir.path(), &super::super::Options::default()).unwrap();
        for k in [b"a1", b"a3", b"a5", b"b1"] {
            db.tree(TreeId::Runs).insert(k, &b"sled"[..]).unwrap();
        }
        db.pending.apply(&[
            (TreeId::Runs, b"a2".to_vec(), Some(b"new".to_vec())),
            (TreeId::Runs, b"a3".to_vec(), None),
            (TreeId::Runs, b"a5".to_vec(), Some(b"newer".to_vec())),
            (TreeId::Runs, b"a6".to_vec(), Some(b"new".to_vec())),
            (TreeId::Events, b"a4".to_vec(), Some(b"other tree".to_vec())),
        ]);
        let text = |m: Merged| -> Vec<String> {
            m.map(|e| {
                let (k, v) = e.unwrap();
                format!("{}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v))
            })
            .collect()
        };
        let forward = vec!["a1=sled", "a2=new", "a5=newer", "a6=new"];
        assert_eq!(text(db.scan_prefix(TreeId::Runs, b"a")), forward);
        assert_eq!(text(db.iter(TreeId::Runs)), [&forward[..], &["b1=sled"]].concat());
        let backward: Vec<String> = db
            .range(TreeId::Runs, Bound::Included(b"a2"), Bound::Included(b"a5"))
            .rev()
            .map(|e| String::from_utf8_lossy(&e.unwrap().0).into_owned())
            .collect();
        assert_eq!(backward, vec!["a5", "a2"]);
        assert_eq!(db.get(TreeId::Runs, b"a3").unwrap(), None, "removed since the checkpoint");
        assert_eq!(db.get(TreeId::Runs, b"a1").unwrap().as_deref(), Some(&b"sled"[..]));
        assert!(db.contains_key(TreeId::Events, b"a4").unwrap() && !db.contains_key(TreeId::Events, b"a1").unwrap());
        assert_eq!(db.pending.writes().len(), 5);
        db.pending.clear();
        assert!(db.pending.is_empty());
        assert_eq!(text(db.scan_prefix(TreeId::Runs, b"a")), vec!["a1=sled", "a3=sled", "a5=sled"]);
    }
}
