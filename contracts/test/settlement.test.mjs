// AttributionSettlement: escrow with a withdrawal delay, allowances, payer-signed vouchers,
// batch settlement at the registry price with the governed split and documented rounding,
// requests charged once, leaves computed on chain, proofs and disputes, claims.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parseEther, maxUint256, hashTypedData, encodeFunctionData, parseEventLogs } from "viem";
import {
  startChain, deployProtocol, deploy, send, expectRevert, eventsNamed, setupMarket, h32, balance, gasCost,
  canTimeTravel, timeTravel, signVoucher, inferenceV2, batchV2, sharesOf, channelKey, feeOf, leafOf, ENGINE_ID,
} from "../lib/testing.mjs";

let chain, w, c, dep, st, market, addr, tl;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ deployments: dep, c } = await deployProtocol(chain, w[0]));
  st = c.AttributionSettlement;
  addr = (i) => w[i].account.address;
  tl = dep.contracts.OpenLedgerTimelock;
  // 1,000 wei per 1,000 tokens: a request's fee is its token count in wei
  market = await setupMarket(chain, c, { owner: w[1], curator: w[2], contributors: [w[3], w[4]], builder: w[5], price: 1000n });
});
after(() => chain?.stop());

async function invariant() {
  const [bal, esc, pending, owed] = await Promise.all([balance(chain, st.address), st.read.totalEscrow(), st.read.totalPending(), st.read.totalBalances()]);
  assert.equal(bal, esc + pending + owed, "contract balance = escrow + pending credits + claimable balances");
}
/** A voucher of payer w[i] for attributor w[0]. */
const voucher = (i, over = {}) => signVoucher(chain, w[i], st, addr(0), over);
/** One inference of `tokens` on the market model at its price. */
const inference = (tokens, shares = [], over = {}) => inferenceV2({ modelId: market.modelId, price: 1000n, tokens, shares, ...over });

test("escrow: deposit, depositFor, withdrawEscrow and their reverts", async () => {
  let r = await send(chain, w[6], st, "deposit", [], { value: parseEther("2") });
  assert.deepEqual(eventsNamed(r, "EscrowDeposited")[0].args, { payer: addr(6), from: addr(6), amount: parseEther("2") });
  r = await send(chain, w[7], st, "depositFor", [addr(6)], { value: parseEther("1") });
  assert.deepEqual(eventsNamed(r, "EscrowDeposited")[0].args, { payer: addr(6), from: addr(7), amount: parseEther("1") });
  assert.equal(await st.read.escrowOf([addr(6)]), parseEther("3"));
  assert.equal(await st.read.totalEscrow(), parseEther("3"));
  await expectRevert(chain, w[6], st, "deposit", [], "ZeroAmount", undefined, { value: 0n });
  await expectRevert(chain, w[6], st, "depositFor", ["0x0000000000000000000000000000000000000000"], "ZeroAddress", undefined, { value: 1n });

  // withdrawing needs an announcement and the governed delay (30 s in this deployment)
  const delay = await c.ProtocolParams.read.escrowWithdrawalDelay();
  assert.equal(delay, 30n);
  await expectRevert(chain, w[6], st, "withdrawEscrow", [parseEther("0.5")], "WithdrawalNotRequested", [addr(6), 0n, parseEther("0.5")]);
  await expectRevert(chain, w[6], st, "requestWithdrawal", [parseEther("3.5")], "InsufficientEscrow", [addr(6), parseEther("3"), parseEther("3.5")]);
  await expectRevert(chain, w[6], st, "requestWithdrawal", [0n], "ZeroAmount");
  r = await send(chain, w[6], st, "requestWithdrawal", [parseEther("0.5")]);
  const req = eventsNamed(r, "WithdrawalRequested")[0].args;
  const block = await chain.publicClient.getBlock({ blockNumber: r.receipt.blockNumber });
  assert.deepEqual(req, { payer: addr(6), amount: parseEther("0.5"), readyAt: block.timestamp + delay });
  assert.deepEqual(await st.read.withdrawalRequest([addr(6)]), [parseEther("0.5"), block.timestamp + delay]);
  await expectRevert(chain, w[6], st, "withdrawEscrow", [parseEther("0.5")], "WithdrawalNotReady", [addr(6), block.timestamp + delay]);
  await expectRevert(chain, w[6], st, "withdrawEscrow", [parseEther("0.6")], "WithdrawalNotRequested", [addr(6), parseEther("0.5"), parseEther("0.6")]);
  if (!(await canTimeTravel(chain))) return; // the rest needs evm_increaseTime
  await timeTravel(chain, Number(delay));
  const before = await balance(chain, addr(6));
  r = await send(chain, w[6], st, "withdrawEscrow", [parseEther("0.2")]);
  assert.deepEqual(eventsNamed(r, "EscrowWithdrawn")[0].args, { payer: addr(6), to: addr(6), amount: parseEther("0.2") });
  assert.equal(await balance(chain, addr(6)), before + parseEther("0.2") - gasCost(r.receipt));
  assert.equal((await st.read.withdrawalRequest([addr(6)]))[0], parseEther("0.3"), "the rest stays announced");
  await send(chain, w[6], st, "withdrawEscrow", [parseEther("0.3")]);
  assert.deepEqual(await st.read.withdrawalRequest([addr(6)]), [0n, 0n]);
  assert.equal(await st.read.escrowOf([addr(6)]), parseEther("2.5"));
  await expectRevert(chain, w[6], st, "withdrawEscrow", [1n], "WithdrawalNotRequested", [addr(6), 0n, 1n]);
  await expectRevert(chain, w[6], st, "withdrawEscrow", [0n], "ZeroAmount");
  await invariant();
});

