//! S3's flexible checksums: CRC32, CRC32C, CRC64NVME, SHA1, SHA256, computed over the
//! decoded body as it streams through, compared with what the client sent (header or
//! aws-chunked trailer), stored, and combined across parts on CompleteMultipartUpload
//! (COMPOSITE: a checksum of the parts' checksums with a `-N` suffix; FULL_OBJECT: the
//! CRCs combined into the CRC of the whole object).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crc_fast::{CrcAlgorithm, Digest as Crc};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};
use sha1::Digest;

/// A checksum algorithm; stored and sent by its S3 name (`CRC32`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Algo {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algo {
    /// Every algorithm, in declaration order (`a as usize` indexes this).
    pub const ALL: [Algo; 5] = [Algo::Crc32, Algo::Crc32c, Algo::Crc64Nvme, Algo::Sha1, Algo::Sha256];

    pub fn from_name(s: &str) -> Option<Algo> {
        Algo::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algo::Crc32 => "CRC32",
            Algo::Crc32c => "CRC32C",
            Algo::Crc64Nvme => "CRC64NVME",
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
        }
    }

    /// The request/trailer header carrying this checksum.
    pub fn header(self) -> &'static str {
        match self {
            Algo::Crc32 => "x-amz-checksum-crc32",
            Algo::Crc32c => "x-amz-checksum-crc32c",
            Algo::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algo::Sha1 => "x-amz-checksum-sha1",
            Algo::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Algo::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Algo::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Algo::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            Algo::Crc64Nvme => 8,
            _ => 4,
        }
    }

    pub fn hasher(self) -> Hasher {
        match (self, self.crc()) {
            (_, Some(c)) => Hasher::Crc(self, Crc::new(c)),
            (Algo::Sha1, None) => Hasher::Sha1(sha1::Sha1::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
}

impl TryFrom<String> for Algo {
    type Error = String;
    fn try_from(s: String) -> Result<Algo, String> {
        Algo::from_name(&s).ok_or_else(|| format!("unknown checksum algorithm {s}"))
    }
}

impl From<Algo> for &'static str {
    fn from(a: Algo) -> &'static str {
        a.name()
    }
}

/// How an object's checksum covers it (S3's `x-amz-checksum-type`); stored and sent by
/// its S3 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum Kind {
    /// A checksum of the parts' checksums, with a `-N` suffix.
    Composite,
    /// The checksum of every byte of the object: a single PUT's, or a multipart
    /// object's part CRCs combined.
    FullObject,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Composite => "COMPOSITE",
            Kind::FullObject => "FULL_OBJECT",
        }
    }

    /// The kind named `s`: anything but FULL_OBJECT is COMPOSITE (as S3 combines parts
    /// by default; uploads stored the name as the client gave it before it was typed).
    fn of_name(s: &str) -> Kind {
        if s == Kind::FullObject.name() {
            Kind::FullObject
        } else {
            Kind::Composite
        }
    }

    /// The kind of a multipart upload's checksum: the one asked for, else FULL_OBJECT
    /// for CRC64NVME (S3 makes it no other way) and COMPOSITE for the others.
    pub fn of_upload(algo: Algo, asked: Option<&str>) -> S3Result<Kind> {
        let kind = match asked {
            Some(n) if n == Kind::FullObject.name() => Kind::FullObject,
            Some(n) if n == Kind::Composite.name() => Kind::Composite,
            Some(n) => {
                return Err(s3_error!(InvalidRequest, "x-amz-checksum-type {n:?} is neither COMPOSITE nor FULL_OBJECT"))
            }
            None if algo == Algo::Crc64Nvme => Kind::FullObject,
            None => Kind::Composite,
        };
        if kind == Kind::FullObject && algo.crc().is_none() {
            return Err(s3_error!(InvalidRequest, "FULL_OBJECT checksums need a CRC algorithm"));
        }
        Ok(kind)
    }
}

impl From<Kind> for &'static str {
    fn from(k: Kind) -> &'static str {
        k.name()
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        Ok(Kind::of_name(&String::deserialize(d)?))
    }
}

/// A stored checksum: the algorithm and its base64 value (a COMPOSITE one ends in
/// `-N`). Stored as `[algorithm, value]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Algo, String)", into = "(Algo, String)")]
pub struct Checksum {
    pub algo: Algo,
    pub value: String,
}

impl From<(Algo, String)> for Checksum {
    fn from((algo, value): (Algo, String)) -> Checksum {
        Checksum { algo, value }
    }
}

impl From<Checksum> for (Algo, String) {
    fn from(c: Checksum) -> (Algo, String) {
        (c.algo, c.value)
    }
}

