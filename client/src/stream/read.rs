//! Reading LogStreams back: a slice (checked against its CRC32C), part of one, or a raw
//! range of a replicated extent. Replicated extents are read from one copy at a time,
//! the next on a failure; EC slices from their data shards, hedged by the parity shards
//! when one is missing, corrupt or slow, and decoded from any K. Copies that returned bad
//! bytes are reported to the metanode.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use proto::meta::{ExtentInfo, Policy};
use proto::{ExtentError, ExtentId, NodeId, READ_BYTES_MAX};

use super::{within, Corruption, ReplicaFailure, Slice, StreamClient, StreamError};
use crate::ec::{shard_len, Codec, Simd};
use crate::limits::{READ_SPREAD_BYTES, SUSPECT_FOR};
use crate::stripe::data_pieces;
use crate::ClientError;

/// What a read asks of one extent.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A whole slice, checked against its CRC.
    Slice(Slice),
    /// Bytes `[off, off + len)` of a slice.
    Part { s: Slice, off: u64, len: u64 },
    /// Any appended bytes of a replicated extent.
    Range { offset: u64, len: u32 },
}

/// Slice `s` decoded from the shards present (but `skip`), if that gives bytes matching
/// its CRC; otherwise why not.
fn decode(
    codec: &dyn Codec,
    k: usize,
    shards: &[Option<Bytes>],
    skip: Option<usize>,
    s: Slice,
) -> Result<Bytes, String> {
    let mut work: Vec<Option<Vec<u8>>> =
        shards.iter().enumerate().map(|(i, b)| b.as_ref().filter(|_| Some(i) != skip).map(|b| b.to_vec())).collect();
    codec.reconstruct(&mut work).map_err(|e| format!("decoding: {e}"))?;
    let joined = join_data(work[..k].iter().flatten(), s.len as usize);
    if proto::crc32c(&joined) != s.crc {
        return Err("the decoded bytes do not match the slice's CRC".into());
    }
    Ok(joined)
}

/// The first `len` bytes of `pieces` joined (data shards without their padding).
fn join_data<'a>(pieces: impl Iterator<Item = &'a (impl AsRef<[u8]> + 'a)>, len: usize) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(len);
    for p in pieces {
        let p = p.as_ref();
        let take = p.len().min(len - out.len());
        out.extend_from_slice(&p[..take]);
    }
    out.freeze()
}

impl StreamClient {
    /// Reads a slice and checks it against its CRC32C. `replica:N`: from one replica,
    /// falling back to the next on an error or a mismatch (and reporting the bad copy).
    /// `ec:K+M`: from its data shards; when one is missing, slow or corrupt, from any K
    /// of the K+M shards, decoded. Never returns bytes that fail the CRC.
    pub async fn read(&self, s: Slice) -> Result<Bytes, StreamError> {
        self.located(s.extent, Want::Slice(s)).await
    }

    /// Bytes `[off, off + len)` of slice `s` (a ranged GET, a copied range). The
    /// datanodes check their stored CRCs over what they return; a part cannot be checked
    /// against the slice's own CRC (an EC part read that fails falls back to decoding the
    /// whole slice, which is).
    pub async fn read_part(&self, s: Slice, off: u64, len: u64) -> Result<Bytes, StreamError> {
        if off + len > s.len as u64 || len == 0 {
            let why = format!("bytes {off}+{len} are not inside the slice");
            return Err(StreamError::Unreadable { extent: s.extent, offset: s.offset, len: s.len, why });
        }
        if len == s.len as u64 {
            return self.read(s).await;
        }
        self.located(s.extent, Want::Part { s, off, len }).await
    }

