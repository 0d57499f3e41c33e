// ProtocolParams and the Timelock wiring: only the Timelock changes parameters; the setters'
// own checks (split sums, bps range, zero addresses) are exercised on a ProtocolParams owned by
// a test account, and through the Timelock in governance.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { keccak256, toHex, zeroAddress, encodeDeployData, decodeErrorResult } from "viem";
import { startChain, deployProtocol, deploy, send, expectRevert, eventsNamed } from "../lib/testing.mjs";
import { artifact as art, disputeArg, engineIds, DEFAULT_CONFIG } from "../deploy.mjs";

const DEV_DISPUTE = disputeArg(DEFAULT_CONFIG.dispute);
const ENGINES = engineIds(DEFAULT_CONFIG.engines);
/** Field names of `DisputeConfig`, in the order of the `DisputeParam` enum. */
const FIELDS = art("ProtocolParams").abi.find((e) => e.type === "constructor")
  .inputs.find((i) => i.name === "dispute").components.map((c) => c.name);
const PARAM = Object.fromEntries(FIELDS.map((f, i) => [f, i]));
const DAY = 86400n;

let chain, w, c, dep;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ deployments: dep, c } = await deployProtocol(chain, w[0]));
});
after(() => chain?.stop());

test("deployment: parameters, owner = Timelock, treasury = Timelock, settlement config", async () => {
  const tl = dep.contracts.OpenLedgerTimelock;
  assert.equal(await c.ProtocolParams.read.owner(), tl);
  assert.equal(await c.ProtocolParams.read.treasury(), tl);
  assert.deepEqual(await c.ProtocolParams.read.feeSplit(), [1000, 4000, 5000]);
  assert.equal(await c.ProtocolParams.read.licenceOwnerBps(), 2000);
  assert.equal(await c.ProtocolParams.read.datanetCreationFee(), 10n ** 16n);
  const cfg = await c.ProtocolParams.read.settlementConfig();
  assert.deepEqual(cfg, [tl, 1000, 4000, 5000, BigInt(DEV_DISPUTE.minAttributorStake), 10000, 60n]);
  assert.equal(await c.DatanetRegistry.read.params(), dep.contracts.ProtocolParams);
  assert.equal(await c.ModelRegistry.read.datanets(), dep.contracts.DatanetRegistry);
  assert.equal(await c.AttributionSettlement.read.params(), dep.contracts.ProtocolParams);
  assert.equal(await c.AttributionSettlement.read.models(), dep.contracts.ModelRegistry);
  assert.equal(await c.AttributionSettlement.read.datanets(), dep.contracts.DatanetRegistry);
});

test("timelock: Governor proposes and cancels, anyone executes, no admin but the timelock itself", async () => {
  const t = c.OpenLedgerTimelock;
  const gov = dep.contracts.OpenLedgerGovernor;
  const [admin, proposer, executor, canceller] = await Promise.all([
    t.read.DEFAULT_ADMIN_ROLE(),
    t.read.PROPOSER_ROLE(),
    t.read.EXECUTOR_ROLE(),
    t.read.CANCELLER_ROLE(),
  ]);
  assert.equal(await t.read.hasRole([proposer, gov]), true);
  assert.equal(await t.read.hasRole([canceller, gov]), true);
  assert.equal(await t.read.hasRole([executor, zeroAddress]), true);
  assert.equal(await t.read.hasRole([admin, t.address]), true);
  for (const who of [dep.deployer, gov]) {
    assert.equal(await t.read.hasRole([admin, who]), false, `${who} must not be admin`);
    if (who === dep.deployer) assert.equal(await t.read.hasRole([proposer, who]), false);
  }
  assert.equal(await t.read.getMinDelay(), 5n);
  assert.equal(await c.OpenLedgerGovernor.read.timelock(), t.address);
  assert.equal(await c.OpenLedgerGovernor.read.token(), dep.contracts.GOPEN);
  assert.equal(await c.OpenLedgerGovernor.read.votingDelay(), 1n);
  assert.equal(await c.OpenLedgerGovernor.read.votingPeriod(), 60n);
  assert.equal(await c.OpenLedgerGovernor.read.proposalThreshold(), 0n);
  assert.equal(await c.OpenLedgerGovernor.read["quorumNumerator"](), 4n);
  assert.equal(await c.OpenLedgerGovernor.read.CLOCK_MODE(), "mode=timestamp");
  assert.equal(await c.OpenLedgerGovernor.read.name(), "OpenLedgerGovernor");
  // The deployer cannot schedule on the timelock directly.
  await expectRevert(
    chain, w[0], t, "schedule",
    [c.ProtocolParams.address, 0n, "0x", "0x" + "00".repeat(32), keccak256(toHex("x")), 5n],
    "AccessControlUnauthorizedAccount",
  );
});

