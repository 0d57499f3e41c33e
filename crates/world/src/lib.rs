//! The synthetic world OpenLedger's toy base model is pretrained on and its demo Datanets
//! write about: who lives in it, their trades and goods, towns, days, weather, colours,
//! animals and feelings.
//!
//! The toy base's corpus (`openledger_model::init`) and the demo Datanets
//! (`openledger_datanet::demo`) both draw from these lists, so a demo fact uses only words
//! the base has learned to write. Changing a list changes the corpus: bump
//! `openledger_model::init::CORPUS_VERSION` with it.
//!
//! ```
//! use openledger_world::{NAMES, TRADES};
//! assert_eq!(NAMES.len(), 24);
//! assert!(TRADES.iter().any(|t| t.good == "bread"));
//! ```

#![no_std]

/// A trade of the world: the trade's name, the good it makes and the verb for making it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// `"baker"`.
    pub name: &'static str,
    /// `"bread"`.
    pub good: &'static str,
    /// `"bakes"`.
    pub verb: &'static str,
}

const fn trade(name: &'static str, good: &'static str, verb: &'static str) -> Trade {
    Trade { name, good, verb }
}

/// Everyone in the world.
pub const NAMES: &[&str] = &[
    "Mira", "Tomas", "Ana", "Jun", "Lena", "Ravi", "Odile", "Kofi", "Sven", "Ines", "Hugo", "Yara",
    "Pavel", "Noor", "Elio", "Zara", "Bram", "Cleo", "Dara", "Fenn", "Gita", "Ivo", "Kira", "Luca",
];

/// Every trade, with its good (no two trades share a good).
pub const TRADES: &[Trade] = &[
    trade("baker", "bread", "bakes"),
    trade("miller", "flour", "grinds"),
    trade("smith", "nails", "forges"),
    trade("weaver", "cloth", "weaves"),
    trade("fisher", "fish", "catches"),
    trade("farmer", "wheat", "grows"),
    trade("potter", "jugs", "shapes"),
    trade("healer", "salves", "mixes"),
    trade("carpenter", "chairs", "builds"),
    trade("scribe", "letters", "writes"),
    trade("brewer", "cider", "brews"),
    trade("beekeeper", "honey", "gathers"),
];

/// The towns.
pub const TOWNS: &[&str] = &[
    "Rivertown",
    "Stonebridge",
    "Ashford",
    "Millbrook",
    "Eastwick",
    "Fernhill",
    "Greywater",
    "Oakmere",
];

/// The days of the week.
pub const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Kinds of weather.
pub const WEATHER: &[&str] = &[
    "sunny", "rainy", "windy", "foggy", "cold", "warm", "stormy", "calm",
];

/// Colours.
pub const COLORS: &[&str] = &[
    "red", "blue", "green", "grey", "white", "black", "brown", "yellow",
];

/// Animals people keep.
pub const ANIMALS: &[&str] = &[
    "dog", "cat", "goat", "horse", "donkey", "goose", "sheep", "pig",
];

/// How people feel.
pub const FEELINGS: &[&str] = &[
    "happy", "tired", "proud", "calm", "busy", "hungry", "cheerful",
];
