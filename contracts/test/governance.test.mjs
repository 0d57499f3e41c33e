// GOPEN (wrap, unwrap, votes, permit, timestamp clock) and governance end to end: holders wrap
// OPEN, delegate, propose a new fee split, vote, queue, wait out the Timelock, execute; the next
// settlement uses the new split.
//
// Waiting uses evm_increaseTime/evm_mine where the RPC has them (anvil). Where it does not (our
// node), the end-to-end test is skipped unless OPENLEDGER_GOV_REALTIME=1, which runs it in real
// time with a 12 s voting period and a 5 s timelock (about a minute for all proposals). OPENLEDGER_NO_TIME_TRAVEL=1
// forces the no-time-travel path on anvil.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parseEther, encodeFunctionData, keccak256, toHex, zeroAddress } from "viem";
import {
  startChain, deployProtocol, send, expectRevert, eventsNamed, balance, gasCost, canTimeTravel, timeTravel,
  setupMarket, h32, signVoucher, inferenceV2, batchV2, sharesOf,
} from "../lib/testing.mjs";

let chain, w, c, dep, addr, travel, realtime;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  addr = (i) => w[i].account.address;
  travel = process.env.OPENLEDGER_NO_TIME_TRAVEL !== "1" && (await canTimeTravel(chain));
  realtime = !travel && process.env.OPENLEDGER_GOV_REALTIME === "1";
  ({ deployments: dep, c } = await deployProtocol(chain, w[0], realtime ? { votingPeriod: 12 } : {}));
});
after(() => chain?.stop());

/** Lets `seconds` of chain time pass and makes sure a block carries the new time. */
async function advance(seconds) {
  if (travel) return timeTravel(chain, seconds);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await send(chain, w[9], c.GOPEN, "approve", [addr(9), 0n]); // any transaction mines a block
}

test("GOPEN: metadata, timestamp clock, deposit/depositFor/receive/withdraw/withdrawTo and reverts", async () => {
  const g = c.GOPEN;
  assert.equal(await g.read.name(), "Governance OPEN");
  assert.equal(await g.read.symbol(), "GOPEN");
  assert.equal(await g.read.decimals(), 18);
  assert.equal(await g.read.CLOCK_MODE(), "mode=timestamp");
  const block = await chain.publicClient.getBlock();
  assert.equal(BigInt(await g.read.clock()), block.timestamp);

  let r = await send(chain, w[3], g, "deposit", [], { value: parseEther("5") });
  assert.deepEqual(eventsNamed(r, "Deposit")[0].args, { account: addr(3), amount: parseEther("5") });
  assert.equal(eventsNamed(r, "Transfer")[0].args.from, zeroAddress);
  r = await send(chain, w[4], g, "depositFor", [addr(3)], { value: parseEther("1") });
  assert.deepEqual(eventsNamed(r, "Deposit")[0].args, { account: addr(3), amount: parseEther("1") });
  const hash = await w[3].sendTransaction({ to: g.address, value: parseEther("2"), chain: null });
  assert.equal((await chain.publicClient.waitForTransactionReceipt({ hash })).status, "success");
  assert.equal(await g.read.balanceOf([addr(3)]), parseEther("8"));
  assert.equal(await balance(chain, g.address), await g.read.totalSupply());

  const before = await balance(chain, addr(3));
  r = await send(chain, w[3], g, "withdraw", [parseEther("3")]);
  assert.deepEqual(eventsNamed(r, "Withdrawal")[0].args, { account: addr(3), to: addr(3), amount: parseEther("3") });
  assert.equal(await balance(chain, addr(3)), before + parseEther("3") - gasCost(r.receipt));
  const b8 = await balance(chain, addr(8));
  await send(chain, w[3], g, "withdrawTo", [addr(8), parseEther("1")]);
  assert.equal(await balance(chain, addr(8)), b8 + parseEther("1"));
  assert.equal(await g.read.balanceOf([addr(3)]), parseEther("4"));
  assert.equal(await balance(chain, g.address), await g.read.totalSupply());

  await expectRevert(chain, w[3], g, "deposit", [], "ZeroAmount", undefined, { value: 0n });
  await expectRevert(chain, w[3], g, "depositFor", [zeroAddress], "InvalidRecipient", undefined, { value: 1n });
  await expectRevert(chain, w[3], g, "withdraw", [0n], "ZeroAmount");
  await expectRevert(chain, w[3], g, "withdrawTo", [zeroAddress, 1n], "InvalidRecipient");
  await expectRevert(chain, w[3], g, "withdraw", [parseEther("5")], "ERC20InsufficientBalance");
});

