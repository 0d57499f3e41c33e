//! The scheduler's state: waiting requests per adapter, the running set, and `next_batch`,
//! which decides what one forward pass computes. Plain data, no runtime: the engine thread
//! owns it and its unit tests call it directly (TGI's shape).
//!
//! A step serves, in order, under a token budget:
//! 1. one decode token for every running sequence that has finished its prompt;
//! 2. the next prompt chunk of running sequences still in prefill (chunked prefill);
//! 3. newly admitted sequences, taken round-robin over adapters (fairness: a hot adapter's
//!    long queue cannot starve a cold adapter's request), up to `max_running`.
//!
//! Adapter affinity: every adapter in a batch costs a read of its weights per projection, and
//! on a CPU, with many adapters, those reads dominate the LoRA work. So an admission may go to
//! a waiting request whose adapter is already running (it adds no new adapter to the batch)
//! ahead of the round-robin's turn, but at most `adapter_affinity` times in a row: the adapter
//! whose turn it is always gets in within `adapter_affinity + 1` admissions, so the
//! round-robin's bound on waiting still holds, `adapter_affinity + 1` times longer (LoRAX caps
//! the adapters in a batch and rotates them on a timer for the same reason).

use alloy_primitives::B256;
use std::collections::{HashMap, VecDeque};

/// A sequence's id (server-assigned, unique).
pub type SeqId = u64;

/// Limits of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most sequences in the running batch.
    pub max_running: usize,
    /// Most requests waiting for a slot; more are refused (429).
    pub max_waiting: usize,
    /// Most tokens (prefill + decode) in one forward pass.
    pub max_batch_tokens: usize,
    /// Most prompt tokens of one sequence in one forward pass.
    pub prefill_chunk: usize,
    /// Most admissions in a row that may go to an adapter already in the running batch ahead
    /// of the round-robin's turn (0: strict round-robin).
    pub adapter_affinity: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_running: 64,
            max_waiting: 256,
            max_batch_tokens: 512,
            prefill_chunk: 128,
            adapter_affinity: 3,
        }
    }
}

/// What one sequence computes in a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Feed prompt tokens `start..start+len`; `last` when this chunk ends the prompt.
    Prefill {
        /// First prompt position.
        start: usize,
        /// Number of tokens.
        len: usize,
        /// Whether the prompt is complete after this chunk (its logits are sampled).
        last: bool,
    },
    /// Feed the last sampled token.
    Decode,
}

/// One row group of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    /// The sequence.
    pub id: SeqId,
    /// What it computes.
    pub work: Work,
}

impl BatchItem {
    /// Tokens this item feeds.
    pub fn tokens(&self) -> usize {
        match self.work {
            Work::Prefill { len, .. } => len,
            Work::Decode => 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Seq {
    id: SeqId,
    key: B256,
    prompt_len: usize,
    fed: usize,
}

/// Refused because the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("queue full ({0} waiting)")]
pub struct QueueFull(pub usize);

/// Waiting queues per adapter key and the running set.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    queues: HashMap<B256, VecDeque<Seq>>,
    /// Adapter keys with waiting requests, in round-robin order.
    order: VecDeque<B256>,
    waiting: usize,
    running: Vec<Seq>,
    /// Rotates which decoding sequences go first when they exceed the budget.
    decode_offset: usize,
    /// Admissions in a row that went ahead of the round-robin's turn (adapter affinity).
    bypassed: usize,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Scheduler {
            cfg,
            queues: HashMap::new(),
            order: VecDeque::new(),
            waiting: 0,
            running: Vec::new(),
            decode_offset: 0,
            bypassed: 0,
        }
    }

    /// The limits.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Sequences in the running set.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether nothing is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting == 0 && self.running.is_empty()
    }

    /// Queues a request for adapter `key` (B256::ZERO for the base model) with a prompt of
    /// `prompt_len` tokens (at least 1).
    pub fn push(&mut self, id: SeqId, key: B256, prompt_len: usize) -> Result<(), QueueFull> {
        if self.waiting >= self.cfg.max_waiting {
            return Err(QueueFull(self.waiting));
        }
        let q = self.queues.entry(key).or_default();
        if q.is_empty() {
            self.order.push_back(key);
        }
        q.push_back(Seq {
            id,
            key,
            prompt_len: prompt_len.max(1),
            fed: 0,
        });
        self.waiting += 1;
        Ok(())
    }

