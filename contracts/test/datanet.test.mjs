// DatanetRegistry: every public function and revert, and the licence-fee distribution rule.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { parseEther } from "viem";
import { startChain, deployProtocol, send, expectRevert, eventsNamed, balance, gasCost, h32 } from "../lib/testing.mjs";

let chain, w, c, dep, reg, fee, addr;
before(async () => {
  chain = await startChain();
  w = chain.wallets;
  ({ deployments: dep, c } = await deployProtocol(chain, w[0]));
  reg = c.DatanetRegistry;
  fee = await c.ProtocolParams.read.datanetCreationFee();
  addr = (i) => w[i].account.address;
});
after(() => chain?.stop());

async function create(owner, { name = "dn", permissioned = false, licenceFee = parseEther("1") } = {}) {
  const r = await send(chain, owner, reg, "createDatanet", [name, "ipfs://meta", permissioned, licenceFee], { value: fee });
  return eventsNamed(r, "DatanetCreated")[0].args.datanetId;
}
async function contribute(who, datanetId, label) {
  const r = await send(chain, who, reg, "contribute", [datanetId, h32(label), 2048n, 12n, 8700, `ipfs://${label}`]);
  return eventsNamed(r, "Contributed")[0].args.contributionId;
}
async function invariant() {
  const [bal, owed, uncollected] = await Promise.all([
    balance(chain, reg.address),
    reg.read.totalBalances(),
    reg.read.totalUncollected(),
  ]);
  assert.equal(bal, owed + uncollected, "registry balance = claimable + uncollected");
}

test("createDatanet: record, event, creation fee to the treasury, wrong fee and empty name revert", async () => {
  const tl = dep.contracts.OpenLedgerTimelock;
  const before = await reg.read.balanceOf([tl]);
  const r = await send(chain, w[1], reg, "createDatanet", ["medical-qa", "ipfs://m", true, 5n], { value: fee });
  const ev = eventsNamed(r, "DatanetCreated")[0].args;
  assert.deepEqual(
    { owner: ev.owner, name: ev.name, uri: ev.metadataURI, perm: ev.permissioned, fee: ev.licenceFee },
    { owner: addr(1), name: "medical-qa", uri: "ipfs://m", perm: true, fee: 5n },
  );
  assert.equal(await reg.read.datanetCount(), ev.datanetId);
  const d = await reg.read.getDatanet([ev.datanetId]);
  assert.equal(d.owner, addr(1));
  assert.equal(d.name, "medical-qa");
  assert.equal(d.permissioned, true);
  assert.equal(d.licenceFee, 5n);
  assert.equal(await reg.read.balanceOf([tl]), before + fee, "treasury credited");
  await expectRevert(chain, w[1], reg, "createDatanet", ["x", "", false, 0n], "IncorrectCreationFee", [fee, fee - 1n], { value: fee - 1n });
  await expectRevert(chain, w[1], reg, "createDatanet", ["x", "", false, 0n], "IncorrectCreationFee", [fee, fee + 1n], { value: fee + 1n });
  await expectRevert(chain, w[1], reg, "createDatanet", ["", "", false, 0n], "EmptyName", undefined, { value: fee });
  await assert.rejects(reg.read.getDatanet([999n]), /DatanetNotFound/);
  await invariant();
});

test("owner-only administration: curators, contributors, licence fee; non-owner curation reverts", async () => {
  const id = await create(w[1], { permissioned: true });
  for (const [fn, args] of [
    ["setCurator", [id, addr(2), true]],
    ["setContributorAllowed", [id, addr(3), true]],
    ["setLicenceFee", [id, 1n]],
  ]) {
    await expectRevert(chain, w[2], reg, fn, args, "NotDatanetOwner", [id, addr(2)]);
  }
  await expectRevert(chain, w[2], reg, "setCurator", [777n, addr(2), true], "DatanetNotFound", [777n]);
  let r = await send(chain, w[1], reg, "setCurator", [id, addr(2), true]);
  assert.deepEqual(eventsNamed(r, "CuratorUpdated")[0].args, { datanetId: id, account: addr(2), allowed: true });
  assert.equal(await reg.read.isCurator([id, addr(2)]), true);
  r = await send(chain, w[1], reg, "setContributorAllowed", [id, addr(3), true]);
  assert.deepEqual(eventsNamed(r, "ContributorUpdated")[0].args, { datanetId: id, account: addr(3), allowed: true });
  assert.equal(await reg.read.isAllowedContributor([id, addr(3)]), true);
  r = await send(chain, w[1], reg, "setLicenceFee", [id, 77n]);
  assert.deepEqual(eventsNamed(r, "LicenceFeeUpdated")[0].args, { datanetId: id, fee: 77n });
  assert.equal((await reg.read.getDatanet([id])).licenceFee, 77n);

  // permissioned: only the owner and allowed contributors
  await expectRevert(chain, w[4], reg, "contribute", [id, h32("p1"), 1n, 1n, 1, ""], "ContributorNotAllowed", [id, addr(4)]);
  await contribute(w[3], id, "p1");
  await contribute(w[1], id, "p2");
  await send(chain, w[1], reg, "setContributorAllowed", [id, addr(3), false]);
  await expectRevert(chain, w[3], reg, "contribute", [id, h32("p3"), 1n, 1n, 1, ""], "ContributorNotAllowed", [id, addr(3)]);

  // a removed curator can no longer curate
  const cid = await contribute(w[1], id, "p4");
  await send(chain, w[1], reg, "setCurator", [id, addr(2), false]);
  await expectRevert(chain, w[2], reg, "approve", [cid], "NotCurator", [id, addr(2)]);
});

