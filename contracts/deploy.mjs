// Deploys and wires the OpenLedger protocol contracts on any EVM JSON-RPC endpoint.
//
//   node deploy.mjs --rpc-url URL --private-key 0x... --out deployments/x.json [--config cfg.json]
//   node deploy.mjs --plan --deployer 0x... [--nonce 0] [--config cfg.json] --out plan.json
//
// --plan needs no chain: it writes the creation transactions (address, nonce, initcode =
// creation code ‖ constructor args) that a genesis builder executes from the deployer.
// (OPENLEDGER_RPC_URL / OPENLEDGER_PRIVATE_KEY are read when the flags are absent.)
// Order and arguments are the same as the node's genesis predeploy (see README.md): eight
// creation transactions from one account at consecutive nonces, then one `bondFor` per
// attributor (the deployer pays each one's `minAttributorStake`). The Timelock is created with the
// Governor's address (predicted from the deployer's nonce) as proposer, so no wiring call and no
// admin role are needed afterwards.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  createPublicClient,
  createWalletClient,
  http,
  getContractAddress,
  encodeDeployData,
  encodeFunctionData,
  zeroAddress,
  parseEther,
  getAddress,
  keccak256,
  stringToBytes,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";

const ROOT = dirname(fileURLToPath(import.meta.url));

/** Reads out/<name>.json. */
export function artifact(name) {
  return JSON.parse(readFileSync(join(ROOT, "out", `${name}.json`), "utf8"));
}

/** The devnet's chain id: the only chain the built-in (devnet) settings may be deployed to. */
export const DEV_CHAIN_ID = 1337;

/** Deploy order; index = offset from the deployer's first nonce. */
export const ORDER = [
  "GOPEN",
  "OpenLedgerTimelock",
  "OpenLedgerGovernor",
  "ProtocolParams",
  "DatanetRegistry",
  "ModelRegistry",
  "AttributionSettlement",
  "AttributorStaking",
];

/** The devnet's dispute parameters and engines (deployments/dev-config.json, shared with Rust). */
const DEV_FILE = JSON.parse(readFileSync(join(ROOT, "deployments", "dev-config.json"), "utf8"));

/** Defaults: short governance for a devnet (seconds; the clock is timestamps). */
export const DEFAULT_CONFIG = {
  timelockMinDelay: 5,
  votingDelay: 1,
  votingPeriod: 60,
  proposalThreshold: "0",
  quorumPercent: 4,
  feeSplit: { treasuryBps: 1000, modelOwnerBps: 4000, contributorsBps: 5000 },
  licenceOwnerBps: 2000,
  datanetCreationFee: parseEther("0.01").toString(),
  // seconds from AttributionSettlement.requestWithdrawal to withdrawEscrow (> settlement interval)
  escrowWithdrawalDelay: 30,
  // accounts bonded with minAttributorStake at deployment, paid by the deployer (null: the
  // deployer itself); null treasury: the Timelock is the treasury.
  attributors: null,
  treasury: null,
  // attribution disputes (docs/attribution-disputes.md §3): the devnet column
  dispute: DEV_FILE.dispute,
  // attribution engine versions whose records may settle (ProtocolParams keeps their keccak-256)
  engines: DEV_FILE.engines,
};

/** `ProtocolParams.DisputeConfig` fields whose Solidity type is wider than 32 bits. */
const WIDE = new Set([
  "minAttributorStake", "challengeBond", "escalationBond", "dataRequestBond", "slashBase",
  "unbondingDelay", "challengeWindow", "epochLength", "voucherGrace", "priceGracePeriod",
  "challengeCommitPeriod", "candidateRevealPeriod", "juryCommitPeriod", "juryRevealPeriod",
  "escalationPeriod", "governanceTimeout", "dataResponsePeriod",
]);

