// Measures the gas of the protocol's common operations on a fresh anvil (or OPENLEDGER_RPC_URL)
// and writes GAS.md.   node gas-table.mjs [--out GAS.md]
import { writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseEther, maxUint256 } from "viem";
import {
  startChain, deployProtocol, send, eventsNamed, h32, timeTravel, signVoucher, inferenceV2, batchV2, sharesOf,
} from "./lib/testing.mjs";

const ROOT = dirname(fileURLToPath(import.meta.url));
const SHARES = 3; // attributed contributions per inference

async function main() {
  const outIdx = process.argv.indexOf("--out");
  const out = outIdx > 0 ? process.argv[outIdx + 1] : join(ROOT, "GAS.md");
  const chain = await startChain();
  try {
    const w = chain.wallets;
    const A = (i) => w[i].account.address;
    const { c } = await deployProtocol(chain, w[0]);
    const reg = c.DatanetRegistry;
    const rows = [];
    const row = (op, gas, note) => rows.push({ op, gas, note });

    const fee = await c.ProtocolParams.read.datanetCreationFee();
    let r = await send(chain, w[1], reg, "createDatanet", ["bench", "ipfs://bench", false, parseEther("1")], { value: fee });
    const dn = eventsNamed(r, "DatanetCreated")[0].args.datanetId;
    row("createDatanet", r.receipt.gasUsed, "public Datanet, 5-char name, creation fee credited to treasury");

    const ids = [];
    const contributeGas = [];
    for (let i = 0; i < 8; i++) {
      r = await send(chain, w[2 + (i % 3)], reg, "contribute", [dn, h32(`bench-${i}`), 4096n, 32n, 9000, `ipfs://bafy-contribution-${i}`]);
      contributeGas.push(r.receipt.gasUsed);
      ids.push(eventsNamed(r, "Contributed")[0].args.contributionId);
    }
    row("contribute", contributeGas.at(-1), "31-char metadata URI");
    const approveGas = [];
    for (const id of ids) approveGas.push((await send(chain, w[1], reg, "approve", [id])).receipt.gasUsed);
    row("approve", approveGas.at(-1), "owner approves a pending contribution");
    r = await send(chain, w[1], reg, "publishVersion", [dn, h32("root"), BigInt(ids.length), h32("manifest")]);
    row("publishVersion", r.receipt.gasUsed, `first version, ${ids.length} accepted contributions`);
    r = await send(chain, w[5], reg, "buyLicence", [dn], { value: parseEther("1") });
    row("buyLicence", r.receipt.gasUsed, `first licence; cost independent of the number of contributions`);
    r = await send(chain, w[6], reg, "buyLicence", [dn], { value: parseEther("1") });
    row("buyLicence (2nd buyer)", r.receipt.gasUsed, "accumulator already non-zero");
    r = await send(chain, w[2], reg, "collect", [[ids[0]]]);
    row("collect (1 contribution)", r.receipt.gasUsed, "moves licence earnings to the contributor's balance");

    const spec = (tag) => ({
      baseModelId: "meta-llama/Llama-3.2-1B",
      baseModelHash: h32("base"),
      adapterHash: h32(`adapter-${tag}`),
      trainingManifestHash: h32(`train-${tag}`),
      trainedOn: [{ datanetId: dn, version: 0n }],
      pricePer1kTokens: parseEther("0.001"),
      metadataURI: "ipfs://bafy-model-card",
    });
    await send(chain, w[5], c.ModelRegistry, "registerModel", [spec("warm")]);
    r = await send(chain, w[5], c.ModelRegistry, "registerModel", [spec("bench")]);
    const modelId = eventsNamed(r, "ModelRegistered")[0].args.modelId;
    row("registerModel", r.receipt.gasUsed, "trained on 1 Datanet version");
    r = await send(chain, w[5], c.ModelRegistry, "setPrice", [modelId, parseEther("0.002")]);
    row("setPrice", r.receipt.gasUsed, "first change (reads priceGracePeriod, keeps the previous price)");

    const st = c.AttributionSettlement;
    const payers = [6, 7, 8];
    for (const p of payers) {
      await send(chain, w[p], st, "deposit", [], { value: parseEther("100") });
      await send(chain, w[p], st, "setAllowance", [modelId, parseEther("50")]);
    }
    // One voucher per payer (one channel each), signed once, redeemed by every batch.
    const vouchers = [];
    for (const p of payers) vouchers.push(await signVoucher(chain, w[p], st, A(0), { cumulative: parseEther("50") }));
    const price = parseEther("0.002");
    const settle = [];
    // The first batch only warms balances and counters up (first credits are 22k-gas stores).
    for (const n of [1, 1, 10, 100]) {
      const infs = Array.from({ length: n }, (_, i) =>
        inferenceV2({
          modelId,
          price,
          tokens: 500n + BigInt(i),
          voucher: i % payers.length,
          shares: sharesOf(Array.from({ length: SHARES }, (_, j) => ids[(i + j) % ids.length])),
        }));
      r = await send(chain, w[0], st, "submitBatch", batchV2(vouchers.slice(0, Math.min(n, payers.length)), infs).args);
      settle.push({ n, gas: r.receipt.gasUsed });
    }
    settle.shift();

    // The window: a contributor's credits of one bucket become final, then claim releases and pays.
    await timeTravel(chain, Number((await c.ProtocolParams.read.disputeConfig()).challengeWindow) + 1);
    r = await send(chain, w[9], st, "release", [A(2), 1n]);
    row("release (1 bucket)", r.receipt.gasUsed, "anyone moves one account's final bucket to its balance; the account's first release (its queue head and balance slots are new)");
    r = await send(chain, w[3], st, "claim", []);
    row("claim", r.receipt.gasUsed, "releases the caller's final buckets (here 1), then pays");

    // Staking: a second attributor bonds, unbonds and withdraws after the unbonding delay.
    const sk = c.AttributorStaking;
    const min = await c.ProtocolParams.read.disputeParam([0]);
    r = await send(chain, w[9], sk, "bond", ["https://attributor.example"], { value: min });
    row("bond", r.receipt.gasUsed, "first bond, 26-char endpoint (stake and total checkpoints)");
    r = await send(chain, w[9], sk, "requestUnbond", [min]);
    row("requestUnbond", r.receipt.gasUsed, "the whole stake");
    await timeTravel(chain, Number((await c.ProtocolParams.read.disputeConfig()).unbondingDelay) + 1);
    r = await send(chain, w[9], sk, "withdrawUnbonded", []);
    row("withdrawUnbonded", r.receipt.gasUsed, "after the unbonding delay");

    const fmt = (g) => Number(g).toLocaleString("en-US");
    const lines = [
      "# Gas table",
      "",
      "Regenerate with `node gas-table.mjs` (in `contracts/`). Measured on anvil 1.7.1 (`--hardfork prague`)",
      "with the committed artifacts (solc 0.8.37, optimizer 200 runs, evmVersion prague). Figures are",
      "`gasUsed` of the transaction (21,000 base and calldata included), in steady state: accounts and",
      "slots already touched by earlier calls where that is the common case.",
      "",
      "| operation | gas | notes |",
      "| --- | ---: | --- |",
      ...rows.map((x) => `| ${x.op} | ${fmt(x.gas)} | ${x.note} |`),
      "",
      `## Settlement (${SHARES} attributed contributions per inference, 3 payers, finite allowances)`,
      "",
      "Each batch carries one signed voucher per payer in it (at most 3; signatures recovered once",
      "per batch) and computes every leaf on chain. The batch gas includes storing the batch record",
      "(root, attributor, time, count, finalAt, total, bucket), the request keys, the channels'",
      "`spent`, the pending credits (an account's first credit in a bucket also queues the bucket),",
      "the exposure counter, the stake lock and the calls to ProtocolParams, ModelRegistry,",
      "DatanetRegistry and AttributorStaking.",
      "",
      "| inferences per batch | batch gas | gas per inference |",
      "| ---: | ---: | ---: |",
      ...settle.map((s) => `| ${s.n} | ${fmt(s.gas)} | ${fmt(s.gas / BigInt(s.n))} |`),
      "",
    ];
    writeFileSync(out, lines.join("\n"));
    console.log(lines.join("\n"));
  } finally {
    await chain.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
