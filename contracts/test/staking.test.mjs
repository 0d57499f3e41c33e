// AttributorStaking and bonded settlement: only bonded attributors settle, unbonding waits out the
// unbonding delay and every challenge window of the attributor's batches, fees per two windows
// are capped by the stake, and a withdrawal cannot be re-entered.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parseEther } from "viem";
import {
  startChain, deployProtocol, deploy, send, expectRevert, eventsNamed, setupMarket, balance,
  canTimeTravel, timeTravel, signVoucher, inferenceV2, batchV2, sharesOf,
} from "../lib/testing.mjs";
import { DEFAULT_CONFIG } from "../deploy.mjs";

// A 120 s challenge window (= the unbonding delay) so that a batch can outlast an unbonding
// request; a 1% exposure cap so that it is reached with small fees.
const DISPUTE = { ...DEFAULT_CONFIG.dispute, challengeWindow: 120, exposureBps: 100 };
const MIN = BigInt(DISPUTE.minAttributorStake);

let chain, w, c, sk, st, market, addr, travel;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ c } = await deployProtocol(chain, w[0], { dispute: DISPUTE }));
  sk = c.AttributorStaking;
  st = c.AttributionSettlement;
  addr = (i) => w[i].account.address;
  travel = await canTimeTravel(chain);
  market = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "stk", price: 1000n });
  await send(chain, w[6], st, "deposit", [], { value: parseEther("10") });
  await send(chain, w[6], st, "setAllowance", [market.modelId, parseEther("10")]);
});
after(() => chain?.stop());

async function invariant() {
  const [bal, act, unb] = await Promise.all([balance(chain, sk.address), sk.read.totalActive(), sk.read.totalUnbonding()]);
  assert.equal(bal, act + unb, "staking balance = active + unbonding");
}
/** submitBatch arguments: one inference from attributor `who` charging `fee` to account 6. */
async function batchOf(who, fee, shares = sharesOf([market.contributionIds[0]])) {
  const v = await signVoucher(chain, w[6], st, who.account.address, { cumulative: parseEther("10") });
  return batchV2([v], [inferenceV2({ modelId: market.modelId, price: 1000n, tokens: fee, shares })]).args;
}
/** A one-inference batch from `who` charging `fee` to account 6 (price 1,000 wei per 1,000 tokens). */
async function settle(who, fee) {
  return send(chain, who, st, "submitBatch", await batchOf(who, fee));
}
/** Any root: a stake check comes first. */
const H0 = "0x" + "11".repeat(32);
const timeOf = async (r) => (await chain.publicClient.getBlock({ blockHash: r.receipt.blockHash })).timestamp;

test("bond, bondFor and setEndpoint: events, stake, totals and checkpoints", async () => {
  const r = await send(chain, w[7], sk, "bond", ["https://attributor-7.example"], { value: MIN });
  assert.deepEqual(eventsNamed(r, "Bonded")[0].args, { account: addr(7), from: addr(7), amount: MIN, active: MIN });
  assert.equal(eventsNamed(r, "EndpointSet")[0].args.endpoint, "https://attributor-7.example");
  const s = await sk.read.stakeOf([addr(7)]);
  assert.equal(s.active, MIN);
  assert.equal(s.endpoint, "https://attributor-7.example");
  assert.equal(await sk.read.isBonded([addr(7)]), true);
  // someone else may add stake; only the endpoint's owner sets the endpoint
  const r2 = await send(chain, w[8], sk, "bondFor", [addr(7)], { value: 5n });
  assert.deepEqual(eventsNamed(r2, "Bonded")[0].args, { account: addr(7), from: addr(8), amount: 5n, active: MIN + 5n });
  assert.equal((await sk.read.stakeOf([addr(7)])).endpoint, "https://attributor-7.example");
  await send(chain, w[7], sk, "setEndpoint", ["https://new.example"]);
  assert.equal((await sk.read.stakeOf([addr(7)])).endpoint, "https://new.example");
  await expectRevert(chain, w[7], sk, "bond", [""], "ZeroAmount", undefined, { value: 0n });
  await expectRevert(chain, w[8], sk, "bondFor", ["0x0000000000000000000000000000000000000000"], "ZeroAddress", undefined, { value: 1n });
  // checkpoints by timestamp: the stake before and at the bond
  const t1 = await timeOf(r);
  assert.equal(await sk.read.activeStakeAt([addr(7), Number(t1) - 1]), 0n);
  assert.equal(await sk.read.activeStakeAt([addr(7), Number(await timeOf(r2))]), MIN + 5n);
  assert.ok((await sk.read.totalActiveAt([Number(await timeOf(r2))])) >= MIN * 2n + 5n); // the deployer's and 7's
  await invariant();
});

