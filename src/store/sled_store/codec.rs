//! How records are stored. Every record of the current format starts with a one-byte tag:
//!
//! | tag | payload |
//! | --- | --- |
//! | `{` | format 0: untagged JSON (the first format; still read, never written) |
//! | 1 | JSON |
//! | 2 | JSON compressed with LZ4 (size-prepended) |
//! | 3 | a sealed record: 24-byte nonce, then a tag-1 or tag-2 record encrypted and authenticated |
//!
//! JSON stays the payload because runs carry arbitrary `serde_json::Value`s (context,
//! artifacts) that non-self-describing formats cannot decode. LZ4 is used only when it
//! pays: measured on the fixture runs, a snapshot of 0.4-1.2 KB shrinks by 20-40% in
//! about 2 us, while events (~0.1-0.4 KB) do not shrink. zstd saved another 20% but cost
//! 12-17 us per record and a C build.
//!
//! Run snapshots (current and checkpoints) keep their template by reference: the stored
//! JSON starts with `"template_ref":"<hash>"` instead of the template, whose body is kept
//! once per content hash in the `bodies` tree.

use super::crypto::Cipher;
use super::keys;
use crate::engine::{Run, Template};
use crate::error::{BatonError, BatonResult};
use crate::store::record;
pub use crate::store::record::template_hash;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const TAG_JSON: u8 = 1;
const TAG_LZ4: u8 = 2;
const TAG_SEALED: u8 = 3;
/// Payloads shorter than this are never compressed.
const COMPRESS_FROM: usize = 256;
/// No stored record expands to more than this (the largest run is a few MiB).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Template bodies kept decoded; templates are few, so this bound is rarely reached.
const TEMPLATE_CACHE: usize = 256;

/// Encodes and decodes records of one database.
pub struct Codec {
    dir: PathBuf,
    cipher: Option<Cipher>,
    /// Template JSON by content hash, so decoding a run costs no template lookup.
    bodies: Mutex<HashMap<String, std::sync::Arc<Vec<u8>>>>,
}

