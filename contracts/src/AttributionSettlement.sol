// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ProtocolParams} from "./ProtocolParams.sol";
import {DatanetRegistry} from "./DatanetRegistry.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {PullPayments} from "./PullPayments.sol";
import {AttributorStaking} from "./AttributorStaking.sol";

/// @title AttributionSettlement
/// @notice Pays inference fees to the treasury, the model owner and the data contributors that
///         Proof of Attribution credits. Buyers escrow OPEN and grant each model a spending
///         allowance; a bonded attributor (`AttributorStaking`: active stake at least the governed
///         `minAttributorStake`) submits batches of settled inferences together with the
///         ids of the full attribution records. The contract recomputes the batch's Merkle root
///         from those ids, so the root that stays on chain commits to exactly the settled
///         inferences: any record can later be proven (`verifyRecord`) and disputed
///         (`disputeRecord`), and a record id or root is settled at most once (a resubmitted
///         batch is refused, never charged twice). Escrow leaves only after a governed delay
///         (`requestWithdrawal`, then `withdrawEscrow`), during which answers already given can
///         still be settled against it. An attributor's fees per two challenge windows are
///         capped by its stake (`exposureBps`), and each batch keeps the stake locked until the
///         batch's challenge window ends (`finalAt`).
/// @dev Split of one inference fee F with the governed split (t, m, c) in basis points:
///      treasury = floor(F × t / 10,000); modelOwner = floor(F × m / 10,000);
///      pool = F − treasury − modelOwner (so pool absorbs the rounding of the first two);
///      contribution i with weight wᵢ gets floor(pool × wᵢ / Σw); the remainder of the pool
///      (< number of contributions, in wei) goes to the treasury, as does the whole pool when
///      an inference has no attributed contributions. Every wei debited from escrow is
///      credited to exactly one balance: nothing is lost or stranded.
///      Invariant: address(this).balance == totalEscrow + totalBalances.
contract AttributionSettlement is PullPayments {
    /// @notice One attributed contribution and its (positive) weight.
    struct Share {
        uint256 contributionId;
        uint256 weight;
    }

    /// @notice One settled inference.
    struct Inference {
        /// @dev keccak-256 of the canonical attribution record: the batch's Merkle leaf.
        bytes32 recordId;
        address payer;
        uint256 modelId;
        uint256 fee;
        Share[] shares;
    }

    /// @notice A submitted batch.
    struct Batch {
        bytes32 recordsRoot;
        address attributor;
        uint64 settledAt;
        uint32 inferenceCount;
        /// End of the batch's challenge window (`settledAt + challengeWindow` at settlement).
        uint64 finalAt;
        uint256 totalFees;
    }

    /// @notice A payer's announced withdrawal.
    struct WithdrawalRequest {
        uint256 amount;
        uint64 readyAt;
    }

    /// @dev What one batch reads of `ProtocolParams.settlementConfig`.
    struct Config {
        address treasury;
        uint16 tBps;
        uint16 mBps;
        uint256 minStake;
        uint32 exposureBps;
        uint64 window;
    }

    /// @notice Allowance value meaning "unlimited" (never decremented).
    uint256 public constant UNLIMITED = type(uint256).max;

    /// @notice The governed parameters (split, treasury, stake and exposure rules).
    ProtocolParams public immutable params;
    /// @notice Model owners and activity.
    ModelRegistry public immutable models;
    /// @notice Contributions and their contributors.
    DatanetRegistry public immutable datanets;
    /// @notice Attributors' stakes.
    AttributorStaking public immutable staking;

    /// @notice OPEN each buyer holds in escrow.
    mapping(address payer => uint256) public escrowOf;
    /// @notice Sum of `escrowOf`.
    uint256 public totalEscrow;
    /// @notice How much of its escrow a payer lets be spent on a model.
    mapping(address payer => mapping(uint256 modelId => uint256)) public allowance;
    /// @notice Number of batches; ids are 1..batchCount.
    uint256 public batchCount;
    mapping(uint256 batchId => Batch) private _batches;
    /// @notice The batch that settled a record id (0: not settled).
    mapping(bytes32 recordId => uint256 batchId) public settledIn;
    /// @notice The batch whose records root this is (0: none).
    mapping(bytes32 recordsRoot => uint256 batchId) public batchOfRoot;
    /// @notice Withdrawals announced with `requestWithdrawal`.
    mapping(address payer => WithdrawalRequest) public withdrawalRequest;
    /// @notice Fees an attributor settled in an exposure period (`timestamp / challengeWindow`).
    mapping(address attributor => mapping(uint256 period => uint256)) public feesInPeriod;

    /// @notice OPEN was added to `payer`'s escrow.
    event EscrowDeposited(address indexed payer, address indexed from, uint256 amount);
    /// @notice OPEN was taken out of `payer`'s escrow.
    event EscrowWithdrawn(address indexed payer, address indexed to, uint256 amount);
    /// @notice `payer` announced a withdrawal of `amount`, possible from `readyAt` on.
    event WithdrawalRequested(address indexed payer, uint256 amount, uint64 readyAt);
    /// @notice `payer` set the spending allowance of a model.
    event AllowanceSet(address indexed payer, uint256 indexed modelId, uint256 amount);
    /// @notice One inference of a batch was settled.
    event InferenceSettled(
        uint256 indexed batchId, address indexed payer, uint256 indexed modelId, uint256 fee, bytes32 recordId
    );
    /// @notice A batch was settled.
    event BatchSettled(
        uint256 indexed batchId, address indexed attributor, bytes32 recordsRoot, uint256 inferenceCount, uint256 totalFees
    );
    /// @notice `disputer` proved `record` is in a batch and disputes it.
    event RecordDisputed(uint256 indexed batchId, bytes32 indexed record, address indexed disputer, string reasonURI);

    /// @notice The caller's active stake is below the governed minimum.
    error NotBonded(address caller, uint256 active, uint256 required);
    /// @notice The caller's fees in this and the previous exposure period, this batch included,
    ///         would exceed `exposureBps` of its active stake.
    error ExposureExceeded(address caller, uint256 exposure, uint256 cap);
    /// @notice Zero amount where a positive one is needed.
    error ZeroAmount();
    /// @notice Escrow too small.
    error InsufficientEscrow(address payer, uint256 available, uint256 required);
    /// @notice Allowance for the model too small.
    error AllowanceExceeded(address payer, uint256 modelId, uint256 allowance, uint256 required);
    /// @notice The model is deactivated.
    error ModelInactive(uint256 modelId);
    /// @notice A batch needs at least one inference and a non-zero records root.
    error EmptyBatch();
    /// @notice A contribution weight of zero.
    error ZeroWeight(uint256 inferenceIndex, uint256 shareIndex);
    /// @notice No such batch.
    error BatchNotFound(uint256 batchId);
    /// @notice The Merkle proof does not lead to the batch root.
    error InvalidProof(uint256 batchId, bytes32 record);
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice The record was already settled (in `batchId`).
    error RecordAlreadySettled(bytes32 recordId, uint256 batchId);
    /// @notice The records root was already used by `batchId`.
    error RootAlreadySettled(bytes32 recordsRoot, uint256 batchId);
    /// @notice The given root is not the Merkle root of the inferences' record ids.
    error RootMismatch(bytes32 given, bytes32 computed);
    /// @notice More than the announced withdrawal (`requested`) was asked for.
    error WithdrawalNotRequested(address payer, uint256 requested, uint256 amount);
    /// @notice The announced withdrawal becomes possible at `readyAt`.
    error WithdrawalNotReady(address payer, uint64 readyAt);

    /// @param params_ ProtocolParams.
    /// @param models_ ModelRegistry.
    /// @param datanets_ DatanetRegistry.
    /// @param staking_ AttributorStaking.
    constructor(ProtocolParams params_, ModelRegistry models_, DatanetRegistry datanets_, AttributorStaking staking_) {
        params = params_;
        models = models_;
        datanets = datanets_;
        staking = staking_;
    }

    // ------------------------------------------------------------------ escrow

    /// @notice Adds `msg.value` to the caller's escrow.
    function deposit() external payable {
        _deposit(msg.sender);
    }

    /// @notice Adds `msg.value` to `payer`'s escrow.
    function depositFor(address payer) external payable {
        _deposit(payer);
    }

    /// @notice Announces that the caller will take `amount` out of its escrow. It becomes possible
    ///         after the governed `escrowWithdrawalDelay`, so that answers already given can still
    ///         be settled against the escrow; a new request replaces the previous one.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 available = escrowOf[msg.sender];
        if (available < amount) revert InsufficientEscrow(msg.sender, available, amount);
        uint64 readyAt = uint64(block.timestamp) + params.escrowWithdrawalDelay();
        withdrawalRequest[msg.sender] = WithdrawalRequest(amount, readyAt);
        emit WithdrawalRequested(msg.sender, amount, readyAt);
    }

    /// @notice Sends `amount` (at most the announced amount) out of the caller's escrow to the
    ///         caller once the request's delay has passed.
    function withdrawEscrow(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        WithdrawalRequest memory req = withdrawalRequest[msg.sender];
        if (req.amount < amount) revert WithdrawalNotRequested(msg.sender, req.amount, amount);
        if (block.timestamp < req.readyAt) revert WithdrawalNotReady(msg.sender, req.readyAt);
        uint256 available = escrowOf[msg.sender];
        if (available < amount) revert InsufficientEscrow(msg.sender, available, amount);
        escrowOf[msg.sender] = available - amount;
        totalEscrow -= amount;
        if (req.amount == amount) delete withdrawalRequest[msg.sender];
        else withdrawalRequest[msg.sender].amount = req.amount - amount;
        emit EscrowWithdrawn(msg.sender, msg.sender, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    /// @notice Sets how much of the caller's escrow may be spent on `modelId` (`UNLIMITED` for no cap).
    function setAllowance(uint256 modelId, uint256 amount) external {
        allowance[msg.sender][modelId] = amount;
        emit AllowanceSet(msg.sender, modelId, amount);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settles a batch of inferences by the rule in the contract header. Bonded
    ///         attributors only, within their exposure cap.
    /// @param recordsRoot Merkle root of the inferences' record ids in order (OpenZeppelin
    ///        MerkleProof convention: sorted pairs, keccak-256; an odd last node moves up a
    ///        level unchanged); recomputed here and refused when it differs.
    /// @return batchId The new batch's id.
    function submitBatch(bytes32 recordsRoot, Inference[] calldata inferences) external returns (uint256 batchId) {
        Config memory cfg = _config();
        uint256 stake = staking.activeStake(msg.sender);
        if (stake < cfg.minStake) revert NotBonded(msg.sender, stake, cfg.minStake);
        if (inferences.length == 0 || recordsRoot == bytes32(0)) revert EmptyBatch();
        _checkRoot(recordsRoot, inferences);
        batchId = ++batchCount;
        batchOfRoot[recordsRoot] = batchId;
        uint256 total = _settleAll(batchId, inferences, cfg);
        uint64 finalAt = _checkExposure(total, stake, cfg);
        _batches[batchId] = Batch({
            recordsRoot: recordsRoot,
            attributor: msg.sender,
            settledAt: uint64(block.timestamp),
            inferenceCount: uint32(inferences.length),
            finalAt: finalAt,
            totalFees: total
        });
        staking.recordBatch(msg.sender, finalAt);
        emit BatchSettled(batchId, msg.sender, recordsRoot, inferences.length, total);
    }

    /// @notice A settled batch.
    function getBatch(uint256 batchId) external view returns (Batch memory) {
        Batch memory b = _batches[batchId];
        if (b.recordsRoot == bytes32(0)) revert BatchNotFound(batchId);
        return b;
    }

    /// @notice Whether `record` (a leaf hash) is included in batch `batchId`'s records root.
    function verifyRecord(uint256 batchId, bytes32 record, bytes32[] calldata proof) public view returns (bool) {
        bytes32 root = _batches[batchId].recordsRoot;
        if (root == bytes32(0)) revert BatchNotFound(batchId);
        return MerkleProof.verifyCalldata(proof, root, record);
    }

    /// @notice Publicly disputes an attribution record after proving it is in the batch.
    ///         Resolution is off chain or by governance; this puts the claim on the record.
    function disputeRecord(uint256 batchId, bytes32 record, bytes32[] calldata proof, string calldata reasonURI)
        external
    {
        if (!verifyRecord(batchId, record, proof)) revert InvalidProof(batchId, record);
        emit RecordDisputed(batchId, record, msg.sender, reasonURI);
    }

    // ------------------------------------------------------------------ internals

    /// @dev The governed settlement parameters, read once per batch.
    function _config() private view returns (Config memory c) {
        (c.treasury, c.tBps, c.mBps,, c.minStake, c.exposureBps, c.window) = params.settlementConfig();
    }

    /// @dev Settles every inference of the batch by the current split; returns the total fees.
    function _settleAll(uint256 batchId, Inference[] calldata inferences, Config memory cfg)
        private
        returns (uint256 total)
    {
        uint256 toTreasury;
        for (uint256 i = 0; i < inferences.length; ++i) {
            (uint256 fee, uint256 t) = _settle(batchId, i, inferences[i], cfg.tBps, cfg.mBps);
            total += fee;
            toTreasury += t;
        }
        if (toTreasury != 0) _creditNoTotal(cfg.treasury, toTreasury);
        totalEscrow -= total;
        totalBalances += total;
    }

    /// @dev Adds `total` to the caller's fees of this exposure period and refuses the batch when
    ///      this and the previous period together exceed `exposureBps` of `stake`; returns the end
    ///      of the batch's challenge window.
    function _checkExposure(uint256 total, uint256 stake, Config memory cfg) private returns (uint64 finalAt) {
        finalAt = uint64(block.timestamp) + cfg.window;
        uint256 period = block.timestamp / cfg.window;
        uint256 current = feesInPeriod[msg.sender][period] + total;
        feesInPeriod[msg.sender][period] = current;
        uint256 exposure = current + (period == 0 ? 0 : feesInPeriod[msg.sender][period - 1]);
        uint256 cap = Math.mulDiv(stake, cfg.exposureBps, 10_000);
        if (exposure > cap) revert ExposureExceeded(msg.sender, exposure, cap);
    }

    function _deposit(address payer) private {
        if (msg.value == 0) revert ZeroAmount();
        if (payer == address(0)) revert ZeroAddress();
        escrowOf[payer] += msg.value;
        totalEscrow += msg.value;
        emit EscrowDeposited(payer, msg.sender, msg.value);
    }

    /// @dev Settles inference `i` of batch `batchId`: debits the payer, credits the model owner and
    ///      the contributors; returns the fee and what is left for the treasury.
    function _settle(uint256 batchId, uint256 i, Inference calldata inf, uint16 tBps, uint16 mBps)
        private
        returns (uint256 fee, uint256 toTreasury)
    {
        uint256 earlier = settledIn[inf.recordId];
        if (earlier != 0) revert RecordAlreadySettled(inf.recordId, earlier);
        settledIn[inf.recordId] = batchId;
        fee = inf.fee;
        _debit(inf.payer, inf.modelId, fee);
        (address modelOwner, bool active,,,) = models.settlementInfo(inf.modelId);
        if (!active) revert ModelInactive(inf.modelId);
        uint256 t = (fee * tBps) / 10_000;
        uint256 m = (fee * mBps) / 10_000;
        if (m != 0) _creditNoTotal(modelOwner, m);
        toTreasury = t + _payContributors(i, inf.shares, fee - t - m);
        emit InferenceSettled(batchId, inf.payer, inf.modelId, fee, inf.recordId);
    }

    /// @dev Refuses a used root and a root that is not the record ids' Merkle root.
    function _checkRoot(bytes32 recordsRoot, Inference[] calldata inferences) private view {
        uint256 used = batchOfRoot[recordsRoot];
        if (used != 0) revert RootAlreadySettled(recordsRoot, used);
        bytes32 computed = _root(inferences);
        if (computed != recordsRoot) revert RootMismatch(recordsRoot, computed);
    }

    /// @dev Merkle root of the record ids, level by level (see `submitBatch`).
    function _root(Inference[] calldata inferences) private pure returns (bytes32) {
        uint256 n = inferences.length;
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            level[i] = inferences[i].recordId;
        }
        while (n > 1) {
            uint256 m = (n + 1) / 2;
            for (uint256 i = 0; i < n / 2; ++i) {
                bytes32 a = level[2 * i];
                bytes32 b = level[2 * i + 1];
                level[i] = a < b ? keccak256(abi.encodePacked(a, b)) : keccak256(abi.encodePacked(b, a));
            }
            if (n % 2 == 1) level[m - 1] = level[n - 1];
            n = m;
        }
        return level[0];
    }

    function _debit(address payer, uint256 modelId, uint256 fee) private {
        uint256 available = escrowOf[payer];
        if (available < fee) revert InsufficientEscrow(payer, available, fee);
        uint256 allowed = allowance[payer][modelId];
        if (allowed < fee) revert AllowanceExceeded(payer, modelId, allowed, fee);
        escrowOf[payer] = available - fee;
        if (allowed != UNLIMITED) allowance[payer][modelId] = allowed - fee;
    }

    /// @dev Credits the contributors' pool by weight; returns what is left for the treasury.
    function _payContributors(uint256 inferenceIndex, Share[] calldata shares, uint256 pool)
        private
        returns (uint256 remainder)
    {
        uint256 n = shares.length;
        if (n == 0) return pool;
        uint256[] memory ids = new uint256[](n);
        uint256 weightSum;
        for (uint256 j = 0; j < n; ++j) {
            uint256 w = shares[j].weight;
            if (w == 0) revert ZeroWeight(inferenceIndex, j);
            weightSum += w;
            ids[j] = shares[j].contributionId;
        }
        address[] memory contributors = datanets.contributorsOf(ids);
        remainder = pool;
        if (pool == 0) return 0;
        for (uint256 j = 0; j < n; ++j) {
            uint256 amount = Math.mulDiv(pool, shares[j].weight, weightSum);
            if (amount != 0) {
                _creditNoTotal(contributors[j], amount);
                remainder -= amount;
            }
        }
    }
}
