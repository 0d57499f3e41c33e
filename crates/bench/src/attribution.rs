//! `openledger bench attribution`: quality on a planted-facts Datanet and speed on a generated
//! corpus. The CLI prints the table and writes the JSON; this module measures.
//!
//! Quality: `K` contributors each own `F` facts (about people of the base model's world, with
//! attributes drawn per fact; one question → answer pair per fact) and all of them carry the same generic sentences. One
//! adapter is trained on everything with `openledger_train`; each fact's question is answered
//! greedily by the adapter. Methods: span (on the generated answer), influence with the cosine
//! and the DataInf rule (on the generated answer and on the reference answer), the combined
//! record weights, and a seeded random ranking as the baseline. Metrics per method: top-1
//! contributor accuracy, precision@3 (the share of queries whose owner is among the three
//! highest weights — one relevant contributor per query), and ROC-AUC of the owner's weight
//! against every other contributor's weight on the same query (ties count ½).

use openledger_attribution::index::{self, Document, IndexMeta, SpanIndex};
use openledger_attribution::influence::{self, SketchMatrix};
use openledger_attribution::span::{self, ContributionKey, SpanParams};
use openledger_datanet::formats::Row;
use openledger_model::{LoraAdapter, Pretrained, SamplingParams};
use openledger_train::config::TrainConfig;
use openledger_train::sketch::{Projector, SketchConfig, TrainableAdapter};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

type Err = Box<dyn std::error::Error + Send + Sync>;

/// Ranking quality of one method.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodQuality {
    /// Method name.
    pub method: String,
    /// Queries evaluated.
    pub queries: usize,
    /// Owner ranked first.
    pub top1: f64,
    /// Owner among the top three.
    pub precision_at3: f64,
    /// ROC-AUC of the owner's weight vs the others'.
    pub auc: f64,
}

/// Accumulates rankings.
#[derive(Default)]
struct Tally {
    n: usize,
    top1: usize,
    top3: usize,
    wins: f64,
    pairs: usize,
}

impl Tally {
    fn add(&mut self, weights: &BTreeMap<u64, f64>, owner: u64, all: &[u64]) {
        self.n += 1;
        let w = |c: u64| weights.get(&c).copied().unwrap_or(0.0);
        let mut ranked: Vec<u64> = all.to_vec();
        ranked.sort_by(|a, b| w(*b).total_cmp(&w(*a)).then(a.cmp(b)));
        if w(owner) > 0.0 {
            if ranked.first() == Some(&owner) {
                self.top1 += 1;
            }
            if ranked.iter().take(3).any(|c| *c == owner) {
                self.top3 += 1;
            }
        }
        for c in all.iter().filter(|c| **c != owner) {
            self.pairs += 1;
            self.wins += match w(owner).total_cmp(&w(*c)) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }

    fn done(&self, method: &str) -> MethodQuality {
        let n = self.n.max(1) as f64;
        MethodQuality {
            method: method.into(),
            queries: self.n,
            top1: self.top1 as f64 / n,
            precision_at3: self.top3 as f64 / n,
            auc: self.wins / self.pairs.max(1) as f64,
        }
    }
}

/// The quality run's settings.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityOpts {
    /// Contributors.
    pub contributors: usize,
    /// Facts per contributor.
    pub facts: usize,
    /// Generic sentences every contributor carries.
    pub generic: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Influence share in the combined weights (ppm).
    pub mix_ppm: u32,
}

impl Default for QualityOpts {
    fn default() -> Self {
        Self {
            contributors: 8,
            facts: 4,
            generic: 6,
            epochs: 50,
            learning_rate: 5e-3,
            seed: 7,
            mix_ppm: 300_000,
        }
    }
}

/// The quality report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityReport {
    /// Settings.
    pub opts: QualityOpts,
    /// Training examples.
    pub examples: usize,
    /// Training seconds (including the sketches).
    pub train_secs: f64,
    /// Final training loss.
    pub final_train_loss: Option<f64>,
    /// Facts whose generated answer contains the planted fact verbatim.
    pub reproduced: usize,
    /// Facts.
    pub facts: usize,
    /// Rankings.
    pub methods: Vec<MethodQuality>,
    /// Median milliseconds to compute one answer's gradient sketch (forward + backward).
    pub query_gradient_ms: f64,
    /// Generated answers, for inspection: (fact, answer).
    pub samples: Vec<(String, String)>,
}

