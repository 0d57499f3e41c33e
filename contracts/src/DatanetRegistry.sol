// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ProtocolParams} from "./ProtocolParams.sol";
import {PullPayments} from "./PullPayments.sol";

/// @title DatanetRegistry
/// @notice Datanets: community datasets whose contributions are recorded on chain by content
///         hash, curated by the Datanet's owner and curators, and published as immutable
///         versions. Model builders buy a licence; the fee is split between the owner and the
///         contributions of the latest version, and paid by pull.
/// @dev Licence fee rule: ownerShare = fee × licenceOwnerBps / 10,000 (rounded down);
///      pool = fee − ownerShare; each of the N contributions in the latest version earns
///      floor(pool / N); the remainder (pool − N × floor(pool / N), < N wei) goes to the owner.
///      Versions are prefixes of the append-only list of accepted contributions (a version
///      snapshots everything accepted so far), so a per-Datanet accumulator pays every
///      contribution for exactly the purchases made while it was in the latest version.
///      Contribution earnings are moved to the contributor's balance by `collect`, then `claim`ed.
contract DatanetRegistry is PullPayments {
    /// @notice Lifecycle of a contribution. Only Pending contributions can change status.
    enum Status {
        None,
        Pending,
        Accepted,
        Rejected,
        Withdrawn
    }

    /// @notice A Datanet.
    struct Datanet {
        address owner;
        bool permissioned;
        uint64 createdAt;
        uint256 licenceFee;
        /// Sum over licence purchases of the per-contribution payout (wei).
        uint256 rewardPerContribution;
        string name;
        string metadataURI;
    }

    /// @notice A contribution; ids are global across Datanets and start at 1.
    /// @dev Field order packs the record into four slots (plus the URI's data when > 31 bytes).
    struct Contribution {
        address contributor;
        Status status;
        uint32 qualityScore;
        uint64 datanetId;
        uint64 byteSize;
        uint64 rowCount;
        /// Position in the Datanet's accepted list (valid when Accepted).
        uint64 acceptedIndex;
        bytes32 contentHash;
        string metadataURI;
    }

    /// @notice An immutable Datanet version.
    struct Version {
        bytes32 merkleRoot;
        bytes32 manifestHash;
        uint64 count;
        uint64 publishedAt;
        /// Rows in the version's contributions: the sum of their declared `rowCount`s (what the
        /// contributor stated and a curator approved; the Datanet service counts them on upload).
        uint128 rows;
        /// `rewardPerContribution` when the version was published.
        uint256 rewardAtPublish;
    }

    /// @notice The governed parameters (creation fee, treasury, licence split).
    ProtocolParams public immutable params;

    /// @notice Number of Datanets; ids are 1..datanetCount.
    uint256 public datanetCount;
    /// @notice Number of contributions; ids are 1..contributionCount.
    uint256 public contributionCount;
    /// @notice Licence earnings assigned to contributions but not yet collected (wei).
    ///         Invariant: address(this).balance == totalBalances + totalUncollected.
    uint256 public totalUncollected;

    mapping(uint256 datanetId => Datanet) private _datanets;
    mapping(uint256 contributionId => Contribution) private _contributions;
    mapping(uint256 datanetId => uint256[]) private _accepted;
    mapping(uint256 datanetId => Version[]) private _versions;
    /// @notice Sum of the declared `rowCount` of a Datanet's accepted contributions.
    mapping(uint256 datanetId => uint256) public acceptedRows;
    /// @notice Whether `account` curates `datanetId` (the owner always may).
    mapping(uint256 datanetId => mapping(address account => bool)) public isCurator;
    /// @notice Whether `account` may contribute to a permissioned `datanetId`.
    mapping(uint256 datanetId => mapping(address account => bool)) public isAllowedContributor;
    /// @notice Pending or accepted contribution holding a content hash in a Datanet (0 if none).
    mapping(uint256 datanetId => mapping(bytes32 contentHash => uint256)) public contributionByHash;
    /// @notice Version number + 1 at which `account` licensed `datanetId` (0 = no licence).
    mapping(uint256 datanetId => mapping(address account => uint256)) public licensedAt;
    /// @dev `rewardPerContribution` up to which a contribution has been paid (0 = from its version).
    mapping(uint256 contributionId => uint256) private _rewardPaid;

    /// @notice A Datanet was created.
    event DatanetCreated(
        uint256 indexed datanetId,
        address indexed owner,
        string name,
        string metadataURI,
        bool permissioned,
        uint256 licenceFee
    );
    /// @notice The licence fee of a Datanet changed.
    event LicenceFeeUpdated(uint256 indexed datanetId, uint256 fee);
    /// @notice A curator was appointed (`allowed`) or removed.
    event CuratorUpdated(uint256 indexed datanetId, address indexed account, bool allowed);
    /// @notice A contributor was allowed (`allowed`) or disallowed on a permissioned Datanet.
    event ContributorUpdated(uint256 indexed datanetId, address indexed account, bool allowed);
    /// @notice A contribution was submitted (status Pending).
    event Contributed(
        uint256 indexed contributionId,
        uint256 indexed datanetId,
        address indexed contributor,
        bytes32 contentHash,
        uint64 byteSize,
        uint64 rowCount,
        uint32 qualityScore,
        string metadataURI
    );
    /// @notice A curator accepted a contribution.
    event ContributionApproved(uint256 indexed contributionId, uint256 indexed datanetId, address indexed curator);
    /// @notice A curator rejected a contribution.
    event ContributionRejected(
        uint256 indexed contributionId, uint256 indexed datanetId, address indexed curator, string reason
    );
    /// @notice The contributor withdrew a pending contribution.
    event ContributionWithdrawn(uint256 indexed contributionId, uint256 indexed datanetId);
    /// @notice A version was published.
    event VersionPublished(
        uint256 indexed datanetId, uint256 indexed version, bytes32 merkleRoot, uint256 count, bytes32 manifestHash
    );
    /// @notice A licence was bought.
    event LicencePurchased(
        uint256 indexed datanetId,
        address indexed buyer,
        uint256 indexed version,
        uint256 fee,
        uint256 ownerAmount,
        uint256 perContribution
    );
    /// @notice Licence earnings of a contribution were moved to its contributor's balance.
    event RewardCollected(uint256 indexed contributionId, address indexed contributor, uint256 amount);

    /// @notice No Datanet with this id.
    error DatanetNotFound(uint256 datanetId);
    /// @notice No contribution with this id.
    error ContributionNotFound(uint256 contributionId);
    /// @notice Caller is not the Datanet owner.
    error NotDatanetOwner(uint256 datanetId, address caller);
    /// @notice Caller is neither owner nor curator.
    error NotCurator(uint256 datanetId, address caller);
    /// @notice Caller is not the contributor.
    error NotContributor(uint256 contributionId, address caller);
    /// @notice Caller may not contribute to this permissioned Datanet.
    error ContributorNotAllowed(uint256 datanetId, address caller);
    /// @notice The contribution is not Pending (already decided or withdrawn).
    error NotPending(uint256 contributionId, Status status);
    /// @notice The contribution is not Accepted.
    error NotAccepted(uint256 contributionId, Status status);
    /// @notice The same content is already pending or accepted in this Datanet.
    error DuplicateContent(uint256 datanetId, bytes32 contentHash, uint256 existing);
    /// @notice The content hash is zero.
    error EmptyContentHash();
    /// @notice `msg.value` differs from the Datanet creation fee.
    error IncorrectCreationFee(uint256 required, uint256 paid);
    /// @notice `msg.value` is below the licence fee.
    error LicenceFeeUnderpaid(uint256 required, uint256 paid);
    /// @notice `msg.value` is above the licence fee.
    error LicenceFeeOverpaid(uint256 required, uint256 paid);
    /// @notice The caller already holds a licence.
    error AlreadyLicensed(uint256 datanetId, address account);
    /// @notice The Datanet has no published version yet.
    error NoPublishedVersion(uint256 datanetId);
    /// @notice A version must cover exactly the accepted contributions, and at least one.
    error VersionCountMismatch(uint256 accepted, uint256 given);
    /// @notice No such version.
    error VersionNotFound(uint256 datanetId, uint256 version);
    /// @notice The Datanet name is empty.
    error EmptyName();

    /// @param params_ The ProtocolParams contract.
    constructor(ProtocolParams params_) {
        params = params_;
    }

    // ------------------------------------------------------------------ Datanets

    /// @notice Creates a Datanet owned by the caller; `msg.value` must equal the creation fee,
    ///         which is credited to the treasury.
    /// @return datanetId The new Datanet's id.
    function createDatanet(string calldata name, string calldata metadataURI, bool permissioned, uint256 licenceFee)
        external
        payable
        returns (uint256 datanetId)
    {
        if (bytes(name).length == 0) revert EmptyName();
        uint256 fee = params.datanetCreationFee();
        if (msg.value != fee) revert IncorrectCreationFee(fee, msg.value);
        if (fee != 0) _credit(params.treasury(), fee);
        datanetId = ++datanetCount;
        Datanet storage d = _datanets[datanetId];
        d.owner = msg.sender;
        d.permissioned = permissioned;
        d.createdAt = uint64(block.timestamp);
        d.licenceFee = licenceFee;
        d.name = name;
        d.metadataURI = metadataURI;
        emit DatanetCreated(datanetId, msg.sender, name, metadataURI, permissioned, licenceFee);
    }

    /// @notice Sets the licence fee for future purchases. Owner only.
    function setLicenceFee(uint256 datanetId, uint256 fee) external {
        _onlyOwner(datanetId);
        _datanets[datanetId].licenceFee = fee;
        emit LicenceFeeUpdated(datanetId, fee);
    }

    /// @notice Appoints (`allowed`) or removes a curator. Owner only.
    function setCurator(uint256 datanetId, address account, bool allowed) external {
        _onlyOwner(datanetId);
        isCurator[datanetId][account] = allowed;
        emit CuratorUpdated(datanetId, account, allowed);
    }

    /// @notice Allows (`allowed`) or disallows a contributor on a permissioned Datanet. Owner only.
    function setContributorAllowed(uint256 datanetId, address account, bool allowed) external {
        _onlyOwner(datanetId);
        isAllowedContributor[datanetId][account] = allowed;
        emit ContributorUpdated(datanetId, account, allowed);
    }

    /// @notice The Datanet record.
    function getDatanet(uint256 datanetId) external view returns (Datanet memory) {
        return _datanet(datanetId);
    }

    // ------------------------------------------------------------------ contributions

    /// @notice Submits a contribution (status Pending); the caller is the contributor.
    /// @param contentHash Hash of the contributed content (sha-256 or keccak-256 of the bytes).
    /// @param qualityScore Automatic validation score (0..100, the re-runnable score of `openledger_datanet::validate`).
    /// @return contributionId The new contribution's id.
    function contribute(
        uint256 datanetId,
        bytes32 contentHash,
        uint64 byteSize,
        uint64 rowCount,
        uint32 qualityScore,
        string calldata metadataURI
    ) external returns (uint256 contributionId) {
        Datanet storage d = _datanet(datanetId);
        if (d.permissioned && msg.sender != d.owner && !isAllowedContributor[datanetId][msg.sender]) {
            revert ContributorNotAllowed(datanetId, msg.sender);
        }
        if (contentHash == bytes32(0)) revert EmptyContentHash();
        uint256 existing = contributionByHash[datanetId][contentHash];
        if (existing != 0) revert DuplicateContent(datanetId, contentHash, existing);
        contributionId = ++contributionCount;
        contributionByHash[datanetId][contentHash] = contributionId;
        _contributions[contributionId] = Contribution({
            datanetId: uint64(datanetId), // an existing id, so at most datanetCount
            contributor: msg.sender,
            status: Status.Pending,
            qualityScore: qualityScore,
            byteSize: byteSize,
            rowCount: rowCount,
            acceptedIndex: 0,
            contentHash: contentHash,
            metadataURI: metadataURI
        });
        emit Contributed(contributionId, datanetId, msg.sender, contentHash, byteSize, rowCount, qualityScore, metadataURI);
    }

    /// @notice Accepts a pending contribution. Owner or curator only.
    function approve(uint256 contributionId) external {
        Contribution storage c = _pendingForCuration(contributionId);
        uint256[] storage accepted = _accepted[c.datanetId];
        c.status = Status.Accepted;
        c.acceptedIndex = uint64(accepted.length);
        accepted.push(contributionId);
        acceptedRows[c.datanetId] += c.rowCount;
        emit ContributionApproved(contributionId, c.datanetId, msg.sender);
    }

    /// @notice Rejects a pending contribution; its content hash may be submitted again.
    ///         Owner or curator only.
    function reject(uint256 contributionId, string calldata reason) external {
        Contribution storage c = _pendingForCuration(contributionId);
        c.status = Status.Rejected;
        delete contributionByHash[c.datanetId][c.contentHash];
        emit ContributionRejected(contributionId, c.datanetId, msg.sender, reason);
    }

    /// @notice The contributor withdraws a pending contribution.
    function withdrawContribution(uint256 contributionId) external {
        Contribution storage c = _contribution(contributionId);
        if (c.contributor != msg.sender) revert NotContributor(contributionId, msg.sender);
        if (c.status != Status.Pending) revert NotPending(contributionId, c.status);
        c.status = Status.Withdrawn;
        delete contributionByHash[c.datanetId][c.contentHash];
        emit ContributionWithdrawn(contributionId, c.datanetId);
    }

    /// @notice The contribution record.
    function getContribution(uint256 contributionId) external view returns (Contribution memory) {
        return _contribution(contributionId);
    }

    /// @notice Contributors of accepted contributions, in order; reverts if any is not Accepted.
    ///         Used by AttributionSettlement to route inference fees.
    function contributorsOf(uint256[] calldata contributionIds) external view returns (address[] memory contributors) {
        contributors = new address[](contributionIds.length);
        for (uint256 i = 0; i < contributionIds.length; ++i) {
            Contribution storage c = _contributions[contributionIds[i]];
            if (c.status != Status.Accepted) {
                if (c.status == Status.None) revert ContributionNotFound(contributionIds[i]);
                revert NotAccepted(contributionIds[i], c.status);
            }
            contributors[i] = c.contributor;
        }
    }

    /// @notice Number of accepted contributions of a Datanet.
    function acceptedCount(uint256 datanetId) external view returns (uint256) {
        return _accepted[datanetId].length;
    }

    /// @notice Accepted contribution ids of a Datanet in acceptance order, from `start`, at most `limit`.
    ///         Version v covers the first `getVersion(v).count` of them.
    function acceptedContributions(uint256 datanetId, uint256 start, uint256 limit)
        external
        view
        returns (uint256[] memory ids)
    {
        uint256[] storage all = _accepted[datanetId];
        uint256 end = start + limit > all.length ? all.length : start + limit;
        if (start >= end) return new uint256[](0);
        ids = new uint256[](end - start);
        for (uint256 i = start; i < end; ++i) {
            ids[i - start] = all[i];
        }
    }

    // ------------------------------------------------------------------ versions

    /// @notice Publishes an immutable version covering every contribution accepted so far.
    ///         Owner only.
    /// @param merkleRoot Merkle root over the accepted contributions (in acceptance order).
    /// @param count Must equal `acceptedCount(datanetId)` (guards against a race with approvals).
    /// @param manifestHash Hash of the version manifest (file list, splits, licence text).
    /// @return version The new version number (0-based).
    function publishVersion(uint256 datanetId, bytes32 merkleRoot, uint256 count, bytes32 manifestHash)
        external
        returns (uint256 version)
    {
        Datanet storage d = _onlyOwner(datanetId);
        uint256 accepted = _accepted[datanetId].length;
        if (count != accepted || count == 0) revert VersionCountMismatch(accepted, count);
        Version[] storage vs = _versions[datanetId];
        version = vs.length;
        vs.push(
            Version({
                merkleRoot: merkleRoot,
                manifestHash: manifestHash,
                count: uint64(count),
                publishedAt: uint64(block.timestamp),
                rows: uint128(acceptedRows[datanetId]), // < 2^64 contributions of < 2^64 rows each
                rewardAtPublish: d.rewardPerContribution
            })
        );
        emit VersionPublished(datanetId, version, merkleRoot, count, manifestHash);
    }

    /// @notice Number of published versions of a Datanet.
    function versionCount(uint256 datanetId) external view returns (uint256) {
        return _versions[datanetId].length;
    }

    /// @notice A published version.
    function getVersion(uint256 datanetId, uint256 version) external view returns (Version memory) {
        Version[] storage vs = _versions[datanetId];
        if (version >= vs.length) revert VersionNotFound(datanetId, version);
        return vs[version];
    }

    // ------------------------------------------------------------------ licences

    /// @notice Buys a perpetual licence to the Datanet; `msg.value` must equal the licence fee.
    ///         The fee is credited by the rule in the contract header.
    function buyLicence(uint256 datanetId) external payable {
        Datanet storage d = _datanet(datanetId);
        uint256 fee = d.licenceFee;
        if (msg.value < fee) revert LicenceFeeUnderpaid(fee, msg.value);
        if (msg.value > fee) revert LicenceFeeOverpaid(fee, msg.value);
        if (licensedAt[datanetId][msg.sender] != 0) revert AlreadyLicensed(datanetId, msg.sender);
        Version[] storage vs = _versions[datanetId];
        if (vs.length == 0) revert NoPublishedVersion(datanetId);
        uint256 version = vs.length - 1;
        licensedAt[datanetId][msg.sender] = version + 1;

        uint256 ownerAmount = (fee * params.licenceOwnerBps()) / 10_000;
        uint256 pool = fee - ownerAmount;
        uint256 n = vs[version].count;
        uint256 perContribution = pool / n;
        ownerAmount += pool - perContribution * n; // dust to the owner
        d.rewardPerContribution += perContribution;
        // The contributions' part stays unassigned in the contract until collected.
        if (ownerAmount != 0) _credit(d.owner, ownerAmount);
        totalUncollected += perContribution * n;
        emit LicencePurchased(datanetId, msg.sender, version, fee, ownerAmount, perContribution);
    }

    /// @notice Whether `account` may use the Datanet's data: it bought a licence or owns it.
    function hasLicence(uint256 datanetId, address account) external view returns (bool) {
        return licensedAt[datanetId][account] != 0 || (account != address(0) && _datanets[datanetId].owner == account);
    }

    /// @notice Licence earnings a contribution can collect now.
    function pendingReward(uint256 contributionId) public view returns (uint256) {
        Contribution storage c = _contributions[contributionId];
        if (c.status != Status.Accepted) return 0;
        (bool inVersion, uint256 from) = _rewardFrom(c.datanetId, c.acceptedIndex, contributionId);
        if (!inVersion) return 0;
        return _datanets[c.datanetId].rewardPerContribution - from;
    }

    /// @notice Moves the licence earnings of `contributionIds` to their contributors' balances
    ///         (anyone may call; funds only ever go to the contributor).
    function collect(uint256[] calldata contributionIds) external {
        for (uint256 i = 0; i < contributionIds.length; ++i) {
            uint256 id = contributionIds[i];
            uint256 amount = pendingReward(id);
            if (amount == 0) continue;
            Contribution storage c = _contributions[id];
            _rewardPaid[id] = _datanets[c.datanetId].rewardPerContribution;
            totalUncollected -= amount;
            _credit(c.contributor, amount);
            emit RewardCollected(id, c.contributor, amount);
        }
    }

    // ------------------------------------------------------------------ internals

    /// @dev Accumulator value from which a contribution is owed, and whether it is in a version.
    ///      Versions are prefixes of the accepted list with non-decreasing counts: the first
    ///      version whose count exceeds the contribution's index is where it joined.
    function _rewardFrom(uint256 datanetId, uint256 index, uint256 contributionId)
        private
        view
        returns (bool, uint256)
    {
        Version[] storage vs = _versions[datanetId];
        uint256 len = vs.length;
        if (len == 0 || vs[len - 1].count <= index) return (false, 0);
        uint256 paid = _rewardPaid[contributionId];
        if (paid != 0) return (true, paid);
        uint256 lo = 0;
        uint256 hi = len - 1;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (vs[mid].count > index) hi = mid;
            else lo = mid + 1;
        }
        return (true, vs[lo].rewardAtPublish);
    }

    function _datanet(uint256 datanetId) private view returns (Datanet storage d) {
        d = _datanets[datanetId];
        if (d.owner == address(0)) revert DatanetNotFound(datanetId);
    }

    function _contribution(uint256 contributionId) private view returns (Contribution storage c) {
        c = _contributions[contributionId];
        if (c.status == Status.None) revert ContributionNotFound(contributionId);
    }

    function _onlyOwner(uint256 datanetId) private view returns (Datanet storage d) {
        d = _datanet(datanetId);
        if (d.owner != msg.sender) revert NotDatanetOwner(datanetId, msg.sender);
    }

    function _pendingForCuration(uint256 contributionId) private view returns (Contribution storage c) {
        c = _contribution(contributionId);
        uint256 datanetId = c.datanetId;
        if (msg.sender != _datanets[datanetId].owner && !isCurator[datanetId][msg.sender]) {
            revert NotCurator(datanetId, msg.sender);
        }
        if (c.status != Status.Pending) revert NotPending(contributionId, c.status);
    }
}