impl Codec {
    pub fn new(dir: &Path, cipher: Option<Cipher>) -> Codec {
        Codec { dir: dir.to_path_buf(), cipher, bodies: Mutex::new(HashMap::new()) }
    }

    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored form of `value` under `tree`/`key`.
    pub fn encode<T: Serialize>(&self, tree: &str, key: &[u8], value: &T) -> BatonResult<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(|e| BatonError::internal(format!("cannot encode a record: {e}")))?;
        self.encode_json(tree, key, &json)
    }

    /// The stored form of JSON text.
    pub fn encode_json(&self, tree: &str, key: &[u8], json: &[u8]) -> BatonResult<Vec<u8>> {
        let mut record = Vec::with_capacity(json.len() + 1);
        let compressed = (json.len() >= COMPRESS_FROM).then(|| lz4_flex::compress_prepend_size(json));
        match compressed {
            Some(small) if small.len() < json.len() * 9 / 10 => {
                record.push(TAG_LZ4);
                record.extend_from_slice(&small);
            }
            _ => {
                record.push(TAG_JSON);
                record.extend_from_slice(json);
            }
        }
        match &self.cipher {
            None => Ok(record),
            Some(cipher) => {
                let mut sealed = vec![TAG_SEALED];
                sealed.extend(cipher.seal(&aad(tree, key), &record)?);
                Ok(sealed)
            }
        }
    }

    /// The JSON text of a stored record. In an encrypted database every record must be
    /// sealed: a plain one there was planted or damaged, and is refused.
    pub fn json<'a>(&self, tree: &str, key: &[u8], bytes: &'a [u8]) -> BatonResult<Cow<'a, [u8]>> {
        match (bytes.first(), &self.cipher) {
            (Some(&TAG_SEALED), Some(cipher)) => {
                let plain = cipher.open(&aad(tree, key), &bytes[1..]).ok_or_else(|| {
                    self.damaged(tree, key, "its authentication failed: it was altered, moved, or sealed under another key")
                })?;
                if plain.first() == Some(&b'{') {
                    return Err(self.damaged(tree, key, "its sealed payload has no format tag"));
                }
                self.plain_json(tree, key, &plain).map(|c| Cow::Owned(c.into_owned()))
            }
            (Some(&TAG_SEALED), None) => Err(BatonError::storage(
                format!("record {} in {} is encrypted and no key was given", keys::describe(tree, key), self.dir.display()),
                "Open the database with its key file.",
            )),
            (_, Some(_)) => Err(self.damaged(tree, key, "it is not encrypted in an encrypted database (it was altered or planted)")),
            (_, None) => self.plain_json(tree, key, bytes),
        }
    }

    /// The JSON text of an unsealed record.
    fn plain_json<'a>(&self, tree: &str, key: &[u8], bytes: &'a [u8]) -> BatonResult<Cow<'a, [u8]>> {
        let damaged = |why: &str| self.damaged(tree, key, why);
        match bytes.first() {
            Some(b'{') => Ok(Cow::Borrowed(bytes)),
            Some(&TAG_JSON) => Ok(Cow::Borrowed(&bytes[1..])),
            Some(&TAG_LZ4) => {
                let body = &bytes[1..];
                let size = body.get(..4).map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()) as usize);
                match size {
                    Some(size) if size <= MAX_RECORD_BYTES => lz4_flex::decompress_size_prepended(body)
                        .map(Cow::Owned)
                        .map_err(|e| damaged(&format!("it does not decompress ({e})"))),
                    _ => Err(damaged("its compressed size is impossible")),
                }
            }
            Some(tag) => Err(damaged(&format!("it has an unknown format tag {tag}"))),
            None => Err(damaged("it is empty")),
        }
    }

    /// Decode a stored record of type `T`.
    pub fn decode<T: DeserializeOwned>(&self, tree: &str, key: &[u8], bytes: &[u8]) -> BatonResult<T> {
        let json = self.json(tree, key, bytes)?;
        serde_json::from_slice(&json).map_err(|e| self.damaged(tree, key, &format!("it does not decode ({e})")))
    }

    /// The stored form of a run snapshot, and the template body it refers to (to store
    /// under that hash if it is not there yet).
    pub fn encode_run(&self, tree: &str, key: &[u8], run: &Run, template_hash: &str) -> BatonResult<Vec<u8>> {
        let json = record::run_json(run, template_hash)?;
        self.encode_json(tree, key, &json)
    }

    /// Decode a run snapshot; `body` finds a template body by hash when it is not cached.
    pub fn decode_run(
        &self,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
        body: impl FnOnce(&str) -> BatonResult<Option<Vec<u8>>>,
    ) -> BatonResult<Run> {
        let json = self.json(tree, key, bytes)?;
        let Some((hash, rest)) = record::template_ref(&json).map_err(|why| self.damaged(tree, key, why))? else {
            // Format 0: the template is inline.
            return serde_json::from_slice(&json).map_err(|e| self.damaged(tree, key, &format!("it does not decode ({e})")));
        };
        let template = self
            .template_json(&hash, body)?
            .ok_or_else(|| self.damaged(tree, key, &format!("its template {} is missing from {}", hash, keys::TreeId::Bodies.name())))?;
        record::splice_run(&template, rest).map_err(|e| self.damaged(tree, key, &format!("it does not decode ({e})")))
    }

    /// The JSON of the template body `hash`, from the cache or `body`.
    fn template_json(
        &self,
        hash: &str,
        body: impl FnOnce(&str) -> BatonResult<Option<Vec<u8>>>,
    ) -> BatonResult<Option<std::sync::Arc<Vec<u8>>>> {
        if let Some(found) = self.bodies.lock().unwrap_or_else(|p| p.into_inner()).get(hash) {
            return Ok(Some(found.clone()));
        }
        let Some(stored) = body(hash)? else { return Ok(None) };
        let json = self.json(keys::TreeId::Bodies.name(), hash.as_bytes(), &stored)?.into_owned();
        serde_json::from_slice::<Template>(&json)
            .map_err(|e| self.damaged(keys::TreeId::Bodies.name(), hash.as_bytes(), &format!("it does not decode ({e})")))?;
        let json = std::sync::Arc::new(json);
        let mut cache = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TEMPLATE_CACHE {
            cache.clear();
        }
        cache.insert(hash.to_string(), json.clone());
        Ok(Some(json))
    }

    /// The storage error for a record that cannot be read.
    pub fn damaged(&self, tree: &str, key: &[u8], why: &str) -> BatonError {
        damaged_record(&self.dir, &keys::describe(tree, key), why)
    }
}

/// The storage error for a damaged record, naming it and the ways out.
pub fn damaged_record(dir: &Path, record: &str, why: &str) -> BatonError {
    BatonError::storage(
        format!("record {record} in the baton database {} cannot be read: {why}", dir.display()),
        "Restore the database from a backup (`baton backup DIR` makes one), or run `baton verify` to list every damaged record.",
    )
}

/// Associated data of a sealed record: which tree and key it belongs to.
fn aad(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tree.len() + 1 + key.len());
    aad.extend_from_slice(tree.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}
