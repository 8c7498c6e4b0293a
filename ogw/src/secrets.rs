//! Secret access keys are stored encrypted at rest (ChaCha20-Poly1305 under a 32-byte
//! master key kept outside the database, in a file only its owner can read). A stolen
//! database alone yields no usable credentials.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

#[derive(Clone)]
pub struct MasterKey(Key);

impl MasterKey {
    /// Reads the key file (64 hex digits), refusing one that others can read.
    pub fn load(path: &Path) -> anyhow::Result<MasterKey> {
        let attrs = std::fs::metadata(path).with_context(|| format!("master key file {}", path.display()))?;
        if attrs.permissions().mode() & 0o077 != 0 {
            bail!("master key file {} is readable by others: chmod 600 it", path.display());
        }
        let text = std::fs::read_to_string(path)?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .with_context(|| format!("master key file {} must hold 64 hex digits", path.display()))?;
        Ok(MasterKey(*Key::from_slice(&bytes)))
    }

    /// A random key for a process that reads and writes no secret (GC): whatever it
    /// would seal could not be opened by anyone else.
    pub fn ephemeral() -> MasterKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(*Key::from_slice(&k))
    }

    /// Loads the key file, creating it (mode 600) with a random key when missing.
    pub fn load_or_create(path: &Path) -> anyhow::Result<MasterKey> {
        if !path.exists() {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating master key file {}", path.display()))?;
            writeln!(f, "{}", hex::encode(k))?;
            f.sync_all()?;
        }
        MasterKey::load(path)
    }

    /// nonce (12 bytes) || ciphertext with tag.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let c = ChaCha20Poly1305::new(&self.0).encrypt(Nonce::from_slice(&nonce), plain).expect("in-memory encryption");
        [&nonce[..], &c].concat()
    }

    /// As [`MasterKey::seal`], bound to `label` (authenticated, not stored): it opens
    /// only with the same label (`open_for`).
    pub fn seal_for(&self, label: &[u8], plain: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::Payload;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let c = ChaCha20Poly1305::new(&self.0)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: label })
            .expect("in-memory encryption");
        [&nonce[..], &c].concat()
    }

    pub fn open_for(&self, label: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        use chacha20poly1305::aead::Payload;
        if sealed.len() < 12 + 16 {
            bail!("sealed key too short");
        }
        let (nonce, c) = sealed.split_at(12);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: c, aad: label })
            .map_err(|_| anyhow::anyhow!("a stored data key does not open with this master key and key id"))
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            bail!("sealed secret too short");
        }
        let (nonce, c) = sealed.split_at(12);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), c)
            .map_err(|_| anyhow::anyhow!("a stored secret does not open with this master key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let k = MasterKey::load_or_create(&dir.path().join("k")).unwrap();
        let sealed = k.seal(b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open(&sealed).unwrap(), b"secret");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.open(&bad).is_err());
        let other = MasterKey::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.open(&sealed).is_err());
        std::fs::set_permissions(dir.path().join("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MasterKey::load(&dir.path().join("k")).is_err(), "a world-readable key is refused");
    }
}
