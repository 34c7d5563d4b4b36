//! Optional encryption at rest: record payloads sealed with XChaCha20-Poly1305 under a
//! 32-byte key kept outside the database. The random 24-byte nonce of XChaCha makes
//! random nonces safe for any number of records; the record's tree and key are the
//! associated data, so a sealed record moved to another key does not open either.

use crate::error::{BatonError, BatonResult};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// A 32-byte database key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> BatonResult<Key> {
        let mut bytes = [0; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| BatonError::internal(format!("no randomness for a new key: {e}")))?;
        Ok(Key(bytes))
    }

    /// Read a key file: exactly 32 bytes, readable by its owner only.
    pub fn load(path: &Path) -> BatonResult<Key> {
        let fix = || format!("Restore the key file {} from where you keep its copy (without it the runs cannot be read).", path.display());
        let meta = std::fs::metadata(path)
            .map_err(|e| BatonError::storage(format!("cannot read the database key file {}: {e}", path.display()), fix()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(BatonError::storage(
                format!("the database key file {} has permissions {mode:04o}; others could read it", path.display()),
                format!("Run `chmod 600 {}`.", path.display()),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| BatonError::storage(format!("cannot read the database key file {}: {e}", path.display()), fix()))?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            BatonError::storage(format!("the database key file {} holds {} bytes, not {KEY_LEN}", path.display(), b.len()), fix())
        })?;
        Ok(Key(key))
    }

    /// Write this key to a new file (mode 0600, synced); an existing file is never replaced.
    pub fn save_new(&self, path: &Path) -> BatonResult<()> {
        let io = |e: std::io::Error| {
            BatonError::storage(
                format!("cannot create the database key file {}: {e}", path.display()),
                "Choose a key file path in a directory you can write that does not exist yet.",
            )
        };
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        file.write_all(&self.0).and_then(|_| file.sync_all()).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// The key in `path`, created there first if there is none.
    pub fn load_or_create(path: &Path) -> BatonResult<Key> {
        if path.exists() {
            return Key::load(path);
        }
        let key = Key::generate()?;
        key.save_new(path)?;
        Ok(key)
    }
}

/// Seals and opens record payloads.
pub struct Cipher(XChaCha20Poly1305);

impl Cipher {
    pub fn new(key: &Key) -> Cipher {
        Cipher(XChaCha20Poly1305::new(&key.0.into()))
    }

    /// `nonce || ciphertext+tag` of `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> BatonResult<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| BatonError::internal(format!("no randomness for a nonce: {e}")))?;
        let sealed =
            self.0.encrypt(&XNonce::from(nonce), Payload { msg: plain, aad }).map_err(|_| BatonError::internal("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend(sealed);
        Ok(out)
    }

    /// The plaintext of a sealed payload, or `None` if it was altered, moved or sealed
    /// under another key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = sealed.get(..NONCE_LEN)?.try_into().ok()?;
        self.0.decrypt(&XNonce::from(nonce), Payload { msg: &sealed[NONCE_LEN..], aad }).ok()
    }
}
