// The node-test fixtures behave as the node's tests expect.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startChain, deploy, send, expectRevert, eventsNamed, balance, revertOf, parseEther } from "../lib/testing.mjs";

let chain;
let w;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
});
after(() => chain?.stop());

test("Demo: constructor, set/ValueSet, fail, onlyZero, burnGas, receive", async () => {
  const demo = await deploy(chain, w[0], "Demo", [42n]);
  assert.equal(await demo.read.value(), 42n);

  const r = await send(chain, w[1], demo, "set", [7n, "hello"]);
  assert.equal(await demo.read.value(), 7n);
  const [ev] = eventsNamed(r, "ValueSet");
  assert.equal(ev.args.who, w[1].account.address);
  assert.equal(ev.args.value, 7n);
  assert.equal(ev.args.note, "hello");

  const failed = await demo.simulate.fail({ account: w[0].account }).catch((e) => e);
  const reason = revertOf(failed);
  assert.equal(reason.reason, "Demo: always fails");

  await expectRevert(chain, w[2], demo, "onlyZero", [], "Unauthorized", [w[2].account.address]);

  const small = await send(chain, w[0], demo, "burnGas", [1n]);
  const big = await send(chain, w[0], demo, "burnGas", [20n]);
  assert.equal(await demo.read.value(), 7n + 1n + 20n);
  assert.equal(await demo.read.scratch([19n]), 8n + 20n, "burnGas(20) wrote base + i + 1 at i = 19");
  assert.ok(big.receipt.gasUsed > small.receipt.gasUsed + 19n * 20_000n, "each iteration writes a fresh slot");

  const hash = await w[3].sendTransaction({ to: demo.address, value: parseEther("1.5"), chain: null });
  const rec = await chain.publicClient.waitForTransactionReceipt({ hash });
  assert.equal(rec.status, "success");
  assert.equal(rec.logs.length, 1);
  assert.equal(await balance(chain, demo.address), parseEther("1.5"));
});

test("BenchToken: name, symbol, supply minted to deployer, transfer", async () => {
  const tok = await deploy(chain, w[0], "BenchToken", [1_000_000n]);
  assert.equal(await tok.read.name(), "Bench Token");
  assert.equal(await tok.read.symbol(), "BENCH");
  assert.equal(await tok.read.totalSupply(), 1_000_000n);
  assert.equal(await tok.read.balanceOf([w[0].account.address]), 1_000_000n);
  await send(chain, w[0], tok, "transfer", [w[1].account.address, 250n]);
  assert.equal(await tok.read.balanceOf([w[1].account.address]), 250n);
  await expectRevert(chain, w[2], tok, "transfer", [w[1].account.address, 1n], "ERC20InsufficientBalance");
});
