// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title OpenLedgerTimelock
/// @notice OpenZeppelin's TimelockController under a name of its own, so the build emits an
///         artifact for it. Deploy with proposers = [Governor], executors = [address(0)] (anyone
///         may execute a ready operation) and admin = address(0): the only admin is then the
///         timelock itself, so every role change goes through a proposal.
contract OpenLedgerTimelock is TimelockController {
    /// @param minDelay Seconds between queueing and executing an operation.
    /// @param proposers Accounts granted PROPOSER_ROLE and CANCELLER_ROLE (the Governor).
    /// @param executors Accounts granted EXECUTOR_ROLE; address(0) opens execution to anyone.
    /// @param admin Optional extra admin for set-up; address(0) for none.
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