test("contribute / approve / reject / withdraw: lifecycle and every revert", async () => {
  const id = await create(w[1]);
  await send(chain, w[1], reg, "setCurator", [id, addr(2), true]);

  await expectRevert(chain, w[3], reg, "contribute", [424242n, h32("a"), 1n, 1n, 1, ""], "DatanetNotFound", [424242n]);
  await expectRevert(chain, w[3], reg, "contribute", [id, "0x" + "00".repeat(32), 1n, 1n, 1, ""], "EmptyContentHash");

  const r = await send(chain, w[3], reg, "contribute", [id, h32("a"), 2048n, 12n, 8700, "ipfs://a"]);
  const ev = eventsNamed(r, "Contributed")[0].args;
  assert.equal(ev.contributor, addr(3));
  assert.equal(ev.datanetId, id);
  assert.equal(ev.contentHash, h32("a"));
  assert.equal(ev.byteSize, 2048n);
  assert.equal(ev.rowCount, 12n);
  assert.equal(ev.qualityScore, 8700);
  const a = ev.contributionId;
  assert.equal(await reg.read.contributionCount(), a);
  const rec = await reg.read.getContribution([a]);
  assert.equal(rec.status, 1); // Pending
  assert.equal(rec.contributor, addr(3));
  assert.equal(rec.metadataURI, "ipfs://a");
  assert.equal(await reg.read.contributionByHash([id, h32("a")]), a);
  await expectRevert(chain, w[4], reg, "contribute", [id, h32("a"), 1n, 1n, 1, ""], "DuplicateContent", [id, h32("a"), a]);
  await assert.rejects(reg.read.getContribution([99999n]), /ContributionNotFound/);

  // curation by strangers, approval, approving twice
  await expectRevert(chain, w[5], reg, "approve", [a], "NotCurator", [id, addr(5)]);
  await expectRevert(chain, w[5], reg, "reject", [a, "spam"], "NotCurator", [id, addr(5)]);
  await expectRevert(chain, w[5], reg, "approve", [99999n], "ContributionNotFound", [99999n]);
  const ap = await send(chain, w[2], reg, "approve", [a]);
  assert.deepEqual(eventsNamed(ap, "ContributionApproved")[0].args, { contributionId: a, datanetId: id, curator: addr(2) });
  assert.equal((await reg.read.getContribution([a])).status, 2); // Accepted
  await expectRevert(chain, w[2], reg, "approve", [a], "NotPending", [a, 2]);
  await expectRevert(chain, w[1], reg, "approve", [a], "NotPending", [a, 2]);
  await expectRevert(chain, w[1], reg, "reject", [a, "late"], "NotPending", [a, 2]);
  await expectRevert(chain, w[3], reg, "withdrawContribution", [a], "NotPending", [a, 2]);
  assert.equal(await reg.read.acceptedCount([id]), 1n);
  assert.deepEqual(await reg.read.acceptedContributions([id, 0n, 10n]), [a]);
  assert.deepEqual(await reg.read.contributorsOf([[a]]), [addr(3)]);

  // reject (owner); the content can be submitted again afterwards
  const b = await contribute(w[4], id, "b");
  const rj = await send(chain, w[1], reg, "reject", [b, "off-topic"]);
  assert.deepEqual(eventsNamed(rj, "ContributionRejected")[0].args, { contributionId: b, datanetId: id, curator: addr(1), reason: "off-topic" });
  assert.equal((await reg.read.getContribution([b])).status, 3);
  await expectRevert(chain, w[2], reg, "approve", [b], "NotPending", [b, 3]);
  await assert.rejects(reg.read.contributorsOf([[a, b]]), /NotAccepted/);
  await assert.rejects(reg.read.contributorsOf([[31337n]]), /ContributionNotFound/);
  const b2 = await contribute(w[4], id, "b");
  assert.ok(b2 > b);

  // withdraw by the contributor only, while pending
  await expectRevert(chain, w[3], reg, "withdrawContribution", [b2], "NotContributor", [b2, addr(3)]);
  const wd = await send(chain, w[4], reg, "withdrawContribution", [b2]);
  assert.deepEqual(eventsNamed(wd, "ContributionWithdrawn")[0].args, { contributionId: b2, datanetId: id });
  assert.equal((await reg.read.getContribution([b2])).status, 4);
  await expectRevert(chain, w[4], reg, "withdrawContribution", [b2], "NotPending", [b2, 4]);
  await expectRevert(chain, w[2], reg, "approve", [b2], "NotPending", [b2, 4]);
  assert.equal(await reg.read.contributionByHash([id, h32("b")]), 0n);
  assert.equal(await reg.read.acceptedCount([id]), 1n);
});

