// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title GOPEN — governance-wrapped OPEN
/// @notice Wraps the chain's native gas token OPEN 1:1 into an ERC-20 that carries votes
///         (ERC20Votes, delegation) and supports gasless approvals (ERC-2612 permit).
///         The ERC-6372 clock is the block timestamp, so Governor delays and periods are seconds.
/// @dev Invariant: `address(this).balance >= totalSupply()` (equal unless OPEN is force-sent).
contract GOPEN is ERC20, ERC20Permit, ERC20Votes {
    /// @notice `account` wrapped `amount` OPEN into GOPEN.
    event Deposit(address indexed account, uint256 amount);
    /// @notice `account` burned `amount` GOPEN and sent the OPEN to `to`.
    event Withdrawal(address indexed account, address indexed to, uint256 amount);

    /// @notice Wrapping or unwrapping zero is refused.
    error ZeroAmount();
    /// @notice The zero address cannot receive minted GOPEN or unwrapped OPEN.
    error InvalidRecipient();

    constructor() ERC20("Governance OPEN", "GOPEN") ERC20Permit("Governance OPEN") {}

    /// @notice Wraps `msg.value` OPEN into the same amount of GOPEN for the caller.
    function deposit() external payable {
        _deposit(msg.sender, msg.value);
    }

    /// @notice Wraps `msg.value` OPEN into GOPEN credited to `account`.
    function depositFor(address account) external payable {
        _deposit(account, msg.value);
    }

    /// @notice Burns `amount` GOPEN of the caller and sends `amount` OPEN back to the caller.
    function withdraw(uint256 amount) external {
        _withdraw(msg.sender, payable(msg.sender), amount);
    }

    /// @notice Burns `amount` GOPEN of the caller and sends `amount` OPEN to `to`.
    function withdrawTo(address payable to, uint256 amount) external {
        _withdraw(msg.sender, to, amount);
    }

    /// @notice Plain OPEN sent to the contract is wrapped for the sender.
    receive() external payable {
        _deposit(msg.sender, msg.value);
    }

    /// @notice ERC-6372: the clock is the block timestamp.
    function clock() public view override returns (uint48) {
        return uint48(block.timestamp);
    }

    /// @notice ERC-6372 clock description.
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public pure override returns (string memory) {
        return "mode=timestamp";
    }

    /// @inheritdoc ERC20Permit
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    function _deposit(address account, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        if (account == address(0)) revert InvalidRecipient();
        _mint(account, amount);
        emit Deposit(account, amount);
    }

    function _withdraw(address account, address payable to, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        if (to == address(0)) revert InvalidRecipient();
        _burn(account, amount);
        emit Withdrawal(account, to, amount);
        Address.sendValue(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }
}
