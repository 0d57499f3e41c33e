//! `sol!` bindings generated from the committed artifacts (ABI + creation bytecode).

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy_sol_types::sol;

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    GOPEN,
    "../../contracts/out/GOPEN.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    OpenLedgerTimelock,
    "../../contracts/out/OpenLedgerTimelock.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    OpenLedgerGovernor,
    "../../contracts/out/OpenLedgerGovernor.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ProtocolParams,
    "../../contracts/out/ProtocolParams.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    DatanetRegistry,
    "../../contracts/out/DatanetRegistry.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ModelRegistry,
    "../../contracts/out/ModelRegistry.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    AttributionSettlement,
    "../../contracts/out/AttributionSettlement.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    AttributorStaking,
    "../../contracts/out/AttributorStaking.json"
);
