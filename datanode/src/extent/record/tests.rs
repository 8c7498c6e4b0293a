use proptest::prelude::*;

use std::sync::Arc;

use super::*;

const BLOB: BlobId = (3 << 32) | 9;

/// An in-memory blob and the model of what was written to it.
struct Blob {
    bytes: Vec<u8>,
    phys: u64,
    length: u64,
    /// (logical, payload) of every record written, in order.
    written: Vec<(u64, Vec<u8>)>,
    /// Start of each batch.
    batches: Vec<u64>,
}

impl Blob {
    fn new() -> Blob {
        Blob { bytes: vec![0; 2 << 20], phys: 0, length: 0, written: Vec::new(), batches: Vec::new() }
    }

    fn write_batch(&mut self, incarnation: u32, payloads: &[Vec<u8>]) {
        self.write(incarnation, payloads, false)
    }

    /// Writes a batch in the packed or the aligned layout, as the device writer would.
    fn write(&mut self, incarnation: u32, payloads: &[Vec<u8>], aligned: bool) {
        let sums: Vec<(u32, Option<Arc<[u32]>>)> = payloads.iter().map(|p| checksums(p)).collect();
        let recs: Vec<Pending<'_>> = payloads
            .iter()
            .zip(&sums)
            .map(|(p, (crc, chunks))| Pending { payload: p, crc: *crc, chunks: chunks.as_ref() })
            .collect();
        let h = BatchHeader {
            blob: BLOB,
            incarnation,
            n_records: recs.len() as u32,
            logical_start: self.length,
            payload_bytes: payloads.iter().map(|p| p.len() as u64).sum(),
            epoch: Epoch(5),
            aligned,
        };
        let pool = &mut crate::align::BufPool::default();
        let (img, locs) = if aligned {
            let (head, locs) = encode(pool, &h, self.phys, &recs);
            let mut img = head.to_vec();
            for p in payloads {
                let mut padded = p.clone();
                padded.resize(align_up(p.len() as u64, IO_UNIT_BYTES) as usize, 0);
                img.extend_from_slice(&padded);
            }
            (img, locs)
        } else {
            let (img, locs) = encode(pool, &h, self.phys, &recs);
            (img.to_vec(), locs)
        };
        self.bytes[self.phys as usize..self.phys as usize + img.len()].copy_from_slice(&img);
        for (l, p) in locs.iter().zip(payloads) {
            assert_eq!(&self.bytes[l.phys as usize..l.phys as usize + p.len()], &p[..]);
            self.written.push((l.logical, p.clone()));
        }
        self.batches.push(self.phys);
        self.phys += img.len() as u64;
        self.length += h.payload_bytes;
    }

    fn scan(&self, sealed: Option<u64>) -> Scan {
        self.scan_bytes(&self.bytes, sealed)
    }

    /// Scans `bytes` (this blob's image, damaged) instead.
    fn scan_bytes(&self, bytes: &[u8], sealed: Option<u64>) -> Scan {
        scan(
            |off, buf| {
                let n = buf.len();
                buf.copy_from_slice(&bytes[off as usize..off as usize + n]);
                Ok(())
            },
            BLOB,
            bytes.len() as u64,
            sealed,
        )
        .unwrap()
    }

    fn clone_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

fn p(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8) ^ seed).collect()
}

#[test]
fn a_chain_of_batches_is_recovered_whole() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(10, 1), p(5000, 2)]);
    b.write_batch(1, &[p(1, 3)]);
    b.write_batch(2, &[p(4096, 4), p(7, 5), p(3, 6)]);
    let s = b.scan(None);
    assert_eq!(s.length, b.length);
    assert_eq!(s.phys_end, b.phys);
    assert_eq!(s.records.len(), 6);
    assert!(s.corrupt.is_empty());
    assert_eq!(s.incarnation_max, 2);
    assert_eq!(s.epoch_max, Epoch(5));
}

