//! Durable chain storage in `redb`.
//!
//! One redb write transaction per block: the state changes, the header, body, senders,
//! receipts, the transaction lookup and the head marker are committed together, so after a
//! crash the store holds exactly the blocks whose commit returned — never half a block.
//!
//! ```text
//! table          key                               value
//! meta           "head" | "genesis" | "version"    u64 BE | genesis JSON | u32 BE
//! headers        block number (u64)                RLP(header)
//! canonical      block number (u64)                block hash (32)
//! hash_to_number block hash (32)                   block number (u64)
//! bodies         block number (u64)                RLP(list of EIP-2718 tx bytes)
//! senders        block number (u64)                20 bytes per transaction
//! receipts       block number (u64)                RLP(list of EIP-2718 receipt bytes)
//! tx_lookup      tx hash (32)                      (block number, index)
//! accounts       keccak(address) (32)              nonce u64 BE ‖ balance (32) ‖ code hash (32) ‖ storage root (32)
//! storage        keccak(address) ‖ keccak(slot)    value (32, never zero: zero deletes)
//! code           code hash (32)                    raw bytecode
//! ```
//!
//! Keys of `accounts` and `storage` are the hashed keys of the Merkle-Patricia tries, so the
//! state root is a single ordered scan.

use crate::error::StoreError;
use alloy_consensus::{Header, ReceiptEnvelope, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable};
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, KECCAK_EMPTY, Nibbles, TrieAccount};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use revm::bytecode::Bytecode;
use revm::database_interface::DatabaseRef;
use revm::state::AccountInfo;
use std::collections::BTreeMap;
use std::path::Path;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const CANONICAL: TableDefinition<u64, &[u8]> = TableDefinition::new("canonical");
const HASH_TO_NUMBER: TableDefinition<&[u8], u64> = TableDefinition::new("hash_to_number");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const SENDERS: TableDefinition<u64, &[u8]> = TableDefinition::new("senders");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
const TX_LOOKUP: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_lookup");
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
const STORAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("storage");
const CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("code");

/// On-disk format version, checked on open.
pub const FORMAT_VERSION: u32 = 1;

/// An account as stored: the trie account fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredAccount {
    /// Nonce.
    pub nonce: u64,
    /// Balance in wei of OPEN.
    pub balance: U256,
    /// Keccak of the code, `KECCAK_EMPTY` for none.
    pub code_hash: B256,
    /// Root of the account's storage trie.
    pub storage_root: B256,
}

impl StoredAccount {
    fn encode(&self) -> [u8; 104] {
        let mut out = [0u8; 104];
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..40].copy_from_slice(&self.balance.to_be_bytes::<32>());
        out[40..72].copy_from_slice(self.code_hash.as_slice());
        out[72..].copy_from_slice(self.storage_root.as_slice());
        out
    }

    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        if b.len() != 104 {
            return Err(StoreError::Corrupt(format!(
                "account record of {} bytes",
                b.len()
            )));
        }
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&b[..8]);
        Ok(Self {
            nonce: u64::from_be_bytes(nonce),
            balance: U256::from_be_slice(&b[8..40]),
            code_hash: B256::from_slice(&b[40..72]),
            storage_root: B256::from_slice(&b[72..]),
        })
    }
}

/// What one account became in a block.
#[derive(Clone, Debug, Default)]
pub struct AccountChange {
    /// New nonce/balance/code hash; `None` deletes the account (self-destruct or EIP-161).
    pub info: Option<(u64, U256, B256)>,
    /// Storage was wiped before `storage` is applied (contract (re)created or destroyed).
    pub wiped: bool,
    /// Slots written; a zero value deletes the slot.
    pub storage: BTreeMap<U256, U256>,
}

/// Every state change of a block.
#[derive(Clone, Debug, Default)]
pub struct StateChanges {
    /// Per-account changes.
    pub accounts: BTreeMap<Address, AccountChange>,
    /// New bytecode by hash.
    pub code: BTreeMap<B256, Bytes>,
}

