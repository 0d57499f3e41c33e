// Money conservation, as a property over random batches (seeded PRNG; OPENLEDGER_SEED to vary):
// Σ debited escrow = Σ credited balances for every batch, every balance equals a BigInt
// reference model of the documented split, each voucher channel's `spent` is the sum of its
// fees, credits are claimable only once their challenge window has passed (anvil moves time;
// on a node without evm_increaseTime nothing matures during the test and no claim succeeds),
// nobody claims more than credited, and once everyone has claimed and withdrawn, the contract
// holds exactly nothing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { maxUint256 } from "viem";
import {
  startChain, deployProtocol, send, expectRevert, setupMarket, balance, gasCost, prng,
  signVoucher, inferenceV2, batchV2, channelKey, canTimeTravel, timeTravel,
} from "../lib/testing.mjs";

const SEED = Number(process.env.OPENLEDGER_SEED ?? 20261124);
const BATCHES = Number(process.env.OPENLEDGER_BATCHES ?? 24);

let chain, w, c, dep, st;
const rnd = prng(SEED);
const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const big = (maxBits) => {
  let v = 0n;
  for (let b = 0; b < maxBits; b += 16) v = (v << 16n) | BigInt(int(0, 0xffff));
  return v % (1n << BigInt(int(1, maxBits)));
};

// A random split summing to 10,000, fixed at deployment.
const tBps = int(0, 10000);
const mBps = int(0, 10000 - tBps);
const SPLIT = { treasuryBps: tBps, modelOwnerBps: mBps, contributorsBps: 10000 - tBps - mBps };

before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ deployments: dep, c } = await deployProtocol(chain, w[0], { feeSplit: SPLIT, escrowWithdrawalDelay: 0 }));
  st = c.AttributionSettlement;
});
after(() => chain?.stop());

