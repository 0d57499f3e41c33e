// AttributionSettlement: escrow with a withdrawal delay, allowances, batch settlement with the
// governed split and documented rounding, record ids settled once, record proofs and disputes,
// claims.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parseEther, maxUint256 } from "viem";
import {
  startChain, deployProtocol, send, expectRevert, eventsNamed, setupMarket, h32, balance, gasCost, merkle,
  canTimeTravel, timeTravel,
} from "../lib/testing.mjs";

let chain, w, c, dep, st, market, addr, tl;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ deployments: dep, c } = await deployProtocol(chain, w[0]));
  st = c.AttributionSettlement;
  addr = (i) => w[i].account.address;
  tl = dep.contracts.OpenLedgerTimelock;
  market = await setupMarket(chain, c, { owner: w[1], curator: w[2], contributors: [w[3], w[4]], builder: w[5] });
});
after(() => chain?.stop());

async function invariant() {
  const [bal, esc, owed] = await Promise.all([balance(chain, st.address), st.read.totalEscrow(), st.read.totalBalances()]);
  assert.equal(bal, esc + owed, "contract balance = escrow + claimable balances");
}
let recordSeq = 0;
const inference = (payer, fee, shares, modelId = market.modelId, recordId = h32(`record-${recordSeq++}`)) =>
  ({ recordId, payer, modelId, fee, shares });
/** submitBatch arguments: the Merkle root of the inferences' record ids, and the inferences. */
const batch = (infs) => [merkle(infs.map((x) => x.recordId)).root, infs];

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

test("submitBatch: governed split, weights, dust to treasury, allowance debited, batch stored", async () => {
  const [c3, c4] = market.contributionIds;
  const before = {
    esc: await st.read.escrowOf([addr(6)]),
    tr: await st.read.balanceOf([tl]),
    mo: await st.read.balanceOf([addr(5)]),
    a3: await st.read.balanceOf([addr(3)]),
    a4: await st.read.balanceOf([addr(4)]),
  };
  // fee 1003: treasury 100, model owner 401, pool 502 -> 167 (w=1) + 334 (w=2), dust 1 to treasury
  // fee 10: treasury 1, model owner 4, pool 5, no attributed contributions -> pool to treasury
  const records = [h32("rec-0"), h32("rec-1"), h32("rec-2")];
  const tree = merkle(records);
  const infs = [
    inference(addr(6), 1003n, [{ contributionId: c3, weight: 1n }, { contributionId: c4, weight: 2n }], market.modelId, records[0]),
    inference(addr(6), 10n, [], market.modelId, records[1]),
    inference(addr(6), 0n, [], market.modelId, records[2]),
  ];
  // the root must be the record ids' root
  await expectRevert(chain, w[0], st, "submitBatch", [h32("made-up"), infs], "RootMismatch", [h32("made-up"), tree.root]);
  const r = await send(chain, w[0], st, "submitBatch", [tree.root, infs]);
  const settledBatch = eventsNamed(r, "BatchSettled")[0].args;
  assert.deepEqual(settledBatch, { batchId: 1n, attributor: addr(0), recordsRoot: tree.root, inferenceCount: 3n, totalFees: 1013n });
  const inf = eventsNamed(r, "InferenceSettled");
  assert.deepEqual(inf.map((e) => e.args.fee), [1003n, 10n, 0n]);
  assert.deepEqual(inf.map((e) => e.args.recordId), records);
  for (const id of records) assert.equal(await st.read.settledIn([id]), 1n);
  assert.equal(await st.read.batchOfRoot([tree.root]), 1n);
  assert.equal(inf[0].args.payer, addr(6));
  assert.equal(await st.read.escrowOf([addr(6)]), before.esc - 1013n);
  assert.equal(await st.read.allowance([addr(6), market.modelId]), 10_000n - 1013n);
  assert.equal(await st.read.balanceOf([tl]), before.tr + 101n + 6n);
  assert.equal(await st.read.balanceOf([addr(5)]), before.mo + 401n + 4n);
  assert.equal(await st.read.balanceOf([addr(3)]), before.a3 + 167n);
  assert.equal(await st.read.balanceOf([addr(4)]), before.a4 + 334n);
  const b = await st.read.getBatch([1n]);
  assert.equal(b.recordsRoot, tree.root);
  assert.equal(b.attributor, addr(0));
  assert.equal(b.inferenceCount, 3);
  assert.equal(b.totalFees, 1013n);
  assert.equal(await st.read.batchCount(), 1n);
  await assert.rejects(st.read.getBatch([2n]), /BatchNotFound/);
  await invariant();

  // records can be proven and disputed
  for (let i = 0; i < records.length; i++) assert.equal(await st.read.verifyRecord([1n, records[i], tree.proof(i)]), true);
  assert.equal(await st.read.verifyRecord([1n, h32("not-a-record"), tree.proof(0)]), false);
  await assert.rejects(st.read.verifyRecord([9n, records[0], []]), /BatchNotFound/);
  const d = await send(chain, w[8], st, "disputeRecord", [1n, records[2], tree.proof(2), "ipfs://why"]);
  assert.deepEqual(eventsNamed(d, "RecordDisputed")[0].args, { batchId: 1n, record: records[2], disputer: addr(8), reasonURI: "ipfs://why" });
  await expectRevert(chain, w[8], st, "disputeRecord", [1n, h32("forged"), tree.proof(2), ""], "InvalidProof", [1n, h32("forged")]);

  // the same batch again, a batch re-using one of its records, or a record twice in one batch:
  // refused, nothing is charged twice
  const esc = await st.read.escrowOf([addr(6)]);
  await expectRevert(chain, w[0], st, "submitBatch", [tree.root, infs], "RootAlreadySettled", [tree.root, 1n]);
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), 5n, []), infs[1]]), "RecordAlreadySettled", [records[1], 1n]);
  const twice = inference(addr(6), 5n, []);
  await expectRevert(chain, w[0], st, "submitBatch", batch([twice, { ...twice }]), "RecordAlreadySettled", [twice.recordId, 2n]);
  assert.equal(await st.read.escrowOf([addr(6)]), esc, "nothing charged twice");
});