test("GOPEN: votes follow delegation; permit sets an allowance by signature", async () => {
  const g = c.GOPEN;
  assert.equal(await g.read.getVotes([addr(3)]), 0n, "no votes before delegating");
  const r = await send(chain, w[3], g, "delegate", [addr(4)]);
  assert.equal(eventsNamed(r, "DelegateChanged")[0].args.toDelegate, addr(4));
  assert.equal(await g.read.getVotes([addr(4)]), parseEther("4"));
  await send(chain, w[3], g, "transfer", [addr(5), parseEther("1")]);
  assert.equal(await g.read.getVotes([addr(4)]), parseEther("3"), "votes move with tokens");
  assert.equal(await g.read.delegates([addr(3)]), addr(4));

  const nonce = await g.read.nonces([addr(3)]);
  const deadline = 2n ** 48n;
  const chainId = await chain.publicClient.getChainId();
  const signature = await w[3].account.signTypedData({
    domain: { name: "Governance OPEN", version: "1", chainId, verifyingContract: g.address },
    types: {
      Permit: [
        { name: "owner", type: "address" },
        { name: "spender", type: "address" },
        { name: "value", type: "uint256" },
        { name: "nonce", type: "uint256" },
        { name: "deadline", type: "uint256" },
      ],
    },
    primaryType: "Permit",
    message: { owner: addr(3), spender: addr(6), value: 123n, nonce, deadline },
  });
  const v = BigInt(`0x${signature.slice(130, 132)}`);
  const rs = [`0x${signature.slice(2, 66)}`, `0x${signature.slice(66, 130)}`];
  await send(chain, w[6], g, "permit", [addr(3), addr(6), 123n, deadline, Number(v), ...rs]);
  assert.equal(await g.read.allowance([addr(3), addr(6)]), 123n);
  assert.equal(await g.read.nonces([addr(3)]), nonce + 1n);
  await expectRevert(chain, w[6], g, "permit", [addr(3), addr(6), 123n, deadline, Number(v), ...rs], "ERC2612InvalidSigner");
});

