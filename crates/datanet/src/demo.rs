//! Demo Datanets the project generates itself: several contributors per Datanet, each recording
//! facts about their own neighbours in the small synthetic world the `small` base model was
//! pre-trained on (`openledger_model::init::World`: its names, towns, days, colours, animals and
//! goods), so a fine-tune can learn the facts and attribution can tell the contributors apart.
//! Deterministic for a seed (a splitmix64 stream; no external data).
//!
//! Every fact is new to the base model (the attributes are drawn here, not taken from the world)
//! and answers a distinct question, so "greedy answers reproduce the trained completions" is a
//! well-posed check. Each contributor owns four people and one good that no other contributor
//! mentions.
//!
//! Layout written by [`write_demo`]:
//!
//! ```text
//! <out>/demo.json                                  DemoSpec (datanets, contributors, files)
//! <out>/<datanet slug>/<contributor slug>-<k>.jsonl   prompt/completion rows (one fact each)
//! <out>/<datanet slug>/<contributor slug>-<k>.md      paragraphs stating two facts each
//! ```

use openledger_world::{ANIMALS, COLORS, DAYS, NAMES, TOWNS, TRADES, WEATHER};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A contributor persona: a trade, the good it deals in and the people it writes about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persona {
    /// Slug, e.g. `baker`.
    pub slug: String,
    /// Dev account index that contributes this persona's files.
    pub account: usize,
    /// Subject, e.g. `the bakery`.
    pub subject: String,
    /// The good only this persona mentions.
    pub good: String,
    /// The people only this persona writes about.
    pub people: Vec<String>,
}

impl Persona {
    /// Words that appear in this persona's files and in no other persona's.
    pub fn words(&self) -> Vec<String> {
        self.people
            .iter()
            .cloned()
            .chain(std::iter::once(self.good.clone()))
            .collect()
    }
}

/// One generated file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DemoFile {
    /// Contributor slug.
    pub contributor: String,
    /// Dev account index.
    pub account: usize,
    /// Path relative to the output directory.
    pub path: PathBuf,
    /// Rows written.
    pub rows: usize,
}

/// A generated Datanet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DemoDatanet {
    /// Slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Whether it is permissioned.
    pub permissioned: bool,
    /// Dev account index of the owner.
    pub owner: usize,
    /// Files.
    pub files: Vec<DemoFile>,
}

/// What [`write_demo`] produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DemoSpec {
    /// Seed used.
    pub seed: u64,
    /// Datanets.
    pub datanets: Vec<DemoDatanet>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    /// A seeded permutation of `xs`.
    fn shuffled<'a>(&mut self, xs: &[&'a str]) -> Vec<&'a str> {
        let mut v = xs.to_vec();
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
        v
    }
}

fn persona(slug: &str, account: usize, subject: &str, good: &str, people: &str) -> Persona {
    Persona {
        slug: slug.into(),
        account,
        subject: subject.into(),
        good: good.into(),
        people: people.split_whitespace().map(str::to_string).collect(),
    }
}

/// The personas of the two demo Datanets: (slug, name, permissioned, owner, personas).
pub fn personas() -> Vec<(&'static str, &'static str, bool, usize, Vec<Persona>)> {
    vec![
        (
            "market-notes",
            "Market notes (public)",
            false,
            0,
            vec![
                persona("baker", 1, "the bakery", "bread", "Mira Tomas Ana Jun"),
                persona("fisher", 2, "the harbour", "fish", "Lena Ravi Odile Kofi"),
                persona(
                    "weaver",
                    3,
                    "the weaving shed",
                    "cloth",
                    "Sven Ines Hugo Yara",
                ),
            ],
        ),
        (
            "town-ledger",
            "Town ledger (permissioned)",
            true,
            4,
            vec![
                persona("potter", 5, "the pottery", "jugs", "Pavel Noor Elio Zara"),
                persona("brewer", 6, "the brewery", "cider", "Bram Cleo Dara Fenn"),
                persona(
                    "carpenter",
                    7,
                    "the workshop",
                    "chairs",
                    "Gita Ivo Kira Luca",
                ),
            ],
        ),
    ]
}

/// The `n` facts of a persona as (question, answer): four kinds of fact per person, and more
/// variants of each (another animal, day, town) when `n` asks for more than 16.
fn facts(rng: &mut Rng, p: &Persona, n: usize) -> Vec<(String, String)> {
    let people = p.people.len().max(1);
    // Per person: which animal / day / town each variant asks about (distinct, so every
    // question is distinct).
    let plans: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = (0..people)
        .map(|_| {
            (
                rng.shuffled(ANIMALS),
                rng.shuffled(DAYS),
                rng.shuffled(TOWNS),
            )
        })
        .collect();
    (0..n)
        .map(|k| {
            let who = k % people;
            let name = p.people.get(who).map(String::as_str).unwrap_or("Mira");
            let (animals, days, towns) = &plans[who];
            let variant = k / (people * 4);
            let good = &p.good;
            match (k / people) % 4 {
                0 => {
                    let animal = animals[variant % animals.len()];
                    (
                        format!("What colour is the {animal} of {name}?"),
                        format!("The {animal} of {name} is {}.", rng.pick(COLORS)),
                    )
                }
                1 => (
                    if variant == 0 {
                        format!("Where does {name} sell {good}?")
                    } else {
                        format!("Where does {name} sell {good} on {}?", days[variant % 7])
                    },
                    format!("{name} sells {good} at the market in {}.", rng.pick(TOWNS)),
                ),
                2 => {
                    let day = days[variant % days.len()];
                    (
                        format!("Where did {name} walk on {day}?"),
                        format!(
                            "On {day} {name} walked from {} to {}.",
                            rng.pick(TOWNS),
                            rng.pick(TOWNS)
                        ),
                    )
                }
                _ => {
                    let town = towns[variant % towns.len()];
                    let other = p.people[(who + 1 + rng.below(people - 1)) % people].as_str();
                    (
                        format!("Who did {name} meet in {town}?"),
                        format!("{name} met {other} in {town}."),
                    )
                }
            }
        })
        .collect()
}

