// Shared test set-up: a chain to talk to (OPENLEDGER_RPC_URL, or a private anvil), the dev
// accounts, a fresh protocol deployment, and helpers to send transactions and match reverts.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import {
  createPublicClient,
  createWalletClient,
  http,
  getContract,
  BaseError,
  ContractFunctionRevertedError,
  parseEventLogs,
  decodeErrorResult,
  toFunctionSignature,
} from "viem";
import { readdirSync } from "node:fs";
import { mnemonicToAccount } from "viem/accounts";
import { artifact, deployAll } from "../deploy.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const MNEMONIC = "test test test test test test test test test test test junk";
const ANVIL = join(ROOT, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitForRpc(url, child) {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`anvil exited with ${child.exitCode}`);
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      });
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("anvil did not start");
}

/**
 * Connects to OPENLEDGER_RPC_URL, or starts anvil (prague, chain id 1337, standard mnemonic).
 * Returns { url, publicClient, wallets[10], accounts[10], stop(), external }.
 */
export async function startChain() {
  let url = process.env.OPENLEDGER_RPC_URL;
  let child = null;
  if (!url) {
    const port = await freePort();
    child = spawn(
      ANVIL,
      ["--port", String(port), "--hardfork", "prague", "--chain-id", "1337", "--mnemonic", MNEMONIC, "--silent"],
      { stdio: "ignore" },
    );
    url = `http://127.0.0.1:${port}`;
    await waitForRpc(url, child);
  }
  const transport = http(url, { batch: false });
  const publicClient = createPublicClient({ transport, pollingInterval: 20 });
  const accounts = Array.from({ length: 10 }, (_, i) => mnemonicToAccount(MNEMONIC, { addressIndex: i }));
  const wallets = accounts.map((account) => createWalletClient({ account, transport, pollingInterval: 20 }));
  return {
    url,
    publicClient,
    accounts,
    wallets,
    external: child === null,
    async stop() {
      if (child && child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
    },
  };
}

/** Deploys the protocol set from `wallet` and returns { deployments, c: {Name: contract} }. */
export async function deployProtocol(chain, wallet, config = {}) {
  const deployments = await deployAll(wallet, chain.publicClient, config);
  const c = {};
  for (const [name, address] of Object.entries(deployments.contracts)) {
    c[name] = getContract({ address, abi: artifact(name).abi, client: chain.publicClient });
  }
  return { deployments, c };
}

/** Deploys out/<name>.json with constructor `args` from `wallet`; returns a contract instance. */
export async function deploy(chain, wallet, name, args = []) {
  const a = artifact(name);
  const hash = await wallet.deployContract({ abi: a.abi, bytecode: a.bytecode, args, chain: null });
  const receipt = await chain.publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `deploying ${name}`);
  return getContract({ address: receipt.contractAddress, abi: a.abi, client: chain.publicClient });
}

/**
 * Sends `fn(args)` on `contract` from `wallet`, waits for the receipt, asserts success and
 * returns { receipt, events } with the contract's decoded logs.
 */
export async function send(chain, wallet, contract, fn, args = [], opts = {}) {
  const call = { address: contract.address, abi: contract.abi, functionName: fn, args, chain: null, ...opts };
  // The estimate is exact for the block it ran on; the next block's later timestamp can cost a
  // little more (a batch that moves the stake lock forward, a new exposure period): a margin.
  const gas = opts.gas ?? ((await chain.publicClient.estimateContractGas({ ...call, account: wallet.account })) * 6n) / 5n;
  const hash = await wallet.writeContract({ ...call, gas });
  const receipt = await chain.publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `${fn} should succeed`);
  const events = parseEventLogs({ abi: contract.abi, logs: receipt.logs, strict: false });
  return { receipt, events };
}

