//! Demo Datanets the project generates itself: several contributors per Datanet, each writing
//! about a clearly distinct subject with its own vocabulary, so attribution can tell them
//! apart. Deterministic for a seed (a splitmix64 stream; no external data).
//!
//! Layout written by [`write_demo`]:
//!
//! ```text
//! <out>/demo.json                                  DemoSpec (datanets, contributors, files)
//! <out>/<datanet slug>/<contributor slug>-<k>.jsonl   prompt/completion rows
//! <out>/<datanet slug>/<contributor slug>-<k>.md      paragraphs
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A contributor persona: a subject and the words only it uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persona {
    /// Slug, e.g. `beekeeper`.
    pub slug: String,
    /// Dev account index that contributes this persona's files.
    pub account: usize,
    /// Subject.
    pub subject: String,
    /// Distinct vocabulary.
    pub words: Vec<String>,
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
    fn pick<'a>(&mut self, xs: &'a [String]) -> &'a str {
        &xs[(self.next() % xs.len().max(1) as u64) as usize]
    }
}

fn persona(slug: &str, account: usize, subject: &str, words: &str) -> Persona {
    Persona {
        slug: slug.into(),
        account,
        subject: subject.into(),
        words: words.split_whitespace().map(str::to_string).collect(),
    }
}

/// The personas of the two demo Datanets: (slug, name, permissioned, owner, personas).
pub fn personas() -> Vec<(&'static str, &'static str, bool, usize, Vec<Persona>)> {
    vec![
        (
            "field-notes",
            "Field notes (public)",
            false,
            0,
            vec![
                persona(
                    "beekeeper",
                    1,
                    "beekeeping",
                    "hive queen brood comb nectar pollen smoker drone swarm propolis frame apiary honeyflow varroa",
                ),
                persona(
                    "astronomer",
                    2,
                    "amateur astronomy",
                    "nebula telescope eyepiece parallax galaxy comet aperture redshift eclipse meridian quasar perihelion",
                ),
                persona(
                    "baker",
                    3,
                    "sourdough baking",
                    "levain crumb proofing gluten hydration scoring banneton crust starter autolyse lamination oven",
                ),
            ],
        ),
        (
            "harbour-logs",
            "Harbour logs (permissioned)",
            true,
            4,
            vec![
                persona(
                    "sailor",
                    5,
                    "coastal sailing",
                    "tack jib mainsail halyard keel mooring leeward windward buoy tide ballast spinnaker",
                ),
                persona(
                    "diver",
                    6,
                    "reef diving",
                    "reef coral regulator buoyancy wetsuit moray current visibility decompression fins nudibranch kelp",
                ),
                persona(
                    "fisher",
                    7,
                    "harbour fishing",
                    "trawler net bait hook catch haddock gill winch quay crate mackerel lobster",
                ),
            ],
        ),
    ]
}

fn sentence(rng: &mut Rng, p: &Persona) -> String {
    let n = 8 + (rng.next() % 8) as usize;
    let mut words: Vec<&str> = (0..n).map(|_| rng.pick(&p.words)).collect();
    let k = rng.next();
    words.insert(0, if k.is_multiple_of(2) { "the" } else { "every" });
    let mut s = words.join(" ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    format!("{s} ({} note {}).", p.subject, rng.next() % 100_000)
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
            for k in 0..files_per_contributor {
                let (ext, body) = if k.is_multiple_of(2) {
                    let lines: Vec<String> = (0..rows)
                        .map(|_| {
                            serde_json::json!({
                                "prompt": format!("Tell me about {} ({}).", p.subject, rng.pick(&p.words)),
                                "completion": sentence(&mut rng, p),
                            })
                            .to_string()
                        })
                        .collect();
                    ("jsonl", lines.join("\n") + "\n")
                } else {
                    let paras: Vec<String> = (0..rows)
                        .map(|_| format!("{} {}", sentence(&mut rng, p), sentence(&mut rng, p)))
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
            for f in &d.files {
                let bytes = std::fs::read(a.path().join(&f.path))?;
                assert_eq!(bytes, std::fs::read(b.path().join(&f.path))?);
                let fmt = formats::format_for(
                    f.path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default(),
                    &[],
                )?;
                let r = validate(
                    &bytes,
                    &fmt,
                    &RowIndex::default(),
                    &ValidationConfig::default(),
                )?;
                assert_eq!(r.rows.len(), 20);
                assert!(r.score >= 90, "{} scored {}", f.path.display(), r.score);
                let words = formats::parse(&bytes, &Format::Text, 1 << 20)?
                    .iter()
                    .flat_map(|r| {
                        r.text()
                            .split_whitespace()
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
                            p.words.iter().all(|w| !words.contains(w)),
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
