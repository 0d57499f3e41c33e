// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ProtocolParams} from "./ProtocolParams.sol";
import {DatanetRegistry} from "./DatanetRegistry.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {PullPayments} from "./PullPayments.sol";

/// @title AttributionSettlement
/// @notice Pays inference fees to the treasury, the model owner and the data contributors that
///         Proof of Attribution credits. Buyers escrow OPEN and grant each model a spending
///         allowance; an attributor submits batches of settled inferences together with the
///         Merkle root of the full attribution records, which stays on chain so any record can
///         later be proven (`verifyRecord`) and disputed (`disputeRecord`).
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
        uint256 totalFees;
    }

    /// @notice Allowance value meaning "unlimited" (never decremented).
    uint256 public constant UNLIMITED = type(uint256).max;

    /// @notice The governed parameters (split, treasury, attributors).
    ProtocolParams public immutable params;
    /// @notice Model owners and activity.
    ModelRegistry public immutable models;
    /// @notice Contributions and their contributors.
    DatanetRegistry public immutable datanets;

    /// @notice OPEN each buyer holds in escrow.
    mapping(address payer => uint256) public escrowOf;
    /// @notice Sum of `escrowOf`.
    uint256 public totalEscrow;
    /// @notice How much of its escrow a payer lets be spent on a model.
    mapping(address payer => mapping(uint256 modelId => uint256)) public allowance;
    /// @notice Number of batches; ids are 1..batchCount.
    uint256 public batchCount;
    mapping(uint256 batchId => Batch) private _batches;

    /// @notice OPEN was added to `payer`'s escrow.
    event EscrowDeposited(address indexed payer, address indexed from, uint256 amount);
    /// @notice OPEN was taken out of `payer`'s escrow.
    event EscrowWithdrawn(address indexed payer, address indexed to, uint256 amount);
    /// @notice `payer` set the spending allowance of a model.
    event AllowanceSet(address indexed payer, uint256 indexed modelId, uint256 amount);
    /// @notice One inference of a batch was settled.
    event InferenceSettled(uint256 indexed batchId, address indexed payer, uint256 indexed modelId, uint256 fee);
    /// @notice A batch was settled.
    event BatchSettled(
        uint256 indexed batchId, address indexed attributor, bytes32 recordsRoot, uint256 inferenceCount, uint256 totalFees
    );
    /// @notice `disputer` proved `record` is in a batch and disputes it.
    event RecordDisputed(uint256 indexed batchId, bytes32 indexed record, address indexed disputer, string reasonURI);

    /// @notice Caller is not in the attributor set.
    error NotAttributor(address caller);
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

    /// @param params_ ProtocolParams.
    /// @param models_ ModelRegistry.
    /// @param datanets_ DatanetRegistry.
    constructor(ProtocolParams params_, ModelRegistry models_, DatanetRegistry datanets_) {
        params = params_;
        models = models_;
        datanets = datanets_;
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

    /// @notice Takes `amount` out of the caller's escrow and sends it to the caller.
    function withdrawEscrow(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 available = escrowOf[msg.sender];
        if (available < amount) revert InsufficientEscrow(msg.sender, available, amount);
        escrowOf[msg.sender] = available - amount;
        totalEscrow -= amount;
        emit EscrowWithdrawn(msg.sender, msg.sender, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    /// @notice Sets how much of the caller's escrow may be spent on `modelId` (`UNLIMITED` for no cap).
    function setAllowance(uint256 modelId, uint256 amount) external {
        allowance[msg.sender][modelId] = amount;
        emit AllowanceSet(msg.sender, modelId, amount);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settles a batch of inferences by the rule in the contract header. Attributors only.
    /// @param recordsRoot Merkle root of the batch's attribution records (OpenZeppelin
    ///        MerkleProof convention: sorted pairs, keccak-256).
    /// @return batchId The new batch's id.
    function submitBatch(bytes32 recordsRoot, Inference[] calldata inferences) external returns (uint256 batchId) {
        (bool allowed, address treasury, uint16 tBps, uint16 mBps,) = params.settlementConfig(msg.sender);
        if (!allowed) revert NotAttributor(msg.sender);
        if (inferences.length == 0 || recordsRoot == bytes32(0)) revert EmptyBatch();
        batchId = ++batchCount;
        uint256 total;
        uint256 toTreasury;
        for (uint256 i = 0; i < inferences.length; ++i) {
            Inference calldata inf = inferences[i];
            uint256 fee = inf.fee;
            _debit(inf.payer, inf.modelId, fee);
            total += fee;
            (address modelOwner, bool active) = models.settlementInfo(inf.modelId);
            if (!active) revert ModelInactive(inf.modelId);
            uint256 t = (fee * tBps) / 10_000;
            uint256 m = (fee * mBps) / 10_000;
            if (m != 0) _creditNoTotal(modelOwner, m);
            toTreasury += t + _payContributors(i, inf.shares, fee - t - m);
            emit InferenceSettled(batchId, inf.payer, inf.modelId, fee);
        }
        if (toTreasury != 0) _creditNoTotal(treasury, toTreasury);
        totalEscrow -= total;
        totalBalances += total;
        _batches[batchId] = Batch({
            recordsRoot: recordsRoot,
            attributor: msg.sender,
            settledAt: uint64(block.timestamp),
            inferenceCount: uint32(inferences.length),
            totalFees: total
        });
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

    function _deposit(address payer) private {
        if (msg.value == 0) revert ZeroAmount();
        if (payer == address(0)) revert ZeroAddress();
        escrowOf[payer] += msg.value;
        totalEscrow += msg.value;
        emit EscrowDeposited(payer, msg.sender, msg.value);
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