#[test]
fn aligned_batches_put_every_payload_on_an_io_unit_and_recover_like_packed_ones() {
    let mut b = Blob::new();
    b.write(1, &[p(70_000, 1), p(4096, 2), p(5000, 3)], true);
    b.write(1, &[p(10, 4)], false);
    b.write(1, &[p(65_536, 5)], true);
    let s = b.scan(None);
    assert_eq!((s.length, s.phys_end, s.records.len()), (b.length, b.phys, 5));
    assert!(s.corrupt.is_empty());
    for r in [&s.records[0], &s.records[1], &s.records[2], &s.records[4]] {
        assert_eq!(r.phys % IO_UNIT_BYTES, 0, "{r:?}");
    }
    // A torn final aligned batch is dropped whole too.
    let last = *b.batches.last().unwrap();
    b.bytes[last as usize + 4096 + 30_000] ^= 1;
    let s = b.scan(None);
    assert_eq!((s.length, s.phys_end, s.dropped_bytes), (b.length - 65_536, last, 65_536));
}

#[test]
fn checksums_combine_chunk_crcs_into_the_whole_payload_crc() {
    for len in [1usize, 65_535, 65_536, 65_537, 200_000, 1 << 20] {
        let payload = p(len, 9);
        let (whole, chunks) = checksums(&payload);
        assert_eq!(whole, crc32c::crc32c(&payload), "len {len}");
        match chunks {
            None => assert!(len as u64 <= RECORD_CHUNK_BYTES),
            Some(c) => {
                assert_eq!(c.len() as u64, len.div_ceil(RECORD_CHUNK_BYTES as usize) as u64);
                assert_eq!(c[c.len() - 1], crc32c::crc32c(&payload[(c.len() - 1) * RECORD_CHUNK_BYTES as usize..]));
            }
        }
    }
}

#[test]
fn chunked_records_keep_their_chunk_crcs_through_recovery_in_both_layouts() {
    let mut b = Blob::new();
    b.write(1, &[p(200_000, 1), p(10, 2)], false);
    b.write(1, &[p(300_000, 3)], true);
    let s = b.scan(None);
    assert_eq!((s.length, s.records.len()), (b.length, 3));
    assert!(s.corrupt.is_empty());
    assert_eq!(s.records[0].chunks.as_deref(), checksums(&p(200_000, 1)).1.as_deref());
    assert!(s.records[1].chunks.is_none());
    assert_eq!(s.records[2].chunks.as_ref().map(|c| c.len()), Some(5));
    // A flipped byte in one chunk of a middle record flags that record as corrupt.
    let at = s.records[0].phys as usize + 2 * RECORD_CHUNK_BYTES as usize + 7;
    b.bytes[at] ^= 1;
    assert_eq!(b.scan(None).corrupt, vec![0]);
}

#[test]
fn a_torn_final_batch_is_dropped_whole() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(100, 1)]);
    b.write_batch(1, &[p(100, 2), p(6000, 3)]);
    let last = b.batches[1];
    b.bytes[last as usize + 4500] ^= 0xFF; // inside the second record's payload
    let s = b.scan(None);
    assert_eq!((s.length, s.records.len(), s.phys_end, s.dropped_bytes), (100, 1, last, 6100));
}

#[test]
fn corruption_before_the_last_batch_or_in_a_sealed_extent_is_kept_and_flagged() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(100, 1)]);
    b.write_batch(1, &[p(100, 2)]);
    b.bytes[80] ^= 1; // first batch's payload
    let s = b.scan(None);
    assert_eq!((s.length, s.corrupt.clone()), (200, vec![0]));
    let last = b.batches[1] as usize;
    b.bytes[last + 80] ^= 1; // and the last one's
    let s = b.scan(Some(200));
    assert_eq!((s.length, s.corrupt.clone()), (200, vec![0, 1]), "a sealed extent keeps every record");
}

#[test]
fn stale_batches_of_an_older_incarnation_never_join_the_chain() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(100, 1)]);
    let torn_at = b.phys;
    b.write_batch(1, &[p(9000, 2)]);
    b.bytes[torn_at as usize + 200] ^= 0xFF; // the final write tore
    let s = b.scan(None);
    assert_eq!((s.length, s.phys_end), (100, torn_at));
    // Incarnation 2 writes a short batch over the torn one.
    b.phys = torn_at;
    b.length = 100;
    b.written.truncate(1);
    b.write_batch(2, &[p(10, 4)]);
    // Right where the chain continues lies a leftover batch of incarnation 1 that
    // happens to carry the expected logical offset: it must be refused.
    let mut stale = Blob { bytes: b.bytes.clone(), phys: b.phys, length: b.length, written: vec![], batches: vec![] };
    stale.write_batch(1, &[p(20, 5)]);
    let s = stale.scan(None);
    assert_eq!((s.length, s.records.len(), s.phys_end), (110, 2, b.phys));
    // The same batch written by the current incarnation does continue the chain.
    let mut fresh = Blob { bytes: b.bytes.clone(), phys: b.phys, length: b.length, written: vec![], batches: vec![] };
    fresh.write_batch(2, &[p(20, 5)]);
    assert_eq!(fresh.scan(None).length, 130);
}

