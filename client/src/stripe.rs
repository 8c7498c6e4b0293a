//! How an append's bytes lie on an extent's replicas or shards (issue 6).
//!
//! `replica:N`: every replica takes the whole append, at the same offset.
//!
//! `ec:K+M`: an append of `len` bytes is one **stripe**. It is cut into K data shards of
//! `shard_len(len, K)` bytes (`ceil(len / K)` rounded up to an even number; the last
//! data shards are zero-padded), M parity shards are computed from them
//! (reed-solomon-simd), and shard `i` is appended to `replicas[i]`, all K+M at the same
//! shard offset. Every shard extent grows by the same shard length per append, so the
//! shards of an extent always agree on its length, a seal at the acknowledged length is
//! an append boundary on every shard, and a slice's `offset` is its stripe's shard
//! offset. Byte `p` of a slice is byte `p % shard_len` of data shard `p / shard_len`.
//! What a small append costs: K+M shard appends (one RPC each) of `len / K` bytes
//! (rounded up to even), so `len * (K+M)/K` bytes plus, per shard, the datanode's
//! per-append framing (8 bytes of descriptor; batches share a 64-byte header and pad to
//! 4 KiB per extent per round).

use std::sync::Arc;

use bytes::Bytes;
use proto::meta::Policy;

use crate::ec::{shard_len, Codec, Simd};
use crate::stream::StreamError;

/// A stream's layout, with its codec when erasure-coded.
#[derive(Clone)]
pub(crate) enum Layout {
    Replica,
    Ec { k: usize, codec: Arc<Simd> },
}

impl Layout {
    pub(crate) fn new(policy: Policy) -> Result<Layout, StreamError> {
        match policy {
            Policy::Replica { .. } => Ok(Layout::Replica),
            Policy::Ec { k, m } => {
                let codec = Simd::new(k as usize, m as usize).map_err(|_| StreamError::Unsupported(policy))?;
                Ok(Layout::Ec { k: k as usize, codec: Arc::new(codec) })
            }
        }
    }

    /// What each replica or shard of an extent receives for an append of `data`.
    pub(crate) fn payloads(&self, data: &Bytes) -> Result<Payloads, StreamError> {
        let crc = proto::crc32c(data);
        let Layout::Ec { k, codec } = self else {
            return Ok(Payloads::Same { data: data.clone(), crc });
        };
        let (k, len) = (*k, data.len());
        let sl = shard_len(len, k);
        let mut shards: Vec<Bytes> = (0..k)
            .map(|i| {
                let start = (i * sl).min(len);
                let end = ((i + 1) * sl).min(len);
                if end - start == sl {
                    data.slice(start..end) // whole: shared, not copied
                } else {
                    let mut v = vec![0u8; sl];
                    v[..end - start].copy_from_slice(&data[start..end]);
                    Bytes::from(v)
                }
            })
            .collect();
        let refs: Vec<&[u8]> = shards.iter().map(|s| s.as_ref()).collect();
        let parity = codec.encode(&refs).map_err(|e| StreamError::Codec(e.to_string()))?;
        shards.extend(parity.into_iter().map(Bytes::from));
        let shards = shards.into_iter().map(|s| (proto::crc32c(&s), s)).collect();
        Ok(Payloads::Shards { crc, shard_len: sl as u64, shards })
    }
}

/// One append's bytes as its replicas or shards take them.
pub(crate) enum Payloads {
    /// Every replica gets `data`.
    Same { data: Bytes, crc: u32 },
    /// Shard `i` (data, then parity) goes to replica `i`; each with its CRC32C.
    Shards { crc: u32, shard_len: u64, shards: Vec<(u32, Bytes)> },
}

impl Payloads {
    /// The payload for replica (or shard) `i`, with its CRC32C.
    pub(crate) fn target(&self, i: usize) -> (u32, Bytes) {
        match self {
            Payloads::Same { data, crc } => (*crc, data.clone()),
            Payloads::Shards { shards, .. } => shards[i].clone(),
        }
    }

    /// Bytes each replica's (or shard's) extent grows by.
    pub(crate) fn advance(&self) -> u64 {
        match self {
            Payloads::Same { data, .. } => data.len() as u64,
            Payloads::Shards { shard_len, .. } => *shard_len,
        }
    }

    /// Bytes held in memory for this append (payload and parity).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Payloads::Same { data, .. } => data.len(),
            Payloads::Shards { shards, .. } => shards.iter().map(|(_, s)| s.len()).sum(),
        }
    }

    /// CRC32C of the appended data (the slice's CRC).
    pub(crate) fn crc(&self) -> u32 {
        match self {
            Payloads::Same { crc, .. } | Payloads::Shards { crc, .. } => *crc,
        }
    }
}

/// The data shards holding bytes `[off, off + len)` of a stripe whose shards are `sl`
/// bytes: `(shard, offset in the shard, length)`, in order.
pub(crate) fn data_pieces(sl: u64, off: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64)> {
    let end = off + len;
    let first = off / sl;
    let last = if len == 0 { first } else { (end - 1) / sl + 1 };
    (first..last).map(move |i| {
        let a = off.max(i * sl);
        let b = end.min((i + 1) * sl);
        (i as usize, a - i * sl, b - a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_exactly_once() {
        for &(sl, off, len) in &[(4u64, 0u64, 13u64), (4, 3, 2), (4, 4, 4), (10, 7, 30), (2, 0, 1), (6, 5, 1)] {
            let mut at = off;
            for (i, s_off, n) in data_pieces(sl, off, len) {
                assert_eq!(i as u64 * sl + s_off, at, "contiguous for sl={sl} off={off} len={len}");
                assert!(s_off + n <= sl && n > 0);
                at += n;
            }
            assert_eq!(at, off + len);
        }
    }

    #[test]
    fn shards_rebuild_the_append_and_carry_their_crcs() {
        let layout = Layout::new(Policy::Ec { k: 4, m: 2 }).unwrap();
        for len in [1usize, 5, 8, 4096, 100_003] {
            let data = Bytes::from((0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
            let p = layout.payloads(&data).unwrap();
            let sl = p.advance() as usize;
            assert_eq!(sl, shard_len(len, 4));
            let mut joined = Vec::new();
            for i in 0..6 {
                let (crc, s) = p.target(i);
                assert_eq!(s.len(), sl);
                assert_eq!(crc, proto::crc32c(&s));
                if i < 4 {
                    joined.extend_from_slice(&s);
                }
            }
            assert_eq!(&joined[..len], &data[..]);
            assert!(joined[len..].iter().all(|&b| b == 0), "padding is zeros");
            assert_eq!(p.crc(), proto::crc32c(&data));
        }
    }
}
