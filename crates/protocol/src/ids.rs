//! Id newtypes: a Datanet id cannot be passed where a model id or a version is meant.
//!
//! On the wire (JSON, paths) each is the plain number it wraps (`#[serde(transparent)]`); on
//! chain each is a `uint256`, converted with [`From`] / [`TryFrom`] so an id that does not fit
//! a `u64` is an error, never a silent truncation.

use alloy_primitives::U256;
use alloy_primitives::ruint::ToUintError;
use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// As the contracts' `uint256`.
            pub fn to_u256(self) -> U256 {
                U256::from(self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                s.trim().parse().map(Self).map_err(|_| IdError {
                    what: $what,
                    value: s.to_string(),
                })
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }

        impl PartialEq<u64> for $name {
            fn eq(&self, other: &u64) -> bool {
                self.0 == *other
            }
        }

        impl PartialOrd<u64> for $name {
            fn partial_cmp(&self, other: &u64) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(other)
            }
        }

        impl PartialEq<$name> for u64 {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        // `TryFrom` with ruint's error (never returned) rather than `From`, so that
        // `U256::from(id)` works like it does for `u64`.
        impl TryFrom<$name> for U256 {
            type Error = ToUintError<U256>;
            fn try_from(v: $name) -> Result<U256, Self::Error> {
                Ok(U256::from(v.0))
            }
        }

        impl TryFrom<U256> for $name {
            type Error = IdError;
            fn try_from(v: U256) -> Result<Self, IdError> {
                u64::try_from(v).map(Self).map_err(|_| IdError {
                    what: $what,
                    value: v.to_string(),
                })
            }
        }
    };
}

id!(
    /// A Datanet's id in `DatanetRegistry`.
    DatanetId,
    "datanet id"
);
id!(
    /// A model's id in `ModelRegistry`.
    ModelId,
    "model id"
);
id!(
    /// A contribution's id in `DatanetRegistry` (unique across Datanets).
    ContributionId,
    "contribution id"
);
id!(
    /// A published version of one Datanet (1, 2, …).
    Version,
    "version"
);

/// A string or `uint256` that is not a valid id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what} (a whole number below 2^64)")]
pub struct IdError {
    /// Which id was expected.
    pub what: &'static str,
    /// The value given.
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_numbers_on_the_wire_and_refuse_what_does_not_fit() {
        let id: DatanetId = serde_json::from_str("7").unwrap_or_default();
        assert_eq!(id, DatanetId(7));
        assert_eq!(
            serde_json::to_string(&Version(3)).ok().as_deref(),
            Some("3")
        );
        assert_eq!("12".parse::<ModelId>(), Ok(ModelId(12)));
        assert!("x".parse::<ContributionId>().is_err());
        assert_eq!(DatanetId(9).to_u256(), U256::from(9));
        assert_eq!(U256::from(Version(4)), U256::from(4));
        let too_big = U256::from(u64::MAX) + U256::from(1);
        let err = DatanetId::try_from(too_big).err();
        assert!(err.is_some_and(|e| e.what == "datanet id"));
    }
}