test("publishVersion: owner only, count must equal accepted, versions immutable and listed", async () => {
  const id = await create(w[1]);
  await expectRevert(chain, w[1], reg, "publishVersion", [id, h32("r"), 0n, h32("m")], "VersionCountMismatch", [0n, 0n]);
  const x = await contribute(w[3], id, "v-x");
  await send(chain, w[1], reg, "approve", [x]);
  await expectRevert(chain, w[2], reg, "publishVersion", [id, h32("r"), 1n, h32("m")], "NotDatanetOwner", [id, addr(2)]);
  await expectRevert(chain, w[1], reg, "publishVersion", [id, h32("r"), 2n, h32("m")], "VersionCountMismatch", [1n, 2n]);
  const r = await send(chain, w[1], reg, "publishVersion", [id, h32("r0"), 1n, h32("m0")]);
  assert.deepEqual(eventsNamed(r, "VersionPublished")[0].args, { datanetId: id, version: 0n, merkleRoot: h32("r0"), count: 1n, manifestHash: h32("m0") });
  const y = await contribute(w[4], id, "v-y");
  await send(chain, w[1], reg, "approve", [y]);
  await send(chain, w[1], reg, "publishVersion", [id, h32("r1"), 2n, h32("m1")]);
  assert.equal(await reg.read.versionCount([id]), 2n);
  const v0 = await reg.read.getVersion([id, 0n]);
  assert.equal(v0.merkleRoot, h32("r0"));
  assert.equal(v0.manifestHash, h32("m0"));
  assert.equal(v0.count, 1n);
  assert.equal(v0.rows, 12n);
  const v1 = await reg.read.getVersion([id, 1n]);
  assert.equal(v1.count, 2n);
  assert.equal(v1.rows, 24n);
  assert.equal(await reg.read.acceptedRows([id]), 24n);
  // a pending contribution adds no rows until it is approved; a rejected one never
  const z = await contribute(w[3], id, "v-z");
  assert.equal(await reg.read.acceptedRows([id]), 24n);
  await send(chain, w[1], reg, "reject", [z, "no"]);
  assert.equal(await reg.read.acceptedRows([id]), 24n);
  await assert.rejects(reg.read.getVersion([id, 2n]), /VersionNotFound/);
  assert.deepEqual(await reg.read.acceptedContributions([id, 1n, 5n]), [y]);
  assert.deepEqual(await reg.read.acceptedContributions([id, 5n, 5n]), []);
});