/** Every custom error of every artifact: errors bubble up from called contracts. */
const ALL_ERRORS = (() => {
  const seen = new Map();
  for (const f of readdirSync(join(ROOT, "out"))) {
    for (const item of artifact(f.replace(/\.json$/, "")).abi) {
      if (item.type === "error") seen.set(toFunctionSignature(item), item);
    }
  }
  return [...seen.values()];
})();

/** The named custom error (and its args) a failed call reverted with, or Error(string)'s message. */
export function revertOf(err) {
  if (!(err instanceof BaseError)) throw err;
  const r = err.walk((e) => e instanceof ContractFunctionRevertedError);
  if (!r) throw err;
  if (!r.data?.errorName && r.raw) {
    try {
      const d = decodeErrorResult({ abi: ALL_ERRORS, data: r.raw });
      return { name: d.errorName, args: d.args };
    } catch {
      /* not one of ours */
    }
  }
  return { name: r.data?.errorName ?? (r.reason ? "Error" : undefined), args: r.data?.args, reason: r.reason };
}

/**
 * Asserts that sending `fn(args)` reverts with custom error `name` (and `args` if given).
 * The node must answer eth_estimateGas/eth_call with the revert data (code 3).
 */
export async function expectRevert(chain, wallet, contract, fn, args, name, errArgs, opts = {}) {
  let failed = null;
  try {
    await wallet.writeContract({
      address: contract.address,
      abi: contract.abi,
      functionName: fn,
      args,
      chain: null,
      ...opts,
    });
  } catch (e) {
    failed = e;
  }
  assert.ok(failed, `${fn} should revert with ${name}`);
  const r = revertOf(failed);
  assert.equal(r.name, name, `${fn}: expected ${name}, got ${r.name} (${failed.shortMessage})`);
  if (errArgs !== undefined) assert.deepEqual(r.args, errArgs);
  return r;
}

/** The ABI-decoded events named `name` in a send() result. */
export function eventsNamed(result, name) {
  return result.events.filter((e) => e.eventName === name);
}

/** Native balance of `address`. */
export function balance(chain, address) {
  return chain.publicClient.getBalance({ address });
}

/** Total fee paid by a receipt. */
export function gasCost(receipt) {
  return receipt.gasUsed * receipt.effectiveGasPrice;
}

/** Whether the RPC supports evm_increaseTime + evm_mine (anvil, hardhat; not our node). */
export async function canTimeTravel(chain) {
  try {
    await chain.publicClient.request({ method: "evm_increaseTime", params: [0] });
    return true;
  } catch {
    return false;
  }
}

/** Moves chain time forward `seconds` and mines a block. */
export async function timeTravel(chain, seconds) {
  await chain.publicClient.request({ method: "evm_increaseTime", params: [seconds] });
  await chain.publicClient.request({ method: "evm_mine", params: [] });
}

/** Deterministic PRNG (mulberry32) for property tests. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A bytes32 from a label (keccak-256 of its UTF-8 bytes). */
export { keccak256, toHex, parseEther, encodeAbiParameters, encodeFunctionData, zeroAddress, maxUint256 } from "viem";
import { keccak256 as k256, toHex as hx, parseEther as pe } from "viem";
export const h32 = (label) => k256(hx(label));

/**
 * Builds the common market: Datanet (owner w[1], curator w[2]) with `contributors` each
 * contributing once, all approved, version 0 published, licensed and a model registered by
 * `builder`. Returns { datanetId, contributionIds, modelId }.
 */