test("parameter change not through the Timelock reverts (every setter, even from the deployer)", async () => {
  const p = c.ProtocolParams;
  const calls = [
    ["setFeeSplit", [2000, 3000, 5000]],
    ["setLicenceOwnerBps", [100]],
    ["setDatanetCreationFee", [0n]],
    ["setTreasury", [w[5].account.address]],
    ["setEscrowWithdrawalDelay", [0n]],
    ["setDisputeParam", [PARAM.challengeWindow, 600n]],
    ["setEngineAllowed", [keccak256(toHex("another engine")), true]],
    ["transferOwnership", [w[5].account.address]],
    ["renounceOwnership", []],
  ];
  for (const [fn, args] of calls) {
    for (const who of [w[0], w[5]]) {
      await expectRevert(chain, who, p, fn, args, "OwnableUnauthorizedAccount", [who.account.address]);
    }
  }
  assert.deepEqual(await p.read.feeSplit(), [1000, 4000, 5000]);
  assert.equal(await p.read.disputeParam([PARAM.challengeWindow]), 60n);
});

test("deployment: the dispute parameters and the engine allowlist of the config", async () => {
  const p = c.ProtocolParams;
  const got = await p.read.disputeConfig();
  for (const f of FIELDS) {
    assert.equal(BigInt(got[f]), BigInt(DEV_DISPUTE[f]), f);
    assert.equal(await p.read.disputeParam([PARAM[f]]), BigInt(DEV_DISPUTE[f]), `disputeParam(${f})`);
  }
  assert.equal(await p.read.priceGracePeriod(), 60n);
  assert.equal(await p.read.allowedEngine([ENGINES[0]]), true);
  assert.equal(await p.read.allowedEngine([keccak256(toHex("openledger-attribution/0.0.0"))]), false);
});

/** A dispute config whose every field differs, within bounds. */
function distinctDispute() {
  const d = {};
  FIELDS.forEach((f, i) => (d[f] = BigInt(DEV_DISPUTE[f]) + BigInt(i + 1)));
  d.juryQuorumBps = 5000n;
  d.jurorPenaltyBps = 200n;
  d.weightTolerancePpm = 2000n;
  d.slashMultiple = 20n;
  d.exposureBps = 20000n;
  return disputeArg(Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v.toString()])));
}

async function ownedParams(dispute = DEV_DISPUTE, engines = ENGINES) {
  const split = { treasuryBps: 2500, modelOwnerBps: 2500, contributorsBps: 5000 };
  return deploy(chain, w[0], "ProtocolParams", [w[0].account.address, w[9].account.address, split, 0, 0n, 7n, dispute, engines]);
}

