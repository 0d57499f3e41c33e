// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ProtocolParams
/// @notice The governed knobs of the protocol, owned by the Timelock (so only a passed Governor
///         proposal can change them): the inference-fee split, the licence-fee split, the Datanet
///         creation fee, the treasury address, the escrow withdrawal delay,
///         the parameters of attribution disputes (stakes, windows, bonds, jury, slashing) and
///         the attribution engine versions whose records may settle.
/// @dev Basis points: 10,000 = 100%. Readers fetch values at use time, so a change applies to the
///      next settlement or licence purchase.
contract ProtocolParams is Ownable {
    /// @notice 100% in basis points.
    uint16 public constant BPS = 10_000;

    /// @notice Inference fee split, in basis points; always sums to `BPS`.
    struct FeeSplit {
        uint16 treasuryBps;
        uint16 modelOwnerBps;
        uint16 contributorsBps;
    }

    /// @notice The governed parameters of attribution disputes (`docs/attribution-disputes.md`
    ///         §3). Durations in seconds, amounts in wei of OPEN. Each has bounds that governance
    ///         cannot cross (see `setDisputeParam`), so the dispute game cannot be switched off.
    struct DisputeConfig {
        /// Active stake an attributor needs to submit batches (> 0).
        uint128 minAttributorStake;
        /// Per challenge (> 0).
        uint128 challengeBond;
        /// To escalate a jury outcome to governance (> 0).
        uint128 escalationBond;
        /// To request a record's transcript (> 0).
        uint128 dataRequestBond;
        /// Fixed part of a slash: slash = slashBase + slashMultiple × misdirected fees.
        uint128 slashBase;
        /// `requestUnbond` → `withdrawUnbonded` (≥ challengeWindow, ≤ 365 days).
        uint64 unbondingDelay;
        /// Batch settled → its credits final (10 s … 30 days, ≥ epochLength, ≤ unbondingDelay).
        uint64 challengeWindow;
        /// Width of a pending-credit bucket (1 s … challengeWindow).
        uint64 epochLength;
        /// Voucher expiry → last settlement against it; channel close delay (10 s … 30 days).
        uint64 voucherGrace;
        /// Previous model price still accepted; minimum gap between price changes (10 s … 30 days).
        uint64 priceGracePeriod;
        /// More challengers may join a dispute (10 s … 30 days).
        uint64 challengeCommitPeriod;
        /// Challengers reveal their candidate records (10 s … 30 days).
        uint64 candidateRevealPeriod;
        /// Jurors commit their votes (10 s … 30 days).
        uint64 juryCommitPeriod;
        /// Jurors reveal their votes (10 s … 30 days).
        uint64 juryRevealPeriod;
        /// Who may escalate a jury outcome, and until when (1 s … 30 days).
        uint64 escalationPeriod;
        /// Escalated dispute → its default outcome (1 s … 365 days).
        uint64 governanceTimeout;
        /// A transcript request must be answered within (1 s … 30 days).
        uint64 dataResponsePeriod;
        /// Unfinalised fees ≤ this share of the attributor's active stake (1 … 100,000 bps).
        uint32 exposureBps;
        /// L1 distance in ppm under which two records' weights agree (≤ 10,000).
        uint32 weightTolerancePpm;
        /// Revealed stake / eligible stake a jury needs (1 … 10,000 bps).
        uint16 juryQuorumBps;
        /// Stake a juror on the losing side loses (≤ 1,000 bps).
        uint16 jurorPenaltyBps;
        /// slash = slashBase + slashMultiple × misdirected fees (1 … 100).
        uint16 slashMultiple;
    }

    /// @notice One field of `DisputeConfig`, for `setDisputeParam` and its errors.
    enum DisputeParam {
        MinAttributorStake,
        ChallengeBond,
        EscalationBond,
        DataRequestBond,
        SlashBase,
        UnbondingDelay,
        ChallengeWindow,
        EpochLength,
        VoucherGrace,
        PriceGracePeriod,
        ChallengeCommitPeriod,
        CandidateRevealPeriod,
        JuryCommitPeriod,
        JuryRevealPeriod,
        EscalationPeriod,
        GovernanceTimeout,
        DataResponsePeriod,
        ExposureBps,
        WeightTolerancePpm,
        JuryQuorumBps,
        JurorPenaltyBps,
        SlashMultiple
    }

    FeeSplit private _feeSplit;
    DisputeConfig private _dispute;
    /// @notice Datanet owner's share of a licence fee in basis points; the rest goes to the
    ///         contributions of the Datanet's latest version.
    uint16 public licenceOwnerBps;
    /// @notice Receives the protocol share of inference fees, dust and Datanet creation fees.
    address public treasury;
    /// @notice OPEN (wei) paid to the treasury to create a Datanet.
    uint256 public datanetCreationFee;
    /// @notice Seconds between a payer's `requestWithdrawal` and the moment the escrow may leave
    ///         `AttributionSettlement`: answers already given are settled within it. Must exceed
    ///         the attributors' settlement interval.
    uint64 public escrowWithdrawalDelay;
    /// @notice Attribution engine versions (keccak-256 of the engine string) whose records may
    ///         settle: records are recomputed by anyone with that engine, so an engine that
    ///         changes results needs governance to accept it.
    mapping(bytes32 engineId => bool) public allowedEngine;

    /// @notice The inference fee split changed.
    event FeeSplitUpdated(uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps);
    /// @notice The Datanet owner's share of licence fees changed.
    event LicenceOwnerShareUpdated(uint16 ownerBps);
    /// @notice The Datanet creation fee changed.
    event DatanetCreationFeeUpdated(uint256 fee);
    /// @notice The treasury address changed.
    event TreasuryUpdated(address indexed treasury);
    /// @notice The escrow withdrawal delay changed.
    event EscrowWithdrawalDelayUpdated(uint64 delay);

    /// @notice One dispute parameter changed.
    event DisputeParamUpdated(DisputeParam indexed param, uint256 value);
    /// @notice An attribution engine version was accepted (`allowed`) or retired.
    event EngineUpdated(bytes32 indexed engineId, bool allowed);

    /// @notice `value` is outside `[min, max]` for `param` (bounds may depend on other fields).
    error DisputeParamOutOfBounds(DisputeParam param, uint256 value, uint256 min, uint256 max);
    /// @notice The zero engine id.
    error ZeroEngine();
    /// @notice The three shares do not sum to 10,000 basis points.
    error InvalidFeeSplit(uint256 sum);
    /// @notice A basis-point value above 10,000.
    error InvalidBps(uint256 bps);
    /// @notice The zero address where an account is required.
    error ZeroAddress();

    /// @param owner_ The Timelock.
    /// @param treasury_ Treasury address (may be the Timelock itself).
    /// @param split Initial inference fee split (must sum to 10,000).
    /// @param licenceOwnerBps_ Initial Datanet-owner share of licence fees.
    /// @param datanetCreationFee_ Initial Datanet creation fee in wei.
    /// @param escrowWithdrawalDelay_ Initial escrow withdrawal delay in seconds.
    /// @param dispute Initial dispute parameters; every bound of `setDisputeParam` holds.
    /// @param engines Initially accepted attribution engine ids.
    constructor(
        address owner_,
        address treasury_,
        FeeSplit memory split,
        uint16 licenceOwnerBps_,
        uint256 datanetCreationFee_,
        uint64 escrowWithdrawalDelay_,
        DisputeConfig memory dispute,
        bytes32[] memory engines
    ) Ownable(owner_) {
        _setTreasury(treasury_);
        _setFeeSplit(split.treasuryBps, split.modelOwnerBps, split.contributorsBps);
        _setLicenceOwnerBps(licenceOwnerBps_);
        datanetCreationFee = datanetCreationFee_;
        emit DatanetCreationFeeUpdated(datanetCreationFee_);
        escrowWithdrawalDelay = escrowWithdrawalDelay_;
        emit EscrowWithdrawalDelayUpdated(escrowWithdrawalDelay_);
        // Cross-field bounds are checked against the final values: store first, then check all.
        _dispute = dispute;
        for (uint8 p = 0; p <= uint8(type(DisputeParam).max); ++p) {
            DisputeParam param = DisputeParam(p);
            uint256 v = _get(dispute, param);
            _checkBounds(param, v);
            emit DisputeParamUpdated(param, v);
        }
        for (uint256 i = 0; i < engines.length; ++i) {
            _setEngine(engines[i], true);
        }
    }

    /// @notice Every dispute parameter, in one call.
    function disputeConfig() external view returns (DisputeConfig memory) {
        return _dispute;
    }

    /// @notice The current value of one dispute parameter.
    function disputeParam(DisputeParam param) external view returns (uint256) {
        return _get(_dispute, param);
    }

    /// @notice How long a model's previous price is still accepted, and the minimum gap between
    ///         two price changes (read by `ModelRegistry.setPrice`).
    function priceGracePeriod() external view returns (uint64) {
        return _dispute.priceGracePeriod;
    }

    /// @notice What `AttributionSettlement` reads to check vouchers and prices and to bucket
    ///         pending credits, in one call.
    function batchTerms() external view returns (uint64 voucherGrace, uint64 priceGracePeriod_, uint64 epochLength) {
        DisputeConfig storage d = _dispute;
        return (d.voucherGrace, d.priceGracePeriod, d.epochLength);
    }

    /// @notice The bounds `param` must stay within given the other parameters' current values.
    function disputeParamBounds(DisputeParam param) public view returns (uint256 min, uint256 max) {
        DisputeConfig storage d = _dispute;
        uint256 day = 1 days;
        if (param <= DisputeParam.DataRequestBond) return (1, type(uint128).max);
        if (param == DisputeParam.SlashBase) return (0, type(uint128).max);
        if (param == DisputeParam.UnbondingDelay) return (d.challengeWindow, 365 * day);
        if (param == DisputeParam.ChallengeWindow) {
            uint256 lo = d.epochLength > 10 ? d.epochLength : 10;
            uint256 hi = d.unbondingDelay < 30 * day ? d.unbondingDelay : 30 * day;
            return (lo, hi);
        }
        if (param == DisputeParam.EpochLength) return (1, d.challengeWindow);
        if (param <= DisputeParam.JuryRevealPeriod) return (10, 30 * day);
        if (param == DisputeParam.EscalationPeriod) return (1, 30 * day);
        if (param == DisputeParam.GovernanceTimeout) return (1, 365 * day);
        if (param == DisputeParam.DataResponsePeriod) return (1, 30 * day);
        if (param == DisputeParam.ExposureBps) return (1, 100_000);
        if (param == DisputeParam.WeightTolerancePpm) return (0, 10_000);
        if (param == DisputeParam.JuryQuorumBps) return (1, BPS);
        if (param == DisputeParam.JurorPenaltyBps) return (0, 1_000);
        return (1, 100); // SlashMultiple
    }

    /// @notice Sets one dispute parameter within its bounds (`disputeParamBounds`). Timelock
    ///         only. Batches and disputes copy what they need when they start, so a change
    ///         applies to later ones. Fields bounded by each other change in order (to lengthen
    ///         the challenge window past the unbonding delay, raise the delay first).
    function setDisputeParam(DisputeParam param, uint256 value) external onlyOwner {
        _checkBounds(param, value);
        _set(param, value);
        emit DisputeParamUpdated(param, value);
    }

    /// @notice Accepts (`allowed`) or retires attribution engine `engineId`. Timelock only.
    function setEngineAllowed(bytes32 engineId, bool allowed) external onlyOwner {
        _setEngine(engineId, allowed);
    }

    /// @notice The inference fee split in basis points.
    function feeSplit() external view returns (uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps) {
        FeeSplit memory s = _feeSplit;
        return (s.treasuryBps, s.modelOwnerBps, s.contributorsBps);
    }

    /// @notice What a settlement needs in one call: the treasury, the fee split, the stake an
    ///         attributor needs, its exposure cap and the challenge window.
    function settlementConfig()
        external
        view
        returns (
            address treasury_,
            uint16 treasuryBps,
            uint16 modelOwnerBps,
            uint16 contributorsBps,
            uint256 minAttributorStake,
            uint32 exposureBps,
            uint64 challengeWindow
        )
    {
        FeeSplit memory s = _feeSplit;
        DisputeConfig storage d = _dispute;
        return (
            treasury,
            s.treasuryBps,
            s.modelOwnerBps,
            s.contributorsBps,
            d.minAttributorStake,
            d.exposureBps,
            d.challengeWindow
        );
    }

    /// @notice Sets the inference fee split; the shares must sum to 10,000. Timelock only.
    function setFeeSplit(uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps) external onlyOwner {
        _setFeeSplit(treasuryBps, modelOwnerBps, contributorsBps);
    }

    /// @notice Sets the Datanet owner's share of licence fees (≤ 10,000). Timelock only.
    function setLicenceOwnerBps(uint16 ownerBps) external onlyOwner {
        _setLicenceOwnerBps(ownerBps);
    }

    /// @notice Sets the Datanet creation fee in wei. Timelock only.
    function setDatanetCreationFee(uint256 fee) external onlyOwner {
        datanetCreationFee = fee;
        emit DatanetCreationFeeUpdated(fee);
    }

    /// @notice Sets the escrow withdrawal delay in seconds. Timelock only.
    function setEscrowWithdrawalDelay(uint64 delay) external onlyOwner {
        escrowWithdrawalDelay = delay;
        emit EscrowWithdrawalDelayUpdated(delay);
    }

    /// @notice Sets the treasury address. Timelock only.
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    function _setFeeSplit(uint16 t, uint16 m, uint16 c) private {
        uint256 sum = uint256(t) + m + c;
        if (sum != BPS) revert InvalidFeeSplit(sum);
        _feeSplit = FeeSplit(t, m, c);
        emit FeeSplitUpdated(t, m, c);
    }

    function _setLicenceOwnerBps(uint16 ownerBps) private {
        if (ownerBps > BPS) revert InvalidBps(ownerBps);
        licenceOwnerBps = ownerBps;
        emit LicenceOwnerShareUpdated(ownerBps);
    }

    function _setEngine(bytes32 engineId, bool allowed) private {
        if (engineId == bytes32(0)) revert ZeroEngine();
        allowedEngine[engineId] = allowed;
        emit EngineUpdated(engineId, allowed);
    }

    function _checkBounds(DisputeParam param, uint256 value) private view {
        (uint256 min, uint256 max) = disputeParamBounds(param);
        if (value < min || value > max) revert DisputeParamOutOfBounds(param, value, min, max);
    }

    function _get(DisputeConfig memory d, DisputeParam p) private pure returns (uint256) {
        if (p == DisputeParam.MinAttributorStake) return d.minAttributorStake;
        if (p == DisputeParam.ChallengeBond) return d.challengeBond;
        if (p == DisputeParam.EscalationBond) return d.escalationBond;
        if (p == DisputeParam.DataRequestBond) return d.dataRequestBond;
        if (p == DisputeParam.SlashBase) return d.slashBase;
        if (p == DisputeParam.UnbondingDelay) return d.unbondingDelay;
        if (p == DisputeParam.ChallengeWindow) return d.challengeWindow;
        if (p == DisputeParam.EpochLength) return d.epochLength;
        if (p == DisputeParam.VoucherGrace) return d.voucherGrace;
        if (p == DisputeParam.PriceGracePeriod) return d.priceGracePeriod;
        if (p == DisputeParam.ChallengeCommitPeriod) return d.challengeCommitPeriod;
        if (p == DisputeParam.CandidateRevealPeriod) return d.candidateRevealPeriod;
        if (p == DisputeParam.JuryCommitPeriod) return d.juryCommitPeriod;
        if (p == DisputeParam.JuryRevealPeriod) return d.juryRevealPeriod;
        if (p == DisputeParam.EscalationPeriod) return d.escalationPeriod;
        if (p == DisputeParam.GovernanceTimeout) return d.governanceTimeout;
        if (p == DisputeParam.DataResponsePeriod) return d.dataResponsePeriod;
        if (p == DisputeParam.ExposureBps) return d.exposureBps;
        if (p == DisputeParam.WeightTolerancePpm) return d.weightTolerancePpm;
        if (p == DisputeParam.JuryQuorumBps) return d.juryQuorumBps;
        if (p == DisputeParam.JurorPenaltyBps) return d.jurorPenaltyBps;
        return d.slashMultiple;
    }

    /// @dev `value` is within bounds, so every narrowing below is exact.
    function _set(DisputeParam p, uint256 value) private {
        DisputeConfig storage d = _dispute;
        if (p == DisputeParam.MinAttributorStake) d.minAttributorStake = uint128(value);
        else if (p == DisputeParam.ChallengeBond) d.challengeBond = uint128(value);
        else if (p == DisputeParam.EscalationBond) d.escalationBond = uint128(value);
        else if (p == DisputeParam.DataRequestBond) d.dataRequestBond = uint128(value);
        else if (p == DisputeParam.SlashBase) d.slashBase = uint128(value);
        else if (p == DisputeParam.UnbondingDelay) d.unbondingDelay = uint64(value);
        else if (p == DisputeParam.ChallengeWindow) d.challengeWindow = uint64(value);
        else if (p == DisputeParam.EpochLength) d.epochLength = uint64(value);
        else if (p == DisputeParam.VoucherGrace) d.voucherGrace = uint64(value);
        else if (p == DisputeParam.PriceGracePeriod) d.priceGracePeriod = uint64(value);
        else if (p == DisputeParam.ChallengeCommitPeriod) d.challengeCommitPeriod = uint64(value);
        else if (p == DisputeParam.CandidateRevealPeriod) d.candidateRevealPeriod = uint64(value);
        else if (p == DisputeParam.JuryCommitPeriod) d.juryCommitPeriod = uint64(value);
        else if (p == DisputeParam.JuryRevealPeriod) d.juryRevealPeriod = uint64(value);
        else if (p == DisputeParam.EscalationPeriod) d.escalationPeriod = uint64(value);
        else if (p == DisputeParam.GovernanceTimeout) d.governanceTimeout = uint64(value);
        else if (p == DisputeParam.DataResponsePeriod) d.dataResponsePeriod = uint64(value);
        else if (p == DisputeParam.ExposureBps) d.exposureBps = uint32(value);
        else if (p == DisputeParam.WeightTolerancePpm) d.weightTolerancePpm = uint32(value);
        else if (p == DisputeParam.JuryQuorumBps) d.juryQuorumBps = uint16(value);
        else if (p == DisputeParam.JurorPenaltyBps) d.jurorPenaltyBps = uint16(value);
        else d.slashMultiple = uint16(value);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }
}