test("setAllowance: per payer and model, with event", async () => {
  const r = await send(chain, w[6], st, "setAllowance", [market.modelId, 10_000n]);
  assert.deepEqual(eventsNamed(r, "AllowanceSet")[0].args, { payer: addr(6), modelId: market.modelId, amount: 10_000n });
  assert.equal(await st.read.allowance([addr(6), market.modelId]), 10_000n);
  assert.equal(await st.read.allowance([addr(7), market.modelId]), 0n);
  assert.equal(await st.read.UNLIMITED(), maxUint256);
});

test("submitBatch: registry price x tokens, governed split, ppm weights, dust to treasury, leaves on chain", async () => {
  const [c3, c4] = market.contributionIds;
  const escBefore = await st.read.escrowOf([addr(6)]);
  const v = await voucher(6, { cumulative: 2000n });
  // fee 1003: treasury 100, model owner 401, pool 502 -> 167 (1/3) + 334 (2/3), dust 1 to treasury
  // fee 10: treasury 1, model owner 4, pool 5, a fallback record -> pool to treasury
  const infs = [inference(1003n, sharesOf([c3, c4], [333_334n, 666_666n])), inference(10n), inference(0n)];
  const { args, leaves, tree } = batchV2([v], infs);
  // the root must be the leaves' root; the fee cannot be chosen
  await expectRevert(chain, w[0], st, "submitBatch", [h32("made-up"), [v], infs], "RootMismatch", [h32("made-up"), tree.root]);
  const r = await send(chain, w[0], st, "submitBatch", args);
  const settledBatch = eventsNamed(r, "BatchSettled")[0].args;
  assert.deepEqual(settledBatch, { batchId: 1n, attributor: addr(0), recordsRoot: tree.root, inferenceCount: 3n, totalFees: 1013n });
  const inf = eventsNamed(r, "InferenceSettled");
  assert.deepEqual(inf.map((e) => e.args.fee), [1003n, 10n, 0n]);
  assert.deepEqual(inf.map((e) => e.args.recordId), infs.map((x) => x.recordId));
  assert.deepEqual(inf.map((e) => e.args.leaf), leaves);
  for (const [i, x] of infs.entries()) {
    assert.equal(await st.read.requestSettledIn([addr(0), x.requestKey]), 1n);
    assert.equal(await st.read.leafOf([x, addr(6), channelKey(v), feeOf(1000n, x.promptTokens + x.completionTokens)]), leaves[i]);
  }
  assert.equal(await st.read.requestSettledIn([addr(1), infs[0].requestKey]), 0n, "per attributor");
  assert.equal(await st.read.batchOfRoot([tree.root]), 1n);
  assert.equal(await st.read.spent([channelKey(v)]), 1013n);
  assert.equal(inf[0].args.payer, addr(6));
  assert.equal(await st.read.escrowOf([addr(6)]), escBefore - 1013n);
  assert.equal(await st.read.allowance([addr(6), market.modelId]), 10_000n - 1013n);
  // credited to pending buckets, not claimable before the batch's challenge window ends
  const b = await st.read.getBatch([1n]);
  const bucket = b.bucket;
  assert.equal(b.settledAt - (b.settledAt % 10n), bucket, "bucket = settlement time rounded down to epochLength (10 s)");
  assert.equal(b.finalAt, b.settledAt + 60n);
  assert.equal(await st.read.bucketFinalAt([bucket]), b.finalAt);
  assert.equal(await st.read.pendingIn([tl, bucket]), 101n + 6n);
  assert.equal(await st.read.pendingIn([addr(5), bucket]), 401n + 4n);
  assert.equal(await st.read.pendingIn([addr(3), bucket]), 167n);
  assert.equal(await st.read.pendingIn([addr(4), bucket]), 334n);
  assert.equal(await st.read.totalPending(), 1013n);
  assert.equal(await st.read.balanceOf([addr(3)]), 0n);
  assert.deepEqual(await st.read.pendingOf([addr(3)]), [167n, b.finalAt]);
  assert.equal(b.recordsRoot, tree.root);
  assert.equal(b.attributor, addr(0));
  assert.equal(b.inferenceCount, 3);
  assert.equal(b.totalFees, 1013n);
  assert.equal(await st.read.batchCount(), 1n);
  await assert.rejects(st.read.getBatch([2n]), /BatchNotFound/);
  await invariant();

  // leaves can be proven and disputed
  for (let i = 0; i < leaves.length; i++) assert.equal(await st.read.verifyRecord([1n, leaves[i], tree.proof(i)]), true);
  assert.equal(await st.read.verifyRecord([1n, infs[0].recordId, tree.proof(0)]), false, "a record id is not a leaf");
  await assert.rejects(st.read.verifyRecord([9n, leaves[0], []]), /BatchNotFound/);
  const d = await send(chain, w[8], st, "disputeRecord", [1n, leaves[2], tree.proof(2), "ipfs://why"]);
  assert.deepEqual(eventsNamed(d, "RecordDisputed")[0].args, { batchId: 1n, record: leaves[2], disputer: addr(8), reasonURI: "ipfs://why" });
  await expectRevert(chain, w[8], st, "disputeRecord", [1n, h32("forged"), tree.proof(2), ""], "InvalidProof", [1n, h32("forged")]);

  // the same batch again: refused, nothing is charged twice
  const esc = await st.read.escrowOf([addr(6)]);
  await expectRevert(chain, w[0], st, "submitBatch", args, "RootAlreadySettled", [tree.root, 1n]);
  assert.equal(await st.read.escrowOf([addr(6)]), esc, "nothing charged twice");
});

