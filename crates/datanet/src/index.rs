//! The service's index of the registry: Datanets, contributions, statuses, versions,
//! licences, plus what only the service knows (validation records of uploads). Used nonces
//! live apart, in [`crate::nonces`] (an index written per request would grow and be rewritten
//! with every signed read).
//!
//! It is rebuilt from `DatanetRegistry` events (`eth_getLogs` in block ranges). The whole
//! index and the last processed block are written together to `index.json` (temp file +
//! rename), so after a crash the index is exactly that of some processed block: replaying from
//! `last_block + 1` neither misses nor double-counts an event. Applying an event is also
//! idempotent (keyed by ids), a second line of defence.

use alloy_primitives::{Address, B256, U256};
use openledger_protocol::bindings::DatanetRegistry::DatanetRegistryEvents as Ev;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Index file format version.
pub const INDEX_VERSION: u32 = 1;

/// Contribution status as on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Awaiting curation.
    Pending,
    /// Accepted.
    Accepted,
    /// Rejected.
    Rejected,
    /// Withdrawn by its contributor.
    Withdrawn,
}

/// A Datanet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatanetInfo {
    /// Id.
    pub id: u64,
    /// Owner.
    pub owner: Address,
    /// Name.
    pub name: String,
    /// Metadata URI.
    pub metadata_uri: String,
    /// Whether reads need a licence and contributors an allowance.
    pub permissioned: bool,
    /// Licence fee (wei).
    pub licence_fee: U256,
    /// Curators appointed (besides the owner).
    pub curators: BTreeSet<Address>,
    /// Contributors allowed on a permissioned Datanet (besides the owner).
    pub allowed_contributors: BTreeSet<Address>,
    /// Accepted contribution ids in acceptance order.
    pub accepted: Vec<u64>,
    /// Published versions.
    pub versions: Vec<VersionInfo>,
    /// Licence holders.
    pub licensees: BTreeSet<Address>,
}

/// A published version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Merkle root.
    pub merkle_root: B256,
    /// Manifest hash.
    pub manifest_hash: B256,
    /// Contributions covered.
    pub count: u64,
}

/// A contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContributionInfo {
    /// Id.
    pub id: u64,
    /// Datanet.
    pub datanet_id: u64,
    /// Contributor.
    pub contributor: Address,
    /// keccak-256 of the content.
    pub content_hash: B256,
    /// Bytes (as declared on chain).
    pub byte_size: u64,
    /// Rows (as declared on chain).
    pub row_count: u64,
    /// Score recorded on chain.
    pub quality_score: u32,
    /// Metadata URI.
    pub metadata_uri: String,
    /// Status.
    pub status: Status,
    /// Rejection reason.
    pub reason: Option<String>,
    /// Block of the `Contributed` event.
    pub block: u64,
    /// Whether the on-chain score equals this service's validation of the same content
    /// (`None`: the content was not uploaded here by this contributor).
    #[serde(default)]
    pub score_matches: Option<bool>,
    /// [`UploadInfo::seq`] of the upload that backed it when its `Contributed` event was
    /// applied (`None`: unbacked). An upload stops counting as an earlier upload when every
    /// contribution recorded from it is rejected or withdrawn ([`IndexState::live_uploads`]).
    #[serde(default)]
    pub upload_seq: Option<u64>,
}

/// What the service recorded when it validated an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadInfo {
    /// keccak-256 of the bytes.
    pub content_hash: B256,
    /// Datanet.
    pub datanet_id: u64,
    /// Uploader.
    pub uploader: Address,
    /// File name.
    pub file_name: String,
    /// Parsed format.
    pub format: crate::formats::Format,
    /// Bytes.
    pub byte_size: u64,
    /// Rows.
    pub row_count: u64,
    /// Score 0..=100.
    pub score: u32,
    /// Reasons for deductions.
    pub reasons: Vec<String>,
    /// Merkle root over the rows.
    pub rows_root: B256,
    /// Position in this service's upload order (1, 2, …, across Datanets): the score was
    /// computed against the rows of every earlier upload of the Datanet that still counted.
    #[serde(default)]
    pub seq: u64,
}