test("GOPEN: delegateBySig, past votes and supply by timestamp, checkpoints, transferFrom", async () => {
  const g = c.GOPEN;
  const chainId = await chain.publicClient.getChainId();
  const domain = { name: "Governance OPEN", version: "1", chainId, verifyingContract: g.address };
  const [, name, version, cid, verifying] = await g.read.eip712Domain();
  assert.deepEqual([name, version, cid, verifying], [domain.name, domain.version, BigInt(chainId), g.address]);
  assert.match(await g.read.DOMAIN_SEPARATOR(), /^0x[0-9a-f]{64}$/);

  await send(chain, w[7], g, "deposit", [], { value: parseEther("3") });
  const nonce = await g.read.nonces([addr(7)]);
  const expiry = 2n ** 48n;
  const sig = await w[7].account.signTypedData({
    domain,
    types: { Delegation: [{ name: "delegatee", type: "address" }, { name: "nonce", type: "uint256" }, { name: "expiry", type: "uint256" }] },
    primaryType: "Delegation",
    message: { delegatee: addr(7), nonce, expiry },
  });
  // anyone may submit the signed delegation
  const r = await send(chain, w[9], g, "delegateBySig", [addr(7), nonce, expiry, Number(`0x${sig.slice(130, 132)}`), `0x${sig.slice(2, 66)}`, `0x${sig.slice(66, 130)}`]);
  const t1 = (await chain.publicClient.getBlock({ blockNumber: r.receipt.blockNumber })).timestamp;
  assert.equal(await g.read.delegates([addr(7)]), addr(7));
  assert.equal(await g.read.getVotes([addr(7)]), parseEther("3"));
  assert.equal(await g.read.numCheckpoints([addr(7)]), 1);
  const cp = await g.read.checkpoints([addr(7), 0]);
  assert.equal(BigInt(cp._key), t1, "checkpoints are keyed by timestamp");
  assert.equal(cp._value, parseEther("3"));

  await advance(2);
  const supplyAtT1 = await g.read.getPastTotalSupply([t1]);
  assert.equal(await g.read.getPastVotes([addr(7), t1]), parseEther("3"));
  assert.equal(await g.read.getPastVotes([addr(7), t1 - 1n]), 0n);
  await send(chain, w[7], g, "approve", [addr(9), parseEther("1")]);
  await send(chain, w[9], g, "transferFrom", [addr(7), addr(9), parseEther("1")]);
  assert.equal(await g.read.balanceOf([addr(9)]), parseEther("1"));
  assert.equal(await g.read.getVotes([addr(7)]), parseEther("2"));
  await advance(2);
  assert.equal(await g.read.getPastVotes([addr(7), t1]), parseEther("3"), "history is kept");
  assert.equal(await g.read.getPastTotalSupply([t1]), supplyAtT1);
  await assert.rejects(g.read.getPastVotes([addr(7), 2n ** 47n]), /ERC5805FutureLookup/);
});