/// One planted fact: (owner, question, answer), in the base model's world (see
/// `openledger_datanet::demo::planted_facts`).
fn facts(o: &QualityOpts) -> Vec<(u64, String, String)> {
    openledger_datanet::demo::planted_facts(o.seed, o.contributors, o.facts)
        .into_iter()
        .map(|(c, q, a)| (c as u64 + 1, q, a))
        .collect()
}

fn generic(o: &QualityOpts) -> Vec<String> {
    openledger_datanet::demo::generic_sentences(o.generic)
}

fn norm_weights(m: &BTreeMap<ContributionKey, u128>) -> BTreeMap<u64, f64> {
    m.iter().map(|(k, v)| (k.2, *v as f64)).collect()
}

/// Runs the quality benchmark on the base model at `base_dir` (blocking; minutes).
pub fn quality(
    base_dir: &Path,
    o: &QualityOpts,
    mut log: impl FnMut(String),
) -> Result<QualityReport, Err> {
    let max = openledger_datanet::demo::MAX_PLANTED_CONTRIBUTORS;
    if o.contributors == 0 || o.contributors > max {
        return Err(format!(
            "contributors must be 1 to {max} (got {}): each needs base-world people no other contributor mentions",
            o.contributors
        )
        .into());
    }
    let base = Pretrained::load(
        base_dir,
        &openledger_model::Device::Cpu,
        openledger_model::DType::F32,
    )?;
    let base_hash = openledger_model::content_hash(base_dir)?.0;
    let tok = base
        .tokenizer
        .as_ref()
        .ok_or("base model has no tokenizer")?;
    let planted = facts(o);
    let generic_rows = generic(o);
    // Rows per contributor: its facts as question → answer pairs, then the generic sentences.
    let mut rows: Vec<(String, Row)> = Vec::new();
    let mut keys: Vec<Option<ContributionKey>> = Vec::new();
    let mut docs = Vec::new();
    for c in 1..=o.contributors as u64 {
        let content = alloy_primitives::keccak256(format!("contributor-{c}"));
        let mine = planted.iter().filter(|f| f.0 == c);
        let texts = mine
            .map(|f| Row::Pair {
                prompt: f.1.clone(),
                completion: f.2.clone(),
            })
            .chain(generic_rows.iter().map(|g| Row::Text { text: g.clone() }));
        for (j, row) in texts.enumerate() {
            docs.push(Document {
                contribution: c,
                tokens: tok.encode(row.text(), false)?.get_ids().to_vec(),
            });
            rows.push((format!("{content}:{j}"), row));
        }
    }
    let cfg = TrainConfig {
        // Pinned (the defaults before the recommended recipe), so the recorded quality
        // figures stay comparable when the defaults move.
        rank: 8,
        alpha: 16.0,
        epochs: o.epochs,
        learning_rate: o.learning_rate,
        batch_size: 4,
        val_fraction: 0.0,
        max_seq_len: 96,
        warmup_steps: 5,
        seed: o.seed,
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    log(format!(
        "training on {} rows, {} epochs",
        rows.len(),
        o.epochs
    ));
    let t0 = Instant::now();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let out = openledger_train::trainer::train(
        &base,
        &base_hash,
        &rows,
        &cfg,
        None,
        &cancel,
        &mut |e| {
            if let openledger_train::trainer::Event::Epoch(m) = e
                && (m.epoch + 1) % 10 == 0
            {
                log(format!(
                    "epoch {} train loss {:.3}",
                    m.epoch + 1,
                    m.train_loss
                ));
            }
        },
    )?;
    let train_secs = t0.elapsed().as_secs_f64();
    let final_train_loss = out.metrics.epochs.last().map(|e| e.train_loss);
    let by_row: BTreeMap<&str, Option<ContributionKey>> = rows
        .iter()
        .zip(docs.iter())
        .map(|((id, _), d)| (id.as_str(), Some((1, 0, d.contribution))))
        .collect();
    keys.extend(
        out.sketch
            .header
            .rows
            .iter()
            .map(|r| by_row.get(r.as_str()).copied().flatten()),
    );

    let dir = tempfile::tempdir()?;
    let ipath = dir.path().join("bench.olspan");
    let meta = IndexMeta {
        datanet: 1,
        version: 0,
        vocab: tok.get_vocab_size(true) as u32,
        tokenizer_hash: Default::default(),
    };
    index::build(&ipath, &meta, &docs, |_, _| {})?;
    let ix = SpanIndex::open(&ipath)?;

    let adapter = Arc::new(LoraAdapter::from_blob(
        &out.adapter.to_blob()?,
        &base.config,
        base.model.device(),
        openledger_model::DType::F32,
    )?);
    let params = TrainableAdapter::from_adapter(&adapter, &base.config, base.model.device())?;
    let projector = Projector::new(
        SketchConfig {
            dim: out.sketch.header.dim,
            seed: out.sketch.header.seed,
        },
        &params.adapter,
        base.model.device(),
    )?;
    let mut matrix = SketchMatrix::new(out.sketch.header.layers.len() * out.sketch.header.dim);
    for i in 0..out.sketch.len() {
        matrix.push((0, 0, 0), out.sketch.row(i))?;
    }
    let enc = openledger_train::data::Encoder::new(&base)?;
    let all: Vec<u64> = (1..=o.contributors as u64).collect();
    let names = [
        "span (reproduced answers)",
        "span (all answers)",
        "influence cosine (generated)",
        "influence DataInf (generated)",
        "influence cosine (reference)",
        "influence DataInf (reference)",
        "combined record weights",
        "random baseline",
    ];
    let mut tallies: Vec<Tally> = names.iter().map(|_| Tally::default()).collect();
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x5eed);
    let (mut reproduced, mut grad_ms, mut samples) = (0, Vec::new(), Vec::new());
    let sp = SpanParams::default();
    for (owner, q, a) in &planted {
        let prompt = enc.prompt_ids(q)?;
        let params_s = SamplingParams {
            max_new_tokens: 40,
            stop_token_ids: enc.eos().into_iter().collect(),
            ..SamplingParams::default()
        };
        let seq = openledger_model::generate(
            &base.model,
            Some(tok),
            &prompt,
            Some(adapter.clone()),
            &params_s,
            |_| true,
        )?;
        let answer: Vec<u32> = seq
            .generated()
            .iter()
            .copied()
            .filter(|t| Some(*t) != enc.eos())
            .collect();
        let text = tok.decode(&answer, true)?;
        let ok = text.contains(a.as_str());
        reproduced += usize::from(ok);
        if samples.len() < 6 {
            samples.push((a.clone(), text.clone()));
        }
        let span_w = span::attribute(&[&ix], &answer, &sp).scores;
        if ok {
            tallies[0].add(&norm_weights(&span_w), *owner, &all);
        }
        tallies[1].add(&norm_weights(&span_w), *owner, &all);
        let reference = enc.answer_ids(a)?;
        let mut inf_gen = BTreeMap::new();
        for (k, ans) in [(2usize, &answer), (4, &reference)] {
            if ans.is_empty() {
                tallies[k].add(&BTreeMap::new(), *owner, &all);
                tallies[k + 1].add(&BTreeMap::new(), *owner, &all);
                continue;
            }
            let t = Instant::now();
            let qs = projector.query(&base.model, &params, &prompt, ans)?;
            grad_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let cos = influence::aggregate(&matrix.cosines(&qs.grads)?, &keys, 0);
            let di = influence::aggregate(&influence::datainf(&out.sketch, &qs), &keys, 0);
            tallies[k].add(&norm_weights(&cos), *owner, &all);
            tallies[k + 1].add(&norm_weights(&di), *owner, &all);
            if k == 2 {
                inf_gen = cos;
            }
        }
        let (comb, _) = openledger_attribution::service::combine(
            span_w,
            serde_json::Value::Null,
            Some((inf_gen, serde_json::Value::Null)),
            o.mix_ppm,
        );
        tallies[6].add(&norm_weights(&comb), *owner, &all);
        let random: BTreeMap<u64, f64> = all.iter().map(|c| (*c, rng.random::<f64>())).collect();
        tallies[7].add(&random, *owner, &all);
    }
    grad_ms.sort_by(f64::total_cmp);
    Ok(QualityReport {
        opts: o.clone(),
        examples: out.sketch.len(),
        train_secs,
        final_train_loss,
        reproduced,
        facts: planted.len(),
        methods: names.iter().zip(&tallies).map(|(n, t)| t.done(n)).collect(),
        query_gradient_ms: grad_ms.get(grad_ms.len() / 2).copied().unwrap_or(0.0),
        samples,
    })
}