test("vouchers: the signed digest is the wallet's EIP-712 hash; closeChannel", async () => {
  const v = await voucher(6, { channel: 77n });
  const chainId = await chain.publicClient.getChainId();
  const { signature, ...message } = v;
  const hash = hashTypedData({
    domain: { name: "OpenLedger Inference", version: "1", chainId, verifyingContract: st.address },
    types: { InferenceVoucher: ["payer:address", "attributor:address", "modelId:uint256", "maxPricePer1k:uint256", "channel:uint256", "cumulative:uint256", "expiry:uint256"].map((x) => ({ name: x.split(":")[0], type: x.split(":")[1] })) },
    primaryType: "InferenceVoucher",
    message,
  });
  assert.equal(await st.read.voucherDigest([v]), hash);
  assert.equal(signature.length, 132);
  assert.equal(await st.read.channelKey([addr(6), addr(0), 77n]), channelKey(v));
  // closing: effective after voucherGrace (60 s here); closing again never moves it later
  const r = await send(chain, w[6], st, "closeChannel", [addr(0), 77n]);
  const at = (await chain.publicClient.getBlock({ blockNumber: r.receipt.blockNumber })).timestamp + 60n;
  assert.deepEqual(eventsNamed(r, "ChannelClosing")[0].args, { channelKey: channelKey(v), payer: addr(6), attributor: addr(0), channel: 77n, closesAt: at });
  await send(chain, w[6], st, "closeChannel", [addr(0), 77n]);
  assert.equal(await st.read.closesAt([channelKey(v)]), at);
  // until then the channel still settles answers already given
  await send(chain, w[0], st, "submitBatch", batchV2([v], [inference(5n)]).args);
  if (!(await canTimeTravel(chain))) return;
  await timeTravel(chain, 61);
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [inference(5n)]).args, "ChannelClosed", [channelKey(v), at]);
  await invariant();
});

