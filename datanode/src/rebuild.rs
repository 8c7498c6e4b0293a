//! Repair on the datanode: a copy of a sealed extent made here from the copies on
//! other datanodes (`Request::Rebuild`, sent by the metanode's repair), datanode to
//! datanode. A replica is copied record by record; an erasure-coded shard is decoded
//! stripe by stripe from K other shards (and, for a parity shard, encoded again). Every
//! record keeps its source's boundaries, so that the new copy can itself serve a later
//! rebuild; every byte read is checked against its source's record CRC32C, and every
//! append again against the CRC it carries; the copy is sealed at the asked length,
//! durably, and its record index is checked against what was appended before the
//! answer. A copy that fails on the way is deleted here: the metanode then drops the
//! repair.
//!
//! The new copy is not read back here: its bytes were checked in memory on their way to
//! the device, as every client append's are, and what the device kept is scrub's to
//! read. The copy is made due for scrub at once (`ExtentStore::verify_soon`), so it is
//! read back at scrub's pace instead of doubling the device reads that repair waits on
//! (on a disk that both the source and the target share, a read-back was a third of a
//! rebuild's time). A copy that an earlier attempt sealed is read back whole, since no
//! check of its bytes is at hand.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::ec::{Codec, Simd};
use client::DataNodeClient;
use futures::StreamExt;
use proto::{ExtentError, ExtentId, ExtentStat, Rebuild, RecordStat, READ_BYTES_MAX};
use tokio::sync::oneshot;

use crate::extent::{Append, ExtentStore, Payload};
use crate::limits::{
    REBUILD_CONNECT_TIMEOUT, REBUILD_READS_AHEAD, REBUILD_READ_TIMEOUT, REBUILD_SPANS_IN_FLIGHT, REBUILD_SPAN_BYTES,
};
use crate::pace::Pacer;

/// Where a rebuild's time went.
#[derive(Default)]
struct Times {
    read: Duration,
    paced: Duration,
    /// Waiting for appends to be durable (beyond what reading overlapped).
    write: Duration,
    /// Checking the sealed copy's records.
    check: Duration,
}

/// A source copy: its slot, connection and records.
struct Source {
    slot: u8,
    addr: String,
    conn: DataNodeClient,
    records: Vec<RecordStat>,
}

fn failed(msg: impl Into<String>) -> ExtentError {
    ExtentError::Failed(msg.into())
}

pub async fn rebuild(store: &Arc<ExtentStore>, r: Rebuild, pacer: &Pacer) -> Result<ExtentStat, ExtentError> {
    // An earlier attempt: done if sealed at the asked length (read back again), else
    // started over.
    if let Ok(st) = store.stat(r.extent) {
        if st.sealed && st.length == r.length {
            read_back(store, r.extent, r.length).await?;
            return Ok(st);
        }
        store.delete(r.extent).await?;
    }
    let sources = connect(&r).await;
    let need = if r.k == 0 { 1 } else { r.k as usize };
    if sources.len() < need {
        return Err(failed(format!(
            "rebuilding extent {}: {} of the {} sources answered, {need} needed",
            r.extent,
            sources.len(),
            r.sources.len()
        )));
    }
    store.create(r.extent, r.epoch, r.device).await?;
    let t = Instant::now();
    let mut times = Times::default();
    let made = match copy(store, &r, &sources, pacer, &mut times).await {
        Ok(appended) => match store.seal(r.extent, r.length).await {
            Ok(()) => {
                let b = Instant::now();
                let checked = check_index(store, r.extent, &appended);
                times.check = b.elapsed();
                checked
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        tracing::warn!("rebuilding extent {} failed, dropping the partial copy: {e}", r.extent);
        let _ = store.delete(r.extent).await;
        return Err(e);
    }
    if let Err(e) = store.verify_soon(r.extent).await {
        tracing::warn!(
            "rebuilt extent {}: recording it due for scrub: {e}; scrub reads it in this run, but not at once after a \
             restart",
            r.extent
        );
    }
    tracing::info!(
        "rebuilt extent {} ({} bytes, slot {}) from {} sources in {:.0?}: reading {:.0?}, paced {:.0?}, writing {:.0?}, \
         checking {:.0?}",
        r.extent,
        r.length,
        r.slot,
        sources.len(),
        t.elapsed(),
        times.read,
        times.paced,
        times.write,
        times.check
    );
    store.stat(r.extent)
}

/// Connects to every source and reads its records; a source that does not answer, or
/// whose records do not end at `length`, is left out.
async fn connect(r: &Rebuild) -> Vec<Source> {
    let mut out = Vec::new();
    for (slot, node, addr) in &r.sources {
        let conn = match tokio::time::timeout(REBUILD_CONNECT_TIMEOUT, DataNodeClient::connect_node(addr, *node)).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!("rebuild of {}: source {addr}: {e}", r.extent);
                continue;
            }
            Err(_) => continue,
        };
        let records = match tokio::time::timeout(REBUILD_READ_TIMEOUT, conn.records(r.extent)).await {
            Ok(Ok(v)) => v,
            _ => continue,
        };
        if records.last().map_or(0, |x| x.offset + x.len as u64) < r.length {
            tracing::warn!("rebuild of {}: source {addr} holds less than {} bytes", r.extent, r.length);
            continue;
        }
        out.push(Source { slot: *slot, addr: addr.clone(), conn, records });
    }
    out
}