test("submitBatch reverts: non-attributor, empty, escrow or allowance exceeded, inactive model, bad shares", async () => {
  const [c3] = market.contributionIds;
  const ok = [inference(addr(6), 1n, [{ contributionId: c3, weight: 1n }])];
  await expectRevert(chain, w[1], st, "submitBatch", batch(ok), "NotBonded", [addr(1), 0n, await c.ProtocolParams.read.disputeParam([0])]);
  await expectRevert(chain, w[0], st, "submitBatch", [h32("r"), []], "EmptyBatch");
  await expectRevert(chain, w[0], st, "submitBatch", ["0x" + "00".repeat(32), ok], "EmptyBatch");
  const esc = await st.read.escrowOf([addr(6)]);
  const allowed = await st.read.allowance([addr(6), market.modelId]);
  // escrow exceeded (allowance raised to unlimited so only escrow binds)
  await send(chain, w[6], st, "setAllowance", [market.modelId, maxUint256]);
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), esc + 1n, [])]), "InsufficientEscrow", [addr(6), esc, esc + 1n]);
  // escrow exceeded across the batch: the second inference finds less escrow
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), esc, []), inference(addr(6), 1n, [])]), "InsufficientEscrow", [addr(6), 0n, 1n]);
  // allowance exceeded
  await send(chain, w[6], st, "setAllowance", [market.modelId, allowed]);
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), allowed + 1n, [])]), "AllowanceExceeded", [addr(6), market.modelId, allowed, allowed + 1n]);
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(7), 1n, [])]), "InsufficientEscrow", [addr(7), 0n, 1n]);
  await send(chain, w[7], st, "deposit", [], { value: 100n });
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(7), 1n, [])]), "AllowanceExceeded", [addr(7), market.modelId, 0n, 1n]);
  // shares
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), 1n, [{ contributionId: c3, weight: 0n }])]), "ZeroWeight", [0n, 0n]);
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), 1n, [{ contributionId: 4040n, weight: 1n }])]), "ContributionNotFound", [4040n]);
  // unknown and inactive models
  await expectRevert(chain, w[0], st, "submitBatch", batch([inference(addr(6), 0n, [], 777n)]), "ModelNotFound", [777n]);
  await send(chain, w[5], c.ModelRegistry, "deactivate", [market.modelId]);
  await expectRevert(chain, w[0], st, "submitBatch", batch(ok), "ModelInactive", [market.modelId]);
  assert.equal(await st.read.escrowOf([addr(6)]), esc, "nothing moved");
  await invariant();
});

test("unlimited allowance is not decremented; claim pays what was credited", async () => {
  const m2 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m2" });
  await send(chain, w[6], st, "setAllowance", [m2.modelId, maxUint256]);
  await send(chain, w[0], st, "submitBatch", batch([inference(addr(6), 1000n, [{ contributionId: m2.contributionIds[0], weight: 7n }], m2.modelId)]));
  assert.equal(await st.read.allowance([addr(6), m2.modelId]), maxUint256);
  for (const i of [3, 4, 5]) {
    const owed = await st.read.balanceOf([addr(i)]);
    assert.ok(owed > 0n);
    const before = await balance(chain, addr(i));
    const r = await send(chain, w[i], st, "claim", []);
    assert.deepEqual(eventsNamed(r, "Claimed")[0].args, { account: addr(i), to: addr(i), amount: owed });
    assert.equal(await balance(chain, addr(i)), before + owed - gasCost(r.receipt));
    assert.equal(await st.read.balanceOf([addr(i)]), 0n);
    await expectRevert(chain, w[i], st, "claim", [], "NothingToClaim");
  }
  await invariant();
});

test("escrow announced for withdrawal is still charged for answers settled within the delay", async () => {
  const m3 = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "m3" });
  await send(chain, w[9], st, "deposit", [], { value: 1000n });
  await send(chain, w[9], st, "setAllowance", [m3.modelId, maxUint256]);
  await send(chain, w[9], st, "requestWithdrawal", [1000n]);
  await send(chain, w[0], st, "submitBatch", batch([inference(addr(9), 400n, [{ contributionId: m3.contributionIds[0], weight: 1n }], m3.modelId)]));
  assert.equal(await st.read.escrowOf([addr(9)]), 600n);
  if (!(await canTimeTravel(chain))) return;
  await timeTravel(chain, 31);
  await expectRevert(chain, w[9], st, "withdrawEscrow", [1000n], "InsufficientEscrow", [addr(9), 600n, 1000n]);
  await send(chain, w[9], st, "withdrawEscrow", [600n]);
  assert.equal(await st.read.escrowOf([addr(9)]), 0n);
  await invariant();
});
