//! Compiled plugins kept on disk, so that a restart, or a swap to a version seen before, does
//! not compile again.
//!
//! An entry is the component's machine code as wasmtime serializes it, in a file named by a
//! SHA-256 of the component's bytes and of everything in the engine that changes the code
//! (target, compiler flags, tunables, features, wasmtime's version). The file starts with a
//! SHA-256 of its payload, checked on every read: an entry that is damaged, or that wasmtime
//! refuses (built by another version or with other settings), is deleted and the component
//! compiled again. Nothing read from the cache is run without both checks passing.
//!
//! The directory must be writable by the host alone: like any cache of machine code, it is
//! trusted once its checksums match. Entries not used for a while are removed once the cache
//! is over its size; deleting the directory at any time is safe.

use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of every entry: the format, then the payload's SHA-256.
const MAGIC: &[u8; 8] = b"CCACHE01";
const HEADER_LEN: usize = MAGIC.len() + 32;
const EXTENSION: &str = "cwasm";

/// The cache directory and the engine its entries are for.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    /// SHA-256 of the engine's compilation settings.
    engine_key: [u8; 32],
    max_bytes: u64,
}

impl CodeCache {
    /// Opens (creating) the cache in `dir` for code compiled by `engine`.
    pub fn open(dir: &Path, engine: &Engine, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("engine.cache_dir: cannot create {}", dir.display()))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        Ok(CodeCache {
            dir: dir.to_owned(),
            engine_key: hasher.0.finalize().into(),
            max_bytes,
        })
    }

    /// The entry for the component `wasm`.
    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let mut key = Sha256::new();
        key.update(self.engine_key);
        key.update(Sha256::digest(wasm));
        let name: String = key.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.{EXTENSION}"))
    }

    /// The compiled component for `wasm`, if the cache holds a sound entry for it.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let path = self.entry(wasm);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(entry = %path.display(), %error, "cannot read a cache entry; compiling");
                return None;
            }
        };
        let Some(payload) = checked_payload(&bytes) else {
            self.discard(&path, "damaged (its checksum does not match)");
            return None;
        };
        match deserialize(engine, payload) {
            Ok(component) => {
                // Marks the entry as used, for the pruning.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(error) => {
                self.discard(&path, &format!("refused by the engine: {error}"));
                None
            }
        }
    }

    /// Keeps the compiled `component` of `wasm`, then prunes the cache to its size.
    pub fn store(&self, wasm: &[u8], component: &Component) -> Result<()> {
        let payload = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("cannot serialize the compiled component")?;
        let mut temp = tempfile::Builder::new()
            .prefix(".entry-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write into {}", self.dir.display()))?;
        temp.write_all(MAGIC)?;
        temp.write_all(&Sha256::digest(&payload))?;
        temp.write_all(&payload)?;
        let path = self.entry(wasm);
        temp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.prune();
        Ok(())
    }

    fn discard(&self, path: &Path, why: &str) {
        tracing::warn!(entry = %path.display(), why, "cache entry discarded; compiling again");
        let _ = std::fs::remove_file(path);
    }

    /// Removes the least recently used entries while the cache is over its size.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|ext| ext == EXTENSION))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

/// The payload of an entry whose header and checksum are right.
fn checked_payload(bytes: &[u8]) -> Option<&[u8]> {
    let (header, payload) = bytes.split_at_checked(HEADER_LEN)?;
    let (magic, checksum) = header.split_at(MAGIC.len());
    (magic == MAGIC && Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}

#[allow(
    unsafe_code,
    reason = "loading machine code is unsafe by nature; the payload's checksum was verified, \
              and wasmtime checks that it was built by this version with these settings"
)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `payload` is what `Component::serialize` wrote into this host's cache directory,
    // byte for byte (its SHA-256 matched); the directory is the host's own (see the module
    // documentation). wasmtime refuses code from another version or configuration.
    unsafe { Component::deserialize(engine, payload) }
}

/// Feeds `Hash` into SHA-256, for a key that is the same from one run to the next.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0 // Only the digest is used.
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_intact_entry_has_a_payload() {
        let payload = b"machine code".to_vec();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(&payload));
        entry.extend_from_slice(&payload);
        assert_eq!(checked_payload(&entry), Some(&payload[..]));

        let mut flipped = entry.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(checked_payload(&flipped), None);
        let mut other_format = entry.clone();
        other_format[0] = b'X';
        assert_eq!(checked_payload(&other_format), None);
        assert_eq!(checked_payload(&entry[..HEADER_LEN - 1]), None);
    }
}