test("governance end to end: wrap, delegate, propose a fee split, vote, queue, timelock, execute", async (t) => {
  if (!travel && !realtime) {
    t.skip("RPC has no evm_increaseTime; set OPENLEDGER_GOV_REALTIME=1 to run governance in real time (about a minute)");
    return;
  }
  const gov = c.OpenLedgerGovernor;
  const params = c.ProtocolParams;
  for (const i of [1, 2]) {
    await send(chain, w[i], c.GOPEN, "deposit", [], { value: parseEther("100") });
    await send(chain, w[i], c.GOPEN, "delegate", [addr(i)]);
  }
  await advance(1);
  // dispute parameters are set by index of ProtocolParams.DisputeParam (the struct's field order)
  const fields = params.abi.find((e) => e.name === "disputeConfig").outputs[0].components.map((f) => f.name);
  const [window0, bond0] = [await params.read.disputeParam([fields.indexOf("challengeWindow")]),
    await params.read.disputeParam([fields.indexOf("challengeBond")])];
  const targets = [params.address, params.address, params.address, params.address];
  const values = [0n, 0n, 0n, 0n];
  const calldatas = [
    encodeFunctionData({ abi: params.abi, functionName: "setFeeSplit", args: [2000, 3000, 5000] }),
    encodeFunctionData({ abi: params.abi, functionName: "setEscrowWithdrawalDelay", args: [45n] }),
    encodeFunctionData({ abi: params.abi, functionName: "setDisputeParam", args: [fields.indexOf("challengeWindow"), window0 + 30n] }),
    encodeFunctionData({ abi: params.abi, functionName: "setDisputeParam", args: [fields.indexOf("challengeBond"), bond0 * 5n] }),
  ];
  const description = "OIP-1: treasury 20%, model owners 30%, contributors 50%; escrow delay 45 s; longer challenge window, higher challenge bond";
  const descriptionHash = keccak256(toHex(description));

  const p = await send(chain, w[1], gov, "propose", [targets, values, calldatas, description]);
  const proposalId = eventsNamed(p, "ProposalCreated")[0].args.proposalId;
  assert.equal(await gov.read.proposalCount(), 1n);
  const details = await gov.read.proposalDetails([proposalId]);
  assert.deepEqual(details[0], targets);
  assert.equal(details[3], descriptionHash);
  assert.equal(await gov.read.state([proposalId]), 0); // Pending
  await expectRevert(chain, w[1], gov, "castVote", [proposalId, 1], "GovernorUnexpectedProposalState");

  await advance(2);
  assert.equal(await gov.read.state([proposalId]), 1); // Active
  const v1 = await send(chain, w[1], gov, "castVote", [proposalId, 1]);
  assert.equal(eventsNamed(v1, "VoteCast")[0].args.weight, parseEther("100"));
  await send(chain, w[2], gov, "castVoteWithReason", [proposalId, 1, "more for the treasury"]);
  await expectRevert(chain, w[2], gov, "castVote", [proposalId, 0], "GovernorAlreadyCastVote", [addr(2)]);
  const [against, forVotes, abstain] = await gov.read.proposalVotes([proposalId]);
  assert.deepEqual([against, forVotes, abstain], [0n, parseEther("200"), 0n]);
  assert.equal(await gov.read.hasVoted([proposalId, addr(1)]), true);

  await advance(Number(await gov.read.votingPeriod()) + 1);
  assert.equal(await gov.read.state([proposalId]), 4); // Succeeded
  const q = await send(chain, w[9], gov, "queue", [proposalId]); // GovernorStorage: queue by id
  assert.equal(eventsNamed(q, "ProposalQueued")[0].args.proposalId, proposalId);
  assert.equal(await gov.read.state([proposalId]), 5); // Queued
  assert.deepEqual(await params.read.feeSplit(), [1000, 4000, 5000], "nothing changes before execution");
  await expectRevert(chain, w[9], gov, "execute", [targets, values, calldatas, descriptionHash], "TimelockUnexpectedOperationState");

  await advance(Number(await c.OpenLedgerTimelock.read.getMinDelay()) + 1);
  const x = await send(chain, w[9], gov, "execute", [proposalId]);
  assert.equal(eventsNamed(x, "ProposalExecuted")[0].args.proposalId, proposalId);
  assert.equal(await gov.read.state([proposalId]), 7); // Executed
  assert.deepEqual(await params.read.feeSplit(), [2000, 3000, 5000]);
  assert.equal(await params.read.escrowWithdrawalDelay(), 45n);
  const dc = await params.read.disputeConfig();
  assert.equal(dc.challengeWindow, window0 + 30n);
  assert.equal(dc.challengeBond, bond0 * 5n);

  // The next settlement uses the new split.
  const m = await setupMarket(chain, c, { owner: w[1], contributors: [w[3]], builder: w[5], tag: "gov", price: 1000n });
  const st = c.AttributionSettlement;
  await send(chain, w[6], st, "deposit", [], { value: 10_000n });
  await send(chain, w[6], st, "setAllowance", [m.modelId, 10_000n]);
  const tl = dep.contracts.OpenLedgerTimelock;
  // a bonded attributor (account 8) settles one answer of 10,000 tokens under account 6's voucher
  await send(chain, w[8], c.AttributorStaking, "bond", [""], { value: await params.read.disputeParam([0]) });
  const v = await signVoucher(chain, w[6], st, addr(8), { cumulative: 10_000n });
  const r = await send(chain, w[8], st, "submitBatch", batchV2([v], [inferenceV2({ modelId: m.modelId, price: 1000n, tokens: 10_000n, shares: sharesOf([m.contributionIds[0]]) })]).args);
  const { bucket, finalAt, settledAt } = await st.read.getBatch([eventsNamed(r, "BatchSettled")[0].args.batchId]);
  assert.equal(finalAt, settledAt + window0 + 30n, "the new challenge window applies");
  const after = await Promise.all([tl, addr(5), addr(3)].map((a) => st.read.pendingIn([a, bucket])));
  assert.deepEqual(after, [2000n, 3000n, 5000n]);
});