pub enum Hasher {
    Crc(Algo, Crc),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Crc(_, c) => c.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
        }
    }

    pub fn algo(&self) -> Algo {
        match self {
            Hasher::Crc(a, _) => *a,
            Hasher::Sha1(_) => Algo::Sha1,
            Hasher::Sha256(_) => Algo::Sha256,
        }
    }

    /// The checksum of everything passed to `update`.
    pub fn finish(self) -> Checksum {
        let algo = self.algo();
        Checksum { algo, value: B64.encode(self.finish_bytes()) }
    }

    fn finish_bytes(self) -> Vec<u8> {
        match self {
            Hasher::Crc(a, c) => crc_bytes(a, c.finalize()),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

fn crc_bytes(a: Algo, v: u64) -> Vec<u8> {
    if a.width() == 8 {
        v.to_be_bytes().to_vec()
    } else {
        (v as u32).to_be_bytes().to_vec()
    }
}

/// The algorithm named by `x-amz-sdk-checksum-algorithm` (or an upload's), if any.
pub fn named(algorithm: Option<&str>) -> S3Result<Option<Algo>> {
    match algorithm {
        None => Ok(None),
        Some(n) => {
            Ok(Some(Algo::from_name(n).ok_or_else(|| s3_error!(InvalidRequest, "unknown checksum algorithm {n}"))?))
        }
    }
}

/// Which checksum to compute: the one whose value was sent (`sent`: the algorithms
/// with a header; or the announced trailer), else the one named by
/// `x-amz-sdk-checksum-algorithm`.
pub fn requested(algorithm: Option<&str>, sent: Vec<Algo>, trailer: Option<&str>) -> S3Result<Option<Algo>> {
    let mut found = sent;
    if let Some(t) = trailer {
        for name in t.split(',').map(str::trim) {
            let a = name
                .strip_prefix("x-amz-checksum-")
                .and_then(Algo::from_name)
                .ok_or_else(|| s3_error!(InvalidRequest, "unsupported trailer {name}"))?;
            found.push(a);
        }
    }
    if found.len() > 1 {
        return Err(s3_error!(InvalidRequest, "expecting a single checksum"));
    }
    let named = named(algorithm)?;
    match (found.first().copied(), named) {
        (Some(f), Some(n)) if f != n => {
            Err(s3_error!(InvalidRequest, "the checksum sent does not match x-amz-sdk-checksum-algorithm"))
        }
        (Some(f), _) => Ok(Some(f)),
        (None, n) => Ok(n),
    }
}

/// The object checksum from its parts' (base64 value, size) in order.
pub fn combine(a: Algo, kind: Kind, parts: &[(String, u64)]) -> Result<String, String> {
    let decoded: Vec<Vec<u8>> = parts
        .iter()
        .map(|(v, _)| B64.decode(v).map_err(|e| format!("stored part checksum is not base64: {e}")))
        .collect::<Result<_, _>>()?;
    if kind == Kind::FullObject {
        let c = a.crc().ok_or("FULL_OBJECT needs a CRC")?;
        let mut acc: Option<u64> = None;
        for (d, (_, size)) in decoded.iter().zip(parts) {
            let mut b = [0u8; 8];
            b[8 - d.len()..].copy_from_slice(d);
            let v = u64::from_be_bytes(b);
            acc = Some(match acc {
                None => v,
                Some(prev) => crc_fast::checksum_combine(c, prev, v, *size),
            });
        }
        return Ok(B64.encode(crc_bytes(a, acc.unwrap_or(0))));
    }
    let mut h = a.hasher();
    for d in &decoded {
        h.update(d);
    }
    Ok(format!("{}-{}", h.finish().value, parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_object_crc_of_parts_equals_crc_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for a in [Algo::Crc32, Algo::Crc32c, Algo::Crc64Nvme] {
            let whole = {
                let mut h = a.hasher();
                h.update(&data);
                h.finish().value
            };
            let parts: Vec<(String, u64)> = data
                .chunks(30_000)
                .map(|c| {
                    let mut h = a.hasher();
                    h.update(c);
                    (h.finish().value, c.len() as u64)
                })
                .collect();
            assert_eq!(combine(a, Kind::FullObject, &parts).unwrap(), whole, "{a:?}");
            let composite = combine(a, Kind::Composite, &parts).unwrap();
            assert!(composite.ends_with("-4") && !composite.starts_with(&whole));
        }
    }

    #[test]
    fn known_values() {
        // CRC32 ("123456789") = 0xCBF43926, CRC32C = 0xE3069283.
        let mut h = Algo::Crc32.hasher();
        h.update(b"123456789");
        assert_eq!(h.finish_bytes(), 0xCBF4_3926u32.to_be_bytes());
        let mut h = Algo::Crc32c.hasher();
        h.update(b"123456789");
        assert_eq!(h.finish_bytes(), 0xE306_9283u32.to_be_bytes());
    }

    #[test]
    fn algorithms_and_kinds_are_stored_by_their_s3_names() {
        for (i, a) in Algo::ALL.into_iter().enumerate() {
            assert_eq!(a as usize, i, "ALL is in declaration order");
            let c = Checksum { algo: a, value: "AAAA".into() };
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("[\"{}\",\"AAAA\"]", a.name()));
            assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), c);
        }
        for k in [Kind::Composite, Kind::FullObject] {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), k);
        }
        assert_eq!(serde_json::from_str::<Kind>("\"full_object\"").unwrap(), Kind::Composite);
    }
}
