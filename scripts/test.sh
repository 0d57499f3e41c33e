#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need (npm and
# PyPI packages into project-local folders), builds, then runs the Rust, contract and
# third-party-client suites. Usage: scripts/test.sh [--quick]  (--quick skips installs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${1:-}

step() { printf '\n==> %s\n' "$*"; }

if [[ "$QUICK" != "--quick" ]]; then
  step "installing npm packages for contracts/ (exact versions from package-lock.json)"
  (cd contracts && npm install --no-audit --no-fund --loglevel=error)
  step "installing Python test packages into .venv"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
    -r crates/model/tests/reference/requirements.txt
  step "installing Chromium + chromedriver (Debian packages) for the web UI's browser test"
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [[ "$(id -u)" -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
  fi
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Devnets started by the tests write where they listen here, not into ~/.openledger.
OPENLEDGER_HOME=$(mktemp -d)
export OPENLEDGER_HOME
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/openledger"

step "checking that recompiling the contracts reproduces contracts/out byte for byte"
(cd contracts && node build.mjs --check)

# A fresh build gains nothing from incremental state, and it would take ~5 GB more disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "building (--locked: Cargo.lock is the truth)"
cargo build --workspace --all-targets --locked

step "lints (clippy, every warning an error)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
# candle asks the OS for the core count on every kernel call unless these are set; the
# openledger binary sets them itself (bin/openledger/src/threads.rs), test binaries do not.
# Training tests run about 1.5x faster with them (train's tests: 55 s -> 38 s).
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}"
cargo test --workspace --locked -- --test-threads=2

step "third-party clients against a live devnet"
OPENLEDGER_BIN="$BIN" .venv/bin/python -m pytest -q tests/clients

step "contract tests against a live devnet (genesis-predeployed contracts)"
DEVNET_LOG=$(mktemp)
"$BIN" devnet --port 0 --http-port 0 >"$DEVNET_LOG" 2>&1 &
DEVNET_PID=$!
trap 'kill $DEVNET_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do grep -q '^Listening on ' "$DEVNET_LOG" && break; sleep 0.2; done
DEVNET_URL="http://$(grep '^Listening on ' "$DEVNET_LOG" | head -1 | sed 's/^Listening on //')"
(cd contracts && OPENLEDGER_RPC_URL="$DEVNET_URL" node --test --test-concurrency=1 test/)
kill $DEVNET_PID; wait $DEVNET_PID 2>/dev/null || true
trap - EXIT

step "contract tests against anvil (the 'other chain': deploy.mjs, time travel)"
(cd contracts && npm test)

echo
echo "all test suites passed"