test("submitBatch refuses, by name: vouchers, prices, engine, shares, escrow, allowance, models", async () => {
  const [c3, c4] = market.contributionIds;
  const one = sharesOf([c3]);
  const refuse = async (vouchers, infs, name, errArgs, from = w[0]) =>
    expectRevert(chain, from, st, "submitBatch", batchV2(vouchers, infs).args, name, errArgs);
  const v = await voucher(6, { channel: 2n });
  await expectRevert(chain, w[1], st, "submitBatch", batchV2([v], [inference(1n, one)]).args, "NotBonded", [addr(1), 0n, await c.ProtocolParams.read.disputeParam([0])]);
  await expectRevert(chain, w[0], st, "submitBatch", [h32("r"), [v], []], "EmptyBatch");
  await expectRevert(chain, w[0], st, "submitBatch", ["0x" + "00".repeat(32), [v], [inference(1n, one)]], "EmptyBatch");
  // vouchers
  const other = await signVoucher(chain, w[6], st, addr(8), { channel: 2n });
  await refuse([other], [inference(1n, one)], "VoucherNotForSender", [0n, addr(8)]);
  const now = (await chain.publicClient.getBlock()).timestamp;
  await refuse([await voucher(6, { expiry: now - 1000n })], [inference(1n, one)], "VoucherExpired", [0n, now - 1000n]);
  const forged = { ...v, cumulative: v.cumulative * 2n };
  await refuse([forged], [inference(1n, one)], "BadVoucherSignature", [0n, addr(6)]);
  const byOther = await signVoucher(chain, w[7], st, addr(0), { channel: 2n });
  await refuse([{ ...byOther, payer: addr(6) }], [inference(1n, one)], "BadVoucherSignature", [0n, addr(6)]);
  await refuse([v], [inference(1n, one, { voucher: 1n })], "BadVoucherIndex", [0n, 1n]);
  await refuse([await voucher(6, { modelId: 999n })], [inference(1n, one)], "VoucherModelMismatch", [0n, 999n, market.modelId]);
  // prices: the registry's, within the voucher's cap
  await refuse([v], [inference(1n, one, { price: 999n })], "PriceMismatch", [market.modelId, 999n, 1000n]);
  await refuse([v], [inference(1n, one, { price: 2000n })], "PriceMismatch", [market.modelId, 2000n, 1000n]);
  await refuse([await voucher(6, { maxPricePer1k: 999n })], [inference(1n, one)], "PriceAboveVoucher", [0n, 1000n, 999n]);
  await refuse([v], [inference(1n, one, { engineId: h32("an engine nobody allowed") })], "EngineNotAllowed", [h32("an engine nobody allowed")]);
  // shares: ppm summing to 1,000,000, ids ascending, at most 64, none exactly when fallback
  await refuse([v], [inference(1n, [{ contributionId: c3, weight: 999_999n }])], "BadShares", [0n]);
  await refuse([v], [inference(1n, [{ contributionId: c3, weight: 0n }, { contributionId: c4, weight: 1_000_000n }])], "BadShares", [0n]);
  await refuse([v], [inference(1n, [{ contributionId: c4, weight: 500_000n }, { contributionId: c3, weight: 500_000n }])], "BadShares", [0n]);
  await refuse([v], [inference(1n, [{ contributionId: c3, weight: 500_000n }, { contributionId: c3, weight: 500_000n }])], "BadShares", [0n]);
  await refuse([v], [inference(1n, one, { isFallback: true })].map((x) => ({ ...x, isFallback: true })), "BadShares", [0n]);
  await refuse([v], [{ ...inference(1n), isFallback: false }], "BadShares", [0n]);
  const many = Array.from({ length: 65 }, (_, i) => ({ contributionId: BigInt(i + 1), weight: i === 0 ? 1_000_000n - 64n * 15_384n : 15_384n }));
  await refuse([v], [inference(1n, many)], "BadShares", [0n]);
  await refuse([v], [inference(1n, sharesOf([4040n]))], "ContributionNotFound", [4040n]);
  // escrow and allowance
  const esc = await st.read.escrowOf([addr(6)]);
  const allowed = await st.read.allowance([addr(6), market.modelId]);
  const big = await voucher(6, { cumulative: parseEther("1000"), channel: 3n });
  await send(chain, w[6], st, "setAllowance", [market.modelId, maxUint256]);
  await refuse([big], [inference(esc + 1n)], "InsufficientEscrow", [addr(6), esc, esc + 1n]);
  await refuse([big], [inference(esc), inference(1n)], "InsufficientEscrow", [addr(6), 0n, 1n]);
  await send(chain, w[6], st, "setAllowance", [market.modelId, allowed]);
  await refuse([big], [inference(allowed + 1n)], "AllowanceExceeded", [addr(6), market.modelId, allowed, allowed + 1n]);
  // unknown and inactive models
  await refuse([v], [inference(0n, [], { modelId: 777n })], "ModelNotFound", [777n]);
  const m4 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m4", price: 1000n });
  await send(chain, w[5], c.ModelRegistry, "deactivate", [m4.modelId]);
  await refuse([v], [inference(1n, [], { modelId: m4.modelId })], "ModelInactive", [m4.modelId]);
  assert.equal(await st.read.escrowOf([addr(6)]), esc, "nothing moved");
  await invariant();
});