    /// Reads `len` bytes of a `replica:N` extent from `offset`: any range of appended
    /// bytes, e.g. a whole extent. The datanode checks the CRCs it stored over what it
    /// returns; a replica that reports corruption is reported and the next one tried.
    /// Ranges longer than one read (`READ_BYTES_MAX`) are read piece by piece. An EC
    /// extent is read by slice (`read`, `read_part`).
    pub async fn read_range(&self, extent: ExtentId, offset: u64, len: u64) -> Result<Bytes, StreamError> {
        let mut out = bytes::BytesMut::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(READ_BYTES_MAX as u64) as u32;
            let piece = self.located(extent, Want::Range { offset: at, len: n }).await?;
            if len <= READ_BYTES_MAX as u64 {
                return Ok(piece);
            }
            out.extend_from_slice(&piece);
            at += n as u64;
        }
        Ok(out.freeze())
    }

    /// Reads through the cached locations of `extent`, and when that fails, through
    /// fresh ones from the metanode (replicas may have moved).
    async fn located(&self, extent: ExtentId, want: Want) -> Result<Bytes, StreamError> {
        let cached = self.extents.lock().get(&extent).cloned();
        if let Some(e) = cached {
            match self.read_in(&e, want).await {
                Ok(b) => return Ok(b),
                Err(err) => tracing::debug!("read from cached locations failed: {err}"),
            }
        }
        let e = self.meta.extent(extent).await?;
        self.extents.lock().insert(e.id, e.clone());
        self.read_in(&e, want).await
    }

    async fn read_in(&self, e: &ExtentInfo, want: Want) -> Result<Bytes, StreamError> {
        match (e.policy, want) {
            (Policy::Replica { .. }, Want::Slice(s)) => self.read_replicas(e, s.offset, s.len, Some(s.crc)).await,
            (Policy::Replica { .. }, Want::Part { s, off, len }) => {
                self.read_replicas(e, s.offset + off, len as u32, None).await
            }
            (Policy::Replica { .. }, Want::Range { offset, len }) => self.read_replicas(e, offset, len, None).await,
            (Policy::Ec { k, .. }, Want::Slice(s)) => self.read_stripe(e, k as usize, s).await,
            (Policy::Ec { k, .. }, Want::Part { s, off, len }) => {
                self.read_stripe_part(e, k as usize, s, off, len).await
            }
            (Policy::Ec { .. }, Want::Range { offset, len }) => Err(StreamError::Unreadable {
                extent: e.id,
                offset,
                len,
                why: format!("extent {} is {}: read it by slice", e.id, e.policy),
            }),
        }
    }

    /// Tries the replicas in turn, starting from one chosen by offset (spreading reads
    /// of one extent over its copies), copies known to be bad last.
    async fn read_replicas(
        &self,
        e: &ExtentInfo,
        offset: u64,
        len: u32,
        crc: Option<u32>,
    ) -> Result<Bytes, StreamError> {
        let n = e.replicas.len();
        let first = (offset / READ_SPREAD_BYTES + e.id.0) as usize % n.max(1);
        let mut order: Vec<_> = (0..n).map(|i| e.replicas[(first + i) % n]).collect();
        {
            let mut suspects = self.suspects.lock();
            suspects.retain(|_, at| at.elapsed() < SUSPECT_FOR);
            order.sort_by_key(|r| (e.bad.contains(&r.node), suspects.contains_key(&r.node)));
        }
        let mut why = Vec::new();
        for r in order {
            match self.read_copy(e.id, r.node, offset, len, crc).await {
                Ok(b) => {
                    self.suspects.lock().remove(&r.node);
                    return Ok(b);
                }
                Err(w) => {
                    if matches!(w, ReplicaFailure::Timeout { .. } | ReplicaFailure::Connect { .. }) {
                        self.suspects.lock().insert(r.node, std::time::Instant::now());
                    }
                    why.push(w.to_string())
                }
            }
        }
        Err(StreamError::Unreadable { extent: e.id, offset, len, why: why.join("; ") })
    }

    /// Reads `len` bytes at `offset` of `node`'s copy (or shard) of `extent`. Bytes of
    /// the wrong length, that fail `crc`, or that the datanode found corrupt, are
    /// reported as a bad copy; every failure comes back as the reason.
    async fn read_copy(
        &self,
        extent: ExtentId,
        node: NodeId,
        offset: u64,
        len: u32,
        crc: Option<u32>,
    ) -> Result<Bytes, ReplicaFailure> {
        let c = self.conn(node).await?;
        let why = match within(node, self.config.replica_timeout, c.read(extent, offset, len)).await {
            Ok(b) if b.len() == len as usize && crc.is_none_or(|c| proto::crc32c(&b) == c) => return Ok(b),
            Ok(b) if b.len() != len as usize => Corruption::Length { got: b.len(), want: len },
            Ok(_) => Corruption::Crc { offset, len },
            Err(ReplicaFailure::Refused {
                error: ClientError::Extent(e @ ExtentError::ChecksumMismatch { .. }),
                ..
            }) => Corruption::Stored(e),
            Err(failure) => return Err(failure),
        };
        tracing::warn!("extent {extent} on datanode {node}: {why}");
        self.report_bad(extent, node, why.clone());
        Err(ReplicaFailure::Corrupt { node, why })
    }

    /// A whole EC slice. The data shards holding its bytes are read first; if one fails,
    /// or they are not all in within `ec_hedge`, the other shards are read too, and the
    /// slice is decoded from the first K that arrive (a slow shard is not waited for).
    /// Whatever comes back must match the slice's CRC: when the shards present do not
    /// give the right bytes together, each is left out in turn (one shard gone bad
    /// silently is found and reported). Fewer than K good shards is `Unreadable`.
    async fn read_stripe(&self, e: &ExtentInfo, k: usize, s: Slice) -> Result<Bytes, StreamError> {
        let n = e.replicas.len();
        let sl = shard_len(s.len as usize, k) as u64;
        // A short slice leaves the last data shards all padding: they are read only to decode.
        let holding = (s.len as u64).div_ceil(sl) as usize;
        let read = |i: usize| {
            let r = self.read_copy(e.id, e.replicas[i].node, s.offset, sl as u32, None);
            async move { (i, r.await) }
        };
        let mut pending: FuturesUnordered<_> = (0..holding).map(read).collect();
        let mut asked = holding;
        let hedge = tokio::time::sleep(self.config.ec_hedge);
        tokio::pin!(hedge);
        let mut shards: Vec<Option<Bytes>> = vec![None; n];
        let mut why = Vec::new();
        let mut tried_with = 0; // shards present at the last failed decode
        let mut tried_direct = false;
        let codec = self.codec(k, n - k)?;
        loop {
            let mut widen = false;
            tokio::select! {
                got = pending.next(), if !pending.is_empty() => {
                    let (i, r) = got.expect("not empty");
                    match r {
                        Ok(b) => shards[i] = Some(b),
                        Err(w) => {
                            why.push(format!("shard {i}: {w}"));
                            widen = true;
                        }
                    }
                }
                _ = &mut hedge, if asked < n => {
                    why.push(format!("data shards not all in within {:?}", self.config.ec_hedge));
                    widen = true;
                }
                else => {}
            }
            let present = shards.iter().flatten().count();
            // The data shards holding the bytes, all in (also after widening: a slow one
            // may arrive while others are dead): joined, no decoding needed.
            if !tried_direct && shards[..holding].iter().all(Option::is_some) {
                tried_direct = true;
                let joined = join_data(shards[..holding].iter().flatten(), s.len as usize);
                if proto::crc32c(&joined) == s.crc {
                    return Ok(joined);
                }
                why.push("the data shards do not match the slice's CRC".into());
                widen = true;
                tried_with = present;
            } else if asked > holding && present >= k && present > tried_with {
                match decode(codec.as_ref(), k, &shards, None, s) {
                    Ok(b) => return Ok(b),
                    Err(w) => why.push(w),
                }
                tried_with = present;
            }
            if widen && asked < n {
                pending.extend((asked..n).map(read));
                asked = n;
            }
            if pending.is_empty() && asked == n {
                break;
            }
        }
        // Every shard answered and no decode of all of them gave the slice: leave each
        // out in turn.
        let present: Vec<usize> = (0..n).filter(|&i| shards[i].is_some()).collect();
        if present.len() < k {
            why.push(format!("only {} good shards, {k} needed", present.len()));
        } else if present.len() > k {
            for &skip in &present {
                if let Ok(b) = decode(codec.as_ref(), k, &shards, Some(skip), s) {
                    let node = e.replicas[skip].node;
                    self.report_bad(e.id, node, Corruption::Disagrees { shard: skip, offset: s.offset, len: sl });
                    return Ok(b);
                }
            }
            why.push("no K of the shards read give bytes matching the slice's CRC".into());
        }
        Err(StreamError::Unreadable {
            extent: e.id,
            offset: s.offset,
            len: s.len,
            why: format!("ec:{k}+{}: {}", n - k, why.join("; ")),
        })
    }

    /// Part of an EC slice, from the data shards that hold it; the whole slice, decoded,
    /// when one of them fails.
    async fn read_stripe_part(
        &self,
        e: &ExtentInfo,
        k: usize,
        s: Slice,
        off: u64,
        len: u64,
    ) -> Result<Bytes, StreamError> {
        let sl = shard_len(s.len as usize, k) as u64;
        let reads = data_pieces(sl, off, len)
            .map(|(i, at, n)| self.read_copy(e.id, e.replicas[i].node, s.offset + at, n as u32, None));
        let got = match tokio::time::timeout(self.config.ec_hedge, crate::join_all(reads)).await {
            Ok(all) => all.into_iter().collect::<Result<Vec<Bytes>, _>>().map_err(|f| f.to_string()),
            Err(_) => Err(format!("not all in within {:?}", self.config.ec_hedge)),
        };
        match got {
            Ok(pieces) => Ok(join_data(pieces.iter(), len as usize)),
            Err(why) => {
                tracing::debug!(
                    "extent {}: reading {off}+{len} of a slice from its data shards: {why}; decoding",
                    e.id
                );
                let whole = self.read_stripe(e, k, s).await?;
                Ok(whole.slice(off as usize..(off + len) as usize))
            }
        }
    }

    /// The decoder for `ec:k+m`, shared by every read of this client.
    fn codec(&self, k: usize, m: usize) -> Result<Arc<Simd>, StreamError> {
        let mut codecs = self.codecs.lock();
        if let Some(c) = codecs.get(&(k, m)) {
            return Ok(c.clone());
        }
        let policy = Policy::Ec { k: k as u8, m: m as u8 };
        let c = Arc::new(Simd::new(k, m).map_err(|_| StreamError::Unsupported(policy))?);
        codecs.insert((k, m), c.clone());
        Ok(c)
    }

    /// Tells the metanode, in the background, that `node`'s copy of `extent` is bad, and
    /// remembers it so later reads try that copy last.
    fn report_bad(&self, extent: ExtentId, node: NodeId, why: Corruption) {
        if let Some(e) = self.extents.lock().get_mut(&extent) {
            if !e.bad.contains(&node) {
                e.bad.push(node);
            }
        }
        let meta = self.meta.clone();
        tokio::spawn(async move {
            if let Err(err) = meta.report_bad(extent, node, &why.to_string()).await {
                tracing::warn!("could not report datanode {node}'s bad copy of extent {extent}: {err}");
            }
        });
    }
}
