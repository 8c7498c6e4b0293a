//! Server-side encryption of object bytes at rest, the model: an object's (or part's)
//! encryption record, its data key, and the AES-256-CTR keystream that encrypts and
//! decrypts any byte range.
//!
//! - **SSE-C**: the key is the customer's, sent with every request; only its MD5 is
//!   kept, to tell a wrong key from the right one.
//! - **SSE-S3**: a random data key per object, sealed with the gateway's master key.
//! - **SSE-KMS**: the same, sealed bound to the KMS key id (`MasterKey::seal_for`): a
//!   local key service, with no external KMS; a key id opens only its own data keys.
//!
//! CTR keeps sizes (a stored byte is an object byte, so ranges, parts and slices work
//! as for plain objects) and lets a read start anywhere. Every part of a multipart
//! object has its own IV (parts are encrypted before their place in the object is
//! known). Integrity at rest is the data path's (CRC32C on every slice, checked end to
//! end); the ETag is the MD5 of the plaintext.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::secrets::MasterKey;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// SSE-C.
    Customer,
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS (`aws:kms`).
    Kms,
}

/// How an object's (or a part's, or an upload's) bytes are encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sse {
    pub mode: Mode,
    /// SSE-C: base64 MD5 of the customer's key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_md5: Option<String>,
    /// SSE-KMS: the key id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kms_key: Option<String>,
    /// SSE-S3 and SSE-KMS: the data key, sealed (base64).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sealed_key: Option<String>,
    /// One IV per part (hex), in order; one for an object PUT whole. An upload has none
    /// (its parts have theirs).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ivs: Vec<String>,
}

/// A 256-bit data key.
pub type DataKey = [u8; 32];

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the object is encrypted with a customer key: send it (x-amz-server-side-encryption-customer-*)")]
    CustomerKeyMissing,
    #[error("the customer key given is not the one the object was encrypted with")]
    CustomerKeyWrong,
    #[error("the object's data key cannot be opened: {0}")]
    Sealed(String),
}

/// A customer's key as sent: base64 of 32 bytes, with the base64 MD5 of them.
pub fn customer_key(key_b64: &str, md5_b64: &str) -> Result<(DataKey, String), String> {
    let key = B64.decode(key_b64).map_err(|_| "the customer key is not base64".to_string())?;
    let key: DataKey = key.try_into().map_err(|_| "the customer key must be 256 bits".to_string())?;
    let md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(key));
    if md5 != md5_b64 {
        return Err("the customer key's MD5 does not match the key".into());
    }
    Ok((key, md5))
}

impl Sse {
    /// A new record for `mode` with a fresh data key (SSE-S3, SSE-KMS sealed by `master`;
    /// SSE-C: `customer`'s key and MD5), and the key.
    pub fn new(
        master: &MasterKey,
        mode: Mode,
        kms_key: Option<String>,
        customer: Option<(DataKey, String)>,
    ) -> (Sse, DataKey) {
        let (key, key_md5, sealed_key) = match (mode, customer) {
            (Mode::Customer, Some((k, md5))) => (k, Some(md5), None),
            _ => {
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                let label = kms_key.as_deref().unwrap_or("").as_bytes().to_vec();
                (k, None, Some(B64.encode(master.seal_for(&label, &k))))
            }
        };
        (Sse { mode, key_md5, kms_key, sealed_key, ivs: Vec::new() }, key)
    }

    /// The data key, given the customer's key for SSE-C.
    pub fn key(&self, master: &MasterKey, customer: Option<&(DataKey, String)>) -> Result<DataKey, KeyError> {
        match self.mode {
            Mode::Customer => match customer {
                None => Err(KeyError::CustomerKeyMissing),
                Some((k, md5)) if Some(md5) == self.key_md5.as_ref() => Ok(*k),
                Some(_) => Err(KeyError::CustomerKeyWrong),
            },
            Mode::S3 | Mode::Kms => {
                let sealed = B64
                    .decode(self.sealed_key.as_deref().unwrap_or_default())
                    .map_err(|e| KeyError::Sealed(e.to_string()))?;
                let label = self.kms_key.as_deref().unwrap_or("").as_bytes();
                let k = master.open_for(label, &sealed).map_err(|e| KeyError::Sealed(e.to_string()))?;
                k.try_into().map_err(|_| KeyError::Sealed("not 256 bits".into()))
            }
        }
    }
}

/// A fresh IV (hex).
pub fn new_iv() -> String {
    let mut iv = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
    hex::encode(iv)
}