test(`conservation over ${BATCHES} random batches (seed ${SEED}, split ${SPLIT.treasuryBps}/${SPLIT.modelOwnerBps}/${SPLIT.contributorsBps})`, async (t) => {
  const A = (i) => w[i].account.address;
  const treasury = dep.contracts.OpenLedgerTimelock;
  const a = await setupMarket(chain, c, { owner: w[1], curator: w[2], contributors: [w[2], w[3], w[4], w[3], w[7], w[2]], builder: w[5], tag: "ca", price: 1000n });
  const b = await setupMarket(chain, c, { owner: w[7], contributors: [w[3], w[1]], builder: w[2], tag: "cb", price: 1000n });
  const models = [
    { id: a.modelId, owner: A(5), contributions: a.contributionIds },
    { id: b.modelId, owner: A(2), contributions: b.contributionIds },
  ];
  const contributorOf = new Map();
  for (const [ids, who] of [[a.contributionIds, [2, 3, 4, 3, 7, 2]], [b.contributionIds, [3, 1]]]) {
    ids.forEach((id, i) => contributorOf.set(id, A(who[i])));
  }
  const payers = [6, 8, 9];
  // one voucher per payer, big enough never to bind (its cap is tested in settlement.test.mjs):
  // a model price of 1,000 wei per 1,000 tokens makes a request's fee its token count
  const vouchers = [];
  for (const p of payers) vouchers.push(await signVoucher(chain, w[p], st, A(0), { cumulative: 1n << 200n }));

  // reference model
  const ref = { escrow: new Map(), allowance: new Map(), owed: new Map(), spent: new Map() };
  const get = (mp, k) => mp.get(k) ?? 0n;
  const add = (mp, k, v) => mp.set(k, get(mp, k) + v);
  for (const p of payers) {
    const amount = BigInt(int(1, 50)) * 10n ** 17n;
    await send(chain, w[p], st, "deposit", [], { value: amount });
    add(ref.escrow, A(p), amount);
    for (const mo of models) {
      const allowance = rnd() < 0.3 ? maxUint256 : BigInt(int(0, 40)) * 10n ** 17n;
      await send(chain, w[p], st, "setAllowance", [mo.id, allowance]);
      ref.allowance.set(`${A(p)}/${mo.id}`, allowance);
    }
  }

  const accounts = [treasury, ...Array.from({ length: 10 }, (_, i) => A(i))];
  const travel = await canTimeTravel(chain);
  const window = Number((await c.ProtocolParams.read.disputeConfig()).challengeWindow);
  /** What the contract owes `acct`: claimable now plus still pending. */
  const owedOf = async (acct) => (await st.read.claimable([acct])) + (await st.read.pendingOf([acct]))[0];
  const totals = () => Promise.all([st.read.totalEscrow(), st.read.totalPending(), st.read.totalBalances()]);
  let settled = 0;
  let rejected = 0;
  for (let round = 0; round < BATCHES; round++) {
    const n = int(1, 8);
    const infs = [];
    for (let i = 0; i < n; i++) {
      const mo = pick(models);
      // k distinct contributions, ascending, ppm weights summing to 1,000,000 (k = 0: fallback)
      const ids = [...new Set(Array.from({ length: int(0, mo.contributions.length) }, () => pick(mo.contributions)))].sort((x, y) => (x < y ? -1 : 1));
      const raw = ids.map(() => (rnd() < 0.1 ? big(100) + 1n : BigInt(int(1, 1_000_000))));
      const rawSum = raw.reduce((s, x) => s + x, 0n);
      const ppm = raw.map((x) => (x * 1_000_000n) / rawSum || 1n);
      if (ppm.length) ppm[ppm.indexOf(ppm.reduce((m, x) => (x > m ? x : m), 0n))] += 1_000_000n - ppm.reduce((s, x) => s + x, 0n);
      const shares = ids.map((contributionId, j) => ({ contributionId, weight: ppm[j] }));
      const r = rnd();
      const fee = r < 0.1 ? BigInt(int(0, 3)) : r < 0.2 ? big(63) : big(60); // some exceed escrow
      const pi = int(0, payers.length - 1);
      infs.push({ payer: A(payers[pi]), voucher: pi, modelId: mo.id, fee, shares, owner: mo.owner });
    }
    if (round % 5 === 4) {
      // every fifth batch overdraws a payer on purpose, so the revert path is always exercised
      const last = infs.at(-1);
      const left = infs.filter((x) => x.payer === last.payer).reduce((s, x) => s - x.fee, get(ref.escrow, last.payer)) + last.fee;
      last.fee = left >= 0n ? left + 1n : 1n; // (left < 0: an earlier inference already overdraws)
    }
    // simulate
    const esc = new Map(ref.escrow);
    const alw = new Map(ref.allowance);
    const owed = new Map(ref.owed);
    const spent = new Map(ref.spent);
    let failure = null;
    let debited = 0n;
    for (const inf of infs) {
      const key = `${inf.payer}/${inf.modelId}`;
      if (get(esc, inf.payer) < inf.fee) { failure = "InsufficientEscrow"; break; }
      if (get(alw, key) < inf.fee) { failure = "AllowanceExceeded"; break; }
      esc.set(inf.payer, get(esc, inf.payer) - inf.fee);
      if (get(alw, key) !== maxUint256) alw.set(key, get(alw, key) - inf.fee);
      debited += inf.fee;
      add(spent, inf.payer, inf.fee);
      const tr = (inf.fee * BigInt(SPLIT.treasuryBps)) / 10000n;
      const mo = (inf.fee * BigInt(SPLIT.modelOwnerBps)) / 10000n;
      let pool = inf.fee - tr - mo;
      add(owed, inf.owner, mo);
      add(owed, treasury, tr);
      let rest = pool;
      for (const s of inf.shares) {
        const amt = (pool * s.weight) / 1_000_000n;
        add(owed, contributorOf.get(s.contributionId), amt);
        rest -= amt;
      }
      add(owed, treasury, rest);
    }
    const { args } = batchV2(vouchers, infs.map((x) => inferenceV2({ modelId: x.modelId, price: 1000n, tokens: x.fee, shares: x.shares, voucher: x.voucher })));
    const before = await totals();
    if (failure) {
      await expectRevert(chain, w[0], st, "submitBatch", args, failure);
      rejected++;
    } else {
      await send(chain, w[0], st, "submitBatch", args);
      Object.assign(ref, { escrow: esc, allowance: alw, owed, spent });
      settled++;
    }
    const afterT = await totals();
    assert.equal(before[0] - afterT[0], afterT[1] + afterT[2] - before[1] - before[2], "Σ debited escrow = Σ credits");
    assert.equal(before[0] - afterT[0], failure ? 0n : debited);
    for (const acct of accounts) assert.equal(await owedOf(acct), get(ref.owed, acct), `credits of ${acct}`);
    for (const p of payers) {
      assert.equal(await st.read.escrowOf([A(p)]), get(ref.escrow, A(p)));
      assert.equal(await st.read.spent([channelKey(vouchers[payers.indexOf(p)])]), get(ref.spent, A(p)), "spent = Σ fees of the channel");
      for (const mo of models) assert.equal(await st.read.allowance([A(p), mo.id]), get(ref.allowance, `${A(p)}/${mo.id}`));
    }
    assert.equal(await balance(chain, st.address), afterT[0] + afterT[1] + afterT[2], "balance = escrow + pending + balances");

    // a random account claims: before the window nothing; after it exactly what it was
    // credited, and nothing more after
    const i = int(1, 9);
    if (!travel) {
      assert.equal(await st.read.claimable([A(i)]), 0n, "nothing matures within the test");
      await expectRevert(chain, w[i], st, "claim", [], "NothingToClaim");
      continue;
    }
    await timeTravel(chain, window + 1);
    const due = get(ref.owed, A(i));
    if (due > 0n) {
      const b0 = await balance(chain, A(i));
      const r = await send(chain, w[i], st, "claim", []);
      assert.equal(await balance(chain, A(i)), b0 + due - gasCost(r.receipt));
      ref.owed.set(A(i), 0n);
    }
    await expectRevert(chain, w[i], st, "claim", [], "NothingToClaim");
  }
  t.diagnostic(`settled ${settled} batches, rejected ${rejected}`);
  assert.ok(rejected > 0, "some batches are rejected");
  assert.ok(settled > 0, `some batches settle (settled ${settled}, rejected ${rejected})`);

  // drain: everyone claims and withdraws; nothing is left behind
  if (travel) await timeTravel(chain, window + 1);
  for (let i = 1; i < 10; i++) {
    if (travel && get(ref.owed, A(i)) > 0n) await send(chain, w[i], st, "claim", []);
  }
  for (const p of payers) {
    const e = await st.read.escrowOf([A(p)]);
    if (e > 0n) {
      await send(chain, w[p], st, "requestWithdrawal", [e]); // delay 0 in this deployment
      await send(chain, w[p], st, "withdrawEscrow", [e]);
    }
  }
  const treasuryOwed = await owedOf(treasury);
  assert.equal(treasuryOwed, get(ref.owed, treasury));
  assert.equal(await st.read.totalEscrow(), 0n);
  const unclaimed = travel ? treasuryOwed : accounts.reduce((s, a) => s + get(ref.owed, a), 0n);
  const [, pending, balances] = await totals();
  assert.equal(pending + balances, unclaimed, "only the treasury (the Timelock, claims by proposal) is owed");
  assert.equal(await balance(chain, st.address), unclaimed, "nothing stranded");
});
