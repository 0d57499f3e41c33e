//! Stored blocks, transactions and receipts into their JSON-RPC shapes (alloy's RPC types).

use crate::error::RpcError;
use alloy_consensus::transaction::Recovered;
use alloy_consensus::{
    Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, Transaction as _, TxEnvelope, TxReceipt,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{Block, BlockTransactions, Log, Transaction, TransactionReceipt};
use openledger_chain::Reader;

/// Where a mined transaction sits.
#[derive(Clone, Copy, Debug)]
pub struct TxLocation {
    /// Block hash.
    pub block_hash: B256,
    /// Block number.
    pub block_number: u64,
    /// Index in the block.
    pub index: u64,
    /// Block timestamp.
    pub timestamp: u64,
    /// Block base fee.
    pub base_fee: u64,
}

/// Price per gas the sender actually paid.
pub fn effective_gas_price(tx: &TxEnvelope, base_fee: u64) -> u128 {
    tx.effective_gas_price(Some(base_fee))
}

/// An RPC transaction object.
pub fn rpc_tx(tx: &TxEnvelope, sender: Address, loc: Option<TxLocation>) -> Transaction {
    Transaction {
        inner: Recovered::new_unchecked(tx.clone(), sender),
        block_hash: loc.map(|l| l.block_hash),
        block_number: loc.map(|l| l.block_number),
        transaction_index: loc.map(|l| l.index),
        effective_gas_price: loc.map(|l| effective_gas_price(tx, l.base_fee)),
        block_timestamp: loc.map(|l| l.timestamp),
    }
}

/// An RPC block object; `full` selects full transactions instead of hashes.
pub fn rpc_block(reader: &Reader, number: u64, full: bool) -> Result<Option<Block>, RpcError> {
    let Some(header) = reader.header(number)? else {
        return Ok(None);
    };
    let body = reader.body(number)?.unwrap_or_default();
    let hash = header.hash_slow();
    let size = header.length() + body.iter().map(|(t, _)| t.encode_2718_len()).sum::<usize>() + 8;
    let transactions = if full {
        BlockTransactions::Full(
            body.iter()
                .enumerate()
                .map(|(i, (tx, from))| rpc_tx(tx, *from, Some(location(&header, hash, i))))
                .collect(),
        )
    } else {
        BlockTransactions::Hashes(body.iter().map(|(t, _)| *t.tx_hash()).collect())
    };
    let mut h = alloy_rpc_types_eth::Header::new(header);
    h.hash = hash;
    h.total_difficulty = Some(U256::ZERO);
    h.size = Some(U256::from(size));
    Ok(Some(Block {
        header: h,
        uncles: vec![],
        transactions,
        withdrawals: Some(Default::default()),
    }))
}

/// Location of transaction `i` of a block.
pub fn location(header: &Header, hash: B256, i: usize) -> TxLocation {
    TxLocation {
        block_hash: hash,
        block_number: header.number,
        index: i as u64,
        timestamp: header.timestamp,
        base_fee: header.base_fee_per_gas.unwrap_or_default(),
    }
}

/// Every receipt of a block in RPC form.
pub fn rpc_receipts(
    reader: &Reader,
    number: u64,
) -> Result<Option<Vec<TransactionReceipt>>, RpcError> {
    let Some(header) = reader.header(number)? else {
        return Ok(None);
    };
    let hash = header.hash_slow();
    let body = reader.body(number)?.unwrap_or_default();
    let receipts = reader.receipts(number)?.unwrap_or_default();
    let mut out = Vec::with_capacity(receipts.len());
    let mut prev_cumulative = 0u64;
    let mut log_index = 0u64;
    for (i, ((tx, from), r)) in body.iter().zip(receipts).enumerate() {
        let loc = location(&header, hash, i);
        let cumulative = r.cumulative_gas_used();
        let gas_used = cumulative - prev_cumulative;
        prev_cumulative = cumulative;
        let logs: Vec<Log> = r
            .logs()
            .iter()
            .map(|l| {
                let log = Log {
                    inner: l.clone(),
                    block_hash: Some(hash),
                    block_number: Some(header.number),
                    block_timestamp: Some(header.timestamp),
                    transaction_hash: Some(*tx.tx_hash()),
                    transaction_index: Some(i as u64),
                    log_index: Some(log_index),
                    removed: false,
                };
                log_index += 1;
                log
            })
            .collect();
        let with_bloom = ReceiptWithBloom {
            receipt: Receipt {
                status: r.status_or_post_state(),
                cumulative_gas_used: cumulative,
                logs,
            },
            logs_bloom: r.bloom(),
        };
        let inner = match r {
            ReceiptEnvelope::Legacy(_) => ReceiptEnvelope::Legacy(with_bloom),
            ReceiptEnvelope::Eip2930(_) => ReceiptEnvelope::Eip2930(with_bloom),
            ReceiptEnvelope::Eip1559(_) => ReceiptEnvelope::Eip1559(with_bloom),
            ReceiptEnvelope::Eip4844(_) => ReceiptEnvelope::Eip4844(with_bloom),
            ReceiptEnvelope::Eip7702(_) => ReceiptEnvelope::Eip7702(with_bloom),
        };
        let (to, contract_address) = match tx.kind() {
            TxKind::Call(to) => (Some(to), None),
            TxKind::Create => (None, Some(from.create(tx.nonce()))),
        };
        out.push(TransactionReceipt {
            inner,
            transaction_hash: *tx.tx_hash(),
            transaction_index: Some(i as u64),
            block_hash: Some(hash),
            block_number: Some(header.number),
            gas_used,
            effective_gas_price: effective_gas_price(tx, loc.base_fee),
            blob_gas_used: None,
            blob_gas_price: None,
            from: *from,
            to,
            contract_address,
        });
    }
    Ok(Some(out))
}
