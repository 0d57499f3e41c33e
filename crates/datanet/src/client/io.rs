//! Helpers of the client: transaction sending, file hashing and streaming, dev keys,
//! progress bars, query encoding.

use super::ClientError;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::B256;
use bytes::Bytes;
use futures::StreamExt;
use openledger_protocol::ChainError;
use openledger_protocol::Confirm;
use std::path::Path;

/// Sends a contract call as a transaction and waits for a successful receipt; returns the
/// transaction hash.
pub(crate) async fn send<T, P, N>(
    call: alloy::contract::CallBuilder<P, T, N>,
) -> Result<B256, ClientError>
where
    P: Provider<N>,
    N: alloy::network::Network,
    T: alloy::contract::CallDecoder + Send,
{
    let receipt = call
        .send()
        .await
        .map_err(ChainError::from)?
        .confirm()
        .await
        .map_err(ChainError::from)?;
    use alloy::network::ReceiptResponse;
    if !receipt.status() {
        return Err(ChainError::Reverted("transaction reverted".into()).into());
    }
    Ok(receipt.transaction_hash())
}

/// keccak-256 of a file, read in 1 MiB chunks.
pub async fn hash_file(path: &Path) -> Result<B256, ClientError> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::Io(format!("{}: {e}", path.display())))?;
    let mut h = alloy_primitives::Keccak256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

pub(crate) fn file_stream(
    file: tokio::fs::File,
    progress: Option<indicatif::ProgressBar>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold((file, progress), |(mut f, p)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => {
                if let Some(p) = &p {
                    p.finish();
                }
                None
            }
            Ok(n) => {
                buf.truncate(n);
                if let Some(p) = &p {
                    p.inc(n as u64);
                }
                Some((Ok(Bytes::from(buf)), (f, p)))
            }
            Err(e) => Some((Err(e), (f, p))),
        }
    })
    .boxed()
}

/// The dev mnemonic (`test test ... junk`) account `index` (m/44'/60'/0'/0/index).
pub fn dev_signer(index: u32) -> Result<PrivateKeySigner, ClientError> {
    alloy::signers::local::MnemonicBuilder::<alloy::signers::local::coins_bip39::English>::default()
        .phrase("test test test test test test test test test test test junk")
        .index(index)
        .map_err(|e| ClientError::Unexpected(e.to_string()))?
        .build()
        .map_err(|e| ClientError::Unexpected(e.to_string()))
}

/// A byte progress bar for uploads of `len` bytes.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