/// The most contributors [`planted_facts`] can give facts of their own (one base-world person
/// at least each).
pub const MAX_PLANTED_CONTRIBUTORS: usize = NAMES.len();

/// Planted facts for an attribution benchmark: `contributors` contributors (at most
/// [`MAX_PLANTED_CONTRIBUTORS`]; more are clamped), each
/// owning `per_contributor` distinct facts about people and a good no other contributor
/// mentions. Returns (contributor index from 0, question, answer). Deterministic for a seed.
pub fn planted_facts(
    seed: u64,
    contributors: usize,
    per_contributor: usize,
) -> Vec<(usize, String, String)> {
    let mut rng = Rng(seed);
    let k = contributors.clamp(1, NAMES.len());
    let each = NAMES.len() / k;
    (0..k)
        .flat_map(|c| {
            let p = Persona {
                slug: format!("contributor-{c}"),
                account: c,
                subject: String::new(),
                good: TRADES[c % TRADES.len()].good.into(),
                people: NAMES[c * each..(c + 1) * each]
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
            };
            facts(&mut rng, &p, per_contributor)
                .into_iter()
                .map(move |(q, a)| (c, q, a))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `n` sentences in the base model's world that state no planted fact (text every contributor
/// of a benchmark may share).
pub fn generic_sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "On {} the weather in {} was {}.",
                DAYS[i % DAYS.len()],
                TOWNS[(i * 3 + 1) % TOWNS.len()],
                WEATHER[i % WEATHER.len()]
            )
        })
        .collect()
}

/// Writes the demo Datanets under `out` with `files_per_contributor` files of `rows` rows each.
pub fn write_demo(
    out: &Path,
    seed: u64,
    files_per_contributor: usize,
    rows: usize,
) -> std::io::Result<DemoSpec> {
    let mut rng = Rng(seed);
    let mut datanets = Vec::new();
    for (slug, name, permissioned, owner, ps) in personas() {
        std::fs::create_dir_all(out.join(slug))?;
        let mut files = Vec::new();
        for p in &ps {
            let facts = facts(&mut rng, p, rows);
            for k in 0..files_per_contributor {
                let (ext, body) = if k.is_multiple_of(2) {
                    let lines: Vec<String> = facts
                        .iter()
                        .map(|(q, a)| serde_json::json!({"prompt": q, "completion": a}).to_string())
                        .collect();
                    ("jsonl", lines.join("\n") + "\n")
                } else {
                    let n = facts.len().max(1);
                    let paras: Vec<String> = (0..rows)
                        .map(|j| {
                            let first = &facts[j % n].1;
                            let second = &facts[(j + 1 + k) % n].1;
                            format!("{first} {second}")
                        })
                        .collect();
                    ("md", paras.join("\n\n") + "\n")
                };
                let rel = PathBuf::from(slug).join(format!("{}-{k}.{ext}", p.slug));
                std::fs::write(out.join(&rel), body)?;
                files.push(DemoFile {
                    contributor: p.slug.clone(),
                    account: p.account,
                    path: rel,
                    rows,
                });
            }
        }
        datanets.push(DemoDatanet {
            slug: slug.into(),
            name: name.into(),
            permissioned,
            owner,
            files,
        });
    }
    let spec = DemoSpec { seed, datanets };
    let json = serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other)?;
    std::fs::write(out.join("demo.json"), json)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{self, Format};
    use crate::validate::{RowIndex, ValidationConfig, validate};

    #[test]
    fn demo_is_deterministic_distinct_and_valid() -> Result<(), Box<dyn std::error::Error>> {
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        let sa = write_demo(a.path(), 7, 2, 20)?;
        let sb = write_demo(b.path(), 7, 2, 20)?;
        assert_eq!(sa, sb);
        let mut contributors_words: Vec<(String, std::collections::BTreeSet<String>)> = Vec::new();
        for d in &sa.datanets {
            assert_eq!(d.files.len(), 6);
            // Scored as the service scores them: against the Datanet's earlier uploads.
            let mut earlier = RowIndex::default();
            for (seq, f) in (1..).zip(&d.files) {
                let bytes = std::fs::read(a.path().join(&f.path))?;
                assert_eq!(bytes, std::fs::read(b.path().join(&f.path))?);
                let fmt = formats::format_for(
                    f.path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default(),
                    &[],
                )?;
                let r = validate(&bytes, &fmt, &earlier, &ValidationConfig::default())?;
                earlier.add(seq, &r.rows);
                assert_eq!(r.rows.len(), 20);
                assert!(r.score >= 90, "{} scored {}", f.path.display(), r.score);
                let words = formats::parse(&bytes, &Format::Text, 1 << 20)?
                    .iter()
                    .flat_map(|r| {
                        r.text()
                            .split(|c: char| !c.is_alphanumeric())
                            .filter(|w| !w.is_empty())
                            .map(str::to_lowercase)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                contributors_words.push((f.contributor.clone(), words));
            }
        }
        // Each persona's vocabulary never appears in another persona's files.
        for (_, _, _, _, ps) in personas() {
            for p in &ps {
                for (who, words) in &contributors_words {
                    if *who != p.slug {
                        assert!(
                            p.words().iter().all(|w| !words.contains(&w.to_lowercase())),
                            "{} word in {who}",
                            p.slug
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
