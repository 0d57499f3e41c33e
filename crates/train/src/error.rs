//! Errors of training, jobs and publication.

use std::path::PathBuf;

/// Everything that can go wrong. Variants a caller (or the HTTP layer) handles differently
/// are separate; each maps to one stable `type` string ([`TrainError::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A request or configuration field is out of range; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, as spelled in the JSON request (`rank`, `learningRate`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The job's owner may not use the Datanet (permissioned, no licence, not the owner).
    #[error("{account} holds no licence for datanet {datanet}")]
    NotLicensed {
        /// Datanet id.
        datanet: u64,
        /// The account asking.
        account: String,
    },
    /// No Datanet with this id on chain.
    #[error("datanet {0} does not exist")]
    DatanetNotFound(u64),
    /// The Datanet has no such published version.
    #[error("datanet {datanet} has no version {version}")]
    VersionNotFound {
        /// Datanet id.
        datanet: u64,
        /// Version asked for.
        version: u64,
    },
    /// The version has no rows to train on.
    #[error("datanet {datanet} version {version} has no rows")]
    EmptyVersion {
        /// Datanet id.
        datanet: u64,
        /// Version.
        version: u64,
    },
    /// The version's manifest is not the version it claims on chain (another Datanet's
    /// manifest, a foreign registry or chain, contributions that are not the version's).
    #[error("{0}")]
    ManifestMismatch(String),
    /// A contribution of the version was not uploaded to its Datanet by its contributor (its
    /// hash was only recorded on chain), so its content is not readable through that Datanet.
    #[error(
        "contribution {contribution} of datanet {datanet} is not backed by an upload of its \
         contributor: it cannot be trained on"
    )]
    Unbacked {
        /// Datanet.
        datanet: u64,
        /// Contribution.
        contribution: u64,
    },
    /// A job would cost more than the service's limits allow (`JobLimits`).
    #[error("{field}: {value} {what}, over the cap of {cap}")]
    OverLimit {
        /// The request field that sets the cost.
        field: String,
        /// The requested (or planned) amount.
        value: u128,
        /// The cap.
        cap: u128,
        /// What is counted.
        what: String,
    },
    /// Too many queued or running jobs (of this owner, or in all); retry later.
    #[error("{reason}")]
    TooManyJobs {
        /// Which cap, and how many jobs are active.
        reason: String,
        /// Suggested wait (the HTTP `Retry-After`).
        retry_after_secs: u64,
    },
    /// The base model named by hash or name is not known.
    #[error("base model {0} not found")]
    BaseModelNotFound(String),
    /// Data read from a Datanet does not match its on-chain commitments.
    #[error("data integrity: {0}")]
    Integrity(String),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The job or model is in a state that does not allow the action.
    #[error("{0}")]
    Conflict(String),
    /// No such job.
    #[error("job {0} not found")]
    JobNotFound(String),
    /// The request is not signed by the right account.
    #[error("unauthorised: {0}")]
    Unauthorised(String),
    /// The signed request's nonce was used before (a replay).
    #[error("replayed request: {0}")]
    ReplayedNonce(String),
    /// The used-nonce log failed.
    #[error(transparent)]
    Nonces(#[from] openledger_datanet::nonces::NonceError),
    /// The signed request's signer is not the job's owner.
    #[error("{0}")]
    Forbidden(String),
    /// The model runtime refused something (adapter config, weights, tokenizer).
    #[error("model: {0}")]
    Model(#[from] openledger_model::Error),
    /// Tensor arithmetic failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The Datanet API or registry failed.
    #[error("datanet: {0}")]
    Datanet(#[from] openledger_datanet::ClientError),
    /// The content store failed.
    #[error("store: {0}")]
    Store(#[from] openledger_datanet::StoreError),
    /// A contribution could not be parsed into rows.
    #[error("contribution {name}: {reason}")]
    Format {
        /// File name of the contribution.
        name: String,
        /// Parser message.
        reason: String,
    },
    /// A chain call or transaction failed.
    #[error("chain: {0}")]
    Chain(#[from] openledger_protocol::ChainError),
    /// A checkpoint or sketch file is malformed.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// Local I/O.
    #[error("io {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// An invalid field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        TrainError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt file.
    pub fn corrupt(what: &str, reason: impl std::fmt::Display) -> Self {
        TrainError::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// The stable machine-readable type of this error (used in HTTP bodies and job records).
    pub fn kind(&self) -> &'static str {
        match self {
            TrainError::InvalidField { .. } => "invalid_field",
            TrainError::NotLicensed { .. } => "not_licensed",
            TrainError::DatanetNotFound(_) => "datanet_not_found",
            TrainError::VersionNotFound { .. } => "version_not_found",
            TrainError::EmptyVersion { .. } => "empty_version",
            TrainError::ManifestMismatch(_) => "manifest_mismatch",
            TrainError::OverLimit { .. } => "over_limit",
            TrainError::TooManyJobs { .. } => "too_many_jobs",
            TrainError::Unbacked { .. } => "unbacked_contribution",
            TrainError::BaseModelNotFound(_) => "base_model_not_found",
            TrainError::Integrity(_) => "data_integrity",
            TrainError::Cancelled => "cancelled",
            TrainError::Conflict(_) => "conflict",
            TrainError::JobNotFound(_) => "job_not_found",
            TrainError::Unauthorised(_) => "unauthorised",
            TrainError::ReplayedNonce(_) => "replayed_nonce",
            TrainError::Nonces(_) => "nonce_store",
            TrainError::Forbidden(_) => "forbidden",
            TrainError::Model(_) => "model_error",
            TrainError::Tensor(_) => "tensor_error",
            TrainError::Datanet(_) => "datanet_error",
            TrainError::Store(_) => "store_error",
            TrainError::Format { .. } => "malformed_contribution",
            TrainError::Chain(_) => "chain_error",
            TrainError::Corrupt { .. } => "corrupt_file",
            TrainError::Io { .. } => "io_error",
        }
    }

    /// Seconds after which a refused request may be retried (HTTP `Retry-After`), if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            TrainError::TooManyJobs {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The request field this error is about (the `field` of an HTTP error body), if one.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            TrainError::InvalidField { field, .. } | TrainError::OverLimit { field, .. } => {
                Some(field)
            }
            TrainError::DatanetNotFound(_) | TrainError::NotLicensed { .. } => Some("datanetId"),
            TrainError::VersionNotFound { .. }
            | TrainError::EmptyVersion { .. }
            | TrainError::ManifestMismatch(_)
            | TrainError::Unbacked { .. } => Some("version"),
            TrainError::BaseModelNotFound(_) => Some("baseModel"),
            _ => None,
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            TrainError::InvalidField { .. } | TrainError::Format { .. } => 400,
            TrainError::EmptyVersion { .. }
            | TrainError::ManifestMismatch(_)
            | TrainError::OverLimit { .. } => 422,
            TrainError::TooManyJobs { .. } => 429,
            TrainError::Unauthorised(_) | TrainError::ReplayedNonce(_) => 401,
            TrainError::NotLicensed { .. }
            | TrainError::Forbidden(_)
            | TrainError::Unbacked { .. } => 403,
            TrainError::DatanetNotFound(_)
            | TrainError::VersionNotFound { .. }
            | TrainError::BaseModelNotFound(_)
            | TrainError::JobNotFound(_) => 404,
            TrainError::Conflict(_) | TrainError::Cancelled => 409,
            TrainError::Datanet(openledger_datanet::ClientError::Api { status, .. }) => *status,
            _ => 500,
        }
    }
}
