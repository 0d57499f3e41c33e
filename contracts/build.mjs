// Compiles every .sol file under src/ and fixtures/ with the pinned solc-js and writes one
// artifact per deployable contract to out/<Name>.json.
//
//   node build.mjs           write out/*.json (removes stale artifacts)
//   node build.mjs --check   recompile in memory; exit 1 naming every artifact that differs
//
// Settings are fixed so the output is reproducible byte for byte: optimizer on (200 runs),
// evmVersion "prague" (what the node's revm is configured for; solc 0.8.37 would default to
// osaka), legacy code generator (no viaIR: nothing here hits stack-too-deep), and the metadata
// hash left out of the bytecode (bytecodeHash "none"), so comments or paths cannot change code.
import { readFileSync, writeFileSync, readdirSync, mkdirSync, existsSync, unlinkSync } from "node:fs";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

export const ROOT = dirname(fileURLToPath(import.meta.url));
export const OUT_DIR = join(ROOT, "out");
const SOURCE_DIRS = ["src", "fixtures"];
const EXPECTED_SOLC = "0.8.37";

export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "prague",
  viaIR: false,
  metadata: { bytecodeHash: "none" },
  remappings: ["@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/"],
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function listSol(dir) {
  const abs = join(ROOT, dir);
  if (!existsSync(abs)) return [];
  const files = [];
  for (const entry of readdirSync(abs, { withFileTypes: true })) {
    const rel = `${dir}/${entry.name}`;
    if (entry.isDirectory()) files.push(...listSol(rel));
    else if (entry.name.endsWith(".sol")) files.push(rel);
  }
  return files.sort();
}

function findImports(path) {
  const abs = join(ROOT, path);
  if (!abs.startsWith(ROOT) || !existsSync(abs)) return { error: `not found: ${path}` };
  return { contents: readFileSync(abs, "utf8") };
}

/** Compiles all sources; returns Map<fileName, jsonText> for every deployable contract. */
export function compile() {
  const version = solc.version();
  if (!version.startsWith(EXPECTED_SOLC + "+")) {
    throw new Error(`solc ${version} installed, ${EXPECTED_SOLC} pinned: run npm install`);
  }
  const files = SOURCE_DIRS.flatMap(listSol);
  const sources = {};
  for (const f of files) sources[f] = { content: readFileSync(join(ROOT, f), "utf8") };
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) {
    const file = e.sourceLocation?.file ?? "";
    if (e.severity !== "error" && !file.startsWith("node_modules/")) {
      process.stderr.write(e.formattedMessage + "\n");
    }
  }
  if (errors.length) {
    throw new Error("compilation failed:\n" + errors.map((e) => e.formattedMessage).join("\n"));
  }
  const artifacts = new Map();
  for (const f of files) {
    for (const [name, c] of Object.entries(output.contracts[f] ?? {})) {
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      if (/__\$[0-9a-f]{34}\$__/.test(bytecode)) throw new Error(`${name} needs library linking`);
      const file = `${name}.json`;
      if (artifacts.has(file)) throw new Error(`two contracts named ${name}`);
      const artifact = {
        contractName: name,
        abi: c.abi,
        bytecode: "0x" + bytecode,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      };
      artifacts.set(file, JSON.stringify(artifact, null, 2) + "\n");
    }
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  const artifacts = compile();
  const existing = existsSync(OUT_DIR)
    ? readdirSync(OUT_DIR).filter((f) => f.endsWith(".json")).sort()
    : [];
  if (check) {
    const bad = [];
    for (const [file, text] of artifacts) {
      const path = join(OUT_DIR, file);
      if (!existsSync(path)) bad.push(`${relative(ROOT, path)} (missing)`);
      else if (readFileSync(path, "utf8") !== text) bad.push(`${relative(ROOT, path)} (differs)`);
    }
    for (const f of existing) if (!artifacts.has(f)) bad.push(`out/${f} (stale: no such contract)`);
    if (bad.length) {
      console.error("artifacts do not match a fresh build (run `node build.mjs`):");
      for (const b of bad) console.error("  " + b);
      process.exit(1);
    }
    console.log(`ok: ${artifacts.size} artifacts reproduce byte for byte (solc ${solc.version()})`);
    return;
  }
  mkdirSync(OUT_DIR, { recursive: true });
  for (const f of existing) if (!artifacts.has(f)) unlinkSync(join(OUT_DIR, f));
  for (const [file, text] of artifacts) writeFileSync(join(OUT_DIR, file), text);
  console.log(`wrote ${artifacts.size} artifacts to out/ (solc ${solc.version()})`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    main();
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