test("only bonded attributors settle; unbonded stake does not count", async () => {
  await expectRevert(chain, w[8], st, "submitBatch", [H0, [], []], "NotBonded", [addr(8), 0n, MIN]);
  await send(chain, w[8], sk, "bond", [""], { value: MIN - 1n });
  const r0 = await expectRevert(chain, w[8], st, "submitBatch", [H0, [], []], "NotBonded");
  assert.deepEqual(r0.args, [addr(8), MIN - 1n, MIN]);
  await send(chain, w[8], sk, "bondFor", [addr(8)], { value: 1n });
  const r = await settle(w[8], 1000n);
  const batchId = eventsNamed(r, "BatchSettled")[0].args.batchId;
  const b = await st.read.getBatch([batchId]);
  assert.equal(b.finalAt, (await timeOf(r)) + 120n, "finalAt = settledAt + challengeWindow");
  assert.equal((await sk.read.stakeOf([addr(8)])).lockedUntil, b.finalAt, "the batch locks the stake");
  // requesting to unbond anything drops the attributor below the minimum at once
  const u = await send(chain, w[8], sk, "requestUnbond", [1n]);
  assert.deepEqual(eventsNamed(u, "UnbondRequested")[0].args, { account: addr(8), amount: 1n, readyAt: (await timeOf(u)) + BigInt(DISPUTE.unbondingDelay) });
  assert.equal(await sk.read.isBonded([addr(8)]), false);
  await expectRevert(chain, w[8], st, "submitBatch", [H0, [], []], "NotBonded", [addr(8), MIN - 1n, MIN]);
  await expectRevert(chain, w[8], sk, "requestUnbond", [MIN], "InsufficientStake", [addr(8), MIN - 1n, MIN]);
  await expectRevert(chain, w[8], sk, "requestUnbond", [0n], "ZeroAmount");
  await invariant();
});

test("recordBatch is the settlement contract's alone", async () => {
  await expectRevert(chain, w[0], sk, "recordBatch", [addr(0), 2n ** 63n], "NotSettlement", [addr(0)]);
  assert.notEqual((await sk.read.stakeOf([addr(0)])).lockedUntil, 2n ** 63n);
});

test("unbonding waits for the delay and for the challenge window of every batch", async () => {
  await expectRevert(chain, w[9], sk, "withdrawUnbonded", [], "NothingUnbonding", [addr(9)]);
  await send(chain, w[9], sk, "bond", [""], { value: MIN * 2n });
  const u = await send(chain, w[9], sk, "requestUnbond", [MIN]);
  const readyAt = (await timeOf(u)) + BigInt(DISPUTE.unbondingDelay);
  await expectRevert(chain, w[9], sk, "withdrawUnbonded", [], "StakeLocked", [0, readyAt]);
  if (!travel) return; // the rest needs evm_increaseTime
  await timeTravel(chain, 60);
  // still bonded with the other half: a batch now keeps the stake until 120 s later
  const r = await settle(w[9], 1000n);
  const finalAt = (await timeOf(r)) + 120n;
  assert.ok(finalAt > readyAt);
  await timeTravel(chain, Number(readyAt - (await timeOf(r))) + 1);
  await expectRevert(chain, w[9], sk, "withdrawUnbonded", [], "StakeLocked", [1, finalAt]);
  await timeTravel(chain, Number(finalAt - readyAt));
  const before = await balance(chain, addr(9));
  const x = await send(chain, w[9], sk, "withdrawUnbonded", []);
  assert.deepEqual(eventsNamed(x, "Withdrawn")[0].args, { account: addr(9), amount: MIN });
  const gas = x.receipt.gasUsed * x.receipt.effectiveGasPrice;
  assert.equal(await balance(chain, addr(9)), before + MIN - gas);
  assert.equal((await sk.read.stakeOf([addr(9)])).unbonding, 0n);
  await expectRevert(chain, w[9], sk, "withdrawUnbonded", [], "NothingUnbonding", [addr(9)]);
  await invariant();
});

test("fees per two challenge windows are capped by the attributor's stake", async () => {
  // 1% of 100 OPEN: 1 OPEN per this and the previous window
  const cap = (MIN * 2n * BigInt(DISPUTE.exposureBps)) / 10_000n;
  await send(chain, w[4], sk, "bond", [""], { value: MIN * 2n });
  const r = await settle(w[4], cap - 10n);
  const period = (await timeOf(r)) / 120n;
  assert.equal(await st.read.feesInPeriod([addr(4), period]), cap - 10n);
  const e = await expectRevert(chain, w[4], st, "submitBatch", await batchOf(w[4], 11n, []), "ExposureExceeded");
  assert.equal(e.args[0], addr(4));
  assert.ok(e.args[1] >= cap + 1n && e.args[2] === cap, `${e.args}`);
  await settle(w[4], 10n); // exactly the cap is allowed
  if (!travel) return;
  // the next window still counts this one; the one after does not
  await timeTravel(chain, 120);
  await expectRevert(chain, w[4], st, "submitBatch", await batchOf(w[4], 1n, []), "ExposureExceeded");
  await timeTravel(chain, 240);
  await settle(w[4], cap);
});

test("a withdrawal cannot be re-entered", async (t) => {
  if (!travel) {
    t.skip("needs evm_increaseTime to pass the unbonding delay");
    return;
  }
  const re = await deploy(chain, w[0], "StakeReenterer", [sk.address]);
  await send(chain, w[2], re, "bondAndUnbond", [], { value: MIN });
  await timeTravel(chain, Number(DISPUTE.unbondingDelay) + 1);
  const before = await balance(chain, sk.address);
  await send(chain, w[2], re, "withdraw", []);
  assert.equal(await re.read.received(), MIN, "paid once");
  assert.equal(await balance(chain, sk.address), before - MIN);
  const err = await re.read.reentryError();
  assert.equal(err, "0x3ee5aeb5", "the re-entry fails with ReentrancyGuardReentrantCall()");
  await invariant();
});
