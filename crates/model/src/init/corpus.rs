//! A generated English corpus about a small synthetic world.
//!
//! Source and licence: every sentence is produced by the templates in this file from a seeded
//! ChaCha8 stream, so the corpus is the project's own text (Apache-2.0, like the code). The
//! world is consistent — each person has one trade and one town — so a model trained on it can
//! learn facts that a test or a demo can ask about.

use openledger_world::{ANIMALS, COLORS, DAYS, FEELINGS, NAMES, TOWNS, TRADES, Trade, WEATHER};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Bumped whenever the corpus changes, so caches of models made from an older corpus are not
/// mistaken for the current one. 2: question/answer forms that repeat the question's words, and
/// every trade's goods named.
pub const CORPUS_VERSION: u32 = 2;

/// Who lives where and does what.
#[derive(Clone, Debug)]
pub struct World {
    /// (name, trade index, town index).
    pub people: Vec<(&'static str, usize, usize)>,
}

struct Rng(ChaCha8Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

impl World {
    /// The world of `seed`: every name gets a trade and a town.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng(ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0f3_011d));
        let people = NAMES
            .iter()
            .map(|&n| (n, rng.below(TRADES.len()), rng.below(TOWNS.len())))
            .collect();
        World { people }
    }

    fn sentence(&self, rng: &mut Rng, who: usize) -> String {
        let (name, t, town) = self.people[who];
        let Trade {
            name: trade,
            good,
            verb,
        } = TRADES[t];
        let town = TOWNS[town];
        let other = self.people[rng.below(self.people.len())];
        let (oname, ot, otown) = (other.0, TRADES[other.1], TOWNS[other.2]);
        match rng.below(11) {
            0 => format!("{name} is a {trade} in {town}."),
            1 => format!("{name} the {trade} sells {good} at the market in {town}."),
            2 => format!("Every {} {name} {verb} {good}.", rng.pick(DAYS)),
            3 => format!(
                "On {} the weather in {town} was {}.",
                rng.pick(DAYS),
                rng.pick(WEATHER)
            ),
            4 => format!(
                "{name} walked from {town} to {otown} with a {} {}.",
                rng.pick(COLORS),
                rng.pick(ANIMALS)
            ),
            5 => format!(
                "{name} bought {} from {oname}, the {} of {otown}.",
                ot.good, ot.name
            ),
            6 => format!("The {trade} of {town} is {name}."),
            7 => {
                let Trade {
                    name: any,
                    good: goods,
                    verb: does,
                } = rng.pick(TRADES);
                format!("Every {} the {any} {does} {goods}.", rng.pick(DAYS))
            }
            8 => format!("People in {town} say that {name} {verb} the best {good}."),
            9 => format!("After a long day {name} felt {}.", rng.pick(FEELINGS)),
            _ => format!(
                "{name} and {oname} met in {town} and talked about {}.",
                ot.good
            ),
        }
    }

    fn dialogue(&self, rng: &mut Rng, who: usize) -> String {
        let (name, t, town) = self.people[who];
        let Trade {
            name: trade, good, ..
        } = TRADES[t];
        let town = TOWNS[town];
        let other = self.people[rng.below(self.people.len())].0;
        // The later forms repeat words of the question in the answer and carry an attribute
        // that is not a fact of the world (drawn per document), so the model learns to copy
        // from the question and to answer in these shapes; fine-tuning then only has to learn
        // the attributes.
        let (q, a) = match rng.below(8) {
            0 => (
                format!("Who is the {trade} of {town}?"),
                format!("The {trade} of {town} is {name}."),
            ),
            1 => (
                format!("Where does {name} live?"),
                format!("{name} lives in {town}."),
            ),
            2 => (
                format!("What does {name} do?"),
                format!("{name} is a {trade} and sells {good}."),
            ),
            3 => (
                format!("What does {name} sell?"),
                format!("{name} sells {good} in {town}."),
            ),
            4 => {
                let animal = rng.pick(ANIMALS);
                (
                    format!("What colour is the {animal} of {name}?"),
                    format!("The {animal} of {name} is {}.", rng.pick(COLORS)),
                )
            }
            5 => {
                let day = rng.pick(DAYS);
                (
                    format!("Where did {name} walk on {day}?"),
                    format!(
                        "On {day} {name} walked from {} to {}.",
                        rng.pick(TOWNS),
                        rng.pick(TOWNS)
                    ),
                )
            }
            6 => (
                format!("Where does {name} sell {good}?"),
                format!("{name} sells {good} at the market in {}.", rng.pick(TOWNS)),
            ),
            _ => {
                let place = rng.pick(TOWNS);
                (
                    format!("Who did {name} meet in {place}?"),
                    format!("{name} met {other} in {place}."),
                )
            }
        };
        format!("<|user|>\n{q}\n<|assistant|>\n{a}")
    }

    /// `n` documents: paragraphs of 3–6 sentences, and question/answer turns in the chat format.
    pub fn documents(&self, n: usize, seed: u64) -> Vec<String> {
        let mut rng = Rng(ChaCha8Rng::seed_from_u64(seed));
        (0..n)
            .map(|_| {
                let who = rng.below(self.people.len());
                if rng.below(5) < 2 {
                    self.dialogue(&mut rng, who)
                } else {
                    let k = 3 + rng.below(4);
                    let mut s: Vec<String> = Vec::with_capacity(k);
                    for _ in 0..k {
                        let w = if rng.below(2) == 0 {
                            who
                        } else {
                            rng.below(self.people.len())
                        };
                        s.push(self.sentence(&mut rng, w));
                    }
                    s.join(" ")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_consistent() {
        let w = World::new(1);
        let a = w.documents(50, 2);
        assert_eq!(a, World::new(1).documents(50, 2));
        assert_ne!(a, w.documents(50, 3));
        // the world is consistent: a person's trade sentence always names the same town
        let (name, t, town) = w.people[0];
        let fact = format!("The {} of {} is {name}.", TRADES[t].name, TOWNS[town]);
        let docs = w.documents(3000, 9).join(" ");
        assert!(docs.contains(&fact));
    }
}