test("dispute parameters: the enum follows the struct, each bound refused by name, order matters", async () => {
  const dispute = distinctDispute();
  const p = await ownedParams(dispute);
  // disputeParam(i) is field i of disputeConfig(): the enum and the struct agree
  const cfg = await p.read.disputeConfig();
  for (const f of FIELDS) assert.equal(await p.read.disputeParam([PARAM[f]]), BigInt(cfg[f]), f);
  const r = await send(chain, w[0], p, "setDisputeParam", [PARAM.challengeBond, 5n]);
  assert.deepEqual(eventsNamed(r, "DisputeParamUpdated")[0].args, { param: PARAM.challengeBond, value: 5n });
  assert.equal((await p.read.disputeConfig()).challengeBond, 5n);
  // each bound, refused with the parameter, the value and the bounds in force
  const u128 = 2n ** 128n - 1n;
  const cw = BigInt(cfg.challengeWindow), ub = BigInt(cfg.unbondingDelay), ep = BigInt(cfg.epochLength);
  const refusals = [
    ["minAttributorStake", 0n, 1n, u128],
    ["challengeBond", 0n, 1n, u128],
    ["escalationBond", 0n, 1n, u128],
    ["dataRequestBond", 0n, 1n, u128],
    ["minAttributorStake", u128 + 1n, 1n, u128],
    ["slashBase", u128 + 1n, 0n, u128],
    ["unbondingDelay", cw - 1n, cw, 365n * DAY],
    ["unbondingDelay", 365n * DAY + 1n, cw, 365n * DAY],
    ["challengeWindow", ep - 1n, ep, ub],
    ["challengeWindow", ub + 1n, ep, ub],
    ["epochLength", 0n, 1n, cw],
    ["epochLength", cw + 1n, 1n, cw],
    ["voucherGrace", 9n, 10n, 30n * DAY],
    ["priceGracePeriod", 9n, 10n, 30n * DAY],
    ["priceGracePeriod", 30n * DAY + 1n, 10n, 30n * DAY],
    ["challengeCommitPeriod", 9n, 10n, 30n * DAY],
    ["candidateRevealPeriod", 9n, 10n, 30n * DAY],
    ["juryCommitPeriod", 9n, 10n, 30n * DAY],
    ["juryRevealPeriod", 9n, 10n, 30n * DAY],
    ["escalationPeriod", 0n, 1n, 30n * DAY],
    ["governanceTimeout", 0n, 1n, 365n * DAY],
    ["dataResponsePeriod", 0n, 1n, 30n * DAY],
    ["exposureBps", 0n, 1n, 100000n],
    ["exposureBps", 100001n, 1n, 100000n],
    ["weightTolerancePpm", 10001n, 0n, 10000n],
    ["juryQuorumBps", 0n, 1n, 10000n],
    ["juryQuorumBps", 10001n, 1n, 10000n],
    ["jurorPenaltyBps", 1001n, 0n, 1000n],
    ["slashMultiple", 0n, 1n, 100n],
    ["slashMultiple", 101n, 1n, 100n],
  ];
  for (const [f, v, min, max] of refusals) {
    await expectRevert(chain, w[0], p, "setDisputeParam", [PARAM[f], v], "DisputeParamOutOfBounds", [PARAM[f], v, min, max]);
  }
  // nothing changed by the refusals
  const after = await p.read.disputeConfig();
  for (const f of FIELDS) if (f !== "challengeBond") assert.equal(after[f], cfg[f], f);
  // a longer window needs a longer unbonding delay first
  await expectRevert(chain, w[0], p, "setDisputeParam", [PARAM.challengeWindow, 30n * DAY], "DisputeParamOutOfBounds",
    [PARAM.challengeWindow, 30n * DAY, ep, ub]);
  await send(chain, w[0], p, "setDisputeParam", [PARAM.unbondingDelay, 60n * DAY]);
  await send(chain, w[0], p, "setDisputeParam", [PARAM.challengeWindow, 30n * DAY]);
  assert.equal(await p.read.disputeParam([PARAM.challengeWindow]), 30n * DAY);
  // an index past the enum is refused by the ABI decoder
  await assert.rejects(chain.publicClient.simulateContract({
    account: w[0].account, address: p.address, abi: p.abi, functionName: "setDisputeParam", args: [FIELDS.length, 1n],
  }));
});

test("engine allowlist: accepted and retired with events; the zero id refused", async () => {
  const p = await ownedParams(DEV_DISPUTE, []);
  const id = ENGINES[0];
  assert.equal(await p.read.allowedEngine([id]), false);
  let r = await send(chain, w[0], p, "setEngineAllowed", [id, true]);
  assert.deepEqual(eventsNamed(r, "EngineUpdated")[0].args, { engineId: id, allowed: true });
  assert.equal(await p.read.allowedEngine([id]), true);
  r = await send(chain, w[0], p, "setEngineAllowed", [id, false]);
  assert.equal(await p.read.allowedEngine([id]), false);
  await expectRevert(chain, w[0], p, "setEngineAllowed", ["0x" + "00".repeat(32), true], "ZeroEngine");
});

