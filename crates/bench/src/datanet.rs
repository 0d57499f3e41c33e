//! Ingest + validate throughput and near-duplicate cost as a Datanet grows.
//!
//! Not a test: run by `openledger datanet bench`. Prints a table and returns (and can write)
//! JSON. The baseline measured in the same run is keccak-256 over the same bytes (what the
//! store must do anyway), so the ratio survives a noisy machine.

use alloy_primitives::keccak256;
use openledger_datanet::formats::Format;
use openledger_datanet::validate::{RowIndex, ValidationConfig, signature, validate};
use serde::Serialize;
use std::time::Instant;

/// One row of the near-duplicate table.
#[derive(Clone, Debug, Serialize)]
pub struct NearDupPoint {
    /// Accepted rows in the index.
    pub index_rows: usize,
    /// Mean microseconds per near-duplicate query (signature + LSH lookup).
    pub query_us: f64,
    /// Mean microseconds per insert when the index was built.
    pub insert_us: f64,
}

/// Benchmark results.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Bytes ingested.
    pub bytes: usize,
    /// Rows ingested.
    pub rows: usize,
    /// Parse + validate, MB/s.
    pub validate_mb_s: f64,
    /// Parse + validate, rows/s.
    pub validate_rows_s: f64,
    /// keccak-256 over the same bytes, MB/s (baseline).
    pub keccak_mb_s: f64,
    /// validate / keccak throughput.
    pub ratio_to_keccak: f64,
    /// Near-duplicate cost by index size.
    pub near_dup: Vec<NearDupPoint>,
}

fn words(seed: u64, n: usize) -> String {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!("w{}", (x >> 33) % 50_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Synthetic JSONL of about `mb` MB: distinct rows of ~30 words.
pub fn synthetic_jsonl(mb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(mb * 1_000_000 + 1000);
    let mut i = 0u64;
    while out.len() < mb * 1_000_000 {
        out.extend_from_slice(format!("{{\"text\":\"{}\"}}\n", words(i, 30)).as_bytes());
        i += 1;
    }
    out
}

/// Runs the benchmark: `mb` MB through validation, near-dup queries at each index size.
pub fn run(mb: usize, sizes: &[usize], queries: usize) -> BenchReport {
    let data = synthetic_jsonl(mb);
    let cfg = ValidationConfig {
        max_bytes: u64::MAX,
        max_rows: usize::MAX,
        ..Default::default()
    };
    let t = Instant::now();
    let h = keccak256(&data);
    let keccak_s = t.elapsed().as_secs_f64().max(1e-9);
    let t = Instant::now();
    let report = validate(&data, &Format::Jsonl, &RowIndex::default(), &cfg);
    let validate_s = t.elapsed().as_secs_f64().max(1e-9);
    let rows = report.as_ref().map(|r| r.rows.len()).unwrap_or_default();
    let mbs = data.len() as f64 / 1e6;
    let mut near_dup = Vec::new();
    let mut index = RowIndex::default();
    let mut built = 0usize;
    let mut insert_total = 0.0;
    for &size in sizes {
        let t = Instant::now();
        while built < size {
            let text = words(1_000_000_000 + built as u64, 30);
            index.insert(keccak256(text.as_bytes()), signature(&text));
            built += 1;
        }
        insert_total += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut hits = 0usize;
        for q in 0..queries {
            let text = words(7_000_000_000 + q as u64, 30);
            if index.best_match(&signature(&text)) >= cfg.near_dup_threshold {
                hits += 1;
            }
        }
        let query_us = t.elapsed().as_secs_f64() * 1e6 / queries.max(1) as f64;
        std::hint::black_box(hits);
        near_dup.push(NearDupPoint {
            index_rows: size,
            query_us,
            insert_us: insert_total * 1e6 / built.max(1) as f64,
        });
    }
    std::hint::black_box(h);
    BenchReport {
        bytes: data.len(),
        rows,
        validate_mb_s: mbs / validate_s,
        validate_rows_s: rows as f64 / validate_s,
        keccak_mb_s: mbs / keccak_s,
        ratio_to_keccak: (mbs / validate_s) / (mbs / keccak_s),
        near_dup,
    }
}

impl BenchReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "ingest+validate {:.1} MB, {} rows: {:.1} MB/s, {:.0} rows/s (keccak baseline {:.1} MB/s, ratio {:.3})\n",
            self.bytes as f64 / 1e6,
            self.rows,
            self.validate_mb_s,
            self.validate_rows_s,
            self.keccak_mb_s,
            self.ratio_to_keccak
        );
        s.push_str("index rows | query µs | insert µs\n");
        for p in &self.near_dup {
            s.push_str(&format!(
                "{:>10} | {:>8.1} | {:>9.1}\n",
                p.index_rows, p.query_us, p.insert_us
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_bench_produces_consistent_numbers() {
        let r = super::run(1, &[100, 1000], 50);
        assert!(r.rows > 1000);
        assert!(r.validate_mb_s > 0.0 && r.keccak_mb_s > 0.0);
        assert_eq!(r.near_dup.len(), 2);
        assert!(r.table().contains("index rows"));
    }
}