test("buyLicence: fee rule (owner share + equal per contribution, dust to owner), reverts, hasLicence", async () => {
  const licenceFee = 1003n; // 20% owner = 200 (floor 200.6); pool 803 over 3 = 267 each, dust 2
  const id = await create(w[1], { licenceFee });
  await expectRevert(chain, w[5], reg, "buyLicence", [id], "NoPublishedVersion", [id], { value: licenceFee });
  await expectRevert(chain, w[5], reg, "buyLicence", [8888n], "DatanetNotFound", [8888n], { value: 0n });
  const ids = [];
  for (const [i, who] of [w[3], w[4], w[3]].entries()) ids.push(await contribute(who, id, `l-${i}`));
  for (const x of ids) await send(chain, w[1], reg, "approve", [x]);
  await send(chain, w[1], reg, "publishVersion", [id, h32("lr"), 3n, h32("lm")]);

  await expectRevert(chain, w[5], reg, "buyLicence", [id], "LicenceFeeUnderpaid", [licenceFee, licenceFee - 1n], { value: licenceFee - 1n });
  await expectRevert(chain, w[5], reg, "buyLicence", [id], "LicenceFeeOverpaid", [licenceFee, licenceFee + 1n], { value: licenceFee + 1n });
  assert.equal(await reg.read.hasLicence([id, addr(5)]), false);
  assert.equal(await reg.read.hasLicence([id, addr(1)]), true, "the owner is always licensed");

  const ownerBefore = await reg.read.balanceOf([addr(1)]);
  const r = await send(chain, w[5], reg, "buyLicence", [id], { value: licenceFee });
  const ev = eventsNamed(r, "LicencePurchased")[0].args;
  assert.deepEqual(ev, { datanetId: id, buyer: addr(5), version: 0n, fee: licenceFee, ownerAmount: 202n, perContribution: 267n });
  assert.equal(await reg.read.balanceOf([addr(1)]), ownerBefore + 202n);
  assert.equal(await reg.read.hasLicence([id, addr(5)]), true);
  assert.equal(await reg.read.licensedAt([id, addr(5)]), 1n);
  await expectRevert(chain, w[5], reg, "buyLicence", [id], "AlreadyLicensed", [id, addr(5)], { value: licenceFee });
  for (const x of ids) assert.equal(await reg.read.pendingReward([x]), 267n);
  await invariant();

  // a new contribution joins at version 1 and only earns from later purchases
  const late = await contribute(w[6], id, "l-late");
  assert.equal(await reg.read.pendingReward([late]), 0n, "pending contributions earn nothing");
  await send(chain, w[1], reg, "approve", [late]);
  assert.equal(await reg.read.pendingReward([late]), 0n, "accepted but unpublished earns nothing");
  await send(chain, w[1], reg, "publishVersion", [id, h32("lr1"), 4n, h32("lm1")]);
  await send(chain, w[1], reg, "setLicenceFee", [id, 1000n]); // owner 200, pool 800 / 4 = 200
  await send(chain, w[7], reg, "buyLicence", [id], { value: 1000n });
  assert.equal(await reg.read.licensedAt([id, addr(7)]), 2n);
  assert.equal(await reg.read.pendingReward([late]), 200n);
  assert.equal(await reg.read.pendingReward([ids[0]]), 467n);

  // collect moves earnings to contributors (anyone may call), then claim pays out
  const c3 = await reg.read.balanceOf([addr(3)]);
  const col = await send(chain, w[9], reg, "collect", [[ids[0], ids[2], late, ids[0]]]);
  assert.equal(eventsNamed(col, "RewardCollected").length, 3, "second mention of ids[0] has nothing left");
  assert.equal(await reg.read.balanceOf([addr(3)]), c3 + 467n * 2n);
  assert.equal(await reg.read.pendingReward([ids[0]]), 0n);
  assert.equal(await reg.read.pendingReward([ids[1]]), 467n);
  await invariant();

  // after another purchase, a collected contribution earns only the new share
  await send(chain, w[8], reg, "buyLicence", [id], { value: 1000n });
  assert.equal(await reg.read.pendingReward([ids[0]]), 200n);
  assert.equal(await reg.read.pendingReward([ids[1]]), 667n);
  await send(chain, w[9], reg, "collect", [ids.concat([late])]);
  assert.equal(await reg.read.totalUncollected(), 0n, "everything earned has been collected");
  await invariant();

  // claim / claimTo / NothingToClaim
  const owed6 = await reg.read.balanceOf([addr(6)]);
  assert.equal(owed6, 400n);
  const b6 = await balance(chain, addr(6));
  const cl = await send(chain, w[6], reg, "claim", []);
  assert.deepEqual(eventsNamed(cl, "Claimed")[0].args, { account: addr(6), to: addr(6), amount: 400n });
  assert.equal(await balance(chain, addr(6)), b6 + 400n - gasCost(cl.receipt));
  await expectRevert(chain, w[6], reg, "claim", [], "NothingToClaim");
  const owed4 = await reg.read.balanceOf([addr(4)]);
  const b9 = await balance(chain, addr(9));
  await send(chain, w[4], reg, "claimTo", [addr(9)]);
  assert.equal(await balance(chain, addr(9)), b9 + owed4);
  assert.equal(await reg.read.balanceOf([addr(4)]), 0n);
  await invariant();
});

test("a free licence still records the licence and pays nobody", async () => {
  const id = await create(w[1], { licenceFee: 0n });
  const x = await contribute(w[3], id, "free-x");
  await send(chain, w[1], reg, "approve", [x]);
  await send(chain, w[1], reg, "publishVersion", [id, h32("fr"), 1n, h32("fm")]);
  const r = await send(chain, w[5], reg, "buyLicence", [id], { value: 0n });
  assert.equal(eventsNamed(r, "LicencePurchased")[0].args.fee, 0n);
  assert.equal(await reg.read.hasLicence([id, addr(5)]), true);
  assert.equal(await reg.read.pendingReward([x]), 0n);
});