/// `records` in spans of whole records, each at most `REBUILD_SPAN_BYTES` unless one
/// record is longer.
fn spans(records: &[RecordStat]) -> Vec<&[RecordStat]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let first = records[start].offset;
        let mut end = start + 1;
        while end < records.len() && records[end].offset + records[end].len as u64 - first <= REBUILD_SPAN_BYTES {
            end += 1;
        }
        out.push(&records[start..end]);
        start = end;
    }
    out
}

/// Reads `[offset, offset+len)` of the extent from `s`, checked against its records.
async fn read_checked(s: &Source, extent: ExtentId, span: &[RecordStat]) -> Result<Bytes, ExtentError> {
    let (offset, end) = (span[0].offset, span[span.len() - 1].offset + span[span.len() - 1].len as u64);
    let len =
        u32::try_from(end - offset).ok().filter(|&l| l <= READ_BYTES_MAX).ok_or_else(|| failed("span too long"))?;
    let data = tokio::time::timeout(REBUILD_READ_TIMEOUT, s.conn.read(extent, offset, len))
        .await
        .map_err(|_| failed(format!("source {}: no answer within {REBUILD_READ_TIMEOUT:?}", s.addr)))?
        .map_err(|e| failed(format!("source {}: {e}", s.addr)))?;
    // The source's own record boundaries and CRCs over the same range.
    let first = s.records.partition_point(|x| x.offset < offset);
    for x in s.records[first..].iter().take_while(|x| x.offset + x.len as u64 <= end) {
        let at = (x.offset - offset) as usize;
        if proto::crc32c(&data[at..at + x.len as usize]) != x.crc {
            return Err(failed(format!("source {}: record at {} fails its CRC", s.addr, x.offset)));
        }
    }
    Ok(data)
}

