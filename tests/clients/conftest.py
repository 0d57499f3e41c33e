"""Starts a real `openledger devnet` process for the third-party client tests."""
import os
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def devnet_url():
    binary = os.environ.get("OPENLEDGER_BIN", os.path.join(os.path.dirname(__file__), "../../target/debug/openledger"))
    if not os.path.exists(binary):
        pytest.fail(f"openledger binary not found at {binary}; build it first (cargo build)")
    proc = subprocess.Popen(
        [binary, "devnet", "--port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OPENLEDGER_LOG": "warn"},
    )
    url = None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("Listening on "):
            url = "http://" + line.split("Listening on ", 1)[1].strip()
            break
    if url is None:
        proc.kill()
        pytest.fail("devnet did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("devnet did not shut down cleanly on SIGTERM")
    assert proc.returncode == 0, f"devnet exited with {proc.returncode} on SIGTERM"