test("attack: a payer is never charged more than its voucher allows", async () => {
  const low = await voucher(6, { channel: 10n, cumulative: 1500n });
  await send(chain, w[0], st, "submitBatch", batchV2([low], [inference(1000n)]).args);
  // 1,000 of 1,500 spent: another 600 on the same channel is refused, in one batch or two
  await refuse6(low, [inference(600n)], 1600n);
  await refuse6(low, [inference(300n), inference(300n)], 1600n);
  // a second voucher on the same channel shares `spent`: an old one never grants more
  const top = await voucher(6, { channel: 10n, cumulative: 1600n });
  await send(chain, w[0], st, "submitBatch", batchV2([low, top], [inference(400n, [], { voucher: 0n }), inference(200n, [], { voucher: 1n })]).args);
  assert.equal(await st.read.spent([channelKey(low)]), 1600n);
  await refuse6(top, [inference(1n)], 1601n);
  await refuse6(low, [inference(1n)], 1601n);
  await invariant();

  async function refuse6(v, infs, required) {
    await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], infs).args, "VoucherExceeded", [channelKey(v), v.cumulative, required]);
  }
});

test("attack: a voucher cannot be redeemed by another attributor", async () => {
  const v = await voucher(6, { channel: 11n, cumulative: 5000n });
  const min = await c.ProtocolParams.read.disputeParam([0]);
  await send(chain, w[8], c.AttributorStaking, "bond", ["http://127.0.0.1:1"], { value: min });
  await expectRevert(chain, w[8], st, "submitBatch", batchV2([v], [inference(100n)]).args, "VoucherNotForSender", [0n, addr(0)]);
  // renaming the attributor breaks the payer's signature
  await expectRevert(chain, w[8], st, "submitBatch", batchV2([{ ...v, attributor: addr(8) }], [inference(100n)]).args, "BadVoucherSignature", [0n, addr(6)]);
  assert.equal(await st.read.spent([channelKey(v)]), 0n);
});

test("attack: one request cannot be charged twice under two record ids", async () => {
  const v = await voucher(6, { channel: 12n, cumulative: 5000n });
  const first = inference(100n);
  const r = await send(chain, w[0], st, "submitBatch", batchV2([v], [first]).args);
  const batchId = eventsNamed(r, "BatchSettled")[0].args.batchId;
  const again = { ...inference(100n), requestKey: first.requestKey };
  assert.notEqual(again.recordId, first.recordId);
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [again]).args, "RequestAlreadySettled", [first.requestKey, batchId]);
  const twice = inference(100n);
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [twice, { ...inference(50n), requestKey: twice.requestKey }]).args, "RequestAlreadySettled", [twice.requestKey, batchId + 1n]);
  assert.equal(await st.read.spent([channelKey(v)]), 100n);
});