/** The dispute config as the constructor takes it (amounts are decimal strings of wei). */
export function disputeArg(dispute) {
  const fields = artifact("ProtocolParams")
    .abi.find((e) => e.type === "constructor")
    .inputs.find((i) => i.name === "dispute").components;
  const out = {};
  for (const { name } of fields) {
    if (dispute[name] === undefined) throw new Error(`dispute.${name} is missing from the config`);
    out[name] = WIDE.has(name) ? BigInt(dispute[name]) : Number(dispute[name]);
  }
  const extra = Object.keys(dispute).filter((k) => !fields.some((f) => f.name === k));
  if (extra.length) throw new Error(`unknown dispute parameters: ${extra.join(", ")}`);
  return out;
}

/** keccak-256 of each engine name, as `ProtocolParams.allowedEngine` keys them. */
export function engineIds(engines) {
  return engines.map((e) => keccak256(stringToBytes(e)));
}

/**
 * The creation transactions (in order) for a deployer whose next nonce is `nonce`:
 * [{ name, address, nonce, data }] where data = creation code ‖ ABI-encoded constructor args.
 */
export function plan(deployer, nonce, config = {}) {
  const cfg = { ...DEFAULT_CONFIG, ...config };
  const addr = {};
  ORDER.forEach((name, i) => {
    addr[name] = getContractAddress({ from: deployer, nonce: BigInt(nonce + i) });
  });
  const args = {
    GOPEN: [],
    OpenLedgerTimelock: [BigInt(cfg.timelockMinDelay), [addr.OpenLedgerGovernor], [zeroAddress], zeroAddress],
    OpenLedgerGovernor: [
      addr.GOPEN,
      addr.OpenLedgerTimelock,
      Number(cfg.votingDelay),
      Number(cfg.votingPeriod),
      BigInt(cfg.proposalThreshold),
      BigInt(cfg.quorumPercent),
    ],
    ProtocolParams: [
      addr.OpenLedgerTimelock,
      cfg.treasury ?? addr.OpenLedgerTimelock,
      cfg.feeSplit,
      Number(cfg.licenceOwnerBps),
      BigInt(cfg.datanetCreationFee),
      BigInt(cfg.escrowWithdrawalDelay),
      disputeArg(cfg.dispute),
      engineIds(cfg.engines),
    ],
    DatanetRegistry: [addr.ProtocolParams],
    ModelRegistry: [addr.DatanetRegistry],
    AttributionSettlement: [addr.ProtocolParams, addr.ModelRegistry, addr.DatanetRegistry, addr.AttributorStaking],
    AttributorStaking: [addr.ProtocolParams, addr.AttributionSettlement],
  };
  return ORDER.map((name, i) => {
    const a = artifact(name);
    return {
      name,
      address: addr[name],
      nonce: nonce + i,
      data: encodeDeployData({ abi: a.abi, bytecode: a.bytecode, args: args[name] }),
    };
  });
}

/**
 * The calls that bond each attributor after the creations, from the deployer:
 * [{ account, to, value, data }] (`AttributorStaking.bondFor(account)` with `minAttributorStake`).
 */
export function bondCalls(deployer, nonce, config = {}) {
  const cfg = resolvedConfig(getAddress(deployer), config);
  const staking = getContractAddress({ from: getAddress(deployer), nonce: BigInt(nonce + ORDER.indexOf("AttributorStaking")) });
  const abi = artifact("AttributorStaking").abi;
  return cfg.attributors.map((account) => ({
    account: getAddress(account),
    to: staking,
    value: BigInt(cfg.dispute.minAttributorStake).toString(),
    data: encodeFunctionData({ abi, functionName: "bondFor", args: [getAddress(account)] }),
  }));
}

/**
 * The --plan output: { deployer, firstNonce, config, contracts: [{name, nonce, address, initcode}],
 * bonds: [{account, to, value, data}] } (a genesis builder gives the deployer the bonds' value).
 */
export function planDocument(deployer, nonce, config = {}) {
  const d = getAddress(deployer);
  return {
    deployer: d,
    firstNonce: nonce,
    config: resolvedConfig(d, config),
    contracts: plan(d, nonce, config).map(({ name, nonce: n, address, data }) => ({ name, nonce: n, address, initcode: data })),
    bonds: bondCalls(d, nonce, config),
  };
}

