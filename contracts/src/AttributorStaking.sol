// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ProtocolParams} from "./ProtocolParams.sol";

/// @title AttributorStaking
/// @notice Attributors bond native OPEN to submit settlement batches: anyone whose active stake is
///         at least the governed `minAttributorStake` may attribute, and nobody else. Stake
///         leaves in two steps: `requestUnbond` starts the governed `unbondingDelay`, and
///         `withdrawUnbonded` pays out only once that delay and the challenge window of every
///         batch the attributor settled have passed, so a stake stays answerable for every batch
///         it backed (`docs/attribution-disputes.md` §3).
/// @dev Active stake is checkpointed per account and in total, keyed by timestamp, for the
///      stake-weighted jury votes of later dispute steps.
///      Invariant: address(this).balance == totalActive + totalUnbonding.
contract AttributorStaking is ReentrancyGuard {
    using Checkpoints for Checkpoints.Trace208;

    /// @notice One account's stake.
    struct Stake {
        /// Bonded and counting (wei).
        uint128 active;
        /// Waiting to be withdrawn (wei).
        uint128 unbonding;
        /// When the unbonding amount may leave, as far as the unbonding delay goes.
        uint64 unbondReadyAt;
        /// The latest end of a challenge window of the account's batches.
        uint64 lockedUntil;
        /// The origin that serves this attributor's records (for watchers and challengers).
        string endpoint;
    }

    /// @notice Why a withdrawal must wait.
    enum LockReason {
        /// The unbonding delay has not passed.
        UnbondingDelay,
        /// A batch of this attributor is still in its challenge window.
        ChallengeWindow
    }

    /// @notice The governed parameters (minimum stake, unbonding delay).
    ProtocolParams public immutable params;
    /// @notice The settlement contract, the only caller of `recordBatch`.
    address public immutable settlement;

    mapping(address account => Stake) private _stakes;
    mapping(address account => Checkpoints.Trace208) private _activeHistory;
    Checkpoints.Trace208 private _totalHistory;
    /// @notice Sum of every account's active stake.
    uint256 public totalActive;
    /// @notice Sum of every account's unbonding stake.
    uint256 public totalUnbonding;

    /// @notice `from` added `amount` to `account`'s active stake.
    event Bonded(address indexed account, address indexed from, uint256 amount, uint256 active);
    /// @notice `account` moved `amount` from active to unbonding, withdrawable from `readyAt`.
    event UnbondRequested(address indexed account, uint256 amount, uint64 readyAt);
    /// @notice `account` withdrew its unbonded stake.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice `account` announced where its records are served.
    event EndpointSet(address indexed account, string endpoint);
    /// @notice A batch of `account` keeps its stake locked until at least `until`.
    event StakeLockedUntil(address indexed account, uint64 until);

    /// @notice Zero amount where a positive one is needed.
    error ZeroAmount();
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice More than the active stake was asked to unbond.
    error InsufficientStake(address account, uint256 active, uint256 amount);
    /// @notice Nothing is unbonding.
    error NothingUnbonding(address account);
    /// @notice The withdrawal must wait until `until` (`reason`).
    error StakeLocked(LockReason reason, uint64 until);
    /// @notice Only the settlement contract records batches.
    error NotSettlement(address caller);
    /// @notice A stake above 2^128 wei.
    error StakeTooLarge(uint256 amount);

    /// @param params_ ProtocolParams.
    /// @param settlement_ AttributionSettlement (may be predicted: it is only ever compared).
    constructor(ProtocolParams params_, address settlement_) {
        params = params_;
        settlement = settlement_;
    }

    // ------------------------------------------------------------------ bonding

    /// @notice Adds `msg.value` to the caller's active stake and sets where its records are served.
    function bond(string calldata endpoint) external payable {
        _bond(msg.sender);
        _stakes[msg.sender].endpoint = endpoint;
        emit EndpointSet(msg.sender, endpoint);
    }

    /// @notice Adds `msg.value` to `account`'s active stake (its endpoint is left as it is). Only
    ///         `account` can ever unbond it.
    function bondFor(address account) external payable {
        if (account == address(0)) revert ZeroAddress();
        _bond(account);
    }

    /// @notice Announces where the caller's records are served.
    function setEndpoint(string calldata endpoint) external {
        _stakes[msg.sender].endpoint = endpoint;
        emit EndpointSet(msg.sender, endpoint);
    }

    /// @notice Moves `amount` of the caller's active stake to unbonding. It may be withdrawn after
    ///         the governed `unbondingDelay` and once every challenge window of the caller's
    ///         batches has passed; a new request adds to the unbonding amount and restarts the
    ///         delay. Unbonding stake no longer counts towards `minAttributorStake`.
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[msg.sender];
        if (amount > s.active) revert InsufficientStake(msg.sender, s.active, amount);
        s.active -= uint128(amount);
        s.unbonding += uint128(amount);
        uint64 readyAt = uint64(block.timestamp) + params.disputeConfig().unbondingDelay;
        s.unbondReadyAt = readyAt;
        totalActive -= amount;
        totalUnbonding += amount;
        _checkpoint(msg.sender, s.active);
        emit UnbondRequested(msg.sender, amount, readyAt);
    }

    /// @notice Sends the caller its whole unbonding stake once the unbonding delay and the
    ///         challenge windows of its batches have passed.
    function withdrawUnbonded() external nonReentrant {
        Stake storage s = _stakes[msg.sender];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < s.unbondReadyAt) revert StakeLocked(LockReason.UnbondingDelay, s.unbondReadyAt);
        if (block.timestamp < s.lockedUntil) revert StakeLocked(LockReason.ChallengeWindow, s.lockedUntil);
        s.unbonding = 0;
        totalUnbonding -= amount;
        emit Withdrawn(msg.sender, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Keeps `account`'s stake locked until `finalAt` (the end of a batch's challenge
    ///         window). Settlement only.
    function recordBatch(address account, uint64 finalAt) external {
        if (msg.sender != settlement) revert NotSettlement(msg.sender);
        Stake storage s = _stakes[account];
        if (finalAt > s.lockedUntil) {
            s.lockedUntil = finalAt;
            emit StakeLockedUntil(account, finalAt);
        }
    }

    // ------------------------------------------------------------------ views

    /// @notice The stake of `account`.
    function stakeOf(address account) external view returns (Stake memory) {
        return _stakes[account];
    }

    /// @notice Active stake of `account` now.
    function activeStake(address account) external view returns (uint256) {
        return _stakes[account].active;
    }

    /// @notice Whether `account` may submit batches now (active stake ≥ `minAttributorStake`).
    function isBonded(address account) external view returns (bool) {
        return _stakes[account].active >= params.disputeConfig().minAttributorStake;
    }

    /// @notice Active stake of `account` at the end of `timestamp` (≤ now).
    function activeStakeAt(address account, uint48 timestamp) external view returns (uint256) {
        return _activeHistory[account].upperLookupRecent(timestamp);
    }

    /// @notice Total active stake at the end of `timestamp` (≤ now).
    function totalActiveAt(uint48 timestamp) external view returns (uint256) {
        return _totalHistory.upperLookupRecent(timestamp);
    }

    // ------------------------------------------------------------------ internals

    function _bond(address account) private {
        if (msg.value == 0) revert ZeroAmount();
        Stake storage s = _stakes[account];
        uint256 active = uint256(s.active) + msg.value;
        if (active > type(uint128).max) revert StakeTooLarge(active);
        s.active = uint128(active);
        totalActive += msg.value;
        _checkpoint(account, active);
        emit Bonded(account, msg.sender, msg.value, active);
    }

    function _checkpoint(address account, uint256 active) private {
        uint48 now_ = SafeCast.toUint48(block.timestamp);
        _activeHistory[account].push(now_, SafeCast.toUint208(active));
        _totalHistory.push(now_, SafeCast.toUint208(totalActive));
    }
}