test("constructor refuses dispute parameters out of bounds, naming the parameter", async () => {
  const a = art("ProtocolParams");
  const split = { treasuryBps: 1000, modelOwnerBps: 4000, contributorsBps: 5000 };
  for (const [f, v, min, max] of [
    ["challengeWindow", 5n, 10n, 120n],
    ["unbondingDelay", 30n, 60n, 365n * DAY],
    ["slashMultiple", 0n, 1n, 100n],
  ]) {
    const dispute = { ...DEV_DISPUTE, [f]: typeof DEV_DISPUTE[f] === "bigint" ? v : Number(v) };
    const data = encodeDeployData({
      abi: a.abi,
      bytecode: a.bytecode,
      args: [w[0].account.address, w[0].account.address, split, 0, 0n, 0n, dispute, ENGINES],
    });
    const failed = await chain.publicClient.call({ account: w[0].account.address, data }).then(() => null, (e) => e);
    assert.ok(failed, `${f} = ${v} must revert`);
    const revertData = failed.walk((e) => typeof e.data === "string" && e.data.startsWith("0x"))?.data;
    const decoded = decodeErrorResult({ abi: a.abi, data: revertData });
    assert.equal(decoded.errorName, "DisputeParamOutOfBounds", f);
    assert.deepEqual(decoded.args, [PARAM[f], v, min, max], f);
  }
});

test("setters with an owner: events, split sums != 10,000, bps > 10,000, zero addresses", async () => {
  const p = await ownedParams();
  assert.equal(await p.read.escrowWithdrawalDelay(), 7n);
  assert.deepEqual(await p.read.feeSplit(), [2500, 2500, 5000]);
  assert.equal(await p.read.BPS(), 10000);

  let r = await send(chain, w[0], p, "setFeeSplit", [0, 0, 10000]);
  assert.deepEqual(eventsNamed(r, "FeeSplitUpdated")[0].args, { treasuryBps: 0, modelOwnerBps: 0, contributorsBps: 10000 });
  assert.deepEqual(await p.read.feeSplit(), [0, 0, 10000]);
  await expectRevert(chain, w[0], p, "setFeeSplit", [1000, 4000, 4999], "InvalidFeeSplit", [9999n]);
  await expectRevert(chain, w[0], p, "setFeeSplit", [1000, 4000, 5001], "InvalidFeeSplit", [10001n]);
  await expectRevert(chain, w[0], p, "setFeeSplit", [65535, 65535, 10000], "InvalidFeeSplit", [141070n]);

  r = await send(chain, w[0], p, "setLicenceOwnerBps", [10000]);
  assert.equal(eventsNamed(r, "LicenceOwnerShareUpdated")[0].args.ownerBps, 10000);
  await expectRevert(chain, w[0], p, "setLicenceOwnerBps", [10001], "InvalidBps", [10001n]);

  r = await send(chain, w[0], p, "setDatanetCreationFee", [123n]);
  assert.equal(eventsNamed(r, "DatanetCreationFeeUpdated")[0].args.fee, 123n);
  assert.equal(await p.read.datanetCreationFee(), 123n);


  r = await send(chain, w[0], p, "setTreasury", [w[4].account.address]);
  assert.equal(eventsNamed(r, "TreasuryUpdated")[0].args.treasury, w[4].account.address);
  assert.equal(await p.read.treasury(), w[4].account.address);
  await expectRevert(chain, w[0], p, "setTreasury", [zeroAddress], "ZeroAddress");

  r = await send(chain, w[0], p, "setEscrowWithdrawalDelay", [3600n]);
  assert.equal(eventsNamed(r, "EscrowWithdrawalDelayUpdated")[0].args.delay, 3600n);
  assert.equal(await p.read.escrowWithdrawalDelay(), 3600n);
});

test("constructor rejects a split that does not sum to 10,000", async () => {
  const a = art("ProtocolParams");
  const bad = { treasuryBps: 1, modelOwnerBps: 2, contributorsBps: 3 };
  const data = encodeDeployData({
    abi: a.abi,
    bytecode: a.bytecode,
    args: [w[0].account.address, w[0].account.address, bad, 0, 0n, 0n, DEV_DISPUTE, ENGINES],
  });
  const failed = await chain.publicClient.call({ account: w[0].account.address, data }).then(() => null, (e) => e);
  assert.ok(failed, "creation must revert");
  const revertData = failed.walk((e) => typeof e.data === "string" && e.data.startsWith("0x"))?.data;
  const decoded = decodeErrorResult({ abi: a.abi, data: revertData });
  assert.equal(decoded.errorName, "InvalidFeeSplit");
  assert.deepEqual(decoded.args, [6n]);
});
