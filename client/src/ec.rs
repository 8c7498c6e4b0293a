//! Reed-Solomon erasure coding behind one small interface (issue 6). Two
//! implementations are kept so `scripts/bench.sh ec` can choose by measurement:
//! `reed-solomon-erasure` (named by the design; GF(2^8) matrix codec) and
//! `reed-solomon-simd` (Leopard-style FFT codec with SIMD). A codec turns K data shards
//! of one length into M parity shards, and rebuilds the data shards from any K of the
//! K+M. Shards of a stripe all have the same length, which `shard_len` rounds up to
//! what every codec accepts (a non-zero even number of bytes).

use reed_solomon_erasure::galois_8::ReedSolomon;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::limits::CODERS_POOLED_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("ec:{k}+{m} is not supported by this codec")]
    Unsupported { k: usize, m: usize },
    #[error("{have} of {k}+{m} shards present: at least {k} are needed")]
    TooFewShards { k: usize, m: usize, have: usize },
    #[error("shards of a stripe must all be {want} bytes (one is {got})")]
    ShardLength { want: usize, got: usize },
    #[error("{0}")]
    Codec(String),
}

/// Erasure codec for a fixed K+M.
pub trait Codec: Send + Sync {
    fn k(&self) -> usize;
    fn m(&self) -> usize;
    /// The M parity shards of `data` (K shards of one length, a multiple of 2).
    fn encode(&self, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, CodecError>;
    /// Fills in every missing data shard (indices `0..K`) from the shards present
    /// (indices `0..K+M`, parity after data). Parity shards may stay missing.
    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError>;
}

/// Bytes per shard for `len` bytes of data in K shards: rounded up to an even number,
/// at least 2.
pub fn shard_len(len: usize, k: usize) -> usize {
    let per = len.div_ceil(k).max(1);
    per + per % 2
}

/// The length of the (equal) shards in `data`.
fn shard_bytes(data: &[&[u8]]) -> usize {
    data.first().map_or(0, |d| d.len())
}

fn check(shards: &[Option<Vec<u8>>], k: usize, m: usize) -> Result<usize, CodecError> {
    if shards.len() != k + m {
        return Err(CodecError::Codec(format!("{} shards given for ec:{k}+{m}", shards.len())));
    }
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < k {
        return Err(CodecError::TooFewShards { k, m, have });
    }
    let want = shards.iter().flatten().next().map(Vec::len).unwrap_or(0);
    if let Some(bad) = shards.iter().flatten().find(|s| s.len() != want) {
        return Err(CodecError::ShardLength { want, got: bad.len() });
    }
    Ok(want)
}

/// `reed-solomon-erasure` (matrix codec over GF(2^8)).
pub struct Matrix {
    k: usize,
    m: usize,
    rs: ReedSolomon,
}

impl Matrix {
    pub fn new(k: usize, m: usize) -> Result<Matrix, CodecError> {
        let rs = ReedSolomon::new(k, m).map_err(|_| CodecError::Unsupported { k, m })?;
        Ok(Matrix { k, m, rs })
    }
}

impl Codec for Matrix {
    fn k(&self) -> usize {
        self.k
    }
    fn m(&self) -> usize {
        self.m
    }
    fn encode(&self, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, CodecError> {
        let len = shard_bytes(data);
        let mut parity = vec![vec![0u8; len]; self.m];
        let mut refs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
        self.rs.encode_sep(data, &mut refs).map_err(|e| CodecError::Codec(format!("{e:?}")))?;
        Ok(parity)
    }
    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError> {
        check(shards, self.k, self.m)?;
        self.rs.reconstruct_data(shards).map_err(|e| CodecError::Codec(format!("{e:?}")))
    }
}

/// `reed-solomon-simd` (O(n log n) codec over GF(2^16), SIMD). Encoders and decoders
/// keep their work buffers between stripes (reset, not rebuilt); each call takes one
/// from a small pool, so concurrent callers code in parallel.
pub struct Simd {
    k: usize,
    m: usize,
    enc: Coders<ReedSolomonEncoder>,
    dec: Coders<ReedSolomonDecoder>,
}

impl Simd {
    pub fn new(k: usize, m: usize) -> Result<Simd, CodecError> {
        if !ReedSolomonEncoder::supports(k, m) {
            return Err(CodecError::Unsupported { k, m });
        }
        let enc = Coders { idle: Default::default(), new: ReedSolomonEncoder::new, reset: ReedSolomonEncoder::reset };
        let dec = Coders { idle: Default::default(), new: ReedSolomonDecoder::new, reset: ReedSolomonDecoder::reset };
        Ok(Simd { k, m, enc, dec })
    }
}

fn simd_err(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::Codec(e.to_string())
}

/// Idle encoders (or decoders) of a `Simd` codec. Each keeps its work buffers, so
/// resetting an idle one costs less than building a new one.
struct Coders<T> {
    idle: parking_lot::Mutex<Vec<T>>,
    new: fn(usize, usize, usize) -> Result<T, reed_solomon_simd::Error>,
    reset: fn(&mut T, usize, usize, usize) -> Result<(), reed_solomon_simd::Error>,
}

impl<T> Coders<T> {
    /// One for `k`+`m` shards of `len` bytes: an idle one reset, or a new one.
    fn take(&self, k: usize, m: usize, len: usize) -> Result<T, CodecError> {
        let idle = self.idle.lock().pop();
        match idle {
            Some(mut c) => (self.reset)(&mut c, k, m, len).map(|()| c),
            None => (self.new)(k, m, len),
        }
        .map_err(simd_err)
    }