/** The configuration with defaults filled in (attributors and treasury made explicit). */
export function resolvedConfig(deployer, config = {}) {
  const cfg = { ...DEFAULT_CONFIG, ...config };
  return { ...cfg, attributors: cfg.attributors ?? [deployer], treasury: cfg.treasury ?? "timelock" };
}

/**
 * Deploys the set with `walletClient` (its account is the deployer) and returns the
 * deployments object { chainId, contracts, deployer, block, config }.
 */
export async function deployAll(walletClient, publicClient, config = {}) {
  const deployer = walletClient.account.address;
  const chainId = await publicClient.getChainId();
  const nonce = await publicClient.getTransactionCount({ address: deployer, blockTag: "pending" });
  const steps = plan(deployer, nonce, config);
  const contracts = {};
  let block = 0n;
  for (const step of steps) {
    const hash = await walletClient.sendTransaction({
      data: step.data,
      nonce: step.nonce,
      chain: null,
      gas: 12_000_000n,
    });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`deploying ${step.name} failed (tx ${hash})`);
    if (receipt.contractAddress?.toLowerCase() !== step.address.toLowerCase()) {
      throw new Error(`${step.name} landed at ${receipt.contractAddress}, expected ${step.address}`);
    }
    contracts[step.name] = step.address;
    if (receipt.blockNumber > block) block = receipt.blockNumber;
  }
  for (const b of bondCalls(deployer, nonce, config)) {
    const hash = await walletClient.sendTransaction({ to: b.to, data: b.data, value: BigInt(b.value), chain: null });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`bonding attributor ${b.account} failed (tx ${hash})`);
    if (receipt.blockNumber > block) block = receipt.blockNumber;
  }
  return {
    chainId,
    contracts,
    deployer,
    block: Number(block),
    config: resolvedConfig(deployer, config),
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      "rpc-url": { type: "string" },
      "private-key": { type: "string" },
      out: { type: "string" },
      config: { type: "string" },
      plan: { type: "boolean" },
      deployer: { type: "string" },
      nonce: { type: "string" },
    },
  });
  const config = values.config ? JSON.parse(readFileSync(values.config, "utf8")) : {};
  if (values.plan) {
    if (!values.deployer) throw new Error("--plan needs --deployer");
    const text = JSON.stringify(planDocument(values.deployer, Number(values.nonce ?? 0), config), null, 2) + "\n";
    if (values.out) writeFileSync(values.out, text);
    else process.stdout.write(text);
    return;
  }
  const rpcUrl = values["rpc-url"] ?? process.env.OPENLEDGER_RPC_URL;
  const key = values["private-key"] ?? process.env.OPENLEDGER_PRIVATE_KEY;
  if (!rpcUrl || !key) {
    console.error("usage: node deploy.mjs --rpc-url URL --private-key 0x.. [--out FILE] [--config FILE]");
    process.exit(2);
  }
  const transport = http(rpcUrl);
  const account = privateKeyToAccount(key);
  const publicClient = createPublicClient({ transport, pollingInterval: 100 });
  const chainId = await publicClient.getChainId();
  if (!values.config && chainId !== DEV_CHAIN_ID) {
    console.error(
      `chain ${chainId} is not the devnet (${DEV_CHAIN_ID}): pass --config FILE with this deployment's governance ` +
        "periods, attributors and fees (the defaults are devnet settings: a 5 s timelock and a 60 s vote)",
    );
    process.exit(2);
  }
  const walletClient = createWalletClient({ account, transport });
  const deployments = await deployAll(walletClient, publicClient, config);
  const text = JSON.stringify(deployments, null, 2) + "\n";
  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, text);
    console.error(`wrote ${values.out}`);
  }
  process.stdout.write(text);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e.shortMessage ?? e.message);
    process.exit(1);
  });
}
