//! Prometheus metrics, written in the text exposition format (version 0.0.4) by hand: a few
//! counters, gauges and fixed-bucket histograms need no registry crate.

use parking_lot::Mutex;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    inner: Mutex<HistState>,
}

#[derive(Debug, Default, Clone)]
struct HistState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these bucket upper bounds (ascending); `+Inf` is implied.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            inner: Mutex::new(HistState {
                counts: vec![0; bounds.len()],
                ..Default::default()
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let mut s = self.inner.lock();
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.inner.lock().sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.inner.lock().count
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let s = self.inner.lock().clone();
        let sep = if labels.is_empty() { "" } else { "," };
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&s.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", s.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", s.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", s.count);
    }
}

/// Cache counters of one tier.
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Lookups served by this tier.
    pub hits: AtomicU64,
    /// Lookups this tier could not serve.
    pub misses: AtomicU64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: AtomicU64,
    /// Bytes currently held.
    pub bytes: AtomicU64,
    /// Entries currently held.
    pub entries: AtomicU64,
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by outcome: ok, client error, overloaded, server error.
    pub requests_ok: AtomicU64,
    /// Requests answered with a 4xx other than 429.
    pub requests_client_error: AtomicU64,
    /// Requests answered with 429.
    pub requests_rejected: AtomicU64,
    /// Requests answered with a 5xx.
    pub requests_server_error: AtomicU64,
    /// Requests whose client went away before the end.
    pub requests_cancelled: AtomicU64,
    /// Prompt tokens computed.
    pub tokens_in: AtomicU64,
    /// Completion tokens produced.
    pub tokens_out: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicU64,
    /// Sequences in the running batch.
    pub running: AtomicU64,
    /// Sequences per forward pass.
    pub batch_size: Histogram,
    /// Distinct adapters per forward pass.
    pub adapters_per_batch: Histogram,
    /// Tokens (prefill + decode) per forward pass.
    pub batch_tokens: Histogram,
    /// Seconds from arrival to first token.
    pub ttft: Histogram,
    /// Seconds between consecutive tokens of a sequence.
    pub itl: Histogram,
    /// Seconds to load an adapter into RAM, from disk.
    pub load_disk: Histogram,
    /// Seconds to load an adapter into RAM, from the object store.
    pub load_store: Histogram,
    /// RAM tier counters.
    pub ram: TierCounters,
    /// Disk tier counters.
    pub disk: TierCounters,
    /// Object store tier counters (hits: fetched; misses: not found).
    pub store: TierCounters,
}

const SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const COUNTS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests_ok: AtomicU64::new(0),
            requests_client_error: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            requests_server_error: AtomicU64::new(0),
            requests_cancelled: AtomicU64::new(0),
            tokens_in: AtomicU64::new(0),
            tokens_out: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            batch_size: Histogram::new(&COUNTS),
            adapters_per_batch: Histogram::new(&COUNTS),
            batch_tokens: Histogram::new(&COUNTS),
            ttft: Histogram::new(&SECONDS),
            itl: Histogram::new(&SECONDS),
            load_disk: Histogram::new(&SECONDS),
            load_store: Histogram::new(&SECONDS),
            ram: TierCounters::default(),
            disk: TierCounters::default(),
            store: TierCounters::default(),
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Adds one to a counter.
pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a finished HTTP request by status.
    pub fn count_status(&self, status: u16) {
        match status {
            200..=299 => inc(&self.requests_ok),
            429 => inc(&self.requests_rejected),
            400..=499 => inc(&self.requests_client_error),
            _ => inc(&self.requests_server_error),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP openlora_requests_total Completion requests by outcome.\n# TYPE openlora_requests_total counter"
        );
        for (outcome, v) in [
            ("ok", &self.requests_ok),
            ("client_error", &self.requests_client_error),
            ("rejected", &self.requests_rejected),
            ("server_error", &self.requests_server_error),
            ("cancelled", &self.requests_cancelled),
        ] {
            let _ = writeln!(
                o,
                "openlora_requests_total{{outcome=\"{outcome}\"}} {}",
                get(v)
            );
        }
        for (name, help, kind, v) in [
            (
                "openlora_prompt_tokens_total",
                "Prompt tokens computed.",
                "counter",
                &self.tokens_in,
            ),
            (
                "openlora_completion_tokens_total",
                "Completion tokens produced.",
                "counter",
                &self.tokens_out,
            ),
            (
                "openlora_queue_depth",
                "Requests waiting for a batch slot.",
                "gauge",
                &self.queue_depth,
            ),
            (
                "openlora_running_sequences",
                "Sequences in the running batch.",
                "gauge",
                &self.running,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(v)
            );
        }
        self.batch_size.render(
            &mut o,
            "openlora_batch_size",
            "Sequences per forward pass.",
            "",
        );
        self.adapters_per_batch.render(
            &mut o,
            "openlora_adapters_per_batch",
            "Distinct adapters per forward pass.",
            "",
        );
        self.batch_tokens.render(
            &mut o,
            "openlora_batch_tokens",
            "Tokens per forward pass.",
            "",
        );
        self.ttft.render(
            &mut o,
            "openlora_time_to_first_token_seconds",
            "Arrival to first token.",
            "",
        );
        self.itl.render(
            &mut o,
            "openlora_inter_token_latency_seconds",
            "Between consecutive tokens.",
            "",
        );
        self.load_disk.render(
            &mut o,
            "openlora_adapter_load_seconds",
            "Adapter load into RAM by source tier.",
            "source=\"disk\"",
        );
        self.load_store.render(
            &mut o,
            "openlora_adapter_load_seconds",
            "",
            "source=\"store\"",
        );
        for (metric, help, pick) in [
            (
                "openlora_cache_hits_total",
                "Adapter lookups served by the tier.",
                0,
            ),
            (
                "openlora_cache_misses_total",
                "Adapter lookups the tier could not serve.",
                1,
            ),
            (
                "openlora_cache_evictions_total",
                "Adapters evicted from the tier.",
                2,
            ),
            ("openlora_cache_bytes", "Bytes held by the tier.", 3),
            ("openlora_cache_entries", "Adapters held by the tier.", 4),
        ] {
            let kind = if pick >= 3 { "gauge" } else { "counter" };
            let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            for (tier, c) in [
                ("ram", &self.ram),
                ("disk", &self.disk),
                ("store", &self.store),
            ] {
                let v = [&c.hits, &c.misses, &c.evictions, &c.bytes, &c.entries][pick];
                let _ = writeln!(o, "{metric}{{tier=\"{tier}\"}} {}", get(v));
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut o = String::new();
        h.render(&mut o, "x", "help", "");
        assert!(o.contains("x_bucket{le=\"1\"} 1\n"), "{o}");
        assert!(o.contains("x_bucket{le=\"2\"} 3\n"), "{o}");
        assert!(o.contains("x_bucket{le=\"+Inf\"} 4\n"), "{o}");
        assert!(o.contains("x_count 4\n"), "{o}");
    }

    #[test]
    fn render_names_every_tier() {
        let m = Metrics::default();
        inc(&m.disk.hits);
        let text = m.render();
        assert!(text.contains("openlora_cache_hits_total{tier=\"disk\"} 1"));
        assert!(text.contains("openlora_cache_misses_total{tier=\"ram\"} 0"));
        assert!(text.contains("openlora_adapter_load_seconds_count{source=\"store\"} 0"));
    }
}