export async function setupMarket(chain, c, opts) {
  const { owner, curator, contributors, builder, licenceFee = pe("1"), price = pe("0.001"), tag = "m" } = opts;
  const fee = await c.ProtocolParams.read.datanetCreationFee();
  const created = await send(chain, owner, c.DatanetRegistry, "createDatanet", [`dn-${tag}`, "ipfs://dn", false, licenceFee], {
    value: fee,
  });
  const datanetId = eventsNamed(created, "DatanetCreated")[0].args.datanetId;
  if (curator) await send(chain, owner, c.DatanetRegistry, "setCurator", [datanetId, curator.account.address, true]);
  const contributionIds = [];
  for (const [i, w] of contributors.entries()) {
    const r = await send(chain, w, c.DatanetRegistry, "contribute", [datanetId, h32(`${tag}-c${i}`), 1000n, 10n, 9000, `ipfs://c${i}`]);
    contributionIds.push(eventsNamed(r, "Contributed")[0].args.contributionId);
  }
  for (const id of contributionIds) await send(chain, curator ?? owner, c.DatanetRegistry, "approve", [id]);
  await send(chain, owner, c.DatanetRegistry, "publishVersion", [datanetId, h32(`${tag}-root`), BigInt(contributionIds.length), h32(`${tag}-manifest`)]);
  await send(chain, builder, c.DatanetRegistry, "buyLicence", [datanetId], { value: licenceFee });
  const reg = await send(chain, builder, c.ModelRegistry, "registerModel", [
    {
      baseModelId: "meta-llama/Llama-3.2-1B",
      baseModelHash: h32("base"),
      adapterHash: h32(`${tag}-adapter`),
      trainingManifestHash: h32(`${tag}-train`),
      trainedOn: [{ datanetId, version: 0n }],
      pricePer1kTokens: price,
      metadataURI: "ipfs://model",
    },
  ]);
  const modelId = eventsNamed(reg, "ModelRegistered")[0].args.modelId;
  return { datanetId, contributionIds, modelId };
}

/** Merkle tree with OpenZeppelin's MerkleProof convention (sorted pairs, keccak-256). */
export function merkle(leaves) {
  const hashPair = (a, b) => (BigInt(a) < BigInt(b) ? k256(`${a}${b.slice(2)}`) : k256(`${b}${a.slice(2)}`));
  const layers = [leaves.slice()];
  while (layers.at(-1).length > 1) {
    const prev = layers.at(-1);
    const next = [];
    for (let i = 0; i < prev.length; i += 2) next.push(i + 1 < prev.length ? hashPair(prev[i], prev[i + 1]) : prev[i]);
    layers.push(next);
  }
  const root = layers.at(-1)[0];
  const proof = (index) => {
    const p = [];
    let i = index;
    for (const layer of layers.slice(0, -1)) {
      const sib = i ^ 1;
      if (sib < layer.length) p.push(layer[sib]);
      i >>= 1;
    }
    return p;
  };
  return { root, proof };
}

// ------------------------------------------------------------------ vouchers and v2 batches

import { engineIds as engIds, DEFAULT_CONFIG as DEF_CFG } from "../deploy.mjs";
import { encodeAbiParameters as enc } from "viem";

/** keccak-256 of the devnet's current engine, as records name it. */
export const ENGINE_ID = engIds(DEF_CFG.engines)[0];

const VOUCHER_TYPES = {
  InferenceVoucher: [
    { name: "payer", type: "address" },
    { name: "attributor", type: "address" },
    { name: "modelId", type: "uint256" },
    { name: "maxPricePer1k", type: "uint256" },
    { name: "channel", type: "uint256" },
    { name: "cumulative", type: "uint256" },
    { name: "expiry", type: "uint256" },
  ],
};

/**
 * A voucher signed by `payerWallet` for `attributor` on `settlement` (defaults: any model, any
 * price up to 1 OPEN per 1,000 tokens, channel 1, a day from now).
 */
export async function signVoucher(chain, payerWallet, settlement, attributor, over = {}) {
  const chainId = await chain.publicClient.getChainId();
  const now = (await chain.publicClient.getBlock()).timestamp;
  const v = {
    payer: payerWallet.account.address,
    attributor,
    modelId: 0n,
    maxPricePer1k: pe("1"),
    channel: 1n,
    cumulative: pe("1"),
    expiry: now + 86_400n,
    ...over,
  };
  const signature = await payerWallet.signTypedData({
    account: payerWallet.account,
    domain: { name: "OpenLedger Inference", version: "1", chainId, verifyingContract: settlement.address },
    types: VOUCHER_TYPES,
    primaryType: "InferenceVoucher",
    message: { payer: v.payer, attributor: v.attributor, modelId: v.modelId, maxPricePer1k: v.maxPricePer1k, channel: v.channel, cumulative: v.cumulative, expiry: v.expiry },
  });
  return { ...v, signature: over.signature ?? signature };
}