    /// Removes a sequence wherever it is (client gone, finished, failed). Returns whether it
    /// was known.
    pub fn remove(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i);
            return true;
        }
        let Some(key) = self
            .queues
            .iter()
            .find(|(_, q)| q.iter().any(|s| s.id == id))
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(q) = self.queues.get_mut(&key) {
            q.retain(|s| s.id != id);
            if q.is_empty() {
                self.queues.remove(&key);
                self.order.retain(|k| *k != key);
            }
        }
        self.waiting -= 1;
        true
    }

    /// The next waiting sequence: round-robin over adapter keys, or (at most
    /// `adapter_affinity` times in a row) the first key in that order whose adapter is
    /// already running.
    fn admit_one(&mut self) -> Option<Seq> {
        let mut at = 0;
        if self.bypassed < self.cfg.adapter_affinity {
            let running = &self.running;
            if let Some(i) = self
                .order
                .iter()
                .position(|k| running.iter().any(|s| s.key == *k))
            {
                at = i;
            }
        }
        self.bypassed = if at == 0 { 0 } else { self.bypassed + 1 };
        let key = self.order.remove(at)?;
        let q = self.queues.get_mut(&key)?;
        let s = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&key);
        } else if at == 0 {
            self.order.push_back(key);
        } else {
            // an affinity pick does not use up the key's round-robin turn
            self.order.insert(at, key);
        }
        self.waiting -= 1;
        Some(s)
    }

    /// Chooses the work of one forward pass of at most `budget` tokens and advances the
    /// prompt positions as if it ran (a failed step removes its sequences).
    pub fn next_batch(&mut self, budget: usize) -> Vec<BatchItem> {
        let mut left = budget.min(self.cfg.max_batch_tokens);
        let mut batch = Vec::new();
        let n = self.running.len();
        // 1. decode, rotating the start so an over-full batch is served fairly
        let decoding: Vec<usize> = (0..n)
            .map(|i| (i + self.decode_offset) % n.max(1))
            .filter(|&i| self.running[i].fed >= self.running[i].prompt_len)
            .collect();
        for i in decoding {
            if left == 0 {
                break;
            }
            batch.push(BatchItem {
                id: self.running[i].id,
                work: Work::Decode,
            });
            left -= 1;
        }
        self.decode_offset = self.decode_offset.wrapping_add(1);
        // 2. continue prefills
        for s in self.running.iter_mut() {
            if left == 0 {
                break;
            }
            if s.fed < s.prompt_len {
                let len = (s.prompt_len - s.fed).min(self.cfg.prefill_chunk).min(left);
                batch.push(BatchItem {
                    id: s.id,
                    work: Work::Prefill {
                        start: s.fed,
                        len,
                        last: s.fed + len == s.prompt_len,
                    },
                });
                s.fed += len;
                left -= len;
            }
        }
        // 3. admit
        while left > 0 && self.running.len() < self.cfg.max_running {
            let Some(mut s) = self.admit_one() else {
                break;
            };
            let len = s.prompt_len.min(self.cfg.prefill_chunk).min(left);
            batch.push(BatchItem {
                id: s.id,
                work: Work::Prefill {
                    start: 0,
                    len,
                    last: len == s.prompt_len,
                },
            });
            s.fed = len;
            left -= len;
            self.running.push(s);
        }
        batch
    }

    /// Adapter key of a running sequence.
    pub fn key_of(&self, id: SeqId) -> Option<B256> {
        self.running.iter().find(|s| s.id == id).map(|s| s.key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn cfg(max_running: usize, budget: usize, chunk: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_running,
            max_waiting: 1000,
            max_batch_tokens: budget,
            prefill_chunk: chunk,
            adapter_affinity: 0,
        }
    }

    fn key(i: u8) -> B256 {
        B256::repeat_byte(i)
    }

    #[test]
    fn prefill_is_chunked_and_mixed_with_decode() {
        let mut s = Scheduler::new(cfg(8, 10, 4));
        s.push(1, key(1), 3).unwrap();
        let b = s.next_batch(10);
        assert_eq!(
            b,
            vec![BatchItem {
                id: 1,
                work: Work::Prefill {
                    start: 0,
                    len: 3,
                    last: true
                }
            }]
        );
        s.push(2, key(2), 9).unwrap();
        let b = s.next_batch(10);
        // seq 1 decodes, seq 2 gets its first chunk of 4
        assert_eq!(
            b[0],
            BatchItem {
                id: 1,
                work: Work::Decode
            }
        );
        assert_eq!(
            b[1],
            BatchItem {
                id: 2,
                work: Work::Prefill {
                    start: 0,
                    len: 4,
                    last: false
                }
            }
        );
        let b = s.next_batch(10);
        assert_eq!(
            b[1],
            BatchItem {
                id: 2,
                work: Work::Prefill {
                    start: 4,
                    len: 4,
                    last: false
                }
            }
        );
        let b = s.next_batch(10);
        assert_eq!(
            b[1],
            BatchItem {
                id: 2,
                work: Work::Prefill {
                    start: 8,
                    len: 1,
                    last: true
                }
            }
        );
        let b = s.next_batch(10);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|i| i.work == Work::Decode));
    }

    #[test]
    fn token_budget_bounds_every_batch() {
        let mut s = Scheduler::new(cfg(100, 16, 8));
        for i in 0..40 {
            s.push(i, key((i % 3) as u8), 5 + (i as usize % 7)).unwrap();
        }
        let mut decoded: HashMap<SeqId, usize> = HashMap::new();
        for _ in 0..200 {
            let b = s.next_batch(16);
            let t: usize = b.iter().map(BatchItem::tokens).sum();
            assert!(t <= 16, "{t} tokens");
            for it in b.iter().filter(|i| i.work == Work::Decode) {
                let n = decoded.entry(it.id).or_default();
                *n += 1;
                if *n == 3 {
                    s.remove(it.id); // finished after 3 tokens
                }
            }
        }
        assert!(s.is_idle(), "everything admitted and finished eventually");
    }

    #[test]
    fn a_hot_adapter_cannot_starve_a_cold_one() {
        let mut s = Scheduler::new(cfg(2, 64, 64));
        for i in 0..100 {
            s.push(i, key(1), 4).unwrap(); // hot
        }
        s.push(1000, key(2), 4).unwrap(); // cold, queued last
        let b = s.next_batch(64);
        let ids: Vec<SeqId> = b.iter().map(|i| i.id).collect();
        assert!(
            ids.contains(&1000),
            "the cold request is admitted in the first batch: {ids:?}"
        );
    }

    /// Admitted ids of a batch (its prefill items).
    fn admitted(b: &[BatchItem]) -> Vec<SeqId> {
        b.iter()
            .filter(|i| matches!(i.work, Work::Prefill { start: 0, .. }))
            .map(|i| i.id)
            .collect()
    }

    /// Adapter `a` runs (seq 1); waiting: b (2), c (3), then five more for a (4..=8).
    fn affinity_case(affinity: usize) -> Vec<SeqId> {
        let mut s = Scheduler::new(SchedulerConfig {
            adapter_affinity: affinity,
            ..cfg(7, 64, 64)
        });
        s.push(1, key(1), 1).unwrap();
        assert_eq!(admitted(&s.next_batch(64)), vec![1]);
        s.push(2, key(2), 1).unwrap();
        s.push(3, key(3), 1).unwrap();
        for id in 4..=8 {
            s.push(id, key(1), 1).unwrap();
        }
        admitted(&s.next_batch(64))
    }

    #[test]
    fn affinity_admits_running_adapters_first_within_its_bound() {
        // strict round-robin: b, c, then a's requests
        assert_eq!(affinity_case(0), vec![2, 3, 4, 5, 6, 7]);
        // at most two in a row for the running adapter, then whoever's turn it is
        assert_eq!(affinity_case(2), vec![4, 5, 2, 6, 7, 3]);
        assert_eq!(affinity_case(1), vec![4, 2, 5, 3, 6, 7]);
    }

    #[test]
    fn with_affinity_a_hot_running_adapter_still_cannot_starve_a_cold_one() {
        let mut s = Scheduler::new(SchedulerConfig {
            adapter_affinity: 3,
            ..cfg(4, 64, 64)
        });
        s.push(0, key(1), 1).unwrap();
        s.next_batch(64); // the hot adapter runs
        for i in 1..100 {
            s.push(i, key(1), 1).unwrap();
        }
        s.push(1000, key(2), 1).unwrap(); // cold, queued last
        // each step one sequence finishes and frees its slot
        let mut waited = 0;
        loop {
            let b = s.next_batch(64);
            if admitted(&b).contains(&1000) {
                break;
            }
            waited += admitted(&b).len();
            let first = b[0].id;
            assert!(s.remove(first));
            // the hot adapter's own round-robin turn (it queued first), then at most 3
            // admissions ahead of the cold adapter's turn
            assert!(
                waited <= 1 + 3,
                "the cold request waited {waited} admissions"
            );
        }
    }

    #[test]
    fn removal_frees_the_slot_at_once() {
        let mut s = Scheduler::new(cfg(1, 64, 64));
        s.push(1, key(1), 2).unwrap();
        s.push(2, key(1), 2).unwrap();
        s.next_batch(64);
        assert_eq!(s.running(), 1);
        assert!(s.remove(1));
        let b = s.next_batch(64);
        assert_eq!(b[0].id, 2);
        assert!(s.remove(2));
        assert!(!s.remove(2));
        assert!(s.is_idle());
    }

    #[test]
    fn queue_limit_refuses() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_waiting: 2,
            ..cfg(1, 8, 8)
        });
        s.push(1, key(1), 1).unwrap();
        s.push(2, key(1), 1).unwrap();
        assert_eq!(s.push(3, key(1), 1), Err(QueueFull(2)));
        assert!(s.remove(1));
        s.push(3, key(2), 1).unwrap();
    }

    #[test]
    fn decode_rotates_when_over_budget() {
        let mut s = Scheduler::new(cfg(4, 64, 64));
        for i in 0..4 {
            s.push(i, key(i as u8), 1).unwrap();
        }
        s.next_batch(64);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            for it in s.next_batch(2) {
                seen.insert(it.id);
            }
        }
        assert_eq!(seen.len(), 4, "every decoding sequence gets a turn");
    }
}
