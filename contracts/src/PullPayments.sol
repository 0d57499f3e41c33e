// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title PullPayments
/// @notice Internal OPEN ledger: contracts credit accounts, accounts `claim` what they are owed.
///         Nothing is ever pushed to an account during a state change, so a reverting or
///         gas-hungry recipient cannot block a purchase or a settlement.
abstract contract PullPayments {
    /// @notice OPEN (wei) each account may claim.
    mapping(address account => uint256) public balanceOf;
    /// @notice Sum of `balanceOf` over all accounts.
    uint256 public totalBalances;

    /// @notice `account` claimed `amount` OPEN, sent to `to`.
    event Claimed(address indexed account, address indexed to, uint256 amount);

    /// @notice Nothing to claim.
    error NothingToClaim();

    /// @notice Sends the caller's whole balance to the caller.
    /// @return amount The OPEN sent.
    function claim() external returns (uint256 amount) {
        return _claim(payable(msg.sender));
    }

    /// @notice Sends the caller's whole balance to `to`.
    /// @return amount The OPEN sent.
    function claimTo(address payable to) external returns (uint256 amount) {
        return _claim(to);
    }

    /// @dev Called at the start of every claim (a contract with credits that mature moves the
    ///      caller's matured ones into `balanceOf` here).
    function _beforeClaim(address account) internal virtual {}

    function _claim(address payable to) private returns (uint256 amount) {
        _beforeClaim(msg.sender);
        amount = balanceOf[msg.sender];
        if (amount == 0) revert NothingToClaim();
        balanceOf[msg.sender] = 0;
        totalBalances -= amount;
        emit Claimed(msg.sender, to, amount);
        Address.sendValue(to, amount);
    }

    /// @dev Credits `amount` to `account` without touching `totalBalances` (callers add the
    ///      batch total once, to save gas).
    function _creditNoTotal(address account, uint256 amount) internal {
        balanceOf[account] += amount;
    }

    /// @dev Credits `amount` to `account`.
    function _credit(address account, uint256 amount) internal {
        balanceOf[account] += amount;
        totalBalances += amount;
    }
}