/** keccak256(abi.encode(payer, attributor, channel)). */
export const channelKey = (v) =>
  k256(enc([{ type: "address" }, { type: "address" }, { type: "uint256" }], [v.payer, v.attributor, v.channel]));

/** ⌈price × tokens / 1000⌉. */
export const feeOf = (price, tokens) => (price * tokens + 999n) / 1000n;

let requestSeq = 0;
/**
 * One v2 inference under voucher index `voucher`: `tokens` in all (split 1/4 prompt), at
 * `price`; `shares` as [{contributionId, weight}] in ppm (empty → fallback).
 */
export function inferenceV2({ modelId, price, tokens = 1000n, shares = [], voucher = 0n, requestKey, recordId, engineId = ENGINE_ID }) {
  const n = requestSeq++;
  const promptTokens = tokens / 4n;
  return {
    recordId: recordId ?? h32(`record-v2-${n}`),
    requestKey: requestKey ?? h32(`request-v2-${n}`),
    voucher: BigInt(voucher),
    modelId,
    engineId,
    promptHash: h32(`prompt-${n}`),
    answerHash: h32(`answer-${n}`),
    promptTokens,
    completionTokens: tokens - promptTokens,
    pricePer1k: price,
    isFallback: shares.length === 0,
    shares,
  };
}

/** The leaf `AttributionSettlement.leafOf` computes. */
export function leafOf(inf, payer, key, fee) {
  const sharesHash = k256(enc([{ type: "tuple[]", components: [{ name: "contributionId", type: "uint256" }, { name: "weight", type: "uint256" }] }], [inf.shares]));
  const t = (type) => ({ type });
  return k256(enc(
    ["bytes32", "bytes32", "bytes32", "address", "bytes32", "uint256", "bytes32", "bytes32", "bytes32", "uint256", "uint256", "uint256", "uint256", "bool", "bytes32"].map(t),
    [k256(hx("OpenLedger.InferenceLeaf.v2")), inf.recordId, inf.requestKey, payer, key, inf.modelId, inf.engineId, inf.promptHash, inf.answerHash,
      inf.promptTokens, inf.completionTokens, inf.pricePer1k, fee, inf.isFallback, sharesHash],
  ));
}

/**
 * submitBatch arguments for `infs` under `vouchers`: [root of the leaves, vouchers, infs], plus
 * the leaves, the fees and the tree (for proofs).
 */
export function batchV2(vouchers, infs) {
  const fees = infs.map((x) => feeOf(x.pricePer1k, x.promptTokens + x.completionTokens));
  const leaves = infs.map((x, i) => {
    const v = vouchers[Number(x.voucher)];
    return v ? leafOf(x, v.payer, channelKey(v), fees[i]) : h32(`no voucher ${i}`); // (refused anyway)
  });
  const tree = merkle(leaves);
  return { args: [tree.root, vouchers, infs], leaves, fees, tree };
}

/** Evenly split ppm weights over `ids` (sorted ascending), summing to 1,000,000. */
export function sharesOf(ids, weights) {
  const sorted = ids.map((id, i) => ({ contributionId: id, weight: weights ? weights[i] : 0n })).sort((a, b) => (a.contributionId < b.contributionId ? -1 : 1));
  if (!weights) {
    const each = 1_000_000n / BigInt(ids.length);
    sorted.forEach((s, i) => (s.weight = i === 0 ? 1_000_000n - each * BigInt(ids.length - 1) : each));
  }
  return sorted;
}