/// A block ready to be written.
#[derive(Clone, Debug)]
pub struct BlockData {
    /// Its header (state root filled in).
    pub header: Header,
    /// Its hash.
    pub hash: B256,
    /// Transactions.
    pub txs: Vec<TxEnvelope>,
    /// Recovered senders, one per transaction.
    pub senders: Vec<Address>,
    /// Receipts, one per transaction.
    pub receipts: Vec<ReceiptEnvelope>,
}

/// The durable store of one chain.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn storage_key(hashed_address: &B256, slot: U256) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(hashed_address.as_slice());
    k[32..].copy_from_slice(keccak256(slot.to_be_bytes::<32>()).as_slice());
    k
}

fn encode_list(items: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let items: Vec<Bytes> = items.map(Bytes::from).collect();
    let mut out = Vec::new();
    items.encode(&mut out);
    out
}

fn decode_list(mut b: &[u8]) -> Result<Vec<Bytes>, StoreError> {
    Vec::<Bytes>::decode(&mut b).map_err(|e| StoreError::Corrupt(format!("list: {e}")))
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let store = Self { db };
        let w = store.db.begin_write()?;
        {
            // Create every table so readers never see a missing one.
            let mut meta = w.open_table(META)?;
            w.open_table(HEADERS)?;
            w.open_table(CANONICAL)?;
            w.open_table(HASH_TO_NUMBER)?;
            w.open_table(BODIES)?;
            w.open_table(SENDERS)?;
            w.open_table(RECEIPTS)?;
            w.open_table(TX_LOOKUP)?;
            w.open_table(ACCOUNTS)?;
            w.open_table(STORAGE)?;
            w.open_table(CODE)?;
            let version = meta.get("version")?.map(|v| v.value().to_vec());
            match version {
                None => {
                    meta.insert("version", FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
                Some(v) if v.as_slice() == FORMAT_VERSION.to_be_bytes() => {}
                Some(v) => {
                    return Err(StoreError::Corrupt(format!(
                        "datadir has store format {v:?}, this build reads format {FORMAT_VERSION}"
                    )));
                }
            }
        }
        w.commit()?;
        Ok(store)
    }

    /// The genesis JSON stored at initialisation, if the store is initialised.
    pub fn genesis_json(&self) -> Result<Option<String>, StoreError> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(META)?;
        Ok(meta
            .get("genesis")?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// A consistent read snapshot of everything committed so far.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Ok(Reader {
            txn: self.db.begin_read()?,
        })
    }

    /// Writes a block and its state changes atomically. `make` receives the new state root and
    /// returns the block to store under it. Returns that block.
    pub fn commit_block(
        &self,
        changes: &StateChanges,
        genesis_json: Option<&str>,
        make: impl FnOnce(B256) -> Result<BlockData, StoreError>,
    ) -> Result<BlockData, StoreError> {
        let w = self.db.begin_write()?;
        let block = {
            let mut accounts = w.open_table(ACCOUNTS)?;
            let mut storage = w.open_table(STORAGE)?;
            let mut code = w.open_table(CODE)?;
            for (hash, bytes) in &changes.code {
                code.insert(hash.as_slice(), bytes.as_ref())?;
            }
            for (address, change) in &changes.accounts {
                let hashed = keccak256(address);
                let prev = match accounts.get(hashed.as_slice())? {
                    Some(v) => Some(StoredAccount::decode(v.value())?),
                    None => None,
                };
                let mut storage_dirty = false;
                if change.wiped || change.info.is_none() {
                    let lo = [hashed.as_slice(), &[0u8; 32]].concat();
                    let hi = [hashed.as_slice(), &[0xffu8; 32]].concat();
                    storage.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
                    storage_dirty = true;
                }
                let Some((nonce, balance, code_hash)) = change.info else {
                    accounts.remove(hashed.as_slice())?;
                    continue;
                };
                for (slot, value) in &change.storage {
                    let key = storage_key(&hashed, *slot);
                    if value.is_zero() {
                        storage.remove(key.as_slice())?;
                    } else {
                        storage.insert(key.as_slice(), value.to_be_bytes::<32>().as_slice())?;
                    }
                    storage_dirty = true;
                }
                let storage_root = if storage_dirty {
                    let lo = [hashed.as_slice(), &[0u8; 32]].concat();
                    let hi = [hashed.as_slice(), &[0xffu8; 32]].concat();
                    let mut hb = HashBuilder::default();
                    let mut any = false;
                    for entry in storage.range(lo.as_slice()..=hi.as_slice())? {
                        let (k, v) = entry?;
                        let value = U256::from_be_slice(v.value());
                        let mut rlp = Vec::with_capacity(33);
                        value.encode(&mut rlp);
                        hb.add_leaf(Nibbles::unpack(&k.value()[32..]), &rlp);
                        any = true;
                    }
                    if any { hb.root() } else { EMPTY_ROOT_HASH }
                } else {
                    prev.map(|p| p.storage_root).unwrap_or(EMPTY_ROOT_HASH)
                };
                let acct = StoredAccount {
                    nonce,
                    balance,
                    code_hash,
                    storage_root,
                };
                accounts.insert(hashed.as_slice(), acct.encode().as_slice())?;
            }
            // State root: one ordered scan of the hashed account keys.
            let mut hb = HashBuilder::default();
            let mut any = false;
            for entry in accounts.iter()? {
                let (k, v) = entry?;
                let a = StoredAccount::decode(v.value())?;
                let ta = TrieAccount {
                    nonce: a.nonce,
                    balance: a.balance,
                    storage_root: a.storage_root,
                    code_hash: a.code_hash,
                };
                let mut rlp = Vec::with_capacity(110);
                ta.encode(&mut rlp);
                hb.add_leaf(Nibbles::unpack(k.value()), &rlp);
                any = true;
            }
            let state_root = if any { hb.root() } else { EMPTY_ROOT_HASH };
            let block = make(state_root)?;
            let number = block.header.number;

            let mut headers = w.open_table(HEADERS)?;
            let mut canonical = w.open_table(CANONICAL)?;
            let mut by_hash = w.open_table(HASH_TO_NUMBER)?;
            let mut bodies = w.open_table(BODIES)?;
            let mut senders = w.open_table(SENDERS)?;
            let mut receipts = w.open_table(RECEIPTS)?;
            let mut lookup = w.open_table(TX_LOOKUP)?;
            let mut meta = w.open_table(META)?;
            if let Some(head) = meta.get("head")?.map(|v| read_u64(v.value()))
                && number != head + 1
            {
                return Err(StoreError::Corrupt(format!(
                    "block {number} does not follow head {head}"
                )));
            }
            let mut hbuf = Vec::with_capacity(600);
            block.header.encode(&mut hbuf);
            headers.insert(number, hbuf.as_slice())?;
            canonical.insert(number, block.hash.as_slice())?;
            by_hash.insert(block.hash.as_slice(), number)?;
            bodies.insert(
                number,
                encode_list(block.txs.iter().map(|t| t.encoded_2718())).as_slice(),
            )?;
            let s: Vec<u8> = block.senders.iter().flat_map(|a| a.0.0).collect();
            senders.insert(number, s.as_slice())?;
            receipts.insert(
                number,
                encode_list(block.receipts.iter().map(|r| r.encoded_2718())).as_slice(),
            )?;
            for (i, tx) in block.txs.iter().enumerate() {
                lookup.insert(tx.tx_hash().as_slice(), (number, i as u32))?;
            }
            meta.insert("head", number.to_be_bytes().as_slice())?;
            if let Some(g) = genesis_json {
                meta.insert("genesis", g.as_bytes())?;
            }
            block
        };
        w.commit()?;
        Ok(block)
    }
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// A read snapshot of the store. Implements revm's `DatabaseRef` for the state at its head.
pub struct Reader {
    txn: ReadTransaction,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Reader {
    /// Number of the last committed block, `None` before genesis.
    pub fn head(&self) -> Result<Option<u64>, StoreError> {
        let meta = self.txn.open_table(META)?;
        Ok(meta.get("head")?.map(|v| read_u64(v.value())))
    }

    /// Header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>, StoreError> {
        let t = self.txn.open_table(HEADERS)?;
        match t.get(number)? {
            None => Ok(None),
            Some(v) => {
                let mut b = v.value();
                Header::decode(&mut b)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("header {number}: {e}")))
            }
        }
    }

    /// Hash of canonical block `number`.
    pub fn block_hash(&self, number: u64) -> Result<Option<B256>, StoreError> {
        let t = self.txn.open_table(CANONICAL)?;
        Ok(t.get(number)?.map(|v| B256::from_slice(v.value())))
    }

    /// Number of the block with this hash.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>, StoreError> {
        let t = self.txn.open_table(HASH_TO_NUMBER)?;
        Ok(t.get(hash.as_slice())?.map(|v| v.value()))
    }

    /// Transactions of block `number` with their senders.
    pub fn body(&self, number: u64) -> Result<Option<Vec<(TxEnvelope, Address)>>, StoreError> {
        let bodies = self.txn.open_table(BODIES)?;
        let Some(raw) = bodies.get(number)? else {
            return Ok(None);
        };
        let senders = self.txn.open_table(SENDERS)?;
        let s = senders
            .get(number)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        let items = decode_list(raw.value())?;
        if s.len() != items.len() * 20 {
            return Err(StoreError::Corrupt(format!("senders of block {number}")));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let tx = TxEnvelope::decode_2718(&mut b.as_ref())
                    .map_err(|e| StoreError::Corrupt(format!("tx {i} of block {number}: {e}")))?;
                Ok((tx, Address::from_slice(&s[i * 20..i * 20 + 20])))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Receipts of block `number`.
    pub fn receipts(&self, number: u64) -> Result<Option<Vec<ReceiptEnvelope>>, StoreError> {
        let t = self.txn.open_table(RECEIPTS)?;
        let Some(raw) = t.get(number)? else {
            return Ok(None);
        };
        decode_list(raw.value())?
            .iter()
            .map(|b| {
                ReceiptEnvelope::decode_2718(&mut b.as_ref())
                    .map_err(|e| StoreError::Corrupt(format!("receipt of block {number}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Where a transaction is: (block number, index).
    pub fn tx_location(&self, hash: &B256) -> Result<Option<(u64, u32)>, StoreError> {
        let t = self.txn.open_table(TX_LOOKUP)?;
        Ok(t.get(hash.as_slice())?.map(|v| v.value()))
    }

    /// The stored account, if any.
    pub fn account(&self, address: &Address) -> Result<Option<StoredAccount>, StoreError> {
        let t = self.txn.open_table(ACCOUNTS)?;
        match t.get(keccak256(address).as_slice())? {
            Some(v) => Ok(Some(StoredAccount::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// A storage slot's value (zero when absent).
    pub fn storage(&self, address: &Address, slot: U256) -> Result<U256, StoreError> {
        let t = self.txn.open_table(STORAGE)?;
        let key = storage_key(&keccak256(address), slot);
        Ok(t.get(key.as_slice())?
            .map(|v| U256::from_be_slice(v.value()))
            .unwrap_or_default())
    }

    /// Bytecode by hash.
    pub fn code(&self, hash: &B256) -> Result<Option<Bytes>, StoreError> {
        if *hash == KECCAK_EMPTY {
            return Ok(Some(Bytes::new()));
        }
        let t = self.txn.open_table(CODE)?;
        Ok(t.get(hash.as_slice())?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }
}

impl DatabaseRef for Reader {
    type Error = StoreError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        Ok(self.account(&address)?.map(|a| AccountInfo {
            balance: a.balance,
            nonce: a.nonce,
            code_hash: a.code_hash,
            account_id: None,
            code: None,
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        match self.code(&code_hash)? {
            Some(b) if b.is_empty() => Ok(Bytecode::default()),
            Some(b) => Ok(Bytecode::new_raw(b)),
            None => Err(StoreError::Corrupt(format!("missing code {code_hash}"))),
        }
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, Self::Error> {
        self.storage(&address, index)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Self::Error> {
        Ok(self.block_hash(number)?.unwrap_or_default())
    }
}