/// The keystream of an object's bytes from a position on: one IV per part, each part's
/// counter starting at the part's first byte.
pub struct Cipher {
    key: DataKey,
    /// (first byte, length, IV) of each part.
    parts: Vec<(u64, u64, [u8; 16])>,
    pos: u64,
}

impl Cipher {
    /// The keystream of an object of `part_sizes` (one size for an object PUT whole)
    /// with `ivs`, from byte `pos`.
    pub fn new(key: DataKey, ivs: &[String], part_sizes: &[u64], pos: u64) -> Result<Cipher, String> {
        if ivs.len() != part_sizes.len() {
            return Err(format!("{} IVs for {} parts", ivs.len(), part_sizes.len()));
        }
        let mut parts = Vec::with_capacity(ivs.len());
        let mut at = 0;
        for (iv, &len) in ivs.iter().zip(part_sizes) {
            let iv: [u8; 16] =
                hex::decode(iv).ok().and_then(|v| v.try_into().ok()).ok_or("a stored IV is not valid")?;
            parts.push((at, len, iv));
            at += len;
        }
        Ok(Cipher { key, parts, pos })
    }

    /// XORs the keystream into `buf` (encrypting or decrypting it), advancing.
    pub fn apply(&mut self, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            let Some(&(start, len, iv)) = self.parts.iter().find(|(s, l, _)| self.pos < s + l) else {
                return; // past the end: nothing is encrypted there
            };
            let n = ((start + len - self.pos) as usize).min(buf.len());
            let mut c = Aes256Ctr::new(&self.key.into(), &iv.into());
            c.seek(self.pos - start);
            let (now, rest) = buf.split_at_mut(n);
            c.apply_keystream(now);
            buf = rest;
            self.pos += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_decrypts_across_parts() {
        let key = [7u8; 32];
        let ivs = vec![new_iv(), new_iv()];
        let sizes = [100u64, 57];
        let plain: Vec<u8> = (0..157u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut enc = plain.clone();
        Cipher::new(key, &ivs, &sizes, 0).unwrap().apply(&mut enc);
        assert_ne!(enc, plain);
        // Each part alone, as an UploadPart encrypts it, gives the same bytes.
        let mut p2 = plain[100..].to_vec();
        Cipher::new(key, &ivs[1..], &sizes[1..], 0).unwrap().apply(&mut p2);
        assert_eq!(p2, enc[100..]);
        for (a, b) in [(0, 157), (3, 99), (95, 130), (100, 101), (150, 157)] {
            let mut x = enc[a..b].to_vec();
            // In two calls, split inside.
            let mut c = Cipher::new(key, &ivs, &sizes, a as u64).unwrap();
            let mid = (b - a) / 2;
            c.apply(&mut x[..mid]);
            c.apply(&mut x[mid..]);
            assert_eq!(x, plain[a..b], "{a}..{b}");
        }
    }

    #[test]
    fn data_keys_open_only_as_sealed() {
        let m = MasterKey::ephemeral();
        let (s3, k) = Sse::new(&m, Mode::S3, None, None);
        assert_eq!(s3.key(&m, None), Ok(k));
        let (kms, k) = Sse::new(&m, Mode::Kms, Some("key-1".into()), None);
        assert_eq!(kms.key(&m, None), Ok(k));
        let other = Sse { kms_key: Some("key-2".into()), ..kms.clone() };
        assert!(matches!(other.key(&m, None), Err(KeyError::Sealed(_))), "another key id");
        assert!(matches!(kms.key(&MasterKey::ephemeral(), None), Err(KeyError::Sealed(_))), "another master key");
        let ck = [9u8; 32];
        let md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(ck));
        assert_eq!(customer_key(&B64.encode(ck), &md5), Ok((ck, md5.clone())));
        assert!(customer_key(&B64.encode(ck), &B64.encode([0u8; 16])).is_err());
        assert!(customer_key(&B64.encode([1u8; 16]), &md5).is_err());
        let (c, k) = Sse::new(&m, Mode::Customer, None, Some((ck, md5.clone())));
        assert_eq!(k, ck);
        assert!(c.sealed_key.is_none(), "a customer's key is never stored");
        assert_eq!(c.key(&m, Some(&(ck, md5))), Ok(ck));
        assert_eq!(c.key(&m, None), Err(KeyError::CustomerKeyMissing));
        let wrong = [1u8; 32];
        let wrong_md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(wrong));
        assert_eq!(c.key(&m, Some(&(wrong, wrong_md5))), Err(KeyError::CustomerKeyWrong));
    }
}