#[test]
fn a_sealed_length_cuts_the_index() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(10, 1), p(20, 2)]);
    b.write_batch(1, &[p(30, 3)]);
    let s = b.scan(Some(30));
    assert_eq!((s.length, s.records.len()), (30, 2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever garbage overwrites the blob from some point on, recovery returns a
    /// prefix of what was written, byte for byte, and every record it returns is intact.
    #[test]
    fn recovery_returns_an_intact_prefix(
        batches in proptest::collection::vec((proptest::collection::vec(1usize..9000, 1..4), any::<bool>()), 1..8),
        cut in 0usize..150_000,
        garbage in proptest::collection::vec(any::<u8>(), 0..6000),
    ) {
        let mut b = Blob::new();
        for (i, (lens, aligned)) in batches.iter().enumerate() {
            let ps: Vec<Vec<u8>> = lens.iter().enumerate().map(|(j, &l)| p(l, (i * 7 + j) as u8)).collect();
            b.write(1, &ps, *aligned);
        }
        let end = (cut + garbage.len()).min(b.bytes.len());
        b.bytes[cut..end].copy_from_slice(&garbage[..end - cut]);
        let s = b.scan(None);
        prop_assert!(s.length <= b.length);
        prop_assert!(s.records.len() <= b.written.len());
        for (i, r) in s.records.iter().enumerate() {
            let (logical, payload) = &b.written[i];
            prop_assert_eq!(r.logical, *logical);
            let stored = &b.bytes[r.phys as usize..r.phys as usize + r.len as usize];
            if !s.corrupt.contains(&i) {
                prop_assert_eq!(stored, &payload[..]);
            }
        }
        // A record is flagged corrupt only where the garbage actually landed.
        for &c in &s.corrupt {
            let r = &s.records[c];
            prop_assert!((r.phys as usize) < end && r.phys as usize + r.len as usize > cut);
        }
        // Nothing lost is never called cut. When records were lost and a batch two or
        // more past the first lost record's batch survives whole after the garbage, the
        // chain is known to be cut.
        if s.length == b.length {
            prop_assert!(!s.cut);
        } else {
            let counts: Vec<usize> = batches.iter().map(|(lens, _)| lens.len()).collect();
            let first_lost = s.records.len();
            let mut j = 0;
            let mut seen = counts[0];
            while seen <= first_lost {
                j += 1;
                seen += counts[j];
            }
            if b.batches.iter().skip(j + 2).any(|&start| start as usize >= end) {
                prop_assert!(s.cut, "batch {j} lost, a later intact one not noticed");
            }
        }
    }
}

#[test]
fn a_chain_stopped_by_a_damaged_header_is_cut_and_a_torn_end_is_not() {
    let mut b = Blob::new();
    b.write_batch(1, &[p(100, 1)]);
    b.write_batch(1, &[p(100, 2)]);
    b.write_batch(1, &[p(5000, 3)]);
    let intact = b.clone_bytes();
    assert!(!b.scan(None).cut);
    // A flipped byte in the middle batch's header, or its magic, or the whole header
    // block lost: the chain stops at 100 and the third batch shows it was cut.
    for at in [20usize, 0, 4000] {
        let mut d = intact.clone();
        let h = b.batches[1] as usize;
        if at == 4000 {
            d[h..h + 4096].fill(0);
        } else {
            d[h + at] ^= 0x10;
        }
        let s = b.scan_bytes(&d, None);
        assert_eq!((s.length, s.cut), (100, true), "damage at {at} of the header");
        // A sealed extent's chain is judged by its sealed length instead.
        assert!(!b.scan_bytes(&d, Some(5200)).cut);
    }
    // A torn final batch was never acknowledged: the chain ended, it was not cut.
    let mut d = intact;
    d[b.batches[2] as usize + 4500] ^= 1;
    let s = b.scan_bytes(&d, None);
    assert_eq!((s.length, s.cut), (200, false));
}
