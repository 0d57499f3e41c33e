// ModelRegistry: registration (licence and version checks), price, deactivation.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startChain, deployProtocol, send, expectRevert, eventsNamed, setupMarket, h32, canTimeTravel, timeTravel } from "../lib/testing.mjs";

let chain, w, c, mr, market, addr;
const spec = (over = {}) => ({
  baseModelId: "meta-llama/Llama-3.2-1B",
  baseModelHash: h32("base"),
  adapterHash: h32("adapter-x"),
  trainingManifestHash: h32("train-x"),
  trainedOn: [],
  pricePer1kTokens: 5n,
  metadataURI: "ipfs://x",
  ...over,
});
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ c } = await deployProtocol(chain, w[0]));
  mr = c.ModelRegistry;
  addr = (i) => w[i].account.address;
  market = await setupMarket(chain, c, { owner: w[1], curator: w[2], contributors: [w[3], w[4]], builder: w[5] });
});
after(() => chain?.stop());

test("registerModel: stores the spec, emits it, one model per adapter", async () => {
  const { datanetId } = market;
  const s = spec({ trainedOn: [{ datanetId, version: 0n }] });
  const r = await send(chain, w[5], mr, "registerModel", [s]);
  const ev = eventsNamed(r, "ModelRegistered")[0].args;
  assert.equal(ev.owner, addr(5));
  assert.equal(ev.adapterHash, s.adapterHash);
  assert.equal(ev.spec.baseModelId, s.baseModelId);
  assert.deepEqual(ev.spec.trainedOn, [{ datanetId, version: 0n }]);
  const id = ev.modelId;
  assert.equal(await mr.read.modelCount(), id);
  assert.equal(await mr.read.modelByAdapter([s.adapterHash]), id);
  const m = await mr.read.getModel([id]);
  assert.equal(m.owner, addr(5));
  assert.equal(m.active, true);
  assert.equal(m.pricePer1kTokens, 5n);
  assert.equal(m.baseModelHash, s.baseModelHash);
  assert.equal(m.trainingManifestHash, s.trainingManifestHash);
  assert.equal(m.metadataURI, "ipfs://x");
  assert.deepEqual(m.trainedOn, [{ datanetId, version: 0n }]);
  assert.deepEqual(await mr.read.settlementInfo([id]), [addr(5), true, 5n, 0n, 0n]);
  await expectRevert(chain, w[5], mr, "registerModel", [s], "DuplicateAdapter", [s.adapterHash, id]);
  // the Datanet owner is licensed implicitly
  await send(chain, w[1], mr, "registerModel", [spec({ adapterHash: h32("owner-adapter"), trainedOn: s.trainedOn })]);
});

test("registerModel reverts: no licence, unknown version, no data, empty adapter", async () => {
  const { datanetId } = market;
  await expectRevert(chain, w[6], mr, "registerModel", [spec({ adapterHash: h32("a6"), trainedOn: [{ datanetId, version: 0n }] })], "NotLicensed", [datanetId, addr(6)]);
  await expectRevert(chain, w[5], mr, "registerModel", [spec({ adapterHash: h32("a7"), trainedOn: [{ datanetId, version: 1n }] })], "UnknownDatanetVersion", [datanetId, 1n]);
  await expectRevert(chain, w[5], mr, "registerModel", [spec({ adapterHash: h32("a8"), trainedOn: [{ datanetId: 999n, version: 0n }] })], "UnknownDatanetVersion", [999n, 0n]);
  await expectRevert(chain, w[5], mr, "registerModel", [spec({ adapterHash: h32("a9") })], "NoTrainingData");
  await expectRevert(chain, w[5], mr, "registerModel", [spec({ adapterHash: "0x" + "00".repeat(32), trainedOn: [{ datanetId, version: 0n }] })], "EmptyAdapterHash");
});

test("setPrice and deactivate: owner only, events, deactivated once", async () => {
  const id = market.modelId;
  await expectRevert(chain, w[6], mr, "setPrice", [id, 9n], "NotModelOwner", [id, addr(6)]);
  await expectRevert(chain, w[6], mr, "deactivate", [id], "NotModelOwner", [id, addr(6)]);
  await expectRevert(chain, w[5], mr, "setPrice", [4242n, 9n], "ModelNotFound", [4242n]);
  const before = (await mr.read.getModel([id])).pricePer1kTokens;
  const r = await send(chain, w[5], mr, "setPrice", [id, 9n]);
  assert.deepEqual(eventsNamed(r, "PriceUpdated")[0].args, { modelId: id, pricePer1kTokens: 9n });
  assert.equal((await mr.read.getModel([id])).pricePer1kTokens, 9n);
  const at = BigInt((await chain.publicClient.getBlock({ blockHash: r.receipt.blockHash })).timestamp);
  assert.deepEqual(await mr.read.priceChange([id]), [before, at]);
  assert.deepEqual(await mr.read.settlementInfo([id]), [addr(5), true, 9n, before, at]);
  const d = await send(chain, w[5], mr, "deactivate", [id]);
  assert.equal(eventsNamed(d, "ModelDeactivated")[0].args.modelId, id);
  assert.deepEqual(await mr.read.settlementInfo([id]), [addr(5), false, 9n, before, at]);
  await expectRevert(chain, w[5], mr, "deactivate", [id], "ModelInactive", [id]);
  await assert.rejects(mr.read.getModel([4242n]), /ModelNotFound/);
  await assert.rejects(mr.read.settlementInfo([4242n]), /ModelNotFound/);
});

test("setPrice: at most one change per priceGracePeriod, the previous price kept", async () => {
  const { datanetId } = market;
  const r0 = await send(chain, w[5], mr, "registerModel", [spec({ adapterHash: h32("priced"), trainedOn: [{ datanetId, version: 0n }], pricePer1kTokens: 100n })]);
  const id = eventsNamed(r0, "ModelRegistered")[0].args.modelId;
  const grace = await c.ProtocolParams.read.priceGracePeriod();
  assert.ok(grace >= 10n, `grace ${grace}`);
  // the first change after registration is free; the next waits out the grace period
  const r1 = await send(chain, w[5], mr, "setPrice", [id, 200n]);
  const t1 = BigInt((await chain.publicClient.getBlock({ blockHash: r1.receipt.blockHash })).timestamp);
  await expectRevert(chain, w[5], mr, "setPrice", [id, 300n], "PriceChangeTooSoon", [id, t1 + grace]);
  assert.deepEqual(await mr.read.settlementInfo([id]), [addr(5), true, 200n, 100n, t1]);
  if (!(await canTimeTravel(chain))) return; // our node: the rest needs evm_increaseTime
  await timeTravel(chain, Number(grace));
  const r2 = await send(chain, w[5], mr, "setPrice", [id, 300n]);
  const t2 = BigInt((await chain.publicClient.getBlock({ blockHash: r2.receipt.blockHash })).timestamp);
  assert.ok(t2 >= t1 + grace);
  assert.deepEqual(await mr.read.settlementInfo([id]), [addr(5), true, 300n, 200n, t2]);
  await expectRevert(chain, w[5], mr, "setPrice", [id, 1n], "PriceChangeTooSoon", [id, t2 + grace]);
});
