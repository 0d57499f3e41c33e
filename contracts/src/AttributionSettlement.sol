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
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title AttributionSettlement
/// @notice Pays inference fees to the treasury, the model owner and the data contributors that
///         Proof of Attribution credits. Buyers escrow OPEN and sign EIP-712 vouchers
///         (`InferenceVoucher`: a cumulative spending cap on a channel between a payer and one
///         attributor, for one model or any, at most a price per 1,000 tokens, until an expiry);
///         a bonded attributor (`AttributorStaking`: active stake at least the governed
///         `minAttributorStake`) submits batches of answered requests. The contract charges a
///         payer only under a voucher it signed, never beyond the voucher's cumulative cap,
///         at the `ModelRegistry` price (or the previous price within `priceGracePeriod`)
///         times the record's token counts, and at most once per request key. It computes each
///         inference's Merkle leaf from what it checked (`leafOf`) and refuses a batch whose
///         root differs, so the root that stays on chain commits to exactly what was charged:
///         any leaf can later be proven (`verifyRecord`) and disputed (`disputeRecord`).
///         Credits are pending until the batch's challenge window ends (`finalAt`): they wait in
///         per-account buckets (`pendingIn`, bucket = settlement time rounded down to the
///         governed `epochLength`) and become claimable once every batch of their bucket is
///         final (`bucketFinalAt`); `claim` and `release` move matured credits. Escrow leaves
///         only after a governed delay (`requestWithdrawal`, then `withdrawEscrow`), during
///         which answers already given can still be settled against it. An attributor's fees per two challenge windows are capped by its stake
///         (`exposureBps`), and each batch keeps the stake locked until the batch's challenge
///         window ends (`finalAt`).
/// @dev Split of one inference fee F with the governed split (t, m, c) in basis points:
///      treasury = floor(F × t / 10,000); modelOwner = floor(F × m / 10,000);
///      pool = F − treasury − modelOwner (so pool absorbs the rounding of the first two);
///      contribution i with weight wᵢ (parts per million, summing to 1,000,000) gets
///      floor(pool × wᵢ / 1,000,000); the remainder of the pool (< number of contributions, in
///      wei) goes to the treasury, as does the whole pool of a fallback inference (no
///      contribution named). Every wei debited from escrow is credited to exactly one balance:
///      nothing is lost or stranded.
///      Invariant: address(this).balance == totalEscrow + totalPending + totalBalances.
contract AttributionSettlement is PullPayments, EIP712 {
    /// @notice One attributed contribution and its weight in parts per million.
    struct Share {
        uint256 contributionId;
        uint256 weight;
    }

    /// @notice A payer's signed voucher (EIP-712 `InferenceVoucher`, domain "OpenLedger
    ///         Inference", version "1", this contract). `cumulative` caps everything ever charged
    ///         on the channel `channelKey(payer, attributor, channel)`; `modelId` 0 is any model.
    struct Voucher {
        address payer;
        address attributor;
        uint256 modelId;
        uint256 maxPricePer1k;
        uint256 channel;
        uint256 cumulative;
        uint256 expiry;
        /// 65-byte ECDSA signature of an EOA, or what the payer contract's ERC-1271 accepts.
        bytes signature;
    }

    /// @notice One answered request. The fee and the payer are not passed: the contract derives
    ///         them from the price, the token counts and the voucher.
    struct Inference {
        /// keccak-256 of the canonical attribution record.
        bytes32 recordId;
        /// keccak-256 of the server's request id: charged at most once per attributor.
        bytes32 requestKey;
        /// Index into the batch's vouchers.
        uint256 voucher;
        uint256 modelId;
        /// keccak-256 of the engine that computed the record (`ProtocolParams.allowedEngine`).
        bytes32 engineId;
        /// keccak-256 of the prompt and answer tokens (u32 little-endian each).
        bytes32 promptHash;
        bytes32 answerHash;
        uint256 promptTokens;
        uint256 completionTokens;
        /// The price the answer was served at, wei per 1,000 tokens.
        uint256 pricePer1k;
        /// No contribution has evidence: the contributors' pool follows the fallback rule.
        bool isFallback;
        /// Contribution ids strictly ascending, weights > 0 summing to 1,000,000; empty exactly
        /// when `isFallback`.
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
        /// The pending bucket its credits went to.
        uint64 bucket;
    }

    /// @notice A payer's announced withdrawal.
    struct WithdrawalRequest {
        uint256 amount;
        uint64 readyAt;
    }

    /// @dev What one batch reads of `ProtocolParams`.
    struct Config {
        address treasury;
        uint16 tBps;
        uint16 mBps;
        uint256 minStake;
        uint32 exposureBps;
        uint64 window;
        uint64 voucherGrace;
        uint64 priceGrace;
        uint64 epoch;
    }

    /// @dev The running totals of one `submitBatch`.
    struct Run {
        uint256 batchId;
        uint256 bucket;
        uint256 total;
        uint256 toTreasury;
        bytes32[] keys;
        bytes32[] leaves;
    }

    /// @notice Allowance value meaning "unlimited" (never decremented).
    uint256 public constant UNLIMITED = type(uint256).max;
    /// @notice EIP-712 type hash of `InferenceVoucher`.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256(
        "InferenceVoucher(address payer,address attributor,uint256 modelId,uint256 maxPricePer1k,uint256 channel,uint256 cumulative,uint256 expiry)"
    );
    /// @notice First word of every leaf preimage (a leaf preimage is never 64 bytes, so it
    ///         cannot pass for an inner node of the tree).
    bytes32 public constant LEAF_TAG = keccak256("OpenLedger.InferenceLeaf.v2");
    /// @notice Most contributions one inference may credit.
    uint256 public constant MAX_SHARES = 64;
    /// @notice What the weights of one inference sum to.
    uint256 public constant WEIGHT_TOTAL = 1_000_000;
    /// @notice Most buckets one `claim` (or a `release` without a limit) moves.
    uint256 public constant MAX_RELEASE = 64;

    /// @notice The governed parameters (split, treasury, stake, exposure, voucher and price rules).
    ProtocolParams public immutable params;
    /// @notice Model owners, prices and activity.
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
    /// @dev The batch that charged a request: key keccak256(abi.encode(attributor, requestKey)).
    mapping(bytes32 slot => uint256 batchId) private _requestBatch;
    /// @notice The batch whose records root this is (0: none).
    mapping(bytes32 recordsRoot => uint256 batchId) public batchOfRoot;
    /// @notice Withdrawals announced with `requestWithdrawal`.
    mapping(address payer => WithdrawalRequest) public withdrawalRequest;
    /// @notice Fees an attributor settled in an exposure period (`timestamp / challengeWindow`).
    mapping(address attributor => mapping(uint256 period => uint256)) public feesInPeriod;
    /// @notice Fees charged so far on each voucher channel (see `channelKey`).
    mapping(bytes32 channelKey => uint256) public spent;
    /// @notice When a channel stops accepting charges (0: open), set by `closeChannel`.
    mapping(bytes32 channelKey => uint64) public closesAt;
    /// @notice Credits not final yet, per account and bucket.
    mapping(address account => mapping(uint256 bucket => uint256)) public pendingIn;
    /// @notice Sum of `pendingIn`.
    uint256 public totalPending;
    /// @notice When a bucket's credits become final: the latest `finalAt` of its batches.
    mapping(uint256 bucket => uint64) public bucketFinalAt;
    /// @dev Per account, the buckets it has pending credits in, oldest first, from `_head` on.
    mapping(address account => uint256[]) private _queue;
    mapping(address account => uint256) private _head;

    /// @notice OPEN was added to `payer`'s escrow.
    event EscrowDeposited(address indexed payer, address indexed from, uint256 amount);
    /// @notice OPEN was taken out of `payer`'s escrow.
    event EscrowWithdrawn(address indexed payer, address indexed to, uint256 amount);
    /// @notice `payer` announced a withdrawal of `amount`, possible from `readyAt` on.
    event WithdrawalRequested(address indexed payer, uint256 amount, uint64 readyAt);
    /// @notice `payer` set the spending allowance of a model.
    event AllowanceSet(address indexed payer, uint256 indexed modelId, uint256 amount);
    /// @notice `payer` closed a voucher channel: nothing is charged on it from `closesAt` on.
    event ChannelClosing(
        bytes32 indexed channelKey, address indexed payer, address indexed attributor, uint256 channel, uint64 closesAt
    );
    /// @notice One inference of a batch was settled; `leaf` is its Merkle leaf (`leafOf`).
    event InferenceSettled(
        uint256 indexed batchId,
        address indexed payer,
        uint256 indexed modelId,
        uint256 fee,
        bytes32 recordId,
        bytes32 leaf
    );
    /// @notice `amount` of `account`'s credits became final and claimable.
    event Released(address indexed account, uint256 amount);
    /// @notice A batch was settled.
    event BatchSettled(
        uint256 indexed batchId, address indexed attributor, bytes32 recordsRoot, uint256 inferenceCount, uint256 totalFees
    );
    /// @notice `disputer` proved `record` (a leaf) is in a batch and disputes it.
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
    /// @notice No such batch.
    error BatchNotFound(uint256 batchId);
    /// @notice The Merkle proof does not lead to the batch root.
    error InvalidProof(uint256 batchId, bytes32 record);
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice The attributor already charged this request (in `batchId`).
    error RequestAlreadySettled(bytes32 requestKey, uint256 batchId);
    /// @notice The records root was already used by `batchId`.
    error RootAlreadySettled(bytes32 recordsRoot, uint256 batchId);
    /// @notice The given root is not the Merkle root of the inferences' leaves.
    error RootMismatch(bytes32 given, bytes32 computed);
    /// @notice More than the announced withdrawal (`requested`) was asked for.
    error WithdrawalNotRequested(address payer, uint256 requested, uint256 amount);
    /// @notice The announced withdrawal becomes possible at `readyAt`.
    error WithdrawalNotReady(address payer, uint64 readyAt);
    /// @notice Voucher `index` names another attributor than the caller.
    error VoucherNotForSender(uint256 index, address attributor);
    /// @notice Voucher `index` expired more than `voucherGrace` ago.
    error VoucherExpired(uint256 index, uint256 expiry);
    /// @notice The channel was closed by its payer at `closesAt`.
    error ChannelClosed(bytes32 channelKey, uint64 closesAt);
    /// @notice Voucher `index` is not signed by its payer.
    error BadVoucherSignature(uint256 index, address payer);
    /// @notice Inference `index` names no voucher of the batch.
    error BadVoucherIndex(uint256 index, uint256 voucher);
    /// @notice The voucher is for another model.
    error VoucherModelMismatch(uint256 index, uint256 voucherModelId, uint256 modelId);
    /// @notice The price is neither the model's price nor its previous price within the grace.
    error PriceMismatch(uint256 modelId, uint256 given, uint256 current);
    /// @notice The price is above the voucher's `maxPricePer1k`.
    error PriceAboveVoucher(uint256 index, uint256 price, uint256 maxPricePer1k);
    /// @notice The engine is not on `ProtocolParams`' allowlist.
    error EngineNotAllowed(bytes32 engineId);
    /// @notice Charging would take the channel past the voucher's cumulative cap.
    error VoucherExceeded(bytes32 channelKey, uint256 cumulative, uint256 required);
    /// @notice Inference `index`'s shares break the rule of `Inference.shares`.
    error BadShares(uint256 index);

    /// @param params_ ProtocolParams.
    /// @param models_ ModelRegistry.
    /// @param datanets_ DatanetRegistry.
    /// @param staking_ AttributorStaking.
    constructor(ProtocolParams params_, ModelRegistry models_, DatanetRegistry datanets_, AttributorStaking staking_)
        EIP712("OpenLedger Inference", "1")
    {
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

    /// @notice Closes a voucher channel of the caller's: from `now + voucherGrace` on nothing more
    ///         is charged on it (answers already given settle until then). Revokes a leaked
    ///         voucher. Closing again never moves the moment later.
    function closeChannel(address attributor, uint256 channel) external {
        bytes32 key = channelKey(msg.sender, attributor, channel);
        (uint64 grace,,) = params.batchTerms();
        uint64 closing = uint64(block.timestamp) + grace;
        uint64 current = closesAt[key];
        if (current != 0 && current < closing) closing = current;
        closesAt[key] = closing;
        emit ChannelClosing(key, msg.sender, attributor, channel, closing);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settles a batch of answered requests by the rules in the contract header. Bonded
    ///         attributors only, within their exposure cap; every voucher must name the caller.
    /// @param recordsRoot Merkle root of the inferences' leaves (`leafOf`) in order
    ///        (OpenZeppelin MerkleProof convention: sorted pairs, keccak-256; an odd last node
    ///        moves up a level unchanged); recomputed here and refused when it differs.
    /// @return batchId The new batch's id.
    function submitBatch(bytes32 recordsRoot, Voucher[] calldata vouchers, Inference[] calldata inferences)
        external
        returns (uint256 batchId)
    {
        Config memory cfg = _config();
        uint256 stake = _checkSubmitter(cfg);
        if (inferences.length == 0 || recordsRoot == bytes32(0)) revert EmptyBatch();
        {
            uint256 used = batchOfRoot[recordsRoot];
            if (used != 0) revert RootAlreadySettled(recordsRoot, used);
        }
        batchId = ++batchCount;
        batchOfRoot[recordsRoot] = batchId;
        uint64 bucket = uint64(block.timestamp - (block.timestamp % cfg.epoch));
        uint256 total = _settleAll(batchId, bucket, recordsRoot, vouchers, inferences, cfg);
        uint64 finalAt = _checkExposure(total, stake, cfg);
        if (bucketFinalAt[bucket] < finalAt) bucketFinalAt[bucket] = finalAt;
        _batches[batchId] = Batch({
            recordsRoot: recordsRoot,
            attributor: msg.sender,
            settledAt: uint64(block.timestamp),
            inferenceCount: uint32(inferences.length),
            finalAt: finalAt,
            totalFees: total,
            bucket: bucket
        });
        staking.recordBatch(msg.sender, finalAt);
        emit BatchSettled(batchId, msg.sender, recordsRoot, inferences.length, total);
    }

    /// @notice Moves `account`'s matured credits (buckets whose batches are all final) into its
    ///         claimable balance, oldest bucket first, at most `maxBuckets` of them; stops at the
    ///         first bucket not final yet. Anyone may call it. `claim` does it for the caller.
    /// @return amount What became claimable.
    function release(address account, uint256 maxBuckets) external returns (uint256 amount) {
        return _release(account, maxBuckets);
    }

    /// @notice What `account` could claim now: its balance and its matured credits (the first
    ///         `MAX_RELEASE` buckets, as `claim` moves them).
    function claimable(address account) external view returns (uint256 amount) {
        amount = balanceOf[account];
        uint256[] storage q = _queue[account];
        uint256 end = _head[account] + MAX_RELEASE;
        if (end > q.length) end = q.length;
        for (uint256 i = _head[account]; i < end; ++i) {
            uint256 bucket = q[i];
            if (block.timestamp < bucketFinalAt[bucket]) break;
            amount += pendingIn[account][bucket];
        }
    }

    /// @notice `account`'s credits not claimable yet, and when the latest of them becomes final.
    function pendingOf(address account) external view returns (uint256 amount, uint64 finalAt) {
        uint256[] storage q = _queue[account];
        for (uint256 i = _head[account]; i < q.length; ++i) {
            uint256 bucket = q[i];
            uint64 ends = bucketFinalAt[bucket];
            if (block.timestamp >= ends) continue;
            amount += pendingIn[account][bucket];
            if (ends > finalAt) finalAt = ends;
        }
    }

    /// @notice A settled batch.
    function getBatch(uint256 batchId) external view returns (Batch memory) {
        Batch memory b = _batches[batchId];
        if (b.recordsRoot == bytes32(0)) revert BatchNotFound(batchId);
        return b;
    }

    /// @notice The batch in which `attributor` charged `requestKey` (0: not charged).
    function requestSettledIn(address attributor, bytes32 requestKey) external view returns (uint256) {
        return _requestBatch[keccak256(abi.encode(attributor, requestKey))];
    }

    /// @notice Whether `record` (a leaf) is included in batch `batchId`'s records root.
    function verifyRecord(uint256 batchId, bytes32 record, bytes32[] calldata proof) public view returns (bool) {
        bytes32 root = _batches[batchId].recordsRoot;
        if (root == bytes32(0)) revert BatchNotFound(batchId);
        return MerkleProof.verifyCalldata(proof, root, record);
    }

    /// @notice Publicly disputes a settled leaf after proving it is in the batch.
    ///         Resolution is off chain or by governance; this puts the claim on the record.
    function disputeRecord(uint256 batchId, bytes32 record, bytes32[] calldata proof, string calldata reasonURI)
        external
    {
        if (!verifyRecord(batchId, record, proof)) revert InvalidProof(batchId, record);
        emit RecordDisputed(batchId, record, msg.sender, reasonURI);
    }

    /// @notice The key of the voucher channel `channel` between `payer` and `attributor`.
    function channelKey(address payer, address attributor, uint256 channel) public pure returns (bytes32) {
        return keccak256(abi.encode(payer, attributor, channel));
    }

    /// @notice The EIP-712 digest a payer signs for voucher `v` (its signature is ignored).
    function voucherDigest(Voucher calldata v) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOUCHER_TYPEHASH, v.payer, v.attributor, v.modelId, v.maxPricePer1k, v.channel, v.cumulative, v.expiry
                )
            )
        );
    }

    /// @notice The Merkle leaf of a settled inference:
    ///         keccak256(abi.encode(LEAF_TAG, recordId, requestKey, payer, channelKey, modelId,
    ///         engineId, promptHash, answerHash, promptTokens, completionTokens, pricePer1k, fee,
    ///         fallback, keccak256(abi.encode(shares)))).
    function leafOf(Inference calldata inf, address payer, bytes32 key, uint256 fee) public pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                abi.encode(
                    LEAF_TAG, inf.recordId, inf.requestKey, payer, key, inf.modelId, inf.engineId, inf.promptHash
                ),
                abi.encode(
                    inf.answerHash,
                    inf.promptTokens,
                    inf.completionTokens,
                    inf.pricePer1k,
                    fee,
                    inf.isFallback,
                    keccak256(abi.encode(inf.shares))
                )
            )
        );
    }

    /// @notice The fee of `tokens` at `pricePer1k`: ⌈price × tokens / 1000⌉.
    function feeOf(uint256 pricePer1k, uint256 tokens) public pure returns (uint256) {
        return Math.mulDiv(pricePer1k, tokens, 1000, Math.Rounding.Ceil);
    }

    // ------------------------------------------------------------------ internals

    /// @dev The governed settlement parameters, read once per batch.
    function _config() private view returns (Config memory c) {
        (c.treasury, c.tBps, c.mBps,, c.minStake, c.exposureBps, c.window) = params.settlementConfig();
        (c.voucherGrace, c.priceGrace, c.epoch) = params.batchTerms();
    }

    /// @dev Credits `amount` to `account`'s pending `bucket` (totals are added per batch).
    function _creditPending(address account, uint256 bucket, uint256 amount) private {
        uint256 before = pendingIn[account][bucket];
        if (before == 0) {
            uint256[] storage q = _queue[account];
            if (q.length == _head[account] || q[q.length - 1] != bucket) q.push(bucket);
        }
        pendingIn[account][bucket] = before + amount;
    }

    /// @dev See `release`.
    function _release(address account, uint256 maxBuckets) private returns (uint256 amount) {
        uint256[] storage q = _queue[account];
        uint256 head = _head[account];
        uint256 end = head + (maxBuckets == 0 || maxBuckets > MAX_RELEASE ? MAX_RELEASE : maxBuckets);
        if (end > q.length) end = q.length;
        while (head < end) {
            uint256 bucket = q[head];
            if (block.timestamp < bucketFinalAt[bucket]) break;
            amount += pendingIn[account][bucket];
            delete pendingIn[account][bucket];
            delete q[head];
            ++head;
        }
        _head[account] = head;
        if (amount != 0) {
            totalPending -= amount;
            _credit(account, amount);
            emit Released(account, amount);
        }
    }

    /// @dev A claim first releases the caller's matured credits.
    function _beforeClaim(address account) internal override {
        _release(account, MAX_RELEASE);
    }

    /// @dev Checks every voucher (addressed to the caller, not expired beyond the grace, channel
    ///      open, signed by its payer); returns their channel keys.
    function _checkVouchers(Voucher[] calldata vouchers, Config memory cfg) private view returns (bytes32[] memory keys) {
        keys = new bytes32[](vouchers.length);
        for (uint256 j = 0; j < vouchers.length; ++j) {
            Voucher calldata v = vouchers[j];
            if (v.attributor != msg.sender) revert VoucherNotForSender(j, v.attributor);
            if (v.expiry < block.timestamp && block.timestamp - v.expiry > cfg.voucherGrace) {
                revert VoucherExpired(j, v.expiry);
            }
            bytes32 key = channelKey(v.payer, v.attributor, v.channel);
            uint64 closing = closesAt[key];
            if (closing != 0 && block.timestamp >= closing) revert ChannelClosed(key, closing);
            if (!SignatureChecker.isValidSignatureNow(v.payer, voucherDigest(v), v.signature)) {
                revert BadVoucherSignature(j, v.payer);
            }
            keys[j] = key;
        }
    }

    /// @dev Checks the vouchers, settles every inference of the batch by the current split and
    ///      refuses a root that is not the leaves' root; returns the total fees.
    function _settleAll(
        uint256 batchId,
        uint256 bucket,
        bytes32 recordsRoot,
        Voucher[] calldata vouchers,
        Inference[] calldata inferences,
        Config memory cfg
    ) private returns (uint256) {
        Run memory run = Run({
            batchId: batchId,
            bucket: bucket,
            total: 0,
            toTreasury: 0,
            keys: _checkVouchers(vouchers, cfg),
            leaves: new bytes32[](inferences.length)
        });
        for (uint256 i = 0; i < inferences.length; ++i) {
            Inference calldata inf = inferences[i];
            if (inf.voucher >= vouchers.length) revert BadVoucherIndex(i, inf.voucher);
            _settle(run, i, inf, vouchers[inf.voucher], cfg);
        }
        bytes32 computed = _root(run.leaves);
        if (computed != recordsRoot) revert RootMismatch(recordsRoot, computed);
        if (run.toTreasury != 0) _creditPending(cfg.treasury, bucket, run.toTreasury);
        totalEscrow -= run.total;
        totalPending += run.total;
        return run.total;
    }

    /// @dev Refuses a caller whose active stake is below the minimum; returns the stake.
    function _checkSubmitter(Config memory cfg) private view returns (uint256 stake) {
        stake = staking.activeStake(msg.sender);
        if (stake < cfg.minStake) revert NotBonded(msg.sender, stake, cfg.minStake);
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

    /// @dev Settles inference `i` under voucher `v`: checks it, charges the payer, credits the
    ///      model owner and the contributors, and adds its fee, treasury part and leaf to `run`.
    function _settle(Run memory run, uint256 i, Inference calldata inf, Voucher calldata v, Config memory cfg)
        private
    {
        address modelOwner = _checkPrice(i, inf, v, cfg);
        _checkShares(i, inf);
        bytes32 slot = keccak256(abi.encode(msg.sender, inf.requestKey));
        uint256 earlier = _requestBatch[slot];
        if (earlier != 0) revert RequestAlreadySettled(inf.requestKey, earlier);
        _requestBatch[slot] = run.batchId;
        bytes32 key = run.keys[inf.voucher];
        uint256 fee = feeOf(inf.pricePer1k, inf.promptTokens + inf.completionTokens);
        {
            uint256 charged = spent[key] + fee;
            if (charged > v.cumulative) revert VoucherExceeded(key, v.cumulative, charged);
            spent[key] = charged;
        }
        _debit(v.payer, inf.modelId, fee);
        uint256 t = (fee * cfg.tBps) / 10_000;
        uint256 m = (fee * cfg.mBps) / 10_000;
        if (m != 0) _creditPending(modelOwner, run.bucket, m);
        run.toTreasury += t + _payContributors(inf.shares, fee - t - m, run.bucket);
        run.total += fee;
        bytes32 leaf = leafOf(inf, v.payer, key, fee);
        run.leaves[i] = leaf;
        emit InferenceSettled(run.batchId, v.payer, inf.modelId, fee, inf.recordId, leaf);
    }

    /// @dev The voucher covers the model, the model is active, the price is its registry price
    ///      (or the previous one within the grace) and within the voucher, the engine is
    ///      allowed; returns the model owner.
    function _checkPrice(uint256 i, Inference calldata inf, Voucher calldata v, Config memory cfg)
        private
        view
        returns (address modelOwner)
    {
        if (v.modelId != 0 && v.modelId != inf.modelId) revert VoucherModelMismatch(i, v.modelId, inf.modelId);
        (address owner, bool active, uint256 price, uint256 previous, uint64 changedAt) =
            models.settlementInfo(inf.modelId);
        if (!active) revert ModelInactive(inf.modelId);
        uint256 given = inf.pricePer1k;
        if (given != price && !(changedAt != 0 && given == previous && block.timestamp < changedAt + cfg.priceGrace)) {
            revert PriceMismatch(inf.modelId, given, price);
        }
        if (given > v.maxPricePer1k) revert PriceAboveVoucher(i, given, v.maxPricePer1k);
        if (!params.allowedEngine(inf.engineId)) revert EngineNotAllowed(inf.engineId);
        return owner;
    }

    /// @dev At most `MAX_SHARES`, ids strictly ascending, weights positive and summing to
    ///      `WEIGHT_TOTAL`; none exactly when `isFallback`.
    function _checkShares(uint256 i, Inference calldata inf) private pure {
        uint256 n = inf.shares.length;
        if (n > MAX_SHARES || (n == 0) != inf.isFallback) revert BadShares(i);
        uint256 sum;
        uint256 last;
        for (uint256 j = 0; j < n; ++j) {
            Share calldata s = inf.shares[j];
            if (s.weight == 0 || (j != 0 && s.contributionId <= last)) revert BadShares(i);
            last = s.contributionId;
            sum += s.weight;
        }
        if (n != 0 && sum != WEIGHT_TOTAL) revert BadShares(i);
    }

    /// @dev Merkle root of the leaves, level by level (see `submitBatch`); overwrites `level`.
    function _root(bytes32[] memory level) private pure returns (bytes32) {
        uint256 n = level.length;
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
    function _payContributors(Share[] calldata shares, uint256 pool, uint256 bucket)
        private
        returns (uint256 remainder)
    {
        uint256 n = shares.length;
        if (n == 0 || pool == 0) return pool;
        uint256[] memory ids = new uint256[](n);
        for (uint256 j = 0; j < n; ++j) {
            ids[j] = shares[j].contributionId;
        }
        address[] memory contributors = datanets.contributorsOf(ids);
        remainder = pool;
        for (uint256 j = 0; j < n; ++j) {
            uint256 amount = Math.mulDiv(pool, shares[j].weight, WEIGHT_TOTAL);
            if (amount != 0) {
                _creditPending(contributors[j], bucket, amount);
                remainder -= amount;
            }
        }
    }
}