test("attack: an answer is charged at the price it was served at", async () => {
  const m5 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m5", price: 1000n });
  await send(chain, w[6], st, "setAllowance", [m5.modelId, maxUint256]);
  const v = await voucher(6, { channel: 13n, cumulative: 100_000n, maxPricePer1k: 3000n });
  const at = (price, tokens = 1000n) => inferenceV2({ modelId: m5.modelId, price, tokens, shares: sharesOf([m5.contributionIds[0]]) });
  // the owner raises the price: answers served at the old one still settle at it within the grace
  await send(chain, w[5], c.ModelRegistry, "setPrice", [m5.modelId, 2000n]);
  const r = await send(chain, w[0], st, "submitBatch", batchV2([v], [at(1000n), at(2000n)]).args);
  assert.deepEqual(eventsNamed(r, "InferenceSettled").map((e) => e.args.fee), [1000n, 2000n]);
  // never above the voucher's cap, never a made-up price
  await expectRevert(chain, w[5], c.ModelRegistry, "setPrice", [m5.modelId, 5000n], "PriceChangeTooSoon");
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [at(1500n)]).args, "PriceMismatch", [m5.modelId, 1500n, 2000n]);
  if (!(await canTimeTravel(chain))) return;
  await timeTravel(chain, 61);
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [at(1000n)]).args, "PriceMismatch", [m5.modelId, 1000n, 2000n]);
  await send(chain, w[5], c.ModelRegistry, "setPrice", [m5.modelId, 5000n]);
  await expectRevert(chain, w[0], st, "submitBatch", batchV2([v], [at(5000n)]).args, "PriceAboveVoucher", [0n, 5000n, 3000n]);
  await invariant();
});

test("attack: credits are not claimable before the window ends; then anyone releases them", async () => {
  const m2 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m2", price: 1000n });
  await send(chain, w[6], st, "setAllowance", [m2.modelId, maxUint256]);
  const v = await voucher(6, { channel: 20n, cumulative: 1000n });
  const snapshot = async (i) => ({ claimable: await st.read.claimable([addr(i)]), pending: (await st.read.pendingOf([addr(i)]))[0] });
  const was = { 3: await snapshot(3), 5: await snapshot(5) };
  const r = await send(chain, w[0], st, "submitBatch", batchV2([v], [inferenceV2({ modelId: m2.modelId, price: 1000n, tokens: 1000n, shares: sharesOf([m2.contributionIds[0]]) })]).args);
  const b = await st.read.getBatch([eventsNamed(r, "BatchSettled")[0].args.batchId]);
  assert.equal(await st.read.allowance([addr(6), m2.modelId]), maxUint256, "unlimited allowance is not decremented");
  // inside the window: this batch's credits are pending, not claimable, and neither a claim
  // nor a release moves them
  for (const i of [3, 5]) {
    const now = await snapshot(i);
    assert.equal(now.claimable, was[i].claimable, `account ${i}: nothing more claimable`);
    assert.ok(now.pending > was[i].pending, `account ${i}: more pending`);
    assert.equal((await st.read.pendingOf([addr(i)]))[1], b.finalAt);
  }
  const owed3 = (await snapshot(3)).pending;
  await send(chain, w[9], st, "release", [addr(3), 0n]);
  if ((await st.read.balanceOf([addr(3)])) > 0n) await send(chain, w[3], st, "claim", []);
  await expectRevert(chain, w[3], st, "claim", [], "NothingToClaim");
  assert.equal((await snapshot(3)).pending, owed3, "still pending after a claim and a release");
  await invariant();
  if (!(await canTimeTravel(chain))) return; // the rest needs evm_increaseTime
  await timeTravel(chain, Number(b.finalAt - b.settledAt) + 1);
  // after it: claimable; anyone may release it into the balance; the owner claims exactly it
  assert.equal((await st.read.pendingOf([addr(3)]))[0], 0n);
  const claimable3 = await st.read.claimable([addr(3)]);
  assert.equal(claimable3, owed3);
  const rr = await send(chain, w[9], st, "release", [addr(3), 0n]);
  assert.equal(eventsNamed(rr, "Released")[0].args.account, addr(3));
  assert.equal(await st.read.balanceOf([addr(3)]), claimable3);
  for (const i of [3, 5]) {
    const due = await st.read.claimable([addr(i)]);
    const before = await balance(chain, addr(i));
    const c1 = await send(chain, w[i], st, "claim", []);
    assert.deepEqual(eventsNamed(c1, "Claimed")[0].args, { account: addr(i), to: addr(i), amount: due });
    assert.equal(await balance(chain, addr(i)), before + due - gasCost(c1.receipt));
    assert.equal(await st.read.claimable([addr(i)]), 0n);
    await expectRevert(chain, w[i], st, "claim", [], "NothingToClaim");
  }
  await invariant();
});

