//! `scripts/bench.sh ec`: encode and decode throughput per core of each Reed-Solomon
//! codec for 4+2, 6+3 and 8+4 (1 MiB of data per stripe), against memcpy bandwidth
//! measured in the same run on one core. Decode rebuilds M lost data shards (the worst
//! case). GB/s counts data bytes. Target: encode >= 5 GB/s a core.
//!
//! Env: STRATA_BENCH_SECS (per case, default 2).

#[path = "support/baseline.rs"]
mod baseline;

use std::time::Instant;

use baseline::{emit, memcpy_gbps};
use client::ec::{shard_len, Codec, Matrix, Simd};
use serde_json::json;

const STRIPE: usize = 1 << 20;

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mem = memcpy_gbps(secs);
    emit(json!({"suite": "ec", "case": "memcpy", "value": mem, "unit": "GB/s"}));
    for (k, m) in [(4usize, 2usize), (6, 3), (8, 4)] {
        let sl = shard_len(STRIPE, k);
        let data: Vec<u8> = (0..sl * k).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
        let shards: Vec<&[u8]> = data.chunks(sl).collect();
        let codecs: Vec<(&str, Box<dyn Codec>)> = vec![
            ("reed-solomon-erasure", Box::new(Matrix::new(k, m).unwrap())),
            ("reed-solomon-simd", Box::new(Simd::new(k, m).unwrap())),
        ];
        for (name, c) in codecs {
            let t = Instant::now();
            let mut n = 0u64;
            let mut parity = Vec::new();
            while t.elapsed().as_secs_f64() < secs {
                parity = c.encode(&shards).unwrap();
                n += (sl * k) as u64;
            }
            let enc = n as f64 / 1e9 / t.elapsed().as_secs_f64();
            emit(json!({"suite": "ec", "case": format!("encode_{k}+{m}_{name}"), "value": enc, "unit": "GB/s",
                "baseline": "memcpy", "baseline_value": mem, "ratio": enc / mem, "target_gbps": 5.0}));
            let full: Vec<Option<Vec<u8>>> =
                shards.iter().map(|s| Some(s.to_vec())).chain(parity.iter().cloned().map(Some)).collect();
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < secs {
                let mut s = full.clone();
                for x in s.iter_mut().take(m) {
                    *x = None;
                }
                c.reconstruct(&mut s).unwrap();
                assert_eq!(s[0].as_deref(), Some(shards[0]));
                n += (sl * k) as u64;
            }
            let dec = n as f64 / 1e9 / t.elapsed().as_secs_f64();
            emit(json!({"suite": "ec", "case": format!("decode_{k}+{m}_{name}"), "value": dec, "unit": "GB/s",
                "baseline": "memcpy", "baseline_value": mem, "ratio": dec / mem}));
        }
    }
}
