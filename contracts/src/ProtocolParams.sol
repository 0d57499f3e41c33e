// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ProtocolParams
/// @notice The governed knobs of the protocol, owned by the Timelock (so only a passed Governor
///         proposal can change them): the inference-fee split, the licence-fee split, the Datanet
///         creation fee, the attributor set, the treasury address and the escrow withdrawal delay.
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

    FeeSplit private _feeSplit;
    /// @notice Datanet owner's share of a licence fee in basis points; the rest goes to the
    ///         contributions of the Datanet's latest version.
    uint16 public licenceOwnerBps;
    /// @notice Receives the protocol share of inference fees, dust and Datanet creation fees.
    address public treasury;
    /// @notice OPEN (wei) paid to the treasury to create a Datanet.
    uint256 public datanetCreationFee;
    /// @notice Accounts allowed to submit settlement batches.
    mapping(address account => bool) public isAttributor;
    /// @notice Seconds between a payer's `requestWithdrawal` and the moment the escrow may leave
    ///         `AttributionSettlement`: answers already given are settled within it. Must exceed
    ///         the attributors' settlement interval.
    uint64 public escrowWithdrawalDelay;

    /// @notice The inference fee split changed.
    event FeeSplitUpdated(uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps);
    /// @notice The Datanet owner's share of licence fees changed.
    event LicenceOwnerShareUpdated(uint16 ownerBps);
    /// @notice The Datanet creation fee changed.
    event DatanetCreationFeeUpdated(uint256 fee);
    /// @notice `account` was added to (`allowed`) or removed from the attributor set.
    event AttributorUpdated(address indexed account, bool allowed);
    /// @notice The treasury address changed.
    event TreasuryUpdated(address indexed treasury);
    /// @notice The escrow withdrawal delay changed.
    event EscrowWithdrawalDelayUpdated(uint64 delay);

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
    /// @param attributors Initial attributor set.
    /// @param escrowWithdrawalDelay_ Initial escrow withdrawal delay in seconds.
    constructor(
        address owner_,
        address treasury_,
        FeeSplit memory split,
        uint16 licenceOwnerBps_,
        uint256 datanetCreationFee_,
        address[] memory attributors,
        uint64 escrowWithdrawalDelay_
    ) Ownable(owner_) {
        _setTreasury(treasury_);
        _setFeeSplit(split.treasuryBps, split.modelOwnerBps, split.contributorsBps);
        _setLicenceOwnerBps(licenceOwnerBps_);
        datanetCreationFee = datanetCreationFee_;
        emit DatanetCreationFeeUpdated(datanetCreationFee_);
        for (uint256 i = 0; i < attributors.length; ++i) {
            _setAttributor(attributors[i], true);
        }
        escrowWithdrawalDelay = escrowWithdrawalDelay_;
        emit EscrowWithdrawalDelayUpdated(escrowWithdrawalDelay_);
    }

    /// @notice The inference fee split in basis points.
    function feeSplit() external view returns (uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps) {
        FeeSplit memory s = _feeSplit;
        return (s.treasuryBps, s.modelOwnerBps, s.contributorsBps);
    }

    /// @notice What a settlement needs in one call: whether `attributor` may settle, the
    ///         treasury and the fee split.
    function settlementConfig(address attributor)
        external
        view
        returns (bool allowed, address treasury_, uint16 treasuryBps, uint16 modelOwnerBps, uint16 contributorsBps)
    {
        FeeSplit memory s = _feeSplit;
        return (isAttributor[attributor], treasury, s.treasuryBps, s.modelOwnerBps, s.contributorsBps);
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

    /// @notice Adds (`allowed`) or removes `account` from the attributor set. Timelock only.
    function setAttributor(address account, bool allowed) external onlyOwner {
        _setAttributor(account, allowed);
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

    function _setAttributor(address account, bool allowed) private {
        if (account == address(0)) revert ZeroAddress();
        isAttributor[account] = allowed;
        emit AttributorUpdated(account, allowed);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }
}