/// The persisted index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexState {
    /// [`INDEX_VERSION`].
    pub format: u32,
    /// Last block whose events are applied (`None`: none yet).
    pub last_block: Option<u64>,
    /// Datanets by id.
    pub datanets: BTreeMap<u64, DatanetInfo>,
    /// Contributions by id.
    pub contributions: BTreeMap<u64, ContributionInfo>,
    /// Validated uploads: datanet → content hash → record.
    pub uploads: BTreeMap<u64, BTreeMap<B256, UploadInfo>>,
    /// Events applied (for audits and tests: each counted once).
    pub events_applied: u64,
    /// The last [`UploadInfo::seq`] given out.
    #[serde(default)]
    pub upload_seq: u64,
}

/// Index persistence errors.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Disk I/O.
    #[error("index file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a valid index.
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// Cause.
        reason: String,
    },
}

impl IndexState {
    /// Loads `index.json` from `dir` (an empty index when absent).
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let path = dir.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut st: Self =
                    serde_json::from_slice(&bytes).map_err(|e| IndexError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                st.number_legacy_uploads();
                Ok(st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                format: INDEX_VERSION,
                ..Default::default()
            }),
            Err(source) => Err(IndexError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes `index.json` atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), IndexError> {
        let path = dir.join("index.json");
        let tmp = dir.join("index.json.tmp");
        let io = |source| IndexError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec(self).map_err(|e| IndexError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// Gives upload records written before uploads were numbered (`seq` 0) a number after
    /// every numbered one, in the order their contributions reached the chain (uncontributed
    /// ones last, by Datanet and hash), and links their contributions to them. Deterministic,
    /// so loading the same file twice gives the same index.
    fn number_legacy_uploads(&mut self) {
        let mut first_block: BTreeMap<(u64, B256), u64> = BTreeMap::new();
        for c in self.contributions.values() {
            if self.backing(c).is_some_and(|u| u.seq == 0) {
                let b = first_block
                    .entry((c.datanet_id, c.content_hash))
                    .or_insert(c.block);
                *b = (*b).min(c.block);
            }
        }
        let mut legacy: Vec<(u64, u64, B256)> = self
            .uploads
            .iter()
            .flat_map(|(d, m)| m.values().filter(|u| u.seq == 0).map(move |u| (*d, u)))
            .map(|(d, u)| {
                let block = first_block
                    .get(&(d, u.content_hash))
                    .copied()
                    .unwrap_or(u64::MAX);
                (block, d, u.content_hash)
            })
            .collect();
        legacy.sort();
        for (_, d, hash) in legacy {
            if let Some(u) = self.uploads.get_mut(&d).and_then(|m| m.get_mut(&hash)) {
                self.upload_seq += 1;
                u.seq = self.upload_seq;
            }
        }
        let links: Vec<(u64, u64)> = self
            .contributions
            .values()
            .filter(|c| c.upload_seq.is_none())
            .filter_map(|c| self.backing(c).map(|u| (c.id, u.seq)))
            .collect();
        for (id, seq) in links {
            if let Some(c) = self.contributions.get_mut(&id) {
                c.upload_seq = Some(seq);
            }
        }
    }

    /// The uploads a new upload of their Datanet is compared with: every upload recorded here
    /// except those whose contributions (the ones recorded on chain from it, see
    /// [`ContributionInfo::upload_seq`]) are all rejected or withdrawn. An upload not (yet)
    /// contributed counts; so does one whose contribution is pending or accepted.
    pub fn live_uploads(&self) -> impl Iterator<Item = &UploadInfo> {
        // seq → whether one of its contributions is pending or accepted.
        let mut linked: std::collections::HashMap<u64, bool> = std::collections::HashMap::new();
        for c in self.contributions.values() {
            if let Some(seq) = c.upload_seq {
                *linked.entry(seq).or_default() |=
                    matches!(c.status, Status::Pending | Status::Accepted);
            }
        }
        self.uploads
            .values()
            .flat_map(|m| m.values())
            .filter(move |u| linked.get(&u.seq).copied().unwrap_or(true))
    }

    /// Whether `u` is one of [`IndexState::live_uploads`].
    pub fn upload_is_live(&self, u: &UploadInfo) -> bool {
        let mut linked = self
            .contributions
            .values()
            .filter(|c| c.upload_seq == Some(u.seq))
            .peekable();
        linked.peek().is_none()
            || linked.any(|c| matches!(c.status, Status::Pending | Status::Accepted))
    }

    /// Pending or accepted contribution holding `hash` in a Datanet.
    pub fn live_contribution_by_hash(
        &self,
        datanet: u64,
        hash: &B256,
    ) -> Option<&ContributionInfo> {
        self.contributions.values().find(|c| {
            c.datanet_id == datanet
                && c.content_hash == *hash
                && matches!(c.status, Status::Pending | Status::Accepted)
        })
    }

    /// The upload that backs a contribution: the file its contributor uploaded to its Datanet
    /// through this service (EIP-712 signed, so the uploader is proven). `None`: the hash was
    /// recorded on chain without such an upload (anyone can copy a hash from a public page);
    /// its content is never served through this Datanet and it cannot be in a version.
    pub fn backing(&self, c: &ContributionInfo) -> Option<&UploadInfo> {
        self.uploads
            .get(&c.datanet_id)
            .and_then(|m| m.get(&c.content_hash))
            .filter(|u| u.uploader == c.contributor)
    }

    /// Applies one registry event. Returns the contribution id newly accepted, if any.
    pub fn apply(&mut self, ev: &Ev, block: u64) -> Option<u64> {
        self.events_applied += 1;
        let id = |v: &U256| v.saturating_to::<u64>();
        match ev {
            Ev::DatanetCreated(e) => {
                let d = id(&e.datanetId);
                self.datanets.entry(d).or_insert_with(|| DatanetInfo {
                    id: d,
                    owner: e.owner,
                    name: e.name.clone(),
                    metadata_uri: e.metadataURI.clone(),
                    permissioned: e.permissioned,
                    licence_fee: e.licenceFee,
                    curators: BTreeSet::new(),
                    allowed_contributors: BTreeSet::new(),
                    accepted: Vec::new(),
                    versions: Vec::new(),
                    licensees: BTreeSet::new(),
                });
            }
            Ev::LicenceFeeUpdated(e) => {
                if let Some(d) = self.datanets.get_mut(&id(&e.datanetId)) {
                    d.licence_fee = e.fee;
                }
            }
            Ev::CuratorUpdated(e) => {
                if let Some(d) = self.datanets.get_mut(&id(&e.datanetId)) {
                    if e.allowed {
                        d.curators.insert(e.account);
                    } else {
                        d.curators.remove(&e.account);
                    }
                }
            }
            Ev::ContributorUpdated(e) => {
                if let Some(d) = self.datanets.get_mut(&id(&e.datanetId)) {
                    if e.allowed {
                        d.allowed_contributors.insert(e.account);
                    } else {
                        d.allowed_contributors.remove(&e.account);
                    }
                }
            }
            Ev::Contributed(e) => {
                let c = id(&e.contributionId);
                let backing = self
                    .uploads
                    .get(&id(&e.datanetId))
                    .and_then(|m| m.get(&e.contentHash))
                    .filter(|u| u.uploader == e.contributor);
                let score_matches =
                    backing.map(|u| u.score == e.qualityScore && u.row_count == e.rowCount);
                let upload_seq = backing.map(|u| u.seq);
                self.contributions
                    .entry(c)
                    .or_insert_with(|| ContributionInfo {
                        id: c,
                        datanet_id: id(&e.datanetId),
                        contributor: e.contributor,
                        content_hash: e.contentHash,
                        byte_size: e.byteSize,
                        row_count: e.rowCount,
                        quality_score: e.qualityScore,
                        metadata_uri: e.metadataURI.clone(),
                        status: Status::Pending,
                        reason: None,
                        block,
                        score_matches,
                        upload_seq,
                    });
            }
            Ev::ContributionApproved(e) => {
                let c = id(&e.contributionId);
                let info = self.contributions.get_mut(&c)?;
                if info.status != Status::Pending {
                    return None;
                }
                info.status = Status::Accepted;
                let d = self.datanets.get_mut(&info.datanet_id)?;
                d.accepted.push(c);
                return Some(c);
            }
            Ev::ContributionRejected(e) => {
                if let Some(info) = self.contributions.get_mut(&id(&e.contributionId)) {
                    info.status = Status::Rejected;
                    info.reason = Some(e.reason.clone());
                }
            }
            Ev::ContributionWithdrawn(e) => {
                if let Some(info) = self.contributions.get_mut(&id(&e.contributionId)) {
                    info.status = Status::Withdrawn;
                }
            }
            Ev::VersionPublished(e) => {
                if let Some(d) = self.datanets.get_mut(&id(&e.datanetId)) {
                    let v = id(&e.version) as usize;
                    if d.versions.len() == v {
                        d.versions.push(VersionInfo {
                            merkle_root: e.merkleRoot,
                            manifest_hash: e.manifestHash,
                            count: id(&e.count),
                        });
                    }
                }
            }
            Ev::LicencePurchased(e) => {
                if let Some(d) = self.datanets.get_mut(&id(&e.datanetId)) {
                    d.licensees.insert(e.buyer);
                }
            }
            _ => self.events_applied -= 1,
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::Format;

    fn upload(d: u64, hash: u8, uploader: u8, seq: u64) -> UploadInfo {
        UploadInfo {
            content_hash: B256::repeat_byte(hash),
            datanet_id: d,
            uploader: Address::repeat_byte(uploader),
            file_name: "f.txt".into(),
            format: Format::Text,
            byte_size: 1,
            row_count: 1,
            score: 100,
            reasons: Vec::new(),
            rows_root: B256::ZERO,
            seq,
        }
    }

    fn contribution(id: u64, d: u64, hash: u8, who: u8, block: u64, s: Status) -> ContributionInfo {
        ContributionInfo {
            id,
            datanet_id: d,
            contributor: Address::repeat_byte(who),
            content_hash: B256::repeat_byte(hash),
            byte_size: 1,
            row_count: 1,
            quality_score: 100,
            metadata_uri: String::new(),
            status: s,
            reason: None,
            block,
            score_matches: Some(true),
            upload_seq: None,
        }
    }

    fn live(st: &IndexState) -> Vec<u8> {
        let mut v: Vec<u8> = st.live_uploads().map(|u| u.content_hash[0]).collect();
        v.sort();
        v
    }

    #[test]
    fn legacy_uploads_are_numbered_in_chain_order_and_linked() {
        let mut st = IndexState {
            upload_seq: 2,
            ..Default::default()
        };
        for u in [
            upload(1, 0xa, 1, 0), // contributed at block 9
            upload(1, 0xb, 2, 0), // contributed at block 5
            upload(1, 0xc, 3, 0), // never contributed
            upload(1, 0xd, 4, 2), // already numbered
        ] {
            st.uploads.entry(1).or_default().insert(u.content_hash, u);
        }
        st.contributions
            .insert(1, contribution(1, 1, 0xa, 1, 9, Status::Rejected));
        st.contributions
            .insert(2, contribution(2, 1, 0xb, 2, 5, Status::Pending));
        // An unbacked contribution of 0xc (not its uploader): linked to nothing.
        st.contributions
            .insert(3, contribution(3, 1, 0xc, 9, 1, Status::Withdrawn));
        st.number_legacy_uploads();
        let seq = |h: u8| st.uploads[&1][&B256::repeat_byte(h)].seq;
        assert_eq!((seq(0xb), seq(0xa), seq(0xc), seq(0xd)), (3, 4, 5, 2));
        assert_eq!(st.upload_seq, 5);
        assert_eq!(st.contributions[&1].upload_seq, Some(4));
        assert_eq!(st.contributions[&2].upload_seq, Some(3));
        assert_eq!(st.contributions[&3].upload_seq, None);
        let again = st.clone();
        st.number_legacy_uploads();
        assert_eq!(st, again, "numbering twice changes nothing");
        // 0xa: its only contribution rejected; the others count.
        assert_eq!(live(&st), vec![0xb, 0xc, 0xd]);
        assert!(!st.upload_is_live(&st.uploads[&1][&B256::repeat_byte(0xa)]));
        // Contributed anew from the same upload: counts again.
        let mut again = contribution(4, 1, 0xa, 1, 12, Status::Pending);
        again.upload_seq = Some(4);
        st.contributions.insert(4, again);
        assert_eq!(live(&st), vec![0xa, 0xb, 0xc, 0xd]);
        if let Some(c) = st.contributions.get_mut(&2) {
            c.status = Status::Withdrawn;
        }
        assert_eq!(live(&st), vec![0xa, 0xc, 0xd]);
        assert!(st.upload_is_live(&st.uploads[&1][&B256::repeat_byte(0xa)]));
    }
}