test("governance: the proposer cancels while pending; a proposal without quorum is defeated", async (t) => {
  if (!travel && !realtime) {
    t.skip("RPC has no evm_increaseTime; set OPENLEDGER_GOV_REALTIME=1 to run governance in real time");
    return;
  }
  const gov = c.OpenLedgerGovernor;
  const params = c.ProtocolParams;
  const calldatas = [encodeFunctionData({ abi: params.abi, functionName: "setDatanetCreationFee", args: [0n] })];
  const args = (d) => [[params.address], [0n], calldatas, d];
  const p1 = await send(chain, w[1], gov, "propose", args("cancel me"));
  const id1 = eventsNamed(p1, "ProposalCreated")[0].args.proposalId;
  await expectRevert(chain, w[2], gov, "cancel", [id1], "GovernorUnableToCancel", [id1, addr(2)]);
  await send(chain, w[1], gov, "cancel", [id1]);
  assert.equal(await gov.read.state([id1]), 2); // Canceled

  // w[7] holds 2 of the >= 200 GOPEN supply: below the 4% quorum
  const p2 = await send(chain, w[7], gov, "propose", args("no quorum"));
  const id2 = eventsNamed(p2, "ProposalCreated")[0].args.proposalId;
  await advance(2);
  await send(chain, w[7], gov, "castVote", [id2, 1]);
  const snapshot = await gov.read.proposalSnapshot([id2]);
  assert.ok((await gov.read.quorum([snapshot])) > parseEther("2"));
  await advance(Number(await gov.read.votingPeriod()) + 1);
  assert.equal(await gov.read.state([id2]), 3); // Defeated
  await expectRevert(chain, w[7], gov, "queue", [id2], "GovernorUnexpectedProposalState");
  assert.equal(await params.read.datanetCreationFee(), 10n ** 16n);
});

test("treasury: the Timelock claims protocol fees from both ledgers through a proposal", async (t) => {
  if (!travel && !realtime) {
    t.skip("RPC has no evm_increaseTime; set OPENLEDGER_GOV_REALTIME=1 to run governance in real time");
    return;
  }
  const gov = c.OpenLedgerGovernor;
  const tl = dep.contracts.OpenLedgerTimelock;
  const st = c.AttributionSettlement;
  const reg = c.DatanetRegistry;
  const settlementOwed = (await st.read.claimable([tl])) + (await st.read.pendingOf([tl]))[0];
  const fromRegistry = await reg.read.balanceOf([tl]);
  assert.ok(settlementOwed > 0n && fromRegistry > 0n, "earlier tests left protocol fees with the treasury");
  const grantee = addr(8);
  const targets = [st.address, reg.address];
  const calldatas = [
    encodeFunctionData({ abi: st.abi, functionName: "claimTo", args: [grantee] }),
    encodeFunctionData({ abi: reg.abi, functionName: "claimTo", args: [grantee] }),
  ];
  const p = await send(chain, w[1], gov, "propose", [targets, [0n, 0n], calldatas, "Grant the protocol fees to account 8"]);
  const id = eventsNamed(p, "ProposalCreated")[0].args.proposalId;
  await advance(2);
  await send(chain, w[1], gov, "castVote", [id, 1]);
  await send(chain, w[2], gov, "castVote", [id, 1]);
  await advance(Number(await gov.read.votingPeriod()) + 1);
  await send(chain, w[9], gov, "queue", [id]);
  await advance(Number(await c.OpenLedgerTimelock.read.getMinDelay()) + 1);
  // by now the challenge windows of the earlier batches have passed: all of it is claimable
  const fromSettlement = await st.read.claimable([tl]);
  assert.equal(fromSettlement, settlementOwed);
  const before = await balance(chain, grantee);
  await send(chain, w[9], gov, "execute", [id]);
  assert.equal(await balance(chain, grantee), before + fromSettlement + fromRegistry);
  assert.equal(await st.read.balanceOf([tl]), 0n);
  assert.equal(await st.read.claimable([tl]), 0n);
  assert.equal(await reg.read.balanceOf([tl]), 0n);
});