test("claim re-entered from the receiver pays once", async (t) => {
  if (!(await canTimeTravel(chain))) {
    t.skip("needs evm_increaseTime to pass the challenge window");
    return;
  }
  // a contract that re-enters claim() when paid, credited as a model owner
  const re = await deploy(chain, w[0], "ClaimReenterer", [st.address]);
  const licence = (await c.DatanetRegistry.read.getDatanet([market.datanetId])).licenceFee;
  const call = (contract, functionName, args) => encodeFunctionData({ abi: contract.abi, functionName, args });
  await send(chain, w[0], re, "exec", [c.DatanetRegistry.address, call(c.DatanetRegistry, "buyLicence", [market.datanetId])], { value: licence });
  const reg = await send(chain, w[0], re, "exec", [c.ModelRegistry.address, call(c.ModelRegistry, "registerModel", [{
    baseModelId: "meta-llama/Llama-3.2-1B", baseModelHash: h32("base"), adapterHash: h32("re-adapter"), trainingManifestHash: h32("re-train"),
    trainedOn: [{ datanetId: market.datanetId, version: 0n }], pricePer1kTokens: 1000n, metadataURI: "",
  }])]);
  const modelId = parseEventLogs({ abi: c.ModelRegistry.abi, logs: reg.receipt.logs }).find((e) => e.eventName === "ModelRegistered").args.modelId;
  const m6 = { modelId, contributionIds: market.contributionIds };
  await send(chain, w[6], st, "setAllowance", [modelId, maxUint256]);
  const v = await voucher(6, { channel: 21n, cumulative: 10_000n });
  await send(chain, w[0], st, "submitBatch", batchV2([v], [inferenceV2({ modelId: m6.modelId, price: 1000n, tokens: 10_000n, shares: sharesOf([m6.contributionIds[0]]) })]).args);
  await timeTravel(chain, 61);
  const due = await st.read.claimable([re.address]);
  assert.ok(due > 0n);
  await send(chain, w[0], re, "claimFrom", []);
  assert.equal(await balance(chain, re.address), due, "paid once");
  assert.equal(await re.read.reentered(), true, "the receiver tried");
  assert.equal(await st.read.claimable([re.address]), 0n);
  await invariant();
});

test("escrow announced for withdrawal is still charged for answers settled within the delay", async () => {
  const m3 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m3", price: 1000n });
  await send(chain, w[9], st, "deposit", [], { value: 1000n });
  await send(chain, w[9], st, "setAllowance", [m3.modelId, maxUint256]);
  await send(chain, w[9], st, "requestWithdrawal", [1000n]);
  const v = await signVoucher(chain, w[9], st, addr(0), { cumulative: 1000n });
  await send(chain, w[0], st, "submitBatch", batchV2([v], [inferenceV2({ modelId: m3.modelId, price: 1000n, tokens: 400n, shares: sharesOf([m3.contributionIds[0]]) })]).args);
  assert.equal(await st.read.escrowOf([addr(9)]), 600n);
  if (!(await canTimeTravel(chain))) return;
  await timeTravel(chain, 31);
  await expectRevert(chain, w[9], st, "withdrawEscrow", [1000n], "InsufficientEscrow", [addr(9), 600n, 1000n]);
  await send(chain, w[9], st, "withdrawEscrow", [600n]);
  assert.equal(await st.read.escrowOf([addr(9)]), 0n);
  await invariant();
});
