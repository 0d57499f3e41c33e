"""web3.py (PyPI) drives the devnet: deploy, transfer, events, revert reasons, local signing."""
import json
import os

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

ROOT = os.path.join(os.path.dirname(__file__), "../..")
DEV_KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def artifact(name):
    with open(os.path.join(ROOT, "contracts/out", f"{name}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def w3(devnet_url):
    w3 = Web3(Web3.HTTPProvider(devnet_url))
    assert w3.is_connected()
    return w3


def test_chain_and_accounts(w3):
    assert w3.eth.chain_id == 1337
    accounts = w3.eth.accounts
    assert accounts[0] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert w3.eth.get_balance(accounts[0]) == 10_000 * 10**18
    assert w3.client_version.startswith("openledger/")


def test_transfer_with_node_signing(w3):
    a, b = w3.eth.accounts[0], w3.eth.accounts[5]
    before = w3.eth.get_balance(b)
    tx = w3.eth.send_transaction({"from": a, "to": b, "value": w3.to_wei(1.5, "ether")})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    assert receipt.status == 1
    assert receipt.gasUsed == 21000
    assert w3.eth.get_balance(b) - before == w3.to_wei(1.5, "ether")
    block = w3.eth.get_block(receipt.blockNumber)
    assert block.hash == receipt.blockHash
    assert tx in block.transactions


def test_locally_signed_transfer(w3):
    acct = Account.from_key(DEV_KEY_1)
    assert acct.address == w3.eth.accounts[1]
    to = "0x000000000000000000000000000000000000bEEF"
    tx = {
        "chainId": 1337,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
        "to": to,
        "value": 12345,
        "gas": 21000,
        "maxFeePerGas": w3.eth.gas_price * 2,
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
    }
    signed = acct.sign_transaction(tx)
    h = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=10)
    assert receipt.status == 1
    assert w3.eth.get_balance(to) == 12345


def test_deploy_events_and_revert(w3):
    art = artifact("Demo")
    Demo = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    owner = w3.eth.accounts[0]
    h = Demo.constructor(41).transact({"from": owner})
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=10)
    demo = w3.eth.contract(address=receipt.contractAddress, abi=art["abi"])
    assert demo.functions.value().call() == 41
    h = demo.functions.set(42, "from web3.py").transact({"from": owner})
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=10)
    events = demo.events.ValueSet().process_receipt(receipt)
    assert len(events) == 1
    assert events[0].args.value == 42
    assert events[0].args.note == "from web3.py"
    assert events[0].args.who == owner
    logs = demo.events.ValueSet().get_logs(from_block=0)
    assert [e.args.value for e in logs] == [42]
    assert demo.functions.value().call() == 42
    with pytest.raises(ContractLogicError) as e:
        demo.functions.fail().call()
    assert "Demo: always fails" in str(e.value)
    with pytest.raises(ContractLogicError) as e:
        demo.functions.fail().estimate_gas({"from": owner})
    assert "Demo: always fails" in str(e.value)