/// The speed run's settings.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeedOpts {
    /// Corpus tokens.
    pub tokens: usize,
    /// Vocabulary (Zipf-distributed ids, s = 1.1).
    pub vocab: u32,
    /// Mean row length in tokens.
    pub row_len: usize,
    /// Answer length.
    pub answer_len: usize,
    /// Training examples for the influence timing.
    pub examples: usize,
    /// Sketch layers × dimension of the influence timing.
    pub layers: usize,
    /// Sketch dimension per layer.
    pub dim: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SpeedOpts {
    fn default() -> Self {
        Self {
            tokens: 100_000_000,
            vocab: 32_000,
            row_len: 400,
            answer_len: 256,
            examples: 10_000,
            layers: 4,
            dim: 128,
            seed: 11,
        }
    }
}

/// The speed report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeedReport {
    /// Settings.
    pub opts: SpeedOpts,
    /// Rows.
    pub rows: usize,
    /// Index build seconds (stream + suffix array + write).
    pub build_secs: f64,
    /// Tokens per second of the build.
    pub build_tokens_per_sec: f64,
    /// Index file bytes per corpus token.
    pub bytes_per_token: f64,
    /// Span attribution of one answer (median / max of the runs), one core, ms.
    pub span_ms_median: f64,
    /// Slowest run.
    pub span_ms_max: f64,
    /// Baseline in the same run: `count` of every answer 8-gram, one binary search each, ms.
    pub baseline_ngram_count_ms: f64,
    /// Influence over `examples` with the cosine rule (scores + aggregation), median ms.
    pub influence_cosine_ms: f64,
    /// The same with DataInf, median ms.
    pub influence_datainf_ms: f64,
    /// Baseline: raw inner products (no normalisation), median ms.
    pub baseline_dot_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn time_ms(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Runs the speed benchmark in `dir` (blocking; the index file is left there).
pub fn speed(dir: &Path, o: &SpeedOpts, mut log: impl FnMut(String)) -> Result<SpeedReport, Err> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    // Zipf by inverse CDF over a precomputed table.
    let mut cdf = Vec::with_capacity(o.vocab as usize);
    let mut acc = 0f64;
    for r in 1..=o.vocab {
        acc += 1.0 / f64::from(r).powf(1.1);
        cdf.push(acc);
    }
    let draw = |rng: &mut StdRng| -> u32 {
        let u = rng.random::<f64>() * acc;
        cdf.partition_point(|c| *c < u) as u32
    };
    log(format!("generating {} tokens", o.tokens));
    let mut docs = Vec::new();
    let mut left = o.tokens;
    while left > 0 {
        let n = rng.random_range(o.row_len / 2..o.row_len * 3 / 2).min(left);
        let mut t: Vec<u32> = (0..n).map(|_| draw(&mut rng)).collect();
        // Some rows quote an earlier row (duplication, as in real corpora).
        if docs.len() > 10 && rng.random_bool(0.05) {
            let src: &Document = &docs[rng.random_range(0..docs.len())];
            let k = src.tokens.len().min(t.len()) / 2;
            t[..k].copy_from_slice(&src.tokens[..k]);
        }
        docs.push(Document {
            contribution: docs.len() as u64 % 1000,
            tokens: t,
        });
        left -= n;
    }
    let path = dir.join("speed.olspan");
    let meta = IndexMeta {
        datanet: 1,
        version: 0,
        vocab: o.vocab,
        tokenizer_hash: Default::default(),
    };
    log(format!("building the index of {} rows", docs.len()));
    let t = Instant::now();
    index::build(&path, &meta, &docs, |_, _| {})?;
    let build_secs = t.elapsed().as_secs_f64();
    let ix = SpanIndex::open(&path)?;
    // Answers: four 40-token quotes of random rows joined by fresh tokens.
    let answers: Vec<Vec<u32>> = (0..20)
        .map(|_| {
            let mut a = Vec::with_capacity(o.answer_len);
            while a.len() < o.answer_len {
                let d = &docs[rng.random_range(0..docs.len())].tokens;
                let s = rng.random_range(0..d.len().saturating_sub(40).max(1));
                a.extend(d[s..(s + 40).min(d.len())].iter().copied());
                a.extend((0..24).map(|_| draw(&mut rng)));
            }
            a.truncate(o.answer_len);
            a
        })
        .collect();
    drop(docs);
    let sp = SpanParams::default();
    // One untimed pass first: the timed runs measure a warm index, not page faults.
    for a in &answers {
        std::hint::black_box(span::attribute(&[&ix], a, &sp));
    }
    let mut i = 0;
    let span_runs = time_ms(answers.len(), || {
        std::hint::black_box(span::attribute(&[&ix], &answers[i % answers.len()], &sp));
        i += 1;
    });
    let mut i = 0;
    let base_runs = time_ms(answers.len(), || {
        let a = &answers[i % answers.len()];
        let n: usize = a.windows(8).map(|w| ix.count(w)).sum();
        std::hint::black_box(n);
        i += 1;
    });
    log("timing influence".into());
    let width = o.layers * o.dim;
    let mut m = SketchMatrix::new(width);
    let mut grads = Vec::with_capacity(o.examples * width);
    let mut keys = Vec::with_capacity(o.examples);
    for e in 0..o.examples {
        let g: Vec<f32> = (0..width).map(|_| rng.random::<f32>() - 0.5).collect();
        m.push((1, 0, e as u64 % 100), &g)?;
        grads.extend_from_slice(&g);
        keys.push(Some((1u64, 0u64, e as u64 % 100)));
    }
    let set = openledger_train::sketch::SketchSet {
        header: openledger_train::sketch::SketchHeader {
            version: 1,
            dim: o.dim,
            seed: 0,
            layers: (0..o.layers)
                .map(|l| openledger_train::sketch::LayerInfo {
                    layer: l,
                    modules: vec![],
                    param_dim: 1,
                    mean_sq_norm: 1.0,
                    lambda: 0.1,
                    mean_proj_sq_norm: 1.0,
                    lambda_projected: 0.1 / o.dim as f64,
                })
                .collect(),
            loss: String::new(),
            rows: (0..o.examples).map(|i| format!("0x00:{i}")).collect(),
        },
        grads,
        sq_norms: vec![1.0; o.examples * o.layers],
        losses: vec![1.0; o.examples],
    };
    let q = openledger_train::sketch::QuerySketch {
        grads: (0..width).map(|_| rng.random::<f32>() - 0.5).collect(),
        sq_norms: vec![1.0; o.layers],
        loss: 1.0,
    };
    let cos = time_ms(15, || {
        let s = m.cosines(&q.grads).unwrap_or_default();
        std::hint::black_box(influence::aggregate(&s, &keys, 0));
    });
    let di = time_ms(15, || {
        std::hint::black_box(influence::aggregate(
            &influence::datainf(&set, &q),
            &keys,
            0,
        ));
    });
    let dot = time_ms(15, || {
        let s: Vec<f32> = set
            .grads
            .chunks_exact(width)
            .map(|r| r.iter().zip(&q.grads).map(|(a, b)| a * b).sum())
            .collect();
        std::hint::black_box(s);
    });
    Ok(SpeedReport {
        opts: o.clone(),
        rows: ix.doc_count(),
        build_secs,
        build_tokens_per_sec: o.tokens as f64 / build_secs.max(1e-9),
        bytes_per_token: ix.file_size() as f64 / o.tokens.max(1) as f64,
        span_ms_max: span_runs.iter().copied().fold(0.0, f64::max),
        span_ms_median: median(span_runs),
        baseline_ngram_count_ms: median(base_runs),
        influence_cosine_ms: median(cos),
        influence_datainf_ms: median(di),
        baseline_dot_ms: median(dot),
    })
}