/// Reads (replica) or decodes (EC) one span's records of the new copy, each with its
/// CRC32C, after taking its bytes from the pacer. Returns them with the time spent
/// pacing and reading.
async fn fetch(
    r: &Rebuild,
    sources: &[Source],
    codec: Option<&Simd>,
    pacer: &Pacer,
    span: &[RecordStat],
) -> Result<(Vec<(Bytes, u32)>, Duration, Duration), ExtentError> {
    let (first, last) = (span[0].offset, span[span.len() - 1].offset + span[span.len() - 1].len as u64);
    let t = Instant::now();
    pacer.take(last - first).await;
    let paced = t.elapsed();
    let t = Instant::now();
    let records = match codec {
        None => {
            let mut last = None;
            let mut got = None;
            for s in sources {
                match read_checked(s, r.extent, span).await {
                    Ok(d) => {
                        got = Some(d);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let data = got.ok_or_else(|| last.unwrap_or_else(|| failed("no source")))?;
            let base = span[0].offset;
            // Each record was just checked against the source's CRC: it is the record's.
            span.iter()
                .map(|x| (data.slice((x.offset - base) as usize..(x.offset - base) as usize + x.len as usize), x.crc))
                .collect()
        }
        Some(codec) => decode(codec, r, sources, span)
            .await?
            .into_iter()
            .map(|b| {
                let crc = proto::crc32c(&b);
                (b, crc)
            })
            .collect(),
    };
    Ok((records, paced, t.elapsed()))
}

/// Checks that sealed `extent` holds exactly the records `appended` (offsets, lengths
/// and CRCs), no fewer and no more.
fn check_index(store: &ExtentStore, extent: ExtentId, appended: &[RecordStat]) -> Result<(), ExtentError> {
    same_records(extent, &store.records(extent)?, appended)
}

fn same_records(extent: ExtentId, kept: &[RecordStat], appended: &[RecordStat]) -> Result<(), ExtentError> {
    if kept == appended {
        return Ok(());
    }
    let at = kept.iter().zip(appended).position(|(a, b)| a != b).unwrap_or(kept.len().min(appended.len()));
    Err(failed(format!(
        "extent {extent}: the sealed copy's records differ from those appended from record {at} on ({} kept, {} appended)",
        kept.len(),
        appended.len()
    )))
}

/// Copies the records below the sealed length span by span: up to
/// `REBUILD_READS_AHEAD` spans are read (or decoded) at once, and each span's appends
/// are submitted while up to `REBUILD_SPANS_IN_FLIGHT` earlier spans are still being
/// written (the datanode's group commit takes them together); the seal that follows
/// waits until all are durable. Returns the records appended, with their CRCs.
async fn copy(
    store: &Arc<ExtentStore>,
    r: &Rebuild,
    sources: &[Source],
    pacer: &Pacer,
    times: &mut Times,
) -> Result<Vec<RecordStat>, ExtentError> {
    let codec = match r.k {
        0 => None,
        k => Some(Simd::new(k as usize, r.m as usize).map_err(|e| failed(e.to_string()))?),
    };
    // The records below the sealed length end exactly there (a seal is at an append
    // boundary on every copy).
    let layout = &sources[0].records;
    let upto = layout.partition_point(|x| x.offset + x.len as u64 <= r.length);
    if r.length > 0 && layout[..upto].last().map(|x| x.offset + x.len as u64) != Some(r.length) {
        return Err(failed(format!("no record of extent {} ends at its sealed length {}", r.extent, r.length)));
    }
    let mut writing: VecDeque<Acks> = VecDeque::new();
    let spans = spans(&layout[..upto]);
    let codec = codec.as_ref();
    // (Made first, polled by `buffered`: a closure in the stream would not be Send
    // across the awaits below.)
    let fetches: Vec<_> = spans.iter().map(|&span| fetch(r, sources, codec, pacer, span)).collect();
    let mut reads = futures::stream::iter(fetches).buffered(REBUILD_READS_AHEAD);
    let mut appended = Vec::with_capacity(upto);
    for span in spans.iter().copied() {
        let (records, paced, read) = reads.next().await.expect("one read per span")?;
        times.paced += paced;
        times.read += read;
        appended.extend(span.iter().zip(&records).map(|(x, (_, crc))| RecordStat { crc: *crc, ..*x }));
        writing.push_back(submit_all(store, r, span, records));
        while writing.len() > REBUILD_SPANS_IN_FLIGHT {
            let t = Instant::now();
            wait(writing.pop_front().expect("non-empty")).await?;
            times.write += t.elapsed();
        }
    }
    let t = Instant::now();
    for acks in writing {
        wait(acks).await?;
    }
    times.write += t.elapsed();
    Ok(appended)
}

/// The shard `r.slot` of each stripe of `span`, from K sources' shards.
async fn decode(codec: &Simd, r: &Rebuild, sources: &[Source], span: &[RecordStat]) -> Result<Vec<Bytes>, ExtentError> {
    let (k, m) = (r.k as usize, r.m as usize);
    let mut got: Vec<(u8, Bytes)> = Vec::new();
    let mut last = None;
    for s in sources {
        if got.len() == k {
            break;
        }
        match read_checked(s, r.extent, span).await {
            Ok(d) => got.push((s.slot, d)),
            Err(e) => last = Some(e),
        }
    }
    if got.len() < k {
        return Err(last.unwrap_or_else(|| failed(format!("{} of {k} shards readable", got.len()))));
    }
    let base = span[0].offset;
    let mut out = Vec::with_capacity(span.len());
    for x in span {
        let (a, b) = ((x.offset - base) as usize, (x.offset - base) as usize + x.len as usize);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
        for (slot, d) in &got {
            shards[*slot as usize] = Some(d[a..b].to_vec());
        }
        codec.reconstruct(&mut shards).map_err(|e| failed(e.to_string()))?;
        let data: Vec<&[u8]> = shards[..k].iter().map(|s| s.as_deref().expect("reconstructed")).collect();
        let slot = r.slot as usize;
        let mine = if slot < k {
            shards[slot].clone().expect("reconstructed")
        } else {
            let parity = codec.encode(&data).map_err(|e| failed(e.to_string()))?;
            // The parity shards read must be what the data encodes to: a check of the inputs.
            for (s, d) in &got {
                let s = *s as usize;
                if s >= k && parity[s - k] != d[a..b] {
                    return Err(failed(format!("stripe at {}: shard {s} disagrees with the others", x.offset)));
                }
            }
            parity[slot - k].clone()
        };
        out.push(Bytes::from(mine));
    }
    Ok(out)
}

/// The acknowledgements of one span's appends.
type Acks = Vec<oneshot::Receiver<Result<u64, ExtentError>>>;

/// Submits one append per stripe (or source record), each with its CRC32C.
fn submit_all(store: &Arc<ExtentStore>, r: &Rebuild, span: &[RecordStat], records: Vec<(Bytes, u32)>) -> Acks {
    let mut acks = Vec::with_capacity(records.len());
    for (x, (data, crc)) in span.iter().zip(records) {
        let (tx, rx) = oneshot::channel();
        let a =
            Append { extent: r.extent, expected_offset: x.offset, epoch: r.epoch, crc, payload: Payload::Bytes(data) };
        store.submit_append(
            a,
            Box::new(move |res| {
                let _ = tx.send(res);
            }),
        );
        acks.push(rx);
    }
    acks
}

/// Waits until every append of a span is durable.
async fn wait(acks: Acks) -> Result<(), ExtentError> {
    for rx in acks {
        rx.await.map_err(|_| failed("append dropped"))??;
    }
    Ok(())
}

/// Reads the whole copy back (every record's CRC is checked by the read).
async fn read_back(store: &Arc<ExtentStore>, extent: ExtentId, length: u64) -> Result<(), ExtentError> {
    let mut off = 0;
    while off < length {
        let n = (length - off).min(REBUILD_SPAN_BYTES) as u32;
        store.read(extent, off, n).await?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_copy_must_hold_exactly_the_records_appended() {
        let r = |offset, len, crc| RecordStat { offset, len, crc };
        let appended = [r(0, 10, 1), r(10, 5, 2), r(15, 7, 3)];
        let e = ExtentId(9);
        assert!(same_records(e, &appended, &appended).is_ok());
        let other_crc = [r(0, 10, 1), r(10, 5, 4), r(15, 7, 3)];
        let err = same_records(e, &other_crc, &appended).unwrap_err().to_string();
        assert!(err.contains("from record 1 on"), "{err}");
        let short = &appended[..2];
        let err = same_records(e, short, &appended).unwrap_err().to_string();
        assert!(err.contains("from record 2 on (2 kept, 3 appended)"), "{err}");
        let moved = [r(0, 10, 1), r(11, 5, 2), r(16, 7, 3)];
        assert!(same_records(e, &moved, &appended).is_err());
        assert!(same_records(e, &[], &[]).is_ok());
    }
}