    /// Keeps `c` for a later call, unless `CODERS_POOLED_MAX` are idle already.
    fn give_back(&self, c: T) {
        let mut idle = self.idle.lock();
        if idle.len() < CODERS_POOLED_MAX {
            idle.push(c);
        }
    }
}

impl Codec for Simd {
    fn k(&self) -> usize {
        self.k
    }
    fn m(&self) -> usize {
        self.m
    }
    fn encode(&self, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, CodecError> {
        let len = shard_bytes(data);
        let mut enc = self.enc.take(self.k, self.m, len)?;
        for d in data {
            enc.add_original_shard(d).map_err(simd_err)?;
        }
        let parity = enc.encode().map_err(simd_err)?.recovery_iter().map(<[u8]>::to_vec).collect();
        self.enc.give_back(enc);
        Ok(parity)
    }
    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError> {
        let len = check(shards, self.k, self.m)?;
        if shards[..self.k].iter().all(Option::is_some) {
            return Ok(());
        }
        let mut dec = self.dec.take(self.k, self.m, len)?;
        for (i, s) in shards[..self.k].iter().enumerate() {
            if let Some(s) = s {
                dec.add_original_shard(i, s).map_err(simd_err)?;
            }
        }
        for (i, s) in shards[self.k..].iter().enumerate() {
            if let Some(s) = s {
                dec.add_recovery_shard(i, s).map_err(simd_err)?;
            }
        }
        let out = dec.decode().map_err(simd_err)?;
        let restored: Vec<(usize, Vec<u8>)> = out.restored_original_iter().map(|(i, s)| (i, s.to_vec())).collect();
        drop(out);
        for (i, s) in restored {
            shards[i] = Some(s);
        }
        self.dec.give_back(dec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn codecs(k: usize, m: usize) -> Vec<Box<dyn Codec>> {
        vec![Box::new(Matrix::new(k, m).unwrap()), Box::new(Simd::new(k, m).unwrap())]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any K of K+M shards give back the data, for both codecs and many sizes.
        #[test]
        fn any_k_of_k_plus_m_rebuild_the_data(
            shape in prop::sample::select(vec![(2usize, 1usize), (4, 2), (6, 3), (8, 4), (10, 4)]),
            len in 1usize..20_000,
            seed in any::<u64>(),
            lost in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let (k, m) = shape;
            let data: Vec<u8> = (0..len).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
            let sl = shard_len(len, k);
            let mut padded = data.clone();
            padded.resize(sl * k, 0);
            let shards: Vec<&[u8]> = padded.chunks(sl).collect();
            for c in codecs(k, m) {
                let parity = c.encode(&shards).unwrap();
                prop_assert_eq!(parity.len(), m);
                let mut all: Vec<Option<Vec<u8>>> =
                    shards.iter().map(|s| Some(s.to_vec())).chain(parity.into_iter().map(Some)).collect();
                // Lose up to M distinct shards, anywhere.
                let mut gone = Vec::new();
                for ix in lost.iter().take(m) {
                    let i = ix.index(k + m);
                    if !gone.contains(&i) {
                        gone.push(i);
                        all[i] = None;
                    }
                }
                c.reconstruct(&mut all).unwrap();
                let back: Vec<u8> = all[..k].iter().flat_map(|s| s.clone().unwrap()).collect();
                prop_assert_eq!(&back[..len], &data[..]);
            }
        }
    }

    #[test]
    fn more_than_m_lost_is_a_clear_error_not_wrong_bytes() {
        for c in codecs(4, 2) {
            let data = [vec![1u8; 64], vec![2; 64], vec![3; 64], vec![4; 64]];
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let parity = c.encode(&refs).unwrap();
            let mut all: Vec<Option<Vec<u8>>> =
                data.iter().cloned().map(Some).chain(parity.into_iter().map(Some)).collect();
            all[0] = None;
            all[2] = None;
            all[5] = None;
            assert_eq!(c.reconstruct(&mut all), Err(CodecError::TooFewShards { k: 4, m: 2, have: 3 }));
        }
        assert_eq!(shard_len(1, 4), 2);
        assert_eq!(shard_len(9, 4), 4);
        assert_eq!(shard_len(4096, 4), 1024);
    }
}
